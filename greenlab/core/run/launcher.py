"""How a run's child process is started: a fresh interpreter, or a fork of a server that imported torch once.

A launcher turns (run JSON, event pipe's write end, environment) into a running child
(`python -m greenlab.core.run.child_main --event-fd N` reading the run from stdin) and returns a handle with the
part of Popen's interface the supervisor uses: `pid`, `stdout` (the child's stdout and stderr together,
as text), `poll()`, `wait(timeout)` (raising subprocess.TimeoutExpired) and `returncode` (negative for
a signal). The run's process always leads its own session, so `os.killpg(handle.pid, sig)` reaches it
and its data-loader workers. The caller closes its copy of the event fd after `launch` returns.

- SpawnLauncher: a fresh interpreter per run; about 3 s of imports on a 2-core CPU before any work.
- ForkServerLauncher: starts greenlab.core.run.forkserver once (lazily, or on `start()`), which imports the
  heavy modules, then forks a fresh process per run. If the server cannot start or dies, runs are
  spawned instead and a note says so once: no run is lost to the fork server.

The server's environment and working directory are fixed when it starts (some libraries read the
environment when they load), so the server is keyed on them: a launch with a different `env` or cwd
restarts it (or, while a run it forked is still going, is spawned). A supervisor whose environment
changes therefore pays one server start; pass the same env each time to keep it warm.
UI-free; knows nothing of runs or the store.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Protocol, cast

from greenlab.core.errors import GreenLabError
from greenlab.core.run.forkserver import CHILD_MODULE, DEFAULT_PRELOAD, kill_run, recv_message, send_message

LAUNCHER_ENV = "GREENLAB_LAUNCHER"
LAUNCHER_CHOICES = ("spawn", "forkserver")
_REPLY_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 5.0

Note = Callable[[str], None]


class RunProcess(Protocol):
    """The part of subprocess.Popen the supervisor uses."""

    pid: int
    stdout: IO[str]

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Launcher(Protocol):
    notes: list[str]

    def start(self, env: Mapping[str, str] | None = None) -> None: ...

    def launch(
        self, run_json: str, event_write_fd: int, env: Mapping[str, str] | None = None, *, module: str = CHILD_MODULE
    ) -> RunProcess: ...

    def close(self) -> None: ...


def _feed_stdin(stream: IO[str], text: str) -> None:
    """Write the run and close; a child that died before reading it reports through its exit status."""
    try:
        stream.write(text)
        stream.close()
    except BrokenPipeError:
        try:
            stream.close()
        except BrokenPipeError:
            pass


class SpawnLauncher:
    """A fresh interpreter per run: `python -m MODULE --event-fd N`, the run as JSON on stdin."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def start(self, env: Mapping[str, str] | None = None) -> None:
        """Nothing to prepare."""

    def launch(
        self, run_json: str, event_write_fd: int, env: Mapping[str, str] | None = None, *, module: str = CHILD_MODULE
    ) -> RunProcess:
        child = subprocess.Popen(
            [sys.executable, "-m", module, "--event-fd", str(event_write_fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            pass_fds=(event_write_fd,),
            start_new_session=True,
            env=dict(os.environ if env is None else env),
        )
        assert child.stdin is not None  # stdin=PIPE
        _feed_stdin(child.stdin, run_json)
        return cast(RunProcess, child)

    def close(self) -> None:
        """Nothing to stop."""

    def __enter__(self) -> SpawnLauncher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ServerUnavailable(Exception):
    """The fork server could not start, refused a request or has gone; the launcher spawns instead."""


class _ExitStatus:
    """A forked run's exit status, filled in by the connection's reader thread."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.done = threading.Event()

    def set(self, returncode: int) -> None:
        if not self.done.is_set():
            self.returncode = returncode
            self.done.set()


class ForkedProcess:
    """A run's process forked by the fork server (it is the server's child, so the server reaps it)."""

    def __init__(self, pid: int, stdout: IO[str], status: _ExitStatus, module: str) -> None:
        self.pid = pid
        self.stdout = stdout
        self.args = [module, "(forked)"]
        self._status = status

    @property
    def returncode(self) -> int | None:
        return self._status.returncode

    def poll(self) -> int | None:
        return self._status.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._status.done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return self._status.returncode  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<ForkedProcess pid={self.pid} returncode={self.returncode}>"


class _ServerConnection:
    """One running fork server: its process, its socket, and the statuses of the runs it forked."""

    def __init__(
        self,
        key: tuple[Any, ...],
        env: dict[str, str],
        cwd: str,
        preload: Sequence[str],
        start_timeout_s: float,
        on_lost: Note,
    ) -> None:
        self.key = key
        self._on_lost = on_lost
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._replies: dict[int | None, tuple[dict[str, Any], _ExitStatus | None]] = {}
        self._statuses: dict[int, _ExitStatus] = {}
        self._closing = False
        self.alive = False
        self.facts: dict[str, Any] = {}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Server errors go to a file, never to the supervisor's terminal (a TUI draws there).
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - the file lives as long as the process that uses it, closed by its owner
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "greenlab.core.run.forkserver",
                    "--socket-fd",
                    str(theirs.fileno()),
                    "--preload",
                    ",".join(preload),
                ],
                pass_fds=(theirs.fileno(),),
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            self._stderr.close()
            raise ServerUnavailable(f"could not start it: {exc}") from None
        finally:
            theirs.close()
        self.sock = ours
        self._await_ready(start_timeout_s)
        self.alive = True
        self._reader = threading.Thread(target=self._read, name="greenlab-forkserver-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def busy(self) -> bool:
        """Whether a run it forked is still going."""
        with self._cond:
            return bool(self._statuses)

    def _await_ready(self, timeout_s: float) -> None:
        self.sock.settimeout(timeout_s)
        try:
            received = recv_message(self.sock)
        except (OSError, ValueError) as exc:
            received, reason = None, f"no answer within {timeout_s:.0f} s ({type(exc).__name__})"
        else:
            reason = "it exited while importing"
        finally:
            self.sock.settimeout(None)
        message = received[0] if received else {}
        if message.get("type") == "ready":
            self.facts = message
            return
        if message.get("type") == "error":
            reason = f"importing failed: {message.get('error')}"
        self._kill()
        tail = self._stderr_tail()
        self.sock.close()
        self._stderr.close()
        raise ServerUnavailable(reason + (f"; its last output: {tail}" if tail else ""))

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-3:])

    def _read(self) -> None:
        """Route the server's answers and exit statuses; when it goes, settle every run it still had."""
        while True:
            try:
                received = recv_message(self.sock)
            except (OSError, ValueError):
                received = None
            if received is None:
                break
            message = received[0]
            with self._cond:
                if message.get("type") == "started":
                    # The status exists before any "exited" of this pid can be read: the server sends in order.
                    status = self._statuses[message["pid"]] = _ExitStatus()
                    self._replies[message.get("id")] = (message, status)
                elif message.get("type") == "refused":
                    self._replies[message.get("id")] = (message, None)
                elif message.get("type") == "exited":
                    exited = self._statuses.pop(message["pid"]) if message["pid"] in self._statuses else None
                    if exited is not None:
                        status = exited
                        status.set(int(message["returncode"]))
                self._cond.notify_all()
        with self._cond:
            self.alive = False
            orphans = list(self._statuses.items())
            self._statuses.clear()
            self._cond.notify_all()
        for pid, status in orphans:
            # On Linux the kernel has killed it already (parent-death signal); elsewhere we do it here.
            kill_run(pid)
            status.set(-signal.SIGKILL)
        if orphans and not self._closing:
            self._on_lost(
                f"the fork server (pid {self.pid}) exited during a run; {len(orphans)} run(s) in progress were stopped"
            )

    def launch(self, run_json: str, event_write_fd: int, module: str, cwd: str) -> ForkedProcess:
        stdin_r, stdin_w = os.pipe()
        output_r, output_w = os.pipe()
        request_id = next(self._ids)
        try:
            try:
                send_message(
                    self.sock,
                    {"type": "fork", "id": request_id, "module": module, "cwd": cwd},
                    fds=(stdin_r, output_w, event_write_fd),
                )
            except OSError as exc:
                raise ServerUnavailable(f"the request could not be sent ({exc})") from None
            with self._cond:
                answered = self._cond.wait_for(
                    lambda: request_id in self._replies or not self.alive, timeout=_REPLY_TIMEOUT_S
                )
                reply, status = self._replies.pop(request_id, (None, None))
            if reply is None:
                if answered:  # the server went
                    raise ServerUnavailable("it exited before answering")
                self._kill()  # a server that cannot answer in half a minute is stuck
                raise ServerUnavailable(f"no answer within {_REPLY_TIMEOUT_S:.0f} s")
            if status is None:
                raise ServerUnavailable(f"it refused the run: {reply.get('error')}")
        except BaseException:
            os.close(stdin_w)
            os.close(output_r)
            raise
        finally:
            os.close(stdin_r)
            os.close(output_w)
        _feed_stdin(open(stdin_w, "w"), run_json)  # noqa: SIM115 - the file lives as long as the process that uses it, closed by its owner
        return ForkedProcess(reply["pid"], open(output_r), status, module)

    def exit_description(self) -> str:
        code = self.process.poll()
        if code is None:
            return "stopped answering"
        return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"

    def _kill(self) -> None:
        try:
            self.process.kill()
        except OSError:
            pass
        self.process.wait()

    def close(self) -> None:
        """Stop the server (it kills any run still going); waits for it to exit."""
        self._closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._kill()
        if hasattr(self, "_reader"):
            self._reader.join(timeout=_STOP_TIMEOUT_S)
        self.sock.close()
        self._stderr.close()


class ForkServerLauncher:
    """Forks each run from a server that imported torch once; spawns instead when the server is unusable.

    `preload`: modules the server imports (DEFAULT_PRELOAD: everything an image run needs; add
    "transformers" for grids of hf: models). `on_note` hears, once each, why runs are spawned instead
    (possibly from the thread that watches the server); `notes` keeps them.
    """

    def __init__(
        self, preload: Sequence[str] = DEFAULT_PRELOAD, *, on_note: Note | None = None, start_timeout_s: float = 180.0
    ) -> None:
        self.preload = tuple(preload)
        self.start_timeout_s = start_timeout_s
        self.notes: list[str] = []
        self._on_note = on_note
        self._spawn = SpawnLauncher()
        self._lock = threading.Lock()
        self._server: _ServerConnection | None = None
        self._given_up = False

    # -- state ------------------------------------------------------------------------------------------
    @property
    def server_pid(self) -> int | None:
        """The running server's pid, or None (not started yet, stopped, or given up on)."""
        server = self._server
        return server.pid if server is not None and server.alive else None

    @property
    def server_facts(self) -> dict[str, Any]:
        """What the server reported when ready: import `seconds`, `threads`, `cuda_initialized`."""
        server = self._server
        return dict(server.facts) if server is not None else {}

    def _note(self, message: str) -> None:
        if message in self.notes:
            return
        self.notes.append(message)
        if self._on_note is not None:
            try:
                self._on_note(message)
            except Exception:  # noqa: BLE001 - a face that fails to show a note costs no run
                pass

    def _give_up(self, reason: str) -> None:
        self._given_up = True
        self._note(f"{reason}; starting each run as a fresh interpreter from now on")

    # -- the server -------------------------------------------------------------------------------------
    def _server_for(self, env: dict[str, str]) -> _ServerConnection | None:
        """The server for this env and cwd, started (or restarted) as needed; None when unusable."""
        if self._given_up:
            return None
        cwd = os.getcwd()
        key = (tuple(sorted(env.items())), cwd)
        server = self._server
        if server is not None and not server.alive:
            server.close()
            self._server = None
            self._give_up(f"the fork server (pid {server.pid}) {server.exit_description()}")
            return None
        if server is not None and server.key == key:
            return server
        if server is not None:  # keyed on another env or cwd: libraries may read either when they load
            if server.busy:
                return None  # never kill another caller's run to change env: this one is spawned
            server.close()
            self._server = None
        try:
            self._server = _ServerConnection(key, env, cwd, self.preload, self.start_timeout_s, self._note)
        except ServerUnavailable as exc:
            self._give_up(f"the fork server could not start: {exc}")
            return None
        return self._server

    def start(self, env: Mapping[str, str] | None = None) -> None:
        """Start the server now (it takes the import time once), e.g. before an idle baseline."""
        with self._lock:
            self._server_for(dict(os.environ if env is None else env))

    def launch(
        self, run_json: str, event_write_fd: int, env: Mapping[str, str] | None = None, *, module: str = CHILD_MODULE
    ) -> RunProcess:
        env = dict(os.environ if env is None else env)
        os.fstat(event_write_fd)  # a bad descriptor is the caller's error, not a reason to drop the server
        with self._lock:
            server = self._server_for(env)
            if server is not None:
                try:
                    return server.launch(run_json, event_write_fd, module, os.getcwd())
                except ServerUnavailable as exc:
                    server.close()
                    self._server = None
                    self._give_up(f"the fork server (pid {server.pid}) could not start the run: {exc}")
            return self._spawn.launch(run_json, event_write_fd, env, module=module)

    def close(self) -> None:
        """Stop the server (a run still going is killed); a later launch starts a new one."""
        with self._lock:
            if self._server is not None:
                self._server.close()
                self._server = None

    def __enter__(self) -> ForkServerLauncher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def fork_server_supported() -> bool:
    return sys.platform in ("linux", "darwin") and hasattr(os, "fork") and hasattr(socket, "send_fds")


def default_launcher(*, on_note: Note | None = None) -> Launcher:
    """The fork server where fork is available (Linux, macOS), else spawning; GREENLAB_LAUNCHER forces one."""
    raw = os.environ.get(LAUNCHER_ENV, "")
    choice = raw.strip().lower() or ("forkserver" if fork_server_supported() else "spawn")
    if choice == "spawn":
        return SpawnLauncher()
    if choice == "forkserver":
        if not fork_server_supported():
            raise GreenLabError(
                f"{LAUNCHER_ENV}=forkserver needs fork and Unix sockets, which "
                f"{sys.platform} lacks; unset it or set {LAUNCHER_ENV}=spawn"
            )
        return ForkServerLauncher(on_note=on_note)
    raise GreenLabError(f"{LAUNCHER_ENV} is '{raw}'; set it to one of {', '.join(LAUNCHER_CHOICES)}, or unset it")
