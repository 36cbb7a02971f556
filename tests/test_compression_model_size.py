"""model_stats: counts, stored bytes and training-step FLOPs, without leaving a trace on the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from greenlab.core.train.compression.model_size import model_stats, output_logits


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def test_counts_and_bytes():
    torch.manual_seed(0)
    model = tiny_cnn()
    with torch.no_grad():
        model[0].weight[:4] = 0
    x = torch.randn(4, 3, 32, 32)
    stats = model_stats(model, x)
    total = sum(p.numel() for p in model.parameters())
    assert stats["params_total"] == total
    assert stats["params_nonzero"] == total - 4 * 27 - 16  # batch-norm biases start at zero
    assert stats["model_bytes"] == total * 4
    assert model_stats(model, x, torch.bfloat16)["model_bytes"] == total * 2
    assert model_stats(model, x, 2)["model_bytes"] == total * 2


def test_flops_cover_forward_and_backward():
    model = tiny_cnn()
    x = torch.randn(4, 3, 32, 32)
    conv1 = 2 * 4 * 32 * 32 * 16 * 27
    conv2 = 2 * 4 * 32 * 32 * 32 * 16 * 9
    forward = conv1 + conv2 + 2 * 4 * 32 * 10
    flops = model_stats(model, x)["flops_step"]
    # Backward: weight gradients of every layer, input gradients of all but the first.
    assert flops == forward + conv1 + 2 * conv2 + 2 * (2 * 4 * 32 * 10)


def test_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, 32, 32) * 5 + 3
    rng = torch.get_rng_state()
    model_stats(model, x)
    assert not model.training
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert model[3].weight.grad is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key  # batch-norm statistics included
    assert torch.equal(torch.get_rng_state(), rng)


def test_named_tuple_output_in_train_mode():
    from collections import namedtuple

    Outputs = namedtuple("Outputs", "logits aux_logits")  # what inception_v3 and googlenet return

    class WithAux(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.aux = tiny_cnn(), nn.Linear(3, 10)

        def forward(self, x):
            logits = self.body(x)
            return Outputs(logits, self.aux(x.mean((2, 3)))) if self.training else logits

    stats = model_stats(WithAux(), torch.randn(2, 3, 8, 8))
    assert stats["flops_step"] > 0


def test_output_logits_shapes():
    logits = torch.zeros(2, 3)
    assert output_logits(logits) is logits
    assert output_logits((logits, None)) is logits
    assert output_logits({"logits": logits}) is logits
    with pytest.raises(TypeError):
        output_logits("nope")
