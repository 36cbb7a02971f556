"""`greenlab report` and the TUI's verdicts at the scale of a real study, in one run.

Builds a store of 5,000 completed runs — 25 models x 8 techniques (a baseline and 7 compressions) x 25
repeats, two epochs each, under one declared plan: 175 comparisons per metric, 1,050 over the six
metrics — through the ordinary Store methods, then times:
- `greenlab report` as a user runs it (text and json): a new process each time, from the interpreter's start
  to its exit; then its parts, as it runs them (the start-up: interpreter and imports, scipy's included; the
  store's columns a report reads; energy to target; judging the metrics each format shows; rendering), the
  parts after the start-up in this process;
- the TUI on that store: its first frame as `greenlab --db STORE` draws it in a terminal (a pseudo-terminal
  here, the process started from scratch); the runs table after `3` is pressed at once; the verdicts
  (judged on a worker thread); how long a key (sort, reverse, search, next page) holds the UI thread while
  the verdicts are being judged.

Targets: the report under 1 s; the TUI's first frame under 1 s, the runs table under 0.5 s after `3`, the
verdicts under 2 s, every key under 100 ms. Nothing is asserted; the figures are printed. Usage: python benchmarks/report_scale.py [--models 25] [--repeats 25]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from greenlab.core.grid.session import with_targets
from greenlab.core.plan.analysis import AnalysisSettings, Cell, Plan
from greenlab.core.report import compare, energy_to_target, render, stats
from greenlab.core.store.database import Store

TECHNIQUES = ("baseline", "stego", "prune", "lowrank", "prune+stego", "stego-dtype", "prune-structured", "lowrank-25")


def build(path: Path, models: int, repeats: int) -> int:
    rng = random.Random(5)
    names = [f"model{m:02d}" for m in range(models)]
    plan = Plan(
        AnalysisSettings(), tuple(Cell(f"cond-{n}", t, n, "study") for n in names for t in TECHNIQUES[1:]), "study.toml"
    )
    store = Store(path, durable=False)  # a benchmark's fixture: the speed of building it is not measured
    store.declare_plan(plan)
    count = 0
    for name in names:
        base_energy = rng.uniform(50, 5000)
        effects = {t: rng.choice([1.0, 1.0, 0.97, 0.8, 1.1]) for t in TECHNIQUES}
        effects["baseline"] = 1.0
        for repeat in range(repeats):
            for technique in TECHNIQUES:
                energy = base_energy * effects[technique] * rng.lognormvariate(0, 0.05)
                accuracy = min(1.0, max(0.0, 0.9 - (0.0 if technique == "baseline" else rng.uniform(0, 0.02))))
                run_id = store.start_run(
                    {
                        "experiment": "study",
                        "model": name,
                        "dataset": "cifar10",
                        "technique": technique,
                        "settings_key": f"{name}-{technique}-{repeat}",
                        "conditions_key": f"cond-{name}",
                        "repeat": repeat,
                        "seed": repeat,
                        "settings": {"epochs": 2},
                    }
                )
                for epoch in (1, 2):
                    store.add_epoch(
                        {
                            "run_id": run_id,
                            "epoch": epoch,
                            "energy_j": energy / 2,
                            "val_accuracy": accuracy - (0.05 if epoch == 1 else 0.0),
                        }
                    )
                store.update_run(
                    run_id,
                    status="completed",
                    energy_training_j=energy,
                    energy_j=energy * 1.1,
                    duration_s=energy / 100,
                    val_accuracy=accuracy,
                    val_f1=accuracy - 0.01,
                    energy_measured_j=energy * 1.1,
                    energy_estimated_j=0.0,
                )
                count += 1
    with_targets(store)
    store.close()
    return count


def time_report(path: Path, fmt: str) -> float:
    """Seconds `greenlab report --db PATH --format FMT` takes as a user runs it: a new process, from the
    interpreter's start to its exit (its output thrown away)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "greenlab", "report", "--db", str(path), "--format", fmt],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"report --format {fmt} failed: {done.returncode}: {done.stderr}")
    return time.perf_counter() - started


def parts(path: Path, tries: int = 5) -> dict[str, float]:
    """Medians of `tries` of each part of a report as greenlab report runs it: the start-up in a new process
    each try, the rest in this one (its imports done), the cycle collector paused as the report pauses it."""
    times: dict[str, list[float]] = {}

    def timed(name: str, started: float) -> None:
        times.setdefault(name, []).append(time.perf_counter() - started)

    stats.t_sf(1.0, 2.0)  # scipy imported: its import is the start-up's
    for _ in range(tries):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import greenlab.cli, greenlab.report_cli, scipy.special"], check=True)
        timed("start-up (a new interpreter, its imports, scipy's included)", started)
        gc.disable()
        started = time.perf_counter()
        store = Store.reader(path, check=True)
        runs = store.runs(columns=compare.COLUMNS)
        epochs, plans = store.epochs_by_run(columns=energy_to_target.EPOCH_COLUMNS), store.plans()
        store.close()
        timed("read the store (the columns a report reads, checked)", started)
        started = time.perf_counter()
        rows = energy_to_target.with_energy_to_target(runs, lambda i, epochs=epochs: epochs.get(i, []))
        timed("energy to target", started)
        shown = render.metrics_shown("text", {compare.HEADLINE}, every=True)
        started = time.perf_counter()
        comparisons = compare.judge(rows, plans, metrics=shown)
        timed(f"judge for text ({len(shown)} metrics)", started)
        started = time.perf_counter()
        render.render_sections("text", render.by_primary(comparisons))
        timed("render text", started)
        started = time.perf_counter()
        comparisons = compare.judge(rows, plans)
        timed(f"judge for json ({len(compare.METRICS)} metrics)", started)
        started = time.perf_counter()
        render.render_json(comparisons, compare.METRICS)
        timed("render json", started)
        gc.enable()
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def first_frame(path: Path, tries: int = 3) -> list[float]:
    """Seconds from starting `greenlab --db PATH` in a pseudo-terminal to its first frame on screen (the tab
    bar drawn), each try a new process."""
    import os
    import pty
    import select
    import signal
    import sys

    times = []
    for _ in range(tries):
        started = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:  # the child: the TUI, as a user starts it
            os.environ.update({"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"})
            os.execv(sys.executable, [sys.executable, "-m", "greenlab", "--db", str(path), "--experiments", "none"])
        seen = b""
        drawn = None
        while drawn is None and time.perf_counter() - started < 30:
            ready, _w, _x = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
                if b"F4" in seen and b"Runs" in seen:
                    drawn = time.perf_counter() - started
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
        times.append(drawn if drawn is not None else float("nan"))
    return times


async def tui_table(path: Path) -> dict[str, float]:
    """In one app, from the moment it is mounted: `3` pressed at once (the pane switched as the key would,
    without the test harness waiting for the app to be idle, which it is not while the store is read), then
    how long until the runs table lists rows, and until the verdicts are judged."""
    from greenlab.tui.app import GreenLabApp

    found: dict[str, float] = {}
    app = GreenLabApp(db=str(path))
    async with app.run_test(size=(120, 40)):
        pressed = time.perf_counter()
        app.action_pane_key("runs")
        table = app.query_one("#runs-table")
        while not getattr(table, "row_count", 0):
            await asyncio.sleep(0.005)
        found["table after 3"] = time.perf_counter() - pressed
        while app.runs_pane.comparisons is None:
            await asyncio.sleep(0.01)
        found["verdicts after 3"] = time.perf_counter() - pressed
    return found


async def tui_keys(path: Path) -> dict[str, float | list[float]]:
    """How long the runs pane holds the UI thread: a reload's call (the store is read on a thread), the
    rows' arrival (filters and table filled from prepared rows), and each key (sort, reverse, a search) while
    the verdicts are judged on the reading thread; and how long reading and judging take there."""
    from greenlab.tui.app import GreenLabApp

    app = GreenLabApp(db=str(path))
    found: dict[str, float | list[float]] = {}
    keys: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        pane = app.runs_pane
        while pane.comparisons is None:  # the first read, at start
            await pilot.pause(0.05)
        started = time.perf_counter()
        pane.reload()
        found["reload call"] = time.perf_counter() - started
        generation = pane._generation
        before = time.perf_counter()
        pane._read(pane.RowsRead(generation, pane.rows))  # what the UI thread does when the rows arrive
        found["rows arrive"] = time.perf_counter() - before

        def search(text: str) -> None:
            pane.query_text = text
            pane._show()

        handlers = [
            pane.action_sort_next,
            pane.action_sort_reverse,
            lambda: search("model0"),
            lambda: search(""),
            lambda: pane.action_page(1),
        ]
        for handler in handlers * 3:
            if pane.comparisons is not None:
                break  # judged already: the keys below would not be measured against the judging
            before = time.perf_counter()
            handler()
            keys.append(time.perf_counter() - before)
            await pilot.pause(0.01)  # let the reading thread and the screen have their turn, as between keys
        while pane.comparisons is None:
            await pilot.pause(0.05)
        found["read and judged"] = time.perf_counter() - started
    found["keys"] = keys
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        # The TUI as a new user meets it: no preferences of this machine's user (a saved sort, a search).
        import os

        os.environ["GREENLAB_CONFIG"] = str(Path(folder) / "config.toml")
        path = Path(folder) / "study.db"
        started = time.perf_counter()
        runs = build(path, args.models, args.repeats)
        comparisons = args.models * (len(TECHNIQUES) - 1)
        print(
            f"store: {runs} completed runs, {comparisons} comparisons per metric, {6 * comparisons} in all "
            f"(built in {time.perf_counter() - started:.1f} s)"
        )
        for fmt in ("text", "json"):
            seconds = [time_report(path, fmt) for _ in range(5)]
            print(
                f"greenlab report --format {fmt}: median {statistics.median(seconds):.2f} s of 5, a new process "
                f"each (target under 1 s: {statistics.median(seconds) / 1.0:.2f}x the target)"
            )
        for name, seconds in parts(path).items():
            print(f"  {name}: {seconds:.3f} s")
        frames = first_frame(path)
        print(
            f"TUI first frame (greenlab --db, a new process in a terminal): median {statistics.median(frames):.2f} s "
            f"of {len(frames)} (target under 1 s: {statistics.median(frames) / 1.0:.2f}x)"
        )
        table = asyncio.run(tui_table(path))
        print(
            f"TUI runs table after 3 (pressed at start): {table['table after 3']:.2f} s (target under 0.5 s: "
            f"{table['table after 3'] / 0.5:.2f}x); verdicts after {table['verdicts after 3']:.2f} s (target "
            f"under 2 s: {table['verdicts after 3'] / 2.0:.2f}x)"
        )
        found = asyncio.run(tui_keys(path))
        keys = found["keys"]
        assert isinstance(keys, list)
        median = statistics.median(keys) if keys else float("nan")
        print(
            f"TUI runs pane, UI thread: a key (sort, reverse, search, next page) holds it {1000 * median:.0f} ms (median of "
            f"{len(keys)}, max {1000 * max(keys, default=float('nan')):.0f} ms) while the verdicts are judged "
            f"(target under 100 ms: {median / 0.1:.2f}x); a reload's call {1000 * float(found['reload call']):.0f} "
            f"ms, its rows' arrival {1000 * float(found['rows arrive']):.0f} ms; reading and judging took "
            f"{float(found['read and judged']):.2f} s on the reading thread"
        )


if __name__ == "__main__":
    main()
