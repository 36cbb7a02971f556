"""The fork server: imports the heavy modules once, then forks a fresh process for every run.

Started by ForkServerLauncher (greenlab.core.run.launcher) as
`python -m greenlab.core.run.forkserver --socket-fd N --preload a,b,c`. It imports the preload list,
reports `ready` on the socket, then serves `fork` requests: each carries the run's stdin, output and
event file descriptors (SCM_RIGHTS). The forked child starts its own session, puts the descriptors in
place and runs the requested module as `python -m MODULE --event-fd N` would, once this process's
frames are gone; it ends as multiprocessing's fork children do (atexit handlers, flushed streams, no
interpreter teardown). The server reaps it and reports its exit status (negative for a signal).

What keeps forking safe: the server only imports. It never initialises CUDA, never runs a torch
operation and owns no thread when it forks (OpenBLAS's idle pool, started by loading numpy, is shut
down after the imports). It exits when its supervisor closes the socket or dies, and kills the runs it
forked when it goes: no run outlives both its server and its supervisor's interest in it.

This module also holds the small message framing both sides share; importing it is cheap.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import gc
import importlib
import json
import os
import runpy
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

CHILD_MODULE = "greenlab.core.run.child_main"
# What a run imports on its way to the first batch (measured: torchvision and sklearn's digits loader
# cost as much as torch itself). transformers is left out: it adds ~1 s and ~100 MB to every server for
# the hf: models only; a supervisor whose grid has them may pass it in `preload`.
DEFAULT_PRELOAD = (
    "greenlab.core.run.child_main",
    "greenlab.core.train.compression.stego",
    "greenlab.core.train.compression.prune",
    "greenlab.core.train.compression.lowrank",
    "torch.utils.flop_counter",
    "torch.nn.utils.prune",
    "torchvision.models",
    "torchvision.transforms",
    "torchvision.datasets",
    "sklearn.datasets",
    "torch_pruning",
)
_HEADER = struct.Struct("!I")
_MAX_FDS = 3
_PR_SET_PDEATHSIG = 1
_PARENT_CHECK_S = 1.0


def kill_run(pid: int) -> None:
    """SIGKILL a run: its whole session (it leads one, with its DataLoader workers), else the process."""
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            kill(target, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            continue


# -- framing: a 4-byte length, then JSON; descriptors ride on the header ---------------------------------
def send_message(sock: socket.socket, message: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> None:
    body = json.dumps(message).encode()
    header = _HEADER.pack(len(body))
    if fds:
        socket.send_fds(sock, [header], list(fds))
        sock.sendall(body)
    else:
        sock.sendall(header + body)


def _recv_exactly(sock: socket.socket, size: int, data: bytes = b"") -> bytes | None:
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def recv_message(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """The next message and the descriptors sent with it; None when the other side has gone."""
    first, fds, flags, _ = socket.recv_fds(sock, _HEADER.size, _MAX_FDS)
    if not first:
        return None
    if flags & getattr(socket, "MSG_CTRUNC", 0):
        for fd in fds:
            os.close(fd)
        raise OSError("descriptors were truncated in transit")
    header = _recv_exactly(sock, _HEADER.size, first)
    body = _recv_exactly(sock, _HEADER.unpack(header)[0]) if header is not None else None
    if body is None:
        for fd in fds:
            os.close(fd)
        return None
    return json.loads(body), fds


# -- the server process --------------------------------------------------------------------------------
def preload(modules: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Import `modules` and leave the process fork-safe; returns facts the launcher checks and reports."""
    started = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    _stop_openblas_threads()
    # Objects that exist now live as long as the server: keep the children's collector off their pages,
    # so forked runs share them instead of copying them on the first collection.
    gc.collect()
    gc.freeze()
    torch = sys.modules.get("torch")
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "threads": thread_count(),
        # A flag read, not a query: asking torch.cuda anything more would initialise the driver.
        "cuda_initialized": bool(torch is not None and torch.cuda.is_initialized()),
    }


def thread_count() -> int:
    """Every thread of this process, native ones included where the OS lists them (Linux)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _stop_openblas_threads() -> None:
    """Shut down the idle pool OpenBLAS starts when numpy loads it; the next BLAS call in a run restarts it.

    OpenBLAS does the same itself before every fork (its pthread_atfork handler); doing it once here
    means the server holds no thread at all, not just none busy.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1]}
    except OSError:
        return  # not Linux: nothing to find this way
    for path in sorted(paths):
        try:
            shutdown = getattr(ctypes.CDLL(path), "blas_thread_shutdown_", None)
        except OSError:
            continue
        if shutdown is not None:
            shutdown()


@dataclass
class RunJob:
    """What a forked child runs once it has left the server's loop."""

    module: str
    argv: list[str]
    cwd: str

    def run(self) -> int:
        """Run the module as `python -m MODULE ARGV` would; returns the exit status it asked for."""
        os.chdir(self.cwd)
        _refresh_process_state()
        sys.argv = [self.module, *self.argv]
        # Under `python -m MODULE` the module exists only as __main__; the preloaded copy goes (its
        # imports stay), so nothing sees two and runpy has no stale module to warn about.
        sys.modules.pop(self.module, None)
        try:
            runpy.run_module(self.module, run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            return _exit_status(exc.code)
        except KeyboardInterrupt:
            traceback.print_exc()
            return -signal.SIGINT  # as Python does: exit by the signal itself
        except BaseException:  # noqa: BLE001 - reported like an uncaught exception, then exit 1
            traceback.print_exc()
            return 1
        return 0


def _exit_status(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def end_child(status: int) -> None:
    """End a forked run as multiprocessing ends its fork children: non-daemon threads joined, atexit
    handlers run (they stop leftover data-loader workers), streams flushed, then `os._exit`.

    A full interpreter teardown would free every object the server imported, writing to each page
    it shares with the server only to copy it: 0.3-0.7 s per run on our 2-core machine, for nothing.
    """
    main_thread = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main_thread and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    os._exit(status)


def _refresh_process_state() -> None:
    """Give this child the random state a fresh interpreter would have, not a copy of the server's.

    Python's `random` reseeds itself after a fork; torch's CPU generator and numpy's global one do not
    (a fresh interpreter seeds both from the OS), nor does multiprocessing's key. CUDA's generators
    need nothing: CUDA starts in the child, as it would in a fresh process.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.default_generator.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()
    mp_process = sys.modules.get("multiprocessing.process")
    if mp_process is not None:
        mp_process.current_process().authkey = os.urandom(32)


def _libc_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


class Server:
    """The request loop; `serve()` returns None in the server when it is done, or a RunJob in a child."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pid = os.getpid()
        self.parent = os.getppid()
        self.children: set[int] = set()
        self._prctl = _libc_prctl()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def serve(self) -> RunJob | None:
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd below is written
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGTERM, _exit_on_signal)
        try:
            while True:
                readers: list[Any] = [self.sock, self._wake_r]
                ready, _, _ = select.select(readers, [], [], _PARENT_CHECK_S)
                if self._wake_r in ready:
                    _drain(self._wake_r)
                if not self._reap():
                    return None
                if self.sock in ready:
                    try:
                        received = recv_message(self.sock)
                    except OSError:
                        return None
                    if received is None:
                        return None  # the supervisor closed its end, or died
                    job = self._handle(*received)
                    if job is not None:
                        return job  # we are the child now
                if os.getppid() != self.parent:
                    return None  # the supervisor died while something else holds its socket open
        finally:
            if os.getpid() == self.pid:
                self._stop_children()

    def _send(self, message: dict[str, Any]) -> bool:
        try:
            send_message(self.sock, message)
            return True
        except OSError:
            return False

    def _reap(self) -> bool:
        """Report every child that has exited; False when the supervisor can no longer be told."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                break
            if pid == 0:
                break
            self.children.discard(pid)
            if not self._send({"type": "exited", "pid": pid, "returncode": os.waitstatus_to_exitcode(status)}):
                return False
        return True

    def _handle(self, message: dict[str, Any], fds: list[int]) -> RunJob | None:
        if message.get("type") != "fork" or len(fds) != _MAX_FDS:
            for fd in fds:
                os.close(fd)
            self._send({"type": "refused", "id": message.get("id"), "error": "malformed request"})
            return None
        stdin_fd, output_fd, event_fd = fds
        sync_r, sync_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (*fds, sync_r, sync_w):
                os.close(fd)
            self._send({"type": "refused", "id": message["id"], "error": f"fork failed: {exc}"})
            return None
        if pid == 0:
            os.close(sync_r)
            return self._become_child(message, stdin_fd, output_fd, event_fd, sync_w)
        os.close(sync_w)
        for fd in fds:
            os.close(fd)
        # Answer only once the child leads its own session: killpg(pid) must reach it from then on.
        os.read(sync_r, 1)
        os.close(sync_r)
        self.children.add(pid)
        self._send({"type": "started", "id": message["id"], "pid": pid})
        return None

    def _become_child(
        self, message: dict[str, Any], stdin_fd: int, output_fd: int, event_fd: int, sync_w: int
    ) -> RunJob:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self.sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        os.setsid()
        if self._prctl is not None:
            self._prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != self.pid:
                os._exit(1)  # the server died before the request was answered; the launcher spawns instead
        os.close(sync_w)
        os.dup2(stdin_fd, 0)
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(stdin_fd)
        os.close(output_fd)
        return RunJob(module=message["module"], argv=["--event-fd", str(event_fd)], cwd=message["cwd"])

    def _stop_children(self) -> None:
        for pid in list(self.children):
            kill_run(pid)
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.children.clear()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="greenlab-forkserver")
    parser.add_argument("--socket-fd", type=int, required=True)
    parser.add_argument("--preload", default="")
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.socket_fd)
    try:
        facts = preload([name for name in args.preload.split(",") if name])
    except BaseException as exc:  # noqa: BLE001 - the launcher must learn why, then spawns instead
        send_message(sock, {"type": "error", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    send_message(sock, {"type": "ready", "pid": os.getpid(), **facts})
    job = Server(sock).serve()
    if job is None:
        return 0
    end_child(job.run())  # never returns
    return 0


if __name__ == "__main__":
    sys.exit(main())
