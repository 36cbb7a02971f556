"""Steganographic capacity: bit-exact truncation and overwriting, the scan, and the reduction settings."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from greenlab.core.compression import CompressionContext, validate_settings
from greenlab.core.compression import stego
from greenlab.core.errors import ConfigError


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )


def context(evaluate=lambda model: 0.5, device="cpu") -> CompressionContext:
    return CompressionContext(evaluate=evaluate, device=torch.device(device), seed=3,
                              example_input=torch.randn(2, 3, 8, 8), num_classes=10, log=lambda line: None)


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("bits", [1, 7, 13, 23])
def test_truncation_zeroes_exactly_the_low_bits(bits):
    torch.manual_seed(0)
    model = tiny_cnn()
    before = snapshot(model)
    stego.truncate_low_bits(model, bits)
    mask = (1 << bits) - 1
    for original, param in zip(before, model.parameters()):
        now = param.detach().view(torch.int32)
        assert int((now & mask).count_nonzero()) == 0
        assert torch.equal(now & ~mask, original.view(torch.int32) & ~mask)  # sign, exponent, high bits


def test_truncation_of_zero_bits_changes_nothing():
    model = tiny_cnn()
    before = snapshot(model)
    assert stego.truncate_low_bits(model, 0) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


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
        worst = max(float(((p.detach() - r).abs() / r.abs().clamp_min(1e-30)).max())
                    for p, r in zip(model.parameters(), reference))
        return 0.9 if worst < limit else 0.1

    return evaluate


def test_scan_finds_the_knee_and_restores_weights():
    torch.manual_seed(0)
    model = tiny_cnn()
    before = snapshot(model)
    # Overwriting k low bits moves a weight by less than 2**(k - 23) of itself.
    curve, capacity = stego.capacity_scan(model, relative_error_evaluate(before, 2 ** -10), seed=1,
                                          log=lambda line: None)
    assert [k for k, _ in curve] == list(range(24))
    assert capacity == 13
    assert all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(before, model.parameters()))


def test_scan_requires_every_smaller_level_within_tolerance():
    answers = iter([0.90, 0.90, 0.80, 0.90, 0.90])
    curve, capacity = stego.capacity_scan(tiny_cnn(), lambda m: next(answers), seed=0, bits_range=range(5),
                                          log=lambda line: None)
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
    assert applied.columns == {"capacity_bits": 16, "capacity_bytes": stego.capacity_bytes(model, 16),
                               "train_dtype": "float32", "mantissa_bits_kept": 7, "stego_mode": "truncate"}
    assert applied.hooks.autocast_dtype is None and applied.capacity_curve is None
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 3, 8, 8)).sum().backward()
        opt.step()
        for hook in applied.hooks.after_step:
            hook(model)
    for param in model.parameters():
        assert int((param.detach().view(torch.int32) & 0xFFFF).count_nonzero()) == 0
    assert pickle.loads(pickle.dumps(applied.hooks.after_step[0])).bits == 16  # crosses into a child process


@pytest.mark.parametrize("bits, device, dtype, kept, scaler", [
    (16, "cpu", torch.bfloat16, 7, False),
    (20, "cuda", torch.bfloat16, 7, False),
    (13, "cuda", torch.float16, 10, True),
    (13, "cpu", torch.bfloat16, 7, False),  # float16 autocast is poor on CPU
    (5, "cpu", None, 23, False),
])
def test_dtype_mode_picks_the_narrowest_format(bits, device, dtype, kept, scaler):
    applied = stego.apply(tiny_cnn(), {"bits": bits, "mode": "dtype"}, context(device=device))
    assert applied.hooks.autocast_dtype == dtype
    assert applied.hooks.grad_scaler is scaler
    assert applied.hooks.after_step == []
    assert applied.columns["mantissa_bits_kept"] == kept
    assert applied.columns["train_dtype"] == (str(dtype).removeprefix("torch.") if dtype else "float32")
    if dtype is None:
        assert any("no native format" in w for w in applied.warnings)
    if (bits, device) == (13, "cpu"):
        assert any("float16 autocast is poor" in w for w in applied.warnings)


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
    assert applied.columns["train_dtype"] == "bfloat16"  # 9 bits needed: float16, but this is a CPU
    assert len(applied.capacity_curve) == 24
    assert applied.report["capacity_curve"][14] == [14, 0.9]


@pytest.mark.parametrize("table, key, words", [
    ({"bits": 30}, "bits", "integer from 0 to 23"),
    ({"bits": "all"}, "bits", "\"auto\""),
    ({"bits": True}, "bits", "integer"),
    ({"mode": "trunc"}, "mode", "did you mean 'truncate'"),
    ({"tolerance": -1}, "tolerance", ">= 0"),
])
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
