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


def test_ctrl_c_cancels_the_ray_tasks_and_stores_the_running_run_as_interrupted(tmp_path):
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
    process.send_signal(signal.SIGINT)
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
    assert status == "interrupted" and "cancelled by the user" in error and executor == "ray"
    assert duration > 0 and energy > 0 and samples > 0 and epochs >= 1  # the node's partial record came back
