"""A run's record: built by pure functions from what the meters measured, stored by one translation.

No child, meter or thread here: fake windows and events go in, a RunRecord comes out, and its writes go
through a real Store (and the pending folder) in tmp_path.
"""

from __future__ import annotations

import pytest

from greenlab.core.measure.meter import ComponentEnergy
from greenlab.core.measure.tracker import WindowResult
from greenlab.core.plan.config import expand_grid, parse_experiments
from greenlab.core.run.measurement import (
    RunEnd,
    RunMeasurement,
    capacity_curve,
    epoch_record,
    model_values,
    run_record,
)
from greenlab.core.store import journal
from greenlab.core.store.database import Store
from greenlab.core.store.record import ComponentRecord, EpochRecord, RunRecord, SampleRecord, record_writes
from greenlab.core.train import child_events
from tests.conftest import QUICK_DEFAULTS


def _window(name: str, seconds: float, **joules: float) -> WindowResult:
    return WindowResult(name, seconds, {c: ComponentEnergy(c, j, "counter") for c, j in joules.items()})


def _measured() -> RunMeasurement:
    (run,) = expand_grid(parse_experiments(QUICK_DEFAULTS + '[[experiment]]\nname = "r"\nmodels = ["tinycnn"]\n'))
    meters = {"components": {"cpu": {"method": "counter"}, "gpu0": {"method": "counter"}}}
    return RunMeasurement(7, run, 0.0, {"cpu": 2.0, "gpu0": 10.0}, meters, start={"model": "tinycnn"})


def test_a_record_built_from_fake_windows_gives_known_columns():
    measured = _measured()
    measured.gpus_unused = {"gpu0"}  # metered, but the run trained elsewhere
    prepared = child_events.ModelPrepared(
        {"params_total": 100}, {"params_total": 80, "model_bytes": 320}, capacity_curve=[[0, 0.9], [4, 0.85]]
    )
    measured.values.update(model_values(prepared))
    measured.capacity = capacity_curve(prepared)
    for phase, seconds, joules in (("train", 4.0, 40.0), ("eval", 1.0, 8.0)):
        measured.add_phase(1, phase, _window(f"1:{phase}", seconds, cpu=joules))
    finished = child_events.EpochFinished(1, 0.7, 0.5, 0.4, 0.9, 4.0, 1.0, 3, 0.5, 0.1)
    measured.add_data_wait(finished.train_s, finished.train_data_wait_s)
    measured.epochs.append(epoch_record(finished, measured.epoch_energy(1)))
    measured.samples += [SampleRecord(0.5, "cpu", 9.0), SampleRecord(0.5, "gpu0", 60.0)]
    measured.train_s, measured.final = 5.0, {"val_accuracy": 0.5, "val_f1": 0.4}
    end = RunEnd(
        "completed",
        None,
        "2026-12-08T00:00:00+00:00",
        measured.view(_window("run", 6.0, cpu=60.0, gpu0=600.0)),
        sampler_cpu_s=0.123456,
        samples_dropped=2,
        errors=("display: a broken pipe",),
    )

    record = run_record(measured, end)

    assert record.start == {"model": "tinycnn"} and record.status == "completed" and record.error is None
    values = record.values
    assert (values["params_total"], values["params_total_before"], values["model_bytes"]) == (80, 100, 320)
    assert values["duration_s"] == 6.0 and values["train_s"] == 5.0 and values["val_accuracy"] == 0.5
    assert values["energy_j"] == pytest.approx(60.0) and values["energy_gpu_j"] is None  # the unused GPU is out
    assert values["energy_net_j"] == pytest.approx(60.0 - 2.0 * 6.0) and values["idle_w"] == pytest.approx(2.0)
    assert values["energy_training_j"] == pytest.approx(48.0) and values["data_wait_s"] == pytest.approx(0.5)
    assert values["sampler_cpu_s"] == 0.1235 and values["samples_dropped"] == 2
    assert values["co2e_g"] == pytest.approx(60.0 / 3.6e6 * values["carbon_g_per_kwh"] * values["pue"])
    assert values["meters"]["gpus_not_used"]["components"] == ["gpu0"] and "gpu0" not in values["meters"]["idle_w"]
    (epoch,) = record.epochs
    assert epoch == EpochRecord(
        1, 0.7, 0.5, 0.4, 0.9, 5.0, 4.0, 1.0, 0.5, 0.1, 48.0, 40.0, 8.0, 4.0, 1.0, epoch.train_uncertainty_j,
        epoch.eval_uncertainty_j, (),
    )  # fmt: skip
    assert record.samples == (SampleRecord(0.5, "cpu", 9.0),) and record.dropped == ("gpu0",)
    assert record.components == (ComponentRecord("cpu", 60.0, "counter", 2.0, pytest.approx(48.0), {}, ()),)
    assert record.capacity == ((0, 0.9), (4, 0.85))
    assert record.flags == ("display: a broken pipe",)  # the faces' failures come last, after the run's own


def test_a_record_flags_what_the_end_saw():
    measured = _measured()
    end = RunEnd(
        "completed",
        None,
        "2026-12-08T00:00:00+00:00",
        _window("run", 6.0, cpu=60.0),
        diverged="the loss is NaN",
        paused={"seconds": 3.0},
        gpu_processes={"gpu0": {"processes": [{"pid": 4, "name": "other"}]}},
    )
    record = run_record(measured, end)
    assert record.flags == ("diverged", "gpu_shared", "paused")
    assert record.values["meters"]["paused"] == {"seconds": 3.0}
    assert "gpu0 was shared" in record.values["warnings"][-1]


def _record(status: str = "completed") -> RunRecord:
    return RunRecord(
        start={"model": "tinycnn", "technique": "baseline", "settings_key": "k"},
        values={"status": status, "energy_j": 12.0, "meters": {"components": {}}},
        epochs=(EpochRecord(1, train_loss=0.7, val_accuracy=0.5, flags=("stale_reading",)),),
        samples=(SampleRecord(0.1, "cpu", 10.0), SampleRecord(0.2, "cpu", 11.0)),
        components=(ComponentRecord("cpu", 12.0, "counter", 1.0, 11.8, {"domain": "package-0"}, ("x",)),),
        capacity=((3, 0.5),),
        flags=("host_busy",),
        dropped=("gpu1",),
    )


def test_a_records_writes_round_trip_through_a_real_store(tmp_path):
    store = Store(tmp_path / "runs.db")
    record = _record()
    run_id = store.start_run(dict(record.start))
    store.add_samples(run_id, [(0.1, "cpu", 10.0), (0.0, "gpu1", 50.0)])  # written live before the end
    for _ in range(2):  # applied again, it is stored once
        store.write_record(run_id, record_writes(run_id, record))
    row = store.run(run_id)
    assert (row.status, row.energy_j, row.flags, row.model) == ("completed", 12.0, ["host_busy"], "tinycnn")
    (epoch,) = store.epochs(run_id)
    assert (epoch.epoch, epoch.train_loss, epoch.val_accuracy) == (1, 0.7, 0.5)
    assert [(s.t_s, s.component, s.watts) for s in store.samples(run_id)] == [
        (0.1, "cpu", 10.0),
        (0.2, "cpu", 11.0),
    ]
    (component,) = store.components(run_id)
    assert (component.component, component.net_energy_j, component.idle_w) == ("cpu", 11.8, 1.0)
    assert store.db.execute("select bits, val_accuracy from capacity").fetchall() == [(3, 0.5)]
    store.close()


def test_a_record_kept_beside_the_store_replays_into_the_same_rows(tmp_path):
    (tmp_path / "a").mkdir()
    direct = Store(tmp_path / "a" / "runs.db")
    run_id = direct.start_run(dict(_record().start))
    direct.write_record(run_id, record_writes(run_id, _record()))
    path = tmp_path / "b" / "runs.db"
    path.parent.mkdir()
    kept = journal.save(path, None, record_writes(journal.NO_ROW_YET, _record()), start=dict(_record().start))
    replayed = Store(path)
    (row,) = replayed.runs()
    assert not kept.exists() and journal.pending(path) == []
    mine = direct.run(run_id)
    for column in ("status", "energy_j", "flags", "model", "settings_key", "meters"):
        assert getattr(row, column) == getattr(mine, column), column
    assert len(replayed.epochs(row.id)) == 1 and len(replayed.samples(row.id)) == 2
    direct.close()
    replayed.close()


def test_a_sink_keeps_a_record_the_busy_store_cannot_take_and_the_next_open_imports_it(tmp_path, monkeypatch):
    from greenlab.core.run.sinks import StoreSink
    from greenlab.core.store.errors import StoreBusy
    from greenlab.core.store.journal import RecordKept

    def locked(self, *args, **kwargs):
        raise StoreBusy("database is locked (held by another process for longer than 0 s)")

    store = Store(tmp_path / "runs.db")
    monkeypatch.setattr(Store, "start_run", locked)
    with pytest.raises(RecordKept) as kept:
        StoreSink(store).store_record(None, _record(), label="tinycnn baseline")
    monkeypatch.undo()
    assert kept.value.run_id is None and "the record of tinycnn baseline (no row yet)" in str(kept.value)
    assert journal.pending(store.path) == [kept.value.path]
    store.close()
    reopened = Store(tmp_path / "runs.db")
    (row,) = reopened.runs()
    assert (row.status, row.model, row.flags) == ("completed", "tinycnn", ["host_busy"])
    assert len(reopened.samples(row.id)) == 2 and journal.pending(store.path) == []
    reopened.close()
