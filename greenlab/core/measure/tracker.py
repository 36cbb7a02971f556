"""The tracker: samples meters on a background thread and measures named energy windows.

Sampling rate is not drawing rate: samples go into bounded buffers (a short history per component for
live views, and pending rows for the `samples` table, drained in batches by the run supervisor); nothing here
draws or writes. Windows (`begin_window`/`end_window`, or `with tracker.window(name)`, Zeus-style,
nestable by name) take fresh readings at their edges, so counters are exact at the boundaries and polled
power is integrated up to the edge. An edge may also be placed at a moment already past (a child
process's timestamp of when its phase began, read a little later): its value is then interpolated from
the readings kept around that moment, so a supervisor that is busy for a while never shifts an edge.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from greenlab.core.measure.meter import ComponentEnergy, Meter

DISAGREEMENT_LIMIT = 0.10  # counter vs integrated polled power: flag beyond 10 %
# Live watts of a cumulative reading (a counter, the CPU estimate's CPU-seconds) are taken over at least
# this span: CPU time advances in 10 ms ticks and a process's time is read a little late or early, so
# 0.1 s differences swing several times above the true power.
LIVE_POWER_SPAN_S = 1.0
# Readings kept for edges placed in the past: far more than a supervisor ever lags behind its child.
EDGE_HISTORY_S = 60.0
FLAG_SHORT_WINDOW_POLLED = "short_window_polled"  # a counter window too short to see: polled power used
FLAG_LATE_EDGE = "edge_before_history"  # an edge older than the kept readings: the oldest was used
UNCERTAINTY_LIMIT = 0.05  # a window whose stated uncertainty exceeds 5 % of its figure is flagged
FLAG_UNCERTAIN = "window_uncertain"


@dataclass
class WindowResult:
    name: str
    seconds: float
    components: dict[str, ComponentEnergy] = field(default_factory=dict)

    def total_j(self) -> float | None:
        """All components together, or None when one has no reading (a partial sum would mislead)."""
        if any(c.energy_j is None for c in self.components.values()):
            return None
        return sum(c.energy_j or 0.0 for c in self.components.values())

    def split_j(self) -> tuple[float, float]:
        """(measured, estimated) joules: the two are reported apart, never silently mixed."""
        measured = sum(c.energy_j or 0.0 for c in self.components.values() if c.measured)
        estimated = sum(
            c.energy_j or 0.0 for c in self.components.values() if c.method == "estimate" and c.energy_j is not None
        )
        return measured, estimated

    def flags(self) -> list[str]:
        return sorted({flag for c in self.components.values() for flag in c.flags})

    def uncertainty_j(self) -> float | None:
        """The sum of the components' stated uncertainties (`inputs["uncertainty_j"]`), or None when no
        component states one (a sum of bounds: the components' errors need not cancel)."""
        stated = [c.inputs["uncertainty_j"] for c in self.components.values() if "uncertainty_j" in c.inputs]
        return sum(stated) if stated else None

    def without(self, components: set[str]) -> WindowResult:
        """The same window without some components (a GPU the run did not use)."""
        return WindowResult(self.name, self.seconds, {k: v for k, v in self.components.items() if k not in components})


@dataclass
class _Snapshot:
    t: float
    cumulative: dict[str, float]  # meter-totalled joules (counter or estimate)
    polled: dict[str, float]  # tracker-integrated joules from power samples
    stale: frozenset[str] = frozenset()  # components whose read failed at this edge (last total used)
    flags: tuple[str, ...] = ()


def _interpolate(before: _Snapshot, after: _Snapshot, t: float) -> _Snapshot:
    if after.t <= before.t:
        return after
    share = (t - before.t) / (after.t - before.t)

    def mix(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {c: a[c] + (b[c] - a[c]) * share if c in a else b[c] for c in b}

    return _Snapshot(
        t=t,
        cumulative=mix(before.cumulative, after.cumulative),
        polled=mix(before.polled, after.polled),
        stale=before.stale | after.stale,
    )


class PowerHistory:
    """What a face reads of any tracker, local or rebuilt from a Ray node's samples: per component, the
    (t, watts) history kept in `_history` under `_lock`."""

    _lock: threading.Lock
    _history: dict[str, deque[tuple[float, float]]]

    def history(self, component: str) -> list[tuple[float, float]]:
        with self._lock:
            return list(self._history.get(component, ()))

    def latest(self) -> dict[str, float]:
        with self._lock:
            return {c: h[-1][1] for c, h in self._history.items() if h}

    def methods(self) -> dict[str, str]:
        """component -> how it is obtained (counter, polled, estimate, unavailable)."""
        raise NotImplementedError


class EnergyTracker(PowerHistory):
    """Combines meters; one instance per run (or per grid), its sampler on a thread.

    `clock` is the monotonic clock the tracker reads (injectable for tests); an edge given with `at` is a
    time on that clock.
    """

    def __init__(
        self,
        meters: list[Meter],
        *,
        sample_hz: float = 10.0,
        history_s: float = 300.0,
        pending_limit: int = 500_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.meters = meters
        self.sample_hz = sample_hz
        self._clock = clock
        self._lock = threading.Lock()
        self._origin = clock()
        self._owner: dict[str, Meter] = {c: m for m in meters for c in m.components()}
        self._polled_j: dict[str, float] = {}
        self._last_power: dict[str, tuple[float, float]] = {}
        self._recent_cumulative: dict[str, deque[tuple[float, float]]] = {}
        self._history_len = max(10, int(history_s * sample_hz))
        self._history: dict[str, deque[tuple[float, float]]] = {c: deque(maxlen=self._history_len) for c in self._owner}
        self._readings: deque[_Snapshot] = deque(maxlen=max(20, int(EDGE_HISTORY_S * sample_hz)))
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

    def methods(self) -> dict[str, str]:
        return {c: self.method(c) for c in self._owner}

    def info(self) -> dict[str, dict[str, Any]]:
        facts: dict[str, dict[str, Any]] = {}
        for meter in self.meters:
            facts.update(meter.info())
        return facts

    def track_processes(self, pids: list[int]) -> None:
        with self._lock:
            for meter in self.meters:
                meter.track_processes(pids)

    def process_ended(self, pid: int, cpu_seconds: float) -> None:
        with self._lock:
            for meter in self.meters:
                meter.process_ended(pid, cpu_seconds)

    # -- sampling -----------------------------------------------------------------------------------
    def _read(self, now: float) -> dict[str, float]:
        """One reading of every meter, integrated and kept for past edges; returns this sample's watts.
        Caller holds the lock.

        Power a meter reports is integrated (trapezoid) into `polled` joules; for counter components that
        integral is kept beside the counter as a cross-check. Components with only a cumulative reading
        get their watts derived from it over LIVE_POWER_SPAN_S, for display and the `samples` table,
        never integrated again.
        """
        t = now - self._origin
        direct: dict[str, float] = {}
        cumulative: dict[str, float] = {}
        for meter in self.meters:
            try:
                direct.update(meter.power_w())
                cumulative.update(meter.energy_j())
            except Exception as exc:  # noqa: BLE001 - an unreadable sensor mid-run must not kill the run's measurement
                self._note_error(f"{type(meter).__name__}: {exc}")
            for component, message in getattr(meter, "last_errors", {}).items():
                self._note_error(f"{component}: {message}")
        for component, power in direct.items():
            previous = self._last_power.get(component)
            if previous is not None:
                self._polled_j[component] = (
                    self._polled_j.get(component, 0.0) + (t - previous[0]) * (previous[1] + power) / 2
                )
            else:
                self._polled_j.setdefault(component, 0.0)
            self._last_power[component] = (t, power)
        watts = dict(direct)
        for component, joules in cumulative.items():
            recent = self._recent_cumulative.setdefault(component, deque())
            recent.append((t, joules))
            while len(recent) > 2 and recent[1][0] <= t - LIVE_POWER_SPAN_S:
                recent.popleft()
            start_t, start_j = recent[0]
            if component not in watts and t - start_t >= LIVE_POWER_SPAN_S:
                watts[component] = max(0.0, (joules - start_j) / (t - start_t))
        # A component whose read failed this time keeps its last total: the counters are cumulative, so
        # the next good read covers the gap. A window edge taken on such a stale total is flagged.
        self._stale = {c for c in self._recent_cumulative if c not in cumulative}
        self._latest_cumulative = {**{c: r[-1][1] for c, r in self._recent_cumulative.items() if r}, **cumulative}
        self._readings.append(
            _Snapshot(
                t=t, cumulative=dict(self._latest_cumulative), polled=dict(self._polled_j), stale=frozenset(self._stale)
            )
        )
        return watts

    def _note_error(self, message: str) -> None:
        if message not in self.errors and len(self.errors) < 50:
            self.errors.append(message)

    def sample(self) -> dict[str, float]:
        """Take one sample now (the thread calls this; tests may too)."""
        with self._lock:  # the clock is read under the lock, next to the readings it stamps
            now = self._clock()
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

    def now(self) -> float:
        """Seconds on the tracker's clock (the `t` of samples)."""
        return self._clock() - self._origin

    def tracker_time(self, monotonic: float) -> float:
        """A time on the tracker's clock (seconds since its origin) as the `t` of samples."""
        return monotonic - self._origin

    def running_j(self, since: float) -> dict[str, float]:
        """Joules per component from tracker time `since` to the last sample: a cumulative reading's
        difference, or the polled integral. For live views; windows are what the store records."""
        with self._lock:
            if not self._readings:
                return {}
            last = self._readings[-1]
            start = self._edge_at(since, fresh=last)
        energy = {c: last.cumulative[c] - start.cumulative.get(c, last.cumulative[c]) for c in last.cumulative}
        for component, joules in last.polled.items():
            energy.setdefault(component, joules - start.polled.get(component, joules))
        return energy

    # -- windows ------------------------------------------------------------------------------------
    def _edge_at(self, t: float, fresh: _Snapshot) -> _Snapshot:
        """The readings at tracker time `t`, interpolated between the kept readings around it. Caller holds
        the lock; `fresh` is a reading taken now (so one lies after any past `t`)."""
        if t >= fresh.t:
            return fresh
        times = [r.t for r in self._readings]
        index = bisect.bisect_left(times, t)
        if index == 0:
            oldest = self._readings[0] if self._readings else fresh
            return _Snapshot(
                t=oldest.t,
                cumulative=oldest.cumulative,
                polled=oldest.polled,
                stale=oldest.stale,
                flags=(FLAG_LATE_EDGE,) if t < oldest.t else (),
            )
        after = self._readings[index] if index < len(self._readings) else fresh
        return _interpolate(self._readings[index - 1], after, t)

    def _snapshot(self, at: float | None = None) -> _Snapshot:
        with self._lock:  # stamped under the lock: readings stay in time order for _edge_at's bisect
            now = self._clock()
            self._read(now)
            fresh = self._readings[-1]
            if at is None:
                return fresh
            return self._edge_at(self.tracker_time(at), fresh)

    def begin_window(self, name: str, at: float | None = None) -> None:
        """Open window `name` now, or at `at` (a time on the tracker's clock, at most a minute past)."""
        self._windows[name] = self._snapshot(at)

    def end_window(self, name: str, at: float | None = None) -> WindowResult:
        """Close window `name` now, or at `at`; its energy per component and how it was obtained."""
        start = self._windows.pop(name)
        end = self._snapshot(at)
        seconds = max(0.0, end.t - start.t)
        result = WindowResult(name=name, seconds=seconds)
        for component, meter in self._owner.items():
            result.components[component] = self._component_energy(component, meter, start, end, seconds)
        return result

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[dict[str, WindowResult]]:
        """`with tracker.window("name") as w:` ... then `w["result"]` holds the closed window's result."""
        holder: dict[str, WindowResult] = {}
        self.begin_window(name)
        try:
            yield holder
        finally:
            holder["result"] = self.end_window(name)

    def _component_energy(
        self, component: str, meter: Meter, start: _Snapshot, end: _Snapshot, seconds: float
    ) -> ComponentEnergy:
        method = meter.method(component)
        flags: list[str] = [*start.flags, *end.flags]
        inputs: dict[str, Any] = {}
        polled = None
        if component in start.polled or component in end.polled:
            polled = end.polled.get(component, 0.0) - start.polled.get(component, 0.0)
        if component in end.cumulative and component in start.cumulative:
            energy: float | None = end.cumulative[component] - start.cumulative[component]
            if method == "counter" and polled is not None:
                inputs["polled_j"] = round(polled, 4)
                # Two readings disagree when they differ by more than 10 % and more than both may be off
                # by: an averaged power reading lags the load by half a second, which on a phase of a few
                # seconds alone exceeds 10 % without either reading being wrong.
                period = 1.0 / self.sample_hz
                bounds = [
                    meter.window_uncertainty_j(component, how, seconds, joules, period)
                    for how, joules in (("counter", energy), ("polled", polled))
                ]
                allowed = max(DISAGREEMENT_LIMIT * abs(energy or 0.0), sum(b for b in bounds if b is not None))
                if energy and abs(polled - energy) > allowed:
                    flags.append("counter_polled_disagree")
        elif polled is not None:
            energy = polled
        else:
            energy = None
            method = "unavailable"
        if component in start.stale or component in end.stale:
            flags.append("stale_reading")  # a failed read at an edge: the figure may be short
        meter_flags = meter.window_flags(component, seconds, energy)
        flags.extend(meter_flags)
        if meter_flags and method == "counter" and polled is not None and seconds > 0:
            # Too short for the counter to tick, yet the phase cost energy: polled power saw it.
            energy, method = polled, "polled"
            flags.append(FLAG_SHORT_WINDOW_POLLED)
        elif flags and energy == 0:
            # A counter that has not ticked yet says "no reading", not "no energy": never report 0 J.
            energy = None
        if energy is not None:
            inputs.update(meter.window_inputs(component, energy, seconds))
            uncertainty = meter.window_uncertainty_j(component, method, seconds, energy, 1.0 / self.sample_hz)
            if uncertainty is not None:
                inputs["uncertainty_j"] = round(uncertainty, 4)
                if energy and uncertainty > UNCERTAINTY_LIMIT * abs(energy):
                    flags.append(FLAG_UNCERTAIN)
        return ComponentEnergy(component, energy, method, inputs, tuple(dict.fromkeys(flags)))

    def discard_windows(self) -> None:
        self._windows.clear()

    def measure_idle(self, seconds: float, wait: Any = time.sleep) -> dict[str, float]:
        """Mean watts per component over `seconds` of (hopefully) quiet machine.

        `wait(seconds)` does the waiting; pass an Event's `wait` to make the baseline cancellable.
        """
        self.begin_window("__idle__")
        wait(seconds)
        result = self.end_window("__idle__")
        return {
            c: (e.energy_j / result.seconds)
            for c, e in result.components.items()
            if e.energy_j is not None and result.seconds > 0
        }
