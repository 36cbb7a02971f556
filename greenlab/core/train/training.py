"""The fine-tuning loop and evaluation: optimizer, epochs, loss, top-1 accuracy and macro-F1.

It reports progress through callbacks and knows nothing of processes, meters or the store. Phase
callbacks fire after CUDA has been synchronised, so an energy window opened or closed there covers
exactly the GPU work of that phase.
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


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def to_device(batch: Any, device: Any) -> Any:
    if isinstance(batch, dict):
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)


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
) -> tuple[float, float, float]:
    """(top-1 accuracy, macro-F1, mean loss) on `loader`."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    predictions, labels, loss_sum, count = [], [], 0.0, 0
    with torch.no_grad(), _autocast(device, autocast_dtype):
        for index, (inputs, targets) in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            inputs, targets = to_device(inputs, device), targets.to(device)
            logits = model(inputs).float()
            loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
            count += len(targets)
            predictions.append(logits.argmax(1).cpu())
            labels.append(targets.cpu())
    model.train(was_training)
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
        for batch_index, (inputs, targets) in enumerate(train_loader):
            if batch_index >= total:
                break
            inputs, targets = to_device(inputs, device), targets.to(device)
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
        accuracy, f1, val_loss = evaluate(
            model, val_loader, device, num_classes, autocast_dtype=hooks.autocast_dtype, max_batches=max_eval_batches
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
        )
        results.append(result)
        on_epoch(result)
    return results
