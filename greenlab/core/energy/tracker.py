"""The tracker: samples meters on a background thread and measures named energy windows.

Sampling rate is not drawing rate: samples go into bounded buffers (a short history per component for
live views, and pending rows for the `samples` table, drained in batches by the runner); nothing here
draws or writes. Windows (`begin_window`/`end_window`, Zeus-style, nestable by name) take fresh readings
at their edges, so counters are exact at the boundaries and polled power is integrated up to the edge.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from greenlab.core.energy.meter import ComponentEnergy, Meter

DISAGREEMENT_LIMIT = 0.10  # counter vs integrated polled power: flag beyond 10 %


@dataclass
class WindowResult:
    name: str
    seconds: float
    components: dict[str, ComponentEnergy] = field(default_factory=dict)

    def total_j(self) -> float | None:
        """All components together, or None when one has no reading (a partial sum would mislead)."""
        if any(c.energy_j is None for c in self.components.values()):
            return None
        return sum(c.energy_j for c in self.components.values())

    def split_j(self) -> tuple[float, float]:
        """(measured, estimated) joules: the two are reported apart, never silently mixed."""
        measured = sum(c.energy_j or 0.0 for c in self.components.values() if c.measured)
        estimated = sum(c.energy_j or 0.0 for c in self.components.values()
                        if c.method == "estimate" and c.energy_j is not None)
        return measured, estimated


@dataclass
class _Snapshot:
    t: float
    cumulative: dict[str, float]  # meter-totalled joules (counter or estimate)
    polled: dict[str, float]  # tracker-integrated joules from power samples
    stale: frozenset[str] = frozenset()  # components whose read failed at this edge (last total used)


class EnergyTracker:
    """Combines meters; one instance per supervisor, reused across the runs of a grid."""

    def __init__(self, meters: list[Meter], *, sample_hz: float = 10.0, history_s: float = 300.0,
                 pending_limit: int = 500_000) -> None:
        self.meters = meters
        self.sample_hz = sample_hz
        self._lock = threading.Lock()
        self._origin = time.monotonic()
        self._owner: dict[str, Meter] = {c: m for m in meters for c in m.components()}
        self._polled_j: dict[str, float] = {}
        self._last_power: dict[str, tuple[float, float]] = {}
        self._last_cumulative: dict[str, tuple[float, float]] = {}
        self._history_len = max(10, int(history_s * sample_hz))
        self._history: dict[str, deque[tuple[float, float]]] = {
            c: deque(maxlen=self._history_len) for c in self._owner}
        self._pending: deque[tuple[float, str, float]] = deque(maxlen=pending_limit)
        self.samples_dropped = 0
        self._windows: dict[str, _Snapshot] = {}
        self._latest_cumulative: dict[str, float] = {}
        self._stale: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.sampler_cpu_s = 0.0
        self.sample_count = 0
        self.errors: list[str] = []

    # -- components ---------------------------------------------------------------------------------
    def components(self) -> list[str]:
        return list(self._owner)

    def method(self, component: str) -> str:
        return self._owner[component].method(component)

    def info(self) -> dict[str, dict[str, Any]]:
        facts: dict[str, dict[str, Any]] = {}
        for meter in self.meters:
            facts.update(meter.info())
        return facts

    def track_processes(self, pids: list[int]) -> None:
        with self._lock:
            for meter in self.meters:
                meter.track_processes(pids)

    # -- sampling -----------------------------------------------------------------------------------
    def _read(self, now: float) -> dict[str, float]:
        """One reading of every meter, integrated; returns this sample's watts. Caller holds the lock.

        Power a meter reports is integrated (trapezoid) into `polled` joules; for counter components that
        integral is kept beside the counter as a cross-check. Components with only a cumulative reading
        get their watts derived from it, for display and the `samples` table, never integrated again.
        """
        t = now - self._origin
        direct: dict[str, float] = {}
        cumulative: dict[str, float] = {}
        for meter in self.meters:
            try:
                direct.update(meter.power_w())
                cumulative.update(meter.energy_j())
            except Exception as exc:  # an unreadable sensor mid-run must not kill the run's measurement
                self._note_error(f"{type(meter).__name__}: {exc}")
            for component, message in getattr(meter, "last_errors", {}).items():
                self._note_error(f"{component}: {message}")
        for component, power in direct.items():
            previous = self._last_power.get(component)
            if previous is not None:
                self._polled_j[component] = (self._polled_j.get(component, 0.0)
                                             + (t - previous[0]) * (previous[1] + power) / 2)
            else:
                self._polled_j.setdefault(component, 0.0)
            self._last_power[component] = (t, power)
        watts = dict(direct)
        for component, joules in cumulative.items():
            previous = self._last_cumulative.get(component)
            self._last_cumulative[component] = (t, joules)
            if component not in watts and previous is not None and t > previous[0]:
                watts[component] = max(0.0, (joules - previous[1]) / (t - previous[0]))
        # A component whose read failed this time keeps its last total: the counters are cumulative, so
        # the next good read covers the gap. A window edge taken on such a stale total is flagged.
        self._stale = {c for c in self._last_cumulative if c not in cumulative}
        self._latest_cumulative = {**{c: v for c, (_, v) in self._last_cumulative.items()}, **cumulative}
        return watts

    def _note_error(self, message: str) -> None:
        if message not in self.errors and len(self.errors) < 50:
            self.errors.append(message)

    def sample(self) -> dict[str, float]:
        """Take one sample now (the thread calls this; tests may too)."""
        now = time.monotonic()
        with self._lock:
            watts = self._read(now)
            t = now - self._origin
            for component, power in watts.items():
                history = self._history.get(component)
                if history is None:  # a component no meter announced: give it the same bound
                    history = self._history[component] = deque(maxlen=self._history_len)
                history.append((t, power))
                if len(self._pending) == self._pending.maxlen:
                    self.samples_dropped += 1
                self._pending.append((t, component, power))
            self.sample_count += 1
        return watts

    def _loop(self) -> None:
        period = 1.0 / self.sample_hz
        next_at = time.monotonic()
        cpu_start = time.thread_time()
        while not self._stop.is_set():
            self.sample()
            self.sampler_cpu_s = time.thread_time() - cpu_start
            next_at += period
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (a slow sensor): skip missed ticks instead of bursting
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)
        self.sampler_cpu_s = time.thread_time() - cpu_start

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="greenlab-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None

    def close(self) -> None:
        self.stop()
        for meter in self.meters:
            meter.close()

    # -- buffers for faces and the store -------------------------------------------------------------
    def drain_samples(self) -> list[tuple[float, str, float]]:
        with self._lock:
            rows = list(self._pending)
            self._pending.clear()
        return rows

    def history(self, component: str) -> list[tuple[float, float]]:
        with self._lock:
            return list(self._history.get(component, ()))

    def latest(self) -> dict[str, float]:
        with self._lock:
            return {c: h[-1][1] for c, h in self._history.items() if h}

    def now(self) -> float:
        """Seconds on the tracker's clock (the `t` of samples)."""
        return time.monotonic() - self._origin

    # -- windows ------------------------------------------------------------------------------------
    def _snapshot(self) -> _Snapshot:
        now = time.monotonic()
        with self._lock:
            self._read(now)
            return _Snapshot(t=now - self._origin, cumulative=dict(self._latest_cumulative),
                             polled=dict(self._polled_j), stale=frozenset(self._stale))

    def begin_window(self, name: str) -> None:
        self._windows[name] = self._snapshot()

    def end_window(self, name: str) -> WindowResult:
        start = self._windows.pop(name)
        end = self._snapshot()
        seconds = end.t - start.t
        result = WindowResult(name=name, seconds=seconds)
        for component, meter in self._owner.items():
            method = meter.method(component)
            flags: list[str] = []
            inputs: dict[str, Any] = {}
            polled = None
            if component in start.polled or component in end.polled:
                polled = end.polled.get(component, 0.0) - start.polled.get(component, 0.0)
            if component in end.cumulative and component in start.cumulative:
                energy: float | None = end.cumulative[component] - start.cumulative[component]
                if method == "counter" and polled is not None:
                    inputs["polled_j"] = round(polled, 4)
                    if energy and abs(polled - energy) / energy > DISAGREEMENT_LIMIT:
                        flags.append("counter_polled_disagree")
            elif polled is not None:
                energy = polled
            else:
                energy = None
                method = "unavailable"
            if energy is not None:
                inputs.update(meter.window_inputs(component, energy, seconds))
            if component in start.stale or component in end.stale:
                flags.append("stale_reading")  # a failed read at an edge: the figure may be short
            flags.extend(meter.window_flags(component, seconds, energy))
            if flags and energy == 0:
                # A counter that has not ticked yet says "no reading", not "no energy": never report 0 J.
                energy = None
            result.components[component] = ComponentEnergy(component, energy, method, inputs, tuple(flags))
        return result

    def discard_windows(self) -> None:
        self._windows.clear()

    def measure_idle(self, seconds: float, wait: Any = time.sleep) -> dict[str, float]:
        """Mean watts per component over `seconds` of (hopefully) quiet machine.

        `wait(seconds)` does the waiting; pass an Event's `wait` to make the baseline cancellable.
        """
        self.begin_window("__idle__")
        wait(seconds)
        result = self.end_window("__idle__")
        return {c: (e.energy_j / result.seconds) for c, e in result.components.items()
                if e.energy_j is not None and result.seconds > 0}
