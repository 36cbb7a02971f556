"""The supervisor: runs each grid entry in a child process, measures it, and writes the store.

The child (greenlab.core.worker) trains and streams events; this side owns the meters (an
EnergyTracker sampling in a thread), the idle baseline, the energy windows opened and closed on the
child's phase events, and every write to the store. A child that raises, runs out of memory or is killed
leaves a `failed` run with its error and partial data; a cancel or Ctrl-C leaves an `interrupted` one.
Faces (headless, TUI) subscribe through `on_event` and never see a process or a SQL statement.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from greenlab.core import events
from greenlab.core.config import GridRun, RunSettings
from greenlab.core.energy import carbon
from greenlab.core.energy.detect import build_meters
from greenlab.core.energy.tracker import EnergyTracker, WindowResult
from greenlab.core.gridstop import GridStopped, StopRule, exception_cause
from greenlab.core.hostlock import HostLock, WaitingForLock  # noqa: F401 - supervisor events faces import
from greenlab.core.store import RUN_COLUMNS, Store, now_iso

_SAMPLE_FLUSH_S = 1.0
_TERMINATE_GRACE_S = 5.0


# Supervisor events, beside the child's (greenlab.core.events), for faces to show.
@dataclass
class RunQueued:
    index: int
    total: int
    run: GridRun


@dataclass
class RunSkipped:
    index: int
    run: GridRun
    reason: str


@dataclass
class IdleMeasured:
    watts: dict[str, float]
    seconds: float


@dataclass
class CoolingDown:
    temperatures: dict[str, float]
    target_c: float


@dataclass
class RunBegan:
    run_id: int
    run: GridRun
    tracker: EnergyTracker
    fallbacks: dict[str, str] = field(default_factory=dict)  # component -> why it is not measured


@dataclass
class ChildEvent:
    run_id: int
    event: events.Event


@dataclass
class RunStored:
    run_id: int
    run: GridRun
    status: str
    error: str | None
    row: dict[str, Any] = field(default_factory=dict)


SupervisorEvent = Any
Listener = Callable[[SupervisorEvent], None]


def gpus_for(device: str) -> list[int] | None:
    """CUDA indices a run on `device` uses (by torch's numbering), or None when it uses no GPU."""
    if device in ("cpu", "mps"):
        return None
    if device.startswith("cuda:"):
        return [int(device.split(":", 1)[1])]
    return [0]  # "auto" and "cuda" train on the current device, cuda:0


def make_tracker(settings: RunSettings) -> tuple[EnergyTracker, dict[str, str]]:
    setup = build_meters(use_gpus=gpus_for(settings.device), cpu_tdp_w=settings.cpu_tdp_w,
                         dram_w_per_gb=settings.dram_w_per_gb)
    return EnergyTracker(setup.meters, sample_hz=settings.sample_hz), setup.notes


class _ChildOutput:
    """Drains the child's stdout/stderr on a thread (a full pipe would block the child) and keeps the tail."""

    def __init__(self, stream: Any) -> None:
        self.lines: deque[str] = deque(maxlen=40)
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: Any) -> None:
        for line in iter(stream.readline, ""):
            self.lines.append(line.rstrip())

    def tail(self, count: int = 8) -> str:
        self._thread.join(timeout=1)
        return "\n".join(list(self.lines)[-count:])


def _components_summary(window: WindowResult, idle: dict[str, float]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run columns and energy_components rows from the run's window and the idle baseline."""
    columns: dict[str, Any] = {}
    rows = []
    net_total = 0.0
    idle_total = 0.0
    groups: dict[str, list[Any]] = {"gpu": [], "cpu": [], "dram": []}
    for name, energy in window.components.items():
        idle_w = idle.get(name) if energy.measured else None
        net = None
        if energy.energy_j is not None:
            net = energy.energy_j if idle_w is None else max(0.0, energy.energy_j - idle_w * window.seconds)
            net_total += net
        if idle_w is not None:
            idle_total += idle_w
        rows.append({"component": name, "energy_j": energy.energy_j, "method": energy.method, "idle_w": idle_w,
                     "net_energy_j": net, "inputs": energy.inputs, "flags": list(energy.flags)})
        groups["gpu" if name.startswith("gpu") else name].append(energy)
    for group, members in groups.items():
        values = [m.energy_j for m in members if m.energy_j is not None]
        columns[f"energy_{group}_j"] = sum(values) if values else None
        methods = sorted({m.method for m in members})
        columns[f"energy_{group}_method"] = "+".join(methods) if methods else "unavailable"
    measured, estimated = window.split_j()
    total = measured + estimated
    columns.update(energy_j=total, energy_kwh=carbon.kwh(total), energy_measured_j=measured,
                   energy_estimated_j=estimated, energy_net_j=net_total, idle_w=idle_total if idle else None)
    return columns, rows


@contextlib.contextmanager
def _signals_deferred() -> Any:
    """Hold SIGINT and SIGTERM while the outcome is written (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    blocked = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)


def _temperatures(tracker: EnergyTracker) -> dict[str, float]:
    """GPU temperatures now (a hot GPU draws more; start and end are stored with the run)."""
    temperatures: dict[str, float] = {}
    for meter in tracker.meters:
        if hasattr(meter, "temperatures"):
            try:
                temperatures.update(meter.temperatures())
            except Exception:  # a temperature is context, never a reason to lose the run's record
                continue
    return temperatures


class RunSupervisor:
    """Executes grid runs one at a time; `cancel()` may be called from any thread."""

    def __init__(self, store: Store, on_event: Listener | None = None) -> None:
        self.store = store
        self._listener = on_event or (lambda event: None)
        self.listener_errors: list[str] = []
        self._child_lock = threading.Lock()
        self._cancel = threading.Event()
        self._child: subprocess.Popen[str] | None = None
        self._idle_cache: dict[tuple[str, ...], dict[str, float]] = {}

    def on_event(self, event: SupervisorEvent) -> None:
        """Tell the face; a face that fails (a closed pipe, a widget error) never costs a run its record."""
        try:
            self._listener(event)
        except Exception as exc:  # noqa: BLE001 - the store matters more than the display
            if len(self.listener_errors) < 20:
                self.listener_errors.append(f"{type(exc).__name__}: {exc}")

    # -- control --------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the current run (stored as interrupted) and every run after it."""
        self._cancel.set()
        self._terminate_child()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _terminate_child(self) -> None:
        with self._child_lock:
            child = self._child
        if child is None or child.poll() is not None:
            return
        try:
            os.killpg(child.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=_TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)

    # -- the grid -------------------------------------------------------------------------------------
    def run_grid(self, runs: list[GridRun], *, force: bool = False, wait: bool = True) -> list[RunStored]:
        """Run every entry not already completed with identical settings; returns the stored outcomes.

        The host's measurement lock is held for the whole grid: a second grid waits for it (telling
        WaitingForLock), or with `wait=False` raises LockBusy. A run that another live supervisor is
        running in this store is skipped. A failure that would fail every following run the same way
        (greenlab.core.gridstop) stops the grid with GridStopped, which lists the runs not started.
        """
        outcomes: list[RunStored] = []
        lock = HostLock(self.store.path)
        if not lock.acquire(wait=wait, on_wait=self.on_event, stop=self._cancel):
            return outcomes  # cancelled while waiting: nothing ran
        try:
            done = set() if force else self.store.completed_keys()  # read under the lock: the last grid's too
            stop_rule = StopRule()
            for index, run in enumerate(runs):
                if self.cancelled:
                    break
                key = run.settings_key()
                if key in done:
                    self.on_event(RunSkipped(index, run, "already completed with identical settings"))
                    continue
                other = self.store.running_elsewhere(key)
                if other is not None:
                    self.on_event(RunSkipped(index, run, f"running now under supervisor pid {other}"))
                    continue
                self.on_event(RunQueued(index, len(runs), run))
                try:
                    outcome = self.execute(run)
                except Exception as exc:  # noqa: BLE001 - only environment failures are handled here
                    stop = exception_cause(exc)
                    if stop is None:
                        raise
                    outcome = None
                else:
                    stop = stop_rule.cause(outcome) if outcome is not None else None
                if outcome is not None:
                    outcomes.append(outcome)
                if stop is not None and not self.cancelled:
                    self.on_event(GridStopped(stop, [r for r in runs[index + 1:] if r.settings_key() not in done]))
                    break
        finally:
            lock.release()
        return outcomes

    # -- one run --------------------------------------------------------------------------------------
    def _idle_baseline(self, tracker: EnergyTracker, settings: RunSettings) -> dict[str, float]:
        if settings.idle_s <= 0:
            return {}
        key = tuple(sorted(f"{c}:{tracker.method(c)}" for c in tracker.components()))
        if settings.idle_scope == "grid" and key in self._idle_cache:
            return self._idle_cache[key]
        watts = tracker.measure_idle(settings.idle_s, wait=self._cancel.wait)
        if self.cancelled:
            return {}
        # An estimate follows the run's own processes, so it is already net of idle: keep measured only.
        watts = {c: w for c, w in watts.items() if tracker.method(c) in ("counter", "polled")}
        self._idle_cache[key] = watts
        self.on_event(IdleMeasured(watts, settings.idle_s))
        return watts

    def _cool_down(self, tracker: EnergyTracker, settings: RunSettings) -> None:
        if settings.cooldown_c is None:
            return
        deadline = time.monotonic() + settings.cooldown_timeout_s
        while not self.cancelled and time.monotonic() < deadline:
            temperatures = _temperatures(tracker)
            if all(t <= settings.cooldown_c for t in temperatures.values()):
                return
            self.on_event(CoolingDown(temperatures, settings.cooldown_c))
            self._cancel.wait(2.0)

    def execute(self, run: GridRun) -> RunStored | None:
        """Run one grid entry; None when cancelled before it began (nothing is stored then)."""
        settings = run.settings
        tracker, notes = make_tracker(settings)
        try:
            tracker.start()
            self._cool_down(tracker, settings)
            idle = self._idle_baseline(tracker, settings)
            if self.cancelled:
                return None
            meters_info = {"components": {c: {"method": tracker.method(c), **tracker.info().get(c, {})}
                                          for c in tracker.components()}, "fallbacks": notes,
                           "idle_w": idle, "idle_s": settings.idle_s if idle else 0,
                           "temperature_start_c": _temperatures(tracker)}
            run_id = self.store.start_run({
                "experiment": run.experiment, "model": run.model, "dataset": settings.dataset,
                "technique": run.technique, "settings": run.settings_dict(), "settings_key": run.settings_key(),
                "seed": settings.seed, "repeat": run.repeat, "device": settings.device,
                "sampler_hz": settings.sample_hz, "carbon_g_per_kwh": settings.carbon_g_per_kwh,
                "pue": settings.pue, "currency": settings.currency, "meters": meters_info})
            return self._supervise(run_id, run, tracker, idle, meters_info)
        finally:
            tracker.close()

    def _supervise(self, run_id: int, run: GridRun, tracker: EnergyTracker, idle: dict[str, float],
                   meters_info: dict[str, Any]) -> RunStored:
        settings = run.settings
        self.on_event(RunBegan(run_id, run, tracker, meters_info.get("fallbacks", {})))
        tracker.drain_samples()  # samples before the run (idle, cooling) are not the run's
        cpu_before = tracker.sampler_cpu_s
        read_fd, write_fd = os.pipe()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self._child_lock:  # a cancel from another thread now sees the child, or sees none at all
            child = subprocess.Popen(
                [sys.executable, "-m", "greenlab.core.worker", "--event-fd", str(write_fd)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                pass_fds=(write_fd,), start_new_session=True, env=env)
            self._child = child
        os.close(write_fd)
        tracker.track_processes([child.pid])
        tracker.begin_window("run")
        t0 = tracker.now()
        output = _ChildOutput(child.stdout)
        state: dict[str, Any] = {"status": None, "error": None, "train_s": None, "final": None,
                                 "training_j": None}
        raised: BaseException | None = None
        try:
            if self.cancelled:  # cancelled between the start of the run and the child's start
                self._terminate_child()
            child.stdin.write(json.dumps(run.to_json()))
            child.stdin.close()
            self._pump(run_id, read_fd, tracker, t0, state)
        except BaseException as exc:  # noqa: BLE001 - Ctrl-C, SIGTERM or a store error: record, then re-raise
            raised = exc
            if isinstance(exc, KeyboardInterrupt):
                self._cancel.set()
            else:
                state.setdefault("supervisor_error", f"{type(exc).__name__}: {exc}")
            self._terminate_child()
        finally:
            os.close(read_fd)
            with self._child_lock:
                self._child = None
        # Finishing the record must not be cut short by a second Ctrl-C: the child is already stopped.
        with _signals_deferred():
            stored = self._finish(run_id, run, tracker, idle, meters_info, child, output, state, t0, cpu_before)
        if raised is not None:
            raise raised
        return stored

    def _finish(self, run_id: int, run: GridRun, tracker: EnergyTracker, idle: dict[str, float],
                meters_info: dict[str, Any], child: subprocess.Popen[str], output: _ChildOutput,
                state: dict[str, Any], t0: float, cpu_before: float) -> RunStored:
        """Close the run's window and store its outcome, whatever happened to the child."""
        settings = run.settings
        try:
            return_code = child.wait(timeout=_TERMINATE_GRACE_S * 2)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            return_code = child.wait()
        window = tracker.end_window("run")
        tracker.discard_windows()  # a phase cut short by a failure has no end
        self.store.add_samples(run_id, [(t - t0, c, w) for t, c, w in tracker.drain_samples() if t >= t0])

        if state["status"] == "completed" and return_code == 0:
            status, error = "completed", None  # finished before a late cancel arrived: it counts
        elif self.cancelled:
            status, error = "interrupted", "cancelled by the user"
        elif "supervisor_error" in state:
            status, error = "failed", f"the supervising process failed: {state['supervisor_error']}"
        elif state["status"] == "failed":
            status, error = "failed", state["error"]
        else:
            status = "failed"
            reason = f"killed by signal {-return_code}" if return_code < 0 else f"exited with code {return_code}"
            if return_code == -signal.SIGKILL:
                reason += " (out of memory?)"
            error = f"the training process {reason} without reporting an error"
            tail = output.tail()
            if tail:
                error += f"; its last output:\n{tail}"

        columns, component_rows = _components_summary(window, idle)
        flags = sorted({f for row in component_rows for f in row["flags"]})
        final = state["final"] or {}
        values = {
            "status": status, "error": error, "finished_at": now_iso(), "duration_s": window.seconds,
            "train_s": state["train_s"], "energy_training_j": state["training_j"], "val_accuracy": final.get("val_accuracy"), "val_f1": final.get("val_f1"),
            **columns,
            "co2e_g": carbon.co2e_g(columns["energy_j"], settings.carbon_g_per_kwh, settings.pue),
            "cost": carbon.cost(columns["energy_j"], settings.price_per_kwh, settings.pue),
            "sampler_cpu_s": round(tracker.sampler_cpu_s - cpu_before, 4),
            "samples_dropped": tracker.samples_dropped,
            "flags": flags + tracker.errors + [f"display: {e}" for e in self.listener_errors],
            "meters": {**meters_info, "temperature_end_c": _temperatures(tracker)},
        }
        self.store.update_run(run_id, **values)
        self.store.set_components(run_id, component_rows)
        stored = RunStored(run_id, run, status, error, self.store.run(run_id) or {})
        self.on_event(stored)
        return stored

    def _pump(self, run_id: int, read_fd: int, tracker: EnergyTracker, t0: float, state: dict[str, Any]) -> None:
        """Read the child's events until it closes its end, flushing samples about once a second."""
        buffer = b""
        last_flush = time.monotonic()
        epoch_energy: dict[int, dict[str, float | None]] = {}
        while True:
            ready, _, _ = select.select([read_fd], [], [], 0.25)
            if ready:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        self._handle(run_id, events.decode(line.decode()), tracker, state, epoch_energy)
            if time.monotonic() - last_flush >= _SAMPLE_FLUSH_S:
                self.store.add_samples(run_id, [(t - t0, c, w) for t, c, w in tracker.drain_samples() if t >= t0])
                last_flush = time.monotonic()

    def _handle(self, run_id: int, event: events.Event, tracker: EnergyTracker, state: dict[str, Any],
                epoch_energy: dict[int, dict[str, float | None]]) -> None:
        if isinstance(event, events.RunStarted):
            self.store.update_run(run_id, device=event.device)
        elif isinstance(event, events.ModelPrepared):
            after, before = event.after, event.before
            values = {**{k: after.get(k) for k in ("params_total", "params_nonzero", "model_bytes", "flops_step")},
                      **{f"{k}_before": before.get(k) for k in
                         ("params_total", "params_nonzero", "model_bytes", "flops_step")},
                      "compression": event.report, "warnings": event.warnings}
            values.update({k: v for k, v in event.columns.items() if k in RUN_COLUMNS})
            self.store.update_run(run_id, **values)
            if event.capacity_curve:
                self.store.set_capacity(run_id, [(int(b), float(a)) for b, a in event.capacity_curve])
        elif isinstance(event, events.PhaseBegan):
            tracker.begin_window(f"{event.epoch}:{event.phase}")
        elif isinstance(event, events.PhaseEnded):
            window = tracker.end_window(f"{event.epoch}:{event.phase}")
            phase_j = window.total_j()
            epoch_energy.setdefault(event.epoch, {})[event.phase] = phase_j
            # One phase without a reading makes the training total unknown, not smaller.
            if phase_j is None or state.get("training_unknown"):
                state["training_unknown"], state["training_j"] = True, None
            else:
                state["training_j"] = (state["training_j"] or 0.0) + phase_j
        elif isinstance(event, events.EpochFinished):
            energies = epoch_energy.get(event.epoch, {})
            train_j, eval_j = energies.get("train"), energies.get("eval")
            self.store.add_epoch({
                "run_id": run_id, "epoch": event.epoch, "train_loss": event.train_loss,
                "val_accuracy": event.val_accuracy, "val_f1": event.val_f1, "val_loss": event.val_loss,
                "duration_s": event.train_s + event.eval_s, "train_s": event.train_s, "eval_s": event.eval_s,
                "energy_j": None if train_j is None or eval_j is None else train_j + eval_j,
                "train_energy_j": train_j, "eval_energy_j": eval_j})
        elif isinstance(event, events.RunFinished):
            state.update(status="completed", train_s=event.train_s, final=asdict(event))
        elif isinstance(event, events.RunFailed):
            # A user's mistake is fully told by its message; an unexpected failure keeps its traceback,
            # after a first line that faces show on their own.
            error = event.error if event.user_error else f"{event.kind}: {event.error}"
            if event.traceback and not event.user_error:
                error += "\n\n" + event.traceback.rstrip()
            state.update(status="failed", error=error)
        self.on_event(ChildEvent(run_id, event))

