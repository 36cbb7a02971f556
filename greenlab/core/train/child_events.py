"""Typed events a run's child process streams to its supervisor, one JSON object per line.

Each event is a small dataclass named in the past tense; `type` in the JSON is the class name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class RunStarted:
    device: str
    dataset: str
    n_train: int
    n_val: int
    num_classes: int
    image_size: int | None
    input_description: str
    batches_per_epoch: int
    epochs: int
    seed: int | None = None  # the run's own seed (seed + repeat)
    # A CUDA run names its board, so the supervisor meters the right one (CUDA and NVML number differently).
    cuda_index: int | None = None
    cuda_uuid: str | None = None
    pci_bus_id: str | None = None
    # How batches reach the model (greenlab.core.train.datasets.DataBundle.pipeline): workers, pinning, cache.
    input_pipeline: dict[str, Any] | None = None


@dataclass
class ModelPrepared:
    """The model after compression, with its statistics before and after."""

    before: dict[str, Any]
    after: dict[str, Any]
    columns: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    capacity_curve: list[list[float]] | None = None


@dataclass
class PhaseBegan:
    epoch: int
    phase: str  # train | eval
    # time.monotonic() in the child at the edge (one system-wide clock on Linux and macOS), so the
    # supervisor places the energy window's edge where it happened, not where it read the event.
    t_mono: float | None = None


@dataclass
class PhaseEnded:
    epoch: int
    phase: str
    t_mono: float | None = None


@dataclass
class BatchFinished:
    epoch: int
    batch: int
    batches: int
    loss: float


@dataclass
class EpochFinished:
    """One epoch's results: what training.train returns per epoch, and the event the child sends."""

    epoch: int
    train_loss: float
    val_accuracy: float
    val_f1: float
    val_loss: float
    train_s: float
    eval_s: float
    batches: int = 0
    # Seconds each phase's loop waited for the next batch (the data loader, not the model): an input-bound
    # run's energy measures data loading and an idle device.
    train_data_wait_s: float | None = None
    eval_data_wait_s: float | None = None

    @property
    def duration_s(self) -> float:
        return self.train_s + self.eval_s


@dataclass
class LogWritten:
    message: str


@dataclass
class RunFinished:
    val_accuracy: float
    val_f1: float
    train_s: float


@dataclass
class RunFailed:
    error: str
    kind: str  # the exception's class name
    traceback: str = ""
    user_error: bool = False  # a GreenLabError: the message is the whole story


@dataclass
class ProcessEnding:
    """The child's last word: its own CPU time, so the CPU estimate counts the time after its last sample;
    and that of its reaped children (data-loading workers), so they are not taken for other processes."""

    cpu_s: float
    children_cpu_s: float = 0.0


EVENT_TYPES = {
    cls.__name__: cls
    for cls in (
        RunStarted,
        ModelPrepared,
        PhaseBegan,
        PhaseEnded,
        BatchFinished,
        EpochFinished,
        LogWritten,
        RunFinished,
        RunFailed,
        ProcessEnding,
    )
}
Event = (
    RunStarted
    | ModelPrepared
    | PhaseBegan
    | PhaseEnded
    | BatchFinished
    | EpochFinished
    | LogWritten
    | RunFinished
    | RunFailed
    | ProcessEnding
)


def encode(event: Event) -> str:
    return json.dumps({"type": type(event).__name__, **asdict(event)}) + "\n"


def decode(line: str) -> Event:
    data = json.loads(line)
    cls = EVENT_TYPES[data.pop("type")]
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
