"""A real short run supervised with fake RAPL and NVML hardware: measured figures, labelled as such."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from greenlab.core.grid.local import LocalDriver
from greenlab.core.measure.detect import build_meters
from greenlab.core.plan.config import expand_grid, parse_experiments
from greenlab.core.run import measurement, run_events, supervisor
from greenlab.core.store.database import Store
from tests.fake_pynvml import FakeGpu, make_fake_pynvml
from tests.test_rapl import two_sockets

GPU_W, PKG_W, DRAM_W = 250.0, 40.0, 5.0


class Hardware:
    """Advances the fake counters in real time, as the hardware would."""

    def __init__(self, zones, gpu):
        self.zones, self.gpu = zones, gpu
        self.uj = {name: int((zones[name] / "energy_uj").read_text()) for name in zones}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def _tick(self):
        last = time.monotonic()
        while not self._stop.wait(0.01):
            now = time.monotonic()
            dt = now - last
            last = now
            for name, watts in (("pkg0", PKG_W / 2), ("pkg1", PKG_W / 2), ("dram0", DRAM_W / 2), ("dram1", DRAM_W / 2)):
                self.uj[name] += int(watts * dt * 1e6)
                staged = self.zones[name] / "energy_uj.new"
                staged.write_text(f"{self.uj[name]}\n")
                staged.replace(self.zones[name] / "energy_uj")  # atomic, like a sysfs read
            self.gpu.energy_mj += int(GPU_W * dt * 1e3)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture
def fake_hardware(tmp_path, monkeypatch):
    root = tmp_path / "powercap"
    zones = two_sockets(root)
    gpu = FakeGpu(uuid="GPU-00000000-0000-0000-0000-000000000000", power_mw=int(GPU_W * 1000))
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml([gpu]))
    monkeypatch.setenv("GREENLAB_POWERCAP_ROOT", str(root))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(supervisor, "gpus_for", lambda device: [0])
    with Hardware(zones, gpu) as hardware:
        yield hardware


@pytest.fixture
def child_on_gpu(monkeypatch):
    """The child trains on the CPU here; the supervisor takes it to have reported the fake gpu0."""
    monkeypatch.setattr(measurement, "gpus_used", lambda device, facts, **ids: ({"gpu0"}, []))


def test_meter_selection_prefers_hardware(fake_hardware):
    setup = build_meters(use_gpus=[0])
    methods = {c: m.method(c) for m in setup.meters for c in m.components()}
    assert methods == {"gpu0": "counter", "cpu": "counter", "dram": "counter"}


def test_meter_selection_falls_back_with_reasons(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENLAB_POWERCAP_ROOT", str(tmp_path / "none"))
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    setup = build_meters(use_gpus=[0])
    methods = {c: m.method(c) for m in setup.meters for c in m.components()}
    assert methods == {"cpu": "estimate", "dram": "estimate"}
    assert "gpu" in setup.notes and "cpu" in setup.notes


QUICK_RUN = """
[defaults]
epochs = 1
batch_size = 32
pretrained = false
device = "cpu"
idle_s = 0.5
max_train_batches = 30
max_eval_batches = 5
sample_hz = 20
[[experiment]]
name = "measured"
models = ["tinycnn"]
"""


def test_supervised_run_is_measured_and_labelled(fake_hardware, child_on_gpu, tmp_path):
    (run,) = expand_grid(parse_experiments(QUICK_RUN))
    store = Store(tmp_path / "runs.db")
    seen = []
    outcome = supervisor.RunSupervisor(store, on_event=seen.append).execute(run)
    assert outcome.status == "completed", outcome.error
    row = outcome.row
    # A phase shorter than the counter's update period is measured by polled power, and the row says so.
    gpu_methods = set(row["energy_gpu_method"].split("+"))
    assert "counter" in gpu_methods and gpu_methods <= {"counter", "polled"}
    assert ("polled" in gpu_methods) == ("short_window_polled" in row["flags"])
    assert row["energy_cpu_method"] == "counter"
    assert row["energy_dram_method"] == "counter"
    assert row["energy_estimated_j"] == 0 and row["energy_measured_j"] == pytest.approx(row["energy_j"])
    seconds = row["duration_s"]
    assert row["energy_gpu_j"] == pytest.approx(GPU_W * seconds, rel=0.1)
    assert row["energy_cpu_j"] == pytest.approx(PKG_W * seconds, rel=0.1)
    # idle ran on the same fake hardware, so the run's net (dynamic) energy is close to zero
    assert row["idle_w"] == pytest.approx(GPU_W + PKG_W + DRAM_W, rel=0.1)
    assert row["energy_net_j"] < 0.1 * row["energy_j"]
    assert any(isinstance(e, run_events.IdleMeasured) for e in seen)
    components = {c.component: c for c in store.components(row["id"])}
    gpu_inputs = components["gpu0"].inputs
    assert gpu_inputs["polled_j"] == pytest.approx(components["gpu0"].energy_j, rel=0.1)
    assert "counter_polled_disagree" not in row["flags"]
    meters = row["meters"]
    assert meters["components"]["gpu0"]["method"] == "counter"
    assert meters["components"]["gpu0"]["name"] == "NVIDIA H200"
    epochs = store.epochs(row["id"])
    assert epochs[0].train_energy_j > 0
    # A phase shorter than the GPU counter's update period falls back to polled power, flagged: the
    # training total stays known either way.
    assert row["energy_training_j"] == pytest.approx(epochs[0].energy_j)
    assert epochs[0].train_window_s > 0 and epochs[0].eval_window_s > 0
    assert {s.component for s in store.samples(row["id"])} == {"gpu0", "cpu", "dram"}


def test_a_run_on_the_cpu_keeps_no_gpu_energy(fake_hardware, tmp_path):
    """device = "auto" fell back to the CPU (as here): an idle GPU's joules are not the run's."""
    (run,) = expand_grid(parse_experiments(QUICK_RUN.replace('device = "cpu"', 'device = "auto"')))
    store = Store(tmp_path / "runs.db")
    outcome = supervisor.RunSupervisor(store).execute(run)
    row = outcome.row
    assert outcome.status == "completed" and row["device"] == "cpu"
    assert row["energy_gpu_j"] is None and row["energy_gpu_method"] == "unavailable"
    assert row["energy_j"] == pytest.approx(row["energy_cpu_j"] + row["energy_dram_j"])
    assert row["idle_w"] == pytest.approx(PKG_W + DRAM_W, rel=0.1)
    assert {c.component for c in store.components(row["id"])} == {"cpu", "dram"}
    assert "gpu0" not in {s.component for s in store.samples(row["id"])}
    meters = row["meters"]
    assert meters["gpus_not_used"]["components"] == ["gpu0"] and "gpu0" not in meters["components"]


def test_cooldown_waits_for_the_gpu(fake_hardware, child_on_gpu, tmp_path):
    fake_hardware.gpu.temperature_c = 80
    text = """
[defaults]
epochs = 1
pretrained = false
device = "cpu"
idle_s = 0
cooldown_c = 50
cooldown_timeout_s = 30
max_train_batches = 1
max_eval_batches = 1
[[experiment]]
name = "cool"
models = ["tinycnn"]
"""
    (run,) = expand_grid(parse_experiments(text))
    seen = []

    def cool_when_waited(event):
        seen.append(event)
        if isinstance(event, run_events.CoolingDown):
            fake_hardware.gpu.temperature_c = 40

    outcome = supervisor.RunSupervisor(Store(tmp_path / "runs.db"), on_event=cool_when_waited).execute(run)
    assert outcome.status == "completed"
    assert [e.temperatures for e in seen if isinstance(e, run_events.CoolingDown)] == [{"gpu0": 80.0}]
    meters = outcome.row["meters"]
    assert meters["temperature_start_c"] == {"gpu0": 40.0}


def test_a_stalled_store_shifts_no_window_edge(tmp_path):
    """Another process holds the store's write lock for two seconds mid-run: the supervisor keeps reading
    its child's events, and each phase window still spans what the child timed."""
    import sqlite3

    from greenlab.core.train import child_events

    (run,) = expand_grid(
        parse_experiments(
            QUICK_RUN.replace("epochs = 1", "epochs = 3").replace("max_train_batches = 30", "max_train_batches = 12")
        )
    )
    path = tmp_path / "runs.db"
    store = Store(path)
    stalls = []

    held = {}
    handled = []

    def hold_the_lock():
        conn = sqlite3.connect(path, timeout=10)
        conn.execute("BEGIN IMMEDIATE")
        held["from"] = time.monotonic()
        time.sleep(2.0)
        held["to"] = time.monotonic()
        conn.commit()
        conn.close()

    def on_event(event):
        if isinstance(event, run_events.ChildEvent):
            handled.append(time.monotonic())
        if (
            isinstance(event, run_events.ChildEvent)
            and isinstance(event.event, child_events.EpochFinished)
            and event.event.epoch == 1
        ):
            thread = threading.Thread(target=hold_the_lock)
            thread.start()
            stalls.append(thread)

    outcome = supervisor.RunSupervisor(store, on_event=on_event).execute(run)
    for thread in stalls:
        thread.join()
    assert outcome.status == "completed", outcome.error
    # the supervisor kept reading its child's events while the store was locked
    assert [t for t in handled if held["from"] < t < held["to"]]
    epochs = store.epochs(outcome.run_id)
    assert len(epochs) == 3 and stalls
    for epoch in epochs:
        assert epoch.train_window_s == pytest.approx(epoch.train_s, abs=0.3)
        assert epoch.eval_window_s == pytest.approx(epoch.eval_s, abs=0.3)
    assert outcome.row["energy_training_j"] == pytest.approx(sum(e.energy_j for e in epochs))


def test_a_grid_warms_the_machine_up_once_before_its_first_run(tmp_path):
    from greenlab.core.run.launcher import SpawnLauncher

    class Recording(SpawnLauncher):
        def __init__(self):
            super().__init__()
            self.modules = []

        def launch(self, run_json, event_write_fd, env=None, *, module="greenlab.core.run.child_main"):
            self.modules.append(module)
            return super().launch(run_json, event_write_fd, env, module=module)

    launcher = Recording()
    runs = expand_grid(
        parse_experiments(
            QUICK_RUN.replace("idle_s = 0.5", "idle_s = 0\nrepeats = 2").replace(
                "max_train_batches = 30", "max_train_batches = 2"
            )
        )
    )
    outcomes = LocalDriver(Store(tmp_path / "runs.db"), launcher=launcher).run_grid(runs)
    assert [o.status for o in outcomes] == ["completed", "completed"]
    assert launcher.modules == [
        "greenlab.core.run.warmup_main",
        "greenlab.core.run.child_main",
        "greenlab.core.run.child_main",
    ]


def test_a_run_that_cannot_start_is_stored_as_failed(tmp_path):
    from greenlab.core.run.launcher import SpawnLauncher

    class Broken(SpawnLauncher):
        def launch(self, run_json, event_write_fd, env=None, *, module="greenlab.core.run.child_main"):
            raise OSError(24, "Too many open files")

    (run,) = expand_grid(parse_experiments(QUICK_RUN.replace("idle_s = 0.5", "idle_s = 0")))
    store = Store(tmp_path / "runs.db")
    outcome = supervisor.RunSupervisor(store, launcher=Broken()).execute(run)
    assert outcome.status == "failed" and "could not start" in outcome.error and "Too many open files" in outcome.error
    (row,) = store.runs()
    assert row["status"] == "failed" and row["finished_at"]
    assert not [t for t in threading.enumerate() if t.name == "greenlab-store-writer"]


def test_a_second_ctrl_c_while_the_outcome_is_written_waits_for_it(tmp_path, monkeypatch):
    """The sampler and writer threads are alive: a signal still waits until the record is written."""
    import os
    import signal as signals

    (run,) = expand_grid(parse_experiments(QUICK_RUN.replace("idle_s = 0.5", "idle_s = 0")))
    store = Store(tmp_path / "runs.db")
    watched = supervisor.RunSupervisor(store)
    finish = watched._finish

    def finish_after_a_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signals.SIGINT)  # arrives while the outcome is being written
        time.sleep(0.2)
        return finish(*args, **kwargs)

    monkeypatch.setattr(watched, "_finish", finish_after_a_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        watched.execute(run)
    (row,) = store.runs()
    assert row["status"] in ("completed", "interrupted") and row["finished_at"] and row["energy_j"]


# -- ready for a GPU: the right board, someone else on it, the input pipeline -------------------------------
def test_a_board_nvml_refuses_is_named_and_the_others_metered(tmp_path, monkeypatch):
    from tests.fake_pynvml import NVMLError_NoPermission

    monkeypatch.setenv("GREENLAB_POWERCAP_ROOT", str(tmp_path / "none"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpus = [FakeGpu(uuid="GPU-0", open_error=NVMLError_NoPermission()), FakeGpu(uuid="GPU-1")]
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml(gpus))
    setup = build_meters(use_gpus=[])
    assert [c for m in setup.meters for c in m.components()] == ["gpu1", "cpu", "dram"]
    assert setup.notes["gpu_skipped"] == "not metered: GPU 0: Insufficient Permissions"


def test_a_grace_hopper_module_is_not_topped_up_with_a_cpu_estimate(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENLAB_POWERCAP_ROOT", str(tmp_path / "none"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml([FakeGpu(uuid="GPU-0", name="NVIDIA GH200 480GB")]))
    setup = build_meters(use_gpus=[])
    assert [c for m in setup.meters for c in m.components()] == ["gpu0"]  # no 85 W estimate on top
    assert "covers the whole module" in setup.notes["cpu"] and setup.notes["dram"] == setup.notes["cpu"]


def test_another_process_on_the_run_s_gpu_flags_the_run(fake_hardware, child_on_gpu, tmp_path):
    import os

    from tests.fake_pynvml import FakeProcess

    # This process is GreenLab's own (the supervisor); pid 999999 is someone else's job with 3 GB.
    fake_hardware.gpu.processes = [FakeProcess(os.getpid(), 2**20), FakeProcess(999_999, 3 * 2**30)]
    fake_hardware.gpu.utilisation_pct = 64
    (run,) = expand_grid(parse_experiments(QUICK_RUN.replace("idle_s = 0.5", "idle_s = 0")))
    seen = []
    outcome = supervisor.RunSupervisor(Store(tmp_path / "runs.db"), on_event=seen.append).execute(run)
    assert outcome.status == "completed", outcome.error
    row = outcome.row
    assert "gpu_shared" in row["flags"]
    (process,) = row["meters"]["gpu_processes"]["gpu0"]["processes"]
    assert process["pid"] == 999_999 and process["used_memory_mb"] == 3072.0
    assert row["meters"]["gpu_utilisation"]["gpu0"]["max_pct"] == 64.0
    assert any("gpu0 was shared: pid 999999, 3.0 GB" in w for w in row["warnings"])
    assert any(isinstance(e, run_events.Notice) and "another process computes on gpu0" in e.text for e in seen)


def test_an_idle_baseline_of_a_busy_board_is_refused(fake_hardware, child_on_gpu, tmp_path):
    from tests.fake_pynvml import FakeProcess

    fake_hardware.gpu.processes = [FakeProcess(999_999, 2**30)]
    (run,) = expand_grid(parse_experiments(QUICK_RUN))
    seen = []
    outcome = supervisor.RunSupervisor(Store(tmp_path / "runs.db"), on_event=seen.append).execute(run)
    row = outcome.row
    assert "compute process" in row["meters"]["idle_refused"]["gpu0"]
    assert "gpu0" not in row["meters"]["idle_w"] and "cpu" in row["meters"]["idle_w"]
    assert row["energy_net_j"] is None and "no_idle_baseline" in row["flags"]  # no net without a baseline
    assert any(isinstance(e, run_events.Notice) and "idle baseline of gpu0" in e.text for e in seen)


def test_a_cuda_run_whose_board_matches_no_uuid_has_unknown_gpu_energy(fake_hardware, tmp_path, monkeypatch):
    monkeypatch.setattr(measurement, "gpus_used", lambda device, facts, **ids: (set(), ["gpu_unmatched"]))
    (run,) = expand_grid(parse_experiments(QUICK_RUN.replace("idle_s = 0.5", "idle_s = 0")))
    outcome = supervisor.RunSupervisor(Store(tmp_path / "runs.db")).execute(run)
    row = outcome.row
    assert outcome.status == "completed"
    assert row["energy_gpu_j"] is None and row["energy_j"] is None and row["energy_training_j"] is None
    assert {"gpu_unmatched", "energy_incomplete"} <= set(row["flags"])
    assert "matches none of them" in row["meters"]["gpus_not_used"]["why"]


def test_a_run_records_its_arithmetic_and_its_wait_for_data(tmp_path):
    (run,) = expand_grid(parse_experiments(QUICK_RUN.replace("idle_s = 0.5", "idle_s = 0")))
    store = Store(tmp_path / "runs.db")
    outcome = supervisor.RunSupervisor(store).execute(run)
    row = outcome.row
    assert row["fp32_precision"] == "ieee" and row["compute_dtype"] == "float32" and row["mantissa_bits_kept"] == 23
    assert row["bf16_native"] in (0, 1, None)  # this CPU's flags decide
    assert row["data_wait_s"] is not None and 0 <= row["data_wait_s"] < row["train_s"]
    (epoch,) = store.epochs(row["id"])
    assert epoch.train_data_wait_s == pytest.approx(row["data_wait_s"], abs=1e-3)
    assert epoch.eval_data_wait_s is not None
    assert row["meters"]["input_pipeline"] == {
        "num_workers": 0,  # "auto" off CUDA: the batches are cached tensors
        "pin_memory": False,
        "persistent_workers": False,
        "cache": "memory",
    }


def test_a_loop_that_waits_for_data_flags_the_run_input_bound(tmp_path):
    """The supervisor's side of an input-bound run: epochs whose loop waited 40 % of its training time."""
    from greenlab.core.measure.tracker import EnergyTracker
    from greenlab.core.run.launcher import SpawnLauncher
    from greenlab.core.run.measurement import RunMeasurement
    from greenlab.core.run.sinks import MemorySink
    from greenlab.core.train import child_events

    (run,) = expand_grid(parse_experiments(QUICK_RUN))
    sink = MemorySink()
    sink.start_run({})
    watched = supervisor.RunSupervisor(None, sink=sink, launcher=SpawnLauncher())
    tracker = EnergyTracker([])
    tracker.begin_window("run")
    measured = RunMeasurement(0, run, 0.0, {}, {"components": {}})
    writer = sink.writer()
    watched._handle(measured, child_events.ModelPrepared({}, {}, warnings=["stego: a note"]), tracker, writer)
    for epoch in (1, 2):
        finished = child_events.EpochFinished(epoch, 1.0, 0.5, 0.5, 1.0, 10.0, 1.0, 5, 4.0, 0.2)
        watched._handle(measured, finished, tracker, writer)
    stored = watched._finish(measured, tracker, None, writer, 0.0)
    assert "input_bound" in stored.row["flags"] and stored.row["data_wait_s"] == pytest.approx(8.0)
    notes = stored.row["warnings"]
    assert notes[0] == "stego: a note" and "input-bound: the training loop waited 8.0 s" in notes[1]
