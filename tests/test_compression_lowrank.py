"""Low-rank factorisation: exact at full rank, the promised sizes at lower rank, honest about skips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from greenlab.core.errors import ConfigError
from greenlab.core.train.compression import CompressionContext, lowrank, validate_settings
from greenlab.core.train.compression.model_size import model_stats
from tests.training_helpers import train_steps


def context(example, num_classes: int = 10) -> CompressionContext:
    return CompressionContext(
        evaluate=lambda model: 0.5,
        device=torch.device("cpu"),
        seed=0,
        example_input=example,
        num_classes=num_classes,
        log=lambda line: None,
    )


def test_full_rank_linear_reproduces_the_layer():
    torch.manual_seed(0)
    layer = nn.Linear(48, 32)
    x = torch.randn(5, 48)
    factored = lowrank.factor_linear(layer, 32)
    assert factored[0].weight.shape == (32, 48) and factored[0].bias is None
    assert factored[1].weight.shape == (32, 32) and factored[1].bias is not None
    torch.testing.assert_close(factored(x), layer(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("stride, padding, dilation, bias", [(1, 1, 1, True), (2, 0, 1, False), (1, 2, 2, True)])
def test_full_rank_conv_reproduces_the_layer(stride, padding, dilation, bias):
    torch.manual_seed(0)
    layer = nn.Conv2d(6, 12, 3, stride=stride, padding=padding, dilation=dilation, bias=bias)
    x = torch.randn(2, 6, 11, 11)
    factored = lowrank.factor_conv2d(layer, 12)
    assert factored[0].kernel_size == (3, 3) and factored[1].kernel_size == (1, 1)
    torch.testing.assert_close(factored(x), layer(x), atol=1e-4, rtol=1e-4)


def test_half_rank_sizes_and_the_classifier_is_kept():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 80), nn.ReLU(), nn.Linear(80, 10))
    x = torch.randn(4, 64)
    applied = lowrank.apply(model, {"rank_ratio": 0.5}, context(x))
    assert applied.columns == {"lowrank_layers_factored": 2, "lowrank_layers_skipped": 0}
    assert applied.report["classifier_layers_kept"] == ["4"]
    r1, r2 = 32, 40  # half of min(out, in)
    assert sum(p.numel() for p in model[0].parameters()) == r1 * (64 + 96) + 96
    assert sum(p.numel() for p in model[2].parameters()) == r2 * (96 + 80) + 80
    assert isinstance(model[4], nn.Linear)
    assert model(x).shape == (4, 10)
    assert applied.warnings == []


def test_conv_model_factors_and_still_trains():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    before = model_stats(model, x)
    applied = lowrank.apply(model, {"rank_ratio": 0.25}, context(x))
    # conv1: r = 6, 6 * (27 + 32) < 32 * 27 qualifies; conv2: r = 16, 16 * (288 + 64) < 64 * 288.
    assert applied.columns["lowrank_layers_factored"] == 2
    assert model_stats(model, x)["flops_step"] < before["flops_step"]
    train_steps(model, x, y, applied.hooks, momentum=0.0)


def test_nothing_qualifies_is_a_warning():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 10))
    applied = lowrank.apply(model, {"rank_ratio": 0.5}, context(torch.randn(2, 4)))
    assert applied.columns == {"lowrank_layers_factored": 0, "lowrank_layers_skipped": 1}
    assert any("no layer qualified" in w for w in applied.warnings)


def test_energy_picks_the_smallest_rank_reaching_it():
    s = torch.tensor([3.0, 2.0, 1.0, 1.0, 1.0], dtype=torch.float64)  # squares 9, 4, 1, 1, 1 of 16
    assert lowrank.choose_rank(s, 0.5, 0.5) == 1
    assert lowrank.choose_rank(s, 0.5, 0.8) == 2
    assert lowrank.choose_rank(s, 0.5, 0.85) == 3
    assert lowrank.choose_rank(s, 0.5, 1.0) == 5
    assert lowrank.choose_rank(s, 0.5, None) == 2
    assert lowrank.choose_rank(s, 0.1, None) == 1


def test_energy_setting_on_a_low_rank_layer():
    torch.manual_seed(0)
    layer = nn.Linear(64, 64, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(64, 4) @ torch.randn(4, 64))  # rank 4
    model = nn.Sequential(layer, nn.Linear(64, 10))
    x = torch.randn(3, 64)
    expected = model(x)
    applied = lowrank.apply(model, {"energy": 0.999999}, context(x))
    assert applied.report["factored"][0]["rank"] == 4
    torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=1e-4)


def test_torch_transformer_layers_are_left_alone():
    torch.manual_seed(0)
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 256, batch_first=True), 1)
    x = torch.randn(2, 5, 64)
    applied = lowrank.apply(model, {"rank_ratio": 0.25}, context(x))
    assert applied.columns["lowrank_layers_factored"] == 0
    assert any("no layer qualified" in w for w in applied.warnings)
    model.eval()  # the inference fast path reads every Linear's weight directly
    with torch.no_grad():
        assert model(x).shape == x.shape


@pytest.mark.parametrize(
    "table, key",
    [
        ({"rank_ratio": 0}, "rank_ratio"),
        ({"rank_ratio": 1.5}, "rank_ratio"),
        ({"energy": 0}, "energy"),
        ({"energy": "high"}, "energy"),
    ],
)
def test_bad_settings_name_the_key(table, key):
    with pytest.raises(ConfigError) as err:
        validate_settings("lowrank", table, "experiment 'demo'.lowrank")
    assert err.value.key == f"experiment 'demo'.lowrank.{key}"
    assert "fix:" in str(err.value)


def test_the_svd_runs_on_the_cpu_off_cuda(monkeypatch):
    """MPS has no float64: every float64 copy the factorisation makes must be made on the CPU (or CUDA)."""
    from greenlab.core.train.compression import lowrank

    casts = []
    original = torch.Tensor.to

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if out.dtype == torch.float64:
            casts.append(kwargs.get("device", args[0] if args and not isinstance(args[0], torch.dtype) else None))
        return out

    monkeypatch.setattr(torch.Tensor, "to", spy)
    lowrank._svd(torch.randn(12, 40))
    assert casts and all(device is not None and torch.device(device).type == "cpu" for device in casts)
