"""A grid on this machine: its entries one after another, each through the one-run supervisor.

The host's measurement lock is held for the whole grid: a second grid waits for it (telling
WaitingForLock), or with `wait=False` raises LockBusy. One unmeasured warm-up child runs before the first
entry, so the first measured run does not pay for a cold machine. Which entries run, which are retried
and when the grid stops are the shared rules of greenlab.core.grid.driver.
"""

from __future__ import annotations

from greenlab.core.grid.driver import Resume, RetryRule, take_host
from greenlab.core.grid.grid_events import RunQueued, RunSkipped
from greenlab.core.grid.stop_rules import GridStopped, StopRule, exception_cause, store_failure
from greenlab.core.measure.host_lock import HostLock
from greenlab.core.plan.config import GridRun
from greenlab.core.run.cancel import Cancellable, CancelToken
from greenlab.core.run.launcher import Launcher
from greenlab.core.run.run_events import Listener, Notice, RunStored, SafeListener
from greenlab.core.run.supervisor import RunSupervisor, child_env
from greenlab.core.store.database import Store


class LocalDriver(Cancellable):
    """Runs a grid here; `token` cancels it (or only the run in progress) from any thread."""

    def __init__(
        self,
        store: Store,
        on_event: Listener | None = None,
        *,
        token: CancelToken | None = None,
        launcher: Launcher | None = None,
    ) -> None:
        self.store = store
        self.token = token or CancelToken()
        self._tell = SafeListener(on_event)
        self.supervisor = RunSupervisor(store, self._tell, launcher=launcher, token=self.token)
        self.retry_rule = RetryRule()

    def on_event(self, event: object) -> None:
        self._tell(event)

    def close(self) -> None:
        self.supervisor.close()

    def run_grid(self, runs: list[GridRun], *, force: bool = False, wait: bool = True) -> list[RunStored]:
        """See greenlab.core.grid.driver.GridDriver. A failure that would fail every following run the
        same way stops the grid with GridStopped, which lists the runs not started."""
        outcomes: list[RunStored] = []
        lock = HostLock(self.store.path)
        if not take_host(lock, wait=wait, on_event=self.on_event, stop=self.token.stop_event):
            return outcomes  # cancelled while waiting: nothing ran
        launcher = self.supervisor.launcher
        started = False
        try:
            resume = Resume(self.store, force)
            stop_rule = StopRule()
            for index, run in enumerate(runs):
                if self.cancelled:
                    break
                reason = resume.skip_reason(index, run)
                if reason is not None:
                    self.on_event(RunSkipped(index, run, reason))
                    continue
                if not started:  # before the first run that runs: a grid of stored runs starts no torch
                    started = True
                    launcher.start(child_env())  # the fork server imports torch now, not inside the first run
                    self.supervisor.warm_up()
                    if self.cancelled:
                        break
                self.on_event(RunQueued(index, len(runs), run))
                store_failed = False
                try:
                    outcome = self._execute(run)
                except Exception as exc:  # noqa: BLE001 - only environment failures are handled here
                    stop = exception_cause(exc)
                    if stop is None:
                        raise
                    outcome, store_failed = None, store_failure(exc)
                else:
                    stop = stop_rule.cause(outcome) if outcome is not None else None
                if outcome is not None:
                    outcomes.append(outcome)
                # A record kept aside is told even when the user stopped the grid meanwhile (their second
                # Ctrl-C may be what gave up on a locked store).
                if stop is not None and (not self.cancelled or store_failed):
                    rest = [
                        r
                        for r in runs[index + 1 :]
                        if r.settings_key() not in resume.planned and r.settings_key() not in resume.done
                    ]
                    self.on_event(GridStopped(stop, rest, store_failed=store_failed))
                    break
        finally:
            launcher.close()
            lock.release()
        return outcomes

    def _execute(self, run: GridRun) -> RunStored | None:
        outcome = self.supervisor.execute(run)
        if outcome is not None and self.retry_rule.retry(1, outcome.executor_died, self.token):
            self.on_event(Notice(f"run {outcome.run_id}: {outcome.error}; retrying it once"))
            outcome = self.supervisor.execute(run, retry_of=outcome) or outcome
        return outcome
