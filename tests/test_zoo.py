"""The model zoo: names, heads replaced for the dataset, offline failures that say what to do."""

from __future__ import annotations

import time

import pytest
import torch

from greenlab.core.errors import ConfigError, ModelUnavailableError
from greenlab.core.train import zoo
from tests.conftest import run_cli

NINE = [
    "densenet121",
    "resnet18",
    "resnet50",
    "inception_v3",
    "convnext_tiny",
    "resnet101",
    "alexnet",
    "vit_b_16",
    "vgg16",
]


def test_registry_holds_the_nine_models_and_tinycnn():
    names = zoo.model_names()
    for name in NINE + ["tinycnn"]:
        assert name in names
    params = [zoo.MODELS[n].params for n in NINE]
    assert min(params) < 9e6 and max(params) > 130e6  # 8M to 138M, as in the study
    assert zoo.MODELS["inception_v3"].input_size == 299
    assert zoo.MODELS["vit_b_16"].min_input_size == 224


def test_unknown_name_suggests_a_close_match():
    with pytest.raises(ConfigError, match="did you mean 'resnet50'"):
        zoo.check_name("resnet-50", "experiment 'x'.models")
    zoo.check_name("hf:distilbert-base-uncased", "x")  # hub ids are accepted by shape


@pytest.mark.parametrize("name,size", [("tinycnn", 32), ("resnet18", 32), ("alexnet", 63)])
def test_models_build_with_the_dataset_head(name, size):
    model = zoo.build_model(name, num_classes=7, pretrained=False)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)


def test_inception_trains_with_plain_logits():
    model = zoo.build_model("inception_v3", num_classes=4, pretrained=False)
    model.train()
    out = model(torch.randn(2, 3, 75, 75))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4)


def test_tiny_bert_offline():
    model = zoo.build_model("hf-tiny-bert", num_classes=2, pretrained=False)
    batch = {"input_ids": torch.randint(5, 100, (3, 16)), "attention_mask": torch.ones(3, 16, dtype=torch.long)}
    assert model(batch).shape == (3, 2)


def test_unfetchable_weights_fail_fast_with_the_offline_fix(monkeypatch):
    import torchvision.models

    def no_network(*args, **kwargs):
        if kwargs.get("weights"):
            raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
        raise AssertionError("only the pretrained path is expected here")

    monkeypatch.setattr(torchvision.models, "get_model", no_network)
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as caught:
        zoo.build_model("resnet18", num_classes=10, pretrained=True)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "pretrained = false" in message and "resnet18-" in message and "checkpoints" in message


def test_list_models_cli():
    result = run_cli("--list-models")
    assert result.returncode == 0
    for name in NINE + ["tinycnn"]:
        assert name in result.stdout
    assert "138.4M" in result.stdout and "299" in result.stdout


def test_tiny_bert_parameter_count_is_listed_truly():
    model = zoo.build_model("hf-tiny-bert", num_classes=2, pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == zoo.MODELS["hf-tiny-bert"].params


def test_tinycnn_parameter_count_is_listed_truly():
    model = zoo.build_model("tinycnn", num_classes=10, pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == zoo.MODELS["tinycnn"].params
