"""The NVML GPU meter against a fake `pynvml`: counter and polled GPUs, device mapping, failures."""

from __future__ import annotations

import builtins
import sys

import pytest

from greenlab.core.measure import nvml
from greenlab.core.measure.nvml import (
    FLAG_COUNTER_STILL,
    FLAG_SHORT_POLLED_WINDOW,
    FLAG_SHORT_WINDOW,
    discover_nvml,
    parse_visible_devices,
)

try:
    from fake_pynvml import FakeGpu, FakeMig, NVMLError_LibraryNotFound, make_fake_pynvml
except ImportError:  # tests/ became a package
    from tests.fake_pynvml import FakeGpu, FakeMig, NVMLError_LibraryNotFound, make_fake_pynvml

UUID0 = "GPU-00000000-1111-2222-3333-444444444444"
UUID1 = "GPU-99999999-8888-7777-6666-555555555555"


@pytest.fixture(autouse=True)
def _no_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)


def install(monkeypatch, fake):
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def test_counter_gpu_reports_joules_from_millijoules(monkeypatch):
    gpu = FakeGpu(uuid=UUID0, energy_mj=5_000_000, power_mw=312_500)
    fake = install(monkeypatch, make_fake_pynvml([gpu]))
    meter, reason = discover_nvml()
    assert reason is None and meter is not None
    assert meter.components() == ["gpu0"]
    assert meter.method("gpu0") == "counter"
    assert meter.energy_j() == {"gpu0": 0.0}
    gpu.energy_mj += 123_456  # 123.456 J later
    assert meter.energy_j()["gpu0"] == pytest.approx(123.456)
    assert meter.power_w() == {"gpu0": pytest.approx(312.5)}
    facts = meter.info()["gpu0"]
    assert facts["name"] == "NVIDIA H200"
    assert facts["uuid"] == UUID0
    assert facts["driver_version"] == "570.86.15"
    assert facts["power_limit_w"] == pytest.approx(700.0)
    assert facts["temperature_c_at_start"] == 35.0
    assert facts["mig_mode"] is False
    assert facts["counter_supported"] is True
    assert facts["cuda_index"] == 0 and facts["nvml_index"] == 0
    meter.close()
    meter.close()  # idempotent: one nvmlShutdown per nvmlInit
    assert fake.calls == {"init": 1, "shutdown": 1}


def test_gpu_without_counter_is_polled(monkeypatch):
    install(monkeypatch, make_fake_pynvml([FakeGpu(uuid=UUID0, energy_mj=None, power_mw=75_000, mig_mode=None)]))
    meter, reason = discover_nvml()
    assert reason is None
    assert meter.method("gpu0") == "polled"
    assert meter.energy_j() == {}
    assert meter.power_w() == {"gpu0": pytest.approx(75.0)}
    assert meter.info()["gpu0"]["counter_supported"] is False
    assert meter.info()["gpu0"]["mig_mode"] is None
    assert meter.window_flags("gpu0", 0.5, 30.0) == (FLAG_SHORT_POLLED_WINDOW,)
    assert meter.window_flags("gpu0", 5.0, 300.0) == ()


def test_short_or_still_counter_window_is_flagged(monkeypatch):
    install(monkeypatch, make_fake_pynvml([FakeGpu(uuid=UUID0)]))
    meter, _ = discover_nvml()
    assert meter.window_flags("gpu0", 0.05, 0.0) == (FLAG_SHORT_WINDOW,)
    assert meter.window_flags("gpu0", 0.15, 12.0) == (FLAG_SHORT_WINDOW,)
    assert meter.window_flags("gpu0", 3.0, 0.0) == (FLAG_COUNTER_STILL,)
    assert meter.window_flags("gpu0", 3.0, 900.0) == ()


def test_failed_reads_are_skipped_not_fatal(monkeypatch):
    gpu0 = FakeGpu(uuid=UUID0, energy_mj=1000)
    gpu1 = FakeGpu(uuid=UUID1, energy_mj=2000, power_mw=None)
    fake = install(monkeypatch, make_fake_pynvml([gpu0, gpu1]))
    meter, _ = discover_nvml()
    assert meter.power_w() == {"gpu0": pytest.approx(250.0)}
    assert "gpu1" in meter.last_errors

    def lost(handle):
        raise fake.NVMLError(15, "GPU is lost")

    working = fake.nvmlDeviceGetTotalEnergyConsumption
    fake.nvmlDeviceGetTotalEnergyConsumption = lost
    gpu0.energy_mj += 1000
    assert meter.energy_j() == {}
    assert "GPU is lost" in meter.last_errors["gpu0"]
    # Reads work again: nothing was lost meanwhile, because the counter is cumulative.
    fake.nvmlDeviceGetTotalEnergyConsumption = working
    gpu0.energy_mj += 3000
    assert meter.energy_j()["gpu0"] == pytest.approx(4.0)


def test_cuda_visible_devices_maps_cuda_index_to_nvml_index(monkeypatch):
    install(monkeypatch, make_fake_pynvml([FakeGpu(uuid=UUID0, name="A"), FakeGpu(uuid=UUID1, name="B")]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    meter, reason = discover_nvml()
    assert reason is None
    assert meter.components() == ["gpu0"]
    facts = meter.info()["gpu0"]
    assert facts["nvml_index"] == 1 and facts["uuid"] == UUID1 and facts["name"] == "B"


def test_cuda_indices_select_a_subset(monkeypatch):
    install(monkeypatch, make_fake_pynvml([FakeGpu(uuid=UUID0), FakeGpu(uuid=UUID1)]))
    meter, _ = discover_nvml([1])
    assert meter.components() == ["gpu1"]
    assert meter.info()["gpu1"]["uuid"] == UUID1
    meter, reason = discover_nvml([2])
    assert meter is None and "CUDA device 2 is not visible" in reason


def test_visible_devices_by_uuid_prefix_and_bytes_names(monkeypatch):
    install(
        monkeypatch, make_fake_pynvml([FakeGpu(uuid=UUID0, name=b"Tesla V100"), FakeGpu(uuid=UUID1)], driver=b"535.1")
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-9999,GPU-0000")
    meter, reason = discover_nvml()
    assert reason is None
    assert [meter.info()[c]["nvml_index"] for c in meter.components()] == [1, 0]
    assert meter.info()["gpu1"]["name"] == "Tesla V100"
    assert meter.info()["gpu1"]["driver_version"] == "535.1"


def test_mig_instance_is_measured_through_its_parent(monkeypatch):
    parent = FakeGpu(uuid=UUID0, mig_mode=(1, 1))
    mig_uuid = "MIG-abcdef01-2345-6789-abcd-ef0123456789"
    install(monkeypatch, make_fake_pynvml([parent], migs=[FakeMig(mig_uuid, parent)], bytes_uuid_only=True))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mig_uuid)
    meter, reason = discover_nvml()
    assert reason is None
    facts = meter.info()["gpu0"]
    assert facts["mig_mode"] is True
    assert facts["mig_instance_uuid"] == mig_uuid
    assert facts["measures_whole_gpu"] is True
    assert facts["uuid"] == UUID0


def test_visible_devices_parsing_follows_cuda():
    assert parse_visible_devices(None) is None
    assert parse_visible_devices("") == []
    assert parse_visible_devices("0, 2") == ["0", "2"]
    assert parse_visible_devices("0,-1,1") == ["0"]
    assert parse_visible_devices("1,1") == ["1"]
    assert parse_visible_devices("GPU-ab,MIG-cd") == ["GPU-ab", "MIG-cd"]
    assert parse_visible_devices("nonsense,0") == []


def test_hidden_gpus_give_a_reason(monkeypatch):
    fake = install(monkeypatch, make_fake_pynvml([FakeGpu(uuid=UUID0)]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    meter, reason = discover_nvml()
    assert meter is None and "hides every GPU" in reason
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    meter, reason = discover_nvml()
    assert meter is None and "no NVML device" in reason
    assert fake.calls["init"] == fake.calls["shutdown"] == 2


def test_no_gpu_gives_a_reason(monkeypatch):
    install(monkeypatch, make_fake_pynvml([]))
    meter, reason = discover_nvml()
    assert meter is None and "no NVIDIA GPU" in reason


def test_pynvml_missing_gives_a_reason(monkeypatch):
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    real_import = builtins.__import__

    def no_pynvml(name, *args, **kwargs):
        if name == "pynvml":
            raise ImportError("No module named 'pynvml'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    meter, reason = discover_nvml()
    assert meter is None and "nvidia-ml-py" in reason


def test_init_failure_gives_a_reason(monkeypatch):
    install(monkeypatch, make_fake_pynvml([FakeGpu(uuid=UUID0)], init_error=NVMLError_LibraryNotFound()))
    meter, reason = discover_nvml()
    assert meter is None
    assert "NVML could not start" in reason and "Library Not Found" in reason


def test_temperatures(monkeypatch):
    gpu = FakeGpu(uuid=UUID0, temperature_c=41)
    install(monkeypatch, make_fake_pynvml([gpu]))
    meter, _ = discover_nvml()
    assert meter.temperatures() == {"gpu0": 41.0}
    gpu.temperature_c = 67
    assert meter.temperatures() == {"gpu0": 67.0}
    assert meter.info()["gpu0"]["temperature_c_at_start"] == 41.0


def test_module_imports_without_pynvml_or_torch():
    import subprocess

    code = (
        "import sys; sys.modules['pynvml'] = None; import greenlab.core.measure.nvml, "
        "greenlab.core.measure.rapl; assert 'torch' not in sys.modules; assert 'textual' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert pytest.approx(0.1) == nvml.COUNTER_UPDATE_S
