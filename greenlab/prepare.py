"""The terminal face of preflight and fetch: `greenlab --fetch FILE`, and readying a grid before --headless.

A thin face on greenlab.core.preflight and greenlab.core.fetch: their download events go through the
console face (greenlab.console: a one-line bar with bytes, rate and ETA on a terminal, a line per quarter
otherwise) and turns what cannot be
fetched into one located line each and exit code 2. Nothing here opens the run store.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from greenlab.console import Progress
from greenlab.core import fetch, preflight
from greenlab.core.config import GridRun, expand_grid, load_experiments


def _failures(report: fetch.FetchReport, source: str | Path, tried: int) -> fetch.FetchError:
    """The last word on files not fetched. Each was already shown as it failed, with why and where to put it
    by hand (a FAILED line of the progress): this names them and the grid's file, without repeating that."""
    names = ", ".join(item.what for item, _reason in report.failed)
    count = len(report.failed)
    lines = "the FAILED line above says" if count == 1 else "the FAILED lines above say"
    return fetch.FetchError(f"{source}: {count} of {tried} file{'s' if tried != 1 else ''} not fetched "
                            f"({names}); {lines} why and how to get {'it' if count == 1 else 'them'} by hand")


def prepare_grid(grid: list[GridRun], source: str | Path, *, out: TextIO = sys.stdout,
                 sources: fetch.Sources | None = None, devices: bool = True) -> None:
    """Check the grid (PreflightError: exit 2) and download what it needs on first use, with progress.
    `devices` False: the grid runs on a Ray cluster, which checks its own GPUs (greenlab.core.raycluster)."""
    report = preflight.check_file(grid, source, sources=sources, devices=devices)
    report.raise_for_problems()
    if report.to_fetch:
        fetched = fetch.fetch_all(report.to_fetch, Progress(out), reachable=report.reachable,
                                  experiments_file=str(source))
        if fetched.failed:
            raise _failures(fetched, source, len(set(report.to_fetch)))


def run_fetch(path: str, *, out: TextIO = sys.stdout, sources: fetch.Sources | None = None) -> int:
    """`greenlab --fetch FILE`: download every dataset and weight file the grid needs into its cache."""
    grid = expand_grid(load_experiments(path))  # ConfigError: exit 2, nothing written
    needs = fetch.plan(grid, sources)
    todo = fetch.missing(needs)
    present = len({n.requirement for n in needs}) - len(todo)
    if not todo:
        out.write(f"nothing to download: {path} needs {present} file{'s' if present != 1 else ''} from the "
                  "internet and every one is present\n" if present else
                  f"nothing to download: {path} runs offline (no dataset or weights to fetch)\n")
        return 0
    out.write(f"greenlab: {len(todo)} to download for {path}" + (f" ({present} present)" if present else "") + "\n")
    report = fetch.fetch_all(todo, Progress(out), experiments_file=path, fetching=True)
    if report.failed:
        raise _failures(report, path, len(todo))
    out.write(f"fetched {len(report.fetched)}: the grid of {path} can now run offline\n")
    return 0
