"""The model zoo: names, facts and builders for the nine torchvision models, `hf:` models and tinycnn.

Builders return a model whose classifier head fits the dataset's classes. Loading pretrained weights
that cannot be fetched raises ModelUnavailableError with the offline fix, fast (no long network hang).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenlab.core.errors import ConfigError, ModelUnavailableError, suggest

HF_PREFIX = "hf:"
# A hub fetch that cannot connect must fail in seconds, not after the default minutes-long retries.
_FETCH_TIMEOUT_S = 15


@dataclass(frozen=True)
class ModelSpec:
    name: str
    params: int  # with the 1000-class ImageNet head (tinycnn: with 10 classes)
    input_size: int  # the resolution it was trained at
    min_input_size: int  # the smallest input its architecture accepts
    source: str  # torchvision | builtin | transformers
    modality: str = "image"  # image | text


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("tinycnn", 26_378, 32, 8, "builtin"),
        ModelSpec("densenet121", 7_978_856, 224, 32, "torchvision"),
        ModelSpec("resnet18", 11_689_512, 224, 32, "torchvision"),
        ModelSpec("resnet50", 25_557_032, 224, 32, "torchvision"),
        ModelSpec("inception_v3", 27_161_264, 299, 75, "torchvision"),
        ModelSpec("convnext_tiny", 28_589_128, 224, 32, "torchvision"),
        ModelSpec("resnet101", 44_549_160, 224, 32, "torchvision"),
        ModelSpec("alexnet", 61_100_840, 224, 63, "torchvision"),
        ModelSpec("vit_b_16", 86_567_656, 224, 224, "torchvision"),
        ModelSpec("vgg16", 138_357_544, 224, 32, "torchvision"),
        # A random-init BERT small enough for tests and offline demos of the transformers family.
        ModelSpec("hf-tiny-bert", 24_482, 64, 8, "builtin", "text"),  # with 2 classes
    )
}


def model_names() -> list[str]:
    return list(MODELS)


def spec_for(name: str) -> ModelSpec:
    """The spec of a registered name, or a generic one for `hf:<id>` models."""
    if name in MODELS:
        return MODELS[name]
    if name.startswith(HF_PREFIX):
        return ModelSpec(name, 0, 128, 8, "transformers", "text")
    raise ConfigError(f"unknown model '{name}'{suggest(name, model_names())}")


def check_name(name: str, key_path: str) -> None:
    if name in MODELS:
        return
    if name.startswith(HF_PREFIX) and len(name) > len(HF_PREFIX):
        return
    raise ConfigError(
        f"unknown model '{name}'{suggest(name, model_names())} "
        f"(known: {', '.join(model_names())}, or hf:<hub id or local path>; "
        "see greenlab --list-models)",
        key=key_path,
    )


def build_model(name: str, num_classes: int, pretrained: bool) -> Any:
    """A model ready to fine-tune on `num_classes` classes."""
    spec = spec_for(name)
    if name == "tinycnn":
        return TinyCNN(num_classes)
    if name == "hf-tiny-bert":
        return _tiny_bert(num_classes)
    if spec.source == "transformers":
        return _hf_model(name[len(HF_PREFIX) :], num_classes, pretrained)
    return _torchvision_model(name, num_classes, pretrained)


def TinyCNN(num_classes: int) -> Any:  # noqa: N802 - reads as the class it builds
    """A 3-conv network for quick runs and tests: seconds per epoch on a laptop CPU."""
    from torch import nn

    # A 2x2 pooled grid, not a global average: where a stroke is matters for digits, and keeping it lets
    # tinycnn learn in a few dozen steps.
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(256, num_classes),
    )


def _weights_file_hint(name: str) -> str:
    try:
        from torchvision.models import get_model_weights

        url = get_model_weights(name).DEFAULT.url
        import torch.hub

        checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
        return f"put {url.rsplit('/', 1)[-1]} (from {url}) in {checkpoints}"
    except Exception:  # noqa: BLE001 - the hint is best effort; the error itself is what matters
        return "put the weights file in $TORCH_HOME/hub/checkpoints"


def _torchvision_model(name: str, num_classes: int, pretrained: bool) -> Any:
    import socket

    from torch import nn
    from torchvision.models import get_model

    kwargs: dict[str, Any] = {}
    if name == "inception_v3":
        # The pretrained weights include the auxiliary head; we build with it, then drop it so training
        # returns plain logits like every other model.
        kwargs = {"aux_logits": True, "init_weights": not pretrained}
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_FETCH_TIMEOUT_S)
    try:
        model = get_model(name, weights="DEFAULT" if pretrained else None, **kwargs)
    except Exception as exc:
        if not pretrained:
            raise
        raise ModelUnavailableError(
            f"could not fetch pretrained weights for '{name}' ({type(exc).__name__}: {exc}). "
            f"Run offline from random init with pretrained = false in experiments.toml (--no-pretrained "
            f"for --capacity), or "
            f"{_weights_file_hint(name)}"
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    if name == "inception_v3":
        model.aux_logits = False
        model.AuxLogits = None
    _replace_last_linear(model, num_classes, nn)
    return model


def _replace_last_linear(model: Any, num_classes: int, nn: Any) -> None:
    """Swap the last Linear layer (the ImageNet head in every torchvision classifier) for a fresh one."""
    last_name = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_name = module_name
    if last_name is None:
        raise ValueError("model has no Linear head to replace")
    parent_name, _, attr = last_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))


def _wrap_hf(model: Any) -> Any:
    from torch import nn

    class HFClassifier(nn.Module):
        """A transformers sequence classifier that returns logits, taking a dict of token tensors."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, batch: dict[str, Any]) -> Any:
            return self.inner(**batch).logits

    return HFClassifier(model)


def _tiny_bert(num_classes: int) -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_classes,  # type: ignore[call-arg]  # a PretrainedConfig keyword the stubs omit
    )
    return _wrap_hf(BertForSequenceClassification(config))


def _hf_model(model_id: str, num_classes: int, pretrained: bool) -> Any:
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(_FETCH_TIMEOUT_S))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(_FETCH_TIMEOUT_S))
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        if pretrained:
            model = AutoModelForSequenceClassification.from_pretrained(
                model_id, num_labels=num_classes, ignore_mismatched_sizes=True
            )
        else:
            config = AutoConfig.from_pretrained(model_id, num_labels=num_classes)
            model = AutoModelForSequenceClassification.from_config(config)
    except Exception as exc:  # noqa: BLE001 - any failure of the library becomes the user's one-line error
        raise ModelUnavailableError(
            f"could not load Hugging Face model '{model_id}' ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Check the id, or download it once with "
            f"internet (huggingface-cli download {model_id}) and pass its local path as "
            f"hf:/path/to/model; hf-tiny-bert runs fully offline"
        ) from None
    return _wrap_hf(model)


def tokenizer_for(name: str) -> Any:
    """The tokenizer of an `hf:` model, or None for built-in text models (they take token ids)."""
    if not name.startswith(HF_PREFIX):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name[len(HF_PREFIX) :])
    except Exception as exc:  # noqa: BLE001 - any failure of the library becomes the user's one-line error
        raise ModelUnavailableError(f"could not load the tokenizer of '{name}': {exc}") from None


def describe_models() -> list[dict[str, Any]]:
    """Rows for `greenlab --list-models`."""
    rows = []
    for spec in MODELS.values():
        rows.append(
            {
                "name": spec.name,
                "params": spec.params,
                "input": spec.input_size,
                "modality": spec.modality,
                "source": spec.source,
            }
        )
    rows.append(
        {
            "name": "hf:<id or path>",
            "params": None,
            "input": 128,
            "modality": "text",
            "source": "transformers (Hugging Face hub or local folder)",
        }
    )
    return rows
