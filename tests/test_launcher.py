"""Launchers: a spawned and a forked run behave alike; the fork server stays fork-safe and never loses a run."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from greenlab.core.errors import GreenLabError
from greenlab.core.plan.config import expand_grid, parse_experiments
from greenlab.core.run.launcher import (
    ForkedProcess,
    ForkServerLauncher,
    SpawnLauncher,
    default_launcher,
    fork_server_supported,
)
from greenlab.core.train import child_events
from tests.conftest import QUICK_DEFAULTS, REPO

pytestmark = pytest.mark.skipif(not fork_server_supported(), reason="the fork server needs fork and Unix sockets")

PROBE = "tests.launcher_probe"
DEADLINE_S = 180  # generous: a bound for a hung child, never a timing assertion


def run_json(model: str = "tinycnn", **settings: Any) -> str:
    """A quick run (tests/conftest.py's QUICK_DEFAULTS) as the supervisor sends it, settings overridden."""
    (run,) = expand_grid(
        parse_experiments(
            QUICK_DEFAULTS
            + f"""
[[experiment]]
name = "launch"
models = ["{model}"]
"""
        )
    )
    data = run.to_json()
    data["settings"].update(settings)
    return json.dumps(data)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("launcher")
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "PYTHONUNBUFFERED": "1",
        "GREENLAB_DB": str(home / "runs.db"),
        "GREENLAB_DATA_DIR": str(home / "data"),
    }


@pytest.fixture(scope="module")
def fork_launcher(env):
    """One fully preloaded server for the tests that only use it (its start takes the import time)."""
    launcher = ForkServerLauncher()
    launcher.start(env)
    assert launcher.server_pid is not None, launcher.notes
    yield launcher
    launcher.close()


@pytest.fixture
def light_launcher():
    """A server that preloads nothing: starts in a blink, for lifecycle tests with the probe."""
    launcher = ForkServerLauncher(preload=())
    yield launcher
    launcher.close()


@dataclass
class Outcome:
    lines: list[str]
    returncode: int
    output: str
    handle: Any
    seen: dict[str, Any] = field(default_factory=dict)

    @property
    def event_types(self) -> list[str]:
        return [type(child_events.decode(line)).__name__ for line in self.lines]

    @property
    def losses(self) -> list[float]:
        return [e.loss for e in map(child_events.decode, self.lines) if isinstance(e, child_events.BatchFinished)]

    @property
    def facts(self) -> dict[str, Any]:
        return json.loads(self.lines[0])


def run_to_end(
    launcher: Any,
    run_json: str,
    env: dict[str, str],
    *,
    module: str | None = None,
    on_line: Callable[[Any, str], None] | None = None,
) -> Outcome:
    """Launch as the supervisor does, read every event until the child closes its end, then wait."""
    read_fd, write_fd = os.pipe()
    try:
        kwargs = {"module": module} if module else {}
        handle = launcher.launch(run_json, write_fd, env, **kwargs)
    finally:
        os.close(write_fd)
    output: list[str] = []
    drain = threading.Thread(target=lambda: output.extend(handle.stdout), daemon=True)
    drain.start()
    lines, buffer, deadline = [], b"", time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_fd], [], [], 1.0)
            if not ready:
                continue
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                lines.append(line.decode())
                if on_line is not None:
                    on_line(handle, lines[-1])
        else:
            os.killpg(handle.pid, signal.SIGKILL)
            pytest.fail("the child never closed its event pipe")
    finally:
        os.close(read_fd)
    returncode = handle.wait(timeout=60)
    drain.join(timeout=10)
    return Outcome(lines, returncode, "".join(output), handle)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(gone(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


# -- real runs ---------------------------------------------------------------------------------------------
def test_spawned_and_forked_runs_deliver_the_same_events_and_exit_0(fork_launcher, env):
    spawned = run_to_end(SpawnLauncher(), run_json(), env)
    forked = run_to_end(fork_launcher, run_json(), env)
    assert spawned.returncode == 0, spawned.output
    assert forked.returncode == 0, forked.output
    assert forked.event_types == spawned.event_types
    assert forked.event_types[0] == "RunStarted" and forked.event_types[-2:] == ["RunFinished", "ProcessEnding"]
    assert "BatchFinished" in forked.event_types
    # Seeded alike, both train alike: nothing in the server shifted the run's random streams.
    assert forked.losses == spawned.losses
    assert forked.handle.pid != spawned.handle.pid != fork_launcher.server_pid
    assert fork_launcher.notes == []


@pytest.mark.parametrize("kind", ["spawn", "forkserver"])
def test_a_failing_run_relays_its_run_failed_event_and_exit_code_1(kind, fork_launcher, env):
    launcher = SpawnLauncher() if kind == "spawn" else fork_launcher
    # resnet18 needs 32 px: the worker refuses 16 before loading anything.
    outcome = run_to_end(launcher, run_json("resnet18", image_size=16), env)
    assert outcome.returncode == 1
    failed, ending = [child_events.decode(line) for line in outcome.lines]
    assert (
        isinstance(failed, child_events.RunFailed)
        and failed.user_error
        and isinstance(ending, child_events.ProcessEnding)
    )
    assert "at least 32 px" in failed.error


@pytest.mark.parametrize("kind", ["spawn", "forkserver"])
def test_killpg_stops_the_run_and_its_loader_workers(kind, fork_launcher, env):
    launcher = SpawnLauncher() if kind == "spawn" else fork_launcher
    long_run = run_json(max_train_batches=400, epochs=50, num_workers=1)
    family: list[int] = []

    def kill_at_first_batch(handle: Any, line: str) -> None:
        if family or type(child_events.decode(line)).__name__ != "BatchFinished":
            return
        family.append(handle.pid)
        family.extend(child.pid for child in psutil.Process(handle.pid).children(recursive=True))
        assert os.getpgid(handle.pid) == handle.pid  # it leads its own group
        os.killpg(handle.pid, signal.SIGTERM)

    outcome = run_to_end(launcher, long_run, env, on_line=kill_at_first_batch)
    assert outcome.returncode == -signal.SIGTERM
    assert len(family) >= 2, "the data loader's worker process was not found"
    assert wait_gone(family), [pid for pid in family if not gone(pid)]


# -- the server's own state ------------------------------------------------------------------------------
def test_the_server_holds_no_thread_and_never_initialised_cuda(fork_launcher, env):
    facts = fork_launcher.server_facts
    assert facts["threads"] == 1 and facts["cuda_initialized"] is False
    assert run_to_end(fork_launcher, run_json(), env).returncode == 0
    server = psutil.Process(fork_launcher.server_pid)
    assert server.num_threads() == 1  # still, after forking a run
    maps = Path(f"/proc/{server.pid}/maps").read_text() if sys.platform.startswith("linux") else ""
    assert "libcuda.so" not in maps  # the CUDA driver was never loaded, let alone initialised


def test_consecutive_forked_runs_are_fresh_processes(fork_launcher, env):
    request = json.dumps({"rng": True})
    first = run_to_end(fork_launcher, request, env, module=PROBE)
    second = run_to_end(fork_launcher, request, env, module=PROBE)
    spawned = run_to_end(SpawnLauncher(), request, env, module=PROBE)
    for outcome in (first, second, spawned):
        assert outcome.returncode == 0, outcome.output
        assert outcome.output == "probe says hello\n"
        facts = outcome.facts
        assert facts["pid"] == facts["pgid"] == facts["sid"] == outcome.handle.pid  # its own session
        assert facts["name"] == "__main__" and facts["argv"][0] == "--event-fd"
        assert facts["cuda_initialized"] is False
    assert first.facts["pid"] != second.facts["pid"]
    assert second.facts["seen_mark"] is None  # the first run's module global did not reach the second
    # A fresh interpreter seeds torch's and numpy's generators from the OS; so does each forked run,
    # rather than starting from a copy of the server's (the worker then seeds both itself).
    assert first.facts["numpy_draw"] != second.facts["numpy_draw"]
    assert first.facts["torch_seed"] != second.facts["torch_seed"]
    assert first.facts["torch_state"] != second.facts["torch_state"]
    assert first.facts["cwd"] == spawned.facts["cwd"] == os.getcwd()


# -- never losing a run ----------------------------------------------------------------------------------
def test_a_server_that_cannot_start_means_spawning(env):
    launcher = ForkServerLauncher(preload=("greenlab_no_such_module",))
    try:
        outcome = run_to_end(launcher, json.dumps({}), env, module=PROBE)
    finally:
        launcher.close()
    assert outcome.returncode == 0 and isinstance(outcome.handle, subprocess.Popen)
    assert len(launcher.notes) == 1 and "could not start" in launcher.notes[0]
    assert "greenlab_no_such_module" in launcher.notes[0]


@pytest.mark.parametrize("status", [0, 3])
def test_a_forked_runs_exit_status_is_what_it_asked_for(light_launcher, env, status):
    outcome = run_to_end(light_launcher, json.dumps({"exit": status}), env, module=PROBE)
    assert outcome.returncode == status and outcome.output == "probe says hello\n"
    assert isinstance(outcome.handle, ForkedProcess)


def test_a_dead_server_means_spawning_from_then_on(env):
    noted: list[str] = []
    with ForkServerLauncher(preload=(), on_note=noted.append) as launcher:
        assert run_to_end(launcher, json.dumps({}), env, module=PROBE).returncode == 0
        server_pid = launcher.server_pid
        os.kill(server_pid, signal.SIGKILL)
        assert wait_gone([server_pid])
        outcomes = [run_to_end(launcher, json.dumps({}), env, module=PROBE) for _ in range(2)]
    assert [o.returncode for o in outcomes] == [0, 0]
    assert all(isinstance(o.handle, subprocess.Popen) for o in outcomes)
    assert len(noted) == 1 and f"pid {server_pid}" in noted[0] and "fresh interpreter" in noted[0]
    assert launcher.notes == noted


def test_a_server_killed_mid_run_leaves_no_orphan(light_launcher, env):
    def kill_server(handle: Any, line: str) -> None:
        os.kill(light_launcher.server_pid, signal.SIGKILL)

    outcome = run_to_end(light_launcher, json.dumps({"sleep": 120}), env, module=PROBE, on_line=kill_server)
    assert outcome.returncode < 0
    assert wait_gone([outcome.handle.pid])
    assert any("during a run" in note for note in light_launcher.notes)


def test_close_stops_the_server_and_its_runs(light_launcher, env):
    read_fd, write_fd = os.pipe()
    handle = light_launcher.launch(json.dumps({"sleep": 120}), write_fd, env, module=PROBE)
    os.close(write_fd)
    with os.fdopen(read_fd) as stream:
        assert json.loads(stream.readline())["pid"] == handle.pid
        server_pid = light_launcher.server_pid
        light_launcher.close()
    assert handle.wait(timeout=20) < 0
    assert wait_gone([handle.pid, server_pid])
    assert light_launcher.notes == []  # a close is no failure


def test_the_server_exits_when_its_supervisor_dies(env):
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom greenlab.core.run.launcher import ForkServerLauncher\n"
            "launcher = ForkServerLauncher(preload=())\nlauncher.start()\nprint(launcher.server_pid, flush=True)\n"
            "time.sleep(300)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        server_pid = int(supervisor.stdout.readline())
        assert not gone(server_pid)
    finally:
        supervisor.kill()
        supervisor.wait()
    assert wait_gone([server_pid])


def test_a_new_environment_restarts_the_server(light_launcher, env):
    request = json.dumps({"env_key": "GREENLAB_PROBE"})
    first = run_to_end(light_launcher, request, {**env, "GREENLAB_PROBE": "one"}, module=PROBE)
    first_server = light_launcher.server_pid
    second = run_to_end(light_launcher, request, {**env, "GREENLAB_PROBE": "two"}, module=PROBE)
    assert (first.facts["env"], second.facts["env"]) == ("one", "two")
    assert light_launcher.server_pid not in (None, first_server)
    assert wait_gone([first_server])
    assert light_launcher.notes == []


def test_a_new_environment_never_kills_a_run_in_flight(light_launcher, env):
    read_fd, write_fd = os.pipe()
    running = light_launcher.launch(json.dumps({"sleep": 120}), write_fd, env, module=PROBE)
    os.close(write_fd)
    with os.fdopen(read_fd) as stream:
        stream.readline()
        other = run_to_end(light_launcher, json.dumps({}), {**env, "GREENLAB_PROBE": "two"}, module=PROBE)
        assert other.returncode == 0 and isinstance(other.handle, subprocess.Popen)
        assert running.poll() is None and not gone(running.pid)
        light_launcher.close()
    assert running.wait(timeout=20) < 0


# -- choosing ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("", ForkServerLauncher),
        ("forkserver", ForkServerLauncher),
        ("spawn", SpawnLauncher),
        (" Spawn ", SpawnLauncher),
    ],
)
def test_default_launcher_honours_greenlab_launcher(monkeypatch, value, kind):
    monkeypatch.setenv("GREENLAB_LAUNCHER", value)
    launcher = default_launcher()
    assert type(launcher) is kind
    launcher.close()  # nothing was started: closing is free


def test_an_unknown_greenlab_launcher_is_the_users_to_fix(monkeypatch):
    monkeypatch.setenv("GREENLAB_LAUNCHER", "threads")
    with pytest.raises(GreenLabError, match="spawn, forkserver"):
        default_launcher()
