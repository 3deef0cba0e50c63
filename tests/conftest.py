"""Fixtures and the test environment; the plain builders live in factories.py."""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from factories import pretrain_spec, run_module, shared_ray, write_spec

# `make test` runs two pytest-xdist workers, one per core, a test file on one worker (its
# module fixtures are made once; the Slurm tests, one file, run one after another). Each
# worker, and every job it starts, gets one thread: never four threads on two cores. That
# includes the evaluations' Ray (one CPU, one actor of one thread): an actor of two threads
# beside the other worker's test took 434 s instead of 82 s (OpenMP threads spin-waiting
# for a core that is busy).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.update(OMP_NUM_THREADS="1", SDFT_EVAL_THREADS="1", SDFT_EVAL_CPUS="1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Every test run starts from empty caches, as CI's clean machine does: nothing a test needs
# may come from a cache that an earlier run, or the user's demo, left behind. The jobs that
# tests start (subprocesses, Slurm jobs) inherit it. One cache for the run: pytest loads this
# file before xdist starts its workers, which inherit the folder and share what either one
# builds (the built-in pair, the classifiers, features: each written atomically or under a
# lock), instead of building it once each. The process that made it removes it.
if "SDFT_TEST_CACHE_OWNER" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="sdft-test-cache-")
    os.environ.update(SDFT_CACHE_DIR=_CACHE, SDFT_TEST_CACHE_OWNER=str(os.getpid()))
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def pytest_collection_modifyitems(items):
    """The Slurm tests wait on the scheduler more than they compute: they go first, so that
    under xdist the other worker's files run beside them instead of after them. The files
    with slow tests come next and the quick files last, so that the two workers end
    together: a slow file left for the end ran alone for 50 s of a cold run. xdist hands
    out the files in this order only with --no-loadscope-reorder (the Makefile's); without
    it the files with the most tests go first, and the Slurm file started 6 minutes in."""
    items.sort(key=lambda item: (item.get_closest_marker("slurm") is None,
                                 item.get_closest_marker("slow") is None))     # a stable sort


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory) -> Path:
    """A tiny pretrained source model in a store: finetune specs use init 'run:source'."""
    store = tmp_path_factory.mktemp("store") / "_runs"
    run_dir = write_spec(store / "source", pretrain_spec(steps=60, checkpoint_every=60))
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


@pytest.fixture(scope="session")
def ray_env(tmp_path_factory) -> dict[str, str]:
    """The environment for evaluations that join one Ray per test session (per xdist worker;
    factories.shared_ray) instead of starting their own: Ray's start and stop, about 8 s on
    2 cores, is paid once a worker instead of once in each of the seven modules that use it.
    An idle Ray costs under a second of CPU a minute (measured), and tests/slurm looks only
    for leftovers of its own Ray. Starting its own Ray stays covered: the killed-actor and
    folder-pair evaluations, and every evaluation on Slurm, do."""
    with shared_ray(tmp_path_factory.mktemp("ray")) as env:
        yield env
