"""The tracker: windows over counters and polled power, labels, idle and the CPU estimate's inputs."""

from __future__ import annotations

import os
import time

import pytest

from greenlab.core.measure.estimate import EstimateMeter, cpu_power_rule, match_cpu, virtualization
from greenlab.core.measure.meter import Meter
from greenlab.core.measure.tracker import EnergyTracker


class Clock:
    """A monotonic clock that moves when told: tests step time instead of sleeping."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def advance(tracker: EnergyTracker, clock: Clock, seconds: float, hz: float = 50.0) -> None:
    """What the sampling thread does for `seconds`: a sample every 1/hz, on the stepped clock."""
    for _ in range(round(seconds * hz)):
        clock.t += 1 / hz
        tracker.sample()


class FakeCounterGpu(Meter):
    """A GPU with an energy counter at `watts`, whose polled power reads `polled_factor` x the truth."""

    def __init__(self, watts: float = 100.0, polled_factor: float = 1.0, clock=time.monotonic) -> None:
        self.watts, self.polled_factor, self.clock = watts, polled_factor, clock
        self.t0 = clock()

    def components(self):
        return ["gpu0"]

    def method(self, component):
        return "counter"

    def energy_j(self):
        return {"gpu0": self.watts * (self.clock() - self.t0)}

    def power_w(self):
        return {"gpu0": self.watts * self.polled_factor}


class FakePolledGpu(FakeCounterGpu):
    def method(self, component):
        return "polled"

    def energy_j(self):
        return {}


def test_counter_window_and_polled_cross_check():
    clock = Clock()
    tracker = EnergyTracker([FakeCounterGpu(100.0, clock=clock)], sample_hz=50, clock=clock)
    tracker.begin_window("w")
    advance(tracker, clock, 0.5)
    result = tracker.end_window("w")
    gpu = result.components["gpu0"]
    assert gpu.method == "counter" and gpu.measured
    assert result.seconds == pytest.approx(0.5) and gpu.energy_j == pytest.approx(50.0)
    assert abs(gpu.inputs["polled_j"] - gpu.energy_j) / gpu.energy_j < 0.1
    assert "counter_polled_disagree" not in gpu.flags
    assert result.split_j() == (gpu.energy_j, 0.0)


def test_disagreeing_counter_and_polled_are_flagged():
    clock = Clock()
    tracker = EnergyTracker([FakeCounterGpu(100.0, polled_factor=1.5, clock=clock)], sample_hz=50, clock=clock)
    tracker.begin_window("w")
    advance(tracker, clock, 0.4)
    result = tracker.end_window("w")
    assert "counter_polled_disagree" in result.components["gpu0"].flags


class QuantisedCounterGpu(FakeCounterGpu):
    """A counter that states NVML's uncertainty: ±100 ms of mean power; polled power lags `lag_s`."""

    lag_s = 0.0

    def window_uncertainty_j(self, component, method, seconds, energy_j, sample_period_s):
        mean_w = energy_j / seconds
        return mean_w * (0.1 if method == "counter" else sample_period_s + self.lag_s)


def test_a_window_stores_its_uncertainty_and_is_flagged_beyond_five_percent():
    clock = Clock()
    tracker = EnergyTracker([QuantisedCounterGpu(100.0, clock=clock)], sample_hz=50, clock=clock)
    tracker.begin_window("short")
    advance(tracker, clock, 1.0)
    short = tracker.end_window("short")
    assert short.components["gpu0"].inputs["uncertainty_j"] == pytest.approx(10.0)  # 10 % of 100 J
    assert "window_uncertain" in short.flags() and short.uncertainty_j() == pytest.approx(10.0)
    tracker.begin_window("long")
    advance(tracker, clock, 4.0)
    long = tracker.end_window("long")
    assert long.components["gpu0"].inputs["uncertainty_j"] == pytest.approx(10.0)  # 2.5 % of 400 J
    assert "window_uncertain" not in long.flags()


@pytest.mark.parametrize(("lag_s", "flagged"), [(0.0, True), (0.5, False)])
def test_counter_and_lagging_power_disagree_only_beyond_what_the_lag_explains(lag_s, flagged):
    """Polled power 15 % high over 3 s: a disagreement for an instant reading, within what a reading half a
    second behind the load may be off by."""
    clock = Clock()
    meter = QuantisedCounterGpu(100.0, polled_factor=1.15, clock=clock)
    meter.lag_s = lag_s
    tracker = EnergyTracker([meter], sample_hz=50, clock=clock)
    tracker.begin_window("w")
    advance(tracker, clock, 3.0)
    result = tracker.end_window("w")
    assert ("counter_polled_disagree" in result.components["gpu0"].flags) is flagged


def test_polled_only_gpu_integrates_samples():
    clock = Clock()
    tracker = EnergyTracker([FakePolledGpu(50.0, clock=clock)], sample_hz=50, clock=clock)
    tracker.begin_window("w")
    advance(tracker, clock, 0.4)
    result = tracker.end_window("w")
    gpu = result.components["gpu0"]
    assert gpu.method == "polled"
    assert gpu.energy_j == pytest.approx(50.0 * 0.4)
    samples = tracker.drain_samples()
    assert samples and all(c == "gpu0" for _, c, _ in samples)
    assert tracker.drain_samples() == []  # drained once


def test_the_sampling_thread_samples_and_stops():
    tracker = EnergyTracker([FakePolledGpu(50.0)], sample_hz=50)
    tracker.start()
    deadline = time.monotonic() + 5
    while tracker.sample_count < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    tracker.stop()
    assert tracker.sample_count >= 3 and tracker.sampler_cpu_s >= 0


def test_history_is_bounded():
    tracker = EnergyTracker([FakePolledGpu(10.0)], sample_hz=10, history_s=1.0)
    for _ in range(50):
        tracker.sample()
    assert len(tracker.history("gpu0")) == 10


def test_idle_baseline_in_watts():
    clock = Clock()
    tracker = EnergyTracker([FakeCounterGpu(30.0, clock=clock)], sample_hz=20, clock=clock)
    idle = tracker.measure_idle(0.3, wait=lambda seconds: advance(tracker, clock, seconds))
    assert idle["gpu0"] == pytest.approx(30.0)


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
    threads = meter.cpu_rule["package_threads"]
    assert cpu.inputs["w_per_thread"] == round(64.0 / threads, 4)
    assert cpu.inputs["rule"] == "config cpu_tdp_w / package threads"
    assert 0.25 <= cpu.inputs["cpu_seconds"] <= 1.0
    assert abs(cpu.energy_j - 64.0 / threads * cpu.inputs["cpu_seconds"]) < 0.01
    assert result.split_j()[0] == 0.0  # nothing measured here
    assert meter.info()["cpu"]["tdp_w"] == 64.0


@pytest.mark.parametrize(
    "name, key",
    [
        ("Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz", "Xeon Platinum 8380"),
        ("AMD EPYC 7763 64-Core Processor", "EPYC 7763"),
        ("13th Gen Intel(R) Core(TM) i9-13900K", "Core i9-13900K"),
        ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "Xeon Platinum 8375C"),
        ("Intel(R) Xeon(R) Processor", None),
        ("AMD EPYC 75430", None),  # a longer model number is another processor
    ],
)
def test_real_cpu_names_match_the_table(name, key):
    assert match_cpu(name) == key


def test_cpu_power_rules_in_order():
    xeon = "Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz"
    assert cpu_power_rule(xeon, cpu_w_per_thread=4.0, cpu_tdp_w=100)["w_per_thread"] == 4.0
    assert cpu_power_rule(xeon, cpu_tdp_w=100, threads_visible=10)["w_per_thread"] == 10.0
    server = cpu_power_rule(xeon, virtual="hypervisor")  # a known server package beats the VM figure
    assert server["w_per_thread"] == 270 / 80 and server["rule"].startswith("table: Xeon Platinum 8380")
    vm = cpu_power_rule("Intel(R) Xeon(R) Processor", virtual="the CPU flags include 'hypervisor'", threads_visible=2)
    # A desktop TDP over the guest's 2 vCPUs would be 42.5 W each: ten times a server thread's share.
    assert vm["w_per_thread"] == 3.5 and "Cloud Carbon Footprint" in vm["source"]
    bare = cpu_power_rule("Mystery CPU", threads_visible=8)
    assert bare["w_per_thread"] == 85.0 / 8 and "cpu_w_per_thread" in bare["rule"]


def test_virtual_machines_are_recognised(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2\n")
    assert virtualization(tmp_path) is None
    dmi = tmp_path / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "sys_vendor").write_text("QEMU\n")
    assert "QEMU" in virtualization(tmp_path)
    (tmp_path / "proc/cpuinfo").write_text("flags\t\t: fpu hypervisor sse2\n")
    assert "hypervisor" in virtualization(tmp_path)


def test_this_vm_estimates_a_server_threads_share(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu hypervisor\n")
    meter = EstimateMeter(["cpu"], root=tmp_path)
    assert meter.w_per_thread == 3.5
    assert meter.info()["cpu"]["rule"].startswith("virtual machine")


class BurstyCpu(Meter):
    """CPU-seconds read in 10 ms ticks and a little late or early, like psutil's: a steady 2 threads."""

    def __init__(self, clock):
        self.clock, self.t0, self.reads = clock, clock(), 0

    def components(self):
        return ["cpu"]

    def method(self, component):
        return "estimate"

    def energy_j(self):
        self.reads += 1
        jitter = 0.03 if self.reads % 3 == 0 else -0.02  # a read that lands after or before a tick
        seconds = max(0.0, 2 * (self.clock() - self.t0) + jitter)
        return {"cpu": 42.5 * round(seconds, 2)}


def test_live_cpu_power_does_not_spike():
    now = [1000.0]
    meter = BurstyCpu(lambda: now[0])
    tracker = EnergyTracker([meter], sample_hz=10, clock=lambda: now[0])
    watts = []
    for _ in range(60):
        now[0] += 0.1
        watts.append(tracker.sample().get("cpu"))
    shown = [w for w in watts if w is not None]
    assert shown and max(shown) <= 85.0 * 1.1  # 2 threads at 42.5 W: never far above 85 W
    assert all(w is None for w in watts[:9])  # nothing until a second of readings exists


class FakeStillCounter(FakeCounterGpu):
    """A counter that has not ticked within the window (NVML updates about every 100 ms)."""

    def energy_j(self):
        return {"gpu0": 5.0}

    def window_flags(self, component, seconds, energy_j):
        return ("window_shorter_than_counter_update",) if seconds < 0.2 else ()


class StillCounterWithoutPower(FakeStillCounter):
    def power_w(self):
        return {}


def test_short_counter_window_is_flagged_not_zero():
    tracker = EnergyTracker([StillCounterWithoutPower()], sample_hz=10)
    tracker.begin_window("w")
    result = tracker.end_window("w")
    gpu = result.components["gpu0"]
    assert gpu.energy_j is None and "window_shorter_than_counter_update" in gpu.flags
    assert gpu.method == "counter"


def test_short_counter_window_uses_polled_power_flagged():
    now = [50.0]
    tracker = EnergyTracker([FakeStillCounter(watts=100.0)], sample_hz=10, clock=lambda: now[0])
    tracker.begin_window("w")
    now[0] += 0.05  # a phase shorter than the counter's update period
    result = tracker.end_window("w")
    gpu = result.components["gpu0"]
    assert gpu.method == "polled" and gpu.measured
    assert gpu.energy_j == pytest.approx(100.0 * 0.05)
    assert {"window_shorter_than_counter_update", "short_window_polled"} <= set(gpu.flags)
    assert result.total_j() == pytest.approx(5.0)  # the training total stays known


class FlakyCounter(FakeCounterGpu):
    """A counter whose reads start failing: the meter leaves the component out, as RAPL and NVML do."""

    failing = False

    def energy_j(self):
        return {} if self.failing else super().energy_j()


def test_a_failed_read_at_a_window_edge_is_flagged():
    clock = Clock()
    meter = FlakyCounter(100.0, clock=clock)
    tracker = EnergyTracker([meter], sample_hz=10, clock=clock)
    tracker.begin_window("w")
    clock.t += 0.2
    meter.failing = True
    result = tracker.end_window("w")
    gpu = result.components["gpu0"]
    # the last good total is reused at the edge, so the window looks empty: flagged and unknown, not 0 J
    assert "stale_reading" in gpu.flags and gpu.energy_j is None


def test_total_is_unknown_when_a_component_has_no_reading():
    from greenlab.core.measure.meter import ComponentEnergy
    from greenlab.core.measure.tracker import WindowResult

    window = WindowResult(
        "w", 1.0, {"gpu0": ComponentEnergy("gpu0", None, "counter"), "cpu": ComponentEnergy("cpu", 5.0, "estimate")}
    )
    assert window.total_j() is None and window.split_j() == (0.0, 5.0)


class RampCounter(Meter):
    """A counter at a steady 10 W on an injected clock."""

    def __init__(self, clock):
        self.clock = clock

    def components(self):
        return ["cpu"]

    def method(self, component):
        return "counter"

    def energy_j(self):
        return {"cpu": 10.0 * self.clock()}


def test_window_edges_placed_in_the_past_are_interpolated():
    now = [100.0]
    tracker = EnergyTracker([RampCounter(lambda: now[0])], sample_hz=10, clock=lambda: now[0])
    for _ in range(30):
        now[0] += 0.1
        tracker.sample()
    # The phase ran from 100.55 to 102.05, but the supervisor reads each edge a second late.
    tracker.begin_window("phase", at=100.55)
    now[0] += 1.0
    result = tracker.end_window("phase", at=102.05)
    cpu = result.components["cpu"]
    assert result.seconds == pytest.approx(1.5)
    assert cpu.energy_j == pytest.approx(15.0)


def test_window_context_manager():
    now = [0.0]
    tracker = EnergyTracker([RampCounter(lambda: now[0])], sample_hz=10, clock=lambda: now[0])
    with tracker.window("w") as w:
        now[0] += 2.0
    assert w["result"].components["cpu"].energy_j == pytest.approx(20.0)


def test_a_process_s_own_final_cpu_time_counts_after_its_last_read():
    now = [0.0]
    meter = EstimateMeter(["cpu"], cpu_w_per_thread=4.0)
    meter.track_processes([os.getpid()])
    tracker = EnergyTracker([meter], sample_hz=10, clock=lambda: now[0])
    tracker.begin_window("run")
    read = meter.cpu_seconds()
    tracker.process_ended(os.getpid(), read + 2.5)  # 2.5 CPU-seconds after the last read, as it ended
    cpu = tracker.end_window("run").components["cpu"]
    assert cpu.inputs["cpu_seconds"] >= 2.5 and cpu.energy_j >= 4.0 * 2.5
