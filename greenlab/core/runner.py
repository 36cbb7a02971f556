"""The supervisor: runs each grid entry in a child process, measures it, and writes the store.

The child (greenlab.core.worker, started and read through greenlab.core.child) trains and streams events;
this side owns the meters (an EnergyTracker sampling in a thread), the idle baseline, the energy windows
opened and closed on the child's phase events and the run's record (greenlab.core.record); a recorder
(greenlab.core.recorder) decides where the record's rows go: the store, through a writer thread, for a
local grid, or memory on a Ray node, whose driver writes them (greenlab.core.raygrid). A child that
raises, runs out of memory or is killed leaves a `failed` run with its error and partial data; a cancel
or Ctrl-C leaves an `interrupted` one. Faces (headless, TUI) subscribe through `on_event`
(greenlab.core.grid_events; the presenter in greenlab.core.progress folds them) and never see a process
or a SQL statement.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import asdict
from typing import Any

from greenlab.core import events, hostload
from greenlab.core.config import GridRun, RunSettings
from greenlab.core.energy.detect import build_meters
from greenlab.core.energy.meter import MEASURED_METHODS
from greenlab.core.energy.tracker import EnergyTracker
# The supervisor's events live in greenlab.core.grid_events; re-exported here, where faces long found them.
from greenlab.core.grid_events import (ChildEvent, CoolingDown, IdleMeasured, Listener, RunBegan,  # noqa: F401
                                       RunMetered, RunQueued, RunSkipped, RunStored, SupervisorEvent,
                                       SafeListener, SupervisorNote)
from greenlab.core.gridstop import GridStopped, StopRule, exception_cause
from greenlab.core.hostlock import HostLock, WaitingForLock  # noqa: F401 - supervisor events faces import
from greenlab.core.child import RunChild
from greenlab.core.launcher import Launcher, default_launcher
from greenlab.core.record import RunRecord, accounting_columns, energy_columns, gpus_used
from greenlab.core.recorder import RowWriter, RunRecorder, StoreRecorder
from greenlab.core.store import RUN_COLUMNS, Store, now_iso

_SAMPLE_FLUSH_S = 1.0
_WARMUP_TIMEOUT_S = 120.0
WARMUP_MODULE = "greenlab.core.warmup"




def child_env() -> dict[str, str]:
    """The environment a run's child starts in (a fork server started with it serves every run)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def gpus_for(device: str) -> list[int] | None:
    """GPUs to meter for a run on `device`: None for none, [] for every visible one.

    A run on "auto", "cuda" or "cuda:N" meters every visible GPU until its child reports the board it
    trained on (by UUID and PCI bus id): only that board's energy is the run's, and a run that fell back
    to the CPU keeps no GPU energy at all. CUDA's numbering need not be NVML's, so no index is trusted.
    """
    if device in ("cpu", "mps"):
        return None
    return []


def make_tracker(settings: RunSettings) -> tuple[EnergyTracker, dict[str, str]]:
    setup = build_meters(use_gpus=gpus_for(settings.device), cpu_tdp_w=settings.cpu_tdp_w,
                         cpu_w_per_thread=settings.cpu_w_per_thread, dram_w_per_gb=settings.dram_w_per_gb)
    return EnergyTracker(setup.meters, sample_hz=settings.sample_hz), setup.notes


def skip_reason(store: Store, run: GridRun, done: dict[str, dict[str, Any]]) -> str | None:
    """Why a grid entry does not run now, or None: it completed with identical settings (`done`, from
    `store.completed_by_key()`), or another live supervisor is running it in this store."""
    key = run.settings_key()
    if key in done:
        return _reuse(store, done[key], run)
    other = store.running_elsewhere(key)
    if other is not None:
        return f"running now under supervisor pid {other}"
    return None


def _reuse(store: Store, previous: dict[str, Any], run: GridRun) -> str:
    """Keep a completed run; when only the accounting inputs changed, recompute its CO2e and cost."""
    accounting = run.accounting()
    stored = {k: previous.get(k) for k in accounting}
    if stored == accounting:
        return "already completed with identical settings"
    settings = json.loads(previous.get("settings") or "{}")
    store.update_run(previous["id"], settings={**settings, **accounting},
                     **accounting_columns(previous.get("energy_j"), accounting))
    return "already completed with identical settings; CO2e and cost recomputed for the new accounting inputs"


def run_row_values(run: GridRun) -> dict[str, Any]:
    """The columns a run's row starts with: what runs, its keys and its accounting inputs."""
    settings = run.settings
    return {"experiment": run.experiment, "model": run.model, "dataset": settings.dataset,
            "technique": run.technique, "settings": run.settings_dict(), "settings_key": run.settings_key(),
            "conditions_key": run.conditions_key(), "seed": run.seed, "repeat": run.repeat,
            "grid_position": run.position, "device": settings.device, "sampler_hz": settings.sample_hz,
            **accounting_columns(None, run.accounting())}


@contextlib.contextmanager
def signals_deferred(reraise: bool = False) -> Any:
    """Collect SIGINT and SIGTERM while the outcome is written; yields the list of those that arrived, for
    the caller to act on afterwards, or, with `reraise`, raises KeyboardInterrupt once the block is done if
    any arrived (main thread only; elsewhere signals never reach Python code anyway).

    The handlers are swapped, not the signals masked: the kernel may deliver a signal to any thread (the
    sampler, the store writer), and Python then runs the handler in the main thread regardless.
    """
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return
    previous = {number: signal.signal(number, lambda signum, frame: pending.append(signum))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield pending
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if reraise and pending:  # not reached when the block raised: its exception goes first
        raise KeyboardInterrupt


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
    """Executes grid runs one at a time; `cancel()` may be called from any thread.

    `recorder` decides where a run's rows go (default: `store`, through a writer thread); a Ray node's
    supervisor passes a MemoryRecorder and no store, and calls `execute` only. `idle_cache` holds the
    idle baselines measured once per grid (`idle_scope = "grid"`); a Ray worker shares one across its tasks.
    """

    def __init__(self, store: Store | None, on_event: Listener | None = None, *, launcher: Launcher | None = None,
                 recorder: RunRecorder | None = None,
                 idle_cache: dict[tuple[str, ...], tuple[dict[str, float], dict[str, Any]]] | None = None
                 ) -> None:
        self.store = store
        if recorder is None:
            if store is None:
                raise ValueError("a supervisor needs a store or a recorder")
            recorder = StoreRecorder(store)
        self.recorder = recorder
        self._tell = SafeListener(on_event)
        self.listener_errors = self._tell.errors
        self._child_lock = threading.Lock()
        self._cancel = threading.Event()
        self._cancel_one = threading.Event()  # cancel_current: this run only
        self._child: RunChild | None = None
        self._idle_cache = {} if idle_cache is None else idle_cache
        self.idle_load: dict[str, Any] | None = None  # what others used of the host while idle was measured
        # Children start from a fork server that imported torch once (GREENLAB_LAUNCHER=spawn: a fresh
        # interpreter each); a bad GREENLAB_LAUNCHER is the user's error, raised here.
        self.launcher = launcher or default_launcher(on_note=lambda text: self.on_event(SupervisorNote(text)))

    def close(self) -> None:
        """Stop the fork server (and any run it still has)."""
        self.launcher.close()

    def on_event(self, event: SupervisorEvent) -> None:
        """Tell the face; a face that fails (a closed pipe, a widget error) never costs a run its record."""
        self._tell(event)

    # -- control --------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the current run (stored as interrupted) and every run after it."""
        self._cancel.set()
        self._terminate_child()

    def cancel_current(self) -> None:
        """Stop only the run in progress (stored as interrupted); the grid goes on with the next run."""
        self._cancel_one.set()
        self._terminate_child()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _terminate_child(self) -> None:
        with self._child_lock:
            child = self._child
        if child is not None:
            child.terminate()

    # -- the grid -------------------------------------------------------------------------------------
    def run_grid(self, runs: list[GridRun], *, force: bool = False, wait: bool = True) -> list[RunStored]:
        """Run every entry not already completed with identical settings; returns the stored outcomes.

        The host's measurement lock is held for the whole grid: a second grid waits for it (telling
        WaitingForLock), or with `wait=False` raises LockBusy. A run that another live supervisor is
        running in this store is skipped. A failure that would fail every following run the same way
        (greenlab.core.gridstop) stops the grid with GridStopped, which lists the runs not started.
        """
        if self.store is None:
            raise ValueError("run_grid needs the supervisor's store")
        outcomes: list[RunStored] = []
        lock = HostLock(self.store.path)
        if not lock.acquire(wait=wait, on_wait=self.on_event, stop=self._cancel):
            return outcomes  # cancelled while waiting: nothing ran
        try:
            self.launcher.start(child_env())  # the fork server imports torch now, not inside the first run
            self._warm_up()
            done = {} if force else self.store.completed_by_key()  # read under the lock: the last grid's too
            stop_rule = StopRule()
            for index, run in enumerate(runs):
                if self.cancelled:
                    break
                reason = skip_reason(self.store, run, done)
                if reason is not None:
                    self.on_event(RunSkipped(index, run, reason))
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
                    if outcome.status == "completed":  # a later entry with the same key (another
                        done[run.settings_key()] = outcome.row  # experiment's baseline) is the same run
                if stop is not None and not self.cancelled:
                    self.on_event(GridStopped(stop, [r for r in runs[index + 1:] if r.settings_key() not in done]))
                    break
        finally:
            self.launcher.close()
            lock.release()
        return outcomes

    def _warm_up(self) -> None:
        """One unmeasured child before the grid (greenlab.core.warmup), so the first measured run does not
        pay for a cold machine; a warm-up that fails is told, never fatal. A cancel stops it."""
        if self.cancelled:
            return
        child = None
        try:
            with self._child_lock:
                child = self._child = RunChild(self.launcher, "{}", child_env(), module=WARMUP_MODULE)
            deadline = time.monotonic() + _WARMUP_TIMEOUT_S

            def in_time() -> None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the warm-up took over {_WARMUP_TIMEOUT_S:g} s")

            for _event in child.events(tick=in_time, tick_s=1.0):
                pass  # it writes none; the loop ends when the child does
            code = child.reap()
            if code != 0 and not self.cancelled:
                self.on_event(SupervisorNote(f"the warm-up run exited with code {code}; the first run may be "
                                             "slower than the rest"))
        except Exception as exc:  # noqa: BLE001 - a cold first run is a bias to tell, not a reason to stop
            self.on_event(SupervisorNote(f"no warm-up run ({type(exc).__name__}: {exc}); the first run may be "
                                         "slower than the rest"))
        finally:
            with self._child_lock:
                self._child = None
            if child is not None:
                child.terminate()
                child.close()

    # -- one run --------------------------------------------------------------------------------------
    def _idle_baseline(self, tracker: EnergyTracker, settings: RunSettings) -> dict[str, float]:
        if settings.idle_s <= 0:
            return {}
        key = tuple(sorted(f"{c}:{tracker.method(c)}" for c in tracker.components()))
        if settings.idle_scope == "grid" and key in self._idle_cache:
            watts, self.idle_load = self._idle_cache[key]  # the load that baseline was measured under
            return watts
        before = hostload.mark()
        watts = tracker.measure_idle(settings.idle_s, wait=self._cancel.wait)
        if self.cancelled:
            return {}
        # An estimate follows the run's own processes, so it is already net of idle: keep measured only.
        watts = {c: w for c, w in watts.items() if tracker.method(c) in MEASURED_METHODS}
        # Nothing of the run's is running yet: whatever the host did meanwhile, others did.
        self.idle_load = hostload.others(before, hostload.mark(), run_cpu_s=0.0)
        self._idle_cache[key] = (watts, self.idle_load)
        self.on_event(IdleMeasured(watts, settings.idle_s, self.idle_load))
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
                           "idle_host_load": self.idle_load if idle and self.idle_load else None,
                           "temperature_start_c": _temperatures(tracker)}
            run_id = self.recorder.start_run({**run_row_values(run), "meters": meters_info})
            return self._supervise(RunRecord(run_id, run, tracker.now(), idle, meters_info), tracker)
        finally:
            tracker.close()

    def _supervise(self, record: RunRecord, tracker: EnergyTracker) -> RunStored:
        self.on_event(RunBegan(record.run_id, record.run, tracker, record.meters_info.get("fallbacks", {})))
        tracker.drain_samples()  # samples before the run (idle, cooling) are not the run's
        cpu_before = tracker.sampler_cpu_s
        tracker.begin_window("run")
        record.t0 = tracker.now()
        record.host_start = hostload.mark()
        writer: RowWriter | None = None
        child: RunChild | None = None
        raised: BaseException | None = None
        try:
            writer = self.recorder.writer()
            with self._child_lock:  # a cancel from another thread now sees the child, or sees none at all
                child = self._child = RunChild(self.launcher, json.dumps(record.run.to_json()), child_env())
            record.meters_info["launcher"] = child.launcher_kind
            record.child_pid = child.pid
            tracker.track_processes([child.pid])
            if self.cancelled or self._cancel_one.is_set():  # cancelled before the child started
                child.terminate()
            for event in child.events(tick=lambda: self._flush_samples(record, tracker, writer),
                                      tick_s=_SAMPLE_FLUSH_S):
                self._handle(record, event, tracker, writer)
        except BaseException as exc:  # noqa: BLE001 - Ctrl-C, SIGTERM, a launch or store error: record, re-raise
            raised = exc
            if isinstance(exc, KeyboardInterrupt):
                self._cancel.set()
            else:
                record.supervisor_error = record.supervisor_error or f"{type(exc).__name__}: {exc}"
        # Stopping the child and writing the outcome must not be cut short by a second Ctrl-C.
        with signals_deferred() as pending:
            if child is not None:
                if raised is not None:
                    child.terminate()
                child.close()
            with self._child_lock:
                self._child = None
            try:
                stored = self._finish(record, tracker, child, writer, cpu_before)
            finally:
                if writer is not None:
                    writer.close()
                self._cancel_one.clear()  # "this run only" is spent: the next run starts clean
        if pending and raised is None:  # a Ctrl-C while the outcome was written stops the grid now
            self._cancel.set()
            raised = KeyboardInterrupt()
        if child is None and isinstance(raised, OSError):
            raised = None  # it could not start (fork, pipes, files): stored as failed; the grid's rules decide
        if raised is not None:
            raise raised
        return stored

    def _outcome(self, record: RunRecord, return_code: int | None, child: RunChild | None) -> tuple[str, str | None]:
        """The run's status and error from what the child said, how it ended and what the user did."""
        if child is None:
            return "failed", f"the run could not start: {record.supervisor_error}"
        if record.child_status == "completed" and return_code == 0:
            return "completed", None  # finished before a late cancel arrived: it counts
        if self.cancelled:
            return "interrupted", "cancelled by the user"
        if self._cancel_one.is_set():
            return "interrupted", "cancelled by the user (this run only; the grid went on)"
        if record.supervisor_error is not None:
            return "failed", f"the supervising process failed: {record.supervisor_error}"
        if record.child_status == "failed":
            return "failed", record.child_error
        reason = f"killed by signal {-return_code}" if return_code < 0 else f"exited with code {return_code}"
        if return_code == -signal.SIGKILL:
            reason += " (out of memory?)"
        if record.meters_info.get("launcher") == "forkserver" and self.launcher.notes:
            reason += f"; the launcher said: {self.launcher.notes[-1]}"  # e.g. the fork server died
        error = f"the training process {reason} without reporting an error"
        tail = child.output_tail() if child is not None else ""
        return "failed", error + (f"; its last output:\n{tail}" if tail else "")

    def _finish(self, record: RunRecord, tracker: EnergyTracker, child: RunChild | None, writer: RowWriter | None,
                cpu_before: float) -> RunStored:
        """Close the run's window and store its outcome, whatever happened to the child (even if none started)."""
        run, run_id = record.run, record.run_id
        return_code = child.reap() if child is not None else None
        if record.device is None:  # the child never said where it trained: no GPU did this run's work
            record.gpus_unused = {c for c in tracker.components() if c.startswith("gpu")}
        window = tracker.end_window("run").without(record.gpus_unused)
        load = hostload.others(record.host_start, hostload.mark(), record.child_cpu_s) \
            if record.host_start is not None else None
        tracker.discard_windows()  # a phase cut short by a failure has no end
        try:
            if writer is not None:
                self._flush_samples(record, tracker, writer)
                writer.flush()
        except Exception as exc:  # noqa: BLE001 - the outcome below is still written, on this thread
            record.supervisor_error = record.supervisor_error or f"{type(exc).__name__}: {exc}"
        status, error = self._outcome(record, return_code, child)
        columns, component_rows, energy_flags = energy_columns(window, record.idle, record.phase_methods)
        idle = {c: w for c, w in record.idle.items() if c not in record.gpus_unused}
        meters = {**record.meters_info, "idle_w": idle, "temperature_end_c": _temperatures(tracker),
                  "components": {c: facts for c, facts in record.meters_info["components"].items()
                                 if c not in record.gpus_unused}}
        if load is not None:
            meters["host_load"] = load
            if hostload.busy(load):
                record.flags.append(hostload.FLAG_HOST_BUSY)
        if record.gpus_unused:
            meters["gpus_not_used"] = {"components": sorted(record.gpus_unused),
                                       "why": f"the run trained on {record.device or 'another device'}"}
        values = {
            "status": status, "error": error, "finished_at": now_iso(), "duration_s": window.seconds,
            "train_s": record.train_s, "energy_training_j": record.training_j,
            "val_accuracy": record.final.get("val_accuracy"), "val_f1": record.final.get("val_f1"),
            **columns, **accounting_columns(columns["energy_j"], run.accounting()),
            "sampler_cpu_s": round(tracker.sampler_cpu_s - cpu_before, 4),
            "samples_dropped": tracker.samples_dropped,
            "flags": sorted({*energy_flags, *record.flags}) + tracker.errors
            + [f"display: {e}" for e in self.listener_errors],
            "meters": meters,
        }
        self.recorder.update_run(run_id, **values)
        self.recorder.set_components(run_id, component_rows)
        self.recorder.delete_samples(run_id, record.gpus_unused)
        stored = RunStored(run_id, run, status, error, self.recorder.run(run_id) or {})
        self.on_event(stored)
        return stored

    def _flush_samples(self, record: RunRecord, tracker: EnergyTracker, writer: RowWriter) -> None:
        rows = [(t - record.t0, c, w) for t, c, w in tracker.drain_samples()
                if t >= record.t0 and c not in record.gpus_unused]
        if rows:
            writer.submit("add_samples", record.run_id, rows)

    def _handle(self, record: RunRecord, event: events.Event, tracker: EnergyTracker, writer: RowWriter) -> None:
        """What the supervisor does with each child event: measure, record, and pass it on to the faces."""
        run_id = record.run_id
        match event:
            case events.RunStarted():
                record.device = event.device
                gpu_facts = {c: facts for c, facts in record.meters_info["components"].items()
                             if c.startswith("gpu")}
                used, flags = gpus_used(event.device, gpu_facts, cuda_uuid=event.cuda_uuid,
                                        pci_bus_id=event.pci_bus_id, cuda_index=event.cuda_index)
                record.gpus_unused = set(gpu_facts) - used
                record.flags.extend(flags)
                self.on_event(RunMetered(run_id, [c for c in tracker.components() if c not in record.gpus_unused]))
                writer.submit("update_run", run_id, device=event.device)
            case events.ModelPrepared(after=after, before=before):
                stats = ("params_total", "params_nonzero", "model_bytes", "flops_step")
                values = {**{k: after.get(k) for k in stats}, **{f"{k}_before": before.get(k) for k in stats},
                          "compression": event.report, "warnings": event.warnings,
                          **{k: v for k, v in event.columns.items() if k in RUN_COLUMNS}}
                writer.submit("update_run", run_id, **values)
                if event.capacity_curve:
                    writer.submit("set_capacity", run_id, [(int(b), float(a)) for b, a in event.capacity_curve])
            case events.PhaseBegan(epoch=epoch, phase=phase, t_mono=at):
                tracker.begin_window(f"{epoch}:{phase}", at=at)
            case events.PhaseEnded(epoch=epoch, phase=phase, t_mono=at):
                window = tracker.end_window(f"{epoch}:{phase}", at=at)
                record.add_phase(epoch, phase, window.without(record.gpus_unused))
            case events.EpochFinished():
                writer.submit("add_epoch", {
                    "run_id": run_id, "epoch": event.epoch, "train_loss": event.train_loss,
                    "val_accuracy": event.val_accuracy, "val_f1": event.val_f1, "val_loss": event.val_loss,
                    "duration_s": event.duration_s, "train_s": event.train_s, "eval_s": event.eval_s,
                    **record.epoch_energy(event.epoch)})
            case events.ProcessEnding(cpu_s=cpu_s) if record.child_pid is not None:
                tracker.process_ended(record.child_pid, cpu_s)
                record.child_cpu_s = cpu_s + event.children_cpu_s
            case events.RunFinished():
                record.child_status, record.train_s, record.final = "completed", event.train_s, asdict(event)
            case events.RunFailed():
                # A user's mistake is fully told by its message; an unexpected failure keeps its traceback,
                # after a first line that faces show on their own.
                error = event.error if event.user_error else f"{event.kind}: {event.error}"
                if event.traceback and not event.user_error:
                    error += "\n\n" + event.traceback.rstrip()
                record.child_status, record.child_error = "failed", error
        self.on_event(ChildEvent(run_id, event))
