"""The training job with `compile: true` on this CPU (inductor): it trains, logs its first
(compiling) step apart from the steady state, and saves a model folder that loads as an
eager one does (in-place compilation keeps the state dict's keys)."""
import pytest

from factories import pretrain_spec, run_module, write_spec
from harness.store import RunFolder


@pytest.mark.slow
def test_a_compiled_run_trains_and_times_its_first_step_apart(tmp_path):
    """93 s on the quiet 2-core machine: inductor compiles the tiny UNet's training step."""
    from models.networks import load_unet

    run_dir = write_spec(tmp_path / "_runs" / "compiled", pretrain_spec(steps=4, log_every=2, compile=True))
    run_module("jobs.train", str(run_dir), check=True)
    folder = RunFolder(run_dir)
    assert folder.status == "done"
    rows = folder.log_rows()
    first = [r for r in rows if r.get("event") == "first_step"]
    assert len(first) == 1 and first[0]["compile"] is True and first[0]["at_step"] == 1
    steady = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steady] == [2, 4] and all(r["images_per_s"] > 0 for r in steady)
    # compiling took longer than a steady step (16 images at the steady rate)
    assert first[0]["first_step_s"] > 16 / steady[-1]["images_per_s"]
    load_unet(folder.model_dir)
