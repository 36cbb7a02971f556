"""Ctrl-C during a headless grid: exit 130, the run stored as interrupted with its partial data."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from tests.conftest import QUICK_DEFAULTS, REPO


def test_ctrl_c_stores_the_run_as_interrupted(tmp_path):
    toml = tmp_path / "long.toml"
    toml.write_text(QUICK_DEFAULTS.replace("max_train_batches = 3", "max_train_batches = 400")
                    .replace("epochs = 1", "epochs = 50") + """
[[experiment]]
name = "long"
models = ["tinycnn"]
techniques = ["baseline"]
""")
    db = tmp_path / "runs.db"
    process = subprocess.Popen([sys.executable, "-m", "greenlab", "--headless", str(toml), "--db", str(db)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    epochs = 0
    while time.monotonic() < deadline and epochs == 0:  # wait until at least one epoch is stored
        time.sleep(0.5)
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    epochs = conn.execute("select count(*) from epochs").fetchone()[0]
            except sqlite3.OperationalError:
                pass  # schema still being created
    assert epochs, "no epoch finished in time"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "Traceback" not in out + err
    with sqlite3.connect(db) as conn:
        status, error, energy, finished = conn.execute(
            "select status, error, energy_j, finished_at from runs").fetchone()
        stored_epochs = conn.execute("select count(*) from epochs").fetchone()[0]
        samples = conn.execute("select count(*) from samples").fetchone()[0]
    assert status == "interrupted" and "cancel" in error
    assert energy > 0 and finished and stored_epochs >= 1 and samples > 0
