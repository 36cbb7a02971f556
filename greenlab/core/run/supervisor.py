"""One run's supervisor: starts the run's child process, measures it, and hands its record to a sink.

The child (greenlab.core.run.child_main, started and read through greenlab.core.run.child) trains and
streams events; this side owns the child's lifecycle, the meters (an EnergyTracker sampling in a thread),
the idle baseline and the energy windows opened and closed on the child's phase events. What the windows
measured becomes the run's RunRecord through the pure functions of greenlab.core.run.measurement; a sink
(greenlab.core.run.sinks) decides where the record goes: the store, for a local grid (with its epochs and
samples written meanwhile through a writer thread), or memory on a Ray node, whose driver's sink stores it. Both grid
drivers (greenlab.core.grid.local, greenlab.core.grid.ray_task on each node) run their runs through this
one object. A child that raises, runs out of memory or is killed leaves a `failed` run with its error and
partial data; a cancel (greenlab.core.run.cancel) or Ctrl-C leaves an `interrupted` one. Listeners hear
typed run events (greenlab.core.run.run_events) and never see a process or a SQL statement.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil

from greenlab.core.measure import hostload
from greenlab.core.measure.detect import build_meters
from greenlab.core.measure.meter import MEASURED_METHODS
from greenlab.core.measure.nvml import NvmlMeter
from greenlab.core.measure.tracker import EnergyTracker
from greenlab.core.plan.config import GridRun, RunSettings
from greenlab.core.run import pauses
from greenlab.core.run.cancel import Cancellable, CancelToken, SignalInterrupt, interrupt_reason
from greenlab.core.run.child import RunChild
from greenlab.core.run.launcher import Launcher, default_launcher
from greenlab.core.run.measurement import (
    RunEnd,
    RunMeasurement,
    accounting_columns,
    run_record,
    why_diverged,
)
from greenlab.core.run.run_events import (
    ChildEvent,
    CoolingDown,
    IdleMeasured,
    Listener,
    Notice,
    RunBegan,
    RunEvent,
    RunMetered,
    RunStored,
    SafeListener,
)
from greenlab.core.run.sharing import GpuWatch, describe, own_pids, supervisor_pids
from greenlab.core.run.sinks import RecordSink, StoreSink, WriteQueue
from greenlab.core.store.database import Store, now_iso
from greenlab.core.store.journal import RecordKept
from greenlab.core.store.record import SampleRecord
from greenlab.core.store.row_writes import AddEpoch, AddSamples, SetCapacity, UpdateRun
from greenlab.core.train import child_events

_SAMPLE_FLUSH_S = 1.0
_WARMUP_TIMEOUT_S = 120.0
WARMUP_MODULE = "greenlab.core.run.warmup_main"


def child_env() -> dict[str, str]:
    """The environment a run's child starts in (a fork server started with it serves every run)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def gpus_for(device: str) -> list[int] | None:
    """GPUs to meter for a run on `device`: None for none, [] for every visible one.

    A run on "auto", "cuda" or "cuda:N" meters every visible GPU until its child reports the board it
    trained on (by UUID): only that board's energy is the run's, and a run that fell back to the CPU keeps
    no GPU energy at all. CUDA's numbering need not be NVML's, so no index is trusted.
    """
    if device in ("cpu", "mps"):
        return None
    return []


def make_tracker(settings: RunSettings) -> tuple[EnergyTracker, dict[str, str]]:
    setup = build_meters(
        use_gpus=gpus_for(settings.device),
        cpu_tdp_w=settings.cpu_tdp_w,
        cpu_w_per_thread=settings.cpu_w_per_thread,
        dram_w_per_gb=settings.dram_w_per_gb,
    )
    return EnergyTracker(setup.meters, sample_hz=settings.sample_hz), setup.notes


def run_row_values(run: GridRun) -> dict[str, Any]:
    """The columns a run's row starts with: what runs, its keys and its accounting inputs."""
    settings = run.settings
    return {
        "experiment": run.experiment,
        "model": run.model,
        "dataset": settings.dataset,
        "technique": run.technique,
        "settings": run.settings_dict(),
        "settings_key": run.settings_key(),
        "conditions_key": run.conditions_key(),
        "seed": run.seed,
        "repeat": run.repeat,
        "grid_position": run.position,
        "device": settings.device,
        "sampler_hz": settings.sample_hz,
        **accounting_columns(None, run.accounting()),
    }


@contextlib.contextmanager
def signals_deferred(reraise: bool = False, on_signal: Callable[[int], None] | None = None) -> Iterator[list[int]]:
    """Collect SIGINT and SIGTERM while the outcome is written; yields the list of those that arrived, for
    the caller to act on afterwards, or, with `reraise`, raises KeyboardInterrupt (SignalInterrupt for a
    SIGTERM) once the block is done if any arrived (main thread only; elsewhere signals never reach Python code anyway).

    The handlers are swapped, not the signals masked: the kernel may deliver a signal to any thread (the
    sampler, the store writer), and Python then runs the handler in the main thread regardless.
    `on_signal(n)` hears each one as it comes, n counting them (a wait in the block may be stopped by it).
    """
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return

    def defer(signum: int, frame: Any) -> None:
        pending.append(signum)
        if on_signal is not None:
            try:
                on_signal(len(pending))
            except Exception:  # noqa: BLE001 - a signal handler must not raise into the store's write
                pass

    previous = {number: signal.signal(number, defer) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield pending
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if reraise and pending:  # not reached when the block raised: its exception goes first
        if pending[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise SignalInterrupt(signal.Signals(pending[0]).name)  # the row names the signal, deferred or not


def _gpu_meter(tracker: EnergyTracker) -> NvmlMeter | None:
    """The tracker's GPU meter (it lists the processes on its boards), or None."""
    return next((m for m in tracker.meters if isinstance(m, NvmlMeter)), None)


def _gpu_components(tracker: EnergyTracker) -> list[str]:
    return [c for c in tracker.components() if c.startswith("gpu")]


def _stopped(pid: int | None) -> bool:
    """The process is stopped (SIGSTOP, Ctrl-Z, a debugger's trace stop); False when it is gone or unknown."""
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False


def _temperatures(tracker: EnergyTracker) -> dict[str, float]:
    """GPU temperatures now (a hot GPU draws more; start and end are stored with the run)."""
    temperatures: dict[str, float] = {}
    for meter in tracker.meters:
        if hasattr(meter, "temperatures"):
            try:
                temperatures.update(meter.temperatures())
            except Exception:  # noqa: BLE001 - a temperature is context, never a reason to lose the run's record
                continue
    return temperatures


class RunSupervisor(Cancellable):
    """Measures one grid entry at a time; `cancel()` may be called from any thread.

    `sink` decides where a run's record goes (default: `store`, its writes meanwhile through a writer thread); a Ray node's
    supervisor passes a MemorySink and no store. `idle_cache` holds the idle baselines measured once per
    grid (`idle_scope = "grid"`); a Ray worker shares one across its tasks. `token` is the grid's cancel
    (greenlab.core.run.cancel), shared with its driver.
    """

    def __init__(
        self,
        store: Store | None,
        on_event: Listener | None = None,
        *,
        launcher: Launcher | None = None,
        sink: RecordSink | None = None,
        idle_cache: dict[tuple[str, ...], tuple[dict[str, float], dict[str, Any]]] | None = None,
        token: CancelToken | None = None,
    ) -> None:
        self.store = store
        self._tell = SafeListener(on_event)
        self.listener_errors = self._tell.errors
        if sink is None:
            if store is None:
                raise ValueError("a supervisor needs a store or a sink")
            sink = StoreSink(store, on_busy=lambda text: self.on_event(Notice(text)))
        self.sink = sink
        self.token = token or CancelToken()
        self._child_lock = threading.Lock()
        self._child: RunChild | None = None
        self.token.on_cancel(self._terminate_child)
        self._idle_cache = {} if idle_cache is None else idle_cache
        self.idle_load: dict[str, Any] | None = None  # what others used of the host while idle was measured
        self.idle_refused: dict[str, str] = {}  # GPU components whose idle baseline was refused, and why
        # Children start from a fork server that imported torch once (GREENLAB_LAUNCHER=spawn: a fresh
        # interpreter each); a bad GREENLAB_LAUNCHER is the user's error, raised here.
        self.launcher = launcher or default_launcher(on_note=lambda text: self.on_event(Notice(text)))

    def close(self) -> None:
        """Stop the fork server (and any run it still has)."""
        self.launcher.close()

    def on_event(self, event: RunEvent) -> None:
        """Tell the face; a face that fails (a closed pipe, a widget error) never costs a run its record."""
        self._tell(event)

    # -- control --------------------------------------------------------------------------------------
    def _terminate_child(self) -> None:
        with self._child_lock:
            child = self._child
        if child is not None:
            child.terminate()

    def warm_up(self) -> None:
        """One unmeasured child before the grid (greenlab.core.run.warmup_main), so the first measured run does not
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
                self.on_event(
                    Notice(f"the warm-up run exited with code {code}; the first run may be slower than the rest")
                )
        except Exception as exc:  # noqa: BLE001 - a cold first run is a bias to tell, not a reason to stop
            self.on_event(
                Notice(f"no warm-up run ({type(exc).__name__}: {exc}); the first run may be slower than the rest")
            )
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
        self.idle_refused = {}
        if settings.idle_scope == "grid" and key in self._idle_cache:
            watts, self.idle_load = self._idle_cache[key]  # the load that baseline was measured under
            return watts
        before = hostload.mark()
        watch = GpuWatch()
        gpus, gpu_meter = _gpu_components(tracker), _gpu_meter(tracker)
        ours = own_pids(supervisor_pids(None, getattr(self.launcher, "server_pid", None)))

        def look() -> None:
            watch.observe(gpu_meter, ours, gpus, computing=False)

        def wait(seconds: float) -> None:
            """The idle window, with a look at the GPUs at its start, about every second and at its end:
            an idle baseline of a board someone else computes on is no idle baseline."""
            end = time.monotonic() + seconds
            look()
            while (left := end - time.monotonic()) > 0 and not self.token.wait(min(1.0, left)):
                look()
            look()

        watts = tracker.measure_idle(settings.idle_s, wait=wait if gpus and gpu_meter is not None else self.token.wait)
        if self.cancelled:
            return {}
        # An estimate follows the run's own processes, so it is already net of idle: keep measured only.
        watts = {c: w for c, w in watts.items() if tracker.method(c) in MEASURED_METHODS}
        self.idle_refused = watch.busy_at_idle(gpus)
        for component, why in self.idle_refused.items():
            watts.pop(component, None)
            self.on_event(Notice(f"idle baseline of {component}: {why}"))
        # Nothing of the run's is running yet: whatever the host did meanwhile, others did.
        self.idle_load = hostload.others(before, hostload.mark(), run_cpu_s=0.0)
        if not self.idle_refused:  # a refused baseline is measured again before the next run
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
            self.token.wait(2.0)

    def execute(self, run: GridRun, *, retry_of: RunStored | None = None) -> RunStored | None:
        """Run one grid entry; None when cancelled before it began (nothing is stored then).

        `retry_of`: the stored outcome of an attempt whose executor died under it (greenlab.core.grid.driver's
        retry rule): this attempt reuses its row, so the run is stored once, and keeps why the first died."""
        settings = run.settings
        tracker, notes = make_tracker(settings)
        try:
            tracker.start()
            self._cool_down(tracker, settings)
            idle = self._idle_baseline(tracker, settings)
            if self.cancelled:
                return None
            meters_info = {
                "components": {
                    c: {"method": tracker.method(c), **tracker.info().get(c, {})} for c in tracker.components()
                },
                "fallbacks": notes,
                "idle_w": idle,
                "idle_s": settings.idle_s if idle else 0,
                "idle_host_load": self.idle_load if idle and self.idle_load else None,
                "idle_refused": self.idle_refused or None,
                "temperature_start_c": _temperatures(tracker),
            }
            start = {**run_row_values(run), "meters": meters_info}
            if retry_of is not None:
                meters_info["earlier_attempts"] = [{"attempt": 1, "error": retry_of.error}]
                start["attempts"] = 2
                run_id = self.sink.restart_run(retry_of.run_id, start)
            else:
                run_id = self.sink.start_run(start)
            measured = RunMeasurement(run_id, run, tracker.now(), idle, meters_info, start=copy.deepcopy(start))
            return self._supervise(measured, tracker)
        finally:
            tracker.close()

    def _supervise(self, measured: RunMeasurement, tracker: EnergyTracker) -> RunStored:
        self.on_event(RunBegan(measured.run_id, measured.run, tracker, measured.meters_info.get("fallbacks", {})))
        tracker.drain_samples()  # samples before the run (idle, cooling) are not the run's
        cpu_before = tracker.sampler_cpu_s
        tracker.begin_window("run")
        measured.t0 = tracker.now()
        measured.host_start = hostload.mark()
        writer: WriteQueue | None = None
        child: RunChild | None = None
        raised: BaseException | None = None
        try:
            writer = self.sink.writer()
            with self._child_lock:  # a cancel from another thread now sees the child, or sees none at all
                child = self._child = RunChild(self.launcher, json.dumps(measured.run.to_json()), child_env())
            measured.meters_info["launcher"] = child.launcher_kind
            measured.child_pid = child.pid
            measured.server_pid = getattr(self.launcher, "server_pid", None)
            tracker.track_processes([child.pid])
            if self.cancelled or self.token.current_cancelled:  # cancelled before the child started
                child.terminate()
            watch = measured.gpu_watch = GpuWatch()

            def tick() -> None:
                self._tick(measured, tracker, writer)
                self._watch_gpus(measured, tracker, watch)

            for event in child.events(tick=tick, tick_s=_SAMPLE_FLUSH_S):
                self._handle(measured, event, tracker, writer)
        except BaseException as exc:  # noqa: BLE001 - Ctrl-C, SIGTERM, a launch or store error: record, re-raise
            raised = exc
            if isinstance(exc, KeyboardInterrupt):
                self.token.cancel(interrupt_reason(exc))
            else:
                measured.supervisor_error = measured.supervisor_error or f"{type(exc).__name__}: {exc}"
        # Stopping the child and writing the outcome must not be cut short by a second Ctrl-C; but a store
        # locked by another process must not hold it for the whole busy budget either (_storing_signal).
        cancelled_before = self.cancelled
        with signals_deferred(on_signal=lambda count: self._storing_signal(count + cancelled_before)) as pending:
            if child is not None:
                if raised is not None:
                    child.terminate()
                child.close()
            with self._child_lock:
                self._child = None
            try:
                stored = self._finish(measured, tracker, child, writer, cpu_before)
            finally:
                if writer is not None:
                    writer.close()
                self.token.clear_current()  # "this run only" is spent: the next run starts clean
        if pending and raised is None:  # a Ctrl-C while the outcome was written stops the grid now
            self.token.cancel()
            raised = KeyboardInterrupt()
        if child is None and isinstance(raised, OSError):
            raised = None  # it could not start (fork, pipes, files): stored as failed; the grid's rules decide
        if raised is not None:
            raise raised
        return stored

    def _storing_signal(self, count: int) -> None:
        """A Ctrl-C (or SIGTERM) while the run's end is stored; `count` includes one that already stopped the
        run. The write may wait minutes for another process's lock: the first stop says how to give up on
        it, the second gives up, and the run's record then waits in the pending folder beside the store."""
        if count >= 2:
            self.sink.stop_waiting()
            return
        self.on_event(
            Notice(
                "stopping: the run's end is being stored first; if another process holds the store's lock, "
                "press Ctrl-C again to stop waiting (the record is then kept in the pending folder beside it)"
            )
        )

    def _executor_died(self, measured: RunMeasurement, child: RunChild | None) -> bool:
        """The fork server that forked this run's child died while it ran: the run failed for no fault of
        its own, and the driver's retry rule may run it again (spawned)."""
        return (
            child is not None
            and measured.child_status is None
            and measured.meters_info.get("launcher") == "forkserver"
            and measured.server_pid is not None
            and getattr(self.launcher, "server_pid", None) != measured.server_pid
        )

    def _outcome(
        self, measured: RunMeasurement, return_code: int | None, child: RunChild | None
    ) -> tuple[str, str | None]:
        """The run's status and error from what the child said, how it ended and what the user did."""
        if child is None:
            return "failed", f"the run could not start: {measured.supervisor_error}"
        if measured.child_status == "completed" and return_code == 0:
            return "completed", None  # finished before a late cancel arrived: it counts
        if self.cancelled:
            return "interrupted", self.token.why
        if self.token.current_cancelled:
            return "interrupted", "cancelled by the user (this run only; the grid went on)"
        if measured.supervisor_error is not None:
            return "failed", f"the supervising process failed: {measured.supervisor_error}"
        if measured.child_status == "failed":
            return "failed", measured.child_error
        code = return_code if return_code is not None else 0
        reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if return_code == -signal.SIGKILL:
            reason += " (out of memory?)"
        if measured.meters_info.get("launcher") == "forkserver" and self.launcher.notes:
            reason += f"; the launcher said: {self.launcher.notes[-1]}"  # e.g. the fork server died
        error = f"the training process {reason} without reporting an error"
        tail = child.output_tail() if child is not None else ""
        return "failed", error + (f"; its last output:\n{tail}" if tail else "")

    def _finish(
        self,
        measured: RunMeasurement,
        tracker: EnergyTracker,
        child: RunChild | None,
        writer: WriteQueue | None,
        cpu_before: float,
    ) -> RunStored:
        """Close the run's window and store its record, whatever happened to the child (even if none started)."""
        run_id = measured.run_id
        end = self._end(measured, tracker, child, cpu_before)
        if writer is not None:
            self._flush_samples(measured, tracker, writer)  # queued: a store that cannot take it keeps it aside
        record = run_record(measured, end)
        kept: RecordKept | None = None
        try:
            self.sink.store_record(run_id, record)
        except RecordKept as exc:  # the store could not take it: the record waits beside the store
            kept = exc
        executor_died = end.status == "failed" and self._executor_died(measured, child)
        row = {"id": run_id, **record.final_values()} if kept is not None else self.sink.run(run_id) or {}
        stored = RunStored(
            run_id, measured.run, end.status, end.error, row, executor_died, kept.path if kept is not None else None
        )
        if end.diverged:
            self.on_event(Notice(f"run {run_id} diverged: {end.diverged} (flag diverged)"))
        if end.paused:
            self.on_event(
                Notice(
                    f"run {run_id} was paused: {pauses.describe(end.paused)}; its energy and time count the pause "
                    "(flag paused), so the verdicts leave them out"
                )
            )
        self.on_event(stored)
        if kept is not None:
            raise kept  # the store is unwritable: the grid stops, naming where this record waits
        return stored

    def _end(
        self, measured: RunMeasurement, tracker: EnergyTracker, child: RunChild | None, cpu_before: float
    ) -> RunEnd:
        """The run's end as the meters, the child and the host saw it: its window closed, its outcome decided."""
        return_code = child.reap() if child is not None else None
        if measured.device is None:
            measured.never_placed(_gpu_components(tracker))
        window = measured.view(tracker.end_window("run"))
        load = (
            hostload.others(measured.host_start, hostload.mark(), measured.child_cpu_s)
            if measured.host_start is not None
            else None
        )
        tracker.discard_windows()  # a phase cut short by a failure has no end
        status, error = self._outcome(measured, return_code, child)
        measured.pauses.finish(time.monotonic())
        boards = [c for c in _gpu_components(tracker) if c not in measured.gpus_unused]
        watch = measured.gpu_watch
        return RunEnd(
            status,
            error,
            now_iso(),
            window,
            temperature_end_c=_temperatures(tracker),
            sampler_cpu_s=tracker.sampler_cpu_s - cpu_before,
            samples_dropped=tracker.samples_dropped,
            errors=(*tracker.errors, *(f"display: {e}" for e in self.listener_errors)),
            host_load=load,
            paused=measured.pauses.verdict(),
            diverged=why_diverged(measured) if status == "completed" else None,
            gpu_utilisation=watch.utilisation_summary(boards) if watch is not None else {},
            gpu_processes=watch.shared(boards) if watch is not None else {},
        )

    def _watch_gpus(self, measured: RunMeasurement, tracker: EnergyTracker, watch: GpuWatch) -> None:
        """Look at the run's board (a CUDA board, or a Grace Hopper module) for other processes, once the
        child said where it trains."""
        if measured.device is None:
            return
        boards = [c for c in _gpu_components(tracker) if c not in measured.gpus_unused]
        gpu_meter = _gpu_meter(tracker)
        if not boards or gpu_meter is None:
            return
        ours = own_pids(supervisor_pids(measured.child_pid, measured.server_pid))
        for component in watch.observe(gpu_meter, ours, boards, computing=True):
            seen = watch.shared([component])[component]["processes"]
            self.on_event(
                Notice(
                    f"run {measured.run_id}: another process computes on {component} ({describe(seen)}); "
                    "its work is counted in the run's GPU energy (flag gpu_shared)"
                )
            )

    def _tick(self, measured: RunMeasurement, tracker: EnergyTracker, writer: WriteQueue) -> None:
        """About once a second while the child runs: its samples go to the writer, and whether its process is
        stopped (SIGSTOP, Ctrl-Z, a debugger) is noted (greenlab.core.run.pauses)."""
        self._flush_samples(measured, tracker, writer)
        measured.pauses.state(time.monotonic(), _stopped(measured.child_pid))

    def _flush_samples(self, measured: RunMeasurement, tracker: EnergyTracker, writer: WriteQueue) -> None:
        rows = [
            SampleRecord(t - measured.t0, c, w)
            for t, c, w in tracker.drain_samples()
            if t >= measured.t0 and c not in measured.gpus_unused
        ]
        if rows:
            measured.samples.extend(rows)
            writer.submit(AddSamples(measured.run_id, list(rows)))

    def _handle(
        self, measured: RunMeasurement, event: child_events.Event, tracker: EnergyTracker, writer: WriteQueue
    ) -> None:
        """What the supervisor does with each child event: measure, record, and pass it on to the faces."""
        run_id = measured.run_id
        measured.pauses.event(time.monotonic(), isinstance(event, child_events.BatchFinished))
        match event:
            case child_events.RunStarted():
                measured.started(event)
                if measured.gpu_watch is not None:
                    self._watch_gpus(measured, tracker, measured.gpu_watch)
                self.on_event(RunMetered(run_id, [c for c in tracker.components() if c not in measured.gpus_unused]))
                writer.submit(UpdateRun(run_id, {"device": event.device}))
            case child_events.ModelPrepared():
                writer.submit(UpdateRun(run_id, measured.prepared(event)))
                if measured.capacity:
                    writer.submit(SetCapacity(run_id, measured.capacity))
            case child_events.PhaseBegan(epoch=epoch, phase=phase, t_mono=at):
                tracker.begin_window(f"{epoch}:{phase}", at=at)
            case child_events.PhaseEnded(epoch=epoch, phase=phase, t_mono=at):
                window = tracker.end_window(f"{epoch}:{phase}", at=at)
                measured.add_phase(epoch, phase, measured.view(window))
            case child_events.EpochFinished():
                writer.submit(AddEpoch(measured.epoch_finished(event).row(run_id)))
            case child_events.ProcessEnding(cpu_s=cpu_s) if measured.child_pid is not None:
                tracker.process_ended(measured.child_pid, cpu_s)
                measured.child_cpu_s = cpu_s + event.children_cpu_s
            case child_events.RunFinished():
                measured.completed(event)
            case child_events.RunFailed():
                measured.failed(event)
        self.on_event(ChildEvent(run_id, event))
