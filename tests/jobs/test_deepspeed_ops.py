"""DeepSpeed's CPU op is built into the virtualenv by `make setup` (jobs/deepspeed_ops.py), and
jobs load it from there unless the user points torch elsewhere."""
import os

from jobs import deepspeed_ops
from jobs.deepspeed_ops import EXTENSIONS_DIR, use_built_ops


def test_jobs_use_the_op_built_into_the_virtualenv_and_keep_the_users_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(deepspeed_ops, "EXTENSIONS_DIR", tmp_path / "ops")
    # set, then deleted: monkeypatch then restores the variable as it was (use_built_ops sets
    # it behind monkeypatch's back; a leaked empty folder made this worker's later jobs
    # build the op again)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "")
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    use_built_ops()                          # not built: DeepSpeed's own cache, as before
    assert "TORCH_EXTENSIONS_DIR" not in os.environ
    (tmp_path / "ops").mkdir()
    use_built_ops()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "ops")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/scratch/mine")
    use_built_ops()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == "/scratch/mine"


def test_set_up_built_the_op_so_no_test_pays_for_it():
    built = list((EXTENSIONS_DIR / "deepspeed_shm_comm").glob("*.so"))
    assert built, f"no DeepSpeed op in {EXTENSIONS_DIR}: run `make setup` (python -m jobs.deepspeed_ops)"
