"""Typed rows of the store: each table's row as a frozen dataclass, its JSON columns decoded once, on read.

`RunRow` is what every reader of runs.db gets (the faces, the report, the drivers): attributes by the
documented column names (docs/schema.md). Code that names a column by a variable (a metric of the plan, a
CSV's columns, a filter) goes through one accessor, `row.value(name)` (or `RunRow.getter(name)` over many
rows), which takes only the schema's column names. The JSON columns (`settings`, `compression`,
`warnings`, `flags`, `meters`, `host`, `concurrent_runs`) hold their decoded values; a value that is not
valid JSON (a hand-edited store) reads as empty rather than failing a report. A run's epochs,
power samples and energy components read as `EpochRow`, `Sample` and `ComponentRow`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from operator import attrgetter
from typing import Any, TypeVar

_T = TypeVar("_T")

JSON_COLUMNS: dict[str, type] = {
    "settings": dict,
    "compression": dict,
    "warnings": list,
    "flags": list,
    "meters": dict,
    "host": dict,
    "concurrent_runs": list,
}


# The JSON columns of `energy_components`.
COMPONENT_JSON_COLUMNS: dict[str, type] = {"inputs": dict, "flags": list}


def decode(name: str, value: Any, columns: Mapping[str, type] = JSON_COLUMNS) -> Any:
    """A JSON column's stored text as its value (a dict or list); anything unreadable as the empty one. The
    one place a stored JSON column is read: every typed row decodes its own through it."""
    kind = columns[name]
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return kind()
    return value if isinstance(value, kind) else kind()


@dataclass(frozen=True)
class RunRow(Mapping[str, Any]):
    """One row of `runs`; every column of the public schema, in its documented order."""

    id: int
    experiment: str | None = None
    model: str = ""
    dataset: str | None = None
    technique: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    settings_key: str | None = None
    seed: int | None = None
    repeat: int | None = None
    status: str = ""
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    train_s: float | None = None
    device: str | None = None
    params_total: int | None = None
    params_nonzero: int | None = None
    model_bytes: int | None = None
    flops_step: float | None = None
    params_total_before: int | None = None
    params_nonzero_before: int | None = None
    model_bytes_before: int | None = None
    flops_step_before: float | None = None
    val_accuracy: float | None = None
    val_f1: float | None = None
    energy_j: float | None = None
    energy_kwh: float | None = None
    energy_measured_j: float | None = None
    energy_estimated_j: float | None = None
    energy_net_j: float | None = None
    idle_w: float | None = None
    energy_training_j: float | None = None
    energy_gpu_j: float | None = None
    energy_gpu_method: str | None = None
    energy_cpu_j: float | None = None
    energy_cpu_method: str | None = None
    energy_dram_j: float | None = None
    energy_dram_method: str | None = None
    co2e_g: float | None = None
    cost: float | None = None
    currency: str | None = None
    carbon_g_per_kwh: float | None = None
    pue: float | None = None
    sampler_hz: float | None = None
    sampler_cpu_s: float | None = None
    samples_dropped: int | None = None
    capacity_bits: int | None = None
    capacity_bytes: float | None = None
    train_dtype: str | None = None
    mantissa_bits_kept: int | None = None
    compression: dict[str, Any] = field(default_factory=dict)
    warnings: list[Any] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    meters: dict[str, Any] = field(default_factory=dict)
    greenlab_version: str | None = None
    host: dict[str, Any] = field(default_factory=dict)
    supervisor_pid: int | None = None
    conditions_key: str | None = None
    compute_dtype: str | None = None
    weights_dtype: str | None = None
    price_per_kwh: float | None = None
    grid_position: int | None = None
    target_accuracy: float | None = None
    energy_to_target_j: float | None = None
    executor: str | None = None
    node: str | None = None
    concurrent_runs: list[int] = field(default_factory=list)
    attempts: int | None = None
    superseded_by: int | None = None
    plan_id: int | None = None
    fp32_precision: str | None = None
    bf16_native: int | None = None
    data_wait_s: float | None = None

    @classmethod
    def from_stored(cls, values: Mapping[str, Any]) -> RunRow:
        """A row as sqlite returns it: JSON columns decoded, numbers as numbers, columns this GreenLab does
        not know left out; a column not read (Store.runs(columns=...)) keeps its default."""
        found = dict(_DEFAULTS)
        for name, make in _FACTORIES:
            found[name] = make()
        for name, value in values.items():
            plain = _PLAIN.get(name)
            if plain is not None and (value is None or type(value) is plain):
                found[name] = value  # what `_read` would return unchanged (most values), without its tests
            elif name in _NAMES:
                found[name] = _read(name, value)
        if found["id"] is MISSING:
            raise TypeError("a runs row is read with its id")
        # Filled without the dataclass's __init__, whose frozen assignment of each of the 73 fields was most
        # of the time a 5,000-run report spent reading: the same fields in the same order (there is no
        # __post_init__ to run).
        row = object.__new__(cls)
        object.__setattr__(row, "__dict__", found)
        return row

    @classmethod
    def of(cls, **columns: Any) -> RunRow:
        """A row of these columns, every other at its default, read as a stored row is read (JSON text
        decoded, numbers as numbers): a test's row, or a run's columns held elsewhere than in a store. The id
        is 0 unless given; a name the schema does not know is a TypeError, not a column quietly dropped."""
        unknown = [name for name in columns if name not in _NAMES]
        if unknown:
            raise TypeError(f"no runs column {', '.join(map(repr, unknown))}")
        return cls.from_stored({"id": 0, **columns})

    def value(self, name: str) -> Any:
        """The column `name`. Only for code that picks a column by a variable — a metric of the analysis
        plan, the columns of a CSV, a table's filter — where an attribute cannot be written; everywhere
        else a row is read by its attributes. Only the schema's names: a misspelt one is a KeyError, never a
        None that would read as a missing value."""
        try:
            return self.__dict__[name]  # every field, and nothing else, is in a row's dict
        except KeyError:
            raise KeyError(f"no runs column {name!r}") from None

    @staticmethod
    def getter(*names: str) -> Callable[[RunRow], Any]:
        """What `value` reads, as a function of a row (an attribute getter: a value for one name, a tuple for
        several): for columns named by variables and read of many rows — a metric over a study's 5,000 runs,
        a CSV's columns — where a method call per value would be most of the time spent. Only the schema's
        names, checked once."""
        unknown = [name for name in names if name not in _NAMES]
        if unknown or not names:
            raise KeyError(f"no runs column {', '.join(map(repr, unknown))}")
        return attrgetter(*names)

    def replaced(self, **columns: Any) -> RunRow:
        """This row with these columns' values replaced, each read as a stored value is (only the schema's
        names): `dataclasses.replace` without the frozen __init__, so that a report can fill two columns of
        5,000 rows in milliseconds."""
        unknown = [name for name in columns if name not in _NAMES]
        if unknown:
            raise TypeError(f"no runs column {', '.join(map(repr, unknown))}")
        row = object.__new__(type(self))
        values = row.__dict__
        values.update(self.__dict__)
        for name, value in columns.items():
            plain = _PLAIN.get(name)
            values[name] = (
                value if plain is not None and (value is None or type(value) is plain) else _read(name, value)
            )
        return row

    def as_dict(self) -> dict[str, Any]:
        """Every column by name, in the documented order, in one step (a JSON export, a node's memory; a
        dict of 5,000 rows is made in milliseconds)."""
        return dict(self.__dict__)

    # -- the write side's mapping ------------------------------------------------------------------------------
    # Only for greenlab/core/run, whose sinks and RunStored event still type a stored run as a mapping of its
    # columns (a node's memory is a dict): every reader — the report, the forecast, the TUI — reads attributes,
    # or `value` for a column named by a variable, and tests/test_architecture.py holds them to it. The base
    # goes when the write side takes a RunRow.
    def __getitem__(self, key: str) -> Any:
        return self.__dict__[key]

    def __iter__(self) -> Iterator[str]:
        return iter(_NAMES_IN_ORDER)

    def __len__(self) -> int:
        return len(_NAMES_IN_ORDER)


_NAMES_IN_ORDER = tuple(f.name for f in fields(RunRow))
_NAMES = frozenset(_NAMES_IN_ORDER)
# SQLite keeps text that does not read as a number in a REAL or INTEGER column (a hand edit): such a value
# reads as NaN in a real column — not finite, so every analysis names it and leaves it out — and as
# None in an integer one (an id, a count), never as text that a sum or a sort would trip on.
_REALS = frozenset(f.name for f in fields(RunRow) if f.type == "float | None")
_INTEGERS = frozenset(f.name for f in fields(RunRow) if f.type == "int | None")
# The type of the values `_read` keeps as they are, per column that is not JSON: float in a real column,
# int in an integer one (the id too), and text in a text one (which it keeps whatever they hold).
_PLAIN: dict[str, type] = {
    f.name: float if f.name in _REALS else int if f.name in _INTEGERS or f.type == "int" else str
    for f in fields(RunRow)
    if f.name not in JSON_COLUMNS
}
# Every column's default in the documented order (the id's, which has none, MISSING until read), and the
# JSON columns' empty values, made afresh for each row.
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(RunRow)}
_FACTORIES = tuple((f.name, f.default_factory) for f in fields(RunRow) if f.default_factory is not MISSING)


def _read(name: str, value: Any) -> Any:
    if name in JSON_COLUMNS:
        return decode(name, value)
    if value is None or not (name in _REALS or name in _INTEGERS):
        return value
    if isinstance(value, (str, bytes)):
        try:
            number = float(value)
        except ValueError:
            return math.nan if name in _REALS else None
        value = number
    if name in _INTEGERS and isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    return value


def _filled(
    cls: type[_T], values: Mapping[str, Any] | Iterable[tuple[str, Any]], json_columns: Mapping[str, type]
) -> _T:
    """A row of `cls` from what sqlite returns (a mapping, or (name, value) pairs): columns it does not know
    left out, one not read at its default, JSON columns decoded; filled as RunRow.from_stored fills a run's,
    without the frozen __init__ (a report reads every epoch of a study: 10,000 rows at 5,000 runs)."""
    defaults, required = _LAYOUTS[cls]
    found = defaults.copy()
    found.update(values)
    if len(found) != len(defaults):  # a column this GreenLab does not know (a newer store's): left out
        found = {name: found[name] for name in defaults}
    for name, kind in json_columns.items():  # the JSON columns are those made afresh for each row
        value = found[name]
        found[name] = kind() if value is None or value is MISSING else decode(name, value, json_columns)
    for name in required:
        if found[name] is MISSING:
            raise TypeError(f"a {cls.__name__} is read with its {name}")
    row = object.__new__(cls)
    object.__setattr__(row, "__dict__", found)  # the fields, in order: no copy of them made again
    return row


def _layout(cls: type) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A row class's fields: each one's default in order (MISSING where it has none or is made afresh),
    and the names a row must be read with."""
    known = fields(cls)
    defaults = {f.name: f.default for f in known}
    required = tuple(f.name for f in known if f.default is MISSING and f.default_factory is MISSING)
    return defaults, required


_LAYOUTS: dict[type, tuple[dict[str, Any], tuple[str, ...]]] = {}


# The JSON column of `epochs`.
EPOCH_JSON_COLUMNS: dict[str, type] = {"flags": list}


@dataclass(frozen=True)
class EpochRow:
    """One row of `epochs`, in the documented order: seconds (`*_s`), joules (`*_j`), validation figures as
    fractions; the phases' windows, waits and uncertainties where the store's schema holds them. Values are
    as SQLite returns them (a hand-edited store may hold text: readers take numbers with care)."""

    run_id: int
    epoch: int | None = None
    train_loss: float | None = None
    val_accuracy: float | None = None
    val_f1: float | None = None
    val_loss: float | None = None
    duration_s: float | None = None
    train_s: float | None = None
    eval_s: float | None = None
    energy_j: float | None = None
    train_energy_j: float | None = None
    eval_energy_j: float | None = None
    train_window_s: float | None = None
    eval_window_s: float | None = None
    flags: list[str] = field(default_factory=list)
    train_data_wait_s: float | None = None
    eval_data_wait_s: float | None = None
    train_uncertainty_j: float | None = None
    eval_uncertainty_j: float | None = None

    @classmethod
    def from_stored(cls, values: Mapping[str, Any]) -> EpochRow:
        return _filled(cls, values, EPOCH_JSON_COLUMNS)

    @classmethod
    def from_columns(cls, names: list[str], values: tuple[Any, ...]) -> EpochRow:
        """`from_stored` of SQLite's tuple of the columns `names`, with no dict made on the way."""
        return _filled(cls, zip(names, values), EPOCH_JSON_COLUMNS)


@dataclass(frozen=True)
class Sample:
    """One row of `samples`: a component's power in watts, `t_s` seconds after its run's start."""

    run_id: int
    t_s: float | None = None
    component: str | None = None
    watts: float | None = None

    @classmethod
    def from_stored(cls, values: Mapping[str, Any]) -> Sample:
        return _filled(cls, values, {})


@dataclass(frozen=True)
class ComponentRow:
    """One row of `energy_components`: a component's joules, how they were obtained (`method`), its idle
    watts and net joules, and its JSON columns (`inputs`, `flags`) decoded."""

    run_id: int
    component: str | None = None
    energy_j: float | None = None
    method: str | None = None
    idle_w: float | None = None
    net_energy_j: float | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    @classmethod
    def from_stored(cls, values: Mapping[str, Any]) -> ComponentRow:
        return _filled(cls, values, COMPONENT_JSON_COLUMNS)


_LAYOUTS.update((kind, _layout(kind)) for kind in (EpochRow, Sample, ComponentRow))
