"""The registry of fine-tuning methods: a method is one module.

Each module under runs/methods/ (and each module named in $SDFT_METHODS, a comma-separated
list of importable modules: methods kept outside the package) defines `METHOD`, a `Method`
that declares the method's name, its settings (runs.params.Param, beside the loss that
uses them, as benchopt declares a solver's parameters), whether it starts from the source
model and needs a frozen copy of it, its cost per step relative to naive, and its loss (a
small class, as NVlabs/edm's training/loss.py). The grid schema, the run spec and its id,
the grid's expansion, the budgets, the status table, the `p_<name>` columns, the tables'
labels and order and the training job all read the methods from here (docs/methods.md).

Declarations import no torch: the harness imports them at start-up. A loss imports torch
when it is built, which only a training job does.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from runs import adapters
from runs.params import TRAIN, Param

# The package's methods in table order: the baselines first, the paper's method last.
BUILTIN = ("scratch", "naive", "l2sp", "ewc", "replay", "pairwise", "sdft")
PLUGINS_ENV = "SDFT_METHODS"


@dataclass(frozen=True)
class Method:
    """What the harness needs to know of a fine-tuning method.

    `params`: the method's own settings (every method also takes the shared ones of
    runs.params). They live in the run spec's `block` (default: the method's name), so
    that no other method's run id can depend on them. `weightings`: the variants the grid's
    `weightings` list sweeps (sdft's distillation weightings); a run spec of such a method
    names its weighting, and a setting declared with `weightings` applies under those only.
    `loss(**settings, schedule=...)` builds the loss from the method's settings and the
    network's noise schedule (models/schedule.py `NoiseSchedule`: the one its model folder
    names; None means linear); every declared setting is passed, so a loss states no
    defaults of its own. A loss with a `prepare(student, source, context)` method is given
    the two networks (torch modules) before the first step (l2sp).
    `cost`: a step's measured seconds relative to a naive step's; where the settings change
    it (sdft without its aux term skips half its batch), a function of every declared
    setting, as the loss gets them (runs/compute.py).
    `revision`: bumped when the loss comes to compute something else under the same settings;
    when nonzero it is part of the id of the method's runs, so that a run made by an older
    loss is never taken as done (runs.spec.identity_json).
    """
    name: str
    loss: Callable[..., Any]
    params: tuple[Param, ...] = ()
    starts_from_source: bool = True     # False: a fresh network from a preset (scratch)
    needs_source_model: bool = False    # a frozen copy of the source beside the student
    needs_source_data: bool = False     # the source's training data (the run spec's source_data)
    cost: float | Callable[..., float] = 1.0   # seconds per step relative to naive, measured
    block: str | None = None
    weightings: tuple[str, ...] = ()
    revision: int = 0

    @property
    def settings_key(self) -> str | None:
        """The run spec's key that holds the method's settings; None when it has none."""
        return (self.block or self.name) if (self.params or self.weightings) else None

    def declared(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared setting: the given ones, the others at their default (a weighting's
        own settings only under that weighting)."""
        weighting = settings.get("weighting", self.weightings[0] if self.weightings else None)
        full = {p.name: p.default for p in self.params if weighting is None or p.applies_to(weighting)}
        full.update(settings)
        if self.weightings:
            full["weighting"] = weighting
        return full

    def build_loss(self, schedule=None, **settings):
        """The loss with every declared setting (`declared`), for a network trained with
        `schedule` (None: linear)."""
        return self.loss(**self.declared(settings), schedule=schedule)

    def cost_at(self, settings: Mapping[str, Any] | None = None) -> float:
        """A step's cost relative to naive's under `settings` (a run's; keys that are not the
        method's are ignored), the others at their default."""
        if not callable(self.cost):
            return float(self.cost)
        names = {p.name for p in self.params} | {"weighting"}
        own = {k: v for k, v in (settings or {}).items() if v is not None and k in names}
        return float(self.cost(**self.declared(own)))


def unit_name(method, weighting, variant) -> str:
    """A model's name in the grid, its tables and `selection.baselines`: 'naive',
    'sdft/min-snr', 'sdft/sdft-noaux' (a named variant replaces the weighting, or names the
    method: 'naive-lr3')."""
    last = variant if isinstance(variant, str) and variant else weighting
    if isinstance(weighting, str) and weighting:
        return f"{method}/{last}"
    return last if isinstance(last, str) and last else str(method)


def _load(modules: list[str]) -> dict[str, Method]:
    methods: dict[str, Method] = {}
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ImportError(f"{PLUGINS_ENV}: cannot import the method module {module_name!r} ({err})") from err
        method = getattr(module, "METHOD", None)
        if not isinstance(method, Method):
            raise TypeError(f"{module_name}: a method module defines METHOD = Method(...)")
        if method.name in methods:
            raise ValueError(f"{module_name}: method {method.name!r} is already registered")
        methods[method.name] = method
    return methods


def _all_params(methods: dict[str, Method]) -> dict[str, Param]:
    """Every declared setting by name: the shared ones (an adapter's too) and every method's. The grid file has one
    namespace, so two methods may share a setting only by sharing its declaration."""
    out = {p.name: p for p in (*TRAIN, *adapters.PARAMS)}
    for method in methods.values():
        for p in method.params:
            if out.setdefault(p.name, p) is not p:
                raise ValueError(f"method {method.name}: setting {p.name!r} is declared twice "
                                 f"(give it another name, or share the declaration)")
    return out


_plugins = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
METHODS: dict[str, Method] = _load([f"runs.methods.{name}" for name in BUILTIN] + _plugins)
NAMES: tuple[str, ...] = tuple(METHODS)
ALL_PARAMS: dict[str, Param] = _all_params(METHODS)
# the variants of every method that has them, in declaration order
WEIGHTINGS: tuple[str, ...] = tuple(dict.fromkeys(w for m in METHODS.values() for w in m.weightings))


def get(name: str) -> Method:
    return METHODS[name]


def settings_of(spec: dict) -> dict[str, Any]:
    """A run spec's (as JSON) method settings that apply to it: its block, without the unset."""
    method = METHODS.get(spec.get("method") or "")
    key = method.settings_key if method is not None else None
    block = (spec.get(key) or {}) if key else {}
    return {k: v for k, v in block.items() if v is not None}


def weighting_of(spec: dict) -> str | None:
    """The weighting of a run spec (as JSON), for methods that have them."""
    return settings_of(spec).get("weighting")


def run_label(spec: dict) -> str:
    """'naive', 'sdft/min-snr': a run spec's (as JSON) method and weighting."""
    weighting = weighting_of(spec)
    return (spec.get("method") or "") + (f"/{weighting}" if weighting else "")
