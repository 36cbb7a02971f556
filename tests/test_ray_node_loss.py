"""A Ray node lost mid-grid, as a user meets it: a two-node cluster on this machine (a head and a worker
node, one CPU each), `greenlab --headless FILE --ray ADDRESS` in a subprocess, and the worker node removed
(its raylet killed) while one of the runs trains there.

The grid must complete; the run that was on the lost node is retried once on the surviving node and stored
once, with `attempts = 2` and its `node` and placement naming the node that ran it; live progress goes on
(rows start when their runs start, epochs print); Ray's own noise stays out of the output, which names the
lost node in one line. Its own cluster, so its own module: Ray allows one connection per process, and the
test process only starts and stops nodes (the grid's driver is the subprocess).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

ray = pytest.importorskip("ray")

GRID = """
[defaults]
dataset = "digits"
device = "cpu"
pretrained = false
idle_s = 0
cpus_per_run = 1
epochs = 40
batch_size = 32
max_train_batches = 20
max_eval_batches = 2
sample_hz = 10

[[experiment]]
name = "node-loss"
models = ["tinycnn"]
techniques = ["baseline"]
repeats = 2  # one run per node: the one on the lost node is retried on the other once its own has ended
"""


def rows(db):
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("select * from runs order by id")]
    except sqlite3.OperationalError:  # the driver is creating the store
        return []


@pytest.fixture
def two_nodes():
    from ray.cluster_utils import Cluster

    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the nodes' workers import GreenLab from this checkout
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": 100 * 1024**2},
    )
    worker = cluster.add_node(num_cpus=1, object_store_memory=100 * 1024**2)
    cluster.wait_for_nodes()
    try:
        yield cluster, worker
    finally:
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_a_lost_node_is_named_once_and_its_run_completes_on_the_node_that_survives(two_nodes, tmp_path):
    cluster, worker = two_nodes
    head_id = cluster.head_node.node_id
    (tmp_path / "grid.toml").write_text(GRID)
    db = tmp_path / "runs.db"
    out = open(tmp_path / "out.txt", "w")  # noqa: SIM115 - the subprocess writes it; closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenlab", "--headless", "grid.toml", "--db", str(db), "--ray", cluster.address],
        cwd=tmp_path,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "GREENLAB_DATA_DIR": str(tmp_path / "data")},
    )
    try:
        deadline = time.monotonic() + 240
        lost_run = None
        while lost_run is None and time.monotonic() < deadline and proc.poll() is None:
            # a row starts when its run does: one on the worker node is training there now
            running = [r for r in rows(db) if r["status"] == "running" and r["node"] == worker.node_id]
            lost_run = running[0]["id"] if running else None
            time.sleep(0.2)
        assert lost_run is not None, (tmp_path / "out.txt").read_text()
        time.sleep(1.5)
        cluster.remove_node(worker, allow_graceful=False)  # SIGKILL: a node that crashes, not one shut down
        started_after_loss = set()
        while proc.poll() is None and time.monotonic() < deadline:
            started_after_loss |= {r["id"] for r in rows(db) if r["status"] == "running"}
            time.sleep(0.2)
        assert proc.poll() is not None, "the grid did not end"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        out.close()
    output = (tmp_path / "out.txt").read_text()
    assert proc.returncode == 0, output

    stored = rows(db)
    assert len(stored) == 2 and {r["status"] for r in stored} == {"completed"}, output  # no duplicate, none lost
    lost = next(r for r in stored if r["id"] == lost_run)
    assert lost["attempts"] == 2
    placement = json.loads(lost["meters"])["placement"]
    assert lost["node"] == head_id and placement["node_id"] == head_id, "the retry's node, not the lost one"
    assert placement["earlier_attempts"][0]["node_id"] == worker.node_id
    # Live progress went on: the retried run's row ran again, and every run was seen running before it ended.
    assert lost_run in started_after_loss
    assert len(started_after_loss) >= 2, "rows started only when their runs ended"
    # One line names the lost node; Ray's own log lines (raylet state, gcs_client warnings) are not shown.
    # (each retried run says so on its own line too; the node itself is named once)
    named = [line for line in output.splitlines() if line.startswith(f"Ray node {worker.node_id[:8]}")]
    assert len(named) == 1 and "was lost" in named[0], output
    if "Ray's own messages are in " in named[0]:  # Ray's own account of the loss: in its log, not the output
        log = Path(named[0].split("Ray's own messages are in ", 1)[1].rstrip(")"))
        assert (tmp_path / log if not log.is_absolute() else log).stat().st_size > 0
    noise = [line for line in output.splitlines() if line.startswith("[20") or ".cc:" in line or "raylet" in line]
    assert noise == [], "\n".join(noise)
    assert "no run was in progress" not in output
