"""The tracker: windows over counters and polled power, labels, idle and the CPU estimate's inputs."""

from __future__ import annotations

import os
import time

from greenlab.core.energy.estimate import EstimateMeter, lookup_tdp
from greenlab.core.energy.meter import Meter
from greenlab.core.energy.tracker import EnergyTracker


class FakeCounterGpu(Meter):
    """A GPU with an energy counter at `watts`, whose polled power reads `polled_factor` x the truth."""

    def __init__(self, watts: float = 100.0, polled_factor: float = 1.0) -> None:
        self.watts, self.polled_factor, self.t0 = watts, polled_factor, time.monotonic()

    def components(self):
        return ["gpu0"]

    def method(self, component):
        return "counter"

    def energy_j(self):
        return {"gpu0": self.watts * (time.monotonic() - self.t0)}

    def power_w(self):
        return {"gpu0": self.watts * self.polled_factor}


class FakePolledGpu(FakeCounterGpu):
    def method(self, component):
        return "polled"

    def energy_j(self):
        return {}


def test_counter_window_and_polled_cross_check():
    tracker = EnergyTracker([FakeCounterGpu(100.0)], sample_hz=50)
    tracker.start()
    tracker.begin_window("w")
    time.sleep(0.5)
    result = tracker.end_window("w")
    tracker.stop()
    gpu = result.components["gpu0"]
    assert gpu.method == "counter" and gpu.measured
    assert abs(gpu.energy_j - 100.0 * result.seconds) < 1.0
    assert abs(gpu.inputs["polled_j"] - gpu.energy_j) / gpu.energy_j < 0.1
    assert "counter_polled_disagree" not in gpu.flags
    assert result.split_j() == (gpu.energy_j, 0.0)


def test_disagreeing_counter_and_polled_are_flagged():
    tracker = EnergyTracker([FakeCounterGpu(100.0, polled_factor=1.5)], sample_hz=50)
    tracker.start()
    tracker.begin_window("w")
    time.sleep(0.4)
    result = tracker.end_window("w")
    tracker.stop()
    assert "counter_polled_disagree" in result.components["gpu0"].flags


def test_polled_only_gpu_integrates_samples():
    tracker = EnergyTracker([FakePolledGpu(50.0)], sample_hz=50)
    tracker.start()
    tracker.begin_window("w")
    time.sleep(0.4)
    result = tracker.end_window("w")
    tracker.stop()
    gpu = result.components["gpu0"]
    assert gpu.method == "polled"
    assert abs(gpu.energy_j - 50.0 * result.seconds) < 2.5
    samples = tracker.drain_samples()
    assert samples and all(c == "gpu0" for _, c, _ in samples)
    assert tracker.drain_samples() == []  # drained once
    assert tracker.sampler_cpu_s >= 0


def test_history_is_bounded():
    tracker = EnergyTracker([FakePolledGpu(10.0)], sample_hz=10, history_s=1.0)
    for _ in range(50):
        tracker.sample()
    assert len(tracker.history("gpu0")) == 10


def test_idle_baseline_in_watts():
    tracker = EnergyTracker([FakeCounterGpu(30.0)], sample_hz=20)
    idle = tracker.measure_idle(0.3)
    assert abs(idle["gpu0"] - 30.0) < 1.0


def test_cpu_estimate_follows_process_cpu_seconds_and_stores_inputs():
    meter = EstimateMeter(["cpu", "dram"], cpu_tdp_w=64.0)
    meter.track_processes([os.getpid()])
    tracker = EnergyTracker([meter], sample_hz=20)
    tracker.begin_window("w")
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn ~0.3 CPU-seconds
        pass
    result = tracker.end_window("w")
    cpu = result.components["cpu"]
    assert cpu.method == "estimate" and not cpu.measured
    threads = meter.tdp["package_threads"]
    assert cpu.inputs["tdp_w"] == 64.0 and cpu.inputs["package_threads"] == threads
    assert 0.25 <= cpu.inputs["cpu_seconds"] <= 1.0
    assert abs(cpu.energy_j - 64.0 / threads * cpu.inputs["cpu_seconds"]) < 0.01
    assert result.split_j()[0] == 0.0  # nothing measured here
    assert meter.info()["cpu"]["tdp_source"] == "config cpu_tdp_w"


def test_tdp_table_and_default():
    assert lookup_tdp("AMD EPYC 7763 64-Core Processor", None)["tdp_w"] == 280
    unknown = lookup_tdp("Mystery CPU", None)
    assert unknown["tdp_w"] == 85.0 and "cpu_tdp_w" in unknown["tdp_source"]


class FakeStillCounter(FakeCounterGpu):
    """A counter that has not ticked within the window (NVML updates about every 100 ms)."""

    def energy_j(self):
        return {"gpu0": 5.0}

    def window_flags(self, component, seconds, energy_j):
        return ("window_shorter_than_counter_update",) if seconds < 0.2 else ()


def test_short_counter_window_is_flagged_not_zero():
    tracker = EnergyTracker([FakeStillCounter()], sample_hz=10)
    tracker.begin_window("w")
    result = tracker.end_window("w")
    gpu = result.components["gpu0"]
    assert gpu.energy_j is None and "window_shorter_than_counter_update" in gpu.flags
    assert gpu.method == "counter"


class FlakyCounter(FakeCounterGpu):
    """A counter whose reads start failing: the meter leaves the component out, as RAPL and NVML do."""

    failing = False

    def energy_j(self):
        return {} if self.failing else super().energy_j()


def test_a_failed_read_at_a_window_edge_is_flagged():
    meter = FlakyCounter(100.0)
    tracker = EnergyTracker([meter], sample_hz=10)
    tracker.begin_window("w")
    time.sleep(0.2)
    meter.failing = True
    result = tracker.end_window("w")
    gpu = result.components["gpu0"]
    # the last good total is reused at the edge, so the window looks empty: flagged and unknown, not 0 J
    assert "stale_reading" in gpu.flags and gpu.energy_j is None


def test_total_is_unknown_when_a_component_has_no_reading():
    from greenlab.core.energy.meter import ComponentEnergy
    from greenlab.core.energy.tracker import WindowResult

    window = WindowResult("w", 1.0, {"gpu0": ComponentEnergy("gpu0", None, "counter"),
                                     "cpu": ComponentEnergy("cpu", 5.0, "estimate")})
    assert window.total_j() is None and window.split_j() == (0.0, 5.0)
