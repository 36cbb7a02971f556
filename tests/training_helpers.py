"""Drive the real training loop (greenlab.core.train.training.train) from compression tests, never a copy of it:
a hook dropped from training.py must fail these tests."""

from __future__ import annotations

import torch

from greenlab.core.train import training
from greenlab.core.train.compression import TrainingHooks


def train_steps(
    model, inputs, labels, hooks: TrainingHooks | None = None, steps: int = 2, lr: float = 0.05, momentum: float = 0.9
) -> list[float]:
    """`steps` optimizer steps on one batch through training.train; returns each step's loss."""
    batches = [(inputs, labels)] * steps
    losses: list[float] = []
    training.train(
        model,
        batches,
        [(inputs, labels)],
        device=torch.device("cpu"),
        num_classes=10,
        epochs=1,
        optimizer="sgd",
        lr=lr,
        momentum=momentum,
        hooks=hooks,
        on_batch=lambda epoch, batch, total, loss: losses.append(loss),
    )
    assert all(torch.isfinite(torch.tensor(losses)))
    return losses
