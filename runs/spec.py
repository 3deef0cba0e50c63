"""One training run's settings: what `jobs.train` takes. Pydantic only, no torch.

Settings that do not apply to a run are absent from it (None), so that they cannot
change its identity: a method's own settings sit in its block (runs.methods; sdft's is
`distill`), which only its runs have, and a `constant` weighting has no gamma. The run id
is a short hash of the settings that differ from the defaults (facebookresearch/dora
style): the same settings always land in the same folder.
"""
from __future__ import annotations

import hashlib
import re
import json
from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, TypeAdapter, ValidationError,
                      create_model, field_validator, model_validator)

from models.respacing import respaced_timesteps
from runs.numbers import MAX_BATCH, MAX_DDIM_STEPS, MAX_IMAGES, MAX_STEPS, DdimSteps, NoBool, Real, Seed, Whole

from runs.adapters import AdapterSpec
from runs.methods import METHODS, NAMES, Method
from runs.params import TRAIN, NetworkPreset, Precision
from runs.params import NOT_IN_IDENTITY as PARAM_NOT_IN_IDENTITY
from runs.refs import RunRef


class Strict(BaseModel):
    """Unknown keys are errors and a validated spec never changes."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    @cached_property
    def run_id(self) -> str:
        return run_id(self)


# ---------------------------------------------------------------- data
class BuiltinSource(Strict):
    """Grey Fashion-MNIST, all 10 classes: the large, diverse source domain."""
    kind: Literal["builtin-source"]
    resolution: Literal[16, 32] = 32
    seed: int = 0


def missing_classes(value) -> list[int]:
    """Fashion-MNIST classes left out of a built-in target set: 0..9, at least one kept."""
    if any(c < 0 or c > 9 for c in value):
        raise ValueError("classes are 0..9 (Fashion-MNIST)")
    if len(set(value)) >= 10:
        raise ValueError("at least one class must remain in the target set")
    return sorted(set(value))


class BuiltinTarget(Strict):
    """A small, painted, class-biased target set drawn from images the source does not use."""
    kind: Literal["builtin-target"]
    resolution: Literal[16, 32] = 32
    seed: int = 0
    size: Annotated[int, Field(gt=0, le=10000)] = 500
    missing_classes: tuple[int, ...] = (5, 8, 9)

    @field_validator("missing_classes")
    @classmethod
    def _valid_classes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(missing_classes(value))


class ImageFolder(Strict):
    """A directory of PNG/JPEG images (FFHQ, MetFaces, AAHQ on a cluster). An evaluation's
    target may name `reference`, a folder of the held-out full target domain, and `labels`,
    a CSV `file,label` (models/data/labels.py) over its target, reference and source images;
    training specs never carry them (they do not change what is trained)."""
    kind: Literal["folder"]
    path: str
    resolution: Annotated[int, Field(gt=0)]
    reference: str | None = None
    labels: str | None = None


DataSpec = Annotated[Union[BuiltinSource, BuiltinTarget, ImageFolder], Field(discriminator="kind")]


# ---------------------------------------------------------------- a method's settings
MethodName = Literal[NAMES]


class _MethodSettingsChecks(Strict):
    """A method's own settings (runs.methods). A weighting's own settings (sdft's gamma, k)
    are present only under that weighting, so they cannot change the identity of a run that
    does not use them."""
    declared: ClassVar[tuple] = ()          # the method's Params

    @model_validator(mode="before")
    @classmethod
    def _keep_what_applies(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "weighting" not in cls.model_fields:
            return data
        data = dict(data)
        weighting = data.get("weighting", cls.model_fields["weighting"].default)
        for p in cls.declared:
            if p.weightings is None:
                continue
            if p.applies_to(weighting):
                if data.get(p.name) is None:
                    data[p.name] = p.default
            else:
                data.pop(p.name, None)
        return data


def settings_model(method: Method) -> type[BaseModel]:
    """The pydantic model of a method's block: its declared settings (and its weighting)."""
    fields: dict[str, Any] = {p.name: ((p.kind, p.default) if p.weightings is None else (p.kind | None, None))
                              for p in method.params}
    if method.weightings:
        fields["weighting"] = (Literal[method.weightings], method.weightings[0])
    model = create_model(f"{method.name.title()}Settings", __base__=_MethodSettingsChecks, **fields)
    model.declared = method.params
    return model


SETTINGS_MODELS = {m.name: settings_model(m) for m in METHODS.values() if m.settings_key is not None}
DistillSpec = SETTINGS_MODELS["sdft"]      # sdft's block, `distill`


# ---------------------------------------------------------------- run
# Where a training run reports its loss curves and sample grids (jobs/tracking.py):
# TensorBoard's event files in the run folder by default; W&B and MLflow are optional installs.
Tracker = Literal["tensorboard", "wandb", "mlflow"]


class _RunChecks(Strict):
    """Everything one training run needs; nothing it does not. The hyper-parameters come
    from their declarations (runs.params); these are the run's own fields."""
    stage: Literal["pretrain", "finetune"]
    method: MethodName | None = None        # finetune only (runs.methods)
    data: DataSpec
    # Where the weights start (and, for sdft, the frozen teacher): "run:<id>" for a run of
    # the same results store, or a diffusers model folder (`save_pretrained` layout).
    init: str | None = None
    network: NetworkPreset | None = None    # only when building a network from scratch
    seed: Seed = 0
    # the source model's training data, for a method that reads it (ewc); absent otherwise
    source_data: DataSpec | None = None
    # a low-rank adapter trained instead of every weight (runs/adapters.py); absent: none
    adapter: AdapterSpec | None = None
    # Bookkeeping, not identity: when work is saved and logged.
    log_every: Annotated[int, Field(gt=0)] = 50
    snapshot_steps: tuple[int, ...] = ()    # keep the EMA at these steps too (early-stopping baselines)
    report_to: tuple[Tracker, ...] = ("tensorboard",)

    @field_validator("init")
    @classmethod
    def _init_ref(cls, value: str | None) -> str | None:
        RunRef.parse(value)              # a malformed "run:" reference fails here, naming the field
        return value

    @property
    def init_ref(self) -> RunRef | None:
        """The run whose model this one starts from, or None (a model folder, or no init)."""
        return RunRef.parse(self.init)

    @model_validator(mode="before")
    @classmethod
    def _flip_follows_the_data(cls, data: Any) -> Any:
        # flips are on for image folders (official random_flip=True), off for the built-in pair
        if isinstance(data, dict) and data.get("flip") is None and isinstance(data.get("data"), dict):
            data = {**data, "flip": data["data"].get("kind") == "folder"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "RunSpec":
        if self.stage == "pretrain":
            if (self.method is not None or self.init is not None or self.method_settings_keys()
                    or self.source_data is not None or self.adapter is not None):
                raise ValueError("pretrain runs have no method, init, method settings, source_data or adapter")
            if self.network is None:
                raise ValueError("pretrain needs a network preset")
            return self
        if self.method is None:
            raise ValueError(f"finetune runs need a method ({', '.join(NAMES)})")
        method = METHODS[self.method]
        own = method.settings_key
        given = self.method_settings_keys()
        if own is not None and own not in given:
            raise ValueError(f"the {own} block is required for {self.method}")
        if given - {own}:
            wrong = sorted(given - {own})[0]
            raise ValueError(f"the {wrong} block belongs to another method and is absent for {self.method}")
        if method.needs_source_data != (self.source_data is not None):
            raise ValueError(f"source_data is required for {self.method}" if method.needs_source_data
                             else f"{self.method} reads no source_data")
        if not method.starts_from_source:
            if self.init is not None or self.network is None:
                raise ValueError(f"{self.method} builds its network from a preset and has no init")
            if self.adapter is not None:
                raise ValueError(f"{self.method} trains a fresh network: an adapter needs a source model")
        elif self.init is None or self.network is not None:
            raise ValueError(f"{self.method} starts from `init` and takes its network from there")
        return self

    def method_settings_keys(self) -> set[str]:
        """The method blocks this spec has."""
        return {key for key in SETTINGS_BLOCKS if getattr(self, key) is not None}

    @property
    def settings(self) -> BaseModel | None:
        """The method's own settings (its block), or None."""
        key = METHODS[self.method].settings_key if self.method else None
        return getattr(self, key) if key else None

    @property
    def label(self) -> str:
        """A short human name: 'pretrain', 'naive', 'sdft/min-snr'."""
        if self.stage == "pretrain":
            return "pretrain"
        weighting = getattr(self.settings, "weighting", None)
        return f"{self.method}/{weighting}" if weighting else str(self.method)


# each method's block, by its key (sdft's is `distill`)
SETTINGS_BLOCKS = {METHODS[name].settings_key: model for name, model in SETTINGS_MODELS.items()}
RunSpec = create_model("RunSpec", __base__=_RunChecks, **{p.name: (p.kind, p.default) for p in TRAIN},
                       **{key: (model | None, None) for key, model in SETTINGS_BLOCKS.items()})


# ---------------------------------------------------------------- evaluation
Task = Literal["unconditional", "sdedit", "egsde"]


_SEED = TypeAdapter(Seed)


def _seed_or_seeds(value: Any) -> Any:
    """One seed, or a non-empty list of them; each checked as runs.numbers.Seed."""
    def one(v, where=""):
        try:
            return _SEED.validate_python(v)
        except ValidationError as err:
            msg = err.errors()[0]["msg"].removeprefix("Value error, ")
            raise ValueError(f"{where}{msg}" + ("" if "got " in msg else f" (got {v!r})")) from None

    if isinstance(value, list):
        if not value:
            raise ValueError("an empty list of seeds: give at least one")
        seeds = [one(v, f"[{i}] ") for i, v in enumerate(value)]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat: {seeds}")
        return seeds if len(seeds) > 1 else seeds[0]     # [3] is seed 3: one spelling, one run id
    return one(value)


def _respaces(respacing: str) -> bool:
    """Whether the respacing holds (else its own validator says why, under its own name)."""
    try:
        respaced_timesteps(respacing)
    except ValueError:
        return False
    return True


class EvalSettings(Strict):
    """What the evaluate stage measures (the grid's `evaluation` block)."""
    num_samples: Whole(gt=1, le=MAX_IMAGES) = 1000
    ddim_steps: DdimSteps = 40
    batch_size: Whole(gt=0, le=MAX_BATCH) = 250
    tasks: Annotated[list[Task], Field(min_length=1)] = ["unconditional", "sdedit", "egsde"]
    t0: Annotated[list[Real(gt=0, le=1)], Field(min_length=1)] = [0.5]
    num_translations: Whole(gt=1, le=MAX_IMAGES) = 500
    checkpoint_steps: list[Whole(gt=0, le=MAX_STEPS)] = []   # earlier snapshots to evaluate too (of the `weights` evaluated)
    checkpoint_methods: list[MethodName] = ["scratch", "naive", "sdft"]  # ... for these methods
    # the forgetting curve: earlier steps of naive and sdft, unconditional samples only (so
    # `tasks` must hold unconditional), their rows kept apart in curve.parquet
    # (docs/evaluation-classes.md); [] (the default): no curve
    curve_steps: list[Whole(gt=0, le=MAX_STEPS)] = []
    extractors: Annotated[list[Literal["builtin", "inception"]], Field(min_length=1)] = ["builtin"]
    max_reference: Whole(gt=1, le=MAX_IMAGES) = 10_000      # images of a reference set used
    kid_subset_size: Whole(gt=1, le=MAX_IMAGES) = 1000
    kid_subsets: Whole(gt=0, le=10_000) = 100
    confidence: Real(ge=0, lt=1) = 0.0   # class metrics count only surer predictions
    egsde_ls: Real(ge=0) = 500.0
    egsde_li: Real(ge=0) = 2.0
    # EGSDE's low-pass filter L down-samples by this factor and up-samples back; None: down
    # to 8 x 8 at any resolution (EGSDE's down_N = 32 at 256 px; a factor of 2 at 16 px)
    egsde_low_pass_factor: Annotated[Literal[2, 4, 8], NoBool] | None = None
    # Unconditional samples: "ddim" (eta 0, as the paper) or "ancestral" (the learned variance,
    # as the official sampling script, which omits --use_ddim), or in fewer steps one of
    # diffusers' multistep solvers (models/solvers.py), "dpm-solver++" or "unipc", with
    # `sampler_steps` steps. Translations always run DDIM (ddim_steps, and the respacing
    # only when DDIM is the sampler): SDEdit's and EGSDE's guidance is a DDIM step's.
    sampler: Literal["ddim", "ancestral", "dpm-solver++", "unipc"] = "ddim"
    # A solver's network evaluations (at diffusers' spacing for it); None: ddim_steps. Only
    # for dpm-solver++ and unipc (ddim and ancestral take ddim_steps or respacing)
    sampler_steps: Whole(gt=0, le=MAX_DDIM_STEPS) | None = None
    # torch.compile of the sampled networks (models/compiling.py); None: on with a GPU. How
    # fast, not what: it never enters the run id (EVAL_NOT_IN_IDENTITY)
    compile: StrictBool | None = None
    # guided-diffusion's respacing ("ddim40", "250", "50,50"); None: "ddim{ddim_steps}" for
    # DDIM and all T steps for the ancestral sampler. Translations use it with the DDIM sampler.
    # Only for ddim and ancestral; with ddim it replaces ddim_steps (set one of the two), and
    # "ddimN" is read as ddim_steps N (one spelling, one run id).
    # YAML reads `respacing: 250` as a number: it is the grammar's step count all the same
    respacing: str | None = None
    clip_denoised: StrictBool = True      # clip x0 to [-1, 1] at every step, as the official code
    # Which weights of a fine-tuned run are sampled: "raw" (the default; the official scripts
    # sample model010000.pt, not the EMA) or "ema". None in a grid means raw; EvalSpec fills
    # it in for fine-tuned models and drops it for the source model, which is evaluated as the
    # fine-tunes start from it (a given folder, or a pretrain run's EMA): it enters a run id
    # only where it has an effect, and then always, so that no evaluation made before it
    # existed (of the EMA) is taken for one of the raw weights. A sweep of finetune.ema_decay
    # or ema_warmup needs "ema": the raw weights do not depend on them.
    weights: Literal["ema", "raw"] | None = None
    lpips_net: Literal["vgg", "alex"] = "vgg"   # LPIPS trunk; VGG as the official metric notebook
    # The sampled networks under torch.autocast in bf16 or fp16: convolutions and matmuls in
    # half precision on a GPU's tensor cores, GroupNorm in fp32 (on a GPU), as guided-diffusion's
    # use_fp16 keeps it. It changes the samples slightly, so it enters the run id when not
    # fp32, and the hardware never chooses it.
    precision: Precision = "fp32"
    # The sampling noise (and translation noise), 0..4294967295. A list (non-empty, no repeats):
    # one set of products per seed, so that the intervals cover the spread over sampling
    # noise, not only over images; a list of one seed is that seed.
    seed: Annotated[int | list[int], BeforeValidator(_seed_or_seeds)] = 0
    # true: every model is evaluated twice, on a `validation` and a disjoint `test` split
    # (other noise, other translation inputs, the other half of a held-out reference;
    # jobs/evaluation/splits.py), so that settings are chosen on rows that are not reported
    # (report.selection). false (the default) stays out of the run id.
    splits: StrictBool = False

    @property
    def split_names(self) -> list[str | None]:
        """The splits each product is made for: [None] without splits."""
        return ["validation", "test"] if self.splits else [None]

    @property
    def seeds(self) -> list[int]:
        """The evaluation seeds, in order."""
        return list(self.seed) if isinstance(self.seed, list) else [self.seed]

    @model_validator(mode="before")
    @classmethod
    def _ddim_respacing_is_a_step_count(cls, data: Any) -> Any:
        """Under DDIM `respacing: ddimN` is `ddim_steps: N` (that is how DDIM samples without a
        respacing: models/sampling.py sampler_timesteps): one spelling, so one run id. Where
        ddim_steps is set as well, _one_step_count says so."""
        if not isinstance(data, dict) or data.get("sampler", "ddim") != "ddim":
            return data
        steps = re.fullmatch(r"ddim(\d+)", str(data.get("respacing")))
        default = cls.model_fields["ddim_steps"].default
        if steps and data.get("ddim_steps", default) == default and _respaces(steps.group(0)):
            data = {k: v for k, v in data.items() if k != "respacing"}
            data["ddim_steps"] = int(steps.group(1))
        return data

    @field_validator("respacing", mode="before")
    @classmethod
    def _respacing_count(cls, value):
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("respacing")
    @classmethod
    def _respacing_holds(cls, value: str | None) -> str | None:
        if value is not None:
            respaced_timesteps(value)    # its grammar, and steps the T timesteps can hold
        return value

    @field_validator("tasks", "t0", "extractors")
    @classmethod
    def _no_repeats(cls, value: list) -> list:
        # a repeat would make the same products twice: twice the sampling, doubled rows
        if len(set(value)) != len(value):
            raise ValueError(f"repeat: {value}")
        return value

    @model_validator(mode="after")
    def _curve_needs_samples(self) -> "EvalSettings":
        if self.curve_steps and "unconditional" not in self.tasks:
            raise ValueError("curve_steps: the forgetting curve is measured on unconditional samples; "
                             "add unconditional to tasks")
        return self

    @model_validator(mode="after")
    def _one_step_count(self) -> "EvalSettings":
        # with DDIM a respacing replaces ddim_steps: a changed ddim_steps would have no effect
        # and yet enter the run id
        default = type(self).model_fields["ddim_steps"].default
        if self.sampler == "ddim" and self.respacing is not None and self.ddim_steps != default:
            raise ValueError("set ddim_steps or respacing, not both (respacing replaces ddim_steps)")
        solver = self.sampler in ("dpm-solver++", "unipc")
        if solver and self.respacing is not None:
            raise ValueError(f"respacing is for the ddim and ancestral samplers; {self.sampler} takes "
                             f"sampler_steps (its own spacing)")
        if not solver and self.sampler_steps is not None:
            raise ValueError(f"sampler_steps is for the dpm-solver++ and unipc samplers, not {self.sampler} "
                             f"(use ddim_steps or respacing)")
        return self

    @model_validator(mode="after")
    def _t0_runs_a_step(self) -> "EvalSettings":
        # a t0 that runs no DDIM step hands back the input: a perfect score (PSNR inf, LPIPS 0)
        steps = self.translation_steps
        if set(self.tasks) - {"unconditional"}:
            for t0 in self.t0:
                if round(t0 * steps) == 0:
                    raise ValueError(f"t0 {t0} runs round({t0} x {steps}) = 0 of the translations' {steps} DDIM "
                                     f"steps: the input would come back unchanged; give t0 > {0.5 / steps:.4g}")
        return self

    @property
    def translation_steps(self) -> int:
        """The translations' DDIM steps: the respacing's where DDIM is the sampler, else
        ddim_steps (jobs/evaluation/sample.py)."""
        if self.respacing is None or self.sampler != "ddim":
            return self.ddim_steps
        return len(respaced_timesteps(self.respacing))

    @property
    def solver_steps(self) -> int:
        """The unconditional sampler's steps when it is a solver."""
        return self.sampler_steps if self.sampler_steps is not None else self.ddim_steps


class EvalSpec(Strict):
    """One model's evaluation: its samples, translations and metrics."""
    stage: Literal["evaluate"]
    role: Literal["source", "finetuned"]
    model: str                                # "run:<id>" of a trained run, or a model folder
    source_samples: str | None = None         # "run:<id>" of the source model's evaluation
    source_data: DataSpec                     # translation inputs (their test split, if built in)
    target_data: DataSpec                     # the FID/KID reference (and held-out domain, if built in)
    settings: EvalSettings = EvalSettings()

    @field_validator("model")
    @classmethod
    def _model_ref(cls, value: str) -> str:
        RunRef.parse(value)
        return value

    @field_validator("source_samples")
    @classmethod
    def _source_samples_ref(cls, value: str | None) -> str | None:
        if value is not None and RunRef.parse(value) is None:
            raise ValueError(f"expected run:<id> of the source model's evaluation, got {value!r}")
        return value

    @property
    def model_ref(self) -> RunRef | None:
        """The trained run evaluated, or None for a model folder."""
        return RunRef.parse(self.model)

    @property
    def source_samples_ref(self) -> RunRef | None:
        return RunRef.parse(self.source_samples)

    @model_validator(mode="before")
    @classmethod
    def _weights_where_they_apply(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        settings = data.get("settings", {})
        if isinstance(settings, BaseModel):
            settings = settings.model_dump()
        settings = dict(settings)
        try:
            trained = RunRef.parse(str(data.get("model", ""))) is not None
        except ValueError:           # a malformed reference: the field's own check names it
            trained = False
        if data.get("role") == "finetuned" and trained:
            settings["weights"] = settings.get("weights") or "raw"
        else:
            settings.pop("weights", None)
        data["settings"] = settings
        return data


class AggregateSpec(Strict):
    """A grid's tables, plots and report from its evaluations."""
    stage: Literal["aggregate"]
    grid: str
    evaluations: dict[str, tuple[str, str]]     # evaluation run id -> (dataset, target) names
    # evaluation run id -> the units of the grid whose rows it gives, where that is not its
    # method alone: "" the method, else a named variant ("sdft-noaux"; runs.grid). Empty
    # without variants, so that it stays out of the run id.
    variants: dict[str, tuple[str, ...]] = {}
    # what selects each method's candidate on the validation split (grid: selection.criterion;
    # the default stays out of the run id, as every default does)
    criterion: str = "fid"
    # the models the paired differences are taken against (grid: selection.baselines)
    baselines: tuple[str, ...] = ("naive",)


# Bumped by every change of a default that alters what is computed, so that a run made
# under an older recipe is never taken as done under a newer one.
#   2: no gradient clipping, no EMA warm-up, flips on folder data, x0 clipped in samplers.
# (Raw weights evaluated by default needed no bump: `weights` is always in a fine-tuned
# model's evaluation id, and evaluations made before it existed have none.)
RECIPE_VERSION = 2
# The same for evaluations only (training runs keep their ids, and the shipped weights stay
# adoptable):
#   2: VGG LPIPS, the confidence filter off, intra-cluster LPIPS, calibration rows, per-item
#      values beside the metrics.
#   3: EGSDE's realism energy as EGSDE's code computes it: the cosine of the channel
#      vectors at each location of the feature map, averaged over locations (it was one
#      cosine over the flattened map).
#   4: the translation inputs and the calibration rows' real images a seeded draw from their
#      sets, not the first n: a folder lists its images sorted by path, grouped by class.
EVAL_RECIPE_VERSION = 4
# The same for what only evaluations of the built-in pair at 16 px compute (folder
# evaluations, and the pair at 32 px, whose images reach the network as they are, keep
# their ids):
#   2: the builtin network sees 16 px images framed as it trained on them
#      (models/features.py `as_trained`), not scaled to fill its 32 px input.
BUILTIN_EVAL_VERSION = 2
# The same for what only the source model's evaluation computes where the classifier is
# calibrated (the built-in pair; a folder target with labels and a reference):
#   1: the source model's samples and the real source images corrected with the
#      classifier's error rates on held-out source-style images, not the target style's.
#   2: the real source rows take source images the classifier never trained on (on a folder
#      pair also none of the source-style calibration images), where enough are left
#      (jobs/evaluation/measure.py real_source_positions).
SOURCE_EVAL_VERSION = 2
# The same for what only evaluations against a folder target compute:
#   1: the diversity metric's 10 cluster centres a seeded choice of the target images, not
#      the first 10 of the folder's sorted listing (a folder of class subfolders gave one class).
FOLDER_EVAL_VERSION = 1

NOT_IN_IDENTITY = PARAM_NOT_IN_IDENTITY | {"log_every", "snapshot_steps", "report_to"}
EVAL_NOT_IN_IDENTITY = {"compile"}     # evaluation settings that change speed, not results


def identity_json(spec: BaseModel) -> str:
    """Canonical JSON of the settings that differ from the defaults."""
    payload = spec.model_dump(mode="json", exclude_defaults=True, exclude_none=True,
                              exclude=set(NOT_IN_IDENTITY) & set(type(spec).model_fields))
    if isinstance(spec, EvalSpec) and isinstance(payload.get("settings"), dict):
        payload["settings"] = {k: v for k, v in payload["settings"].items() if k not in EVAL_NOT_IN_IDENTITY}
        if not payload["settings"]:
            del payload["settings"]
    head = {"type": type(spec).__name__, "recipe": RECIPE_VERSION}
    method = METHODS[spec.method] if isinstance(spec, _RunChecks) and spec.method else None
    if method is not None and method.revision:
        head["method_revision"] = method.revision
    if isinstance(spec, (EvalSpec, AggregateSpec)):
        head["eval_recipe"] = EVAL_RECIPE_VERSION
    if isinstance(spec, EvalSpec) and spec.target_data.kind == "builtin-target" and spec.target_data.resolution == 16:
        head["builtin_eval"] = BUILTIN_EVAL_VERSION
    if isinstance(spec, EvalSpec) and spec.role == "source" and _calibrated(spec.target_data):
        head["source_eval"] = SOURCE_EVAL_VERSION
    if isinstance(spec, EvalSpec) and spec.target_data.kind == "folder":
        head["folder_eval"] = FOLDER_EVAL_VERSION
    return json.dumps({**head, **payload}, sort_keys=True, separators=(",", ":"))


def _calibrated(target: DataSpec) -> bool:
    """Whether an evaluation against this target calibrates a class instrument."""
    data = target.model_dump()
    return data["kind"] == "builtin-target" or bool(data.get("labels") and data.get("reference"))


def run_id(spec: BaseModel) -> str:
    return hashlib.sha1(identity_json(spec).encode()).hexdigest()[:10]
