"""Shared fixtures: every test gets its own store and data dir, never data/runs.db."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

QUICK_DEFAULTS = """
[defaults]
dataset = "digits"
epochs = 1
batch_size = 64
pretrained = false
device = "cpu"
idle_s = 0
max_train_batches = 3
max_eval_batches = 2
sample_hz = 20
"""


@pytest.fixture(scope="session", autouse=True)
def _session_lock_dir(tmp_path_factory):
    """Module-scoped fixtures start before `_isolated`: their grids get a host lock of the session's own."""
    patch = pytest.MonkeyPatch()
    patch.setenv("GREENLAB_LOCK_DIR", str(tmp_path_factory.mktemp("lock")))
    patch.setenv("GREENLAB_CONFIG", str(tmp_path_factory.mktemp("config") / "config.toml"))
    # A grid in a subprocess starts no calibration child (seconds of CPU each): its forecast says "unknown".
    # The tests of the forecast and its calibration unset it; the as-a-user tests unset every GREENLAB_*.
    patch.setenv("GREENLAB_CALIBRATE", "0")
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENLAB_DB", str(tmp_path / "runs.db"))
    monkeypatch.setenv("GREENLAB_DATA_DIR", str(tmp_path / "data"))
    # No real RAPL tree can leak into tests on a machine that has one.
    monkeypatch.setenv("GREENLAB_POWERCAP_ROOT", str(tmp_path / "no-powercap"))
    # The TUI's preferences: never the user's file, never another test's.
    monkeypatch.setenv("GREENLAB_CONFIG", str(tmp_path / "config" / "config.toml"))
    # Each test its own host lock: tests never wait for one another's grids.
    monkeypatch.setenv("GREENLAB_LOCK_DIR", str(tmp_path / "lock"))


@pytest.fixture(autouse=True)
def _no_calibration_child(monkeypatch):
    """The forecast calibrates models without earlier runs in a child that imports torch (seconds of CPU):
    in-process tests get a fixed, instant calibration instead, so TUI pictures do not depend on this
    machine's speed. CLI tests (a subprocess) and tests that ask for the real one are not affected."""
    from greenlab.core.grid import calibrator, forecast

    def fixed(specs):
        return {spec: {"flops_per_sample": 1e7, "flop_per_s": 2e10} for spec in specs}

    monkeypatch.setattr(forecast, "calibrate_in_child", fixed)
    # The TUI's own Calibrator: the same fixed answer, no child and no host lock.
    monkeypatch.setattr(calibrator.Calibrator, "_calibrate", lambda self, todo: fixed(todo))
    monkeypatch.setattr(forecast, "_watts", lambda earlier: (40.0, "earlier runs" if earlier else "the CPU estimate"))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`greenlab ARGS` in a subprocess, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "greenlab", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=timeout,
        env={**os.environ},
    )


@pytest.fixture
def write_toml(tmp_path):
    def write(body: str, name: str = "experiments.toml", defaults: str = QUICK_DEFAULTS) -> Path:
        path = tmp_path / name
        path.write_text(defaults + body)
        return path

    return write


def sync(test):
    """Run an async test body on a fresh event loop (no asyncio pytest plugin needed)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper
