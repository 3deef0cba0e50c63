"""The grid file: one YAML that describes a whole experiment, validated by pydantic.

Any hyper-parameter given as a list is an axis of the grid; `{same_as: other}` ties a
hyper-parameter to another's axis (lambda_aux moving with lambda_distill, say).
Errors come out as one line naming the file, the field path and what was expected.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError,
                      field_validator, model_validator)

from harness.errors import UserError
from harness.spec import EvalSettings as EvaluationConfig
from harness.spec import Method, NetworkPreset, Precision, Weighting, missing_classes

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- data
class PretrainSettings(Strict):
    """How the source model is trained when no pretrained model is given."""
    steps: Annotated[int, Field(gt=0)]
    network: NetworkPreset = "small"
    batch_size: Annotated[int, Field(gt=0)] = 64
    lr: Annotated[float, Field(gt=0)] = 2e-4
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.999
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    precision: Precision = "fp32"
    zero_stage: Literal[0, 1, 2] = 0
    seed: int = 0
    grad_clip: Annotated[float, Field(gt=0)] | None = None
    ema_warmup: bool = False
    flip: bool | None = None          # None: on for folder data, off for the built-in pair
    checkpoint_every: Annotated[int, Field(gt=0)] = 1000


class _SourceOrigin(Strict):
    pretrain: PretrainSettings | None = None
    model: str | None = None   # a diffusers model folder: pretraining is skipped

    @model_validator(mode="after")
    def _one_origin(self):
        if (self.pretrain is None) == (self.model is None):
            raise ValueError("give either `pretrain` (train the source model) or `model` (a model folder)")
        return self


class BuiltinSourceConfig(_SourceOrigin):
    kind: Literal["builtin"]
    resolution: Literal[16, 32] = 32
    pair_seed: int = 0


class FolderSourceConfig(_SourceOrigin):
    kind: Literal["folder"]
    path: str
    resolution: Annotated[int, Field(gt=0)]


class BuiltinTargetConfig(Strict):
    name: Name
    kind: Literal["builtin"]
    size: Annotated[int, Field(gt=0, le=10000)] = 500
    missing_classes: list[int] = [5, 8, 9]

    _classes = field_validator("missing_classes")(lambda cls, value: missing_classes(value))


class FolderTargetConfig(Strict):
    name: Name
    kind: Literal["folder"]
    path: str


SourceConfig = Annotated[Union[BuiltinSourceConfig, FolderSourceConfig], Field(discriminator="kind")]
TargetConfig = Annotated[Union[BuiltinTargetConfig, FolderTargetConfig], Field(discriminator="kind")]


class DatasetConfig(Strict):
    name: Name
    source: SourceConfig
    targets: Annotated[list[TargetConfig], Field(min_length=1)]

    @model_validator(mode="after")
    def _builtin_pairs(self):
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"target names repeat: {names}")
        if isinstance(self.source, BuiltinSourceConfig) and any(t.kind != "builtin" for t in self.targets):
            raise ValueError("a builtin source pairs with builtin targets; use folders for both")
        return self


# ---------------------------------------------------------------- hyper-parameters
class SameAs(Strict):
    same_as: str


def _axis(kind):
    """A value, a non-empty list of values (an axis of the grid) or {same_as: other}."""
    adapter = TypeAdapter(kind)

    def one(value, where=""):
        try:
            return adapter.validate_python(value)
        except ValidationError as err:
            raise ValueError(f"{where}{err.errors()[0]['msg']} (got {value!r})") from None

    def validate(value):
        if isinstance(value, dict):
            return SameAs.model_validate(value)
        if isinstance(value, list):
            if not value:
                raise ValueError("empty sweep list: give at least one value")
            return [one(v, f"[{i}] ") for i, v in enumerate(value)]
        return one(value)

    return Annotated[Any, BeforeValidator(validate)]


NonNeg = Annotated[float, Field(ge=0)]
Pos = Annotated[float, Field(gt=0)]
PosInt = Annotated[int, Field(gt=0)]


class FinetuneSettings(Strict):
    """The fine-tuning hyper-parameters; a list on any of them is a sweep axis."""
    lambda_distill: _axis(NonNeg) = 0.1
    lambda_aux: _axis(NonNeg) = 0.1
    gamma_distill: _axis(NonNeg) = 3.0
    gamma_aux: _axis(NonNeg) = 50.0
    k: _axis(NonNeg) = 1.0
    min_snr_gamma: _axis(Pos) = 5.0
    aux_timestep: _axis(Literal["sampled", "final"]) = "sampled"
    dropout: _axis(Annotated[float, Field(ge=0, lt=1)]) = 0.0
    lr: _axis(Pos) = 2e-5
    batch_size: _axis(PosInt) = 16
    steps: _axis(PosInt) = 10_000
    ema_decay: _axis(Annotated[float, Field(ge=0, lt=1)]) = 0.9999
    grad_clip: _axis(Pos) = None          # off, as the official code
    ema_warmup: _axis(bool) = False
    flip: _axis(bool) = None              # None: on for folder data, off for the built-in pair
    precision: _axis(Precision) = "fp32"
    zero_stage: _axis(Literal[0, 1, 2]) = 0
    network: NetworkPreset | None = None     # scratch's network when the source is a model folder
    checkpoint_every: PosInt = 500

    @model_validator(mode="after")
    def _ties_exist(self):
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SameAs):
                target = getattr(self, value.same_as, None) if value.same_as in type(self).model_fields else None
                if target is None or isinstance(target, SameAs) or value.same_as == name:
                    raise ValueError(f"{name}: same_as must name another hyper-parameter, got {value.same_as!r}")
        return self


# ---------------------------------------------------------------- evaluation and cluster
class ClusterConfig(Strict):
    """Slurm resources; `additional` passes any other sbatch option through."""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_node: Annotated[int, Field(ge=0)] = 0
    tasks_per_node: PosInt = 1
    cpus_per_task: PosInt = 2
    mem_gb: Pos = 8
    timeout_min: Annotated[int, Field(gt=1)] = 240
    array_parallelism: PosInt = 64
    max_num_timeout: Annotated[int, Field(ge=1)] = 10
    additional: dict[str, Any] = {}


class GridConfig(Strict):
    name: Name
    datasets: Annotated[list[DatasetConfig], Field(min_length=1)]
    methods: Annotated[list[Method], Field(min_length=1)]
    weightings: Annotated[list[Weighting], Field(min_length=1)] = ["sdft"]
    finetune: FinetuneSettings = FinetuneSettings()
    per_method: dict[Method, FinetuneSettings] = {}
    seeds: Annotated[list[int], Field(min_length=1)] = [0]
    evaluation: EvaluationConfig = EvaluationConfig()
    cluster: ClusterConfig = ClusterConfig()

    @field_validator("per_method", mode="before")
    @classmethod
    def _overrides_only(cls, value: Any) -> Any:
        return value if value is not None else {}

    @model_validator(mode="after")
    def _unique_names(self):
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names repeat: {names}")
        for field in ("methods", "weightings", "seeds"):
            values = getattr(self, field)
            if len(set(values)) != len(values):
                raise ValueError(f"{field} repeat: {values}")
        return self

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def per_method_raw(self) -> dict[str, dict]:
        """The overrides exactly as written (unset fields must not override the base)."""
        return {m: s.model_dump(exclude_unset=True) for m, s in self.per_method.items()}


# ---------------------------------------------------------------- loading
def _field_path(loc: tuple) -> str:
    """('datasets', 0, 'source', 'builtin', 'steps') -> 'datasets[0].source.steps'."""
    parts: list[str] = []
    for i, item in enumerate(loc):
        previous = loc[i - 1] if i else None
        is_union_tag = item in ("builtin", "folder") and (
            previous == "source" or (isinstance(previous, int) and i >= 2 and loc[i - 2] == "targets"))
        if is_union_tag:
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def describe_validation_error(path: Path | str, err: ValidationError) -> str:
    """One line: the file, the first error's field path and what was expected."""
    first = err.errors()[0]
    loc, msg, kind = first["loc"], first["msg"], first["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind == "literal_error":
        msg = f"{msg}, got {first.get('input')!r}"
    elif kind == "missing":
        msg = "missing required key"
    elif isinstance(first.get("input"), (str, int, float, bool, type(None))) and "(got" not in msg:
        msg = f"{msg} (got {first.get('input')!r})"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{path}: {_field_path(loc)}: {msg}{more}"


def load_grid(path: str | Path) -> GridConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such grid file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: (top level): expected a mapping of settings")
    try:
        return GridConfig.model_validate(raw)
    except ValidationError as err:
        raise UserError(describe_validation_error(path, err)) from None
