"""Techniques through the package contract: registry, chains such as prune+stego, and the boundary."""

from __future__ import annotations

import subprocess
import sys

import torch
from torch import nn

from greenlab.core.train import compression
from greenlab.core.train.compression import CompressionContext, parse_technique, validate_settings
from greenlab.core.train.compression.model_size import model_stats
from tests.training_helpers import train_steps


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


def context(example, evaluate=lambda model: 0.5) -> CompressionContext:
    return CompressionContext(
        evaluate=evaluate,
        device=torch.device("cpu"),
        seed=0,
        example_input=example,
        num_classes=10,
        log=lambda line: None,
    )


def chain(spec: str, tables: dict, model: nn.Module, example, evaluate=lambda model: 0.5):
    parts = parse_technique(spec, "experiment 'demo'.techniques")
    settings = {
        part: validate_settings(part, tables.get(part, {}), f"experiment 'demo'.{part}")
        for part in parts
        if part != compression.BASELINE
    }
    return compression.apply(parts, model, settings, context(example, evaluate))


def train(model, x, y, hooks, steps=2):
    train_steps(model, x, y, hooks, steps=steps, momentum=0.0)


def test_registry_knows_every_technique():
    assert compression.technique_names() == ["baseline", "stego", "prune", "lowrank"]
    assert set(compression.settings_tables()) == {"stego", "prune", "lowrank"}


def test_prune_then_stego_truncate_keeps_both():
    torch.manual_seed(0)
    model = tiny_cnn()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    applied = chain("prune+stego", {"stego": {"bits": 16, "mode": "truncate"}}, model, x)
    assert len(applied.hooks.after_step) == 2
    assert set(applied.report) == {"prune", "stego"}
    assert applied.columns["prune_method"] == "l1-unstructured" and applied.columns["capacity_bits"] == 16
    assert any(w.startswith("prune: ") for w in applied.warnings)
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    zeros = [w == 0 for w in weights]
    train(model, x, y, applied.hooks)
    assert all(bool((w[z] == 0).all()) for w, z in zip(weights, zeros))
    for param in model.parameters():
        assert int((param.detach().view(torch.int32) & 0xFFFF).count_nonzero()) == 0


def test_structured_prune_then_auto_stego_scans_the_pruned_model():
    torch.manual_seed(0)
    model = tiny_cnn()
    x = torch.randn(4, 3, 16, 16)
    seen = []

    def evaluate(candidate):
        seen.append(candidate[0].out_channels)
        return 0.9

    applied = chain("prune+stego", {"prune": {"method": "structured"}}, model, x, evaluate)
    assert set(seen) == {8}
    assert applied.columns["capacity_bits"] == 23 and len(applied.capacity_curve) == 24
    assert applied.hooks.autocast_dtype == torch.bfloat16


def test_lowrank_then_stego_dtype_trains_under_autocast():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = torch.randn(4, 3, 4, 4), torch.randint(0, 10, (4,))
    applied = chain("lowrank+stego", {"stego": {"bits": 18}}, model, x)
    assert applied.columns["lowrank_layers_factored"] == 1
    assert applied.hooks.autocast_dtype == torch.bfloat16
    train(model, x, y, applied.hooks)


def test_baseline_changes_nothing():
    model = tiny_cnn()
    x = torch.randn(2, 3, 8, 8)
    before = model_stats(model, x)
    applied = chain("baseline", {}, model, x)
    assert applied.model is model and applied.columns == {} and applied.warnings == []
    assert model_stats(model, x) == before


def test_unstructured_on_attention_models_trains():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=16, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    )
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 10, (2,))
    applied = chain("prune", {"prune": {"amount": 0.3}}, model, x)
    assert abs(applied.report["prune"]["sparsity"] - 0.3) < 0.01
    assert float((model.encoder.layers[0].self_attention.in_proj_weight == 0).float().mean()) > 0.05
    train(model, x, y, applied.hooks)


def test_core_compression_never_imports_textual():
    modules = ", ".join(f"greenlab.core.train.compression.{m}" for m in ("stego", "prune", "lowrank", "model_size"))
    code = (
        f"import sys, {modules}; "
        "sys.exit(1 if any(m == 'textual' or m.startswith('textual.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_prune_then_lowrank_drops_the_masks_of_replaced_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = torch.randn(4, 3, 4, 4), torch.randint(0, 10, (4,))
    applied = chain("prune+lowrank", {}, model, x)
    assert isinstance(model[1], nn.Sequential) and isinstance(model[3], nn.Linear)
    train(model, x, y, applied.hooks)
    assert list(applied.hooks.after_step[0].masks) == ["3.weight"]
    assert float((model[3].weight == 0).float().mean()) > 0
