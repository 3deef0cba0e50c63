"""One training run's settings: what `jobs.train` takes. Pydantic only, no torch.

Settings that do not apply to a run are absent from it (None), so that they cannot
change its identity: `naive` has no distillation block, a `constant` weighting has no
gamma. The run id is a short hash of the settings that differ from the defaults
(facebookresearch/dora style): the same settings always land in the same folder.
"""
from __future__ import annotations

import hashlib
import json
import re
from functools import cached_property
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, TypeAdapter, ValidationError,
                      field_validator, model_validator)

from harness.numbers import MAX_BATCH, MAX_DDIM_STEPS, MAX_IMAGES, MAX_STEPS, Real, Seed, Whole

Method = Literal["scratch", "naive", "sdft"]
Weighting = Literal["sdft", "constant", "min-snr"]
Precision = Literal["fp32", "bf16", "fp16"]
NetworkPreset = Literal["tiny", "small", "base"]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


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


# ---------------------------------------------------------------- loss
_WEIGHTING_SETTINGS = {"gamma_distill": 3.0, "gamma_aux": 50.0, "k": 1.0, "min_snr_gamma": 5.0}
_APPLIES_TO = {"sdft": {"gamma_distill", "gamma_aux", "k"}, "constant": set(), "min-snr": {"min_snr_gamma"}}


class DistillSpec(Strict):
    """The SDFT terms: L_diff + lambda_distill * L_distill + lambda_aux * L_aux."""
    weighting: Weighting = "sdft"
    lambda_distill: NonNegativeFloat = 0.1
    lambda_aux: NonNegativeFloat = 0.1
    gamma_distill: NonNegativeFloat | None = None
    gamma_aux: NonNegativeFloat | None = None
    k: NonNegativeFloat | None = None
    min_snr_gamma: PositiveFloat | None = None
    # "sampled": the aux input (pure noise) goes in at the sampled t, as the official code;
    # "final": at t = T-1, as the paper's text (x_T).
    aux_timestep: Literal["sampled", "final"] = "sampled"

    @model_validator(mode="before")
    @classmethod
    def _keep_what_applies(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        applies = _APPLIES_TO.get(data.get("weighting", "sdft"), set())
        for key, default in _WEIGHTING_SETTINGS.items():
            if key in applies:
                if data.get(key) is None:
                    data[key] = default
            else:
                data.pop(key, None)
        return data


# ---------------------------------------------------------------- run
class RunSpec(Strict):
    """Everything one training run needs; nothing it does not."""
    stage: Literal["pretrain", "finetune"]
    method: Method | None = None            # finetune only
    data: DataSpec
    # Where the weights start (and, for sdft, the frozen teacher): "run:<id>" for a run of
    # the same results store, or a diffusers model folder (`save_pretrained` layout).
    init: str | None = None
    network: NetworkPreset | None = None    # only when building a network from scratch
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    distill: DistillSpec | None = None      # sdft only
    steps: Annotated[int, Field(gt=0)]
    batch_size: Annotated[int, Field(gt=0)] = 64   # global batch, split over ranks
    lr: PositiveFloat = 1e-4
    grad_clip: PositiveFloat | None = None  # the official code clips nothing
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.9999
    # decay_n = min(decay, (1+n)/(10+n)); the official code has no warm-up
    ema_warmup: bool = False
    flip: bool = False                      # random horizontal flips of training images
    precision: Precision = "fp32"
    zero_stage: Literal[0, 1, 2] = 0
    seed: int = 0
    # Not part of the identity: they change when work is saved, not what is computed.
    checkpoint_every: Annotated[int, Field(gt=0)] = 500
    log_every: Annotated[int, Field(gt=0)] = 50
    snapshot_steps: tuple[int, ...] = ()    # keep the EMA at these steps too (early-stopping baselines)

    @model_validator(mode="after")
    def _consistent(self) -> "RunSpec":
        if self.stage == "pretrain":
            if self.method is not None or self.distill is not None or self.init is not None:
                raise ValueError("pretrain runs have no method, init or distill block")
            if self.network is None:
                raise ValueError("pretrain needs a network preset")
            return self
        if self.method is None:
            raise ValueError("finetune runs need a method (scratch, naive, sdft)")
        if (self.method == "sdft") != (self.distill is not None):
            raise ValueError("the distill block is required for sdft and absent otherwise")
        if self.method == "scratch":
            if self.init is not None or self.network is None:
                raise ValueError("scratch builds its network from a preset and has no init")
        elif self.init is None or self.network is not None:
            raise ValueError(f"{self.method} starts from `init` and takes its network from there")
        return self

    @property
    def label(self) -> str:
        """A short human name: 'pretrain', 'naive', 'sdft/min-snr'."""
        if self.stage == "pretrain":
            return "pretrain"
        if self.distill is not None:
            return f"{self.method}/{self.distill.weighting}"
        return str(self.method)


# ---------------------------------------------------------------- evaluation
Task = Literal["unconditional", "sdedit", "egsde"]
# guided-diffusion's respacing grammar; the same as models/respacing.py (harness loads no models)
RESPACING = re.compile(r"ddim[1-9][0-9]*|[1-9][0-9]*(,[1-9][0-9]*)*")


_SEED = TypeAdapter(Seed)


def _seed_or_seeds(value: Any) -> Any:
    """One seed, or a non-empty list of them; each checked as harness.numbers.Seed."""
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
        return seeds
    return one(value)


class EvalSettings(Strict):
    """What the evaluate stage measures (the grid's `evaluation` block)."""
    num_samples: Whole(gt=1, le=MAX_IMAGES) = 1000
    ddim_steps: Whole(gt=0, le=MAX_DDIM_STEPS) = 40
    batch_size: Whole(gt=0, le=MAX_BATCH) = 250
    tasks: Annotated[list[Task], Field(min_length=1)] = ["unconditional", "sdedit", "egsde"]
    t0: Annotated[list[Real(gt=0, le=1)], Field(min_length=1)] = [0.5]
    num_translations: Whole(gt=1, le=MAX_IMAGES) = 500
    checkpoint_steps: list[Whole(gt=0, le=MAX_STEPS)] = []   # earlier EMA snapshots to evaluate too
    checkpoint_methods: list[Method] = ["scratch", "naive", "sdft"]  # ... for these methods
    extractors: Annotated[list[Literal["builtin", "inception"]], Field(min_length=1)] = ["builtin"]
    max_reference: Whole(gt=1, le=MAX_IMAGES) = 10_000      # images of a reference set used
    kid_subset_size: Whole(gt=1, le=MAX_IMAGES) = 1000
    kid_subsets: Whole(gt=0, le=10_000) = 100
    confidence: Real(ge=0, lt=1) = 0.0   # class metrics count only surer predictions
    egsde_ls: Real(ge=0) = 500.0
    egsde_li: Real(ge=0) = 2.0
    # Unconditional samples: "ddim" (eta 0, as the paper) or "ancestral" (the learned variance,
    # as the official sampling script, which omits --use_ddim). Translations always run DDIM.
    sampler: Literal["ddim", "ancestral"] = "ddim"
    # guided-diffusion's respacing ("ddim40", "250", "50,50"); None: "ddim{ddim_steps}" for
    # DDIM and all T steps for the ancestral sampler. Translations use it with the DDIM sampler.
    respacing: str | None = None
    clip_denoised: StrictBool = True      # clip x0 to [-1, 1] at every step, as the official code
    lpips_net: Literal["vgg", "alex"] = "vgg"   # LPIPS trunk; VGG as the official metric notebook
    # The sampling noise (and translation noise). A list: one set of products per seed, so
    # that the intervals cover the spread over sampling noise, not only over images.
    seed: Annotated[int | list[int], BeforeValidator(_seed_or_seeds)] = 0

    @property
    def seeds(self) -> list[int]:
        """The evaluation seeds, in order."""
        return list(self.seed) if isinstance(self.seed, list) else [self.seed]

    @field_validator("respacing")
    @classmethod
    def _respacing_grammar(cls, value: str | None) -> str | None:
        if value is not None and not RESPACING.fullmatch(value):
            raise ValueError(f"{value!r} is not 'ddimN' or comma-separated step counts "
                             f"(guided-diffusion's grammar, e.g. 'ddim40', '250', '50,50')")
        return value

    @model_validator(mode="after")
    def _one_step_count(self) -> "EvalSettings":
        # with DDIM a respacing replaces ddim_steps: a changed ddim_steps would have no effect
        # and yet enter the run id
        default = type(self).model_fields["ddim_steps"].default
        if self.sampler == "ddim" and self.respacing is not None and self.ddim_steps != default:
            raise ValueError("set ddim_steps or respacing, not both (respacing replaces ddim_steps)")
        return self


class EvalSpec(Strict):
    """One model's evaluation: its samples, translations and metrics."""
    stage: Literal["evaluate"]
    role: Literal["source", "finetuned"]
    model: str                                # "run:<id>" of a trained run, or a model folder
    source_samples: str | None = None         # "run:<id>" of the source model's evaluation
    source_data: DataSpec                     # translation inputs (their test split, if built in)
    target_data: DataSpec                     # the FID/KID reference (and held-out domain, if built in)
    settings: EvalSettings = EvalSettings()


class AggregateSpec(Strict):
    """A grid's tables, plots and report from its evaluations."""
    stage: Literal["aggregate"]
    grid: str
    evaluations: dict[str, tuple[str, str]]     # evaluation run id -> (dataset, target) names


# Bumped by every change of a default that alters what is computed, so that a run made
# under an older recipe is never taken as done under a newer one.
#   2: no gradient clipping, no EMA warm-up, flips on folder data, x0 clipped in samplers.
RECIPE_VERSION = 2
# The same for evaluations only (training runs keep their ids, and the shipped weights stay
# adoptable):
#   2: VGG LPIPS, the confidence filter off, intra-cluster LPIPS, calibration rows, per-item
#      values beside the metrics.
EVAL_RECIPE_VERSION = 2

NOT_IN_IDENTITY = frozenset({"checkpoint_every", "log_every", "snapshot_steps"})


def identity_json(spec: BaseModel) -> str:
    """Canonical JSON of the settings that differ from the defaults."""
    payload = spec.model_dump(mode="json", exclude_defaults=True, exclude_none=True,
                              exclude=set(NOT_IN_IDENTITY) & set(type(spec).model_fields))
    head = {"type": type(spec).__name__, "recipe": RECIPE_VERSION}
    if isinstance(spec, (EvalSpec, AggregateSpec)):
        head["eval_recipe"] = EVAL_RECIPE_VERSION
    return json.dumps({**head, **payload}, sort_keys=True, separators=(",", ":"))


def run_id(spec: BaseModel) -> str:
    return hashlib.sha1(identity_json(spec).encode()).hexdigest()[:10]
