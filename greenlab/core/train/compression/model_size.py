"""Size and work of a model: parameter counts, stored bytes and the FLOPs of one training step.

The run supervisor calls `model_stats` before and after compression, so that a technique's effect on the work
done is a measured number rather than a claim. This module only observes: whatever it runs on the
model (a forward and a backward pass) is undone before it returns — weights, gradients, buffers such
as batch-norm running statistics, the train/eval mode and the random number generator all come back
as they were.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn


def output_logits(output: Any) -> torch.Tensor:
    """The logits tensor inside whatever a classifier's forward returned.

    torchvision's inception_v3 and googlenet return a named tuple in train mode (logits first), and
    unwrapped Hugging Face models return a ModelOutput with `.logits`.
    """
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")


def run_forward(model: nn.Module, example_input: Any) -> Any:
    """Call the model on an example batch the way the training loop does: `model(inputs)`, whatever
    `inputs` is (a tensor, or the dict of token tensors the zoo's Hugging Face wrapper takes)."""
    return model(example_input)


def _bytes_per_element(dtype_bytes: int | torch.dtype) -> int:
    if isinstance(dtype_bytes, torch.dtype):
        return torch.empty((), dtype=dtype_bytes).element_size()
    if isinstance(dtype_bytes, bool) or not isinstance(dtype_bytes, int) or dtype_bytes <= 0:
        raise ValueError(f"dtype_bytes must be a positive int or a torch.dtype, got {dtype_bytes!r}")
    return dtype_bytes


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, nonzero) parameter counts; shared parameters are counted once."""
    total = nonzero = 0
    for param in model.parameters():  # parameters() already yields a shared tensor once
        total += param.numel()
        nonzero += int(torch.count_nonzero(param.detach()))
    return total, nonzero


def model_bytes(model: nn.Module, dtype_bytes: int | torch.dtype | None = None) -> int:
    """Bytes the parameters take as stored (each at its own element size), or, given `dtype_bytes`, as
    they would take were every floating-point one stored at that width.

    Integer parameters (rare) keep their own width. Buffers are left out: they are not trained and,
    for the models we use (batch-norm statistics), a fraction of a percent of the total.
    """
    if dtype_bytes is None:
        return sum(p.numel() * p.element_size() for p in model.parameters())
    width = _bytes_per_element(dtype_bytes)
    return sum(p.numel() * (width if p.is_floating_point() else p.element_size()) for p in model.parameters())


def weights_dtype(model: nn.Module) -> str:
    """The floating-point format most parameters are stored in (e.g. 'float32', 'bfloat16')."""
    counts: dict[torch.dtype, int] = {}
    for param in model.parameters():
        if param.is_floating_point():
            counts[param.dtype] = counts.get(param.dtype, 0) + param.numel()
    if not counts:
        return "none"
    return str(max(counts, key=counts.__getitem__)).removeprefix("torch.")


def training_step_flops(model: nn.Module, example_input: Any, autocast_dtype: torch.dtype | None = None) -> int:
    """FLOPs of one forward and backward pass on `example_input`, in train mode, counted by torch.

    The loss is a plain sum of the logits: its own cost is negligible and it needs no labels, while
    every layer still does its full backward work. The optimizer update (a few element-wise operations
    per weight) is not counted; FlopCounterMode counts matrix products and convolutions only.
    """
    from torch.utils.flop_counter import FlopCounterMode

    params = list(model.parameters())
    saved_grads = [p.grad for p in params]
    saved_buffers = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    was_training = model.training
    devices = [p.device for p in params if p.device.type == "cuda"][:1]
    # fork_rng: dropout in the forward must not shift the random stream the training run will use.
    with torch.random.fork_rng(devices=[d.index or 0 for d in devices]):
        try:
            for p in params:
                p.grad = None
            model.train()
            counter = FlopCounterMode(display=False)
            # Under the run's autocast, as training runs it (weights stored narrower need it to run at all).
            autocast = (
                torch.autocast(device_type=params[0].device.type if params else "cpu", dtype=autocast_dtype)
                if autocast_dtype is not None
                else contextlib.nullcontext()
            )
            with counter, autocast:
                logits = output_logits(run_forward(model, example_input))
                loss = logits.float().sum()
                if loss.requires_grad:
                    loss.backward()
            return int(counter.get_total_flops())
        finally:
            model.train(was_training)
            for p, grad in zip(params, saved_grads):
                p.grad = grad
            with torch.no_grad():
                for name, buf in model.named_buffers():
                    if name in saved_buffers:
                        buf.copy_(saved_buffers[name])


def model_stats(
    model: nn.Module,
    example_input: Any,
    dtype_bytes: int | torch.dtype | None = None,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, int]:
    """Parameter counts, stored size and the FLOPs of one training step on `example_input`.

    Returns `params_total`, `params_nonzero` (unstructured pruning shows here and nowhere else),
    `model_bytes` (parameters as stored, or at `dtype_bytes` each when given: an int or a torch.dtype)
    and `flops_step` (forward plus backward on the example batch, under `autocast_dtype` when given).
    """
    total, nonzero = count_params(model)
    return {
        "params_total": total,
        "params_nonzero": nonzero,
        "model_bytes": model_bytes(model, dtype_bytes),
        "flops_step": training_step_flops(model, example_input, autocast_dtype),
    }
