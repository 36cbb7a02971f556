"""A grid on Ray: the driver places each run on a node as a Ray task, follows them all, and hands each
run's record to its store sink, the store's one writer.

Each run is a task (greenlab.core.grid.ray_task) that runs GreenLab's own supervisor and child on its node and
returns the run's RunRecord; the driver's StoreSink (greenlab.core.run.sinks) writes it into data/runs.db,
as a local grid's sink does, so SQLite keeps a single writer. The sink starts a run's row (status
`running`, executor `ray`, its node) when the node says the run began, and completes it from the returned
record; a record the store cannot take waits in its pending folder (greenlab.core.store.journal), and the
grid starts nothing more. The driver itself keeps scheduling and fault handling. Live events arrive
through an inbox actor pinned to the driver's node (so no other node's loss takes it along), tagged with
their run, and go to the same listener (and presenter) as a local grid's, so faces can follow several runs.

Node-level truth: runs whose measured spans overlap on one node share its CPU packages and DRAM, whose
RAPL counters (and the CPU estimate's package power) cover them all: each such row lists the others in
`concurrent_runs` and is flagged `shared_node_cpu`; GPU energy stays per board.

Faults: a task whose worker or node dies is retried once, on another node when there is one (a retry
here rather than Ray's `max_retries`: the driver keeps the first attempt's reason, steers the retry away
from that node, forgets the dead attempt's placement, and reuses the run's row, so a run is never stored
twice); a lost node is named once, however many of its runs are retried; a second death stores the
run as `failed` with both reasons. Cancelling (Ctrl-C, SIGTERM, `cancel()`) tells the running tasks
through the inbox: each stops its child and returns its record, stored `interrupted` (Ray's own
`ray.cancel` would turn a running task's result into TaskCancelledError and lose it); tasks not yet
running get `ray.cancel` and never start. A task that has not returned a minute later is killed
(`ray.cancel(force=True)`) and its run stored `interrupted` from what the driver has.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from greenlab.core.grid.driver import Resume, RetryRule, take_host
from greenlab.core.grid.grid_events import RunQueued, RunSkipped
from greenlab.core.grid.ray_cluster import RayCluster, import_ray
from greenlab.core.grid.ray_task import (
    Inbox,
    Message,
    Relayed,
    RowStarted,
    RunBeganOnNode,
    SamplesTaken,
    TaskRequest,
    TaskResult,
    TaskStarted,
    run_on_node,
)
from greenlab.core.grid.stop_rules import GridStopped, StopRule, exception_cause, first_line
from greenlab.core.measure.host_lock import HostLock
from greenlab.core.measure.remote_tracker import RemoteTracker
from greenlab.core.plan.config import GridRun
from greenlab.core.report.formatting import run_label
from greenlab.core.run.cancel import Cancellable, CancelToken, interrupt_reason
from greenlab.core.run.run_events import (
    ChildEvent,
    Listener,
    Notice,
    RunBegan,
    RunMetered,
    RunStored,
    SafeListener,
)
from greenlab.core.run.sinks import StoreSink
from greenlab.core.run.supervisor import run_row_values, signals_deferred
from greenlab.core.store.database import Store, now_iso
from greenlab.core.store.errors import StoreError
from greenlab.core.store.journal import NO_ROW_YET, RecordKept
from greenlab.core.store.record import RunRecord

FLAG_SHARED_NODE_CPU = "shared_node_cpu"  # other runs measured on this node meanwhile: CPU/DRAM figures cover them
SETTLE_S = 60.0  # after a cancel, how long running tasks have to return their interrupted records
POLL_S = 0.2


@dataclass
class _Task:
    """One grid run on Ray, across its attempts."""

    index: int
    run: GridRun
    attempt: int = 0
    run_id: int | None = None
    began: bool = False  # the current attempt has started on its node
    node_id: str | None = None
    hostname: str | None = None
    worker_pid: int | None = None
    gpu: dict[str, Any] = field(default_factory=dict)
    omp_num_threads: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    earlier: list[dict[str, Any]] = field(default_factory=list)  # attempts that died: node and why
    tracker: RemoteTracker | None = None

    def forget_placement(self) -> None:
        """Before a retry: nothing of the attempt that died may describe the one that runs."""
        self.began = False
        self.node_id = self.hostname = self.worker_pid = self.omp_num_threads = None
        self.gpu = {}

    def placement(self) -> dict[str, Any]:
        """Where and how the run was placed, for the row's `meters` JSON."""
        facts: dict[str, Any] = {
            "executor": "ray",
            "node_id": self.node_id,
            "hostname": self.hostname,
            "worker_pid": self.worker_pid,
            "attempt": self.attempt + 1,
            "resources": {k: v for k, v in self.options.items() if k.startswith("num_")},
            "omp_num_threads": self.omp_num_threads,
        }
        if self.gpu:
            facts["gpu"] = self.gpu
        if self.earlier:
            facts["earlier_attempts"] = self.earlier
        return facts


class RayDriver(Cancellable):
    """Runs a grid's entries as Ray tasks (greenlab.core.grid.driver.GridDriver).

    `task` is the function each Ray task runs (tests pass a wrapper that injects a fault). A cancel of the
    run in progress stops the whole grid here: several runs are in progress at once.
    """

    def __init__(
        self,
        store: Store,
        cluster: RayCluster,
        on_event: Listener | None = None,
        *,
        task: Callable[[TaskRequest, Any], TaskResult] = run_on_node,
        settle_s: float = SETTLE_S,
        token: CancelToken | None = None,
    ) -> None:
        self.store = store
        self.sink = StoreSink(store)  # the one writer of the grid's rows
        self.cluster = cluster
        self._tell = SafeListener(on_event)
        self.listener_errors = self._tell.errors
        self._task_fn = task
        self._settle_s = settle_s
        self.token = token or CancelToken()
        self.retry_rule = RetryRule()
        self._inflight: dict[Any, _Task] = {}  # ObjectRef -> task
        self._tasks: dict[int, _Task] = {}  # tag (grid index) -> task
        self._spans: dict[str, list[tuple[float, float, int]]] = {}  # node -> (start, end, run id) measured there
        self._inbox: Any = None
        self._remote: Any = None
        self._total = 0
        self._inbox_failed = False
        self._lost_nodes: set[str | None] = set()
        self.attempts: dict[int, list[TaskStarted]] = {}  # grid index -> each attempt's start, for the curious

    def on_event(self, event: object) -> None:
        self._tell(event)

    def cancel_current(self) -> None:
        """On Ray several runs are in progress at once: stopping "this run" stops the grid."""
        self.token.cancel()

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled or self.token.current_cancelled

    def close(self) -> None:
        """Nothing to stop: the tasks end with the grid (see RayCluster.close for the instance)."""

    # -- the grid -------------------------------------------------------------------------------------
    def run_grid(self, runs: list[GridRun], *, force: bool = False, wait: bool = True) -> list[RunStored]:
        """Run every entry not completed with identical settings, as many at once as the cluster holds;
        returns the stored outcomes. KeyboardInterrupt (Ctrl-C, or SIGTERM made one) cancels every task,
        stores the running runs as interrupted, then propagates.

        The host lock: when every node is this host, the driver holds its lock for the grid as a local
        grid does (`wait=False`: LockBusy at once); otherwise it holds none and each task holds its own
        node's lock, shared with the other tasks of Ray grids.
        """
        ray = import_ray()
        outcomes: list[RunStored] = []
        single_host = self.cluster.single_host
        lock = HostLock(self.store.path) if single_host else None
        if lock is not None and not take_host(lock, wait=wait, on_event=self.on_event, stop=self.token.stop_event):
            return outcomes
        interrupted = False
        try:
            resume = Resume(self.store, force)
            todo = []
            for index, run in enumerate(runs):
                reason = resume.skip_reason(index, run)
                if reason is not None:
                    self.on_event(RunSkipped(index, run, reason))
                else:
                    todo.append(_Task(index, run))
            if not todo or self.cancelled:
                return outcomes
            self._total = len(runs)
            self._inbox = self._start_inbox()
            self._remote = ray.remote(self._task_fn)
            lock_store = None if single_host else f"{self.store.path} (a Ray grid driven from {socket.gethostname()})"
            for task in todo:
                self._tasks[task.index] = task
                self._submit(task, lock_store)
            interrupted = self._follow(outcomes, lock_store)
        finally:
            if self._inbox is not None:
                try:
                    ray.kill(self._inbox)
                except Exception:  # noqa: BLE001 - already gone with its node
                    pass
                self._inbox = None
            if lock is not None:
                lock.release()
        if interrupted:
            raise KeyboardInterrupt
        return outcomes

    def _start_inbox(self) -> Any:
        """The inbox actor, on the driver's own node: it lives as long as the driver can, whichever node is
        lost (placed anywhere, it could die with a worker node and take live progress with it)."""
        ray = import_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        options: dict[str, Any] = {"num_cpus": 0}
        if here:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(here, soft=False)
        return ray.remote(Inbox).options(**options).remote()

    def _submit(self, task: _Task, lock_store: str | None, avoid: str | None = None) -> None:
        task.options = self.cluster.task_options(task.run)
        options: dict[str, Any] = {**task.options, "max_retries": 0, "retry_exceptions": False}
        other = self.cluster.other_node(avoid, task.options) if avoid else None
        if other is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # soft: another node when it can take the run, else wherever Ray finds room
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(other, soft=True)
        request = TaskRequest(tag=task.index, attempt=task.attempt, run=task.run.to_json(), lock_store=lock_store)
        task.began = False
        self._inflight[self._remote.options(**options).remote(request, self._inbox)] = task

    def _follow(self, outcomes: list[RunStored], lock_store: str | None) -> bool:
        """Take messages and results until every task has ended; True when interrupted (Ctrl-C, SIGTERM)."""
        ray = import_ray()
        stop_rule = StopRule()
        stopped = False
        interrupted = False
        cancel_sent: float | None = None
        while self._inflight:
            try:
                if self.cancelled and cancel_sent is None:
                    cancel_sent = time.monotonic()
                    self._cancel_tasks()
                if cancel_sent is not None and time.monotonic() - cancel_sent > self._settle_s:
                    with signals_deferred(reraise=True):
                        outcomes.extend(self._abandon("the node did not return the run's record in time"))
                    break
                ready, _ = ray.wait(list(self._inflight), num_returns=1, timeout=POLL_S)
                # A message taken is a message handled, a result taken is stored; a Ctrl-C meanwhile counts
                # once they are (raised after the block, into the handler below).
                with signals_deferred(reraise=True):
                    self._take_messages()
                for ref in ready:
                    with signals_deferred(reraise=True):
                        task = self._inflight.pop(ref)
                        self._take_messages()  # the task delivered its last messages before returning
                        try:
                            outcome = self._settle(ref, task, lock_store)
                        except RecordKept as kept:  # the runs still running finish; no other starts
                            if not stopped:
                                stopped = True
                                self._stop_waiting(str(kept), store_failed=True)
                            continue
                        if outcome is not None:
                            outcomes.append(outcome)
                    if outcome is None:
                        continue
                    cause = stop_rule.cause(outcome)
                    if cause is not None and not stopped and not self.cancelled:
                        stopped = True
                        self._stop_waiting(cause)
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM made a SignalInterrupt with its name
                if interrupted:  # a second Ctrl-C: no more waiting for the nodes
                    with signals_deferred():
                        outcomes.extend(self._abandon("interrupted twice; the node's record was not awaited"))
                    break
                interrupted = True
                self.token.cancel(interrupt_reason(exc))
        return interrupted

    def _cancel_tasks(self) -> None:
        """Running tasks hear of it from the inbox and return their interrupted records; the others (and
        all of them, if the inbox is gone) get `ray.cancel`, so a long queue never starts."""
        ray = import_ray()
        told = False
        if self._inbox is not None and not self._inbox_failed:
            try:
                ray.get(self._inbox.cancel.remote(self.token.why))  # the nodes store the same reason
                told = True
            except ray.exceptions.RayError:
                self._inbox_failed = True
        if told:  # a task says it started before anything else (and hears of a cancel then)
            with signals_deferred(reraise=True):
                self._take_messages()
        for ref, task in list(self._inflight.items()):
            if not (told and task.began):
                ray.cancel(ref)

    def _stop_waiting(self, cause: str, *, store_failed: bool = False) -> None:
        """An environment failure: tasks not yet started are cancelled (the inbox refuses any that try);
        those running finish and are stored."""
        ray = import_ray()
        started: set[int] | None = None
        if self._inbox is not None and not self._inbox_failed:
            try:
                started = set(ray.get(self._inbox.stop_starting.remote()))
            except ray.exceptions.RayError:
                self._inbox_failed = True
            with signals_deferred(reraise=True):
                self._take_messages()  # the started tasks' RunQueued come before the stop
        if started is None:  # no inbox: what the driver heard is all it knows
            started = {task.index for task in self._inflight.values() if task.began}
        waiting = [(ref, task) for ref, task in self._inflight.items() if task.index not in started]
        for ref, _task in waiting:
            ray.cancel(ref)
        not_started = [task.run for _ref, task in sorted(waiting, key=lambda p: p[1].index)]
        self.on_event(GridStopped(cause, not_started, store_failed=store_failed))

    def _abandon(self, why: str) -> list[RunStored]:
        """Kill the tasks still out; those whose run had begun are stored as interrupted."""
        ray = import_ray()
        stored = []
        for ref, task in list(self._inflight.items()):
            ray.cancel(ref, force=True)
            if task.run_id is not None:
                stored.append(self._store_outcome(task, "interrupted", f"{self.token.why}; {why}"))
        self._inflight.clear()
        return stored

    # -- messages from the nodes ------------------------------------------------------------------------
    def _take_messages(self) -> None:
        if self._inbox is None or self._inbox_failed:
            return
        ray = import_ray()
        try:
            messages = ray.get(self._inbox.take.remote())
        except ray.exceptions.RayError as exc:  # live events only: the records still come back
            self._inbox_failed = True
            self.on_event(
                Notice(
                    f"live progress from the nodes stopped ({first_line(str(exc))}); "
                    "runs go on and are stored as they end"
                )
            )
            return
        for message in messages:
            self._receive(message)

    def _receive(self, message: Message) -> None:
        task = self._tasks.get(message.tag)
        if task is None or message.attempt != task.attempt:
            return  # the last words of an attempt that died
        match message:
            case TaskStarted():
                task.began = True
                task.node_id, task.hostname, task.worker_pid = message.node_id, message.hostname, message.worker_pid
                task.gpu, task.omp_num_threads = message.gpu, message.omp_num_threads
                self.attempts.setdefault(task.index, []).append(message)
                self.on_event(RunQueued(task.index, self._total, task.run))
            case RowStarted(values=values):
                try:
                    self._start_row(task, values)
                except StoreError as exc:  # the row starts with its record, or waits beside it
                    if exc.refused:
                        raise
                    self.on_event(
                        Notice(
                            f"{_label(task.run)}: the run store cannot take its row yet ({first_line(str(exc))}); "
                            "the run goes on, and its row is written with its record"
                        )
                    )
            case RunBeganOnNode(methods=methods, fallbacks=fallbacks) if task.run_id is not None:
                task.tracker = RemoteTracker(methods)
                self.on_event(RunBegan(task.run_id, task.run, task.tracker, fallbacks))
            case SamplesTaken(rows=rows) if task.tracker is not None:
                task.tracker.add_samples(rows)
            case Relayed(event=ChildEvent(event=event)) if task.run_id is not None:
                self.on_event(ChildEvent(task.run_id, event))
            case Relayed(event=RunMetered(components=components)) if task.run_id is not None:
                self.on_event(RunMetered(task.run_id, components))  # the node's run id is not the store's
            case Relayed(event=event) if not isinstance(event, (ChildEvent, RunMetered)):
                self.on_event(event)

    def _where(self, task: _Task) -> dict[str, Any]:
        return {"executor": "ray", "node": task.node_id, "attempts": task.attempt + 1}

    def _start_row(self, task: _Task, values: dict[str, Any]) -> None:
        """The run's row: inserted at its first attempt's start, started afresh by a retry (never twice)."""
        columns = {**values, **self._where(task)}
        if task.run_id is None:
            task.run_id = self.sink.start_run(columns)
        else:
            self.sink.restart_run(task.run_id, columns)

    # -- results ------------------------------------------------------------------------------------------
    def _settle(self, ref: Any, task: _Task, lock_store: str | None) -> RunStored | None:
        """Store what became of a finished task (or resubmit it once); the outcome, or None."""
        ray = import_ray()
        exceptions = ray.exceptions
        try:
            result: TaskResult = ray.get(ref)
        except exceptions.TaskCancelledError:
            if task.run_id is None:
                return None  # cancelled before its run began: nothing to store
            return self._store_outcome(
                task, "interrupted", f"{self.token.why} before the node returned the run's record"
            )
        except exceptions.RayTaskError as exc:  # GreenLab's own code failed on the node (not the run)
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            error = f"the Ray task failed on {task.hostname or 'its node'}: {type(cause).__name__}: {cause}"
            return self._store_outcome(task, "failed", exception_cause(cause) or error)
        except exceptions.RayError as exc:  # the worker or its node died, or Ray could not run the task
            node_lost = isinstance(exc, getattr(exceptions, "NodeDiedError", ())) or self._node_gone(task.node_id)
            if node_lost:
                reason = f"its Ray node {_short(task.node_id)} ({task.hostname or 'unknown host'}) was lost"
                self._name_lost_node(task)
            else:
                reason = (
                    f"the Ray worker running it on {task.hostname or 'its node'} died "
                    f"({type(exc).__name__}: {first_line(str(exc))})"
                )
            if self.cancelled:
                return self._store_outcome(task, "interrupted", f"{self.token.why}; {reason}")
            executor_died = not isinstance(exc, getattr(exceptions, "TaskUnschedulableError", ()))
            if self.retry_rule.retry(task.attempt + 1, executor_died, self.token):
                task.earlier.append({"attempt": 1, "node_id": task.node_id, "hostname": task.hostname, "error": reason})
                self.on_event(Notice(f"{_label(task.run)}: {reason}; retrying once, on another node when there is one"))
                avoid = task.node_id
                task.attempt, task.tracker = 1, None
                task.forget_placement()  # the retry's node says where it runs (TaskStarted, or its result)
                self._submit(task, lock_store, avoid=avoid)
                return None
            earlier = "; ".join(e["error"] for e in task.earlier)
            error = reason + (f"; on the first attempt, {earlier}" if earlier else "")
            return self._store_outcome(task, "failed", error)
        if not result.began:
            return None  # cancelled while it waited for its node's lock or idle baseline: nothing ran
        return self._apply(task, result)

    def _node_gone(self, node_id: str | None) -> bool:
        """Whether Ray no longer lists `node_id` among the alive nodes (a worker's death says less)."""
        if not node_id:
            return False
        try:
            return all(node.node_id != node_id for node in self.cluster.nodes())
        except Exception:  # noqa: BLE001 - the GCS is unreachable: say what the exception said
            return False

    def _name_lost_node(self, task: _Task) -> None:
        """One line per lost node, however many of its runs are retried; Ray's own account is in its log."""
        if task.node_id in self._lost_nodes:
            return
        self._lost_nodes.add(task.node_id)
        where = self.cluster.noise.where()
        self.on_event(
            Notice(
                f"Ray node {_short(task.node_id)} ({task.hostname or 'unknown host'}) was lost; "
                "its runs are retried once on another node" + (f" ({where})" if where else "")
            )
        )

    def _apply(self, task: _Task, result: TaskResult) -> RunStored:
        assert result.record is not None
        if result.node_id and result.node_id != task.node_id:  # the attempt that ran says where it ran
            task.node_id, task.hostname, task.worker_pid = result.node_id, result.hostname, result.worker_pid
        record = result.record
        where = self._where(task)
        placed = replace(
            record.with_values(**where, meters={**(record.values.get("meters") or {}), "placement": task.placement()}),
            start={**record.start, **where},
            flags=(*record.flags, *(f"display: {e}" for e in self.listener_errors)),
        )
        return self._store(task, placed, result)

    def _store_outcome(self, task: _Task, status: str, error: str) -> RunStored:
        """A run whose node returned no record: its row (started now if it never was) ends with `error`."""
        where = {**self._where(task), "status": status, "error": error, "finished_at": now_iso()}
        row = self.store.run(task.run_id) if task.run_id is not None else None
        meters = dict(row.meters) if row is not None else {}
        start = {
            **run_row_values(task.run),
            **where,
            "meters": {"placement": task.placement()},
            "host": {"hostname": task.hostname} if task.hostname else None,
        }
        flags = tuple(row.flags) if row is not None else ()
        return self._store(
            task, RunRecord(start, {**where, "meters": {**meters, "placement": task.placement()}}, flags=flags)
        )

    def _store(self, task: _Task, record: RunRecord, result: TaskResult | None = None) -> RunStored:
        """The run's record through the store's sink, then the runs its node measured meanwhile (`result`'s
        span); a record the store cannot take is told as kept aside (RecordKept then stops the grid)."""
        try:
            task.run_id = self.sink.store_record(task.run_id, record, label=_label(task.run))
        except RecordKept as kept:
            task.run_id = kept.run_id if kept.run_id is not None else task.run_id  # its row, if the sink started one
            run_id = task.run_id if task.run_id is not None else NO_ROW_YET
            row = {"id": task.run_id, **record.final_values()}
            self.on_event(RunStored(run_id, task.run, record.status or "failed", record.error, row, kept_in=kept.path))
            raise
        if result is not None and result.span is not None:
            self._note_span(task.run_id, result.node_id, result.span)
        stored = RunStored(
            task.run_id, task.run, record.status or "failed", record.error, self.store.run(task.run_id) or {}
        )
        self.on_event(stored)
        return stored

    # -- node-level truth ---------------------------------------------------------------------------------
    def _note_span(self, run_id: int, node_id: str, span: tuple[float, float]) -> None:
        """Runs measured at overlapping times on one node (spans on that node's monotonic clock) share its
        CPU packages and DRAM: each lists the others and is flagged."""
        start, end = span
        spans = self._spans.setdefault(node_id, [])
        others = [other for s, e, other in spans if s < end and start < e]
        spans.append((start, end, run_id))
        if others:
            self._mark_shared(run_id, others)
            for other in others:
                self._mark_shared(other, [run_id])

    def _mark_shared(self, run_id: int, others: list[int]) -> None:
        row = self.store.run(run_id)
        concurrent = sorted(set(row.concurrent_runs if row is not None else []) | set(others))
        flags = list(row.flags) if row is not None else []
        if FLAG_SHARED_NODE_CPU not in flags:
            flags.append(FLAG_SHARED_NODE_CPU)
        self.sink.update_run(run_id, concurrent_runs=concurrent, flags=flags)


def _short(node_id: str | None) -> str:
    """A node id as Ray's own messages abbreviate it."""
    return (node_id or "?")[:8]


def _label(run: GridRun) -> str:
    return run_label(run.model, run.technique, run.repeat, run.settings.repeats)
