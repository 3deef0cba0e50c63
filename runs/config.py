"""The grid file: one YAML that describes a whole experiment, validated by pydantic.

Any hyper-parameter given as a list is an axis of the grid; `{same_as: other}` ties a
hyper-parameter to another's axis (lambda_aux moving with lambda_distill, say). Under
`per_method` a method, or one weighting of sdft (`sdft/min-snr`), gets values and axes of
its own. `selection` says how the tables pick each method's candidate and whether every
method must get as many (runs.budget).
Errors come out as one line naming the file, the field path and what was expected.
Numbers are strict (runs.numbers: no booleans, finite, bounded), a key given twice is
an error, and the cluster settings that reach the sbatch script are checked (runs/cluster.py).
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

import yaml
from pydantic import (AfterValidator, BeforeValidator, Field, TypeAdapter, ValidationError,
                      StrictBool, create_model, field_validator, model_validator)

from runs.cluster import ClusterConfig
from runs.errors import UserError
from runs.overrides import apply_overrides
from runs.numbers import MAX_RESOLUTION, NoBool, Real, Seed, Whole
from runs.spec import EvalSettings as EvaluationConfig
from runs.methods import ALL_PARAMS, METHODS, WEIGHTINGS, unit_name
from runs.params import Batch, NetworkPreset, Precision, Steps, ZeroStage
from runs.paths import check_path
from runs.spec import MethodName, Tracker, missing_classes
from runs.strict import AtField, Strict

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
FilePath = Annotated[str, AfterValidator(check_path)]


# ---------------------------------------------------------------- data
class PretrainSettings(Strict):
    """How the source model is trained when no pretrained model is given."""
    steps: Steps
    network: NetworkPreset = "small"
    batch_size: Batch = 64
    lr: Real(gt=0) = 2e-4
    ema_decay: Real(ge=0, lt=1) = 0.999
    dropout: Real(ge=0, lt=1) = 0.0
    precision: Precision = "fp32"
    zero_stage: ZeroStage = 0
    seed: Seed = 0
    grad_clip: Real(gt=0) | None = None
    ema_warmup: StrictBool = False
    flip: StrictBool | None = None          # None: on for folder data, off for the built-in pair
    checkpoint_every: Steps = 1000


class _SourceOrigin(Strict):
    pretrain: PretrainSettings | None = None   # train the source model here; give this or `model`
    model: FilePath | None = None   # a diffusers model folder: pretraining is skipped; give this or `pretrain`

    @model_validator(mode="after")
    def _one_origin(self):
        if (self.pretrain is None) == (self.model is None):
            raise ValueError("give either `pretrain` (train the source model) or `model` (a model folder)")
        return self


class BuiltinSourceConfig(_SourceOrigin):
    kind: Literal["builtin"]
    resolution: Annotated[Literal[16, 32], NoBool] = 32
    pair_seed: Seed = 0


class FolderSourceConfig(_SourceOrigin):
    kind: Literal["folder"]
    path: FilePath
    resolution: Whole(gt=0, le=MAX_RESOLUTION)


class BuiltinTargetConfig(Strict):
    name: Name
    kind: Literal["builtin"]
    size: Whole(gt=0, le=10000) = 500
    missing_classes: list[Whole()] = [5, 8, 9]   # Fashion-MNIST classes 0..9 the target lacks; at least one kept

    _classes = field_validator("missing_classes")(lambda cls, value: missing_classes(value))


class FolderTargetConfig(Strict):
    name: Name
    kind: Literal["folder"]
    path: FilePath
    # the held-out full target domain (full-domain FID/KID, P/R, calibration rows)
    reference: FilePath | None = None
    # a CSV `file,label` over target, reference and source images: class metrics
    labels: FilePath | None = None

    @model_validator(mode="after")
    def _labels_need_a_reference(self):
        if self.labels is not None and self.reference is None:
            raise AtField(("labels",), "labels need a `reference` folder (the missing classes are "
                                       "the reference's classes that the target lacks)")
        return self


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
        # the built-in target is drawn from the built-in source's data: they come as a pair
        if any((t.kind == "builtin") != (self.source.kind == "builtin") for t in self.targets):
            raise ValueError("a builtin source pairs with builtin targets; use folders for both")
        return self


# ---------------------------------------------------------------- hyper-parameters
class SameAs(Strict):
    same_as: str


class Axis:
    """Marks a sweepable hyper-parameter. `family`: the kind of value it holds (a tie joins
    two of one family); `check`: validates one value; `kind`: its type (the grid reference)."""

    def __init__(self, family: str, check: Callable[[Any], Any], kind: Any = None):
        self.family, self.check, self.kind = family, check, kind


def _axis(kind, family: str):
    """A value, a non-empty list of values (an axis of the grid) or {same_as: other}."""
    adapter = TypeAdapter(kind)

    def one(value, where=""):
        try:
            return adapter.validate_python(value)
        except ValidationError as err:
            msg = err.errors()[0]["msg"].removeprefix("Value error, ")
            raise ValueError(f"{where}{msg}" + ("" if "got " in msg else f" (got {value!r})")) from None

    def validate(value):
        if isinstance(value, dict):
            return SameAs.model_validate(value)
        if isinstance(value, list):
            if not value:
                raise ValueError("empty sweep list: give at least one value")
            return [one(v, f"[{i}] ") for i, v in enumerate(value)]
        return one(value)

    # the schema (`sdft schema`) shows what the validator takes: a value, a sweep or a tie
    takes = Union[kind, list[kind], SameAs]
    return Annotated[Any, BeforeValidator(validate, json_schema_input_type=takes), Axis(family, one, kind)]


class _FinetuneChecks(Strict):
    @model_validator(mode="after")
    def _ties_hold(self):
        bad = tie_error({name: getattr(self, name) for name in type(self).model_fields})
        if bad is not None:
            raise AtField((bad[0], "same_as"), bad[1])
        return self


# The fine-tuning hyper-parameters, from their declarations (runs.params and each method's,
# runs.methods); a list on any axis is a sweep.
# `network`: scratch's network when the source is a model folder (with only pretrained sources, refused unless theirs).
FinetuneSettings = create_model(
    "FinetuneSettings", __base__=_FinetuneChecks,
    network=(NetworkPreset | None, None),
    **{p.name: ((_axis(p.kind, p.family), p.default) if p.axis else (p.kind, p.default)) for p in ALL_PARAMS.values()})



def sweepable() -> dict[str, Axis]:
    """The hyper-parameters that can be swept or tied, with their Axis marks."""
    return {name: mark for name, info in FinetuneSettings.model_fields.items()
            for mark in info.metadata if isinstance(mark, Axis)}


def tie_error(settings: dict[str, Any]) -> tuple[str, str] | None:
    """The first bad `same_as` among the settings (name -> value), as (its name, what is
    wrong); None when every tie names a sweepable hyper-parameter of the same type, with
    values of its own (no chains, so no cycles) that the tied one accepts."""
    axes = sweepable()
    for name, value in settings.items():
        if not isinstance(value, SameAs):
            continue
        leader, family = value.same_as, axes[name].family
        kin = [n for n, a in axes.items() if a.family == family and n != name]
        hint = f"tie it to one of {', '.join(kin)}" if kin else f"{name} cannot be tied to another setting"
        if leader == name:
            return name, f"{name} cannot be tied to itself"
        if leader not in axes:
            return name, f"{leader!r} is not a sweepable hyper-parameter; {hint}"
        if axes[leader].family != family:
            return name, f"{leader} and {name} hold different kinds of value; {hint}"
        target = settings[leader]
        if isinstance(target, SameAs):
            return name, (f"{leader} is itself tied (same_as {target.same_as!r}); ties do not chain: "
                          f"name a hyper-parameter with values of its own")
        for v in target if isinstance(target, list) else [target]:
            try:
                axes[name].check(v)
            except ValueError as err:
                return name, f"{leader}'s value does not fit {name}: {err}"
    return None


# ---------------------------------------------------------------- the grid

def trackers_installed(names: list[str]) -> list[str]:
    """Each tracker named must be importable here, where the jobs start from the same
    environment (wandb and mlflow are optional installs)."""
    if len(set(names)) != len(names):
        raise ValueError(f"trackers repeat: {names}")
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ValueError(f"{name} is not installed (pip install {name}), or leave it out of report_to")
    return names


# per_method keys: a method, or one weighting of sdft ("sdft/min-snr"), whose overrides apply
# on top of the method's (each weighting's lambda has its own scale: the weights are not normalised)
METHOD_KEYS = (*METHODS, *(f"{m.name}/{w}" for m in METHODS.values() for w in m.weightings))
MethodKey = Literal[METHOD_KEYS]
VARIANT_SUFFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]*(-[A-Za-z0-9_.]+)*")


def variant_base(key: str) -> str | None:
    """The method key a variant key names (`sdft/sdft` of `sdft/sdft-noaux`, `naive` of
    `naive-lr3`): the longest method key that the key extends by `-<suffix>`; None for a
    method key itself or a key that extends none."""
    if key in METHOD_KEYS:
        return None
    bases = [b for b in METHOD_KEYS if key.startswith(f"{b}-") and VARIANT_SUFFIX.fullmatch(key[len(b) + 1:])]
    return max(bases, key=len, default=None)


def layers(key: str) -> list[str]:
    """The per_method keys whose overrides make up a key's settings, applied in this order:
    the method's, its weighting's, the variant's (`sdft`, `sdft/sdft`, `sdft/sdft-noaux`)."""
    base = variant_base(key)
    own = layers(base) if base is not None else ([key.partition("/")[0]] if "/" in key else [])
    return own + [key]


def _per_method_key(key: Any) -> Any:
    if not isinstance(key, str) or key in METHOD_KEYS:
        return key
    base = variant_base(key)
    if base is None:
        raise ValueError(f"{key!r} is not a method ({', '.join(METHODS)}), a weighting of one "
                         f"({', '.join(k for k in METHOD_KEYS if '/' in k)}) or a named variant of either "
                         f"(`<key>-<name>`, e.g. sdft/sdft-noaux)")
    if METHODS.get(base) is not None and METHODS[base].weightings:
        raise ValueError(f"a variant of {base} names one of its weightings: "
                         f"{base}/<weighting>{key[len(base):]} (weightings {', '.join(METHODS[base].weightings)})")
    return key


# a method key, or a named variant of one (`sdft/sdft-noaux`): a unit of the grid of its own
# that differs from the method in the settings it gives (docs/grid.md, "Variants")
PerMethodKey = Annotated[str, BeforeValidator(_per_method_key, json_schema_input_type=MethodKey)]
Weighting = Literal[WEIGHTINGS]


class SelectionConfig(Strict):
    """How each method's reported setting is chosen among its candidates (the report layer
    reads `criterion`) and whether the grid must give every method as many (checked at
    submit by runs.budget), or as much training compute (runs.compute states the
    rule); both off by default, so existing grids submit as before."""
    # the report layer's grammar `[task[@t0]:]metric[/reference]` (report.selection);
    # "fid": unconditional FID against the full-domain set where one is measured
    criterion: Annotated[str, Field(pattern=r"^[a-z0-9_.@:/-]+$", max_length=64)] = "fid"
    equal_budget: StrictBool = False
    # every method's candidates get the same training compute: cheaper methods train longer
    # (runs.compute states the rule)
    equal_compute: StrictBool = False
    # the models the paired-difference tables compare every other model with, each in tables
    # of its own (the first: `differences`; then `differences_vs_<name>`): a benchmark adds
    # its reference method, e.g. [naive, sdft/sdft], to ask what beats it
    baselines: Annotated[list[str], Field(min_length=1)] = ["naive"]


class GridConfig(Strict):
    name: Name
    datasets: Annotated[list[DatasetConfig], Field(min_length=1)]
    methods: Annotated[list[MethodName], Field(min_length=1)]
    weightings: Annotated[list[Weighting], Field(min_length=1)] = ["sdft"]
    finetune: FinetuneSettings = FinetuneSettings()
    # a method's, a weighting's (`sdft/min-snr`) or a named variant's (`sdft/sdft-noaux`) settings;
    # a field it leaves out takes `finetune`'s value, not the default listed under `finetune`
    per_method: dict[PerMethodKey, FinetuneSettings] = {}
    seeds: Annotated[list[Seed], Field(min_length=1)] = [0]
    evaluation: EvaluationConfig = EvaluationConfig()
    selection: SelectionConfig = SelectionConfig()
    cluster: ClusterConfig = ClusterConfig()
    # where training runs report loss curves and sample grids (jobs/tracking.py)
    report_to: list[Tracker] = ["tensorboard"]

    _trackers_installed = field_validator("report_to")(lambda cls, value: trackers_installed(value))

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

    @model_validator(mode="after")
    def _method_ties_hold(self):
        """A method's overrides can break a tie of the base (a chain, a cycle, a value the
        tied setting refuses): check the settings each method will really run with."""
        raw = self.per_method_raw()
        for key, override in raw.items():
            unit = variant_base(key) or key
            method, _, weighting = unit.partition("/")
            if weighting and (method not in self.methods or weighting not in self.weightings):
                raise AtField(("per_method", key), f"names {method} under weighting {weighting}, which the "
                                                   f"grid does not run (methods {self.methods}, weightings "
                                                   f"{self.weightings})")
            if method not in self.methods and unit != key:
                raise AtField(("per_method", key), f"a variant of {method}, which the grid does not run "
                                                   f"(methods {self.methods})")
            base = {name: getattr(self.finetune, name) for name in FinetuneSettings.model_fields}
            below = {}                    # the layers under this key, and where each setting came from
            for layer in layers(key)[:-1]:
                base.update(raw.get(layer, {}))
                below.update({name: layer for name in raw.get(layer, {})})
            bad = tie_error({**base, **override})
            if bad is None:
                continue
            name, problem = bad
            if name in override:
                raise AtField(("per_method", key, name, "same_as"), problem)
            leader = base[name].same_as
            where = f"per_method.{below[name]}" if name in below else "finetune"
            raise AtField(("per_method", key, leader), f"{where}.{name} is tied to {leader}: {problem}")
        return self

    @model_validator(mode="after")
    def _ema_sweeps_are_measured(self):
        """A fine-tuned model is evaluated on its raw weights unless evaluation.weights is
        ema; the EMA never feeds back into training, so a sweep of its settings would then
        train runs whose measured weights are the same."""
        if self.evaluation.weights == "ema":
            return self
        for where, settings in [(("finetune",), self.finetune),
                                *((("per_method", key), over) for key, over in self.per_method.items())]:
            for name in ("ema_decay", "ema_warmup"):
                value = getattr(settings, name)
                if isinstance(value, list) and len(value) > 1:
                    raise AtField((*where, name), "a sweep of the EMA, but fine-tuned models are evaluated on "
                                                  "their raw weights (evaluation.weights: raw, the default): "
                                                  "its runs would measure the same; set evaluation.weights: ema")
        return self

    @model_validator(mode="after")
    def _baselines_are_models(self):
        """Each baseline named is a model the grid trains: a method, one weighting of one
        (`sdft/sdft`), or a named variant. (The default, naive, may be absent: then the grid
        has no paired differences, as before.)"""
        if "baselines" not in self.selection.model_fields_set:
            return self
        models = [unit_name(m, w, None) for m in self.methods
                  for w in ([w for w in self.weightings if w in METHODS[m].weightings] or [None])]
        models += list(self.variants())
        for i, name in enumerate(self.selection.baselines):
            if name not in models:
                raise AtField(("selection", "baselines", i), f"{name!r} is not a model of this grid "
                                                              f"({', '.join(models)})")
        if len(set(self.selection.baselines)) != len(self.selection.baselines):
            raise AtField(("selection", "baselines"), f"repeat: {self.selection.baselines}")
        return self

    def variants(self) -> dict[str, str]:
        """Each named variant (its per_method key) -> the method key it varies."""
        return {key: variant_base(key) for key in self.per_method if variant_base(key) is not None}

    @model_validator(mode="after")
    def _extractor_fits_data(self):
        """The builtin extractor's features are learnt on the built-in data: on folder data
        its FID would be measured, and look fine, but mean nothing."""
        folders = [i for i, d in enumerate(self.datasets) if d.source.kind == "folder"]
        if folders and "builtin" in self.evaluation.extractors:
            raise AtField(("evaluation", "extractors"),
                          f"`builtin` (Fashion-MNIST features) cannot measure folder data "
                          f"(datasets[{folders[0]}]); use [inception]")
        return self

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def per_method_raw(self) -> dict[str, dict]:
        """The overrides as written, validated (unset fields must not override the base;
        values are kept as objects, so a tie stays a SameAs)."""
        return {m: {k: getattr(s, k) for k in type(s).model_fields if k in s.model_fields_set}
                for m, s in self.per_method.items()}


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
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, AtField):
        loc, msg = (*loc, *cause.loc), cause.message
    elif kind == "extra_forbidden":
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


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last
    one without a word). Keys merged in with `<<: *anchor` may still be overridden."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise DuplicateKey(key, seen[key] + 1, key_node.start_mark.line + 1)
                except TypeError:            # an unhashable key: the base class says so
                    break
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first_line: int, line: int):
        super().__init__(f"key {key!r} given twice (first on line {first_line})")
        self.line = line


def read_grid_text(path: Path) -> str:
    """The grid file's text; a folder, a binary or an unreadable file is a UserError."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such grid file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: a folder, not a grid file") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not a text file (byte {err.start} is not UTF-8); "
                        "a grid file is YAML text") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read the grid file ({err.strerror or err})") from None


def load_grid(path: str | Path, overrides: list[str] = ()) -> GridConfig:
    """The grid file, with command-line overrides (runs.overrides) applied, validated."""
    return validate_grid(grid_mapping(path, overrides), path, overrides)


def grid_mapping(path: str | Path, overrides: list[str] = ()) -> dict:
    """The grid file's YAML mapping, overrides applied, not yet validated."""
    path = Path(path)
    text = read_grid_text(path)
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader)   # noqa: S506 (a SafeLoader subclass)
    except DuplicateKey as err:
        raise UserError(f"{path}: line {err.line}: {err}") from None
    except yaml.reader.ReaderError as err:
        raise UserError(f"{path}: not a text file ({err.reason} at byte {err.position}); "
                        "a grid file is YAML text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: (top level): expected a mapping of settings")
    return apply_overrides(raw, list(overrides))


def validate_grid(raw: dict, path: str | Path, overrides: list[str] = ()) -> GridConfig:
    try:
        return GridConfig.model_validate(raw)
    except ValidationError as err:
        message = describe_validation_error(path, err)
        field = message.removeprefix(f"{path}: ").split(":")[0].replace("[", ".").replace("]", "")
        given = [o for o in overrides if f"{field}.".startswith(o.split("=")[0].strip() + ".")]
        raise UserError(message + (f" (from the override {given[-1]!r})" if given else "")) from None
