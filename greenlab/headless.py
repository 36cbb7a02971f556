"""`greenlab --headless experiments.toml`: run a grid with no UI and print a comparison.

A thin face on the grid session (greenlab.core.grid.session), which checks the grid, fetches what it
needs, joins a Ray cluster with `--ray`, runs the grid and judges it: this module shows the session's
events (a one-line bar on a terminal, plain lines otherwise) and prints its outcome, each technique
against its baseline and the plan's verdicts. `greenlab --fetch FILE` is here too. Exit codes: 0 all
completed, 1 a run failed or the grid stopped on an environment failure, 2 invalid input or a grid that
cannot run here (nothing written), 130 interrupted.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from greenlab.console import ConsoleView
from greenlab.core.grid import forecast as grid_forecast
from greenlab.core.grid.queue import REPEATED, STORED
from greenlab.core.grid.session import GridRequest, GridSession, Sources, fetch_planned, plan_fetch
from greenlab.core.plan.config import load_grid
from greenlab.core.report import compare, formatting, render
from greenlab.core.run.cancel import SignalInterrupt
from greenlab.core.store.rows import RunRow

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def summary_table(rows: Sequence[RunRow]) -> str:
    """Per model, each technique against its baseline: energy (whole run, and training alone), time and
    accuracy, with the change of the mean against the baseline's mean (accuracy: in percentage points).
    The whole run includes start-up, data loading and compression (a capacity scan, say); the training
    column isolates what the compressed model costs to train. A legend under the table says what ± and Δ
    are; the change's own interval and p are the verdicts' (verdict_summary), printed after it."""
    groups = compare.summarize(rows)
    if not groups:
        return "no completed runs to summarise"

    def energy(g: compare.Group, metric: str) -> str:
        return formatting.energy(g.means[metric], g.ci[metric])

    cells = []
    for g in groups:
        duration = g.means["duration_s"]
        accuracy = g.means["val_accuracy"]
        cells.append(
            (
                g.model,
                g.technique,
                str(g.runs),
                energy(g, "energy_j"),
                compare.format_change(g.change["energy_j"]),
                energy(g, "energy_training_j"),
                compare.format_change(g.change["energy_training_j"]),
                f"{duration:.1f}s" if duration is not None else "-",
                compare.format_change(g.change["duration_s"]),
                f"{accuracy:.1%}" if accuracy is not None else "-",
                compare.format_change(g.change["val_accuracy"], "val_accuracy"),
            )
        )
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
    lines.append(
        "Δ: the mean against the baseline's mean, % (accuracy: pp); the verdicts below test the plan's "
        "primary metric, with the interval and p that decide it."
    )
    return "\n".join(lines)


def interrupt_text(queue: Any) -> str:
    """What a Ctrl-C left of the grid: the runs it stored as interrupted, and those completed before it."""
    stopped = sum(1 for entry in queue if entry.status == "interrupted")
    completed = sum(1 for entry in queue if entry.status in ("completed", "failed"))  # both stored, both stay
    done = (
        f"; the {completed} runs that ended before it stay stored"
        if completed > 1
        else "; the run that ended before it stays stored"
        if completed
        else ""
    )
    if stopped:
        runs = "the run in progress is" if stopped == 1 else f"the {stopped} runs in progress are"
        return f"interrupted: {runs} stored as interrupted{done}"
    if completed:  # between runs: cooling down, measuring idle power, or starting the next child
        return f"interrupted between runs: no run was in progress{done}"
    return (
        "interrupted before the first run began (waiting for the host, warming up, measuring idle power "
        "or cooling down): no run was stored"
    )


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (a CI job cancelled, `kill`) stops the grid like Ctrl-C: the run is stored as interrupted,
    with the signal's name as the reason."""
    raise SignalInterrupt(signal.Signals(signum).name)


def run_headless(
    path: str,
    *,
    db: str | None = None,
    force: bool = False,
    out: TextIO = sys.stdout,
    wait: bool = True,
    sources: Sources | None = None,
    ray: str | None = None,
) -> int:
    """Run the grid of `path`; `ray` (an address, "" for the default) runs it on Ray instead of here."""
    grid_file = load_grid(path)  # ConfigError propagates to the CLI: exit 2, nothing written
    request = GridRequest.from_file(grid_file, db=db, force=force, wait=wait, ray=ray, sources=sources)
    progress = ConsoleView(out)
    session = GridSession(request, on_event=progress)  # a --db in a missing folder: exit 2, nothing created
    session.prepare()  # PreflightError, FetchError, a Ray that cannot be joined: exit 2, nothing written
    where = f", on {session.cluster.describe()}" if session.cluster is not None else ""
    count = len(request.runs)
    progress.line(f"greenlab: {count} run{'s' * (count != 1)} from {path} into {session.store_path}{where}")
    planned = session.preview()
    queue, forecast = planned.queue, planned.forecast
    # The queue's statuses tell what an interrupt left; the runs it foresees skipped are counted as such.
    progress.presenter.add_grid(0, request.runs, skip=queue.indices(STORED, REPEATED))
    progress.line(f"forecast: {forecast.describe()}")
    if forecast.too_long:  # headless asks nobody: it says so where it cannot be missed, and runs
        progress.line(
            f"\n!!! {grid_forecast.too_long_text(forecast)}: it starts now; Ctrl-C stops it, and the runs\n"
            "!!! that end before stay stored (run it again to resume)\n"
        )
    started = time.monotonic()
    previous_term = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        outcome = session.run()
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    if outcome.cut_short:
        progress.line(interrupt_text(progress.snapshot.queue))
        return EXIT_INTERRUPTED
    progress.line("")
    progress.line(summary_table(outcome.rows))
    if forecast.runs:
        used = [o.row.get("energy_j") for o in outcome.outcomes]
        grids = progress.snapshot.grids
        waited = grids[0].waited_s if grids else 0.0  # another grid's, not this one's: no forecast's error
        ran = time.monotonic() - started - waited
        progress.line(f"forecast against the grid: {forecast.against(ran, used, waited_s=waited)}")
    judged = render.verdict_summary(outcome.verdicts, request.plan.analysis.primary)
    if judged:
        progress.line("")
        progress.line(judged)
    if outcome.all_estimated:
        progress.line(
            "\nenergy: every figure above is an estimate (no RAPL or NVML here); see "
            "runs.meters and energy_components.inputs for the formula's inputs"
        )
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    if progress.stopped is not None or outcome.failed:
        return EXIT_FAILED
    return EXIT_OK


def run_fetch(path: str, *, out: TextIO = sys.stdout, sources: Sources | None = None) -> int:
    """`greenlab --fetch FILE`: download every dataset and weight file the grid needs into its cache."""
    plan = plan_fetch(load_grid(path), sources)  # ConfigError: exit 2, nothing written
    if not plan.todo:
        out.write(
            f"nothing to download: {path} needs {plan.present} file{'s' if plan.present != 1 else ''} from "
            "the internet and every one is present\n"
            if plan.present
            else f"nothing to download: {path} runs offline (no dataset or weights to fetch)\n"
        )
        return 0
    out.write(
        f"greenlab: {len(plan.todo)} to download for {path}"
        + (f" ({plan.present} present)" if plan.present else "")
        + "\n"
    )
    fetched = fetch_planned(plan, ConsoleView(out))  # FetchError: exit 2
    out.write(f"fetched {fetched}: the grid of {path} can now run offline\n")
    return 0
