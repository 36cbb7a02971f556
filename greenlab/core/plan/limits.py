"""How large a grid may be: a runaway file is refused in a second, before it is parsed or expanded.

A grid is models × techniques × repeats, summed over its experiments. `max_runs` (in [defaults] only: it
bounds the grid, not a run) caps that sum at 10,000 unless the file raises it; `repeats` has its own
declared maximum (greenlab.core.plan.settings). A file over 10 MB is refused before it is read whole, and
one with more [[experiment]] tables than `max_runs` by counting its headers, before the TOML parser (which
needs minutes and gigabytes for a 50 MB file) sees it. This module only counts and checks; config.py calls it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from greenlab.core.errors import ConfigError, toml_text
from greenlab.core.text import clip, escape_controls, first_control

MAX_FILE_BYTES = 10_000_000  # an experiments file is a few kilobytes; 10 MB is a runaway (or not a grid at all)
MAX_RUNS_KEY = "max_runs"
MAX_RUNS_DEFAULT = 10_000
MAX_RUNS_DOC = (
    "grid: the most runs the file may expand to (models × techniques × repeats, summed over experiments); "
    f"a larger grid is refused before anything runs; [defaults] only; default {MAX_RUNS_DEFAULT:,}"
)

_EXPERIMENT_HEADER = re.compile(rb"^[ \t]*\[\[[ \t]*experiment[ \t]*\]\]", re.MULTILINE)
_MAX_RUNS_LINE = re.compile(rb"^[ \t]*max_runs[ \t]*=[ \t]*([0-9][0-9_]*)", re.MULTILINE)


@dataclass(frozen=True)
class Size:
    """One experiment's share of the grid, for the message that refuses it."""

    name: str
    models: int
    techniques: int
    repeats: int

    @property
    def runs(self) -> int:
        return self.models * self.techniques * self.repeats


def max_runs(defaults: dict[str, Any]) -> int:
    """The [defaults] table's `max_runs` (validated), else the default; ConfigError keyed defaults.max_runs."""
    value = defaults.get(MAX_RUNS_KEY, MAX_RUNS_DEFAULT)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"must be a whole number of runs of at least 1, got {toml_text(value)}; "
            f"write e.g. max_runs = {MAX_RUNS_DEFAULT} (the default) or more for a larger study",
            key=f"defaults.{MAX_RUNS_KEY}",
        )
    return value


def refuse_in_experiment(table: dict[str, Any], label: str) -> None:
    if MAX_RUNS_KEY in table:
        raise ConfigError(
            "max_runs bounds the whole grid, not one experiment; move it to [defaults]",
            key=f"{label}.{MAX_RUNS_KEY}",
        )


def too_large(size: int, source: str) -> ConfigError:
    return ConfigError(
        f"{size:,} bytes, more than a grid file may hold ({MAX_FILE_BYTES:,}); an experiments file is a few "
        "kilobytes: pass the right file, or split the study",
        source=source,
    )


def guard_text(data: bytes, source: str) -> None:
    """Refuse, without parsing, a file larger than MAX_FILE_BYTES, or with more [[experiment]] tables than its
    max_runs allows (each table is at least one run). The limit is read from any `max_runs = N` line, the
    largest if several: a guard may only be looser than the full check that follows, never stricter."""
    if len(data) > MAX_FILE_BYTES:
        raise too_large(len(data), source)
    written = [int(m.group(1).replace(b"_", b"")) for m in _MAX_RUNS_LINE.finditer(data)]
    limit = max([MAX_RUNS_DEFAULT, *written])
    for count, match in enumerate(_EXPERIMENT_HEADER.finditer(data), start=1):
        if count > limit:
            line = data.count(b"\n", 0, match.start()) + 1
            total = count + sum(1 for _ in _EXPERIMENT_HEADER.finditer(data, match.end()))  # counted, not listed
            raise too_many_experiments(total, limit).located(source, line)


def control_character(data: Any, path: tuple[str | int, ...] = ()) -> tuple[ConfigError, tuple[str | int, ...]] | None:
    """The first key or text value of a parsed file that holds a control character (ESC, NUL, ...), as a
    ConfigError naming its key path, with the path for the line; None when there is none. Names and settings
    are printed on terminals and written into CSV files: an escape sequence from a shared grid file must not
    reach either."""
    items: Any = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        here = (*path, key)
        for text, what in ((key, "key"), (value, "value")):
            found = first_control(text) if isinstance(text, str) else None
            if found is not None:
                shown = ".".join(f"[{p}]" if isinstance(p, int) else escape_controls(clip(p)) for p in here)
                error = ConfigError(
                    f"the {what} holds a control character ({found[1]} at character {found[0] + 1}); "
                    "names and settings are plain text: remove it",
                    key=shown.replace(".[", "["),
                )
                return error, here
        if isinstance(value, (dict, list)):
            deeper = control_character(value, here)
            if deeper is not None:
                return deeper
    return None


def too_many_experiments(count: int, limit: int) -> ConfigError:
    """The refusal of a file with more experiments than max_runs, counted as headers or as parsed tables."""
    return ConfigError(
        f"{count:,} experiments, each at least one run, exceed max_runs = {limit:,}; "
        f"split the study into files of at most {limit:,} runs, or raise max_runs in [defaults] "
        "if a grid this large is meant",
        key="experiment",
    )


def check_size(sizes: list[Size], limit: int) -> None:
    """ConfigError naming the total and the largest experiments when the grid exceeds `limit` runs."""
    total = sum(size.runs for size in sizes)
    if total <= limit:
        return
    largest = sorted(sizes, key=lambda s: s.runs, reverse=True)[:3]
    parts = "; ".join(
        f"'{s.name}': {s.models} model{'s' * (s.models != 1)} × {s.techniques} technique"
        f"{'s' * (s.techniques != 1)} × {s.repeats} repeat{'s' * (s.repeats != 1)} = {s.runs:,}"
        for s in largest
    )
    raise ConfigError(
        f"the grid expands to {total:,} runs ({parts}{'; …' if len(sizes) > len(largest) else ''}), "
        f"more than max_runs = {limit:,}; lower repeats, models or techniques, or raise max_runs in "
        "[defaults] if a grid this large is meant",
        key=f"defaults.{MAX_RUNS_KEY}",
    )
