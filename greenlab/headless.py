"""`greenlab --headless experiments.toml`: run a grid with no UI and print a comparison.

A thin face on greenlab.core: it validates the file, asks the RunSupervisor to run the grid (or, with
`--ray`, a RayGrid on a Ray cluster, greenlab.core.raygrid), shows progress (a one-line bar on a terminal,
plain lines otherwise) and prints each technique against its baseline. Before the store is opened, the
grid is checked and what it must download is fetched (greenlab.prepare), and a Ray cluster is joined and
checked for room. Exit codes: 0 all completed, 1 a run failed or the grid stopped on an environment
failure, 2 invalid input or a grid that cannot run here (nothing written), 130 interrupted.
"""

from __future__ import annotations

import signal
import sys
from typing import Any, TextIO

from greenlab.console import Progress
from greenlab.core import formatting, report, report_formats
from greenlab.core.analysis import Plan
from greenlab.core.config import GridRun, load_grid
from greenlab.core.energy_to_target import update_energy_to_target
from greenlab.core.fetch import Sources
from greenlab.core.hostlock import ensure_free
from greenlab.core.runner import RunSupervisor
from greenlab.core.store import Store, check_location
from greenlab.prepare import prepare_grid

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Per model, each technique against its baseline: energy (whole run, and training alone), time and
    accuracy, with the change of the mean against the baseline's mean (accuracy: in percentage points).
    The whole run includes start-up, data loading and compression (a capacity scan, say); the training
    column isolates what the compressed model costs to train. A legend under the table says what ± and Δ
    are; the change's own interval and p are the verdicts' (verdict_summary), printed after it."""
    groups = report.summarize(rows)
    if not groups:
        return "no completed runs to summarise"

    def energy(g: report.Group, metric: str) -> str:
        return formatting.energy(g.means[metric], g.ci[metric])

    cells = []
    for g in groups:
        duration = g.means["duration_s"]
        accuracy = g.means["val_accuracy"]
        cells.append((g.model, g.technique, str(g.runs), energy(g, "energy_j"),
                      report.format_change(g.change["energy_j"]), energy(g, "energy_training_j"),
                      report.format_change(g.change["energy_training_j"]),
                      f"{duration:.1f}s" if duration is not None else "-",
                      report.format_change(g.change["duration_s"]),
                      f"{accuracy:.1%}" if accuracy is not None else "-",
                      report.format_change(g.change["val_accuracy"], "val_accuracy")))
    heads = ("model", "technique", "n", "energy", "Δ", "training", "Δ", "time", "Δ", "val acc", "Δ")
    minimum = (14, 14, 2, 11, 8, 11, 8, 8, 8, 8, 9)
    # Widths grow with their cells: an energy with its ± is wider than the bare figure.
    widths = [max(m, len(h), *(len(c[i]) for c in cells)) for i, (h, m) in enumerate(zip(heads, minimum))]

    def line(values: tuple[str, ...]) -> str:
        return " ".join(f"{v:<{w}}" if i < 2 else f"{v:>{w}}" for i, (v, w) in enumerate(zip(values, widths)))

    header = line(heads)
    lines = [header, "-" * len(header)]
    for index, (g, values) in enumerate(zip(groups, cells)):
        if index and g.model != groups[index - 1].model:
            lines.append("")
        lines.append(line(values).rstrip())
    lines.append("")
    if any(g.runs > 1 for g in groups):
        lines.append("±: half-width of the 95 % confidence interval of the mean (Student t over the n runs).")
    lines.append("Δ: the mean against the baseline's mean, % (accuracy: pp); the verdicts below test the plan's "
                 "primary metric, with the interval and p that decide it.")
    return "\n".join(lines)


def verdicts(store: Store, plan: Plan) -> str:
    """The grid's comparisons, judged on the whole store under their plans (as `greenlab report` and the TUI
    judge them), on the plan's primary metric: table, diagnostics and sentences."""
    comparisons = report.judge(store.runs(), store.plans(), metrics=(plan.analysis.primary,))
    return report_formats.verdict_summary(report.of_cells(comparisons, plan.keys), plan.analysis.primary)


def grid_rows(store: Store, grid: list[GridRun]) -> list[dict[str, Any]]:
    """The latest completed run of each grid entry (runs skipped this time included)."""
    keys = {run.settings_key() for run in grid}
    return [row for row in report.latest_runs(store.runs("status = 'completed'")) if row["settings_key"] in keys]


def interrupt_text(queue: Any) -> str:
    """What a Ctrl-C left of the grid: the runs it stored as interrupted, and those completed before it."""
    stopped = sum(1 for entry in queue if entry.status == "interrupted")
    completed = sum(1 for entry in queue if entry.status in ("completed", "failed"))  # both stored, both stay
    done = (f"; the {completed} runs that ended before it stay stored" if completed > 1
            else "; the run that ended before it stays stored" if completed else "")
    if stopped:
        runs = "the run in progress is" if stopped == 1 else f"the {stopped} runs in progress are"
        return f"interrupted: {runs} stored as interrupted{done}"
    if completed:  # between runs: cooling down, measuring idle power, or starting the next child
        return f"interrupted between runs: no run was in progress{done}"
    return ("interrupted before the first run began (waiting for the host, warming up, measuring idle power "
            "or cooling down): no run was stored")


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (a CI job cancelled, `kill`) stops the grid like Ctrl-C: the run is stored as interrupted."""
    raise KeyboardInterrupt


def run_headless(path: str, *, db: str | None = None, force: bool = False, out: TextIO = sys.stdout,
                 wait: bool = True, sources: Sources | None = None, ray: str | None = None) -> int:
    """Run the grid of `path`; `ray` (an address, "" for the default) runs it on Ray instead of here."""
    grid_file = load_grid(path)  # ConfigError propagates to the CLI: exit 2, nothing written
    check_location(db)  # a --db in a missing folder: exit 2 before anything is fetched or created
    grid = grid_file.grid()
    plan = grid_file.plan(grid)
    if ray is None:
        prepare_grid(grid, path, out=out, sources=sources)  # PreflightError/FetchError: exit 2, nothing written
        return _run(grid, plan, path, db=db, force=force, out=out, wait=wait)
    from greenlab.core import raycluster  # only here: a grid without --ray never imports Ray

    address = raycluster.resolve_address(ray)
    # On a cluster its nodes' GPUs count, not this machine's: placement is checked once it is joined.
    prepare_grid(grid, path, out=out, sources=sources, devices=address == raycluster.LOCAL)
    cluster = raycluster.connect(address)  # GreenLabError: exit 2, nothing written
    try:
        raycluster.check_placement(cluster, grid, path)  # PreflightError: exit 2, nothing written
        return _run(grid, plan, path, db=db, force=force, out=out, wait=wait, cluster=cluster)
    finally:
        cluster.close()


def _run(grid: list[GridRun], plan: Plan, path: str, *, db: str | None, force: bool, out: TextIO, wait: bool,
         cluster: Any = None) -> int:
    """Run a prepared grid here, or on `cluster` (a RayCluster); print the summary; the exit code."""
    if not wait and (cluster is None or cluster.single_host):
        ensure_free()  # LockBusy: exit 2 before the store file exists
    store = Store(db)  # the file is created by the first run's row: an interrupt before it leaves none
    store.declare_plan(plan)  # stored with the first run: the verdicts are judged under it
    progress = Progress(out)
    progress.presenter.add_grid(0, grid)  # the queue's statuses tell what an interrupt left
    if cluster is None:
        supervisor: Any = RunSupervisor(store, on_event=progress)
        progress.line(f"greenlab: {len(grid)} runs from {path} into {store.path}")
    else:
        from greenlab.core.raygrid import RayGrid

        supervisor = RayGrid(store, cluster, on_event=progress)
        progress.line(f"greenlab: {len(grid)} runs from {path} into {store.path}, on {cluster.describe()}")
    previous_term = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        outcomes = supervisor.run_grid(grid, force=force, wait=wait)
    except KeyboardInterrupt:
        progress.line(interrupt_text(progress.snapshot.queue))
        update_energy_to_target(store)  # the runs completed before the interrupt are judged as after a grid
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    update_energy_to_target(store)
    progress.line("")
    progress.line(summary_table(grid_rows(store, grid)))
    judged = verdicts(store, plan)
    if judged:
        progress.line("")
        progress.line(judged)
    measured = [o for o in outcomes if o.row.get("energy_measured_j")]
    if outcomes and not measured:
        progress.line("\nenergy: every figure above is an estimate (no RAPL or NVML here); see "
                      "runs.meters and energy_components.inputs for the formula's inputs")
    store.close()
    if any(o.status == "interrupted" for o in outcomes):
        return EXIT_INTERRUPTED
    if progress.stopped is not None or any(o.status == "failed" for o in outcomes):
        return EXIT_FAILED
    return EXIT_OK
