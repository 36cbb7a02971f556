"""The run store's own errors: the only failures a caller of greenlab.core.store sees. SQLite's exceptions
stop here (`translated`), so no module outside the store imports sqlite3 to catch them.

Every one is a StoreError, a GreenLabError (one printable line, exit 2 where a face ends on it). Its class
says what happened to the store; `refused` says when:

- refused: the store declined the file before using it (opening it, or checking it at a grid's end): a
  complete sentence naming the fix; nothing was written, and a face ends on it;
- not refused: an operation on a store in use failed; the message is SQLite's own words (or the store's,
  for a lock or a file gone), and a grid keeps the run's record beside the store (greenlab.core.store.journal).
"""

from __future__ import annotations

import sqlite3

from greenlab.core.errors import GreenLabError


class StoreError(GreenLabError):
    """Base of the store's errors; raised as such for a failure of no kind below (a full disk, an I/O
    error, a file SQLite cannot open)."""

    refused = False  # see the module docstring

    def __init__(self, message: str, *, refused: bool | None = None) -> None:
        super().__init__(message)
        if refused is not None:
            self.refused = refused


class StoreBusy(StoreError):
    """Another process held the store's lock for longer than the busy budget (or the wait for it was
    stopped by the user)."""


class StoreDamaged(StoreError):
    """SQLite found the file damaged: its quick_check or integrity_check, or a page it cannot read."""


class StoreForeign(StoreError):
    """The file is not a GreenLab store: another application's database, or not a database at all."""

    refused = True


class StoreNewer(StoreError):
    """The store was written by a newer GreenLab: its schema may mean what this one cannot read."""

    refused = True


class StoreReadOnly(StoreError):
    """The store cannot be written: its file or folder is read-only, or it was opened to read only."""


class StoreReplaced(StoreError):
    """The store's file was removed, or another file put in its place, while this process had it open: a
    write now would go to a file no one will read (or to someone else's store)."""


class StoreWriteError(StoreError):
    """A write queued on the store's write thread failed; `error` is what it raised (a StoreError, or a
    bug), and the message names the write and that error."""

    def __init__(self, message: str, error: BaseException) -> None:
        super().__init__(message)
        self.error = error


def is_busy(exc: sqlite3.Error) -> bool:
    """Another process holds a lock on the file (a write lock, or all of it: locking_mode=EXCLUSIVE)."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def translated(exc: sqlite3.Error) -> StoreError:
    """SQLite's error as the store's own, in SQLite's words (not refused: the store was in use)."""
    text = str(exc)
    lowered = text.lower()
    if is_busy(exc):
        return StoreBusy(text)
    if "malformed" in lowered or "not a database" in lowered:
        return StoreDamaged(text)
    if "readonly" in lowered or "read-only" in lowered:
        return StoreReadOnly(text)
    return StoreError(text)
