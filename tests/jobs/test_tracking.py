"""Loss curves and sample grids for people (jobs/tracking.py): TensorBoard event files in
the run folder, a resumed run's curve without the steps it recomputes, and a clear error for
a tracker that is asked for and not installed."""
import importlib.util

import pytest
import torch

from factories import smoke_grid
from runs.config import GridConfig
from runs.errors import UserError
from runs.grid import expand
from jobs.tracking import MODULES, Trackers, check_installed
from runs.spec import Tracker
from typing import get_args


def events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_every_tracker_the_grid_accepts_has_a_writer():
    assert set(get_args(Tracker)) == set(MODULES)


def test_scalars_and_images_reach_the_event_files(tmp_path):
    trackers = Trackers(["tensorboard"], tmp_path, "abc", {"lr": 1e-3})
    for step in (1, 2, 3):
        # images/s is None in a window that held only the compiling first step: left out
        trackers.scalars({"loss": 1.0 / step, "lr": 1e-3, "images_per_s": None if step == 1 else 5.0}, step)
    trackers.images("samples/ema", torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4), 3)
    trackers.close()
    acc = events(tmp_path)
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([1.0, 0.5, 1 / 3], rel=1e-6)   # stored as float32
    assert [e.step for e in acc.Scalars("train/images_per_s")] == [2, 3]
    (image,) = acc.Images("samples/ema")
    # two 4 x 4 tiles side by side, with make_grid's 2-pixel padding around each
    assert (image.step, image.width, image.height) == (3, 2 * 4 + 3 * 2, 4 + 2 * 2)


def test_a_resumed_run_replaces_the_steps_after_its_checkpoint(tmp_path):
    first = Trackers(["tensorboard"], tmp_path, "abc", {})
    for step in (1, 2, 3, 4):
        first.scalars({"loss": float(step)}, step)
    first.close()                   # died after step 4; the checkpoint was at step 2
    resumed = Trackers(["tensorboard"], tmp_path, "abc", {}, start_step=2)
    for step in (3, 4):
        resumed.scalars({"loss": 10.0 * step}, step)
    resumed.close()
    assert [(e.step, e.value) for e in events(tmp_path).Scalars("train/loss")] == [
        (1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_a_tracker_that_is_not_installed_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match=r"^report_to: wandb is not installed \(pip install wandb\)"):
        check_installed(["tensorboard", "wandb"])
    grid = smoke_grid(report_to=["wandb"])
    with pytest.raises(ValueError, match="wandb is not installed"):
        GridConfig.model_validate(grid)


def test_report_to_reaches_the_training_specs_without_changing_run_ids():
    default = expand(GridConfig.model_validate(smoke_grid()))
    silent = expand(GridConfig.model_validate(smoke_grid(report_to=[])))
    assert [r.run_id for r in default.runs] == [r.run_id for r in silent.runs]
    trained = [r for r in silent.runs if r.stage in ("pretrain", "finetune")]
    assert trained and all(r.spec.report_to == () for r in trained)
    assert all(r.spec.report_to == ("tensorboard",) for r in default.runs if r.stage in ("pretrain", "finetune"))


def test_the_report_draws_each_training_run_of_the_grid(tmp_path):
    """The loss curves come from the runs behind the evaluations: the fine-tunes evaluated and
    the pretraining their source came from, each once."""
    import json

    from factories import eval_spec, finetune_spec, pretrain_spec, write_spec
    from runs.spec import AggregateSpec
    from jobs.loss_curves import curves, loss_curves_plot, training_runs

    store = tmp_path / "_runs"

    def trained(name, spec, losses):
        folder = write_spec(store / name, spec)
        rows = [{"step": 10 * (i + 1), "loss": v} for i, v in enumerate(losses)] + [{"event": "resume", "step": 10}]
        (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    trained("source", pretrain_spec(steps=20), [1.0, 0.5])
    trained("sdft-a", finetune_spec("sdft", steps=30), [0.3, 0.2, 0.1])
    trained("naive-a", finetune_spec("naive", steps=30), [0.4, 0.3, 0.2])
    trained("noaux-a", finetune_spec("sdft", steps=30), [0.5, 0.4, 0.3])     # the variant's run
    source_eval = eval_spec()
    write_spec(store / "eval-source", source_eval)
    for name in ("sdft-a", "naive-a", "noaux-a"):
        write_spec(store / f"eval-{name}", {**source_eval, "role": "finetuned", "model": f"run:{name}"})
    spec = AggregateSpec(stage="aggregate", grid="g", evaluations={
        f"eval-{n}": ("fmnist", "shoes") for n in ("source", "sdft-a", "naive-a", "noaux-a")},
        variants={"eval-sdft-a": ("",), "eval-noaux-a": ("sdft-noaux",)})

    runs = training_runs(spec, store)
    assert {run_id: panel for run_id, (panel, _, _) in runs.items()} == {
        "source": "pretraining", "sdft-a": "fmnist / shoes", "naive-a": "fmnist / shoes",
        "noaux-a": "fmnist / shoes"}
    panels = curves(runs)
    assert panels["pretraining"] == [("pretrain", [10, 20], [1.0, 0.5])]
    # a named variant is drawn as a method of its own, named as in the tables
    assert sorted((label, steps) for label, steps, _ in panels["fmnist / shoes"]) == [
        ("naive", [10, 20, 30]), ("sdft/sdft", [10, 20, 30]), ("sdft/sdft-noaux", [10, 20, 30])]
    png = loss_curves_plot(spec, store, tmp_path / "g" / "loss_curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
