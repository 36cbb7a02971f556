"""`greenlab --capacity MODEL`: fine-tune briefly, then scan the model's steganographic capacity.

Capacity is a property of a trained model (a random head scores chance whatever its low bits hold), so the
scan first fine-tunes for `epochs` on the dataset, then overwrites k = 0..23 low mantissa bits of every
float32 parameter and reports the largest k within the accuracy tolerance. In-process and unmeasured:
this answers "how many bits does this model need", not "how much energy".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from greenlab.core.errors import ConfigError
from greenlab.core.train import datasets, training, zoo


@dataclass
class CapacityResult:
    model: str
    dataset: str
    curve: list[tuple[int, float]]
    capacity_bits: int
    capacity_bytes: float
    params: int
    tolerance_pp: float
    trained_accuracy: float


def scan_model_capacity(
    model_name: str,
    *,
    dataset: str = "digits",
    image_size: int | None = None,
    batch_size: int = 64,
    tolerance_pp: float = 1.0,
    device: str = "auto",
    seed: int = 0,
    pretrained: bool = True,
    epochs: int = 1,
    lr: float = 0.01,
    max_eval_batches: int | None = None,
    max_train_batches: int | None = None,
    log: Callable[[str], None] = print,
) -> CapacityResult:
    from greenlab.core.train.compression import stego

    zoo.check_name(model_name, "--capacity")
    datasets.check_name(dataset, "--dataset")
    if tolerance_pp < 0:
        raise ConfigError(f"must be 0 or more percentage points, got {tolerance_pp}", key="--tolerance")
    if epochs < 0:
        raise ConfigError(f"must be 0 or more, got {epochs}", key="--epochs")
    training.seed_everything(seed)
    torch_device = training.resolve_device(device)
    spec = zoo.spec_for(model_name)
    size = image_size or datasets.default_image_size(dataset, spec.input_size, spec.min_input_size)
    data = datasets.load(
        dataset,
        image_size=size,
        batch_size=batch_size,
        seed=seed,
        val_fraction=0.2,
        tokenizer=zoo.tokenizer_for(model_name),
    )
    model: Any = zoo.build_model(model_name, data.num_classes, pretrained).to(torch_device)
    if epochs:
        log(f"fine-tuning {model_name} on {dataset} for {epochs} epoch(s) before the scan")
        training.train(
            model,
            data.train,
            data.val,
            device=torch_device,
            num_classes=data.num_classes,
            epochs=epochs,
            optimizer="sgd",
            lr=lr,
            max_train_batches=max_train_batches,
            max_eval_batches=max_eval_batches,
        )

    def evaluate(candidate: Any) -> float:
        return training.evaluate(candidate, data.val, torch_device, data.num_classes, max_batches=max_eval_batches)[0]

    curve, bits = stego.capacity_scan(model, evaluate, seed, tolerance_pp=tolerance_pp, log=log)
    return CapacityResult(
        model=model_name,
        dataset=dataset,
        curve=curve,
        capacity_bits=bits,
        capacity_bytes=stego.capacity_bytes(model, bits),
        params=sum(p.numel() for p in model.parameters()),
        tolerance_pp=tolerance_pp,
        trained_accuracy=curve[0][1] if curve else 0.0,
    )
