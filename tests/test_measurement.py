"""From windows to stored figures: signed net energy, missing baselines, and which GPU a run used."""

from __future__ import annotations

import pytest

from greenlab.core.measure.meter import ComponentEnergy
from greenlab.core.measure.tracker import WindowResult
from greenlab.core.run.measurement import energy_columns, gpus_used


def window(**components):
    return WindowResult(
        "run", 10.0, {name: ComponentEnergy(name, joules, method) for name, (joules, method) in components.items()}
    )


def by_component(rows):
    return {r["component"]: r for r in rows}


def test_net_is_signed_and_flagged_below_idle():
    columns, rows, flags = energy_columns(
        window(gpu0=(500.0, "counter"), cpu=(80.0, "counter")), {"gpu0": 30.0, "cpu": 10.0}
    )
    rows = by_component(rows)
    assert rows["gpu0"]["net_energy_j"] == pytest.approx(200.0)
    assert rows["cpu"]["net_energy_j"] == pytest.approx(-20.0)  # drew less than at idle: a bad baseline
    assert "net_below_idle" in rows["cpu"]["flags"] and "net_below_idle" in flags
    assert columns["energy_net_j"] == pytest.approx(180.0)
    assert columns["idle_w"] == pytest.approx(40.0)


def test_no_baseline_means_no_net_figure():
    columns, rows, flags = energy_columns(window(gpu0=(500.0, "counter"), cpu=(80.0, "estimate")), {})
    rows = by_component(rows)
    assert rows["gpu0"]["net_energy_j"] is None and "no_idle_baseline" in rows["gpu0"]["flags"]
    assert columns["energy_net_j"] is None and columns["idle_w"] is None
    assert columns["energy_j"] == pytest.approx(580.0)
    assert "no_idle_baseline" in flags


def test_an_estimate_is_net_by_construction():
    columns, rows, _ = energy_columns(window(cpu=(80.0, "estimate"), dram=(5.0, "estimate")), {})
    assert columns["energy_net_j"] == pytest.approx(85.0)
    assert all(r["idle_w"] is None and not r["flags"] for r in rows)


GPUS = {
    "gpu0": {"uuid": "GPU-aaaaaaaa-0000-0000-0000-000000000000", "pci_bus_id": "00000000:1B:00.0"},
    "gpu1": {"uuid": "GPU-bbbbbbbb-0000-0000-0000-000000000000", "pci_bus_id": "00000000:3B:00.0"},
}


def test_the_gpu_is_found_by_uuid_whatever_the_index():
    # CUDA puts the faster board first: cuda:0 is NVML's second GPU.
    used, flags = gpus_used("cuda:0", GPUS, cuda_uuid="bbbbbbbb-0000-0000-0000-000000000000")
    assert used == {"gpu1"} and flags == []


@pytest.mark.parametrize("reported", [None, "cccccccc-0000-0000-0000-000000000000"])
def test_without_a_uuid_match_the_gpu_energy_is_unknown_never_another_boards(reported):
    """A container where NVML sees every board and CUDA one, or a mixed box ordered fastest first: no index
    or bus id is trusted, so an unmatched run meters no board and its GPU energy is unknown."""
    used, flags = gpus_used("cuda", GPUS, cuda_uuid=reported)
    assert used == set() and flags == ["gpu_unmatched"]


def test_a_mig_instance_is_its_parent_once_and_flagged():
    gpus = {
        "gpu0": {
            "uuid": "GPU-aaaaaaaa-0000-0000-0000-000000000000",
            "mig_instances": ["MIG-11111111-2222-3333-4444-555555555555", "MIG-66666666-2222-3333-4444-555555555555"],
        },
        "gpu1": GPUS["gpu1"],
    }
    used, flags = gpus_used("cuda", gpus, cuda_uuid="66666666-2222-3333-4444-555555555555")
    assert used == {"gpu0"} and flags == ["mig_whole_gpu"]


def test_a_grace_hopper_module_stays_the_run_s_even_on_the_cpu():
    from greenlab.core.measure.nvml import GRACE_HOPPER_SCOPE

    gpus = {"gpu0": {**GPUS["gpu0"], "scope": GRACE_HOPPER_SCOPE}}
    assert gpus_used("cpu", gpus) == ({"gpu0"}, ["grace_hopper_module"])
    assert gpus_used("cuda", gpus, cuda_uuid="aaaaaaaa-0000-0000-0000-000000000000") == (
        {"gpu0"},
        ["grace_hopper_module"],
    )


def test_an_unmatched_board_leaves_the_run_s_total_unknown():
    from greenlab.core.plan.config import expand_grid, parse_experiments
    from greenlab.core.run.measurement import RunMeasurement

    (run,) = expand_grid(
        parse_experiments('[defaults]\npretrained = false\n[[experiment]]\nname = "e"\nmodels = ["tinycnn"]\n')
    )
    record = RunMeasurement(1, run, 0.0, {}, {"components": {}}, gpus_unused={"gpu0", "gpu1"}, gpu_unmatched=True)
    seen = record.view(window(gpu0=(500.0, "counter"), gpu1=(400.0, "counter"), cpu=(80.0, "counter")))
    assert set(seen.components) == {"gpu", "cpu"} and seen.total_j() is None
    columns, _rows, flags = energy_columns(seen, {})
    assert columns["energy_j"] is None and columns["energy_gpu_j"] is None
    assert columns["energy_gpu_method"] == "unavailable"
    assert {"gpu_unmatched", "energy_incomplete"} <= set(flags)


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_a_run_off_cuda_uses_no_gpu(device):
    assert gpus_used(device, GPUS) == (set(), [])


def test_a_phase_measured_by_polled_power_marks_the_run():
    from greenlab.core.plan.config import expand_grid, parse_experiments
    from greenlab.core.run.measurement import RunMeasurement

    (run,) = expand_grid(
        parse_experiments('[defaults]\npretrained = false\n[[experiment]]\nname = "e"\nmodels = ["tinycnn"]\n')
    )
    record = RunMeasurement(1, run, 0.0, {}, {"components": {}})
    short = WindowResult(
        "1:eval",
        0.05,
        {
            "gpu0": ComponentEnergy("gpu0", 4.0, "polled", {}, ("short_window_polled",)),
            "cpu": ComponentEnergy("cpu", 1.0, "counter"),
        },
    )
    record.add_phase(1, "eval", short)
    columns, _rows, flags = energy_columns(
        window(gpu0=(500.0, "counter"), cpu=(80.0, "counter")), {"gpu0": 1.0, "cpu": 1.0}, record.phase_methods
    )
    assert columns["energy_gpu_method"] == "counter+polled" and columns["energy_cpu_method"] == "counter"
    assert "short_window_polled" in record.flags


def test_a_component_without_a_reading_leaves_the_total_unknown():
    columns, _rows, flags = energy_columns(window(gpu0=(None, "counter"), cpu=(80.0, "estimate")), {})
    assert columns["energy_j"] is None and columns["energy_kwh"] is None
    assert columns["energy_estimated_j"] == 80.0 and "energy_incomplete" in flags
