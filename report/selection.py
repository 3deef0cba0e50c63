"""Each method's setting chosen on the validation split, and reported on the test split.

Picking the best setting on the rows that are then reported favours whichever candidate drew
lucky noise on them (docs/architecture.md, "Numbers that can be trusted"). So a table whose rows carry `split` values is read
in two halves: `select` looks at the `validation` rows only and picks, per method, the
candidate with the best mean criterion; `reported` keeps the chosen candidates' `test` rows.

- A method is (dataset, target, method, weighting, variant): every weighting of sdft is a method
  of its own, and so is every named variant (runs.grid; a run a variant shares with its
  method is a candidate of both, its rows given once under each).
- A candidate is one setting (the `p_<name>` columns) at one evaluated checkpoint (`ckpt_step`);
  its score is the mean of the criterion over its validation rows (training seeds x
  evaluation seeds), and candidates without a value do not count.
- Ties go to the candidate whose key sorts first, so the choice never depends on row order.
- A table without validation rows (older tables have no split) is reported as it is.

No torch, pandas only.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from report import metrics
from runs.methods import unit_name
from report.metrics import TASKS

if TYPE_CHECKING:
    import pandas as pd

VALIDATION, TEST = "validation", "test"
SPLITS = (VALIDATION, TEST)
GROUP = ["dataset", "target", "method", "weighting", "variant"]
TASK_NAMES = {"unconditional": "unconditional", "sdedit": "SDEdit", "egsde": "EGSDE"}
# where the criterion names none: the most demanding reference, the paper's extractor, all images
PREFERRED = {"reference": ("full-domain", "target"), "extractor": ("inception",), "subset": ("all",)}
GRAMMAR = re.compile(r"(?:(?P<task>[a-z]+)(?:@(?P<t0>[0-9.]+))?:)?(?P<metric>[a-z0-9_]+)(?:/(?P<reference>[a-z-]+))?")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Criterion:
    """What a candidate is judged by. Fields left None are resolved from the validation rows
    (`resolve`): reference full-domain, else target, else the only one measured; extractor
    inception where measured; subset `all`; a translation's t0 0.5 where measured, else the
    smallest."""
    metric: str = "fid"
    task: str = "unconditional"
    t0: float | None = None
    reference: str | None = None
    extractor: str | None = None
    subset: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Criterion":
        """`[task[@t0]:]metric[/reference]`: 'fid' (the default), 'kid/target',
        'sdedit@0.5:psnr'. ValueError naming the grammar otherwise."""
        match = GRAMMAR.fullmatch(text.strip())
        if not match or (match["task"] and match["task"] not in TASKS):
            raise ValueError(f"{text!r} is not a criterion: [task[@t0]:]metric[/reference], task one of "
                             f"{', '.join(TASKS)} (e.g. 'fid', 'kid/target', 'sdedit@0.5:psnr')")
        t0 = float(match["t0"]) if match["t0"] else None
        if match["task"] in (None, "unconditional") and t0 is not None:
            raise ValueError(f"{text!r}: t0 applies to sdedit and egsde only")
        return cls(match["metric"], match["task"] or "unconditional", t0, match["reference"])

    def __post_init__(self):
        """A registered metric (report.metrics), measured on the criterion's task."""
        measured = metrics.metric(self.metric).tasks
        if self.task not in measured:
            where = f"on {', '.join(measured)} only" if measured else "on the classifier's calibration rows only"
            example = f" (e.g. '{measured[0]}:{self.metric}')" if measured else ""
            raise ValueError(f"{self.metric} is measured {where}, not on {self.task}{example}")

    @property
    def higher_is_better(self) -> bool:
        return metrics.higher_is_better(self.metric)

    def describe(self) -> str:
        """'lowest mean unconditional FID against the full-domain set (builtin features)'."""
        return f"{'highest' if self.higher_is_better else 'lowest'} {self.quantity()}"

    def quantity(self) -> str:
        """'mean unconditional FID against the full-domain set (builtin features)'."""
        text = f"mean {TASK_NAMES.get(self.task, self.task)} {metrics.label(self.metric)}"
        if self.t0 is not None:
            text += f" at t0 = {self.t0:g}"
        if self.reference:
            text += f" against the {self.reference} set" if self.reference != "source" else " against the source images"
        details = [f"{self.extractor} features"] if self.extractor else []
        details += [f"subset {self.subset}"] if self.subset and self.subset != "all" else []
        return text + (f" ({', '.join(details)})" if details else "")

    def rows(self, df: "pd.DataFrame") -> "pd.DataFrame":
        """The rows of df this (resolved) criterion reads."""
        part = df[(df["metric"] == self.metric) & (df["task"] == self.task)]
        for column in ("t0", "reference", "extractor", "subset"):
            value = getattr(self, column)
            if value is not None:
                part = part[part[column] == value]
        return part

    def resolve(self, validation: "pd.DataFrame") -> "Criterion":
        """Every field fixed, from the validation rows alone; UserError when none measure it."""
        from runs.errors import UserError

        part = validation[(validation["metric"] == self.metric) & (validation["task"] == self.task)
                          & validation["value"].notna()]
        fixed = {}
        for column in ("t0", "reference", "extractor", "subset"):
            given = getattr(self, column)
            if given is not None:
                part = part[part[column] == given]
                continue
            present = sorted(v for v in part[column].dropna().unique())
            if not present:
                continue
            if column == "t0":
                choice = 0.5 if 0.5 in present else present[0]
            else:
                choice = next((p for p in PREFERRED[column] if p in present), present[0])
            fixed[column] = choice
            part = part[part[column] == choice]
        if part.empty:
            measured = sorted(set(zip(validation["task"].dropna(), validation["metric"].dropna())))
            raise UserError(f"selection criterion {self.describe()!r}: no validation row measures it "
                            f"(measured: {', '.join(f'{t}:{m}' for t, m in measured) or 'nothing'})")
        return replace(self, **fixed)


# ---------------------------------------------------------------- candidates
def split_of(df: "pd.DataFrame") -> "pd.Series":
    """Each row's split, '' where the table has none (tables made before the column)."""
    import pandas as pd

    if "split" not in df:
        return pd.Series("", index=df.index, dtype=object)
    return df["split"].where(df["split"].isin(SPLITS), "")


def has_validation(df: "pd.DataFrame") -> bool:
    return bool((split_of(df) == VALIDATION).any())


def candidate_columns(df: "pd.DataFrame") -> list[str]:
    """What tells a method's candidates apart: its settings and the evaluated checkpoint."""
    return sorted(c for c in df.columns if c.startswith("p_")) + ["ckpt_step"]


def _plain(value):
    if _missing(value):
        return None
    return value.item() if hasattr(value, "item") else value


def tags(df: "pd.DataFrame", columns: list[str]) -> "pd.Series":
    """One text key per row: the values of `columns` (None for a missing one), so that rows
    of the two splits with the same values get the same key."""
    import pandas as pd

    return pd.Series([repr(tuple(_plain(v) for v in row)) for row in df[columns].itertuples(index=False)],
                     index=df.index, dtype=object)


@dataclass
class Selection:
    criterion: Criterion            # resolved on the validation rows
    columns: list[str]              # what tells candidates apart (candidate_columns)
    scores: "pd.DataFrame"          # per candidate: GROUP, columns, score, rows, chosen, _group, _candidate
    unselected: dict[str, str] = field(default_factory=dict)  # group tag -> name: methods with no score

    def chosen(self) -> "pd.DataFrame":
        return self.scores[self.scores["chosen"]]

    def counts(self) -> dict[str, int]:
        """Candidates per method (group tag)."""
        return self.scores.groupby("_group", sort=False).size().to_dict()


def with_variant(df: "pd.DataFrame") -> "pd.DataFrame":
    """df with a `variant` column (empty in tables made before variants existed)."""
    return df if "variant" in df else df.assign(variant=None)


def best_candidates(df: "pd.DataFrame", criterion: Criterion, groups: list[str], columns: list[str]
                    ) -> "pd.DataFrame":
    """The selection rule, for `select` and every other choice a table makes: per group (the
    values of `groups`), the candidate (the values of `columns`) with the best mean of the
    resolved `criterion` over its rows of df that have a value, ties to the candidate whose
    key sorts first. Per candidate: groups, columns, score, rows, chosen, _group, _candidate."""
    part = criterion.rows(df)
    part = part[part["value"].notna()]
    part = part.assign(_group=tags(part, groups), _candidate=tags(part, columns))
    firsts = {c: (c, "first") for c in dict.fromkeys(groups + columns)}
    scores = (part.groupby(["_group", "_candidate"], sort=False)
              .agg(score=("value", "mean"), rows=("value", "count"), **firsts).reset_index())
    sign = -1.0 if criterion.higher_is_better else 1.0
    scores["chosen"] = False
    for _, group in scores.groupby("_group", sort=False):
        best = min(group.index, key=lambda i: (sign * group.at[i, "score"], group.at[i, "_candidate"]))
        scores.loc[best, "chosen"] = True
    return scores


def select(df: "pd.DataFrame", criterion: Criterion | None = None) -> Selection:
    """Per method, the candidate with the best mean criterion on the validation split.
    Reads the validation rows only: nothing measured on the test split can move a choice."""
    df = with_variant(df)
    validation = df[(split_of(df) == VALIDATION) & (df["method"] != "calibration")]
    criterion = (criterion or Criterion()).resolve(validation)
    columns = candidate_columns(validation)
    scores = best_candidates(validation, criterion, GROUP, columns)
    models = df[df["method"] != "calibration"]
    names = dict(zip(tags(models, GROUP), (_name(row) for row in models[GROUP].itertuples(index=False))))
    unselected = {tag: name for tag, name in sorted(names.items()) if tag not in set(scores["_group"])}
    return Selection(criterion, columns, scores, unselected)


def _name(group: tuple) -> str:
    """'naive', 'sdft/min-snr', with the target where one is named: 'shoes: naive'."""
    _, target, method, weighting, variant = (_plain(v) for v in group)
    text = unit_name(method, weighting, variant)
    return f"{target}: {text}" if target is not None else text


def reported(df: "pd.DataFrame", selection: Selection) -> "pd.DataFrame":
    """The rows the tables show: each chosen candidate's test rows, the calibration rows
    outside the validation split, and, for a method the selection could not score, its rows
    outside the validation split as they are."""
    import pandas as pd

    df = with_variant(df)
    split = split_of(df)
    calibration = df[(df["method"] == "calibration") & (split != VALIDATION)]
    models = df[df["method"] != "calibration"]
    groups = tags(models, GROUP)
    chosen = set(zip(selection.chosen()["_group"], selection.chosen()["_candidate"]))
    test = models[split.loc[models.index] == TEST]
    keep = pd.Series([pair in chosen for pair in zip(groups.loc[test.index], tags(test, selection.columns))],
                     index=test.index, dtype=bool)
    rest = models[(split.loc[models.index] != VALIDATION) & groups.isin(list(selection.unselected))]
    return pd.concat([calibration, test[keep], rest])
