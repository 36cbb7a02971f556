"""Low-rank factorisation: replace a layer's weight by two thinner layers from its truncated SVD.

- nn.Linear (out x in) becomes Linear(in -> r, no bias) then Linear(r -> out, with the bias).
- nn.Conv2d with groups = 1 (out x in x k x k, seen as out x (in*k*k)) becomes a k x k convolution with r
  output channels (same stride, padding, dilation, no bias) then a 1 x 1 convolution r -> out with the bias.

The singular values are split as sqrt(S) between the two factors so both keep similar scales for
training. The rank is `rank_ratio` of the layer's full rank min(out, in*k*k), or, when `energy` is set,
the smallest r keeping that fraction of the sum of squared singular values. A layer is factored only
when the factors hold fewer weights (and so do less work): r*(out + in*k*k) < out*in*k*k; the others are
left alone and counted — many small layers do not qualify.

Layers producing `num_classes` outputs (the classifier head) are never factored: that head is usually
freshly initialised for the task, so its SVD is of noise, and it is a negligible share of the work.
Linear layers owned by nn.MultiheadAttention or torch's nn.Transformer*Layer are left alone too: their
forward reads the weights directly. `energy` defaults to None (TOML has no null: leave the key out).

Boundary: factorisation happens once, before training; nothing here evaluates the model.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn

from greenlab.core.train.compression import Applied, CompressionContext, TrainingHooks
from greenlab.core.train.compression.options import LOWRANK

NAME, DEFAULTS, validate = LOWRANK.name, LOWRANK.defaults, LOWRANK.validate


# Modules whose forward reads their Linear children's weights directly (the fused attention kernel, the
# transformer layers' inference fast path): a factored child would break them.
_READS_CHILD_WEIGHTS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
_FLOAT64_SVD_MAX = 4_000_000  # weights; resnet50's largest convolution has 2.4 million


def _svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD, in float64 for layers up to a few million weights so that at full rank the factors
    reproduce the layer to float32 precision; larger ones (vgg16's 25088 x 4096 head) in float32, whose
    error is far below what truncating the rank removes, at half the memory and time.

    Convolution weights are wide (out x in*k*k, often 1:9): a QR of the long side first leaves a small
    square SVD, several times faster on CPU than LAPACK's SVD of the wide matrix.
    """
    # On CUDA where the layer lives (fast, float64 supported); anywhere else on the CPU: MPS has no
    # float64. The factors are copied back to the layer's device when the new layers are filled.
    device = matrix.device if matrix.device.type == "cuda" else torch.device("cpu")
    matrix = matrix.detach().to(
        device=device, dtype=torch.float64 if matrix.numel() <= _FLOAT64_SVD_MAX else torch.float32
    )
    rows, cols = matrix.shape
    if cols > 2 * rows:  # W = R^T Q^T with W^T = Q R
        q, r = torch.linalg.qr(matrix.T)
        u, s, vh_small = torch.linalg.svd(r.T)
        return u, s, vh_small @ q.T
    if rows > 2 * cols:  # W = Q R
        q, r = torch.linalg.qr(matrix)
        u_small, s, vh = torch.linalg.svd(r)
        return q @ u_small, s, vh
    return torch.linalg.svd(matrix, full_matrices=False)


def choose_rank(singular_values: torch.Tensor, rank_ratio: float, energy: float | None) -> int:
    """The rank to keep: `energy` of the squared singular values when given, else `rank_ratio` of full."""
    full = singular_values.numel()
    if energy is None:
        return max(1, min(full, math.floor(rank_ratio * full)))
    squared = singular_values.pow(2)
    kept = torch.cumsum(squared, 0) / squared.sum().clamp_min(torch.finfo(squared.dtype).tiny)
    # The first rank reaching the target; the small slack absorbs rounding at energy = 1.
    return int(min(full, int(torch.searchsorted(kept, torch.tensor(energy - 1e-12, dtype=kept.dtype))) + 1))


def _factors(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    root = s[:rank].sqrt()
    first = root[:, None] * vh[:rank]  # rank x in
    second = u[:, :rank] * root[None, :]  # out x rank
    return first, second


def factor_linear(layer: nn.Linear, rank: int, svd: tuple | None = None) -> nn.Sequential:
    """Linear(in -> rank, no bias) then Linear(rank -> out, with the layer's bias)."""
    weight = layer.weight
    u, s, vh = svd if svd is not None else _svd(weight)
    first, second = _factors(u, s, vh, rank)
    kw = {"device": weight.device, "dtype": weight.dtype}
    down = nn.Linear(layer.in_features, rank, bias=False, **kw)
    up = nn.Linear(rank, layer.out_features, bias=layer.bias is not None, **kw)
    with torch.no_grad():
        down.weight.copy_(first)
        up.weight.copy_(second)
        if layer.bias is not None:
            up.bias.copy_(layer.bias)
    return nn.Sequential(down, up)


def factor_conv2d(layer: nn.Conv2d, rank: int, svd: tuple | None = None) -> nn.Sequential:
    """A k x k convolution in -> rank (no bias) then a 1 x 1 convolution rank -> out (with the bias)."""
    weight = layer.weight
    out_ch, in_ch, kh, kw_ = weight.shape
    u, s, vh = svd if svd is not None else _svd(weight.reshape(out_ch, in_ch * kh * kw_))
    first, second = _factors(u, s, vh, rank)
    spatial = nn.Conv2d(
        in_ch,
        rank,
        (kh, kw_),
        stride=cast(tuple[int, int], layer.stride),
        padding=cast(Any, layer.padding),
        dilation=cast(tuple[int, int], layer.dilation),
        bias=False,
        padding_mode=cast(Any, layer.padding_mode),
        device=weight.device,
        dtype=weight.dtype,
    )
    pointwise = nn.Conv2d(rank, out_ch, 1, bias=layer.bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        spatial.weight.copy_(first.reshape(rank, in_ch, kh, kw_))
        pointwise.weight.copy_(second.reshape(out_ch, rank, 1, 1))
        if layer.bias is not None and pointwise.bias is not None:
            pointwise.bias.copy_(layer.bias)
    return nn.Sequential(spatial, pointwise)


def _shape(layer: nn.Module) -> tuple[int, int] | None:
    """(out, in*k*k) of a layer this module can factor, else None."""
    if isinstance(layer, nn.Linear):
        return layer.out_features, layer.in_features
    if isinstance(layer, nn.Conv2d) and layer.groups == 1:
        kh, kw = layer.kernel_size
        return layer.out_channels, layer.in_channels * kh * kw
    return None


def factorize(
    model: nn.Module, rank_ratio: float = 0.5, energy: float | None = None, num_classes: int | None = None
) -> dict[str, Any]:
    """Factor every qualifying Linear and groups-1 Conv2d of `model` in place; returns the facts."""
    candidates, untouchable = [], 0
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            shape = _shape(child)
            if shape is not None and isinstance(parent, _READS_CHILD_WEIGHTS):
                untouchable += 1
            elif shape is not None:
                candidates.append(
                    (f"{parent_name}.{child_name}" if parent_name else child_name, parent, child_name, child, shape)
                )
    factored, skipped, head = [], [], []
    params_before = params_after = 0
    for name, parent, child_name, layer, (out_dim, in_dim) in candidates:
        if num_classes is not None and out_dim == num_classes:
            head.append(name)
            continue
        full = min(out_dim, in_dim)
        if energy is None and max(1, math.floor(rank_ratio * full)) * (out_dim + in_dim) >= out_dim * in_dim:
            skipped.append(name)  # decided without paying for an SVD
            continue
        svd = _svd(layer.weight.reshape(out_dim, in_dim))
        rank = choose_rank(svd[1], rank_ratio, energy)
        if rank * (out_dim + in_dim) >= out_dim * in_dim:
            skipped.append(name)
            continue
        build = factor_linear if isinstance(layer, nn.Linear) else factor_conv2d
        replacement = build(layer, rank, svd)
        setattr(parent, child_name, replacement)
        params_before += out_dim * in_dim
        params_after += rank * (out_dim + in_dim)
        squared = svd[1].pow(2)
        kept = float(squared[:rank].sum() / squared.sum()) if float(squared.sum()) > 0 else 1.0
        factored.append({"layer": name, "shape": [out_dim, in_dim], "rank": rank, "energy_kept": round(kept, 4)})
    return {
        "layers_factored": len(factored),
        "layers_skipped": len(skipped),
        "classifier_layers_kept": head,
        "layers_read_directly": untouchable,
        "weights_before": params_before,  # of the factored layers, biases aside
        "weights_after": params_after,
        "factored": factored,
    }


def apply(model: nn.Module, settings: dict[str, Any], ctx: CompressionContext) -> Applied:
    settings = validate({**DEFAULTS, **settings}, NAME)
    facts = factorize(model, settings["rank_ratio"], settings["energy"], ctx.num_classes)
    warnings = []
    if facts["layers_factored"] == 0:
        how = (
            f"energy {settings['energy']}" if settings["energy"] is not None else f"rank_ratio {settings['rank_ratio']}"
        )
        reasons = [
            f"{facts['layers_skipped']} would hold as many weights factored as whole",
            f"{facts['layers_read_directly']} belong to attention or transformer layers that read "
            f"their weights directly",
            f"{len(facts['classifier_layers_kept'])} produce the class scores",
        ]
        warnings.append(f"no layer qualified for factorisation at {how} ({'; '.join(reasons)}): the model is unchanged")
    columns = {"lowrank_layers_factored": facts["layers_factored"], "lowrank_layers_skipped": facts["layers_skipped"]}
    report = {**settings, **facts}
    return Applied(model=model, hooks=TrainingHooks(), report=report, warnings=warnings, columns=columns)
