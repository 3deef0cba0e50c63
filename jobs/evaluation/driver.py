"""The evaluate stage's driver: Ray set-up, a pool of EvalWorker actors sampling the planned
batches, the products saved (with their manifest and PNG grids), each product measured by
an actor, and the metrics and a summary (eval.json) written.

Ray starts locally (the default), or joins $SDFT_RAY_ADDRESS / $RAY_ADDRESS if set; one
actor per GPU, else one per group of cores (torch threads set explicitly).
"""
from __future__ import annotations

import os
from pathlib import Path

from runs.processes import process_identity
from runs.spec import EvalSpec
from runs.store import RunFolder, atomic_write_json
from jobs.evaluation.manifest import ProductEntry, write_manifest
from jobs.evaluation.measured import measured, read_record
from jobs.evaluation.plan import (Batch, Product, announce_solver, calibration_jobs, check_inputs, curve_only,
                                  plan_batches, plan_products, product_job, resolve_models, training_seconds)
from jobs.evaluation.worker import EvalWorker

IMAGE_GRID_SIZE = 32     # samples shown in the PNG grids


def ray_init():
    """Join $SDFT_RAY_ADDRESS (or $RAY_ADDRESS) if set, else start a Ray of our own here."""
    import ray

    address = os.environ.get("SDFT_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="ERROR")
    else:
        cpus = int(os.environ.get("SDFT_EVAL_CPUS") or os.environ.get("SLURM_CPUS_ON_NODE")
                   or os.cpu_count() or 1)
        # "local": always a new instance of our own, never another job's that runs beside us
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="ERROR",
                 object_store_memory=256 * 1024 * 1024)
    return ray


def actor_layout(nodes: list[dict]) -> tuple[int, int, int]:
    """(actors, threads each, GPUs each): one actor per GPU, else one per group of cores,
    sized so that every actor fits on one node."""
    resources = [n["Resources"] for n in nodes if n["Alive"]]
    cpus = [max(1, int(r.get("CPU", 1))) for r in resources]
    gpus = [int(r.get("GPU", 0)) for r in resources]
    if sum(gpus):
        # an actor takes a GPU and at least a CPU: a node with fewer CPUs than GPUs leaves some
        # GPUs idle, where actors asking for more than it has would wait for good
        per_node = [(c, min(g, c)) for c, g in zip(cpus, gpus) if g]
        threads = max(1, min(c // actors for c, actors in per_node))
        return sum(actors for _, actors in per_node), threads, 1
    threads = max(1, min(int(os.environ.get("SDFT_EVAL_THREADS", 2)), *cpus))
    return sum(c // threads for c in cpus), threads, 0


def sample_rows(images, sources=None, per_row: int = 16, inputs=None) -> list:
    """PNG rows of uint8 images: samples 16 to a row; translations as pairs of rows, source
    above translation (inputs: the indices of the translations' sources, by default the
    first ones; `sources` a dataset of uint8 images, models.data.ImageSet)."""
    import torch

    shown = images[:IMAGE_GRID_SIZE]
    rows = [shown[i:i + per_row] for i in range(0, len(shown), per_row)]
    if sources is None:
        return rows
    inputs = range(len(shown)) if inputs is None else inputs[:len(shown)]
    inputs = torch.stack([sources[i] for i in inputs]).numpy()
    return [r for i, row in enumerate(rows) for r in (inputs[i * per_row:i * per_row + len(row)], row)]


def save_products(run: RunFolder, spec: EvalSpec, products: list[Product], batches: list[Batch]) -> dict[str, Path]:
    """Concatenate each product's batches into products/<key>.npy and a PNG grid; list them
    in products/manifest.json."""
    import numpy as np

    from models.data import open_dataset
    from models.images import save_grid

    data = spec.source_data.model_dump()
    sources = open_dataset(data, split="source_test" if data["kind"] == "builtin-source" else None)
    paths = {}
    for product in products:
        parts = sorted((b for b in batches if b.product == product), key=lambda b: b.start)
        images = np.concatenate([np.load(run.path / "work" / f"{b.key}.npy") for b in parts])
        path = run.path / "products" / f"{product.key}.npy"
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.npy")
        np.save(tmp, images)
        os.replace(tmp, path)
        paths[product.key] = path
        rows = sample_rows(images, None if product.task == "unconditional" else sources,
                           inputs=product.inputs(spec, len(sources)))
        save_grid(rows, run.samples_dir / f"{product.key}.png", scale=3)
    write_manifest(run, [ProductEntry(p.name, p.task, p.t0, p.ckpt_step, p.seed(spec), paths[p.key].name,
                                      f"{p.key}.npz", p.split) for p in products])
    return paths


def clipped_share(run: RunFolder, product: Product, batches: list[Batch]) -> tuple[float, int] | None:
    """(share of samples whose last-step x0 left [-1, 1] by more than CLIP_TOLERANCE, n);
    None for batches sampled before the sampler reported it."""
    import numpy as np

    from models.sampling import CLIP_TOLERANCE

    files = [run.path / "work" / f"{b.key}.x0.npy" for b in batches if b.product == product]
    if not all(f.is_file() for f in files):
        return None
    excess = np.concatenate([np.load(f) for f in files])
    return float((excess > CLIP_TOLERANCE).mean()), len(excess)


def evaluate(spec: EvalSpec, run_dir: str | Path) -> Path:
    """Plan, sample on the actors, save the products, measure them on the actors, write the
    metrics; a requeued or restarted evaluation skips the batches it has sampled and the
    products it has measured."""
    from tqdm.auto import tqdm

    from report.results import git_sha, write_metrics

    run = RunFolder(run_dir)
    announce_solver(spec)
    check_inputs(spec)
    models, train_spec = resolve_models(spec, run.path)
    products = plan_products(spec, models)
    batches = plan_batches(spec, products)
    run.set_state("running", step=0, steps=len(batches), **process_identity(os.getpid()), error=None)
    ray = ray_init()
    try:
        from ray.util import ActorPool

        n_actors, threads, gpus = actor_layout(ray.nodes())
        ray_nodes = len([n for n in ray.nodes() if n["Alive"]])
        Worker = ray.remote(num_cpus=threads, num_gpus=gpus, max_restarts=3, max_task_retries=3)(EvalWorker)
        actors = [Worker.remote(spec.model_dump_json(), str(run.path), threads) for _ in range(n_actors)]
        pool = ActorPool(actors)
        todo = [b for b in batches if not (run.path / "work" / f"{b.key}.npy").is_file()]
        done = len(batches) - len(todo)
        for _ in tqdm(pool.map_unordered(lambda a, b: a.sample.remote(b), todo), total=len(todo),
                      desc=f"evaluate {run.run_id}", mininterval=1.0):
            done += 1
            run.set_state("running", step=done)
        paths = save_products(run, spec, products, batches)

        seconds = training_seconds(spec, run.path)
        jobs = [product_job(spec, run, p, train_spec, paths[p.key], clipped_share(run, p, batches), seconds)
                for p in products]
        jobs += calibration_jobs(spec, run.path)
        # each job leaves its record: a requeued evaluation measures only what it lacks
        commit = git_sha()
        todo = [j for j in jobs if not measured(j.record, commit)]
        for _ in tqdm(pool.map_unordered(lambda a, j: a.measure.remote(j), todo), total=len(todo),
                      desc=f"measure {run.run_id}", mininterval=1.0):
            pass
    finally:
        ray.shutdown()
    rows, cache = [], {"hits": 0, "lookups": 0}
    for job in jobs:
        record = read_record(job.record)
        rows += record["rows"]
        cache = {k: cache[k] + record["counts"][k] for k in cache}
    # the curve's rows first: an evaluation with its metrics written is done (runs.store)
    curve_steps = {p.ckpt_step for p in products if curve_only(spec, p.ckpt_step, models[0][0])}
    curve_rows = [r for r in rows if r.get("ckpt_step") in curve_steps]
    if curve_rows:
        write_metrics(run.curve_path, curve_rows, run_id=run.run_id)
    rows = [r for r in rows if r.get("ckpt_step") not in curve_steps]
    write_metrics(run.metrics_path, rows, run_id=run.run_id)
    attempts = {}
    for marker in (run.path / "attempts").glob("*.*"):
        attempts.setdefault(marker.name.rsplit(".", 1)[0], []).append(marker.name)
    retries = sum(len(v) - 1 for v in attempts.values())
    atomic_write_json(run.path / "eval.json", {
        "batches": len(batches), "ray_nodes": ray_nodes, "actors": n_actors, "threads_per_actor": threads,
        "retries": retries, "retried_batches": sorted(
            k for k, v in attempts.items() if len(v) > 1),
        "measured_before": len(jobs) - len(todo),
        "feature_lookups": cache["lookups"], "feature_cache_hits": cache["hits"], "rows": len(rows)})
    for job in jobs:       # their rows are in the metrics now: an evaluation run again measures afresh
        Path(job.record).unlink()
    run.set_state("done", step=len(batches))
    return run.metrics_path


def run(run_dir: str | Path) -> Path:
    folder = RunFolder(run_dir)
    spec = EvalSpec.model_validate(folder.read_spec())
    with folder.recording_failure():
        return evaluate(spec, run_dir)


def task_gpus(local_rank: int, tasks_per_node: int, environ=None) -> list[str] | None:
    """The GPUs of this task's Ray node. Every task of a node sees all of the node's GPUs
    (CUDA_VISIBLE_DEVICES, SLURM_GPUS_ON_NODE of them): with several tasks on a node each
    takes its share (task i: every tasks_per_node-th from the i-th), or Ray would count each
    GPU once per task and put as many actors on it. Where Slurm binds GPUs to tasks (each
    sees fewer than the node has), a task keeps what it sees. None: no GPU visible."""
    environ = os.environ if environ is None else environ
    visible = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if not visible:
        return None
    on_node = int(environ.get("SLURM_GPUS_ON_NODE", len(visible)) or len(visible))
    if tasks_per_node > 1 and len(visible) == on_node:
        return visible[local_rank::tasks_per_node]
    return visible


def slurm_run(run_dir: str | Path) -> Path | str:
    """One task: Ray starts inside the job on its cores (or joins $SDFT_RAY_ADDRESS). Several
    tasks (nodes): one Ray node per task, the head and the driver on the first
    (jobs/ray_cluster.py). A requeued evaluation skips the batches it has."""
    import submitit

    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))
    from jobs.ray_cluster import short_temp_env, slurm_ray_cluster

    os.environ.update(short_temp_env())   # a cluster's long per-job TMPDIR would break Ray's sockets
    env = submitit.JobEnvironment()
    if env.num_tasks == 1:
        return run(run_dir)

    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", 1))
    gpus = task_gpus(env.local_rank, env.num_tasks // max(1, env.num_nodes))
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)      # the Ray node started here takes these
    # one folder per attempt: a requeued job's workers must not find the last attempt's head
    attempt = f"{os.environ.get('SLURM_JOB_ID', 'job')}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    with slurm_ray_cluster(env.global_rank, env.num_tasks, Path(run_dir) / "ray" / attempt, cpus,
                           len(gpus or ())) as address:
        if address is None:
            return "ray worker"
        os.environ["SDFT_RAY_ADDRESS"] = address
        return run(run_dir)
