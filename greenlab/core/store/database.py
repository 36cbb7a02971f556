"""The run store: data/runs.db through sqlite-utils, in WAL mode, with a versioned public schema.

Only the supervising process writes here. A run row is inserted when the run starts (status `running`)
and completed when it ends, so a killed supervisor leaves evidence; such rows are marked `interrupted`
the next time the store is opened and their supervisor is gone. Every write is its own transaction, so a
crash can lose at most the write in flight, never corrupt what is stored.

The file is created by the first write, not by opening: a grid stopped before its first run (waiting for
the host lock, say) leaves no store behind. A path the user named (--db, $GREENLAB_DB) must be in a folder
that exists; only the default's folder, data/, is created.

Another process may hold the write lock for a while (sqlite-utils in a terminal, a backup, the TUI deleting
rows): every write waits and retries with backoff for up to GREENLAB_STORE_BUSY_S seconds (default 600),
telling `on_busy` once per wait, and only then fails with StoreBusy. A run's record that still cannot be
written goes to the pending folder beside the store (greenlab.core.store.journal), and the next open of the
store imports it.

Every failure leaves a Store as one of the store's own errors (greenlab.core.store.errors): SQLite's are
translated where they are caught (`while_busy`, `check`, `close`), and a file refused at its open says why
in a whole sentence.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from greenlab import __version__
from greenlab.core.plan.analysis import Plan
from greenlab.core.store import journal
from greenlab.core.store.errors import (
    StoreBusy,
    StoreDamaged,
    StoreError,
    StoreForeign,
    StoreReadOnly,
    StoreReplaced,
    is_busy,
    translated,
)
from greenlab.core.store.row_writes import RowWrite
from greenlab.core.store.rows import ComponentRow, EpochRow, RunRow, Sample
from greenlab.core.store.schema import (
    APPLICATION_ID,
    EPOCH_COLUMNS,
    MIGRATIONS,
    RUN_COLUMNS,
    SCHEMA_VERSION,
    check_version,
    damaged,
    hostname_of,
    identify,
    supersede_all,
)

if TYPE_CHECKING:
    import sqlite_utils

DEFAULT_DB = Path("data") / "runs.db"
BUSY_BUDGET_S = 600.0  # how long a write waits for another process's lock, unless GREENLAB_STORE_BUSY_S says
_BACKOFF_S = (0.05, 2.0)  # the first wait between tries, and the longest
T = TypeVar("T")


def busy_budget_s() -> float:
    try:
        return max(0.0, float(os.environ.get("GREENLAB_STORE_BUSY_S", BUSY_BUDGET_S)))
    except ValueError:
        return BUSY_BUDGET_S


# What a `running` row of a dead supervisor becomes: killed, or it could keep the run's end nowhere (a full disk:
# then it printed the run's figures where it ran).
ORPHANED = (
    "the supervising process ended before the run's end was stored (it was killed, or neither the store nor "
    "its pending folder could be written: then it printed the run's figures where it ran)"
)
_QUIET_WAIT_MS = 1000  # how long a write waits on another process's lock before "store busy, waiting"


def _retrying(method: Callable[..., T]) -> Callable[..., T]:
    """A Store write that waits out another process's lock (see the module docstring); inside another
    write's transaction (a kept record's replay) it is part of that one, which is retried whole."""

    @functools.wraps(method)
    def write(self: Store, *args: Any, **kwargs: Any) -> T:
        if self.read_only:
            raise StoreReadOnly(f"{self.path} was opened to read only; {method.__name__} writes it", refused=True)
        if self._db is not None and self._db.conn.in_transaction:
            return method(self, *args, **kwargs)
        return self.while_busy(lambda: method(self, *args, **kwargs))

    return write


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def host_facts() -> dict[str, Any]:
    import psutil

    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
    }


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    return Path(path or os.environ.get("GREENLAB_DB") or DEFAULT_DB)


def _named_by(path: str | os.PathLike[str] | None) -> str | None:
    """Who named the store: "--db", "GREENLAB_DB", or None for the default."""
    if path:
        return "--db"
    return "GREENLAB_DB" if os.environ.get("GREENLAB_DB") else None


def refuse_link(resolved: Path, shown: str) -> None:
    """A store named through a symbolic link is refused: in a folder others can write, a link planted at the
    store's name would have GreenLab create or write a store wherever it points. The user who means the
    target names it (StoreError, refused: nothing created)."""
    if resolved.is_symlink():
        target = os.readlink(resolved)
        real = os.path.realpath(resolved)
        dangling = "" if os.path.exists(real) else ", which does not exist"
        raise StoreError(
            f"{shown} is a symbolic link (to {target}{dangling}); GreenLab does not follow a link to its store: "
            f"name the file itself (--db {real}) if that is the store you mean",
            refused=True,
        )


def check_location(path: str | os.PathLike[str] | None) -> Path:
    """The store's path, refused (StoreError, nothing created) when it cannot hold a store: a folder, or a
    file in a folder that does not exist or cannot be written (StoreReadOnly). The default's folder may be
    missing: GreenLab creates data/ itself; a folder the user named is never created (a typo would grow a
    tree)."""
    resolved = resolve_path(path)
    named_by = _named_by(path)
    shown = {"--db": f"--db {resolved}", "GREENLAB_DB": f"GREENLAB_DB={resolved}"}.get(named_by or "", str(resolved))
    other = "set GREENLAB_DB to another path" if named_by == "GREENLAB_DB" else "choose another --db"
    refuse_link(resolved, shown)
    if resolved.is_dir():
        raise StoreError(f"{shown} is a folder; name a file in it, e.g. {resolved / 'runs.db'}", refused=True)
    folder = resolved.parent
    if named_by is None and not folder.exists():
        return resolved
    if not folder.exists():
        raise StoreError(f"{shown}: folder {folder} does not exist; create it or {other}", refused=True)
    if not folder.is_dir():
        raise StoreError(f"{shown}: {folder} is a file, not a folder; {other}", refused=True)
    if not os.access(folder, os.W_OK | os.X_OK):
        # A store that exists needs its folder too: SQLite keeps its -wal and -shm files beside it.
        raise StoreReadOnly(
            f"{shown}: folder {folder} is not writable (a store writes its -wal and -shm beside it); {other}",
            refused=True,
        )
    if resolved.exists() and not os.access(resolved, os.W_OK):
        raise StoreReadOnly(
            f"{shown} is read-only; make it writable, or {other} (greenlab report reads it as it is)", refused=True
        )
    wal = resolved.with_name(resolved.name + "-wal")
    if not resolved.exists() and wal.is_file() and wal.stat().st_size > 0:
        # A new store beside an old store's log would read that log as its own: SQLite calls the file malformed.
        raise StoreError(
            f"{shown} is missing but {wal} is still there: the store was removed while a program had it open, "
            f"and that log holds its last writes; put the store back beside it, or move {wal.name} (and "
            f"{wal.name[:-4]}-shm) away, then run again",
            refused=True,
        )
    return resolved


class Store:
    """Reads and writes runs.db; see the module docstring for the guarantees."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        on_busy: Callable[[str], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
        read_only: bool = False,
        durable: bool = True,
        same_file: tuple[int, int] | None = None,
    ) -> None:
        self.read_only = read_only
        # durable=False: SQLite does not wait for the disk after each write. Only for a throwaway store built
        # by a benchmark or a fixture: a power cut may lose its last writes (a crash of the process does not).
        self.durable = durable
        self.path = resolve_path(path) if read_only else check_location(path)
        # A writer's connection through sqlite-utils; a reader's is SQLite's own (`_conn`, a writer's too): a
        # report does not wait the tenth of a second sqlite-utils takes to import.
        self._db: sqlite_utils.Database | None = None
        self._conn: sqlite3.Connection | None = None
        self._plan: Plan | None = None  # declared by the grid; recorded with its first run
        self._plan_id: int | None = None
        self.on_busy = on_busy  # told once per wait for another process's lock
        self.on_notice = on_notice  # told what opening the store did that a person should know
        self.notices: list[str] = []  # the same, kept for a face that listens later
        # The file this store writes (device, inode): a write checks it is still the file at the path (a store
        # removed or replaced under a grid keeps its records aside instead). `same_file`: a second connection
        # (the write thread) must open the very file the first one did, never create another.
        self.file: tuple[int, int] | None = same_file
        self._rows: dict[int, dict[str, Any]] = {}  # the rows started here: what a kept record must match
        self.abandon: threading.Event | None = None  # set: a wait for another process's lock gives up now
        if self.path.exists() or same_file is not None:  # opened (and migrated) now: its errors surface here
            if read_only:
                self._open_read_only()
            else:
                self._open()

    @classmethod
    def reader(
        cls, path: str | os.PathLike[str] | None, *, check: bool = False, on_busy: Callable[[str], None] | None = None
    ) -> Store:
        """The store at `path` opened to read only (a report, the TUI's reading thread): nothing is migrated,
        recovered or imported, and a write raises (StoreReadOnly). A StoreError, refused, when there is no
        store there, or it is not GreenLab's (StoreForeign), or it is newer than this GreenLab (StoreNewer);
        with `check`, also when it is damaged (StoreDamaged, by quick_check)."""
        refuse_link(resolve_path(path), str(resolve_path(path)))  # before anything opens it
        store = cls(path, read_only=True, on_busy=on_busy)
        if not store.path.is_file():
            raise StoreError(
                f"no run store at {store.path}; run a grid first (greenlab --headless experiments.toml) "
                "or pass --db PATH (or set GREENLAB_DB)",
                refused=True,
            )
        if check:
            try:
                store.while_busy(lambda: store._quick_check(store.conn))
            except StoreBusy as exc:
                raise store._busy_error(exc) from None
        return store

    def _open_read_only(self) -> sqlite3.Connection:
        try:
            self.while_busy(lambda: identify(self.path))
        except StoreBusy as exc:
            raise self._busy_error(exc) from None
        uri = self.path.resolve().as_uri()
        # Read-write where the file may be written, so SQLite can tidy its -wal and -shm files on close; only
        # SELECTs are issued (the write methods refuse). A file or folder that is read-only is read as it is:
        # immutable where no -wal waits beside it, so SQLite creates no -wal or -shm next to it.
        writable = os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK | os.X_OK)
        wal = self.path.with_name(self.path.name + "-wal")
        shm = self.path.with_name(self.path.name + "-shm")
        mode = "mode=rw" if writable else "mode=ro" if wal.exists() and shm.exists() else "immutable=1"
        try:
            conn = sqlite3.connect(f"{uri}?{mode}", uri=True)
            conn.execute("PRAGMA busy_timeout = 5000")
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from None
        self._conn = conn
        return conn

    def _open(self) -> sqlite_utils.Database:
        import sqlite_utils

        if self.read_only:
            self._db = sqlite_utils.Database(self.conn)  # only where asked for: a reader reads through `conn`
            return self._db
        db: sqlite_utils.Database | None = None
        try:
            if self.file is not None:
                self._same_file()  # a second connection: the first one's file, or none (never a new store)
            # Another application's database is refused before a byte of it changes; a file another process
            # holds exclusively (locking_mode=EXCLUSIVE) is waited for like any lock.
            self.while_busy(lambda: identify(self.path))
            self.path.parent.mkdir(parents=True, exist_ok=True)  # only the default's: check_location refused others
            existed = self.path.exists() and self.path.stat().st_size > 0
            db = sqlite_utils.Database(self.path)
            self._db, self._conn = db, db.conn
            # SQLite's own wait, short: every write waits on in while_busy, which says so first (a long
            # silent wait here would hold a grid without a word).
            db.execute(f"PRAGMA busy_timeout = {_QUIET_WAIT_MS}")
            if existed:  # a damaged store is refused before anything is written to it
                self.while_busy(lambda: self._quick_check(db.conn))
            if not self.durable:
                db.execute("PRAGMA synchronous = OFF")
            self.while_busy(db.enable_wal)
            self.while_busy(self._migrate)
            found = os.stat(self.path)
            self.file = (found.st_dev, found.st_ino)
            journal.import_pending(self)  # records a grid could not write before: before orphans are judged
            self._recover_orphans()
        except BaseException as exc:
            # Never keep a connection that failed half-way (a newer schema, a locked file): the next use
            # would skip the checks above.
            self._db, self._conn = None, None
            if db is not None:
                db.close()
            if isinstance(exc, StoreBusy):
                raise self._busy_error(exc) from None
            if isinstance(exc, StoreReplaced) or (isinstance(exc, StoreError) and exc.refused):
                raise
            # What failed in use while opening (SQLite's words) becomes the refusal of the file.
            if isinstance(exc, (StoreDamaged, sqlite3.DatabaseError)) and "malformed" in str(exc):
                raise damaged(self.path, [str(exc)]) from None
            if isinstance(exc, (StoreError, sqlite3.DatabaseError, OSError)):
                raise StoreError(
                    f"cannot use the run store {self.path} ({exc}); pass --db (or set "
                    "GREENLAB_DB) to a writable .db file path, or move that file away",
                    refused=True,
                ) from None
            raise
        return db

    def _busy_error(self, exc: StoreBusy) -> StoreBusy:
        """A lock waited out in use, as the refusal a face ends on (the fix named); one already is, as it is."""
        if exc.refused:
            return exc
        return StoreBusy(
            f"the run store {self.path} stayed locked by another process for over {busy_budget_s():g} s "
            f"({exc.__cause__ or exc}); close what holds it (a sqlite3 shell in a transaction, a backup, "
            "another program) and run again, or wait longer with GREENLAB_STORE_BUSY_S",
            refused=True,
        )

    def _quick_check(self, conn: sqlite3.Connection) -> None:
        """StoreDamaged, refused (exit 2, naming the damage and the fix), when SQLite's quick_check finds
        the file damaged; a grid then writes nothing to it. A lock is SQLite's error, for while_busy."""
        try:
            found = [str(row[0]) for row in conn.execute("PRAGMA quick_check(20)").fetchall()]
        except sqlite3.DatabaseError as exc:
            if is_busy(exc):
                raise
            found = [str(exc)]
        if found != ["ok"]:
            raise damaged(self.path, found)

    def check(self) -> None:
        """The quick check of an open store (at the end of a grid: a page damaged while it ran): StoreDamaged,
        refused, when damaged; StoreBusy, not refused, when another process holds the file now (not waited
        for). A store never created stays uncreated."""
        if self._conn is None and not self.path.exists():
            return
        try:
            self._quick_check(self.conn)
        except sqlite3.Error as exc:
            raise translated(exc) from exc

    def integrity(self) -> list[str]:
        """SQLite's full integrity_check of the store (every page, index and constraint): ["ok"] or what is
        wrong, up to 100 lines (greenlab check). A lock another process holds is waited for, aloud."""

        def check() -> list[str]:
            try:
                return [str(row[0]) for row in self.conn.execute("PRAGMA integrity_check(100)").fetchall()]
            except sqlite3.DatabaseError as exc:
                if is_busy(exc):
                    raise
                return [str(exc)]

        try:
            return self.while_busy(check)
        except StoreBusy as exc:
            raise self._busy_error(exc) from None

    def tell(self, text: str) -> None:
        """A notice from the store (a kept record set aside): kept, and told to `on_notice` if set."""
        self.notices.append(text)
        if self.on_notice is not None:
            self.on_notice(text)

    def _same_file(self) -> None:
        """StoreReplaced (not refused: the store was in use) when the file at the path is no longer the one
        this store opened."""
        if self.file is None:
            return
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            raise StoreReplaced(f"{self.path} was removed while this grid had it open") from None
        if (found.st_dev, found.st_ino) != self.file:
            raise StoreReplaced(f"{self.path} was replaced by another file while this grid had it open")

    def row_identity(self, run_id: int) -> dict[str, Any] | None:
        """What tells run `run_id`'s row from another row of that id (settings key, start time), for a row
        started by this store; None for others."""
        return self._rows.get(run_id)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, taken at once (BEGIN IMMEDIATE: a lock is waited for before anything is
        done); a write inside another's transaction (a kept record's replay) is part of it. sqlite-utils'
        own calls nest inside as savepoints."""
        conn = self.db.conn
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def while_busy(self, call: Callable[[], T]) -> T:
        """`call()`, tried again with backoff while another process holds the write lock, for up to the busy
        budget; StoreBusy after it (at once once `abandon` is set: the user stopped waiting). Each try is a
        whole transaction, rolled back when it fails. Before each try, the file must still be the store's.
        Any other error of SQLite's leaves as the store's own (errors.translated)."""
        deadline: float | None = None
        delay, told = _BACKOFF_S[0], False
        while True:
            try:
                self._same_file()
                return call()
            except sqlite3.Error as exc:
                if not is_busy(exc):
                    raise translated(exc) from exc
                now = time.monotonic()
                budget = busy_budget_s()
                deadline = deadline if deadline is not None else now + budget
                if now >= deadline:
                    raise StoreBusy(
                        f"{self.path} stayed locked by another process for over {budget:g} s ({exc})"
                    ) from exc
                if self.abandon is not None and self.abandon.is_set():
                    raise StoreBusy(f"{self.path} was locked by another process, and waiting was stopped") from exc
                if not told and self.on_busy is not None:
                    told = True
                    self.on_busy(
                        f"store busy, waiting: another process holds a lock on {self.path} "
                        f"(waiting up to {budget:g} s; GREENLAB_STORE_BUSY_S sets it)"
                    )
                pause = min(delay, max(0.0, deadline - now))
                if self.abandon is not None:
                    self.abandon.wait(pause)  # returns at once when the user stops waiting
                else:
                    time.sleep(pause)
                delay = min(delay * 2, _BACKOFF_S[1])

    @property
    def db(self) -> sqlite_utils.Database:
        """The connection, through sqlite-utils (what writes use); the first use creates the file."""
        return self._db if self._db is not None else self._open()

    @property
    def conn(self) -> sqlite3.Connection:
        """SQLite's connection (what reads use); the first use of a writer's creates the file."""
        if self._conn is not None:
            return self._conn
        return self._open_read_only() if self.read_only else self._open().conn

    def _query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a read; none while the file does not exist (reading a store never creates it), unless
        records wait to go into it (the grid that kept them never got to write the file)."""
        return self._read(sql, params, lambda names, row: dict(zip(names, row)))

    def _read(self, sql: str, params: list[Any] | None, make: Callable[[list[str], tuple[Any, ...]], T]) -> list[T]:
        """`_query`, each row made by `make(column names, values)`: a typed row made straight from SQLite's
        tuple (a study's 10,000 epochs), with no dict made on the way."""
        if self._conn is None and not self.path.exists() and (self.read_only or not journal.pending(self.path)):
            return []

        def rows() -> list[T]:
            cursor = self.conn.execute(sql, params or [])
            names = [column[0] for column in cursor.description]
            return [make(names, row) for row in cursor]

        try:
            return self.while_busy(rows)
        except StoreBusy as exc:
            if not self.read_only:
                raise
            raise self._busy_error(exc) from None
        except StoreError as exc:
            if not self.read_only or exc.refused or isinstance(exc, StoreReplaced):
                raise
            raise self._unreadable(exc) from None

    def _unreadable(self, exc: sqlite3.Error | StoreError) -> StoreError:
        """What a reader says of a file SQLite cannot read as a store (damaged, or not a database at all)."""
        if "malformed" in str(exc):
            return damaged(self.path, [str(exc)])
        return StoreForeign(
            f"cannot read {self.path} as a GreenLab run store ({exc}); pass --db with the runs.db a grid wrote"
        )

    @property
    def version(self) -> int:
        return self._pragma("user_version")

    def _application_id(self) -> int:
        return self._pragma("application_id")

    def _pragma(self, name: str) -> int:
        if self._conn is not None and self._conn.in_transaction:  # a migration's own transaction
            return int(self._conn.execute(f"PRAGMA {name}").fetchone()[0])
        try:
            return int(self.while_busy(lambda: self.conn.execute(f"PRAGMA {name}").fetchone()[0]))
        except StoreBusy as exc:
            if not self.read_only:
                raise
            raise self._busy_error(exc) from None

    def _migrate(self) -> None:
        """Bring the store to SCHEMA_VERSION in one write transaction, taken before the version is read: two
        processes opening a new file at once (a TUI and its grid) migrate it once, one after the other."""
        conn = self.db.conn
        # A store already current needs no write: opening it never waits on another process's write lock
        # (a sqlite shell, a backup), which would hold a grid silently before its first run.
        if self.version == SCHEMA_VERSION and self._application_id() == APPLICATION_ID:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self.version
            check_version(self.path, version)
            for number in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[number - 1](self.db)
                self.db.execute(f"PRAGMA user_version = {number}")
            self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a migration cut short leaves the store as it was
                conn.execute("ROLLBACK")
            raise

    def _recover_orphans(self) -> None:
        rows = self._query("select id, supervisor_pid from runs where status = 'running'")
        for row in rows:
            if row["supervisor_pid"] != os.getpid() and not _pid_alive(row["supervisor_pid"]):
                self.update_run(
                    row["id"],
                    status="interrupted",
                    finished_at=now_iso(),
                    error=ORPHANED,
                )

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # a writer's sqlite-utils Database closes no more than this
            except sqlite3.Error as exc:
                raise translated(exc) from exc

    # -- writes ---------------------------------------------------------------------------------------
    def declare_plan(self, plan: Plan | None) -> None:
        """The analysis plan of the grid about to run: recorded with its first run's row (in the same
        transaction), and every run this store starts from now on carries its id. A grid stopped before its
        first run leaves neither row nor file."""
        self._plan, self._plan_id = plan, None

    def _record_plan(self) -> int | None:
        """The declared plan's id, inserting it unless an identical declaration is already stored."""
        if self._plan is None:
            return None
        if self._plan_id is None:
            digest = self._plan.digest()
            found = self.db.execute("select id from plans where digest = ?", [digest]).fetchone()
            if found is not None:
                return int(found[0])
            else:
                return _pk(
                    self.db.table("plans")
                    .insert(
                        {
                            "digest": digest,
                            "created_at": now_iso(),
                            "source": self._plan.source,
                            "analysis": json.dumps(self._plan.analysis.to_json()),
                            "cells": json.dumps(self._plan.cells_json()),
                            "greenlab_version": __version__,
                        }
                    )
                    .last_pk
                )
        return self._plan_id

    @_retrying
    def start_run(self, values: dict[str, Any]) -> int:
        """Insert a run's row as `running`; by default a local run of this host (a Ray driver says where)."""
        row = {
            "status": "running",
            "started_at": now_iso(),
            "greenlab_version": __version__,
            "host": json.dumps(host_facts()),
            "supervisor_pid": os.getpid(),
            "executor": "local",
            "node": socket.gethostname(),
            "concurrent_runs": [],
            "attempts": 1,
            **values,
        }
        with self._transaction():
            plan_id = self._record_plan()
            if plan_id is not None and row.get("plan_id") is None:
                row["plan_id"] = plan_id
            run_id = _pk(self.db.table("runs").insert(_encode(row)).last_pk)
        self._plan_id = plan_id  # kept once committed: a write retried after a lock inserts the plan again
        self._rows[run_id] = {"settings_key": row.get("settings_key"), "started_at": row["started_at"]}
        return run_id

    @_retrying
    def restart_run(self, run_id: int, values: dict[str, Any]) -> None:
        """A run retried in its own row (its executor died under the first attempt): the attempt's partial
        epochs, samples, components and capacity go, the row starts again as `running`."""
        started = {
            "status": "running",
            "error": None,
            "started_at": now_iso(),
            "finished_at": None,
            "supervisor_pid": os.getpid(),
            **values,
        }
        with self._transaction():
            for table in ("epochs", "samples", "energy_components", "capacity"):
                self.db.execute(f"delete from {table} where run_id = ?", [run_id])
            self.db.table("runs").update(run_id, _encode(started))
        self._rows[run_id] = {"settings_key": started.get("settings_key"), "started_at": started["started_at"]}

    @_retrying
    def update_run(self, run_id: int, **values: Any) -> None:
        with self._transaction():
            self.db.table("runs").update(run_id, _encode(values))
            if values.get("status") == "completed":
                self._supersede_earlier(run_id)

    def _supersede_earlier(self, run_id: int) -> None:
        """A completed run and the other completed runs of its key (a forced rerun): all but the latest become
        `superseded`, in the same transaction, so no moment shows two as completed."""
        row = self.db.execute("select settings_key from runs where id = ?", [run_id]).fetchone()
        if row is not None and row[0] is not None:
            supersede_all(self.db, row[0])

    @_retrying
    def add_epoch(self, row: dict[str, Any]) -> None:
        with self._transaction():
            self.db.table("epochs").upsert(_encode(row), pk=("run_id", "epoch"))

    @_retrying
    def add_samples(self, run_id: int, rows: Iterable[tuple[float, str, float]]) -> None:
        batch = [{"run_id": run_id, "t_s": round(t, 4), "component": c, "watts": round(w, 4)} for t, c, w in rows]
        if batch:
            with self._transaction():
                self.db.table("samples").insert_all(batch, batch_size=1000)

    @_retrying
    def set_components(self, run_id: int, rows: list[dict[str, Any]]) -> None:
        with self._transaction():
            self.db.table("energy_components").upsert_all(
                [_encode({"run_id": run_id, **r}) for r in rows], pk=("run_id", "component")
            )

    @_retrying
    def delete_samples(self, run_id: int, components: Iterable[str]) -> None:
        """Drop a run's samples of some components (a GPU metered but not used by the run)."""
        names = list(components)
        if names:
            with self._transaction():
                self.db.execute(
                    f"delete from samples where run_id = ? and component in ({', '.join('?' for _ in names)})",
                    [run_id, *names],
                )

    @_retrying
    def delete_runs(self, run_ids: list[int]) -> int:
        """Delete runs with their epochs, samples, energy components and capacity curves; returns how many."""
        if not run_ids:
            return 0
        marks = ", ".join("?" for _ in run_ids)
        with self._transaction():
            for table in ("epochs", "samples", "energy_components", "capacity"):
                self.db.execute(f"delete from {table} where run_id in ({marks})", run_ids)
            deleted = self.db.execute(f"delete from runs where id in ({marks})", run_ids).rowcount
            # The runs a deleted rerun had replaced count again: the latest of each key completed once more.
            self.db.execute(
                f"update runs set status = 'completed', superseded_by = null where superseded_by in ({marks})", run_ids
            )
            supersede_all(self.db)
            return deleted

    @_retrying
    def set_energy_to_target(self, computed: dict[int, tuple[float, float | None]]) -> int:
        """Store run id -> (target accuracy, energy to target) in one transaction; how many runs were written."""
        if not computed:
            return 0  # nothing to write: an empty store stays uncreated
        with self._transaction():
            for run_id, (target, energy) in computed.items():
                self.db.table("runs").update(run_id, {"target_accuracy": target, "energy_to_target_j": energy})
        return len(computed)

    def replay(self, run_id: int, to_apply: list[RowWrite], row: dict[str, Any] | None = None) -> bool:
        """A kept record's writes, in order and in one transaction (greenlab.core.store.journal), so a replay
        cut short adds nothing; a completed one supersedes as usual. False, with nothing written, when run
        `run_id`'s row is not in this store, or is another run's (`row`: the settings key and start time the
        record's row had): the record belongs to a store that is no longer here."""

        def once() -> bool:
            with self._transaction():
                found = self.db.execute("select settings_key, started_at from runs where id = ?", [run_id]).fetchone()
                if found is None or (row and [found[0], found[1]] != [row.get("settings_key"), row.get("started_at")]):
                    return False
                for write in to_apply:
                    write.apply(self)
                status = self.db.execute("select status from runs where id = ?", [run_id]).fetchone()
                if status is not None and status[0] == "completed":
                    self._supersede_earlier(run_id)
            return True

        return self.while_busy(once)

    @_retrying
    def set_capacity(self, run_id: int, curve: list[tuple[int, float]]) -> None:
        with self._transaction():
            self.db.table("capacity").upsert_all(
                [{"run_id": run_id, "bits": int(b), "val_accuracy": a} for b, a in curve], pk=("run_id", "bits")
            )

    @_retrying
    def write_record(self, run_id: int, writes: list[RowWrite]) -> None:
        """A run's record as its writes (greenlab.core.store.record.record_writes), in one transaction: applied
        again, it is still stored once; a completed run supersedes as usual."""
        with self._transaction():
            for write in writes:
                write.apply(self)

    # -- reads ----------------------------------------------------------------------------------------
    def completed_keys(self) -> set[str]:
        return set(self.completed_by_key())

    def completed_by_key(self) -> dict[str, RunRow]:
        """The latest completed run of each run key (what a rerun skips, or recomputes the accounting of)."""
        return {row.settings_key: row for row in self.completed_runs() if row.settings_key is not None}

    def running_elsewhere(self, settings_key: str) -> int | None:
        """The pid of another live supervisor running these settings in this store now, or None.

        Called under the host's measurement lock: a plain run of this host marked `running` by another
        pid cannot be running now (its supervisor would hold the lock), whatever that pid is today."""
        here = socket.gethostname()
        for row in self._query(
            "select supervisor_pid, host, executor from runs where settings_key = ? and status = 'running'",
            [settings_key],
        ):
            pid = row["supervisor_pid"]
            if row["executor"] != "ray" and hostname_of(row["host"]) == here:
                continue
            if pid != os.getpid() and _pid_alive(pid):
                return int(pid)
        return None

    def run(self, run_id: int) -> RunRow | None:
        rows = self._query("select * from runs where id = ?", [run_id])
        return RunRow.from_stored(rows[0]) if rows else None

    def runs(self, columns: Iterable[str] | None = None) -> list[RunRow]:
        """Every run, in id order (the order they started). `columns`: only these are read (and the id); the
        others keep their defaults (None, empty). A report names what it reads: decoding every column of
        5,000 runs, JSON ones included, was most of its read."""
        return [
            RunRow.from_stored(r)
            for r in self._query(f"select {self._named('runs', RUN_COLUMNS, columns, 'id')} from runs order by id")
        ]

    def first_runs(self, limit: int, *, order_by: str = "id", descending: bool = False) -> tuple[list[RunRow], int]:
        """The first `limit` runs in the order of one of their columns (ties by id), and how many runs there
        are: a page to show while the whole store is read."""
        if order_by not in RUN_COLUMNS:
            raise ValueError(f"no runs column {order_by!r}")
        way = "desc" if descending else "asc"
        query = f'select * from runs order by "{order_by}" {way}, id {way} limit ?'
        page = [RunRow.from_stored(r) for r in self._query(query, [limit])]
        return page, int(self._query("select count(*) as n from runs")[0]["n"])

    def completed_runs(self) -> list[RunRow]:
        """Every completed run (a superseded one is not), in id order."""
        return [RunRow.from_stored(r) for r in self._query("select * from runs where status = 'completed' order by id")]

    def runs_of_experiment(self, experiment: str) -> list[RunRow]:
        """Every run of one experiment, whatever its status, in id order."""
        return [
            RunRow.from_stored(r)
            for r in self._query("select * from runs where experiment = ? order by id", [experiment])
        ]

    def completed_runs_of_grid(self, settings_keys: Iterable[str]) -> list[RunRow]:
        """The latest completed run of each of these run keys (a grid's entries, those skipped included)."""
        wanted = set(settings_keys)
        return [row for key, row in self.completed_by_key().items() if key in wanted]

    def epochs(self, run_id: int) -> list[EpochRow]:
        return [
            EpochRow.from_stored(r)
            for r in self._query("select * from epochs where run_id = ? order by epoch", [run_id])
        ]

    def epochs_by_run(self, columns: Iterable[str] | None = None) -> dict[int, list[EpochRow]]:
        """Every run's epochs, in epoch order, by run id: one read for a whole report. `columns`: only these
        (and the run id), as `runs` reads them; the others keep their defaults."""
        found: dict[int, list[EpochRow]] = {}
        named = self._named("epochs", EPOCH_COLUMNS, columns, "run_id")
        for epoch in self._read(f"select {named} from epochs order by run_id, epoch", None, EpochRow.from_columns):
            found.setdefault(int(epoch.run_id), []).append(epoch)
        return found

    def _named(self, table: str, known: dict[str, type], columns: Iterable[str] | None, key: str) -> str:
        """The select list of `columns` of `table` (`*` for all): its key first, then each named column the
        file has (a store of an older schema, read without migrating, lacks the newer ones: they keep their
        defaults, as under `select *`). A name the schema does not know is a ValueError."""
        if columns is None:
            return "*"
        wanted = list(dict.fromkeys((key, *columns)))
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise ValueError(f"no {table} column {', '.join(map(repr, unknown))}")
        present = {row["name"] for row in self._query(f"select name from pragma_table_info('{table}')")}
        return ", ".join(f'"{name}"' for name in wanted if name in present)

    def last_epoch_accuracies(self) -> dict[int, float]:
        """Each run's validation accuracy at its last stored epoch (a stopped run's partial result)."""
        rows = self._query(
            "select run_id, val_accuracy from epochs e where epoch = "
            "(select max(epoch) from epochs where run_id = e.run_id)"
        )
        return {row["run_id"]: row["val_accuracy"] for row in rows if row["val_accuracy"] is not None}

    def samples(self, run_id: int) -> list[Sample]:
        return [
            Sample.from_stored(r) for r in self._query("select * from samples where run_id = ? order by t_s", [run_id])
        ]

    def plans(self) -> dict[int, Plan]:
        """Every stored analysis plan, by id."""
        if self._conn is None and not self.path.exists():
            return {}
        if not self._query("select name from sqlite_master where type = 'table' and name = 'plans'"):
            return {}
        return {int(row["id"]): Plan.from_stored(row) for row in self._query("select * from plans order by id")}

    def components(self, run_id: int) -> list[ComponentRow]:
        """A run's energy components, their JSON columns (inputs, flags) decoded."""
        rows = self._query("select * from energy_components where run_id = ? order by component", [run_id])
        return [ComponentRow.from_stored(row) for row in rows]


def _pk(value: Any) -> int:
    """The id sqlite gave an inserted row (sqlite-utils types it as optional)."""
    if value is None:
        raise StoreDamaged("the run store gave no id to an inserted row; the store file may be damaged")
    return int(value)


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    """JSON-encode dict and list values for TEXT columns."""
    return {k: json.dumps(v) if isinstance(v, (dict, list, tuple)) else v for k, v in values.items()}
