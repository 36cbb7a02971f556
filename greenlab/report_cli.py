"""`greenlab report`: the comparisons of a run store as the study's table, JSON, CSV, LaTeX or CodeCarbon's
emissions.csv, and optionally a figure.

A thin face on greenlab.core.report.compare. It checks every argument before reading anything, reads the store
read-only (a report never changes runs.db), renders in memory and only then writes --out and --plot
(greenlab.core.report.output: never the store, a link or an existing file without --force; whole or not at all).
Bad input is a GreenLabError: one line naming the fix, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from greenlab.core.errors import GreenLabError, suggest
from greenlab.core.plan.analysis import PostHoc
from greenlab.core.report import compare, energy_to_target, output, render
from greenlab.core.store import journal
from greenlab.core.store.database import Store, resolve_path
from greenlab.core.store.rows import RunRow
from greenlab.core.text import escape_controls


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2 like every other GreenLab input error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise GreenLabError(f"report: {message}; see greenlab report --help")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="greenlab report",
        description="Compare each technique with its matching baseline: ratio with 95 % CI, Welch p "
        "(Holm-adjusted), equivalence, Hedges' g and a verdict.",
    )
    parser.add_argument("--db", metavar="PATH", help="run store (default: $GREENLAB_DB or data/runs.db)")
    parser.add_argument("--experiment", metavar="NAME", help="only this experiment's techniques")
    parser.add_argument(
        "--metric",
        metavar="NAME",
        help=f"headline metric, and the only one in json/csv ({', '.join(compare.METRICS)}; "
        f"default: the plan's primary metric, all metrics in json/csv)",
    )
    parser.add_argument(
        "--margin",
        metavar="F",
        help="post hoc: equivalence margin as a fraction (0.05 = ±5 %%), instead of the one the "
        "runs' plan declared; every format labels it post hoc",
    )
    parser.add_argument(
        "--alpha", metavar="A", help="post hoc: test level instead of the plan's (0 < A < 0.5); labelled post hoc"
    )
    parser.add_argument(
        "--accuracy-margin-pp",
        metavar="PP",
        help="post hoc: accuracy and F1 equivalence margin in percentage points instead of the "
        "plan's; labelled post hoc",
    )
    parser.add_argument(
        "--format", default="text", metavar="FORMAT", help=f"{' | '.join(render.FORMATS)} (default text)"
    )
    parser.add_argument("--out", metavar="FILE", help="write the report here instead of standard output")
    parser.add_argument("--plot", metavar="FILE", help="also draw the figure into FILE.svg or FILE.png")
    parser.add_argument("--force", action="store_true", help="replace an existing --out or --plot file")
    return parser


def _margin(text: str | None) -> float | None:
    if text is None:
        return None
    value = _float(text, "--margin", "0.05 (±5 %)")
    if not math.isfinite(value) or not 0 < value < 1:
        hint = f"; for ±{value:g} % write --margin {value / 100:g}" if 1 <= value < 100 else ""
        raise GreenLabError(f"--margin is a fraction between 0 and 1 (0.05 means ±5 %), got {text}{hint}")
    return value


def _float(text: str, flag: str, example: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise GreenLabError(f"{flag} must be a number such as {example}, got {text!r}") from None


def _number(text: str | None, flag: str, low: float, high: float, example: str) -> float | None:
    """A post hoc value given on the command line, within (low, high); GreenLabError names the fix."""
    if text is None:
        return None
    value = _float(text, flag, example)
    if not math.isfinite(value) or not low < value < high:
        raise GreenLabError(
            f"{flag} must be between {low:g} and {high:g} (exclusive), got {text}; e.g. {flag} {example}"
        )
    return value


def _choice(value: str, known: tuple[str, ...], flag: str) -> str:
    if value not in known:
        raise GreenLabError(f"unknown {flag} '{value}'{suggest(value, known)}; use one of {', '.join(known)}")
    return value


def run_report(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    with _collector_paused():
        return _run_report(argv, out, err)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector paused while a report is made, and restored: a study's rows, comparisons and
    text hold no cycles to free (a figure's are freed once the report is done), and the collector's passes
    over the growing heap were an eighth of a 5,000-run report's time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _run_report(argv: list[str], out: TextIO | None, err: TextIO | None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    fmt = _choice(args.format, render.FORMATS, "--format")
    headline = _choice(args.metric, compare.METRICS, "--metric") if args.metric else compare.HEADLINE
    margin = _margin(args.margin)
    db = resolve_path(args.db)
    # Checked before the store is read: the store, its companions and the other output are never replaced.
    out_path = output.check_output(args.out, **_output_rules(args, db, "--out")) if args.out else None
    plot_path = output.check_output(args.plot, **_output_rules(args, db, "--plot")) if args.plot else None
    plot_format = plot_path.suffix.lower().lstrip(".") if plot_path else None
    if plot_path and plot_format not in ("svg", "png"):
        raise GreenLabError(f"--plot {plot_path}: name the file .svg or .png")

    post_hoc = PostHoc(
        alpha=_number(args.alpha, "--alpha", 0, 0.5, "0.05"),
        equivalence_margin=margin,
        accuracy_margin_pp=_number(args.accuracy_margin_pp, "--accuracy-margin-pp", 0, 100, "1"),
    )

    kept = journal.pending(db)
    if kept:  # a report never writes, so it cannot import them: it says what it leaves out
        print(
            f"greenlab report: {len(kept)} run record{'s' * (len(kept) != 1)} in {journal.folder(db)} "
            f"{'are' if len(kept) != 1 else 'is'} not in the store yet (it could not take them when their grid "
            "ran; that grid said why) and left out here; the next greenlab or grid that opens the store takes "
            "them in",
            file=err,
        )
    # A report never writes runs.db; a damaged one is refused (quick_check), a locked one waited for, aloud.
    store = Store.reader(db, check=True, on_busy=lambda text: print(f"greenlab report: {text}", file=err))
    try:
        rows: Sequence[RunRow] = store.runs(columns=(*compare.COLUMNS, *render.COLUMNS.get(fmt, ())))
        epochs, plans = store.epochs_by_run(columns=energy_to_target.EPOCH_COLUMNS), store.plans()
    finally:
        store.close()
    experiments = sorted({str(r.experiment) for r in rows if r.experiment})
    if args.experiment is not None and args.experiment not in experiments:
        raise GreenLabError(
            f"no runs of experiment '{args.experiment}' in {db}"
            f"{suggest(args.experiment, experiments)}; experiments there: "
            f"{', '.join(experiments) or 'none'}"
        )
    rows = energy_to_target.with_energy_to_target(rows, lambda run_id: epochs.get(run_id, []))
    # Every comparison is judged on the whole store, under its plan; a filter only picks what is shown. Only
    # the metrics the format shows are judged: a table's headline is its plans' primary (an implied plan's the
    # default) unless --metric names it, and the plot's is the table's.
    headlines = (headline,) if args.metric else {compare.HEADLINE, *(p.analysis.primary for p in plans.values())}
    judged = render.metrics_shown(fmt, headlines, every=not args.metric)
    comparisons = compare.judge(rows, plans, metrics=judged, post_hoc=post_hoc)
    if args.experiment is not None:
        comparisons = compare.of_experiment(comparisons, args.experiment)
    if not comparisons:
        scope = f" of experiment '{args.experiment}'" if args.experiment else ""
        raise GreenLabError(
            f"nothing to compare in {db}: no completed technique runs{scope}; run a grid with "
            "a baseline and at least one technique first"
        )
    # One table per primary metric the plans declared (one, usually); --metric shows that one for all.
    sections = [(headline, comparisons)] if args.metric else render.by_primary(comparisons)
    if len(sections) == 1:
        headline = sections[0][0]

    metrics = (headline,) if args.metric else compare.METRICS
    if fmt in ("text", "markdown", "latex"):
        text = render.render_sections(fmt, sections)
        text += "\n" if fmt == "text" else ""
    elif fmt == "json":
        text = render.render_json(comparisons, metrics)
    elif fmt == "csv":
        text = render.render_csv(rows, comparisons, metrics)
    else:
        runs = render.report_runs(rows, comparisons)
        text = render.render_codecarbon(runs)
        estimated = render.estimated_runs(runs)
        if estimated:
            print(
                f"greenlab report: {estimated} of {len(runs)} runs hold estimated energy, which CodeCarbon's "
                "columns cannot mark; runs.energy_estimated_j and runs.meters say which",
                file=err,
            )
    # Names and settings come from the store, which another tool or an older GreenLab may have written: an
    # ESC or a NUL there is shown as \x1b, \x00, never sent to the terminal or into the CSV as is. JSON has
    # none to escape: its encoder writes every character outside printable ASCII as \uXXXX.
    if fmt != "json":
        text = escape_controls(text)
    files: list[output.Output] = []
    if out_path is not None:
        files.append(output.Output(out_path, text, "--out"))
    if plot_path is not None:
        from greenlab.core.report.plot import render_plot

        files.append(output.Output(plot_path, render_plot(rows, comparisons, str(plot_format), headline), "--plot"))
    output.write_outputs(files, store_path=db, force=args.force)
    if out_path is None:
        out.write(text)
        out.flush()
    for written in files:
        print(f"greenlab report: wrote {written.path}", file=err)
    return 0


def _output_rules(args: argparse.Namespace, db: Path, flag: str) -> dict[str, Any]:
    other = args.plot if flag == "--out" else args.out
    return {"name": flag, "store_path": db, "others": [other] if other else [], "force": args.force}
