"""The loss curves of a grid's training runs as one PNG for the report (loss_curves.png).

They are read from each run's train.jsonl, the record the harness keeps (the TensorBoard
event files beside it hold the same values, for people with TensorBoard open). The runs are
found from the grid's evaluations: each evaluated fine-tune, and the pretraining its source
model came from. One panel per (dataset, target) and one for the pretrainings; one colour
per method (a named variant is a method of its own, as in the tables), so that seeds and
swept settings of a method share it.
"""
from __future__ import annotations

from pathlib import Path

from runs.refs import RunRef
from runs.methods import unit_name
from runs.spec import AggregateSpec, EvalSpec, RunSpec
from runs.store import RunFolder
from jobs.figures import distinct_colours, pyplot, save_figure


def training_runs(spec: AggregateSpec, store_root: Path) -> dict[str, tuple[str, str, RunFolder]]:
    """Training run id -> (its panel, its label, its folder), for the runs behind the grid's
    evaluations that have a spec (a model folder given as the source has no run). The label
    is the tables' name of the unit the evaluation gives rows for: 'sdft/sdft-noaux' for a
    named variant of sdft."""
    found: dict[str, tuple[str, str, RunFolder]] = {}
    for eval_id, (dataset, target) in spec.evaluations.items():
        evaluation = EvalSpec.model_validate(RunFolder(store_root / eval_id).read_spec())
        ref = evaluation.model_ref
        if ref is None:
            continue
        folder = RunFolder(store_root / ref.run_id)
        run = RunSpec.model_validate(folder.read_spec())
        if run.stage == "pretrain":
            found[ref.run_id] = ("pretraining", run.label, folder)
        else:
            weighting = getattr(run.settings, "weighting", None)
            units = spec.variants.get(eval_id) or ("",)
            label = " = ".join(unit_name(run.method, weighting, v) for v in units)
            found[ref.run_id] = (f"{dataset} / {target}", label, folder)
        source = RunRef.parse(run.init) if run.init else None
        if source is not None and (store_root / source.run_id / "spec.json").is_file():
            found.setdefault(source.run_id, ("pretraining", "pretrain", RunFolder(store_root / source.run_id)))
    return found


def curves(runs: dict[str, tuple[str, str, RunFolder]]) -> dict[str, list[tuple[str, list[int], list[float]]]]:
    """Panel -> [(label, steps, total loss)], runs with no logged loss left out."""
    panels: dict[str, list] = {}
    for run_id, (panel, label, folder) in sorted(runs.items()):
        rows = [r for r in folder.log_rows() if "loss" in r and "step" in r]
        if not rows:
            continue
        panels.setdefault(panel, []).append((label, [r["step"] for r in rows], [r["loss"] for r in rows]))
    return panels


def loss_curves_plot(spec: AggregateSpec, store_root: Path, path: Path) -> Path | None:
    """The PNG, or None when no training run of the grid logged a loss (shipped weights with
    no log, model folders given as sources)."""
    panels = curves(training_runs(spec, store_root))
    if not panels:
        return None
    plt = pyplot()

    names = sorted(panels, key=lambda p: (p != "pretraining", p))
    labels = sorted({label for lines in panels.values() for label, *_ in lines})
    colours = distinct_colours(labels)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        shown = set()
        for label, steps, loss in panels[name]:
            ax.plot(steps, loss, color=colours[label], alpha=0.8, lw=1.2,
                    label=None if label in shown else label)
            shown.add(label)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (mean over the logging window)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"{spec.grid}: loss curves (one line per run)")
    return save_figure(fig, path, dpi=100)
