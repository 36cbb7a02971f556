"""Pruning: unstructured zeros hold through training; structured pruning really shrinks the work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from greenlab.core.errors import ConfigError
from greenlab.core.train.compression import CompressionContext, prune, validate_settings
from greenlab.core.train.compression.model_size import model_stats
from tests.training_helpers import train_steps

torchvision = pytest.importorskip("torchvision")


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def context(example, num_classes: int = 10) -> CompressionContext:
    return CompressionContext(
        evaluate=lambda model: 0.5,
        device=torch.device("cpu"),
        seed=0,
        example_input=example,
        num_classes=num_classes,
        log=lambda line: None,
    )


def test_unstructured_zeroes_half_and_holds_the_zeros():
    torch.manual_seed(0)
    model = tiny_cnn()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    before = model_stats(model, x)
    shapes = [tuple(p.shape) for p in model.parameters()]
    applied = prune.apply(model, {"amount": 0.5}, context(x))
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    zero = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    assert abs(zero / total - 0.5) < 0.01
    assert applied.report["weights_zeroed"] == zero
    assert [tuple(p.shape) for p in model.parameters()] == shapes
    assert not any(name.endswith(("_orig", "_mask")) for name, _ in model.named_parameters())  # permanent
    assert any("same work" in w for w in applied.warnings)
    assert applied.columns == {"prune_method": "l1-unstructured", "prune_amount": 0.5}
    after = model_stats(model, x)
    assert after["flops_step"] == before["flops_step"]
    assert after["params_nonzero"] < before["params_nonzero"]
    mask = [w == 0 for w in weights]
    losses = train_steps(model, x, y, applied.hooks)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(bool((w[m] == 0).all()) for w, m in zip(weights, mask))


def check_structured(model: nn.Module, x, num_classes: int = 10):
    y = torch.randint(0, num_classes, (x.shape[0],) if isinstance(x, torch.Tensor) else (2,))
    model.eval()
    with torch.no_grad():
        shape = tuple(model(x).shape)
    before = model_stats(model, x)
    applied = prune.apply(model, {"amount": 0.5, "method": "structured"}, context(x, num_classes))
    after = model_stats(model, x)
    assert after["flops_step"] < 0.6 * before["flops_step"]
    assert after["params_total"] < before["params_total"]
    assert applied.report["layers_pruned"] > 0 and applied.report["channels_removed"] > 0
    losses = train_steps(model, x, y, applied.hooks)
    assert all(torch.isfinite(torch.tensor(losses)))
    model.eval()
    with torch.no_grad():
        assert tuple(model(x).shape) == shape
    return applied


def test_structured_tiny_cnn():
    torch.manual_seed(0)
    model = tiny_cnn()
    applied = check_structured(model, torch.randn(4, 3, 16, 16))
    assert model[-1].out_features == 10
    assert model[0].out_channels == 8 and model[3].out_channels == 16
    assert applied.report["layers_pruned"] == 2  # the classifier keeps its outputs
    assert applied.hooks.after_step == []


def test_structured_keeps_batchnorm_statistics():
    torch.manual_seed(0)
    model = tiny_cnn()
    with torch.no_grad():
        model[1].running_mean.copy_(torch.arange(16.0))
    prune.prune_structured(model, 0.5, torch.randn(4, 3, 16, 16) + 7, 10)
    # The kept channels carry their own statistics, untouched by the traced forwards.
    assert set(model[1].running_mean.tolist()) <= set(range(16))
    assert int(model[1].num_batches_tracked) == 0


def test_structured_resnet18():
    torch.manual_seed(0)
    check_structured(torchvision.models.resnet18(weights=None, num_classes=10), torch.randn(2, 3, 32, 32))


def test_structured_vision_transformer_keeps_heads():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10
    )
    check_structured(model, torch.randn(2, 3, 32, 32))
    attention = model.encoder.layers[0].self_attention
    assert attention.embed_dim == 32 and attention.num_heads == 4 and attention.head_dim == 8
    assert model.hidden_dim == 32


def test_structured_hugging_face_bert():
    pytest.importorskip("transformers")
    from greenlab.core.train import zoo

    torch.manual_seed(0)
    model = zoo.build_model("hf-tiny-bert", 10, pretrained=False)
    batch = {"input_ids": torch.randint(1, 100, (2, 12)), "attention_mask": torch.ones(2, 12, dtype=torch.long)}
    check_structured(model, batch)
    attention = model.inner.bert.encoder.layer[0].attention.self
    assert attention.num_attention_heads == 2
    assert attention.attention_head_size * 2 == attention.query.out_features


def test_structured_refuses_shufflenet_with_the_reason():
    model = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10)
    with pytest.raises(ConfigError, match="shufflenet.*l1-unstructured"):
        prune.apply(model, {"method": "structured"}, context(torch.randn(2, 3, 32, 32)))


def test_structured_refuses_unknown_hugging_face_attention():
    class FusedAttention(nn.Module):  # a fused qkv projection, as GPT-2 has
        __module__ = "transformers.models.fake"

        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(8, 24)

        def forward(self, x):
            return self.qkv(x)[..., :8]

    model = nn.Sequential(FusedAttention(), nn.Flatten(), nn.Linear(32, 10))
    with pytest.raises(ConfigError, match="FusedAttention"):
        prune.apply(model, {"method": "structured"}, context(torch.randn(2, 4, 8)))


@pytest.mark.parametrize(
    "table, key, words",
    [
        ({"amount": 1.5}, "amount", "strictly between 0 and 1"),
        ({"amount": 0}, "amount", "strictly between 0 and 1"),
        ({"method": "l2"}, "method", "unknown method 'l2'"),
        ({"method": "structure"}, "method", "did you mean 'structured'"),
    ],
)
def test_bad_settings_name_the_key(table, key, words):
    with pytest.raises(ConfigError) as err:
        validate_settings("prune", table, "experiment 'demo'.prune")
    assert err.value.key == f"experiment 'demo'.prune.{key}"
    assert str(err.value).startswith(f"experiment 'demo'.prune.{key}: ")
    assert words in str(err.value) and "fix:" in str(err.value)


def test_unknown_setting_is_rejected():
    with pytest.raises(ConfigError, match="did you mean 'amount'"):
        validate_settings("prune", {"amout": 0.3}, "experiment 'demo'.prune")
