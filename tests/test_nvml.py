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
    from fake_pynvml import (
        ARCH,
        FakeGpu,
        FakeMig,
        FakeProcess,
        NVMLError_LibraryNotFound,
        NVMLError_NoPermission,
        make_fake_pynvml,
    )
except ImportError:  # tests/ became a package
    from tests.fake_pynvml import (
        ARCH,
        FakeGpu,
        FakeMig,
        FakeProcess,
        NVMLError_LibraryNotFound,
        NVMLError_NoPermission,
        make_fake_pynvml,
    )

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
    assert facts["nvml_index"] == 0 and "cuda_index" not in facts  # CUDA's numbering is the child's to say
    assert facts["power_reading"] == nvml.POWER_READINGS[nvml.POWER_AVERAGE]
    meter.close()
    meter.close()  # idempotent: one nvmlShutdown per nvmlInit
    assert fake.calls["init"] == fake.calls["shutdown"] == 1


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
    assert meter is None and "GPU 3: index 3 is beyond the 1 GPU(s) NVML sees" in reason
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


# -- the right board, every board --------------------------------------------------------------------------
def test_a_board_nvml_refuses_is_skipped_and_named_the_others_are_metered(monkeypatch):
    """GPU 0 says "Insufficient Permissions" (a cgroup-constrained container, a Slurm job): GPU 1 is still
    metered, and the meter names the board it left out and why."""
    install(
        monkeypatch,
        make_fake_pynvml([FakeGpu(uuid=UUID0, open_error=NVMLError_NoPermission()), FakeGpu(uuid=UUID1, name="B")]),
    )
    meter, reason = discover_nvml()
    assert reason is None
    assert meter.components() == ["gpu1"]
    assert meter.info()["gpu1"]["uuid"] == UUID1
    assert meter.skipped == {"0": "GPU 0: Insufficient Permissions"}


def test_no_board_opening_gives_every_reason(monkeypatch):
    fake = install(monkeypatch, make_fake_pynvml([FakeGpu(uuid=UUID0, open_error=NVMLError_NoPermission())]))
    meter, reason = discover_nvml()
    assert meter is None
    assert reason == "no GPU could be opened: GPU 0: Insufficient Permissions"
    assert fake.calls["init"] == fake.calls["shutdown"] == 1


def test_a_uuid_prefix_passes_over_a_board_nvml_refuses(monkeypatch):
    install(
        monkeypatch,
        make_fake_pynvml([FakeGpu(uuid=UUID0, open_error=NVMLError_NoPermission()), FakeGpu(uuid=UUID1)]),
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-9999")
    meter, reason = discover_nvml()
    assert reason is None and meter.info()["gpu0"]["uuid"] == UUID1


def test_two_mig_instances_of_one_board_are_one_component(monkeypatch):
    """The counter is the parent's: two visible instances of one board would otherwise be read twice."""
    parent = FakeGpu(uuid=UUID0, mig_mode=(1, 1))
    mig_a = "MIG-aaaaaaaa-0000-0000-0000-000000000000"
    mig_b = "MIG-bbbbbbbb-0000-0000-0000-000000000000"
    install(monkeypatch, make_fake_pynvml([parent], migs=[FakeMig(mig_a, parent), FakeMig(mig_b, parent)]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{mig_a},{mig_b}")
    meter, reason = discover_nvml()
    assert reason is None
    assert meter.components() == ["gpu0"]
    facts = meter.info()["gpu0"]
    assert facts["mig_instances"] == [mig_a, mig_b] and facts["measures_whole_gpu"] is True


def test_a_board_in_mig_mode_lists_its_instances(monkeypatch):
    parent = FakeGpu(uuid=UUID0, mig_mode=(1, 1))
    mig_a = "MIG-aaaaaaaa-0000-0000-0000-000000000000"
    install(monkeypatch, make_fake_pynvml([parent], migs=[FakeMig(mig_a, parent)]))
    meter, _ = discover_nvml()
    assert meter.info()["gpu0"]["mig_instances"] == [mig_a]


# -- power the way recent GPUs report it ------------------------------------------------------------------
def test_power_is_read_instantly_where_the_driver_has_the_field(monkeypatch):
    gpu = FakeGpu(uuid=UUID0, power_mw=200_000, instant_mw=420_000)
    install(monkeypatch, make_fake_pynvml([gpu]))
    meter, _ = discover_nvml()
    assert meter.power_w() == {"gpu0": pytest.approx(420.0)}
    assert meter.power_usage_w() == {"gpu0": pytest.approx(200.0)}
    assert meter.instant_power_w() == {"gpu0": pytest.approx(420.0)}
    assert meter.info()["gpu0"]["power_reading"] == nvml.POWER_READINGS[nvml.POWER_INSTANT]
    assert meter.window_inputs("gpu0", 10.0, 1.0) == {"power_reading": "instant"}
    # An instant reading has no lag: a short polled window is only as uncertain as its sampling.
    assert meter.window_uncertainty_j("gpu0", "polled", 0.5, 200.0, 0.1) == pytest.approx(40.0)


@pytest.mark.parametrize(
    ("name", "arch", "fields", "reading"),
    [
        ("NVIDIA H100 80GB HBM3", ARCH["hopper"], True, nvml.POWER_AVERAGE),  # the driver lacks the field
        ("NVIDIA H100 80GB HBM3", ARCH["hopper"], False, nvml.POWER_AVERAGE),  # the binding lacks the call
        ("NVIDIA A100-SXM4-80GB", ARCH["ampere"], True, "usage"),  # GA100: no one-second average
        ("Tesla V100-SXM2-32GB", ARCH["volta"], True, "usage"),
        ("NVIDIA A10", ARCH["ampere"], True, nvml.POWER_AVERAGE),
    ],
)
def test_without_the_instant_field_the_reading_says_whether_it_lags(monkeypatch, name, arch, fields, reading):
    gpu = FakeGpu(uuid=UUID0, name=name, architecture=arch, power_mw=300_000)
    install(monkeypatch, make_fake_pynvml([gpu], field_values=fields))
    meter, _ = discover_nvml()
    assert meter.power_w() == {"gpu0": pytest.approx(300.0)}
    assert meter.info()["gpu0"]["power_reading"] == nvml.POWER_READINGS[reading]
    lag = nvml.POWER_AVERAGE_LAG_S if reading == nvml.POWER_AVERAGE else 0.0
    assert meter.window_uncertainty_j("gpu0", "polled", 2.0, 600.0, 0.1) == pytest.approx(300.0 * (0.1 + lag))


def test_a_counter_window_states_its_quantisation():
    """Each edge may read a total one update old: ±100 ms of the window's mean power, whatever its length."""
    meter = nvml.NvmlMeter(None, [nvml.NvmlGpu("gpu0", None, counter_supported=True)])
    assert meter.window_uncertainty_j("gpu0", "counter", 1.0, 300.0, 0.1) == pytest.approx(30.0)  # 10 %
    assert meter.window_uncertainty_j("gpu0", "counter", 4.0, 1200.0, 0.1) == pytest.approx(30.0)  # 2.5 %
    assert meter.window_uncertainty_j("gpu0", "counter", 0.0, 0.0, 0.1) is None
    assert meter.window_uncertainty_j("cpu", "counter", 1.0, 10.0, 0.1) is None


# -- someone else on the GPU -----------------------------------------------------------------------------
def test_processes_and_utilisation_per_board(monkeypatch):
    gpu = FakeGpu(uuid=UUID0, processes=[FakeProcess(4242, 3 * 2**30), FakeProcess(7, None)], utilisation_pct=87)
    install(monkeypatch, make_fake_pynvml([gpu, FakeGpu(uuid=UUID1)]))
    meter, _ = discover_nvml()
    assert meter.processes() == {
        "gpu0": [{"pid": 4242, "used_memory_mb": 3072.0}, {"pid": 7, "used_memory_mb": None}],
        "gpu1": [],
    }
    assert meter.processes(["gpu1"]) == {"gpu1": []}
    assert meter.utilisation() == {"gpu0": 87.0, "gpu1": 0.0}


# -- Grace Hopper --------------------------------------------------------------------------------------------
def test_a_gh200_is_recognised_by_its_name(monkeypatch):
    install(monkeypatch, make_fake_pynvml([FakeGpu(uuid=UUID0, name="NVIDIA GH200 480GB")]))
    meter, _ = discover_nvml()
    assert meter.module_components() == ["gpu0"]
    assert meter.info()["gpu0"]["scope"] == nvml.GRACE_HOPPER_SCOPE
    assert meter.window_inputs("gpu0", 1.0, 1.0)["scope"] == "module"


def test_a_hopper_beside_a_grace_cpu_is_a_module_but_a_pcie_card_is_not(monkeypatch, tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd4f\n")
    assert nvml.grace_cpu(tmp_path)
    install(
        monkeypatch,
        make_fake_pynvml([FakeGpu(uuid=UUID0, name="NVIDIA H100 96GB"), FakeGpu(uuid=UUID1, name="NVIDIA H100 PCIe")]),
    )
    meter, _ = discover_nvml(root=tmp_path)
    assert meter.module_components() == ["gpu0"]
    assert "Grace CPU" in meter.info()["gpu0"]["scope_recognised_by"]
    meter, _ = discover_nvml()  # this machine's own CPU is no Grace
    assert meter.module_components() == []
