"""When a failure will fail every following run the same way, the grid stops instead of repeating it.

Environment failures stop a grid at once: no CUDA, no disk space, a run store that cannot be written.
So does an error that runs of two different models hit one after the other (compared by their first
line with numbers stripped): the cause is then the machine or the settings, not a model. A failure of
one model only (its shape error, or an out-of-memory, which depends on the model's size) lets the grid
go on, even when that model fails the same way for each of its techniques.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from typing import Any

from greenlab.core.plan.config import GridRun
from greenlab.core.store.errors import StoreError
from greenlab.core.store.journal import RecordKept

_ENVIRONMENT = [
    (
        re.compile(
            r"CUDA is not available|no CUDA GPUs are available|found no NVIDIA driver|"
            r"CUDA driver version is insufficient|CUDA-capable device\(s\) is/are busy",
            re.I,
        ),
        "no CUDA",
    ),
    (re.compile(r"No space left on device|database or disk is full|Disk quota exceeded", re.I), "no disk space"),
    (
        re.compile(r"readonly database|read-only file system|disk I/O error|unable to open database file", re.I),
        "the run store cannot be written",
    ),
]
_RUN_SPECIFIC = re.compile(r"out of memory", re.I)  # a smaller model may still fit
_NUMBER = re.compile(r"\d+(\.\d+)?")


@dataclass
class GridStopped:
    """A grid event: the grid stopped because every following run would fail the same way."""

    cause: str  # one line: what failed, and why the rest would too
    not_started: list[GridRun] = field(default_factory=list)
    store_failed: bool = False  # the run store itself failed (a record kept aside): nothing more is asked of it


def store_failure(exc: BaseException) -> bool:
    """The exception is the run store's (it could not take a write, or a record was kept beside it). A store
    that refused its file (damaged, another application's) is not: the grid ends on that refusal, exit 2."""
    return isinstance(exc, RecordKept) or (isinstance(exc, StoreError) and not exc.refused)


def first_line(error: str) -> str:
    return next((line.strip() for line in error.splitlines() if line.strip()), "")


def signature(error: str) -> str:
    """An error's first line with numbers stripped, so 'run 3: 75 px' and 'run 4: 299 px' compare equal."""
    return _NUMBER.sub("N", first_line(error))


def environment_cause(error: str) -> str | None:
    """'no CUDA: <first line>' and the like when the error says the machine itself is the problem."""
    for pattern, label in _ENVIRONMENT:
        if pattern.search(error):
            return f"{label}: {first_line(error)}"
    return None


def exception_cause(exc: BaseException) -> str | None:
    """The environment cause of an exception raised while running or storing a run, or None."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, RecordKept):
        return str(exc)
    if store_failure(exc):
        return environment_cause(text) or f"the run store cannot be written: {first_line(text)}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no disk space: {first_line(text)}"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return f"the run store cannot be written: {first_line(text)}"
    return environment_cause(text)


class StopRule:
    """Decides, after each stored run, whether the rest of the grid would fail the same way."""

    def __init__(self) -> None:
        self._last: tuple[str, str, str] | None = None  # model, signature, first line of the last failure

    def cause(self, outcome: Any) -> str | None:
        """The reason to stop after `outcome` (a RunStored), or None to go on."""
        if outcome.status != "failed":
            if outcome.status == "completed":
                self._last = None
            return None
        error = outcome.error or ""
        environment = environment_cause(error)
        if environment is not None:
            return environment
        if _RUN_SPECIFIC.search(first_line(error)):
            self._last = None
            return None
        model, shape = outcome.run.model, signature(error)
        last, self._last = self._last, (model, shape, first_line(error))
        if last is not None and last[1] == shape and last[0] != model:
            return f"the same error on {last[0]} and {model}: {first_line(error)}"
        return None
