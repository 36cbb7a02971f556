"""The meter interface: one source of energy readings for one or more components.

A component is a named consumer: `gpu0`, `gpu1`, ... (by CUDA index), `cpu` (all packages) and `dram`.
A meter knows how it obtains each component's figure (`method`), and exposes two readings:

- `energy_j()`: cumulative joules since an arbitrary origin, for components it can total by itself
  (a hardware counter, wraparound already handled; or an estimate computed from cumulative inputs such
  as CPU seconds). Differences between two calls are the energy of the window between them.
- `power_w()`: instantaneous watts, cheap and non-blocking, for the live view and for components with no
  cumulative reading (the tracker integrates those samples: method `polled`).

Meters never sleep, never start threads and never touch the store: the tracker does all of that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

METHODS = ("counter", "polled", "estimate", "unavailable")
MEASURED_METHODS = ("counter", "polled")


@dataclass(frozen=True)
class ComponentEnergy:
    """The energy of one component over one window, and how it was obtained."""

    component: str
    energy_j: float | None
    method: str
    inputs: dict[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()

    @property
    def measured(self) -> bool:
        return self.method in MEASURED_METHODS and self.energy_j is not None


class Meter(ABC):
    """A source of energy readings; see the module docstring for the contract."""

    @abstractmethod
    def components(self) -> list[str]:
        """The components this meter reports, e.g. ['cpu', 'dram'] or ['gpu0']."""

    @abstractmethod
    def method(self, component: str) -> str:
        """How `component` is obtained: one of METHODS."""

    def energy_j(self) -> dict[str, float]:
        """Cumulative joules per component that has a cumulative reading (others are absent)."""
        return {}

    def power_w(self) -> dict[str, float]:
        """Instantaneous watts per component; absent where no power reading exists."""
        return {}

    def info(self) -> dict[str, dict[str, Any]]:
        """Static facts per component (device name, TDP used, formula inputs) stored with the run."""
        return {c: {} for c in self.components()}

    def window_flags(self, component: str, seconds: float, energy_j: float | None) -> tuple[str, ...]:
        """Warnings for a finished window (e.g. shorter than a counter's update period)."""
        return ()

    def window_uncertainty_j(
        self, component: str, method: str, seconds: float, energy_j: float | None, sample_period_s: float
    ) -> float | None:
        """How far a window's figure obtained by `method` may be off (J), from how the meter reads; None
        where the meter states none (RAPL updates every millisecond; an estimate's error is its rule's)."""
        return None

    def window_inputs(self, component: str, energy_j: float, seconds: float) -> dict[str, Any]:
        """The formula inputs behind an estimated window (e.g. CPU-seconds), stored with the figure."""
        return {}

    def track_processes(self, pids: list[int]) -> None:
        """Attribute the given processes (and their children) to the run, for per-process estimates."""

    def process_ended(self, pid: int, cpu_seconds: float) -> None:
        """A tracked process reports its own final CPU time as it ends (per-process estimates use it)."""

    def close(self) -> None:
        """Release handles (NVML shutdown, open files)."""
