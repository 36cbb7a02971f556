"""Each face started exactly as the README starts it: no --db, no GREENLAB_* variable, a fresh working folder
holding a (cut-down) copy of experiments.toml, and the XDG folders of a fresh account.

Every other test names its store (conftest sets GREENLAB_DB), so the path a newcomer takes first was never
run: the TUI's first ctrl+r once wrote its runs to a file named `None` while its title said data/runs.db.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from greenlab.core.store.database import Store
from greenlab.tui.app import GreenLabApp
from tests.conftest import REPO, run_cli, sync

# The repository's own grid, cut to two short runs: its keys as the README's file writes them.
CUTS = {
    "epochs = 2": "epochs = 1",
    'device = "auto"': 'device = "cpu"',
    "repeats = 3": "repeats = 1",
    "idle_s = 3": "idle_s = 0",
    "max_train_batches = 10": "max_train_batches = 2",
    "max_eval_batches = 4": "max_eval_batches = 1",
    'models = ["tinycnn", "resnet18"]': 'models = ["tinycnn"]',
    'techniques = ["baseline", "stego", "prune", "lowrank"]': 'techniques = ["baseline", "prune"]',
}


@pytest.fixture
def fresh_folder(tmp_path, monkeypatch) -> Path:
    """A working folder with the cut-down experiments.toml, entered; every GREENLAB_* variable unset."""
    text = (REPO / "experiments.toml").read_text()
    for old, new in CUTS.items():
        assert old in text, f"experiments.toml no longer has {old!r}: update CUTS"
        text = text.replace(old, new)
    work = tmp_path / "work"
    work.mkdir()
    (work / "experiments.toml").write_text(text)
    for name in [n for n in os.environ if n.startswith("GREENLAB_")]:
        monkeypatch.delenv(name)
    # A fresh account's XDG folders: preferences and the host lock land there, not in the user's.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.chdir(work)
    return work


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _stored(folder: Path) -> list[tuple[str, str, str]]:
    store = Store.reader(folder / "data" / "runs.db")
    try:
        return sorted((r["model"], r["technique"], r["status"]) for r in store.runs())
    finally:
        store.close()


EXPECTED = [("tinycnn", "baseline", "completed"), ("tinycnn", "prune", "completed")]


@pytest.mark.slow
@sync
async def test_the_tui_started_as_make_run_stores_its_first_grid_in_data_runs_db(fresh_folder):
    # `make run` is `greenlab --experiments experiments.toml`: no --db reaches the app.
    app = GreenLabApp(db=None, experiments="experiments.toml")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "data/runs.db" in app.sub_title
        await pilot.press("ctrl+r")
        deadline = time.monotonic() + 120
        while not (app.presenter.snapshot().grids and app.presenter.snapshot().grids[0].ended):
            assert time.monotonic() < deadline, "the grid did not finish"
            await pilot.pause(0.2)
        await pilot.press("3")
        deadline = time.monotonic() + 20
        while len(app.runs_pane.shown) < 2:
            assert time.monotonic() < deadline, "the Runs pane never showed the grid's runs"
            await pilot.pause(0.2)
        shown = sorted((r.run.model, r.run.technique, r.run.status) for r in app.runs_pane.shown)
        assert shown == EXPECTED
    assert _stored(fresh_folder) == EXPECTED
    assert _files(fresh_folder) <= {"experiments.toml", "data", "data/runs.db"}, _files(fresh_folder)


@pytest.mark.slow
def test_headless_and_report_as_the_readme_types_them(fresh_folder):
    done = run_cli("--headless", "experiments.toml", cwd=fresh_folder)
    assert done.returncode == 0, done.stderr
    assert _stored(fresh_folder) == EXPECTED
    assert _files(fresh_folder) <= {"experiments.toml", "data", "data/runs.db"}, _files(fresh_folder)

    report = run_cli("report", cwd=fresh_folder)
    assert report.returncode == 0, report.stderr
    assert "tinycnn" in report.stdout and "prune" in report.stdout
    assert _files(fresh_folder) <= {"experiments.toml", "data", "data/runs.db"}, _files(fresh_folder)
