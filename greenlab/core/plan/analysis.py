"""The analysis plan: what a grid's verdicts will be judged by, declared in its file before any run.

`[analysis]` in an experiments file names the primary metric, α, the equivalence margins, and through the
grid itself the set of comparisons (its experiments × models × techniques): the multiplicity family Holm
adjusts over. A `Plan` is stored with the grid's runs when the grid starts (greenlab.core.store.database), and the
verdicts of those runs are judged under it whatever else the store holds or a view filters.

Runs stored before plans existed have none: they are judged under an *implied* plan, one per experiment,
whose family is that experiment's stored comparisons and whose margin is the `equivalence_margin` setting
they stored, labelled as such. Nothing here reads a store or computes a statistic.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from greenlab.core.errors import ConfigError
from greenlab.core.plan import metrics
from greenlab.core.plan.settings import Declaration, setting

if TYPE_CHECKING:
    from greenlab.core.plan.config import GridRun

_NUMBER = (int, float)


@dataclass(frozen=True)
class AnalysisSettings:
    """The `[analysis]` table: every key optional, each with the default shown."""

    primary: str = setting(
        metrics.DEFAULT_PRIMARY,
        (str,),
        "the metric the study is about: marked primary in every face; the others are secondary",
        choices=metrics.METRICS,
        group="analysis",
    )
    alpha: float = setting(
        0.05,
        _NUMBER,
        "the test level: `saves`/`costs` need a Holm-adjusted p below it, "
        "`equivalent` the (1 − 2α) interval inside the band",
        minimum=0,
        maximum=0.5,
        exclusive=True,
        group="analysis",
        fix=" (a level of 0.5 or more would leave the equivalence interval, 1 − 2α, empty)",
    )
    equivalence_margin: float = setting(
        0.05,
        _NUMBER,
        "energy and time are `equivalent` when the (1 − 2α) "
        "interval of their ratio lies within [1/(1 + m), 1 + m], a band "
        "symmetric on the log scale the ratio is tested on",
        minimum=0,
        maximum=1,
        exclusive=True,
        group="analysis",
    )
    accuracy_margin_pp: float = setting(
        1.0,
        _NUMBER,
        "accuracy and F1 are `equivalent` when the (1 − 2α) "
        "interval of their difference lies within ± this many percentage "
        "points",
        minimum=0,
        maximum=100,
        exclusive=True,
        group="analysis",
    )

    @property
    def ratio_band(self) -> tuple[float, float]:
        """The equivalence band of a ratio: symmetric on the log scale."""
        return 1 / (1 + self.equivalence_margin), 1 + self.equivalence_margin

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


DECLARATION = Declaration(AnalysisSettings)
ANALYSIS_KEYS = tuple(DECLARATION.specs)
# The table an experiments file declares the plan in (a top-level table, like [defaults]).
TABLE = "analysis"


def check(table: Any, key_prefix: str = TABLE) -> AnalysisSettings:
    """The `[analysis]` table validated against its declarations; ConfigError names the key and the fix."""
    if not isinstance(table, dict):
        raise ConfigError("must be a table: write [analysis] with its keys below it, e.g. alpha = 0.05", key=key_prefix)
    for key, value in table.items():
        if key not in DECLARATION.specs:
            from greenlab.core.errors import suggest

            raise ConfigError(
                f"unknown key '{key}'{suggest(key, ANALYSIS_KEYS)}; remove it or fix its name "
                f"(analysis keys: {', '.join(ANALYSIS_KEYS)})",
                key=f"{key_prefix}.{key}",
            )
        DECLARATION.check_one(key, value, f"{key_prefix}.{key}")
    values: dict[str, Any] = {k: (float(v) if k != "primary" else v) for k, v in table.items()}
    return AnalysisSettings(**values)


def analysis_table() -> str:
    """The documentation's table of `[analysis]` keys, from the declarations above."""
    return DECLARATION.table()


@dataclass(frozen=True, order=True)
class Cell:
    """One declared comparison: a technique against the baselines of its conditions. `technique` is its
    label (greenlab.core.train.compression.label): the name, and any setting that is not the default."""

    conditions: str
    technique: str
    model: str = field(compare=False, default="")
    experiment: str = field(compare=False, default="")

    @property
    def key(self) -> tuple[str, str]:
        return self.conditions, self.technique


@dataclass(frozen=True)
class Plan:
    """A declared analysis: its settings and its family of comparisons (cells).

    `declared` is False for an implied plan (runs stored before plans). `id` and `created_at` are the
    store's once recorded.
    """

    analysis: AnalysisSettings
    cells: tuple[Cell, ...]
    source: str = ""
    declared: bool = True
    id: int | None = None
    created_at: str | None = None
    # What the store held that could not be used (a hand-edited value), and the default used instead.
    problems: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def for_grid(cls, grid: Iterable[GridRun], analysis: AnalysisSettings | None = None, source: str = "") -> Plan:
        """The plan of a grid: every technique entry's (conditions, technique with its non-default settings),
        once each, in grid order: prune at amount 0.5 and prune at 0.9 are two comparisons."""
        seen: dict[tuple[str, str], Cell] = {}
        for run in grid:
            if run.technique == "baseline":
                continue
            cell = Cell(run.conditions_key(), run.technique_label(), run.model, run.experiment)
            seen.setdefault(cell.key, cell)
        return cls(analysis or AnalysisSettings(), tuple(seen.values()), source)

    @property
    def family_size(self) -> int:
        return len(self.cells)

    @property
    def keys(self) -> frozenset[tuple[str, str]]:
        return frozenset(c.key for c in self.cells)

    def digest(self) -> str:
        """What makes two declarations the same plan: the settings and the set of comparisons (the
        file's path and the time are not part of it: a resumed grid declares the same plan again)."""
        payload = {
            "analysis": self.analysis.to_json(),
            "cells": sorted([c.conditions, c.technique] for c in self.cells),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        """'plan 3 (experiments.toml, 8 comparisons)' or 'implied plan of experiment demo (...)'."""
        count = f"{self.family_size} comparison{'s' if self.family_size != 1 else ''}"
        if not self.declared:
            return f"no declared plan ({self.source}; family: its {count} in the store)"
        name = f"plan {self.id}" if self.id is not None else "the grid's plan"
        described = f"{name} ({self.source or 'no file'}, {count})" if self.source else f"{name} ({count})"
        return described + "".join(f"; {problem}" for problem in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "declared": self.declared,
            "source": self.source,
            "created_at": self.created_at,
            **self.analysis.to_json(),
            "family_size": self.family_size,
        }

    def cells_json(self) -> list[dict[str, str]]:
        return [
            {"conditions": c.conditions, "technique": c.technique, "model": c.model, "experiment": c.experiment}
            for c in self.cells
        ]

    @classmethod
    def from_stored(cls, row: dict[str, Any]) -> Plan:
        """A plan as the store holds it (greenlab.core.store.database: the `plans` table)."""
        analysis, problems = _analysis_from(row.get("analysis"))
        cells = tuple(
            Cell(
                str(c.get("conditions")),
                str(c.get("technique")),
                str(c.get("model") or ""),
                str(c.get("experiment") or ""),
            )
            for c in _json_list(row.get("cells"))
        )
        return cls(analysis, cells, str(row.get("source") or ""), True, row.get("id"), row.get("created_at"), problems)


def implied(experiment: str, cells: Iterable[Cell], equivalence_margin: float | None) -> Plan:
    """The plan of runs stored without one: the experiment's stored comparisons, the default α and accuracy
    margin, and the equivalence margin those runs stored (or the default)."""
    analysis = AnalysisSettings()
    if equivalence_margin is not None and 0 < equivalence_margin < 1:
        analysis = replace(analysis, equivalence_margin=float(equivalence_margin))
    return Plan(
        analysis, tuple(sorted(set(cells))), f"experiment {experiment}, runs from before analysis plans", declared=False
    )


@dataclass(frozen=True)
class PostHoc:
    """Values given after the runs (on the command line); each is labelled post hoc beside the declared one."""

    alpha: float | None = None
    equivalence_margin: float | None = None
    accuracy_margin_pp: float | None = None

    def apply(self, analysis: AnalysisSettings) -> tuple[AnalysisSettings, dict[str, tuple[float, float]]]:
        """The settings used, and {name: (used, declared)} for each value that differs from the plan's."""
        changed: dict[str, tuple[float, float]] = {}
        values = {}
        for name in ("alpha", "equivalence_margin", "accuracy_margin_pp"):
            given = getattr(self, name)
            if given is not None and not math.isclose(given, getattr(analysis, name)):
                changed[name] = (given, getattr(analysis, name))
                values[name] = given
        return replace(analysis, **values), changed

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.alpha, self.equivalence_margin, self.accuracy_margin_pp))


def _analysis_from(value: Any) -> tuple[AnalysisSettings, tuple[str, ...]]:
    """A stored plan's settings, each checked as the grid file's was: a value the store should never hold
    (a hand edit, a damaged row) is replaced by its default, and the problem says so; none is used as is."""
    data = value if isinstance(value, dict) else _json_dict(value)
    known: dict[str, Any] = {}
    problems = []
    for key in ANALYSIS_KEYS:
        if key not in data:
            continue
        try:
            DECLARATION.check_one(key, data[key], f"{TABLE}.{key}")
        except ConfigError as exc:
            problems.append(
                f"its stored {key} is not valid ({exc.detail.split(';')[0]}): the default "
                f"{DECLARATION.default(key)} was used"
            )
            continue
        known[key] = float(data[key]) if key != "primary" else data[key]
    return AnalysisSettings(**known), tuple(problems)


def _json_dict(value: Any) -> dict[str, Any]:
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _json_list(value: Any) -> list[dict[str, Any]]:
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return []
    return [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []


if __name__ == "__main__":  # python -m greenlab.core.plan.analysis: print the documentation's table
    print(analysis_table())
