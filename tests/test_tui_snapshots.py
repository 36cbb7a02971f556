"""Snapshot tests of every pane at 120x40, 80x24 and 70x20, from the seeded demo store and a frozen clock.

Regenerate after an intended change with: pytest tests/test_tui_snapshots.py --snapshot-update
(then look at the SVGs in tests/__snapshots__ before committing them).
"""

from __future__ import annotations

import pytest

from greenlab.tui.app import GreenLabApp
from tests.tui_demo import FrozenClock, seed_store, show

# A fixed experiments file, so the setup form does not follow edits of the repository's own.
EXPERIMENTS = """
[defaults]
dataset = "digits"
epochs = 2
batch_size = 64
device = "auto"
pretrained = false
idle_s = 3
max_train_batches = 12

[[experiment]]
name = "demo"
models = ["tinycnn", "resnet18"]
techniques = ["baseline", "stego", "prune"]

[experiment.stego]
bits = 16
mode = "truncate"
"""


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "runs.db"
    seed_store(path)
    return path


@pytest.mark.parametrize(
    "pane, size",
    [
        ("setup", (120, 40)),
        ("live", (120, 40)),
        ("runs", (120, 40)),
        ("detail", (120, 40)),
        ("setup", (80, 24)),
        ("live", (80, 24)),
        ("runs", (80, 24)),
        ("detail", (80, 24)),
        # The smallest terminal each pane must stay legible in: narrow columns, the power chart hidden.
        ("setup", (70, 20)),
        ("live", (70, 20)),
        ("runs", (70, 20)),
        ("detail", (70, 20)),
    ],
    ids=lambda value: "x".join(map(str, value)) if isinstance(value, tuple) else value,
)
def test_pane(pane, size, snap_compare, demo_db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the form shows the file's path: keep it the same on every machine
    (tmp_path / "experiments.toml").write_text(EXPERIMENTS)
    clock = FrozenClock()
    app = GreenLabApp(db=demo_db, experiments="experiments.toml", clock=clock)

    async def run_before(pilot):
        await show(pilot.app, pilot, pane, clock)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
