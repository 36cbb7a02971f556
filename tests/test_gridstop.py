"""Environment failures stop the grid (listing what never started); a failure of one model lets it go on."""

from __future__ import annotations

import errno
import io

import pytest

from greenlab.core.grid import stop_rules
from greenlab.core.grid.grid_events import RunQueued
from greenlab.core.grid.local import LocalDriver
from greenlab.core.grid.stop_rules import GridStopped
from greenlab.core.plan.config import expand_grid, parse_experiments
from greenlab.core.run.run_events import RunStored
from greenlab.core.run.supervisor import RunSupervisor
from greenlab.core.store.database import Store
from greenlab.core.store.errors import StoreDamaged, StoreReadOnly
from greenlab.headless import EXIT_FAILED, run_headless
from tests.conftest import QUICK_DEFAULTS

GRID = QUICK_DEFAULTS + '[[experiment]]\nname = "g"\nmodels = ["tinycnn", "resnet18", "alexnet", "vgg16"]\n'


def _stored(run, status="failed", error=None):
    return RunStored(1, run, status, error, {})


def test_signature_strips_numbers_from_the_first_line():
    assert stop_rules.signature("shape [3, 75] at step 12.5\ntraceback 1") == "shape [N, N] at step N"


def test_stop_rule():
    tiny, resnet, alexnet = expand_grid(parse_experiments(GRID))[:3]
    rule = stop_rules.StopRule()
    # one model failing the same way for its techniques is that model's problem
    assert rule.cause(_stored(tiny, error="needs 75 px, image_size is 32")) is None
    assert rule.cause(_stored(tiny, error="needs 75 px, image_size is 32")) is None
    # a second model hitting it (numbers aside) means every run will
    cause = rule.cause(_stored(resnet, error="needs 64 px, image_size is 32"))
    assert cause == "the same error on tinycnn and resnet18: needs 64 px, image_size is 32"
    # a completed run in between resets; out of memory is always one model's
    rule = stop_rules.StopRule()
    assert rule.cause(_stored(tiny, error="boom")) is None
    assert rule.cause(_stored(resnet, status="completed")) is None
    assert rule.cause(_stored(alexnet, error="boom")) is None
    assert rule.cause(_stored(tiny, error="out of memory: 2 GB; lower batch_size")) is None
    assert rule.cause(_stored(resnet, error="out of memory: 3 GB; lower batch_size")) is None
    # environment failures stop at once
    assert (
        stop_rules.StopRule()
        .cause(_stored(tiny, error="device 'cuda' requested but CUDA is not available here"))
        .startswith("no CUDA: device 'cuda'")
    )
    assert (
        stop_rules.StopRule()
        .cause(_stored(tiny, error="OSError: [Errno 28] No space left on device"))
        .startswith("no disk space")
    )


def test_exception_causes():
    readonly = stop_rules.exception_cause(StoreReadOnly("attempt to write a readonly database"))
    assert readonly == "the run store cannot be written: StoreReadOnly: attempt to write a readonly database"
    assert stop_rules.store_failure(StoreReadOnly("attempt to write a readonly database"))
    refused = StoreDamaged("the run store runs.db is damaged (...)", refused=True)  # the grid ends on it, exit 2
    assert not stop_rules.store_failure(refused) and stop_rules.exception_cause(refused) is None
    assert stop_rules.exception_cause(OSError(errno.ENOSPC, "No space left on device")).startswith("no disk space")
    assert stop_rules.exception_cause(ValueError("a bug")) is None


def test_same_error_twice_stops_the_grid_and_lists_the_rest(tmp_path, monkeypatch):
    runs = expand_grid(parse_experiments(GRID))
    executed = []

    def failing(self, run):
        executed.append(run.model)
        return _stored(run, error=f"RuntimeError: the meters broke after {len(executed)} s")

    monkeypatch.setattr(RunSupervisor, "execute", failing)
    heard = []
    outcomes = LocalDriver(Store(tmp_path / "runs.db"), on_event=heard.append).run_grid(runs)
    assert executed == ["tinycnn", "resnet18"] and len(outcomes) == 2
    (stopped,) = [e for e in heard if isinstance(e, GridStopped)]
    assert stopped.cause == "the same error on tinycnn and resnet18: RuntimeError: the meters broke after 2 s"
    assert [r.model for r in stopped.not_started] == ["alexnet", "vgg16"]
    assert [e.run.model for e in heard if isinstance(e, RunQueued)] == ["tinycnn", "resnet18"]


def test_an_unwritable_store_stops_headless_with_exit_1(tmp_path, write_toml, monkeypatch):
    def unwritable(self, run):
        raise StoreReadOnly("attempt to write a readonly database")

    monkeypatch.setattr(RunSupervisor, "execute", unwritable)
    out = io.StringIO()
    toml = write_toml(GRID[len(QUICK_DEFAULTS) :])
    assert run_headless(str(toml), db=str(tmp_path / "runs.db"), out=out) == EXIT_FAILED
    lines = [line for line in out.getvalue().splitlines() if line.startswith("grid stopped")]
    assert lines == [
        "grid stopped: the run store cannot be written: StoreReadOnly: attempt to write a readonly "
        "database; 3 runs not started (resnet18 baseline, alexnet baseline, vgg16 baseline)"
    ]


def test_an_unexpected_supervisor_error_still_raises(tmp_path, monkeypatch):
    def buggy(self, run):
        raise ValueError("a bug, not the machine")

    monkeypatch.setattr(RunSupervisor, "execute", buggy)
    (run,) = expand_grid(parse_experiments(GRID))[:1]
    with pytest.raises(ValueError):
        LocalDriver(Store(tmp_path / "runs.db")).run_grid([run])
