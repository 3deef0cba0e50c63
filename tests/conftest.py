import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Every test run starts from empty caches, as CI's clean machine does: nothing a test needs
# may come from a cache that an earlier run, or the user's demo, left behind. The jobs that
# tests start (subprocesses, Slurm jobs) inherit it.
_CACHE = tempfile.mkdtemp(prefix="sdft-test-cache-")
os.environ["SDFT_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def write_spec(run_dir: Path, spec: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(json.dumps(spec))
    return run_dir


def run_module(module: str, *args: str, env: dict | None = None, timeout: float = 600,
               check: bool = False) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


TINY_PRETRAIN = {"stage": "pretrain", "data": {"kind": "builtin-source", "resolution": 16},
                 "network": "tiny", "batch_size": 16, "lr": 1e-3}


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory) -> Path:
    """A tiny pretrained source model in a store: finetune specs use init 'run:source'."""
    store = tmp_path_factory.mktemp("store") / "_runs"
    run_dir = write_spec(store / "source", {**TINY_PRETRAIN, "steps": 60, "checkpoint_every": 60})
    run_module("jobs.train", str(run_dir), check=True)
    return run_dir


@pytest.fixture(scope="session")
def lpips_weights() -> Path:
    """The converted LPIPS weights (harness.lpips_setup): made once into the virtualenv, then
    only checked. Without the package index this fails loudly; LPIPS tests never skip."""
    from harness.lpips_setup import setup
    from models.lpips_weights import weights_dir

    setup()
    return weights_dir()
