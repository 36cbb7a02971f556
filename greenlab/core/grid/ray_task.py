"""A grid run on a Ray node: the task that runs GreenLab's own supervisor and child there, and the
messages it sends the driver (greenlab.core.grid.ray_driver).

The task measures its run exactly as a local grid does, on the node it was placed on: the same child
process (from a fork server this Ray worker keeps for its later tasks), meters, idle baseline and
cool-down. Only the record goes elsewhere: a MemorySink keeps the run's RunRecord, and the task returns
it to the driver, whose store sink alone writes the store. Live events go back meanwhile through the
driver's inbox (a Ray actor), in batches, each message tagged with the run's place in the grid and the
attempt.

A CUDA run gets one whole GPU from Ray, which names it in CUDA_VISIBLE_DEVICES by index; the task pins
that index to the board's UUID through NVML (whose order, PCI bus order, is the one Ray counts in), so
the child and the meters name one board, which the child then confirms by UUID (greenlab.core.run.measurement).

A cancelled grid stops its running tasks through the inbox: each task asks it about every 0.2 s, and on
a cancel stops its run with the supervisor's own cancel, so the run ends `interrupted` and the task
returns its partial record as usual. (`ray.cancel` on a running task would make its result a
TaskCancelledError, losing that record; the driver keeps it for tasks not yet running.) An interrupt of
the task's main thread (`ray.cancel`, or a terminal's Ctrl-C reaching the worker) is turned into the
same cancel.
Ray is imported inside the functions that run under it only: importing this module does not load it.
"""

from __future__ import annotations

import atexit
import copy
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from greenlab.core.measure.host_lock import HostLock, WaitingForLock
from greenlab.core.measure.nvml import parse_visible_devices
from greenlab.core.plan.config import GridRun
from greenlab.core.run.cancel import CANCELLED_BY_USER
from greenlab.core.run.launcher import Launcher, default_launcher
from greenlab.core.run.run_events import (
    ChildEvent,
    CoolingDown,
    IdleMeasured,
    Notice,
    RunBegan,
    RunEvent,
    RunMetered,
)
from greenlab.core.run.sinks import MemorySink
from greenlab.core.run.supervisor import RunSupervisor, child_env
from greenlab.core.store.database import host_facts
from greenlab.core.store.record import RunRecord
from greenlab.core.store.row_writes import AddSamples, RowWrite

FORWARD_INTERVAL_S = 0.2  # how often a node sends its batch of live messages to the driver


# -- what the driver asks, and what a node answers -----------------------------------------------------
@dataclass(frozen=True)
class TaskRequest:
    """One attempt at one grid run. `lock_store` names the grid for the node's shared host lock (None: the
    driver holds this host's lock itself, every node being this host)."""

    tag: int  # the run's index in the driver's grid
    attempt: int  # 0, or 1 for the retry after a dead worker or node
    run: dict[str, Any]  # GridRun.to_json()
    lock_store: str | None = None


@dataclass(frozen=True)
class TaskStarted:
    tag: int
    attempt: int
    node_id: str
    hostname: str
    worker_pid: int
    gpu: dict[str, Any] = field(default_factory=dict)  # Ray's GPU ids, CUDA_VISIBLE_DEVICES, the UUIDs pinned
    omp_num_threads: str | None = None  # Ray sets it to the task's CPUs; the child's torch inherits it


@dataclass(frozen=True)
class RowStarted:
    """The run's row may be written now: the columns it starts with (the driver adds where it runs)."""

    tag: int
    attempt: int
    values: dict[str, Any]


@dataclass(frozen=True)
class RunBeganOnNode:
    """RunBegan without its tracker, which stays on the node: the components' methods instead."""

    tag: int
    attempt: int
    methods: dict[str, str]
    fallbacks: dict[str, str]


@dataclass(frozen=True)
class SamplesTaken:
    tag: int
    attempt: int
    rows: list[tuple[float, str, float]]  # (seconds since the run's start, component, watts)


@dataclass(frozen=True)
class Relayed:
    """A supervisor event as is: a child's event (its run id is the node's stand-in), idle, cooling, notes."""

    tag: int
    attempt: int
    event: RunEvent | WaitingForLock


Message = TaskStarted | RowStarted | RunBeganOnNode | SamplesTaken | Relayed


@dataclass
class TaskResult:
    """What a task returns: the run's record when its row was started, and when it measured on the node's
    monotonic clock (from before its idle baseline to its end), by which the driver finds overlapping runs."""

    tag: int
    attempt: int
    node_id: str
    record: RunRecord | None = None
    span: tuple[float, float] | None = None
    hostname: str = ""
    worker_pid: int = 0

    @property
    def began(self) -> bool:
        return self.record is not None


def _reason(reason: str) -> str | None:
    """The token's reason: None for the user's cancel (the supervisor words that one), else the signal's."""
    return None if reason == CANCELLED_BY_USER else reason


# -- the driver's inbox -----------------------------------------------------------------------------------
class Inbox:
    """The driver's mailbox, made a Ray actor by the driver: nodes put batches (answering whether the grid
    is cancelled), the driver takes them all."""

    def __init__(self) -> None:
        self._messages: list[Message] = []
        self._cancelled: str | None = None  # why: the user, or a signal's name
        self._stopped = False
        self._started: set[int] = set()

    def put(self, messages: list[Message]) -> bool | str:
        """Take a node's batch; a true answer tells its task to stop: why the grid was cancelled, or True
        when it was stopped before this task started (its TaskStarted is refused and it returns no record)."""
        for message in messages:
            if isinstance(message, TaskStarted) and message.tag not in self._started:
                if self._stopped:
                    return True
                self._started.add(message.tag)
        self._messages.extend(messages)
        return self._cancelled or False

    def stop_starting(self) -> list[int]:
        """No task starts from now on; the tags of those that already had. One actor call decides it, so a
        task is on exactly one side: started (it finishes and returns its record) or never started."""
        self._stopped = True
        return sorted(self._started)

    def take(self) -> list[Message]:
        messages, self._messages = self._messages, []
        return messages

    def cancel(self, reason: str = CANCELLED_BY_USER) -> None:
        self._cancelled = reason


class Channel:
    """A node's side of the inbox: `send` queues a message, a thread delivers batches in order (and calls
    `on_cancel` once when the inbox says the grid is cancelled); `close` delivers the rest. Live messages
    are for display: one that cannot be delivered is dropped, never the run."""

    def __init__(
        self, inbox: Any, tag: int, attempt: int, interval_s: float = FORWARD_INTERVAL_S, on_cancel: Any = None
    ) -> None:
        self.inbox, self.tag, self.attempt = inbox, tag, attempt
        self.failures = 0
        self._on_cancel = on_cancel
        self._told_cancel = False
        self._pending: list[Message] = []
        self._lock = threading.Lock()
        self._deliver_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval_s,), name="greenlab-ray-channel", daemon=True)
        self._thread.start()

    def send(self, message: Message) -> None:
        with self._lock:
            self._pending.append(message)

    def relay(self, event: RunEvent | WaitingForLock) -> None:
        """The supervisor's listener: its events, as the driver needs them."""
        match event:
            case RunBegan(tracker=tracker, fallbacks=fallbacks):
                self.send(RunBeganOnNode(self.tag, self.attempt, tracker.methods(), dict(fallbacks)))
            case ChildEvent() | RunMetered() | IdleMeasured() | CoolingDown() | Notice() | WaitingForLock():
                self.send(Relayed(self.tag, self.attempt, event))
            case _:
                pass  # RunStored: the driver tells it once the row is written

    def flush(self) -> None:
        if threading.current_thread() is threading.main_thread():
            # Ray lends a task's CPUs to other tasks while its main thread blocks in ray.get, so a run placed
            # alone on a node would share it; waiting for another thread is no Ray call.
            helper = threading.Thread(target=self._deliver, name="greenlab-ray-flush", daemon=True)
            helper.start()
            helper.join()
        else:
            self._deliver()

    def _deliver(self) -> None:
        import ray

        with self._deliver_lock:  # one delivery at a time keeps the order
            with self._lock:
                batch, self._pending = self._pending, []
            try:
                cancelled = ray.get(self.inbox.put.remote(batch))  # empty too: it answers about a cancel
            except Exception:  # noqa: BLE001 - the inbox is gone (its node died): the record still returns
                self.failures += 1
                return
        if cancelled and not self._told_cancel and self._on_cancel is not None:
            self._told_cancel = True
            self._on_cancel(cancelled if isinstance(cancelled, str) else CANCELLED_BY_USER)

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()


class ChannelSink(MemorySink):
    """A MemorySink that tells the driver when the run's row may start and forwards its samples live."""

    def __init__(self, channel: Channel, run_id: int) -> None:
        super().__init__(run_id)
        self.channel = channel

    def start_run(self, values: dict[str, Any]) -> int:
        values = {**copy.deepcopy(values), "host": host_facts()}  # the node's facts, not the driver's
        run_id = super().start_run(values)
        self.channel.send(RowStarted(self.channel.tag, self.channel.attempt, values))
        return run_id

    def submit(self, write: RowWrite) -> None:
        if isinstance(write, AddSamples):
            self.channel.send(SamplesTaken(self.channel.tag, self.channel.attempt, list(write.rows)))


# -- GPUs ---------------------------------------------------------------------------------------------------
def pin_gpus_by_uuid(environ: Any = os.environ) -> dict[str, Any]:
    """Rewrite CUDA_VISIBLE_DEVICES from Ray's GPU indices to the boards' UUIDs; returns what was done.

    Ray counts a node's GPUs in NVML's order (PCI bus order) and names a task's GPU by that index; CUDA
    would read an index in its own order, which may differ. A UUID names one board for CUDA and NVML alike.
    Entries that are already UUIDs are left as they are; without NVML nothing changes (and the note says so).
    """
    raw = environ.get("CUDA_VISIBLE_DEVICES")
    facts: dict[str, Any] = {"cuda_visible_devices": raw}
    entries = parse_visible_devices(raw)
    if not entries or not all(entry.isdigit() for entry in entries):
        return facts
    try:
        import pynvml as nv

        nv.nvmlInit()
        try:
            uuids = [nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(int(entry))) for entry in entries]
        finally:
            nv.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 - no NVML: CUDA's own numbering stays, the child's UUID still counts
        facts["uuid_error"] = f"{type(exc).__name__}: {exc}"
        return facts
    uuids = [u.decode() if isinstance(u, bytes) else str(u) for u in uuids]
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(uuids)
    facts["gpu_uuids"] = uuids
    return facts


# -- what a Ray worker keeps between its tasks ---------------------------------------------------------------
_WORKER: dict[str, Any] = {}  # this worker process's launcher, its current note sink and idle baselines


def _worker_launcher(channel: Channel) -> Launcher:
    """The fork server this worker started for an earlier task (torch imported once per worker), or a new
    one; its notes go to the current task's channel."""
    _WORKER["note"] = lambda text: channel.send(Relayed(channel.tag, channel.attempt, Notice(text)))
    launcher = _WORKER.get("launcher")
    if launcher is None:
        launcher = _WORKER["launcher"] = default_launcher(on_note=lambda text: _WORKER["note"](text))
        atexit.register(launcher.close)
    return launcher


def _idle_cache() -> dict[tuple[str, ...], tuple[dict[str, float], dict[str, Any]]]:
    """Idle baselines of this worker, per set of visible GPUs (component names do not tell boards apart).
    A Ray worker serves one driver's tasks only, so a cached baseline is still this grid's."""
    caches = _WORKER.setdefault("idle", {})
    return caches.setdefault(os.environ.get("CUDA_VISIBLE_DEVICES"), {})


# -- the task ---------------------------------------------------------------------------------------------------
def run_on_node(request: TaskRequest, inbox: Any) -> TaskResult:
    """Measure one grid run on this node and return its record (the driver makes this a Ray task)."""
    import ray

    cancelled = threading.Event()
    why: list[str] = []  # the driver's reason (the user, or the signal that stopped it), stored with the run
    supervisor: RunSupervisor | None = None

    def cancel_run(reason: str = CANCELLED_BY_USER) -> None:
        why.append(reason)
        cancelled.set()
        if supervisor is not None:  # cancel waits for the child: never on the signal handler's frame
            stop = supervisor.token.cancel
            threading.Thread(target=stop, args=(_reason(reason),), name="greenlab-ray-cancel", daemon=True).start()

    previous: Any = False  # False: not ours to restore (not the main thread)
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda signum, frame: cancel_run())
    channel = Channel(inbox, request.tag, request.attempt, on_cancel=cancel_run)
    node_id = ""
    here: dict[str, Any] = {"hostname": socket.gethostname(), "worker_pid": os.getpid()}
    cuda_before = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        node_id = ray.get_runtime_context().get_node_id()
        gpu = {"ray_gpu_ids": [str(i) for i in ray.get_gpu_ids()], **pin_gpus_by_uuid(os.environ)}
        channel.send(
            TaskStarted(
                request.tag,
                request.attempt,
                node_id,
                socket.gethostname(),
                os.getpid(),
                gpu,
                os.environ.get("OMP_NUM_THREADS"),
            )
        )
        channel.flush()  # at once: the driver learns the task runs, and the task whether the grid is cancelled
        sink = ChannelSink(channel, run_id=request.tag)
        launcher = _worker_launcher(channel)
        supervisor = RunSupervisor(None, on_event=channel.relay, launcher=launcher, sink=sink, idle_cache=_idle_cache())
        launcher.start(child_env())  # a new worker's fork server imports torch now, before the run's row
        if cancelled.is_set():
            return TaskResult(request.tag, request.attempt, node_id, **here)
        lock = HostLock(request.lock_store, shared=True) if request.lock_store else None
        if lock is not None and not lock.acquire(wait=True, on_wait=channel.relay, stop=cancelled):
            return TaskResult(request.tag, request.attempt, node_id, **here)
        began = time.monotonic()
        try:
            if cancelled.is_set():
                supervisor.token.cancel(_reason(why[0] if why else CANCELLED_BY_USER))
            supervisor.execute(GridRun.from_json(request.run))
        except KeyboardInterrupt:  # no handler of ours (not the main thread): the run is stored interrupted
            pass
        finally:
            if lock is not None:
                lock.release()
        ended = time.monotonic()
        record = sink.record()
        if record is None:
            return TaskResult(request.tag, request.attempt, node_id, **here)
        return TaskResult(request.tag, request.attempt, node_id, record, (began, ended), **here)
    finally:
        channel.close()
        if previous is not False:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        if cuda_before is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda_before
