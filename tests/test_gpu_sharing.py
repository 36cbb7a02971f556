"""Someone else on the run's GPU: which processes NVML lists are the run's own, and when a board is busy."""

from __future__ import annotations

import sys

from greenlab.core.measure.nvml import discover_nvml
from greenlab.core.run.sharing import GpuWatch
from tests.fake_pynvml import FakeGpu, FakeProcess, make_fake_pynvml


def meter_over(monkeypatch, *gpus):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml(list(gpus)))
    meter, reason = discover_nvml()
    assert reason is None
    return meter


def test_the_run_s_own_processes_are_not_someone_else(monkeypatch):
    gpu = FakeGpu(uuid="GPU-0", processes=[FakeProcess(100), FakeProcess(101, 2**30)])
    meter = meter_over(monkeypatch, gpu)
    watch = GpuWatch()
    assert watch.observe(meter, {100}, ["gpu0"], computing=True) == ["gpu0"]  # told once...
    gpu.processes.append(FakeProcess(102))
    assert watch.observe(meter, {100}, ["gpu0"], computing=True) == []  # ...not at every tick
    shared = watch.shared(["gpu0"])["gpu0"]["processes"]
    assert [p["pid"] for p in shared] == [101, 102] and shared[0]["used_memory_mb"] == 1024.0


def test_alone_on_the_board_is_not_shared(monkeypatch):
    meter = meter_over(monkeypatch, FakeGpu(uuid="GPU-0", processes=[FakeProcess(100)]))
    watch = GpuWatch()
    watch.observe(meter, {100, 7}, ["gpu0"], computing=True)
    assert watch.shared(["gpu0"]) == {}


def test_pids_of_another_namespace_count_only_beyond_the_run_s_own(monkeypatch):
    """In a container NVML may list the host's pids: none is the run's, yet one of them is its child."""
    gpu = FakeGpu(uuid="GPU-0", processes=[FakeProcess(31_337)])
    meter = meter_over(monkeypatch, gpu)
    watch = GpuWatch()
    watch.observe(meter, {100}, ["gpu0"], computing=True)
    assert watch.shared(["gpu0"]) == {}  # one process: the run's own under a host pid
    gpu.processes.append(FakeProcess(31_338))
    watch.observe(meter, {100}, ["gpu0"], computing=True)
    shared = watch.shared(["gpu0"])["gpu0"]
    assert len(shared["processes"]) == 2 and "another pid namespace" in shared["why"]


def test_an_idle_board_is_busy_with_a_process_or_utilisation(monkeypatch):
    quiet = FakeGpu(uuid="GPU-0", utilisation_pct=1)
    working = FakeGpu(uuid="GPU-1", utilisation_pct=93)
    occupied = FakeGpu(uuid="GPU-2", processes=[FakeProcess(555, 512 * 2**20)])
    meter = meter_over(monkeypatch, quiet, working, occupied)
    watch = GpuWatch()
    watch.observe(meter, {100}, ["gpu0", "gpu1", "gpu2"], computing=False)
    refused = watch.busy_at_idle(["gpu0", "gpu1", "gpu2"])
    assert set(refused) == {"gpu1", "gpu2"}
    assert "utilisation up to 93 %" in refused["gpu1"]
    assert "1 compute process(es) on it (pid 555, 0.5 GB)" in refused["gpu2"]
