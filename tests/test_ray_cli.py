"""`greenlab --headless FILE --ray local` as a user types it, Ctrl-C included; and no Ray without --ray.

The --ray tests start their own local Ray instance (on 127.0.0.1, this machine only) in the subprocess,
after tests/test_ray.py's instance is shut down; none connects anywhere else.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import threading

import pytest

from tests.conftest import QUICK_DEFAULTS, REPO, run_cli

GRID = '[[experiment]]\nname = "q"\nmodels = ["tinycnn"]\ntechniques = ["baseline", "prune"]\n'


def test_without_the_flag_a_grid_never_imports_ray(write_toml, tmp_path):
    toml = write_toml('[[experiment]]\nname = "q"\nmodels = ["tinycnn"]\n')
    code = (
        "import sys\nfrom greenlab.cli import main\n"
        f"code = main(['--headless', {str(toml)!r}, '--db', {str(tmp_path / 'runs.db')!r}])\n"
        "print('exit', code, 'ray imported' if 'ray' in sys.modules else 'ray not imported')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "exit 0 ray not imported"
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        executor, node, attempts = conn.execute("select executor, node, attempts from runs").fetchone()
    assert executor == "local" and node == socket.gethostname() and attempts == 1


def test_ray_needs_a_grid_file():
    result = run_cli("--ray", "local")
    assert result.returncode == 2 and "--headless FILE --ray" in result.stderr


def test_headless_grid_on_a_local_ray_instance(write_toml, tmp_path):
    pytest.importorskip("ray")
    toml = write_toml(GRID)
    db = tmp_path / "runs.db"
    result = run_cli("--headless", str(toml), "--db", str(db), "--ray", "local")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on a local Ray instance: 1 node" in result.stdout and "Traceback" not in result.stderr
    assert "tinycnn · prune: completed" in result.stdout
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select status, executor, node from runs").fetchall()
        epochs = conn.execute("select count(*) from epochs").fetchone()[0]
    assert len(rows) == 2 and all(
        status == "completed" and executor == "ray" and node for status, executor, node in rows
    )
    assert epochs == 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_cancels_the_ray_tasks_and_stores_the_running_run_as_interrupted(tmp_path, sig):
    pytest.importorskip("ray")
    toml = tmp_path / "long.toml"
    toml.write_text(
        QUICK_DEFAULTS.replace("max_train_batches = 3", "max_train_batches = 400").replace("epochs = 1", "epochs = 50")
        + GRID
    )
    db = tmp_path / "runs.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "greenlab", "--headless", str(toml), "--db", str(db), "--ray", "local"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    epoch = threading.Event()

    def read() -> None:  # the driver prints the node's events as they come back: wait for a first epoch
        for line in process.stdout:
            lines.append(line)
            if ": epoch 1 " in line:
                epoch.set()

    errors: list[str] = []
    readers = [
        threading.Thread(target=read, daemon=True),
        threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    assert epoch.wait(180), "no epoch finished in time:\n" + "".join(lines)
    process.send_signal(sig)
    process.wait(timeout=120)
    for reader in readers:
        reader.join(timeout=10)
    out, err = "".join(lines), "".join(errors)
    assert process.returncode == 130, out + err
    assert "Traceback" not in out + err
    assert "interrupted: the run in progress is stored as interrupted" in out
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select status, error, executor, duration_s, energy_j from runs").fetchall()
        samples = conn.execute("select count(*) from samples").fetchone()[0]
        epochs = conn.execute("select count(*) from epochs").fetchone()[0]
    assert len(rows) == 1  # the second run (each takes the node's 2 CPUs) never started
    status, error, executor, duration, energy = rows[0]
    # Ctrl-C is the user's; SIGTERM is a signal, and the row (written on the node) says which
    why = "cancelled by the user" if sig == signal.SIGINT else "stopped by signal SIGTERM"
    assert status == "interrupted" and error.startswith(why) and executor == "ray", error
    assert duration > 0 and energy > 0 and samples > 0 and epochs >= 1  # the node's partial record came back


def _closed_port() -> int:
    """A port on this machine where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("how", ["flag", "ray-url", "env-auto"])
def test_an_address_where_nothing_listens_exits_2_naming_it_and_writes_nothing(write_toml, tmp_path, monkeypatch, how):
    """Ray itself retries such an address for minutes; GreenLab asks once, for a settable time."""
    pytest.importorskip("ray")
    port = _closed_port()
    address = {"flag": f"127.0.0.1:{port}", "ray-url": f"ray://127.0.0.1:{port}", "env-auto": "auto"}[how]
    if how == "env-auto":
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setenv("GREENLAB_RAY_CONNECT_TIMEOUT_S", "3")
    db = tmp_path / "runs.db"
    result = run_cli("--headless", str(write_toml(GRID)), "--db", str(db), "--ray", address, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = [text for text in result.stderr.splitlines() if text.strip()]  # one line, no Ray warnings
    assert f"127.0.0.1:{port} refused the connection: nothing listens there" in line and f"'{address}'" in line
    assert "ray start --head" in line and "GREENLAB_RAY_CONNECT_TIMEOUT_S" in line
    assert not db.exists()


def test_a_connect_timeout_that_is_not_seconds_is_refused(write_toml, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("GREENLAB_RAY_CONNECT_TIMEOUT_S", "soon")
    result = run_cli("--headless", str(write_toml(GRID)), "--db", str(tmp_path / "runs.db"), "--ray", "10.0.0.1:6379")
    assert (
        result.returncode == 2 and "GREENLAB_RAY_CONNECT_TIMEOUT_S='soon' is not a number of seconds" in result.stderr
    )
    assert not (tmp_path / "runs.db").exists()


def test_auto_with_no_cluster_started_here_says_how_to_start_one(write_toml, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # no /tmp/ray/ray_current_cluster of another test's
    result = run_cli("--headless", str(write_toml(GRID)), "--db", str(tmp_path / "runs.db"), "--ray", "auto")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot use Ray at 'auto'" in result.stderr and "ray start --head" in result.stderr
