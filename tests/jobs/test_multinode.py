"""Multi-node jobs from Slurm's variables, with the variables a 2-node allocation gives its
tasks (2 nodes x 2 tasks): what each training task hands torch.distributed, and which Ray
node each evaluation task becomes. Not run here: two real slurmd (the local Slurm has one),
NCCL across nodes, a Ray cluster across hosts."""
import os

import pytest

DISTRIBUTED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def two_node_task(monkeypatch, rank: int) -> None:
    """The environment Slurm gives task `rank` of `sbatch --nodes=2 --ntasks-per-node=2`."""
    for key in [*DISTRIBUTED, "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"]:
        monkeypatch.delenv(key, raising=False)
    node, local = divmod(rank, 2)
    monkeypatch.setattr(os, "environ", {**os.environ, **{
        "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4", "SLURM_NPROCS": "4",
        "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_NODELIST": "gpu[07-08]", "SLURM_TASKS_PER_NODE": "2(x2)", "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_CPUS_PER_TASK": "8", "SLURM_NODEID": str(node), "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(local), "SLURMD_NODENAME": f"gpu0{7 + node}", "TMPDIR": "/tmp"}})


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_training_tasks_get_their_rank_and_the_first_node_as_master(monkeypatch, rank):
    import jobs.train

    seen = {}
    monkeypatch.setattr(jobs.train, "run", lambda run_dir: seen.update({k: os.environ[k] for k in DISTRIBUTED}))
    two_node_task(monkeypatch, rank)
    jobs.train.slurm_run("/unused")
    assert seen.pop("MASTER_PORT").isdigit()
    assert seen == {"RANK": str(rank), "WORLD_SIZE": "4", "LOCAL_RANK": str(rank % 2), "LOCAL_WORLD_SIZE": "2",
                    "MASTER_ADDR": "gpu07"}


def test_every_training_task_agrees_on_the_master_port(monkeypatch):
    import jobs.train

    ports = set()
    monkeypatch.setattr(jobs.train, "run", lambda run_dir: ports.add(os.environ["MASTER_PORT"]))
    for rank in range(4):
        two_node_task(monkeypatch, rank)
        jobs.train.slurm_run("/unused")
    assert len(ports) == 1


@pytest.mark.parametrize("rank", [0, 3])
def test_evaluation_tasks_become_one_ray_node_each(monkeypatch, tmp_path, rank):
    """Task 0 is the head and runs the evaluation; the others join as workers."""
    import contextlib

    import jobs.evaluation.driver as driver
    import jobs.ray_cluster

    calls = []

    @contextlib.contextmanager
    def fake_cluster(rank, world, folder, cpus, gpus):
        calls.append((rank, world, folder, cpus, gpus))
        yield "gpu07:6379" if rank == 0 else None

    monkeypatch.setattr(jobs.ray_cluster, "slurm_ray_cluster", fake_cluster)
    monkeypatch.setattr(driver, "run", lambda run_dir: f"evaluated at {os.environ['SDFT_RAY_ADDRESS']}")
    two_node_task(monkeypatch, rank)
    out = driver.slurm_run(tmp_path)
    # one folder per attempt (job id, restart count): a requeued job's workers do not find the
    # address and `done` of the attempt before, join its dead head and leave at once
    assert calls == [(rank, 4, tmp_path / "ray" / "4242-0", 8, 0)]
    assert out == ("evaluated at gpu07:6379" if rank == 0 else "ray worker")
    monkeypatch.setitem(os.environ, "SLURM_RESTART_COUNT", "1")
    driver.slurm_run(tmp_path)
    assert calls[-1][2] == tmp_path / "ray" / "4242-1"


def test_each_task_of_a_node_takes_its_share_of_the_gpus():
    """Every task of a node sees all of its GPUs: two tasks each starting a Ray node with
    all four made Ray count eight and put two actors on each GPU."""
    from jobs.evaluation.driver import task_gpus

    node = {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "SLURM_GPUS_ON_NODE": "4"}
    assert [task_gpus(local, 2, node) for local in (0, 1)] == [["0", "2"], ["1", "3"]]
    assert task_gpus(0, 1, node) == ["0", "1", "2", "3"]
    bound = {"CUDA_VISIBLE_DEVICES": "0", "SLURM_GPUS_ON_NODE": "4"}     # Slurm bound one GPU to the task
    assert task_gpus(1, 4, bound) == ["0"] and task_gpus(0, 2, {}) is None


def test_a_long_per_job_tmpdir_gets_a_short_ray_temp_dir():
    from jobs.ray_cluster import short_temp_env

    assert short_temp_env({"TMPDIR": "/tmp"}) == {}
    long = {"TMPDIR": "/local/scratch/slurm/job_123456789/step_batch/tmp/user-with-a-long-name"}
    (short,) = short_temp_env(long).values()
    # Ray's longest socket: <temp dir>/ray/session_<date>_<time>_<pid>/sockets/plasma_store
    assert len(f"{short}/ray/session_2026-12-04_14-44-42_123456_1234567/sockets/plasma_store") < 108


def test_ray_nodes_are_stopped_without_rays_drain(monkeypatch, tmp_path):
    """A node started here stops on SIGTERM at once: Ray would otherwise drain it for up to
    30 s, which the job waited out (20 s per evaluation on two Slurm tasks)."""
    import jobs.ray_cluster

    started = []
    monkeypatch.setattr(jobs.ray_cluster.subprocess, "Popen", lambda args, env, **kw: started.append(env))
    jobs.ray_cluster._start(["--head"], {"PATH": "/bin"}, tmp_path / "ray-start-0.log")
    jobs.ray_cluster._start(["--head"], {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "5"}, tmp_path / "ray-start-1.log")
    assert [env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] for env in started] == ["0", "5"]
    assert started[0]["PATH"] == "/bin"
