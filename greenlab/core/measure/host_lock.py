"""One measurement at a time per host: a lock file that a grid's supervisor holds while the grid runs.

Whole-device meters (RAPL, NVML) count every process on the machine, so two grids measuring at once
would each count the other's work. The lock is an fcntl.flock on a file in the user's runtime folder
($GREENLAB_LOCK_DIR, else $XDG_RUNTIME_DIR/greenlab, else ~/.cache/greenlab). The OS releases it when
the holding process dies, however it dies, so a crashed grid never leaves the host locked. The file
says who holds it (pid, host, store, since) for the grids that wait.

The descriptor is opened close-on-exec, so the children a supervisor starts never hold the lock.

A Ray task (greenlab.core.grid.ray_task) holds its node's lock `shared`: the runs of one Ray grid may share a
node (its driver flags them `shared_node_cpu`), while a plain grid, which holds the lock exclusively,
never measures beside them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from greenlab.core.errors import GreenLabError

LOCK_NAME = "measure.lock"
_POLL_S = 0.25
_HOLDER_MAX = 16384  # a holder's name is a few hundred bytes (a long store path more); a lock file is never larger


def lock_dir() -> Path:
    if os.environ.get("GREENLAB_LOCK_DIR"):
        return Path(os.environ["GREENLAB_LOCK_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "greenlab"
    return Path.home() / ".cache" / "greenlab"


def lock_path() -> Path:
    return lock_dir() / LOCK_NAME


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as its holder wrote it."""

    pid: int
    host: str
    store: str
    since: str  # UTC, ISO 8601

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, writing {self.store}, since {self.since}"


@dataclass
class WaitingForLock:
    """A supervisor event: the grid waits for another grid on this host; `holder` is None if unknown."""

    holder: Holder | None
    path: str

    def describe(self) -> str:
        who = self.holder.describe() if self.holder else "a holder that has not written its name yet"
        return f"waiting for another grid measuring on this host ({who}; lock {self.path})"


class LockBusy(GreenLabError):
    """The host's measurement lock is held and the caller chose not to wait."""

    def __init__(self, holder: Holder | None, path: Path) -> None:
        self.holder = holder
        who = holder.describe() if holder else "holder unknown"
        super().__init__(
            f"another grid is measuring on this host ({who}; lock {path}); wait for it to "
            "finish, or run without --no-wait to start as soon as it does"
        )


def read_holder(path: Path | None = None) -> Holder | None:
    """The holder written in the lock file, or None when it is empty, unreadable or not a plain file (a
    link there is never followed: its target is not ours to read)."""
    try:
        fd = os.open(path or lock_path(), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = json.loads(os.pread(fd, _HOLDER_MAX, 0).decode("utf-8"))
        return Holder(int(data["pid"]), str(data["host"]), str(data["store"]), str(data["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)


def _refused(path: Path, why: str) -> GreenLabError:
    return GreenLabError(
        f"the host's measurement lock {path} {why}; GreenLab leaves it as it is: remove it if it is yours, or set "
        "GREENLAB_LOCK_DIR to a folder of your own"
    )


def _looks_like_a_lock(fd: int, info: os.stat_result) -> bool:
    """A lock file another user's GreenLab made: writable by all, as `_open` creates it, and holding nothing
    or a holder's name. Anything else of another user's (a private file, a database) is not one."""
    if stat.S_IMODE(info.st_mode) != 0o666 or info.st_size > _HOLDER_MAX:
        return False
    text = os.pread(fd, _HOLDER_MAX, 0)
    if not text:
        return True
    try:
        data = json.loads(text.decode("utf-8"))
    except ValueError:
        return False
    return isinstance(data, dict) and set(data) == {"pid", "host", "store", "since"}


def _check(fd: int, path: Path) -> None:
    """Refuse what the descriptor opened unless it is a lock: a plain file of this user's, or one another
    user's GreenLab made. Judged on the open descriptor (fstat), so nothing can be swapped in after the
    check; a hard link (a second name for some other file) is refused too."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise _refused(path, "is not a plain file")
    if info.st_nlink != 1:
        raise _refused(path, f"is a hard link ({info.st_nlink} names for one file), not a lock GreenLab made")
    if info.st_uid != os.geteuid() and not _looks_like_a_lock(fd, info):
        raise _refused(
            path, f"belongs to user {info.st_uid} and is not a lock GreenLab made (mode {stat.S_IMODE(info.st_mode):o})"
        )


def _open(path: Path) -> int:
    """The lock file, created readable and writable by all, so that a folder shared by several users
    (GREENLAB_LOCK_DIR=/tmp/greenlab, say) makes one lock for the whole host; a file another user created
    is opened read-only, which flock accepts.

    A shared folder is also where another user can plant a name: a symbolic link is never followed
    (O_NOFOLLOW), anything that is not a lock is refused (`_check`), and only a file this call created is
    ever chmod-ed, so no one's file is widened or emptied through the lock's name."""
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO planted there must not hang us
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = False
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | flags, 0o666)
            created = True
        except FileExistsError:
            try:
                fd = os.open(path, os.O_RDWR | flags)
            except PermissionError:
                fd = os.open(path, os.O_RDONLY | flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            target = os.readlink(path) if path.is_symlink() else "?"
            raise _refused(path, f"is a symbolic link (to {target}), which GreenLab does not follow") from None
        raise GreenLabError(
            f"cannot create the host's measurement lock {path} ({exc.strerror or exc}); set "
            "GREENLAB_LOCK_DIR to a writable local folder"
        ) from None
    try:
        _check(fd, path)
        if created:
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666)  # the umask trimmed it; another user's grid must open it too
    except BaseException:
        os.close(fd)
        raise
    return fd


def current_holder(path: Path | None = None) -> Holder | None | bool:
    """False when the lock is free now; else its holder (None when it has not written its name yet)."""
    path = path or lock_path()
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def ensure_free(path: Path | None = None) -> None:
    """Raise LockBusy when another grid holds the lock (a check before writing anything; not a hold)."""
    path = path or lock_path()
    holder = current_holder(path)
    if holder is not False:
        raise LockBusy(holder, path)  # type: ignore[arg-type]


class HostLock:
    """The lock for one grid: acquire before the first run, release after the last. `shared` holders (Ray
    tasks) exclude exclusive ones, not each other; `store` names what the holder writes, for waiters."""

    def __init__(
        self,
        store: str | os.PathLike[str],
        path: Path | None = None,
        *,
        shared: bool = False,
        describe_as: str | None = None,
    ) -> None:
        # describe_as: what a holder that writes no store is doing (a forecast calibration), for waiters
        self.store = describe_as or (str(store) if shared else os.path.abspath(store))
        self.path = path or lock_path()
        self.shared = shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = _open(self.path)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        holder = json.dumps(asdict(Holder(os.getpid(), socket.gethostname(), self.store, since))).encode()
        # Shared holders all write their name: the last one is shown (a torn write reads as unknown).
        with contextlib.suppress(OSError):  # a file of another user's is read-only here: the holder stays unnamed
            os.pwrite(fd, holder, 0)
            os.ftruncate(fd, len(holder))
        self._fd = fd
        return True

    def acquire(
        self,
        *,
        wait: bool = True,
        on_wait: Callable[[WaitingForLock], None] | None = None,
        stop: threading.Event | None = None,
    ) -> bool:
        """Hold the lock; True once held, False when `stop` was set while waiting.

        Without `wait`, a held lock raises LockBusy at once. While waiting, `on_wait` hears who holds it,
        again whenever that changes. Ctrl-C while waiting raises KeyboardInterrupt as usual.
        """
        told: object = object()
        while not self.try_acquire():
            holder = read_holder(self.path)
            if not wait:
                raise LockBusy(holder, self.path)
            if holder != told and on_wait is not None:
                on_wait(WaitingForLock(holder, str(self.path)))
                told = holder
            if stop is not None:
                if stop.wait(_POLL_S):
                    return False
            else:
                time.sleep(_POLL_S)
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if not self.shared:  # other shared holders may remain, and the next exclusive one writes anew
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # the next reader must not name a grid that has finished
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> HostLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
