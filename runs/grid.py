"""Grid expansion: a validated grid file -> the runs it asks for, with their dependencies.

Each run is identified by the hash of the settings that apply to it (runs.spec.run_id),
so the same settings always land in the same folder and duplicates collapse: `naive`
under three weightings is one run, not three.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from runs.config import (BuiltinSourceConfig, BuiltinTargetConfig, DatasetConfig, FinetuneSettings,
                            GridConfig, SameAs, layers)
from runs.errors import UserError
from runs.adapters import adapter_block
from runs.compute import Settings, matched_steps
from runs.refs import RunRef
from runs.methods import METHODS
from runs.spec import AggregateSpec, EvalSpec, RunSpec
from runs.params import TRAIN

# The stages in the order they run, each with the job module that runs one of its runs
# (`python -m <module> RUN_DIR`; on Slurm harness/slurm_job.py calls the module's slurm_run).
STAGE_JOBS = {"pretrain": "jobs.train", "finetune": "jobs.train", "evaluate": "jobs.evaluate",
              "aggregate": "jobs.aggregate"}
STAGES = tuple(STAGE_JOBS)
# the hyper-parameters that go into a finetune run spec, from their declarations
TRAIN_KEYS = tuple(p.name for p in TRAIN)


@dataclass
class PlannedRun:
    """One job of the plan: what to run, where it belongs, what it waits for."""
    run_id: str
    stage: str
    spec: BaseModel
    dataset: str
    target: str | None = None
    method: str | None = None
    weighting: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    # the units of the grid whose run this is: "" for the method (and weighting) itself, a
    # named variant's name ("sdft-noaux"); a run whose spec two units share is one run
    variants: tuple[str, ...] = ("",)

    @property
    def settings(self) -> dict[str, Any]:
        """Its hyper-parameters and weighting: what its method's cost per step reads."""
        return {**self.params, "weighting": self.weighting}


@dataclass
class Plan:
    grid: GridConfig
    runs: list[PlannedRun]
    paths: list[tuple[str, str]]     # (field, path) of every dataset folder / model the grid names

    def by_stage(self, stage: str) -> list[PlannedRun]:
        return [r for r in self.runs if r.stage == stage]

    def by_id(self) -> dict[str, PlannedRun]:
        return {r.run_id: r for r in self.runs}


# ---------------------------------------------------------------- axes
def sweep(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """All combinations of the list-valued settings; `same_as` follows its leader's axis."""
    ties = {k: v.same_as for k, v in settings.items() if isinstance(v, SameAs)}
    axes = {k: v for k, v in settings.items() if isinstance(v, list) and k not in ties}
    fixed = {k: v for k, v in settings.items() if k not in axes and k not in ties}
    combos = []
    for values in itertools.product(*axes.values()) if axes else [()]:
        combo = {**fixed, **dict(zip(axes, values))}
        for follower, leader in ties.items():
            combo[follower] = combo[leader]
        combos.append(combo)
    return combos


def settings_for(grid: GridConfig, method: str, weighting: str | None = None,
                 variant: str = "") -> dict[str, Any]:
    """The grid's finetune settings with the method's overrides applied, then its weighting's
    (per_method `sdft/<weighting>`), then a named variant's (`sdft/sdft-noaux`)."""
    base = {name: getattr(grid.finetune, name) for name in FinetuneSettings.model_fields}
    raw = grid.per_method_raw()
    key = f"{method}/{weighting}" if weighting is not None else method
    if variant:
        key = f"{method}/{variant}" if weighting is not None else variant
    for layer in layers(key):
        base.update(raw.get(layer, {}))
    return base


def variant_name(key: str) -> str:
    """A variant's name, its key's last part: `sdft-noaux` of `sdft/sdft-noaux`."""
    return key.rpartition("/")[2]


def method_combos(grid: GridConfig, method: str, variant: str = "") -> list[tuple[dict[str, Any], str | None]]:
    """(settings, weighting) of every run of a method (or of one of its named variants) before
    seeds: each weighting sweeps its own settings. Sweep-major order, as when all weightings
    shared one sweep."""
    weightings = [w for w in grid.weightings if w in METHODS[method].weightings] or [None]
    if variant:                   # a variant varies one weighting of a method, or the method
        weightings = [next(w for w in weightings if f"{method}/{w}" == base or base == method)
                      for key, base in grid.variants().items() if variant_name(key) == variant]
    sweeps = [(w, sweep(settings_for(grid, method, w, variant))) for w in weightings]
    longest = max(len(s) for _, s in sweeps)
    return [(s[i], w) for i in range(longest) for w, s in sweeps if i < len(s)]


def units(grid: GridConfig, method: str) -> list[str]:
    """The method itself ("") and the names of its variants, in the grid's order."""
    return [""] + [variant_name(key) for key, base in grid.variants().items() if base.partition("/")[0] == method]


# ---------------------------------------------------------------- specs
def resolve_path(path: str, base_dir: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def source_data(dataset: DatasetConfig, base_dir: Path) -> dict:
    src = dataset.source
    if isinstance(src, BuiltinSourceConfig):
        return {"kind": "builtin-source", "resolution": src.resolution, "seed": src.pair_seed}
    return {"kind": "folder", "path": resolve_path(src.path, base_dir), "resolution": src.resolution}


def target_data(dataset: DatasetConfig, target, base_dir: Path) -> dict:
    src = dataset.source
    if isinstance(target, BuiltinTargetConfig):
        return {"kind": "builtin-target", "resolution": src.resolution, "seed": src.pair_seed,
                "size": target.size, "missing_classes": target.missing_classes}
    return {"kind": "folder", "path": resolve_path(target.path, base_dir), "resolution": src.resolution}


def evaluation_target(dataset: DatasetConfig, target, base_dir: Path) -> dict:
    """The target as an evaluation sees it: a folder's reference and labels too (training
    specs leave them out, so that naming them does not retrain anything)."""
    data = target_data(dataset, target, base_dir)
    for key in ("reference", "labels"):
        if getattr(target, key, None) is not None:
            data[key] = resolve_path(getattr(target, key), base_dir)
    return data


def pretrain_spec(dataset: DatasetConfig, base_dir: Path) -> RunSpec | None:
    p = dataset.source.pretrain
    if p is None:
        return None
    data = source_data(dataset, base_dir)
    return RunSpec(stage="pretrain", data=data, network=p.network, steps=p.steps,
                   batch_size=p.batch_size, lr=p.lr, ema_decay=p.ema_decay, ema_warmup=p.ema_warmup,
                   grad_clip=p.grad_clip, flip=p.flip, dropout=p.dropout,
                   precision=p.precision, zero_stage=p.zero_stage, seed=p.seed,
                   checkpoint_every=p.checkpoint_every)


def finetune_spec(method: str, weighting: str | None, combo: dict, seed: int, data: dict, init: str,
                  scratch_network: str | None, snapshots: list[int], source: dict | None = None) -> RunSpec:
    spec: dict[str, Any] = {"stage": "finetune", "method": method, "data": data, "seed": seed,
                            "snapshot_steps": tuple(s for s in snapshots if s < combo["steps"]),
                            **{k: combo[k] for k in TRAIN_KEYS}}
    declared = METHODS[method]
    if declared.starts_from_source:
        spec["init"] = init
        spec["adapter"] = adapter_block(combo)       # None without one: no key in the run id
    else:
        spec["network"] = scratch_network
    if declared.needs_source_data:
        spec["source_data"] = source
    if declared.settings_key is not None:
        own = {p.name: combo[p.name] for p in declared.params}
        spec[declared.settings_key] = {**own, **({"weighting": weighting} if weighting else {})}
    return RunSpec.model_validate(spec)


def shown_params(spec: RunSpec) -> dict[str, Any]:
    """The hyper-parameters of a run as the dry-run table shows them."""
    out = {p.name: getattr(spec, p.name) for p in TRAIN if p.identity}
    out["seed"] = spec.seed
    if spec.settings is not None:
        out.update({k: v for k, v in spec.settings.model_dump().items() if k != "weighting" and v is not None})
    if spec.adapter is not None:
        out.update({"adapter": spec.adapter.kind, **{f"lora_{k}": v for k, v in spec.adapter.model_dump().items()
                                                       if k != "kind"}})
    return out


def matched(grid: GridConfig, method: str | None, steps: list[int], where: str,
            settings: Settings = None) -> list[int]:
    """Steps as a run of the method with these settings trains them: scaled to equal compute
    under selection.equal_compute (runs.compute), else as given."""
    if not grid.selection.equal_compute or method not in METHODS:
        return steps
    return sorted({matched_steps(grid.methods, method, s, where, settings) for s in steps})


def snapshots_for(grid: GridConfig, method: str | None, settings: Settings = None) -> list[int]:
    """The earlier checkpoints to keep and evaluate for a run of a method (early-stopping
    baselines)."""
    e = grid.evaluation
    chosen = sorted(set(e.checkpoint_steps)) if method in e.checkpoint_methods else []
    return matched(grid, method, chosen, "evaluation.checkpoint_steps", settings)


# the methods whose forgetting curve is drawn (evaluation.curve_steps): the baseline and sdft
CURVE_METHODS = ("naive", "sdft")


def curve_steps_for(grid: GridConfig, method: str | None, settings: Settings = None) -> list[int]:
    """The earlier checkpoints of a run's forgetting curve (unconditional samples only)."""
    chosen = sorted(set(grid.evaluation.curve_steps)) if method in CURVE_METHODS else []
    return matched(grid, method, chosen, "evaluation.curve_steps", settings)


def evaluation_spec(role: str, model: str, source: dict, target: dict, grid: GridConfig,
                    source_eval: str | None = None, method: str | None = None,
                    run_settings: Settings = None) -> EvalSpec:
    wants_source_samples = role == "finetuned" and "unconditional" in grid.evaluation.tasks
    settings = grid.evaluation.model_copy(update={
        "checkpoint_steps": snapshots_for(grid, method, run_settings), "checkpoint_methods": [],
        "curve_steps": curve_steps_for(grid, method, run_settings)})
    return EvalSpec(stage="evaluate", role=role, model=model, source_data=source, target_data=target,
                    source_samples=str(RunRef(source_eval)) if wants_source_samples else None,
                    settings=settings)


# ---------------------------------------------------------------- expansion
def expand(grid: GridConfig, base_dir: str | Path = ".") -> Plan:
    """Every job of a grid, deduplicated by run id: pretrain -> finetune -> evaluate (the
    source model once per target, each finetuned model once) -> aggregate."""
    base_dir = Path(base_dir)
    runs: dict[str, PlannedRun] = {}
    paths: list[tuple[str, str]] = []
    folder_sources = any(d.source.pretrain is None for d in grid.datasets)   # where finetune.network is used
    for d_index, dataset in enumerate(grid.datasets):
        where = f"datasets[{d_index}]"
        if not isinstance(dataset.source, BuiltinSourceConfig):
            paths.append((f"{where}.source.path", resolve_path(dataset.source.path, base_dir)))
        pre = pretrain_spec(dataset, base_dir)
        deps: tuple[str, ...] = ()
        if pre is not None:
            runs.setdefault(pre.run_id, PlannedRun(pre.run_id, "pretrain", pre, dataset.name,
                                                   method="pretrain", params=shown_params(pre)))
            init, deps, network = str(RunRef(pre.run_id)), (pre.run_id,), pre.network
        else:
            init = resolve_path(dataset.source.model, base_dir)
            paths.append((f"{where}.source.model", init))
            network = None
        source = source_data(dataset, base_dir)
        for t_index, target in enumerate(dataset.targets):
            data = target_data(dataset, target, base_dir)
            judged = evaluation_target(dataset, target, base_dir)
            if data["kind"] == "folder":
                paths.append((f"{where}.targets[{t_index}].path", data["path"]))
                for key in ("reference", "labels"):
                    if key in judged:
                        paths.append((f"{where}.targets[{t_index}].{key}", judged[key]))
            source_eval = evaluation_spec("source", init, source, judged, grid)
            runs.setdefault(source_eval.run_id, PlannedRun(
                source_eval.run_id, "evaluate", source_eval, dataset.name, target.name, "source",
                depends_on=deps))
            for method in grid.methods:
                asked = settings_for(grid, method).get("network")
                if network is not None and asked not in (None, network) and not folder_sources:
                    # where the value came from: the method's own override, or the shared block
                    field = next((f"per_method.{key}.network" for key in reversed(layers(method))
                                  if "network" in grid.per_method_raw().get(key, {})), "finetune.network")
                    raise UserError(f"{field}: {asked!r} would be ignored: it is scratch's network when "
                                    f"the source is a model folder, and {where} pretrains its source, whose "
                                    f"network ({network!r}, {where}.source.pretrain.network) scratch trains")
                scratch_network = network or asked
                if not METHODS[method].starts_from_source and scratch_network is None:
                    raise UserError(f"{where}: {method} needs finetune.network when the source is a model folder")
                evaluations: dict[str, str] = {}          # a finetune run's id -> its evaluation's
                for variant in units(grid, method):
                    own: set[str] = set()
                    for (combo, weighting), seed in itertools.product(method_combos(grid, method, variant),
                                                                      grid.seeds):
                        run_settings = {**combo, "weighting": weighting}
                        if grid.selection.equal_compute:
                            combo = {**combo, "steps": matched_steps(grid.methods, method, combo["steps"],
                                                                     settings=run_settings)}
                        snapshots = sorted(set(snapshots_for(grid, method, run_settings))
                                           | set(curve_steps_for(grid, method, run_settings)))
                        spec = finetune_spec(method, weighting, combo, seed, data, init, scratch_network,
                                             snapshots, source)
                        own.add(spec.run_id)
                        ev = evaluation_spec("finetuned", str(RunRef(spec.run_id)), source, judged, grid,
                                             source_eval.run_id, method, run_settings)
                        evaluations[spec.run_id] = ev.run_id
                        # a run shared with another unit is one run with both units' rows; one
                        # shared with another target (the same training data, judged against
                        # another reference) is trained once and evaluated for each target
                        for run_id in (spec.run_id, ev.run_id):
                            if run_id in runs and variant not in runs[run_id].variants:
                                runs[run_id].variants += (variant,)
                        runs.setdefault(spec.run_id, PlannedRun(
                            spec.run_id, "finetune", spec, dataset.name, target.name, method, weighting,
                            shown_params(spec), deps if METHODS[method].starts_from_source else (),
                            variants=(variant,)))
                        runs.setdefault(ev.run_id, PlannedRun(
                            ev.run_id, "evaluate", ev, dataset.name, target.name, method, weighting,
                            shown_params(spec), (spec.run_id, source_eval.run_id), variants=(variant,)))
                    if variant and own <= {r for r in evaluations if "" in runs[r].variants}:
                        key = next(k for k in grid.variants() if variant_name(k) == variant)
                        raise UserError(f"per_method.{key}: the variant runs exactly what {grid.variants()[key]} "
                                        f"runs (its settings do not apply to {method}, or equal the method's)")
    evaluations = {r.run_id: (r.dataset, r.target) for r in runs.values() if r.stage == "evaluate"}
    # which units' rows each evaluation gives, where that is not its method's alone
    members = {r.run_id: r.variants for r in runs.values() if r.stage == "evaluate" and r.variants != ("",)}
    aggregate = AggregateSpec(stage="aggregate", grid=grid.name, evaluations=dict(sorted(evaluations.items())),
                              variants=dict(sorted(members.items())), criterion=grid.selection.criterion,
                              baselines=tuple(grid.selection.baselines))
    runs[aggregate.run_id] = PlannedRun(aggregate.run_id, "aggregate", aggregate, "all",
                                        depends_on=tuple(sorted(evaluations)))
    for run in runs.values():        # where training reports: bookkeeping, the run ids stay
        if isinstance(run.spec, RunSpec):
            run.spec = run.spec.model_copy(update={"report_to": tuple(grid.report_to)})
    ordered = sorted(runs.values(), key=lambda r: STAGES.index(r.stage))
    return Plan(grid, ordered, paths)
