"""scripts/gpu_check.py, the check for the day a GPU is lent, run on the CPU against the fake NVML at 1 % of its
durations: every phase runs, every file is written, and it fails when it must."""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import pytest
import torch

from tests.conftest import REPO
from tests.fake_pynvml import FakeGpu, make_fake_pynvml

UUID = "GPU-12345678-1111-2222-3333-444444444444"
QUICK = ["--scale", "0.01", "--model", "tinycnn", "--batch", "8", "--image-size", "32"]


@pytest.fixture
def gpu_check(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda index: types.SimpleNamespace(uuid=UUID.removeprefix("GPU-"), name="NVIDIA H100 80GB HBM3"),
    )
    monkeypatch.setattr(module, "compute_device", lambda torch, index: torch.device("cpu"))
    return module


def board(monkeypatch, **fields):
    gpu = FakeGpu(uuid=UUID, name="NVIDIA H100 80GB HBM3", live_w=300.0, **fields)
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml([gpu]))
    return gpu


def test_the_check_runs_every_phase_and_a_real_grid(gpu_check, monkeypatch, tmp_path):
    board(monkeypatch)
    out = tmp_path / "check"
    grid = ["--grid-device", "cpu", "--grid-model", "tinycnn", "--grid-dataset", "digits"]
    assert gpu_check.main([*QUICK, *grid, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["failures"] == []
    assert results["identity"]["nvml_uuid"] == UUID and results["identity"]["index_agrees"] is True
    assert abs(results["steady"]["difference"]) <= 0.05 and results["steady"]["compared_with"] == "instant_j"
    assert set(results["windows"]) == {"0.001s", "0.003s", "0.01s", "0.03s"}
    assert results["cycles"]["instant_vs_counter"] is not None
    phases = {line.split(",")[1] for line in (out / "samples.csv").read_text().splitlines()[1:]}
    assert {"idle", "warmup", "steady", "cycles", "windows"} <= phases
    assert len((out / "windows.csv").read_text().splitlines()) == 1 + 4 * 5
    assert results["grid"]["exit_code"] == 0, (out / "grid" / "headless.log").read_text()
    assert [r["status"] for r in results["grid"]["runs"]] == ["completed", "completed"]
    assert (out / "grid" / "report.md").read_text()
    (claim,) = results["grid"]["claims"]
    assert claim.startswith("tinycnn stego") and "the study: saves" in claim
    summary = (out / "summary.md").read_text()
    assert "not results" in summary and "All checks passed." in summary and "the study: saves" in summary


def test_the_check_fails_when_counter_and_instant_power_disagree(gpu_check, monkeypatch, tmp_path):
    board(monkeypatch, instant_mw=400_000)  # the instant field reads a third above what the counter counts
    assert gpu_check.main([*QUICK, "--no-grid", "--out", str(tmp_path)]) == 1
    (failure,) = json.loads((tmp_path / "results.json").read_text())["failures"]
    assert failure.startswith("steady load: the counter and integrated instant power differ by +33")


def test_the_check_fails_when_torch_s_board_is_no_nvml_board(gpu_check, monkeypatch, tmp_path):
    monkeypatch.setitem(
        sys.modules, "pynvml", make_fake_pynvml([FakeGpu(uuid="GPU-99999999-0000-0000-0000-000000000000")])
    )
    assert gpu_check.main([*QUICK, "--no-grid", "--out", str(tmp_path)]) == 1
    (failure,) = json.loads((tmp_path / "results.json").read_text())["failures"]
    assert "is no NVML board's" in failure and "gpu_unmatched" in failure


def test_without_a_gpu_the_check_says_so(monkeypatch, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert module.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
