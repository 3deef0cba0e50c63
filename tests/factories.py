"""What the tests build, built in one place: run specs, grids, tiny models, images and noise,
a network that records its calls, labelled class images, and the processes tests run (a module
as a node runs it, a job forked as the local executor runs it, a fresh interpreter for
determinism checks). conftest.py holds only fixtures.

Torch is imported inside the model and image builders only, so that the harness's tests
that need a spec or a grid do not pay for it.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

from harness import warm
from runs.runtime import job_environment

ROOT = Path(__file__).resolve().parents[1]
SMOKE_GRID = ROOT / "grids" / "smoke.yaml"


# ---------------------------------------------------------------- run specs (dicts, as spec.json holds them)
TINY_PRETRAIN = {"stage": "pretrain", "data": {"kind": "builtin-source", "resolution": 16},
                 "network": "tiny", "batch_size": 16, "lr": 1e-3}


def pretrain_spec(**changes) -> dict:
    """A tiny source-model pretraining on the built-in source data at 16 px."""
    return {**copy.deepcopy(TINY_PRETRAIN), **changes}


def finetune_spec(method: str = "sdft", **changes) -> dict:
    """A fine-tune of the tiny source model `run:source` on 200 built-in target images at 16 px
    (scratch: a tiny network instead); sdft with both lambdas 1.0, where they matter at 16 px."""
    spec = {"stage": "finetune", "method": method,
            "data": {"kind": "builtin-target", "resolution": 16, "size": 200},
            "batch_size": 16, "steps": 100}
    if method == "scratch":
        spec["network"] = "tiny"
    else:
        spec["init"] = "run:source"
    if method == "sdft":
        spec["distill"] = {"lambda_distill": 1.0, "lambda_aux": 1.0}
    return {**spec, **changes}


def eval_spec(**settings) -> dict:
    """The source model's evaluation at 16 px, small enough for seconds per product."""
    from runs.spec import EvalSpec

    base = {"num_samples": 48, "batch_size": 16, "num_translations": 16, "ddim_steps": 10,
            "tasks": ["unconditional"], "kid_subset_size": 16, "kid_subsets": 5, "max_reference": 200}
    return EvalSpec(stage="evaluate", role="source", model="run:source",
                    source_data={"kind": "builtin-source", "resolution": 16},
                    target_data={"kind": "builtin-target", "resolution": 16, "size": 200},
                    settings={**base, **settings}).model_dump(mode="json")


def write_spec(run_dir: Path, spec: dict) -> Path:
    """A run folder holding spec.json, as the store leaves it for a job."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(json.dumps(spec))
    return run_dir


# ---------------------------------------------------------------- grids
DELETE = object()       # smoke_grid(key=DELETE) removes the key


def smoke_grid(**changes) -> dict:
    """grids/smoke.yaml with changes at paths written `a__b__0__c` (list items by index).

    Its evaluations measure LPIPS with AlexNet unless a change names `lpips_net`: at 16 px
    (resized to 64) VGG took 3.3 of an evaluation's 5.5 s of measuring, and the grids built
    here test what runs where, not the metric. VGG, the paper's, is measured end to end in
    tests/jobs/test_evaluate.py and against the official values in tests/models/test_lpips.py."""
    grid = yaml.safe_load(SMOKE_GRID.read_text())
    for dotted, value in changes.items():
        node = grid
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = copy.deepcopy(value)      # a test's shared dict stays as it was
    grid.setdefault("evaluation", {}).setdefault("lpips_net", "alex")
    return grid


def from_a_model_folder(folder: Path) -> dict:
    """smoke_grid's changes that start from a saved tiny source model (written into `folder`)
    instead of pretraining one: a job fewer, for tests whose subject is a later stage."""
    from models.networks import save_unet

    save_unet(tiny_unet(0), folder / "source-model")
    return {"datasets__0__source__pretrain": DELETE, "datasets__0__source__model": str(folder / "source-model")}


def write_grid(folder: Path, grid: dict, name: str = "grid.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(grid))
    return path


# ---------------------------------------------------------------- tiny models, images, noise
def tiny_unet(seed: int = 0, resolution: int = 16, learned_variance: bool = False):
    """The `tiny` UNet preset in eval mode, its initial weights drawn after torch.manual_seed(seed)."""
    import torch

    from models.networks import build_unet

    torch.manual_seed(seed)
    return build_unet("tiny", resolution, learned_variance=learned_variance).eval()


def tiny_eps_model(seed: int = 0, resolution: int = 16, learned_variance: bool = False):
    from models.networks import as_eps_model

    return as_eps_model(tiny_unet(seed, resolution, learned_variance))


class Recorder:
    """Wraps a network (x, t) -> output and keeps a copy of every call's inputs; without a
    network it predicts eps = 0, under which a DDIM step only rescales its state."""

    def __init__(self, net=None):
        self.net = net
        self.calls: list[tuple] = []           # (x, t) per call, detached copies

    def __call__(self, x, t):
        import torch

        self.calls.append((x.detach().clone(), t.detach().clone()))
        return torch.zeros_like(x) if self.net is None else self.net(x, t)

    @property
    def timesteps(self) -> list[int]:
        """The timestep of each call (every sample of a call at the same one)."""
        assert all(len(set(t.tolist())) == 1 for _, t in self.calls)
        return [int(t[0]) for _, t in self.calls]


def images(n: int = 6, size: int = 16, seed: int = 1):
    """n RGB images uniform in [-1, 1] (the model range), seeded."""
    import torch

    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def noise(n: int = 2, size: int = 16, seed: int = 7):
    """Standard normal (n, 3, size, size), seeded."""
    import torch

    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def class_image(label: int, painted: bool, rng, noise: float, third: str = "lower bar"):
    """A 16 px uint8 RGB image of one of three classes: 0 a horizontal bar, 1 a vertical bar,
    2 the horizontal bar two pixels lower ("lower bar") or a corner square ("square"); grey
    when not painted, reddish (the target style) when painted; plus Gaussian noise of sd
    `noise` (0.7 makes a small classifier err)."""
    import numpy as np

    x = np.zeros((16, 16), np.float32)
    if label == 0:
        x[6:10, 2:14] = 1
    elif label == 1:
        x[2:14, 6:10] = 1
    elif third == "lower bar":
        x[8:12, 2:14] = 1
    elif third == "square":
        x[2:8, 2:8] = 1
    else:
        raise ValueError(f"third: {third!r} is neither 'lower bar' nor 'square'")
    x = np.clip(x + rng.normal(0, noise, x.shape), 0, 1)
    rgb = np.stack([x, x, x], -1) if not painted else np.stack([0.3 + 0.7 * x, 0.2 * x, 0.1 + 0.2 * x], -1)
    return (rgb * 255).astype(np.uint8)


# ---------------------------------------------------------------- processes
def run_module(module: str, *args: str, env: dict | None = None, timeout: float = 600,
               check: bool = False) -> subprocess.CompletedProcess:
    """`python -m module args` from the repository root, as a node or a user runs it. A job
    module is forked from a process that has imported torch once, as the local executor runs
    it (harness/warm.py): about 1 s a tiny job here instead of 7. A fresh interpreter stays
    covered: the Slurm tests, the multi-process and SIGKILL training tests. `env` reaches what
    the job reads as it runs; what torch reads as it is imported (ATEN_CPU_CAPABILITY, say)
    comes from the environment of the worker's first forked job, as for a local submission."""
    full_env = {**os.environ, **(env or {})}
    # a fork runs in this process's folder: only from the root is it what cwd=ROOT gives
    if warm.available(module) and Path.cwd() == ROOT:
        proc = _forked(module, list(args), job_environment(full_env), timeout)
    else:
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _forked(module: str, args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """What subprocess.run(capture_output=True, text=True) returns, for a forked job."""
    with tempfile.TemporaryDirectory(prefix="sdft-forked-") as tmp:
        stdout, stderr = Path(tmp, "stdout"), Path(tmp, "stderr")
        process = warm.fork(module, args, env, stdout=str(stdout), stderr=str(stderr))
        try:
            process.join(timeout)
            if process.exitcode is None:
                raise subprocess.TimeoutExpired([module, *args], timeout)
        finally:
            if process.exitcode is None:
                process.kill()
                process.join()
        return subprocess.CompletedProcess([module, *args], process.exitcode,
                                           _text_of(stdout), _text_of(stderr))


def _text_of(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


@contextlib.contextmanager
def lock_held_elsewhere(lock: str, path: Path):
    """Another process that holds a lock of the store until the block ends: `lock` an
    expression of `path` (e.g. "Store(path).submission_lock()"). Yields the process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from runs.store import RunFolder, Store; "
         f"path = Path(sys.argv[1]); lock = {lock}; lock.__enter__(); print('held', flush=True); time.sleep(120)",
         str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


# The Ray an evaluation starts for itself (jobs.evaluation.driver.ray_init, in the job
# environment), started once; it writes its address and stops when its stdin closes.
_RAY_HELPER = """
import os, sys
from pathlib import Path
for key in ("SDFT_RAY_ADDRESS", "RAY_ADDRESS"):
    os.environ.pop(key, None)
from jobs.evaluation.driver import ray_init
ray = ray_init()
address = Path(sys.argv[1])
address.with_suffix(".tmp").write_text(ray.get_runtime_context().gcs_address)
address.with_suffix(".tmp").rename(address)
sys.stdin.read()
ray.shutdown()
"""


@contextlib.contextmanager
def shared_ray(folder: Path, timeout: float = 120):
    """One Ray for several evaluations, which join it through $SDFT_RAY_ADDRESS (as an
    evaluation joins the Ray of a multi-task Slurm job): Ray's start-up, about 9 s on 2
    cores, is paid once instead of once per evaluation. Yields the environment to run the
    jobs (or a submission) with. Each job still gets its own actors; only the daemons are
    shared. Token authentication as in jobs/ray_cluster.py; on exit the helper shuts its
    Ray down, and its process group is killed if it lingers."""
    from runs.runtime import job_environment
    from jobs.ray_cluster import auth_env, write_token

    folder.mkdir(parents=True, exist_ok=True)
    token, address = folder / "token", folder / "address"
    write_token(token)
    auth = auth_env(token)
    env = job_environment({**os.environ, **auth})
    env.pop("RAY_AUTH_TOKEN", None)
    with open(folder / "helper.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", _RAY_HELPER, str(address)], cwd=ROOT, env=env,
                                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not address.is_file():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the shared Ray did not start:\n{(folder / 'helper.log').read_text()[-3000:]}")
            time.sleep(0.1)
        yield {**auth, "SDFT_RAY_ADDRESS": address.read_text().strip()}
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def digest(*arrays) -> str:
    """sha256 over the dtypes, shapes and bytes of arrays or tensors: equal digests, equal bits."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def in_fresh_process(code: str, env: dict | None = None, timeout: float = 120) -> str:
    """Run `code` in a new interpreter (cwd ROOT, this file importable, a new hash seed) and
    return the last line it prints: a second computation that shares no state with this one."""
    full_env = {**os.environ, "PYTHONHASHSEED": "random", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(Path(__file__).parent),
                                                           full_env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"fresh process exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]
