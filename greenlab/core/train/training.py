"""The fine-tuning loop and evaluation: optimizer, epochs, loss, top-1 accuracy and macro-F1.

It reports progress through callbacks and knows nothing of processes, meters or the store. Phase
callbacks fire after CUDA has been synchronised, so an energy window opened or closed there covers
exactly the GPU work of that phase. Each phase also times how long its loop waited for the next batch
(`data_wait_s`): a run whose loop mostly waits measures its input pipeline, not its model.

The arithmetic is set, not inherited: `set_float32_precision` fixes what float32 matrix products and
convolutions run in on CUDA (torch's default for convolutions is TF32, 10 mantissa bits), and
`bfloat16_native` says whether the device does bfloat16 in hardware or emulates it.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

from greenlab.core.train.child_events import EpochFinished  # one epoch record for training and the event stream
from greenlab.core.train.compression import TrainingHooks


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f'device \'{name}\' requested but CUDA is not available here; use device = "cpu" or "auto"')
    return device


# Mantissa bits of each arithmetic format a run's matrix products and convolutions may run in.
MANTISSA_BITS = {"float32": 23, "tf32": 10, "float16": 10, "bfloat16": 7}


def set_float32_precision(device: Any, precision: str) -> str | None:
    """Make float32 matrix products and convolutions on `device` run in `precision` ("ieee" or "tf32"), and
    return what is in force afterwards: "ieee", "tf32", or None where it cannot be told (MPS).

    Only CUDA has a choice here: torch 2.14 runs float32 convolutions in TF32 by default
    (`torch.backends.cudnn.conv.fp32_precision`), matrix products in IEEE, so both are set. The CPU's
    float32 stays IEEE (oneDNN's reduced-precision modes are never switched on by GreenLab).
    """
    import torch

    if device.type == "cuda":
        cudnn: Any = torch.backends.cudnn  # conv and rnn are attributes torch's stubs do not declare
        backends: tuple[Any, ...] = (
            torch.backends.cuda.matmul,
            getattr(cudnn, "conv", None),
            getattr(cudnn, "rnn", None),
        )
        if all(hasattr(b, "fp32_precision") for b in backends):
            for backend in backends:
                backend.fp32_precision = precision
            in_force = {b.fp32_precision for b in backends[:2]}
        else:  # an older torch: the two TF32 switches
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
            in_force = {"tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"}
        return "tf32" if "tf32" in in_force else "ieee"
    if device.type == "cpu":
        mkldnn = getattr(torch.backends, "mkldnn", None)
        setting = getattr(getattr(mkldnn, "matmul", None), "fp32_precision", "none")
        return "ieee" if setting in ("none", "ieee") else str(setting)
    return None


def bfloat16_native(device: Any) -> bool | None:
    """Whether `device` computes in bfloat16 natively: CUDA from compute capability 8.0 (Ampere); a CPU with
    avx512_bf16 or amx_bf16. False means torch's autocast emulates it without an error (a V100, a T4, most
    CPUs), so a bfloat16 run measures the emulation. None where it cannot be told."""
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, _minor = torch.cuda.get_device_capability(index)
        return major >= 8
    if device.type == "cpu":
        from greenlab.core.train.compression.stego import cpu_bfloat16

        found = cpu_bfloat16()
        return None if found is None else bool(found)
    return None


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def to_device(batch: Any, device: Any) -> Any:
    """Copy a batch to `device` without waiting: from pinned memory the copy overlaps the GPU's work."""
    if isinstance(batch, dict):
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)


class TimedBatches:
    """The batches of a loader, at most `limit` of them, with the seconds spent waiting for each
    (`waited_s`): the loader's work the loop did not overlap with its own. Never fetches a batch beyond
    the limit (an unused batch is data loading inside a measured window)."""

    def __init__(self, loader: Any, limit: int | None = None) -> None:
        self.loader, self.limit, self.waited_s = loader, limit, 0.0

    def __iter__(self) -> Any:
        iterator = iter(self.loader)
        index = 0
        while self.limit is None or index < self.limit:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            finally:
                self.waited_s += time.perf_counter() - started
            index += 1
            yield batch


def make_optimizer(name: str, params: Any, lr: float, momentum: float, weight_decay: float) -> Any:
    import torch

    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name}")


def _autocast(device: Any, dtype: Any) -> Any:
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def macro_f1(predictions: Any, labels: Any, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    import torch

    index = labels * num_classes + predictions
    confusion = torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    true_positive = confusion.diag().double()
    predicted = confusion.sum(0).double()
    actual = confusion.sum(1).double()
    denominator = predicted + actual
    present = denominator > 0
    f1 = torch.where(present, 2 * true_positive / denominator.clamp(min=1), torch.zeros_like(true_positive))
    return float(f1[present].mean()) if present.any() else 0.0


def evaluate(
    model: Any,
    loader: Any,
    device: Any,
    num_classes: int,
    *,
    autocast_dtype: Any = None,
    max_batches: int | None = None,
    timing: dict[str, float] | None = None,
) -> tuple[float, float, float]:
    """(top-1 accuracy, macro-F1, mean loss) on `loader`; `timing`, if given, gets `data_wait_s`."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    predictions, labels, loss_sum, count = [], [], 0.0, 0
    batches = TimedBatches(loader, max_batches)
    with torch.no_grad(), _autocast(device, autocast_dtype):
        for inputs, targets in batches:
            inputs, targets = to_device(inputs, device), targets.to(device, non_blocking=True)
            logits = model(inputs).float()
            loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
            count += len(targets)
            predictions.append(logits.argmax(1).cpu())
            labels.append(targets.cpu())
    model.train(was_training)
    if timing is not None:
        timing["data_wait_s"] = batches.waited_s
    if count == 0:
        return 0.0, 0.0, 0.0
    predicted, actual = torch.cat(predictions), torch.cat(labels)
    accuracy = float((predicted == actual).double().mean())
    return accuracy, macro_f1(predicted, actual, num_classes), loss_sum / count


def training_step(
    model: Any, opt: Any, scaler: Any, inputs: Any, targets: Any, hooks: TrainingHooks, device: Any
) -> Any:
    """One optimizer step under the compression's hooks; returns the loss tensor (not synchronised)."""
    import torch.nn.functional as F

    opt.zero_grad(set_to_none=True)
    with _autocast(device, hooks.autocast_dtype):
        loss = F.cross_entropy(model(inputs).float(), targets)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    for after_step in hooks.after_step:
        after_step(model)
    return loss


def train(
    model: Any,
    train_loader: Any,
    val_loader: Any,
    *,
    device: Any,
    num_classes: int,
    epochs: int,
    optimizer: str,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    hooks: TrainingHooks | None = None,
    max_train_batches: int | None = None,
    max_eval_batches: int | None = None,
    on_phase: Callable[[int, str, str], None] = lambda epoch, phase, edge: None,
    on_batch: Callable[[int, int, int, float], None] = lambda epoch, batch, total, loss: None,
    on_epoch: Callable[[EpochFinished], None] = lambda result: None,
) -> list[EpochFinished]:
    """Fine-tune `model` in place; returns one result per epoch."""
    import torch

    hooks = hooks or TrainingHooks()
    opt = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], lr, momentum, weight_decay)
    scaler = torch.amp.GradScaler(device.type) if hooks.grad_scaler else None
    total = len(train_loader) if max_train_batches is None else min(len(train_loader), max_train_batches)
    results = []
    for epoch in range(1, epochs + 1):
        model.train()
        synchronize(device)
        on_phase(epoch, "train", "begin")
        started = time.perf_counter()
        loss_sum, seen = 0.0, 0
        batches = TimedBatches(train_loader, total)
        for batch_index, (inputs, targets) in enumerate(batches):
            inputs, targets = to_device(inputs, device), targets.to(device, non_blocking=True)
            loss = training_step(model, opt, scaler, inputs, targets, hooks, device)
            # .item() synchronises; once per batch is the price of a live loss and stays well under 1 %.
            batch_loss = float(loss.item())
            if batch_loss != batch_loss:  # NaN: training diverged; stop rather than burn energy
                raise FloatingPointError(
                    f"training loss became NaN at epoch {epoch}, batch {batch_index + 1}; lower lr"
                )
            loss_sum += batch_loss * len(targets)
            seen += len(targets)
            on_batch(epoch, batch_index + 1, total, batch_loss)
        synchronize(device)
        train_s = time.perf_counter() - started
        on_phase(epoch, "train", "end")
        on_phase(epoch, "eval", "begin")
        started = time.perf_counter()
        timing: dict[str, float] = {}
        accuracy, f1, val_loss = evaluate(
            model,
            val_loader,
            device,
            num_classes,
            autocast_dtype=hooks.autocast_dtype,
            max_batches=max_eval_batches,
            timing=timing,
        )
        synchronize(device)
        eval_s = time.perf_counter() - started
        on_phase(epoch, "eval", "end")
        result = EpochFinished(
            epoch=epoch,
            train_loss=loss_sum / max(seen, 1),
            val_accuracy=accuracy,
            val_f1=f1,
            val_loss=val_loss,
            train_s=train_s,
            eval_s=eval_s,
            batches=total,
            train_data_wait_s=batches.waited_s,
            eval_data_wait_s=timing.get("data_wait_s"),
        )
        results.append(result)
        on_epoch(result)
    return results
