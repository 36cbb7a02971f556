"""A run's row writes as typed values (RowWrite): what a supervisor queues to the store's WriteThread
(greenlab.core.store.write_thread) while a run goes on, what a run's record becomes
(greenlab.core.store.record.record_writes), and what the pending folder keeps when the store cannot take
them (greenlab.core.store.journal).

Each write applies itself to a `RowTarget` (the Store) and turns into JSON and back (`to_json`,
`from_json`), so a record kept on disk is replayed exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol


class RowTarget(Protocol):
    """What a run's writes go to: the Store."""

    def update_run(self, run_id: int, **values: Any) -> None: ...

    def add_epoch(self, row: dict[str, Any]) -> None: ...

    def add_samples(self, run_id: int, rows: Iterable[tuple[float, str, float]]) -> None: ...

    def set_capacity(self, run_id: int, curve: list[tuple[int, float]]) -> None: ...

    def set_components(self, run_id: int, rows: list[dict[str, Any]]) -> None: ...

    def delete_samples(self, run_id: int, components: Iterable[str]) -> None: ...


@dataclass(frozen=True)
class UpdateRun:
    run_id: int
    values: dict[str, Any] = field(default_factory=dict)

    def apply(self, target: RowTarget) -> None:
        target.update_run(self.run_id, **self.values)


@dataclass(frozen=True)
class AddEpoch:
    row: dict[str, Any]

    def apply(self, target: RowTarget) -> None:
        target.add_epoch(self.row)


@dataclass(frozen=True)
class AddSamples:
    run_id: int
    rows: list[tuple[float, str, float]]

    def apply(self, target: RowTarget) -> None:
        target.add_samples(self.run_id, self.rows)


@dataclass(frozen=True)
class SetCapacity:
    run_id: int
    curve: list[tuple[int, float]]

    def apply(self, target: RowTarget) -> None:
        target.set_capacity(self.run_id, self.curve)


@dataclass(frozen=True)
class SetComponents:
    run_id: int
    rows: list[dict[str, Any]]

    def apply(self, target: RowTarget) -> None:
        target.set_components(self.run_id, self.rows)


@dataclass(frozen=True)
class DeleteSamples:
    run_id: int
    components: list[str]

    def apply(self, target: RowTarget) -> None:
        target.delete_samples(self.run_id, self.components)


RowWrite = UpdateRun | AddEpoch | AddSamples | SetCapacity | SetComponents | DeleteSamples
_KINDS: dict[str, type] = {
    kind.__name__: kind for kind in (UpdateRun, AddEpoch, AddSamples, SetCapacity, SetComponents, DeleteSamples)
}


def to_json(write: RowWrite) -> dict[str, Any]:
    return {"kind": type(write).__name__, **asdict(write)}


def from_json(data: dict[str, Any]) -> RowWrite:
    """A write as `to_json` wrote it; sample and capacity rows come back as tuples."""
    fields = {k: v for k, v in data.items() if k != "kind"}
    kind = _KINDS[data["kind"]]
    if kind is AddSamples:
        fields["rows"] = [tuple(r) for r in fields["rows"]]
    if kind is SetCapacity:
        fields["curve"] = [tuple(r) for r in fields["curve"]]
    write: RowWrite = kind(**fields)
    return write


def run_of(write: RowWrite) -> int | None:
    return write.row.get("run_id") if isinstance(write, AddEpoch) else write.run_id


def for_run(write: RowWrite, run_id: int) -> RowWrite:
    """The same write, for run `run_id` (a kept record whose row was inserted only at its import)."""
    if isinstance(write, AddEpoch):
        return AddEpoch({**write.row, "run_id": run_id})
    return replace(write, run_id=run_id)
