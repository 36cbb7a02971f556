"""Pruning: zero the smallest weights (`l1-unstructured`) or remove whole channels (`structured`).

- `l1-unstructured`, what the study most likely did: global L1 magnitude pruning
  (torch.nn.utils.prune.global_unstructured) over the weights of every convolution and linear layer,
  the final classifier and attention projections included, ranked together so that each layer loses
  only what is small against the whole model. Every matrix keeps its shape, so dense kernels do the same
  work: a model with half its weights zero costs as much to train. The zeros are held through training
  by an after-step hook (without it fine-tuning regrows them and the model is no longer pruned).
- `structured`: torch-pruning's dependency graph removes a fraction `amount` of the output channels
  (or features) of every layer together with everything coupled to them — batch norms, the next layer's
  inputs, residual and concatenation partners — so the matrices really shrink. The layers producing the
  `num_classes` outputs are left whole so the classifier's output keeps its size. Attention keeps its
  head count: nn.MultiheadAttention (torchvision's ViT) loses embedding channels in multiples of it, and
  Hugging Face attention with separate query/key/value layers loses the same dimensions in every head.
  Refused with a ConfigError naming the reason: swin and shufflenet (torch-pruning cannot follow their
  channel reshuffles) and Hugging Face attention of any other shape (a fused qkv projection).

Boundary: pruning happens once, before training; nothing here reads data or evaluates the model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from greenlab.core.errors import ConfigError
from greenlab.core.train.compression import Applied, CompressionContext, TrainingHooks
from greenlab.core.train.compression.model_size import output_logits, run_forward
from greenlab.core.train.compression.options import PRUNE, PRUNE_METHODS

NAME, DEFAULTS, validate = PRUNE.name, PRUNE.defaults, PRUNE.validate
METHODS = PRUNE_METHODS

# Architectures torch-pruning cannot rewrite consistently, refused up front with the reason instead of
# failing mid-surgery (its own torchvision test lists swin and shufflenet as failures).
_REFUSED = {
    "SwinTransformer": "swin's shifted-window attention reshapes channels in ways the dependency graph does not follow",
    "ShuffleNetV2": "shufflenet's channel shuffle permutes channels in ways the dependency graph does not follow",
}


# -- l1-unstructured -------------------------------------------------------------------------------


def unstructured_targets(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(qualified parameter name, module, attribute) of every weight global pruning ranks."""
    targets: list[tuple[str, nn.Module, str]] = []
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            targets.append((f"{prefix}weight", module, "weight"))
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            # Its out_proj is a Linear and caught above; the packed q/k/v projection is a bare Parameter.
            targets.append((f"{prefix}in_proj_weight", module, "in_proj_weight"))
    return targets


class HoldZeros:
    """After-step hook that keeps pruned weights at zero. It holds torch-pruning's own float mask per weight
    (1 kept, 0 pruned; the same memory torch.nn.utils.prune's reparametrisation would keep) because
    multiplying by it is an order of magnitude faster on CPU than masked_fill_ with a boolean mask. Masks
    are keyed by parameter name so the hook finds them in the model it is given."""

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = masks

    def __call__(self, model: nn.Module) -> None:
        with torch.no_grad():
            for name, keep in list(self.masks.items()):
                try:
                    param = model.get_parameter(name)
                except AttributeError:
                    param = None
                if param is None or param.shape != keep.shape:
                    # A later technique replaced the layer (prune+lowrank): its zeros are gone anyway.
                    del self.masks[name]
                    continue
                if keep.device != param.device or keep.dtype != param.dtype:
                    self.masks[name] = keep = keep.to(param.device, param.dtype)
                param.mul_(keep)

    def __repr__(self) -> str:
        return f"HoldZeros({len(self.masks)} weights)"


def prune_unstructured(model: nn.Module, amount: float) -> tuple[dict[str, Any], HoldZeros]:
    """Global L1 pruning of `amount` of all conv/linear weights, made permanent; returns facts and the
    hook that keeps the zeros through training."""
    from torch.nn.utils import prune as torch_prune

    targets = unstructured_targets(model)
    if not targets:
        return {"layers_pruned": 0, "weights_prunable": 0, "weights_zeroed": 0}, HoldZeros({})
    orders = {module: list(module._parameters) for _, module, _ in targets}
    torch_prune.global_unstructured(
        [(module, attr) for _, module, attr in targets], pruning_method=torch_prune.L1Unstructured, amount=amount
    )
    masks = {}
    for name, module, attr in targets:
        masks[name] = getattr(module, f"{attr}_mask").detach()
        torch_prune.remove(module, attr)  # fold the mask in: a plain Parameter again, no forward hook
    for module, order in orders.items():
        # Pruning re-registers each weight last; restore the order so parameters() reads as before.
        for key in order:
            module._parameters[key] = module._parameters.pop(key)
    total = sum(m.numel() for m in masks.values())
    zeroed = sum(int((m == 0).sum()) for m in masks.values())
    facts = {
        "layers_pruned": len(targets),
        "weights_prunable": total,
        "weights_zeroed": zeroed,
        "sparsity": zeroed / total if total else 0.0,
        "sparsest_layers": sorted(
            ((name, round(float((m == 0).float().mean()), 4)) for name, m in masks.items()), key=lambda item: -item[1]
        )[:5],
    }
    return facts, HoldZeros(masks)


# -- structured ------------------------------------------------------------------------------------

# Separate q/k/v projections of Hugging Face attention modules, and the attributes holding the head
# count and head size that their forward reshapes with.
_QKV_NAMES = (("query", "key", "value"), ("q_lin", "k_lin", "v_lin"), ("q_proj", "k_proj", "v_proj"))
_HEAD_COUNT_ATTRS = ("num_attention_heads", "n_heads", "num_heads")
_HEAD_SIZE_ATTRS = ("attention_head_size", "head_dim")


def _first_attr(module: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if isinstance(getattr(module, name, None), int)), None)


def _hf_attention(model: nn.Module) -> tuple[list[tuple[nn.Module, list[nn.Linear], str, str]], list[str]]:
    """Attention modules whose q/k/v layers torch-pruning can shrink head by head, and the names of
    attention classes it cannot (a fused projection, or head attributes under names we do not know)."""
    known, unknown = [], []
    for module in model.modules():
        projections = next(
            (
                [getattr(module, n) for n in names]
                for names in _QKV_NAMES
                if all(isinstance(getattr(module, n, None), nn.Linear) for n in names)
            ),
            None,
        )
        count, size = _first_attr(module, _HEAD_COUNT_ATTRS), _first_attr(module, _HEAD_SIZE_ATTRS)
        if projections and count and size:
            known.append((module, projections, count, size))
        elif "Attention" in type(module).__name__ and any(
            not isinstance(child, nn.Dropout) and list(child.parameters(recurse=False)) for child in module.children()
        ):
            unknown.append(type(module).__name__)
    return known, sorted(set(unknown))


def _refusal(model: nn.Module) -> str | None:
    """Why structured pruning refuses this model, or None."""
    if type(model).__name__ in _REFUSED:
        return _REFUSED[type(model).__name__]
    if any(type(m).__module__.startswith("transformers.") for m in model.modules()):
        _, unknown = _hf_attention(model)
        if unknown:
            return (
                f"its attention ({', '.join(unknown)}) has no separate query/key/value layers with known "
                f"head attributes, so heads cannot be kept consistent"
            )
    return None


def _fix_attributes(model: nn.Module, attention: list[tuple[nn.Module, list[nn.Linear], str, str]]) -> None:
    """Python attributes read in forward that torch-pruning does not know to update."""
    for module, (query, _, _), count_attr, size_attr in attention:
        # Heads are kept and each loses the same dimensions, so the head size shrinks.
        head_size = query.out_features // getattr(module, count_attr)
        setattr(module, size_attr, head_size)
        if isinstance(getattr(module, "all_head_size", None), int):
            setattr(module, "all_head_size", query.out_features)  # noqa: B010 - not every module type has it
        if isinstance(getattr(module, "scaling", None), float):
            setattr(module, "scaling", head_size**-0.5)  # noqa: B010 - not every module type has it
    try:
        from torchvision.models.vision_transformer import VisionTransformer
    except ModuleNotFoundError:
        return
    if isinstance(model, VisionTransformer):
        model.hidden_dim = model.conv_proj.out_channels  # forward reshapes with it


@contextmanager
def _statistics_frozen(model: nn.Module) -> Iterator[None]:
    """Train-mode forwards that leave batch-norm running statistics (and the random stream) untouched.

    Tracing runs in train mode so that branches only taken in training (inception's auxiliary head) are
    in the graph and get their inputs pruned too. A momentum of 0 makes each running-statistics update
    a no-op while keeping the buffers in place for torch-pruning to shrink.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in norms]
    was_training = model.training
    cuda = [p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=cuda):
        try:
            for m in norms:
                m.momentum = 0.0
            model.train()
            yield
        finally:
            for m, (momentum, tracked) in zip(norms, saved):
                m.momentum = momentum
                if tracked is not None and m.num_batches_tracked is not None:
                    m.num_batches_tracked.copy_(tracked)
            model.train(was_training)


def _train_mode_forward(model: nn.Module, example_input: Any) -> Any:
    # torch-pruning switches the model to eval before tracing; train-only branches must be traced too.
    model.train()
    return run_forward(model, example_input)


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """Conv and linear layers producing `num_classes` outputs: kept whole so the output size stays.

    Matching by size rather than by name covers `fc`, `classifier[6]`, `heads.head`, squeezenet's final
    1x1 convolution and inception's auxiliary head alike; a hidden layer that happens to have the same
    width is merely left unpruned.
    """
    layers: list[nn.Module] = []
    for module in model.modules():
        if (
            isinstance(module, nn.Linear)
            and module.out_features == num_classes
            or isinstance(module, nn.modules.conv._ConvNd)
            and module.out_channels == num_classes
        ):
            layers.append(module)
    return layers


def _widths(model: nn.Module) -> dict[str, int]:
    """Each layer's output width (channels or features), by qualified name."""
    return {name: width for name, m in model.named_modules() if (width := _out_width(m)) is not None}


def _out_width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    return None


def prune_structured(model: nn.Module, amount: float, example_input: Any, num_classes: int) -> dict[str, Any]:
    """Remove `amount` of the channels of every prunable group with torch-pruning, in place."""
    why = _refusal(model)
    if why:
        raise ConfigError(
            f"structured pruning does not support {type(model).__name__}: {why}; fix: use "
            f'method = "l1-unstructured" for this model'
        )
    try:
        import torch_pruning as tp
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "structured pruning needs the torch-pruning package; fix: pip install 'torch-pruning>=1.4'"
        ) from exc

    widths_before = _widths(model)
    params_before = sum(p.numel() for p in model.parameters())
    ignored = classifier_layers(model, num_classes)
    # nn.MultiheadAttention is pruned along its embedding as one block (torch-pruning's num_heads option
    # is for separate q/k/v layers); heads keep equal widths when channels go in multiples of the head count.
    heads = [m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    round_to = math.lcm(*heads) if heads else None
    attention, _ = _hf_attention(model)
    num_heads = {layer: getattr(module, count) for module, layers, count, _ in attention for layer in layers}
    with _statistics_frozen(model):
        with torch.no_grad():
            shape_before = tuple(output_logits(run_forward(model, example_input)).shape)
        try:
            with warnings.catch_warnings():
                # torch-pruning announces the bare parameters (ViT's class token) it prunes on their
                # last dimension, which is the right one for every model we use.
                warnings.simplefilter("ignore", UserWarning)
                pruner = tp.pruner.BasePruner(
                    model,
                    example_input,
                    importance=tp.importance.GroupMagnitudeImportance(p=2),
                    pruning_ratio=amount,
                    ignored_layers=ignored,
                    round_to=round_to,
                    num_heads=num_heads,
                    prune_head_dims=True,
                    forward_fn=_train_mode_forward,
                )
                pruner.step()
            _fix_attributes(model, attention)
            model.train()
            with torch.no_grad():
                shape_after = tuple(output_logits(run_forward(model, example_input)).shape)
        except Exception as exc:  # torch-pruning fails with assertions and shape errors deep inside
            raise ConfigError(
                f"structured pruning failed on {type(model).__name__}: {type(exc).__name__}: {exc}; fix: "
                f'use method = "l1-unstructured" for this model'
            ) from exc
    if shape_after != shape_before:
        raise ConfigError(
            f"structured pruning changed the output of {type(model).__name__} from "
            f'{shape_before} to {shape_after}; fix: use method = "l1-unstructured" for this model'
        )

    widths_after = _widths(model)
    shrunk = {
        name: (widths_before[name], w)
        for name, w in widths_after.items()
        if name in widths_before and w < widths_before[name]
    }
    params_after = sum(p.numel() for p in model.parameters())
    return {
        "layers_pruned": len(shrunk),
        "channels_removed": sum(before - after for before, after in shrunk.values()),
        "params_before": params_before,
        "params_after": params_after,
        "params_removed_fraction": 1 - params_after / params_before if params_before else 0.0,
        "ignored_layers": len(ignored),
    }


# -- contract --------------------------------------------------------------------------------------


def apply(model: nn.Module, settings: dict[str, Any], ctx: CompressionContext) -> Applied:
    settings = validate({**DEFAULTS, **settings}, NAME)
    amount, method = settings["amount"], settings["method"]
    notes: list[str] = []
    hooks = TrainingHooks()
    if method == "l1-unstructured":
        facts, hold = prune_unstructured(model, amount)
        if facts["weights_zeroed"] == 0:
            notes.append("no convolution or linear weight was found to prune: the model is unchanged")
        else:
            hooks = TrainingHooks(after_step=[hold])
            notes.append(
                "unstructured pruning zeroes weights but keeps every matrix its size: dense "
                "kernels still do the same work, so FLOPs and time are not expected to drop"
            )
    else:
        ctx.log(f"prune: removing {amount:.0%} of the channels of every layer group (torch-pruning)")
        facts = prune_structured(model, amount, ctx.example_input, ctx.num_classes)
        if facts["layers_pruned"] == 0:
            notes.append("no channel could be removed: the model is unchanged")
    columns = {"prune_method": method, "prune_amount": amount}
    return Applied(model=model, hooks=hooks, report={**columns, **facts}, warnings=notes, columns=columns)
