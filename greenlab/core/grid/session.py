"""One grid, from request to verdicts, the same for every face: preflight → fetch → lock → store → driver →
energy to target → summary.

`GridSession.run()` checks the store's place, refuses a grid that cannot run here (PreflightError), fetches
what it needs (FetchError), joins a Ray cluster when asked (GreenLabError) — all before the store is
touched, so a refused grid writes nothing — then opens the store with the grid's analysis plan declared,
runs the grid on the local or the Ray driver (greenlab.core.grid.driver) under one cancel token, stores
each completed run's energy to target, and returns what the grid left: its outcomes, its rows and the
verdicts of its plan. Before it runs, `preview()` says what it will do: each entry to run or skipped and
why (greenlab.core.grid.queue, the drivers' own rule) and the forecast of those that run
(greenlab.core.grid.forecast). Faces (the headless driver, the TUI) build a `GridRequest`, give a listener
for the typed events (greenlab.core.grid.grid_events) and render the preview and the outcome; they never
import preflight, fetch, the host lock or a driver (an import-linter contract says so). `fetch_grid` is
`greenlab --fetch`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenlab.core.grid import forecast as grid_forecast
from greenlab.core.grid.driver import GridDriver
from greenlab.core.grid.forecast import Calibrate, Forecast
from greenlab.core.grid.local import LocalDriver
from greenlab.core.grid.queue import GridQueue, plan_queue
from greenlab.core.grid.stop_rules import GridStopped
from greenlab.core.measure.host_lock import ensure_free
from greenlab.core.plan import fetch, preflight
from greenlab.core.plan.analysis import Plan
from greenlab.core.plan.config import GridFile, GridRun
from greenlab.core.report import compare, energy_to_target
from greenlab.core.report.compare import Comparison
from greenlab.core.run.cancel import Cancellable, CancelToken
from greenlab.core.run.run_events import Listener, Notice, RunStored, SafeListener
from greenlab.core.store.database import Store, check_location
from greenlab.core.store.errors import StoreError
from greenlab.core.store.rows import RunRow

Sources = fetch.Sources  # where downloads come from: faces name it without importing fetch


@dataclass(frozen=True)
class GridRequest:
    """A grid to run: its runs and plan, where it came from (a file's path, or "the setup form"), where to
    store it, and how: `force` reruns completed runs, `wait` False refuses a busy host at once (LockBusy),
    `ray` runs it on a Ray cluster at that address (None: here; "": $RAY_ADDRESS, else a local instance;
    greenlab.core.grid.ray_cluster resolves "local", "auto" and ray://)."""

    runs: list[GridRun]
    plan: Plan
    source: str
    db: str | None = None
    force: bool = False
    wait: bool = True
    ray: str | None = None
    sources: Sources | None = None  # where downloads come from (tests point them at a local server)

    @classmethod
    def from_file(cls, grid_file: GridFile, **options: Any) -> GridRequest:
        runs = grid_file.grid()
        return cls(runs=runs, plan=grid_file.plan(runs), source=grid_file.source, **options)


@dataclass
class GridOutcome:
    """What a grid left: its stored outcomes, whether an interrupt ended it, the latest completed run of
    each of its entries, and its plan's verdicts on the primary metric (judged on the whole store)."""

    outcomes: list[RunStored]
    interrupted: bool  # a run was stored as interrupted
    store_path: Path
    cut_short: bool = False  # a Ctrl-C (or a SIGTERM made one) ended the grid: no summary follows
    rows: list[RunRow] = field(default_factory=list)
    verdicts: list[Comparison] = field(default_factory=list)
    cluster: str | None = None  # where it ran, when on Ray

    @property
    def all_estimated(self) -> bool:
        """Every stored run's energy is an estimate (no RAPL or NVML where it ran)."""
        return bool(self.outcomes) and not any(o.row.get("energy_measured_j") for o in self.outcomes)

    @property
    def failed(self) -> bool:
        return any(o.status == "failed" for o in self.outcomes)


@dataclass(frozen=True)
class GridPreview:
    """What a grid will do, before it runs: each entry's fate, and the forecast of those that run."""

    queue: GridQueue
    forecast: Forecast


def queue_of(runs: list[GridRun], db: str | None, *, force: bool = False, queued_keys: Iterable[str] = ()) -> GridQueue:
    """Which of `runs` a grid into the store at `db` will run, and why the others will not (milliseconds: no
    forecast). `queued_keys`: the run keys of grids queued before it, which will have stored them by then."""
    _rows, keys = grid_forecast.read_history(db, rows=False)
    return plan_queue(runs, keys, queued_keys, force=force)


def preview(
    runs: list[GridRun],
    db: str | None,
    *,
    force: bool = False,
    queued_keys: Iterable[str] = (),
    calibrate: Calibrate | None = None,
) -> GridPreview:
    """`queue_of`, and the forecast of the runs it will run, which may calibrate a model in a child process
    (seconds), for a face that has no request yet (the TUI's form, as it is edited)."""
    rows, keys = grid_forecast.read_history(db)
    queue = plan_queue(runs, keys, queued_keys, force=force)
    return GridPreview(queue, grid_forecast.forecast_queue(queue, rows, calibrate=calibrate))


class GridSession(Cancellable):
    """Runs one grid request; `cancel()` and `cancel_current()` may come from any thread, at any time (a
    cancel before the driver exists is kept, and the driver starts cancelled)."""

    def __init__(
        self, request: GridRequest, on_event: Listener | None = None, *, token: CancelToken | None = None
    ) -> None:
        self.request = request
        self.token = token or CancelToken()
        self._tell = SafeListener(on_event)
        self.store_path = check_location(request.db)  # exit 2 before anything is fetched or created
        self.cluster: Any = None

    def queue(self, queued_keys: Iterable[str] = ()) -> GridQueue:
        """What this grid will run and skip, and why (`queue_of`)."""
        return queue_of(self.request.runs, self.request.db, force=self.request.force, queued_keys=queued_keys)

    def preview(self, *, queued_keys: Iterable[str] = (), calibrate: Calibrate | None = None) -> GridPreview:
        """Its queue and its forecast (`preview`)."""
        request = self.request
        return preview(request.runs, request.db, force=request.force, queued_keys=queued_keys, calibrate=calibrate)

    @property
    def on_ray(self) -> bool:
        return self.request.ray is not None

    # -- before the store -------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Preflight and fetch (and join the Ray cluster): every refusal here writes nothing."""
        request = self.request
        address = None
        if request.ray is not None:
            from greenlab.core.grid import ray_cluster  # only here: a grid without Ray never imports it

            address = ray_cluster.resolve_address(request.ray)
        # On a cluster its nodes' GPUs count, not this machine's: placement is checked once it is joined.
        devices = address is None or address == "local"
        source = request.source
        if Path(source).is_file():
            report = preflight.check_file(request.runs, source, sources=request.sources, devices=devices)
        else:
            report = preflight.check(request.runs, sources=request.sources, devices=devices)
        report.raise_for_problems()
        if report.to_fetch:
            fetched = fetch.fetch_all(
                report.to_fetch,
                self._tell,
                reachable=report.reachable,
                experiments_file=source if Path(source).is_file() else None,
            )
            if fetched.failed:
                raise fetch_failures(fetched, source, len(set(report.to_fetch)))
        if address is not None:
            from greenlab.core.grid import ray_cluster

            self.cluster = ray_cluster.connect(address)  # GreenLabError: exit 2, nothing written
            try:
                ray_cluster.check_placement(self.cluster, request.runs, source if Path(source).is_file() else None)
            except BaseException:
                self.close()
                raise

    def driver(self, store: Store) -> GridDriver:
        if self.cluster is not None:
            from greenlab.core.grid.ray_driver import RayDriver

            return RayDriver(store, self.cluster, self._tell, token=self.token)
        return LocalDriver(store, self._tell, token=self.token)

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    # -- the grid ---------------------------------------------------------------------------------------
    def run(self) -> GridOutcome:
        """The whole sequence; see the module docstring. A Ctrl-C (KeyboardInterrupt) while the grid runs
        stores the runs in progress as interrupted and returns an interrupted outcome."""
        request = self.request
        try:
            if self.cluster is None:
                self.prepare()
            if not request.wait and (self.cluster is None or self.cluster.single_host):
                ensure_free()  # LockBusy: exit 2 before the store file exists
            # The file is created by the first run's row: an interrupt before it leaves none.
            tell = self._tell
            store = Store(
                request.db, on_busy=lambda text: tell(Notice(text)), on_notice=lambda text: tell(Notice(text))
            )
            store.declare_plan(request.plan)  # stored with the first run: the verdicts are judged under it
            stopped: list[GridStopped] = []

            def hear(event: Any) -> None:
                if isinstance(event, GridStopped):
                    stopped.append(event)  # on its store: nothing more is asked of the store (after_grid)
                tell(event)

            self._tell = SafeListener(hear)
            driver = self.driver(store)
            interrupted = False
            outcomes: list[RunStored] = []
            try:
                outcomes = driver.run_grid(request.runs, force=request.force, wait=request.wait)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                driver.close()
                self._tell = tell
            described = self.cluster.describe() if self.cluster is not None else None
            result = GridOutcome(
                outcomes,
                interrupted or any(o.status == "interrupted" for o in outcomes),
                store.path,
                cut_short=interrupted,
                cluster=described,
            )
            after_grid(store, request, result, stopped, tell)
            store.close()
            return result
        finally:
            self.close()


def after_grid(
    store: Store, request: GridRequest, result: GridOutcome, stopped: list[GridStopped], tell: Listener
) -> None:
    """Energy to target, then the rows and verdicts of the summary, into `result`. The store is checked
    first (quick_check: a page damaged during the grid is refused, StoreDamaged, exit 2, never written);
    after a grid stopped on its store (a record kept aside, the file removed), or when it fails now, none
    of this is tried again or waited for: one notice says what is left out, never a traceback."""
    if any(stop.store_failed for stop in stopped):
        tell(Notice("energy to target and the summary are left out: the run store could not be written (above)"))
        return
    try:
        store.check()
        with_targets(store)  # the grid's runs (and their cells' others) against one target
        if not result.cut_short:
            result.rows = grid_rows(store, request.runs)
            result.verdicts = plan_verdicts(store, request.plan)
    except (StoreError, OSError) as exc:
        if isinstance(exc, StoreError) and exc.refused:
            raise
        first = next(iter(str(exc).splitlines()), "")
        tell(
            Notice(
                f"energy to target and the summary are left out: the run store {store.path} cannot be used now "
                f"({type(exc).__name__}: {first}); the runs above are stored (or kept beside it, as said)"
            )
        )


def with_targets(store: Store) -> int:
    """Store each completed run's target accuracy and energy to target (greenlab.core.report.energy_to_target)."""
    computed = energy_to_target.compute(store.completed_runs(), store.epochs)
    return store.set_energy_to_target(computed)


def grid_rows(store: Store, runs: list[GridRun]) -> list[RunRow]:
    """The latest completed run of each grid entry (runs skipped this time included)."""
    return store.completed_runs_of_grid(run.settings_key() for run in runs)


def plan_verdicts(store: Store, plan: Plan) -> list[Comparison]:
    """The plan's comparisons on its primary metric, judged on the whole store under their plans, as
    `greenlab report` and the TUI judge them."""
    judged = compare.judge(store.runs(), store.plans(), metrics=(plan.analysis.primary,))
    return compare.of_cells(judged, plan.keys)


def fetch_failures(report: fetch.FetchReport, source: str | Path, tried: int) -> fetch.FetchError:
    """The last word on files not fetched. Each was already told as it failed, with why and where to put it
    by hand (a DownloadFailed event): this names them and the grid's file, without repeating that."""
    names = ", ".join(item.what for item, _reason in report.failed)
    count = len(report.failed)
    lines = "the FAILED line above says" if count == 1 else "the FAILED lines above say"
    return fetch.FetchError(
        f"{source}: {count} of {tried} file{'s' if tried != 1 else ''} not fetched "
        f"({names}); {lines} why and how to get {'it' if count == 1 else 'them'} by hand"
    )


@dataclass(frozen=True)
class FetchPlan:
    """What `greenlab --fetch` would do: how many files the grid needs are present, and which are not."""

    source: str
    present: int
    todo: list[fetch.Requirement]


def plan_fetch(grid_file: GridFile, sources: fetch.Sources | None = None) -> FetchPlan:
    needs = fetch.plan(grid_file.grid(), sources)
    todo = fetch.missing(needs)
    return FetchPlan(grid_file.source, len({n.requirement for n in needs}) - len(todo), todo)


def fetch_planned(plan: FetchPlan, on_event: Listener) -> int:
    """`greenlab --fetch FILE`: download every missing dataset and weight file into its cache; how many
    were fetched, or FetchError naming what was not."""
    report = fetch.fetch_all(plan.todo, on_event, experiments_file=plan.source, fetching=True)
    if report.failed:
        raise fetch_failures(report, plan.source, len(plan.todo))
    return len(report.fetched)
