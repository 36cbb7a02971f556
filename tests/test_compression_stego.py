"""Steganographic capacity: bit-exact truncation and overwriting, the scan, and the reduction settings."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from greenlab.core.errors import ConfigError
from greenlab.core.train.compression import CompressionContext, stego, validate_settings
from tests.training_helpers import train_steps


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def context(evaluate=lambda model: 0.5, device="cpu", bf16_native=None) -> CompressionContext:
    return CompressionContext(
        evaluate=evaluate,
        device=torch.device(device),
        seed=3,
        example_input=torch.randn(2, 3, 8, 8),
        num_classes=10,
        log=lambda line: None,
        bf16_native=bf16_native,
    )


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("bits", [1, 7, 13, 23])
def test_rounding_zeroes_the_low_bits_to_the_nearest_value(bits):
    torch.manual_seed(0)
    model = tiny_cnn()
    before = snapshot(model)
    stego.round_low_bits(model, bits)
    mask = (1 << bits) - 1
    quantum = 2.0 ** (bits - 23)  # relative step between neighbours that keep 23 - bits mantissa bits
    for original, param in zip(before, model.parameters()):
        now = param.detach()
        assert int((now.view(torch.int32) & mask).count_nonzero()) == 0
        assert torch.equal(torch.sign(now[now != 0]), torch.sign(original[now != 0]))
        # nearest: never more than half a quantum away
        assert float(((now - original).abs() / original.abs().clamp_min(1e-30)).max()) <= quantum / 2 * (1 + 1e-6)


def test_rounding_is_to_nearest_with_ties_to_even():
    values = torch.tensor(
        [1.0 + 3 * 2.0**-23, 1.0 + 2 * 2.0**-23, 1.0 + 6 * 2.0**-23, -(1.0 + 3 * 2.0**-23), float("inf"), 0.0]
    )
    model = nn.Linear(1, 6, bias=False)
    with torch.no_grad():
        model.weight.copy_(values[:, None])
    stego.round_low_bits(model, 2)  # quantum 4 ulps: 3 -> 4, 2 (a tie) -> 0 (even), 6 (a tie) -> 8 (even)
    got = model.weight.detach()[:, 0]
    assert got.tolist() == [1.0 + 4 * 2.0**-23, 1.0, 1.0 + 8 * 2.0**-23, -(1.0 + 4 * 2.0**-23), float("inf"), 0.0]


def test_rounding_of_zero_bits_changes_nothing():
    model = tiny_cnn()
    before = snapshot(model)
    assert stego.round_low_bits(model, 0) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_truncate_mode_leaves_zero_mean_noise_where_it_was():
    """The issue's experiment: truncation toward zero shrank these weights to 0.0033 in 1000 steps."""
    torch.manual_seed(0)
    layer = nn.Linear(64, 64)
    with torch.no_grad():
        layer.weight.fill_(0.05)
        layer.bias.fill_(0.05)
    applied = stego.apply(layer, {"bits": 16, "mode": "truncate"}, context())
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(1000):
            for param in layer.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 1e-5)
            for hook in applied.hooks.after_step:
                hook(layer)
    mean = float(layer.weight.detach().abs().mean())
    assert mean == pytest.approx(0.05, rel=0.02)


def test_overwrite_changes_only_low_bits_and_is_seeded():
    torch.manual_seed(0)
    model, twin = tiny_cnn(), tiny_cnn()
    twin.load_state_dict(model.state_dict())
    before = snapshot(model)
    stego.overwrite_low_bits(model, 12, seed=5)
    stego.overwrite_low_bits(twin, 12, seed=5)
    changed = 0
    for original, param, other in zip(before, model.parameters(), twin.parameters()):
        now, was = param.detach().view(torch.int32), original.view(torch.int32)
        assert torch.equal(now & ~0xFFF, was & ~0xFFF)
        assert torch.equal(param, other)
        changed += int((now != was).sum())
    assert changed > 0.9 * sum(p.numel() for p in model.parameters())


def relative_error_evaluate(reference: list[torch.Tensor], limit: float):
    """A stand-in for validation: full accuracy while no weight moved more than `limit` (relative)."""

    def evaluate(model: nn.Module) -> float:
        worst = max(
            float(((p.detach() - r).abs() / r.abs().clamp_min(1e-30)).max())
            for p, r in zip(model.parameters(), reference)
        )
        return 0.9 if worst < limit else 0.1

    return evaluate


def test_scan_finds_the_knee_and_restores_weights():
    torch.manual_seed(0)
    model = tiny_cnn()
    before = snapshot(model)
    # Overwriting k low bits moves a weight by less than 2**(k - 23) of itself.
    curve, capacity = stego.capacity_scan(model, relative_error_evaluate(before, 2**-10), seed=1, log=lambda line: None)
    assert [k for k, _ in curve] == list(range(24))
    assert capacity == 13
    assert all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(before, model.parameters()))


def test_scan_requires_every_smaller_level_within_tolerance():
    answers = iter([0.90, 0.90, 0.80, 0.90, 0.90])
    curve, capacity = stego.capacity_scan(
        tiny_cnn(), lambda m: next(answers), seed=0, bits_range=range(5), log=lambda line: None
    )
    assert capacity == 1
    assert curve[3] == (3, 0.90)


def test_scan_with_a_real_evaluation():
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    x = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        labels = model(x).argmax(1)  # the unmodified model scores 100 %

    def evaluate(candidate):
        with torch.no_grad():
            return float((candidate(x).argmax(1) == labels).float().mean())

    curve, capacity = stego.capacity_scan(model, evaluate, seed=0, log=lambda line: None)
    assert len(curve) == 24 and curve[0] == (0, 1.0)
    assert 10 <= capacity <= 23  # random weights lose nothing from their lowest bits
    assert evaluate(model) == 1.0


def test_capacity_bytes():
    model = tiny_cnn()
    n = sum(p.numel() for p in model.parameters())
    assert stego.capacity_bytes(model, 16) == n * 2


def test_truncate_mode_hooks_keep_the_bits_off_through_training():
    torch.manual_seed(0)
    model = tiny_cnn()
    applied = stego.apply(model, {"bits": 16, "mode": "truncate"}, context())
    assert applied.columns == {
        "capacity_bits": 16,
        "capacity_bytes": stego.capacity_bytes(model, 16),
        "compute_dtype": "float32",
        "weights_dtype": "float32",
        "mantissa_bits_kept": 7,
        "stego_mode": "truncate",
    }
    assert applied.hooks.autocast_dtype is None and applied.capacity_curve is None
    train_steps(model, torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)), applied.hooks, lr=0.1)
    for param in model.parameters():
        assert int((param.detach().view(torch.int32) & 0xFFFF).count_nonzero()) == 0
    assert pickle.loads(pickle.dumps(applied.hooks.after_step[0])).bits == 16  # crosses into a child process
    assert any("rounds every float32 weight after each optimizer step" in w for w in applied.warnings)


@pytest.mark.parametrize(
    "bits, device, dtype, kept, scaler",
    [
        (16, "cpu", torch.bfloat16, 7, False),
        (20, "cuda", torch.bfloat16, 7, False),
        (13, "cuda", torch.float16, 10, True),
        (13, "cpu", torch.bfloat16, 7, False),  # float16 autocast is poor on CPU
        (5, "cpu", None, 23, False),
    ],
)
def test_dtype_mode_picks_the_narrowest_format(bits, device, dtype, kept, scaler):
    applied = stego.apply(tiny_cnn(), {"bits": bits, "mode": "dtype"}, context(device=device))
    assert applied.hooks.autocast_dtype == dtype
    assert applied.hooks.grad_scaler is scaler
    assert applied.hooks.after_step == []
    assert applied.columns["mantissa_bits_kept"] == kept
    assert applied.columns["compute_dtype"] == (str(dtype).removeprefix("torch.") if dtype else "float32")
    assert applied.columns["weights_dtype"] == "float32"  # autocast narrows the arithmetic, not the weights
    assert "arithmetic" in applied.report["mantissa_bits_kept_means"]
    if dtype is None:
        assert any("no native format" in w for w in applied.warnings)
    if (bits, device) == (13, "cpu"):
        assert any("float16 autocast is poor" in w for w in applied.warnings)


@pytest.mark.parametrize(("native", "dtype", "scaler"), [(False, torch.float16, True), (True, torch.bfloat16, False)])
def test_dtype_mode_chooses_float16_where_a_gpu_would_emulate_bfloat16(native, dtype, scaler):
    """A V100 or a T4 (compute capability below 8.0): torch's autocast emulates bfloat16 without an error, so
    the narrowest native format is float16 (10 mantissa bits, more than the 7 needed), said in a note."""
    applied = stego.apply(tiny_cnn(), {"bits": 16, "mode": "dtype"}, context(device="cuda", bf16_native=native))
    assert applied.hooks.autocast_dtype == dtype and applied.hooks.grad_scaler is scaler
    noted = any("bfloat16 is emulated on this GPU" in w for w in applied.warnings)
    assert noted is (not native)
    if not native:
        assert applied.columns["compute_dtype"] == "float16" and applied.columns["mantissa_bits_kept"] == 10
    # Stored weights name bfloat16 themselves: kept, emulated or not (the run's notes say which).
    stored = stego.apply(tiny_cnn(), {"bits": 16, "mode": "stored"}, context(device="cuda", bf16_native=native))
    assert stored.columns["compute_dtype"] == "bfloat16"


@pytest.mark.parametrize(
    ("technique", "autocast", "precision", "compute", "kept"),
    [
        ({}, None, "ieee", "float32", 23),  # a baseline on a CPU, or on CUDA with fp32_precision = "ieee"
        ({}, None, "tf32", "tf32", 10),  # a "float32" baseline whose arithmetic keeps 10 bits
        (
            {"compute_dtype": "bfloat16", "mantissa_bits_kept": 7, "stego_mode": "dtype"},
            torch.bfloat16,
            "tf32",
            "bfloat16",
            7,
        ),
        ({"compute_dtype": "float32", "mantissa_bits_kept": 23, "stego_mode": "dtype"}, None, "tf32", "tf32", 10),
        ({"compute_dtype": "float32", "mantissa_bits_kept": 7, "stego_mode": "truncate"}, None, "tf32", "tf32", 7),
    ],
)
def test_every_run_records_the_arithmetic_in_force(technique, autocast, precision, compute, kept):
    from greenlab.core.run.child_main import arithmetic_columns

    columns = arithmetic_columns(technique, autocast, "float32", precision, True)
    assert columns["compute_dtype"] == columns["train_dtype"] == compute
    assert columns["mantissa_bits_kept"] == kept
    assert columns["fp32_precision"] == precision and columns["bf16_native"] is True


def test_the_notes_say_what_the_arithmetic_measures():
    from greenlab.core.run.child_main import arithmetic_notes

    emulated = arithmetic_notes({"compute_dtype": "bfloat16", "bf16_native": False}, torch.device("cuda"), "ieee")
    assert len(emulated) == 1 and "measures the emulation" in emulated[0]
    assert arithmetic_notes({"compute_dtype": "bfloat16", "bf16_native": True}, torch.device("cuda"), "ieee") == []
    off_cuda = arithmetic_notes({"compute_dtype": "float32"}, torch.device("cpu"), "tf32")
    assert len(off_cuda) == 1 and "CUDA only" in off_cuda[0]


@pytest.mark.parametrize(
    "flags, says",
    [
        ("fpu sse avx2 avx512f avx512_bf16", "native (avx512_bf16)"),
        ("fpu sse avx2 amx_bf16 avx512_bf16", "native (avx512_bf16, amx_bf16)"),
        ("fpu sse avx2 avx512f", "emulated"),
    ],
)
def test_a_bfloat16_cpu_run_says_whether_this_cpu_does_bfloat16_natively(tmp_path, monkeypatch, flags, says):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
    note = stego.bfloat16_cpu_note(str(cpuinfo))
    assert says in note
    monkeypatch.setattr(stego, "bfloat16_cpu_note", lambda: note)
    assert note in stego.apply(tiny_cnn(), {"bits": 16, "mode": "dtype"}, context()).warnings
    assert note in stego.apply(tiny_cnn(), {"bits": 16, "mode": "stored"}, context()).warnings
    assert note not in stego.apply(tiny_cnn(), {"bits": 16, "mode": "dtype"}, context(device="cuda")).warnings
    assert note not in stego.apply(tiny_cnn(), {"bits": 16, "mode": "truncate"}, context()).warnings


def test_without_cpu_flags_to_read_nothing_is_claimed(tmp_path):
    assert stego.bfloat16_cpu_note(str(tmp_path / "absent")) is None
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")  # an Arm board says it otherwise
    assert stego.bfloat16_cpu_note(str(tmp_path / "cpuinfo")) is None


def test_zero_bits_says_it_does_nothing():
    applied = stego.apply(tiny_cnn(), {"bits": 0, "mode": "truncate"}, context())
    assert applied.hooks.after_step == [] and applied.hooks.autocast_dtype is None
    assert any("unchanged" in w for w in applied.warnings)


def test_auto_runs_the_scan():
    calls = []

    def evaluate(model):
        calls.append(1)
        return 0.9 if len(calls) <= 15 else 0.2  # levels 0..14 pass

    applied = stego.apply(tiny_cnn(), {}, context(evaluate))
    assert len(calls) == 24
    assert applied.columns["capacity_bits"] == 14
    assert applied.columns["compute_dtype"] == "bfloat16"  # 9 bits needed: float16, but this is a CPU
    assert len(applied.capacity_curve) == 24
    assert applied.report["capacity_curve"][14] == [14, 0.9]


@pytest.mark.parametrize(
    "table, key, words",
    [
        ({"bits": 30}, "bits", "integer from 0 to 23"),
        ({"bits": "all"}, "bits", '"auto"'),
        ({"bits": True}, "bits", "integer"),
        ({"mode": "trunc"}, "mode", "did you mean 'truncate'"),
        ({"tolerance": -1}, "tolerance", ">= 0"),
    ],
)
def test_bad_settings_name_the_key(table, key, words):
    with pytest.raises(ConfigError) as err:
        validate_settings("stego", table, "experiment 'demo'.stego")
    assert err.value.key == f"experiment 'demo'.stego.{key}"
    assert f"experiment 'demo'.stego.{key}" in str(err.value)
    assert words in str(err.value) and "fix:" in str(err.value)


def test_defaults_validate():
    assert validate_settings("stego", {}, "x") == {"bits": "auto", "mode": "dtype", "tolerance": 1.0}
    assert validate_settings("stego", {"tolerance": 2}, "x")["tolerance"] == 2.0


def test_auto_on_an_untrained_model_warns():
    applied = stego.apply(tiny_cnn(), {"mode": "truncate"}, context(lambda model: 0.1))
    assert applied.columns["capacity_bits"] == 23
    assert any("has not learned yet" in w for w in applied.warnings)


def test_stored_mode_really_stores_bfloat16_weights():
    from greenlab.core.train.compression.model_size import model_stats

    torch.manual_seed(0)
    model = tiny_cnn()
    x = torch.randn(2, 3, 8, 8)
    before = model_stats(model, x)
    applied = stego.apply(model, {"bits": 16, "mode": "stored"}, context())
    assert applied.columns["weights_dtype"] == "bfloat16" and applied.columns["compute_dtype"] == "bfloat16"
    assert applied.columns["capacity_bytes"] == before["params_total"] * 2  # counted on the float32 model
    assert all(p.dtype == torch.bfloat16 for p in applied.model.parameters())
    after = model_stats(applied.model, x, autocast_dtype=applied.hooks.autocast_dtype)
    assert after["model_bytes"] == before["model_bytes"] // 2
    assert after["flops_step"] == before["flops_step"]


def test_stored_mode_refuses_more_bits_than_bfloat16_keeps():
    applied = stego.apply(tiny_cnn(), {"bits": 13, "mode": "stored"}, context())
    assert applied.columns["weights_dtype"] == "float32" and applied.hooks.autocast_dtype is None
    assert any("bfloat16" in w and "unchanged" in w for w in applied.warnings)


def test_dtype_mode_stores_true_bytes_through_the_worker_stats():
    """Under autocast the weights stay float32: the model's bytes must not halve."""
    from greenlab.core.train.compression.model_size import model_stats

    model = tiny_cnn()
    x = torch.randn(2, 3, 8, 8)
    applied = stego.apply(model, {"bits": 16, "mode": "dtype"}, context())
    after = model_stats(applied.model, x, autocast_dtype=applied.hooks.autocast_dtype)
    assert after["model_bytes"] == model_stats(tiny_cnn(), x)["model_bytes"]
