"""A run's record as values (RunRecord), and the one translation of a record into the row writes that store it.

A run's supervisor (greenlab.core.run.supervisor) builds its record from what the meters measured
(greenlab.core.run.measurement); whichever driver ran it, the record reaches the store through
`record_writes`: the local grid's sink, a Ray driver's sink and the pending folder beside the store
(greenlab.core.store.journal) all apply the same writes. Applied twice, they store the record once: epochs,
components and the capacity curve are keyed, and the samples of the record's components are replaced.

Every figure is in the units its column documents (docs/schema.md): Joules, seconds, watts, fractions.
Nothing here reads or writes a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

from greenlab.core.store.row_writes import (
    AddEpoch,
    AddSamples,
    DeleteSamples,
    RowWrite,
    SetCapacity,
    SetComponents,
    UpdateRun,
)


class SampleRecord(NamedTuple):
    """One power sample of a run: seconds since the run's start, its component, watts."""

    t_s: float
    component: str
    watts: float


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's row (`epochs`): what the child reported and the energy of its two phases' windows."""

    epoch: int
    train_loss: float | None = None
    val_accuracy: float | None = None
    val_f1: float | None = None
    val_loss: float | None = None
    duration_s: float | None = None
    train_s: float | None = None
    eval_s: float | None = None
    train_data_wait_s: float | None = None
    eval_data_wait_s: float | None = None
    energy_j: float | None = None  # both phases; unknown when either is
    train_energy_j: float | None = None
    eval_energy_j: float | None = None
    train_window_s: float | None = None
    eval_window_s: float | None = None
    train_uncertainty_j: float | None = None
    eval_uncertainty_j: float | None = None
    flags: tuple[str, ...] = ()

    def row(self, run_id: int) -> dict[str, Any]:
        return {"run_id": run_id, **asdict(self), "flags": list(self.flags)}


@dataclass(frozen=True)
class ComponentRecord:
    """One metered component's share of the run (`energy_components`): gross and net Joules, how obtained."""

    component: str
    energy_j: float | None
    method: str
    idle_w: float | None = None
    net_energy_j: float | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "inputs": dict(self.inputs), "flags": list(self.flags)}


@dataclass(frozen=True)
class RunRecord:
    """Everything stored of one run.

    `start`: the `runs` columns its row starts with (what runs, its keys, its meters); `values`: the columns
    set since (its device and model's figures, then its outcome and energy), `flags` aside; `dropped`: the
    metered components that are not the run's (a GPU it did not train on), whose samples are not kept.
    """

    start: Mapping[str, Any] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)
    epochs: tuple[EpochRecord, ...] = ()
    samples: tuple[SampleRecord, ...] = ()
    components: tuple[ComponentRecord, ...] = ()
    capacity: tuple[tuple[int, float], ...] = ()
    flags: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()

    @property
    def status(self) -> str | None:
        return self.values.get("status")

    @property
    def error(self) -> str | None:
        return self.values.get("error")

    def final_values(self) -> dict[str, Any]:
        """The `runs` columns the record sets after its start, its flags included."""
        return {**self.values, "flags": list(self.flags)}

    def with_values(self, **values: Any) -> RunRecord:
        """The same record with more columns set after its start (where a driver ran it)."""
        return replace(self, values={**self.values, **values})


def record_writes(run_id: int, record: RunRecord) -> list[RowWrite]:
    """The writes that store `record` in run `run_id`'s row: its epochs, its samples (replacing any of its
    components', so a record applied again is stored once), components and capacity curve, then its
    values, last, so writes cut short leave a `running` row (later marked interrupted)."""
    replaced = sorted({sample.component for sample in record.samples} | set(record.dropped))
    writes: list[RowWrite] = [AddEpoch(epoch.row(run_id)) for epoch in record.epochs]
    writes += [DeleteSamples(run_id, replaced), AddSamples(run_id, list(record.samples))]
    writes += [SetComponents(run_id, [c.row() for c in record.components]), SetCapacity(run_id, list(record.capacity))]
    return [*writes, UpdateRun(run_id, record.final_values())]
