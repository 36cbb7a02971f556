"""A run's live power on the Ray driver, rebuilt from the samples its node sends: for the faces only.

A run on a Ray node is measured there, by its own EnergyTracker; the driver's faces still want what a
local tracker gives them (components, methods, a power history, the latest watts, the energy so far).
`RemoteTracker` answers the same calls from the sample rows the node forwards about once a second. Its
clock starts when the driver hears that the run began and sample times count from the run's start on
its node, so the two agree to within the forwarding delay. The energy here is integrated from those
samples (trapezoids): a live figure, never stored; the stored energy is the node's, from its windows.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from greenlab.core.measure.tracker import PowerHistory

HISTORY_LIMIT = 3000  # samples kept per component: five minutes at 10 Hz, as a local tracker keeps


class RemoteTracker(PowerHistory):
    """The read side of an EnergyTracker (`components`, `methods`, `now`, `history`, `latest`,
    `running_j`), fed by `add_samples`; thread-safe."""

    def __init__(self, methods: dict[str, str], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._methods = dict(methods)
        self._clock = clock
        self._origin = clock()
        self._lock = threading.Lock()
        # Per component: (t, watts) for views, and (t, joules since the first sample) for energy so far.
        self._history: dict[str, deque[tuple[float, float]]] = {c: deque(maxlen=HISTORY_LIMIT) for c in methods}
        self._energy: dict[str, deque[tuple[float, float]]] = {}

    def components(self) -> list[str]:
        return list(self._methods)

    def methods(self) -> dict[str, str]:
        return dict(self._methods)

    def now(self) -> float:
        """Seconds since the driver heard that the run began: the `t` of samples."""
        return self._clock() - self._origin

    def add_samples(self, rows: Iterable[tuple[float, str, float]]) -> None:
        """Rows as the node stores them: (seconds since the run's start, component, watts)."""
        with self._lock:
            for t, component, watts in sorted(rows):
                history = self._history.setdefault(component, deque(maxlen=HISTORY_LIMIT))
                energy = self._energy.setdefault(component, deque(maxlen=HISTORY_LIMIT))
                if history and t <= history[-1][0]:
                    continue  # a sample already seen
                joules = 0.0 if not history else energy[-1][1] + (t - history[-1][0]) * (watts + history[-1][1]) / 2
                history.append((t, watts))
                energy.append((t, joules))

    def running_j(self, since: float) -> dict[str, float]:
        """Joules per component from `since` to the last sample, integrated from the samples (from the
        oldest kept sample when `since` is older)."""
        with self._lock:
            totals = {}
            for component, energy in self._energy.items():
                if energy:
                    index = bisect.bisect_left(energy, (since,))
                    start = energy[min(index, len(energy) - 1)][1]
                    totals[component] = energy[-1][1] - start
            return totals
