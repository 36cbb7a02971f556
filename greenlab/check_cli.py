"""`greenlab check [--db PATH]`: SQLite's full integrity check of a run store, read only.

A grid runs the quick check each time it opens its store and refuses a damaged one; this command reads every
page, index and constraint, lists what is wrong, and says how to recover what the file still holds. Exit 0
for a sound store, 2 for a damaged one (or no store, or not GreenLab's), with nothing written.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from greenlab.core.errors import GreenLabError
from greenlab.core.store import journal
from greenlab.core.store.database import Store
from greenlab.core.store.schema import damaged
from greenlab.core.text import escape_controls


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise GreenLabError(f"check: {message}; see greenlab check --help")


def run_check(argv: list[str], out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = _Parser(prog="greenlab check", description="Check a run store for damage (SQLite integrity_check).")
    parser.add_argument("--db", metavar="PATH", help="run store (default: $GREENLAB_DB or data/runs.db)")
    args = parser.parse_args(argv)
    store = Store.reader(args.db, on_busy=lambda text: print(f"greenlab check: {text}", file=sys.stderr))
    try:
        found = store.integrity()
        if found != ["ok"]:
            for line in found:
                out.write(escape_controls(line, keep="") + "\n")
            raise damaged(store.path, found)
        runs = len(store.runs())
    finally:
        store.close()
    kept = journal.pending(store.path)
    waiting = f"; {len(kept)} record{'s' * (len(kept) != 1)} waiting in {journal.folder(store.path)}" if kept else ""
    out.write(f"{store.path}: sound (integrity_check ok; {runs} run{'s' * (runs != 1)}{waiting})\n")
    return 0
