"""Steganographic capacity reduction: measure how many low mantissa bits a model does not need, and
train without them.

Capacity (after Stamp's group, arXiv 2306.17189): overwrite the k lowest of the 23 mantissa bits of every
float32 parameter with random bits, as a hidden message would, and evaluate; the capacity is the largest
k the model tolerates. Reduction then trains keeping only 23 - k mantissa bits, in one of three modes:

- `mode = "dtype"`: the arithmetic narrows. Matrix products and convolutions run (through autocast) in the
  narrowest native format that keeps the bits (bfloat16 keeps 7 mantissa bits, float16 keeps 10), which is
  where energy can really drop; the weights and the optimizer state stay float32, so the stored model does
  not shrink.
- `mode = "stored"`: the weights themselves are bfloat16 (pure bfloat16 training: parameters, gradients and
  optimizer state), and the arithmetic with them. The model really is half the bytes.
- `mode = "truncate"`: float32 throughout, with the low bits rounded away (to nearest, ties to even) after
  every optimizer step: the same arithmetic width, which separates "fewer bits" from "narrower arithmetic".
  Rounding, not truncation toward zero: chopping the bits would cost every weight a quantum per step in
  the direction of zero, a strong hidden weight decay; rounding leaves zero-mean noise where it was.

Boundary: this module touches float32 parameters only (not buffers such as batch-norm statistics, and
not parameters already stored narrower); it changes the training loop only through TrainingHooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from greenlab.core.train.compression import Applied, CompressionContext, TrainingHooks
from greenlab.core.train.compression.options import MANTISSA_BITS, STEGO, STEGO_MODES

NAME, DEFAULTS, validate = STEGO.name, STEGO.defaults, STEGO.validate
MODES = STEGO_MODES
# Mantissa bits each native training format keeps, narrowest first.
NATIVE_FORMATS = (("bfloat16", torch.bfloat16, 7), ("float16", torch.float16, 10))
# `mode = "stored"` keeps the weights in bfloat16: float16 weights would need loss scaling on float16
# gradients, which torch's GradScaler refuses, and float32 master copies, which would not shrink the model.
STORED_MANTISSA_BITS = 7
# What `mantissa_bits_kept` counts in each mode (stored in the run's compression report).
_KEPT_MEANS = {
    "dtype": "mantissa bits of the arithmetic (matrix products and convolutions); weights and optimizer "
    "state keep float32's 23",
    "stored": "mantissa bits of the stored weights, and of the arithmetic with them",
    "truncate": "mantissa bits left in the float32 weights after every optimizer step; the arithmetic is float32",
}


def float32_params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.dtype == torch.float32]


def _low_mask(bits: int) -> int:
    return (1 << bits) - 1


_SIGN_BIT = -(1 << 31)  # int32 with only the sign bit set
_MAGNITUDE = (1 << 31) - 1
_EXPONENT_ALL_ONES = 0x7F800000  # infinities and NaNs: left as they are
_MAX_FINITE = 0x7F7FFFFF


def round_low_bits(model: nn.Module, bits: int) -> int:
    """Round every float32 parameter to the nearest value whose `bits` lowest mantissa bits are zero (ties
    to even), in place; returns how many values were touched.

    Works on the int32 view: float32 is sign-magnitude, so rounding the 31-bit magnitude as an integer
    rounds the value, and a carry out of the mantissa correctly bumps the exponent. A value that would round
    up past the largest finite float keeps the largest finite value with those bits zero.
    """
    if bits <= 0:
        return 0
    low = _low_mask(bits)
    ceiling = _MAX_FINITE & ~low
    touched = 0
    with torch.no_grad():
        for param in float32_params(model):
            view = param.data.view(torch.int32)
            magnitude = view & _MAGNITUDE
            special = magnitude >= _EXPONENT_ALL_ONES
            # Nearest, ties to even, in place (it runs after every step): adding half a quantum less one, plus
            # the kept part's last bit, carries exactly when the value rounds up.
            rounded = (magnitude >> bits) & 1
            rounded += magnitude
            rounded += (1 << (bits - 1)) - 1
            rounded &= ~low
            rounded.clamp_(max=ceiling)
            # infinities and NaNs stay; asking first spares a pass on the CPU (on a GPU the question would
            # wait for the device, once per parameter and step)
            if view.device.type != "cpu" or bool(special.any()):
                torch.where(special, magnitude, rounded, out=rounded)
            rounded |= view & _SIGN_BIT
            view.copy_(rounded)
            touched += param.numel()
    return touched


def overwrite_low_bits(model: nn.Module, bits: int, seed: int) -> None:
    """Replace the `bits` lowest mantissa bits of every float32 parameter with seeded random bits."""
    if bits <= 0:
        return
    keep = ~_low_mask(bits)
    generators: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for param in float32_params(model):
            gen = generators.get(param.device)
            if gen is None:
                gen = generators[param.device] = torch.Generator(device=param.device).manual_seed(seed)
            noise = torch.randint(0, 1 << bits, param.shape, dtype=torch.int32, device=param.device, generator=gen)
            param.data.view(torch.int32).bitwise_and_(keep).bitwise_or_(noise)


class RoundLowBits:
    """The after-step hook of `mode = "truncate"`: round the low bits away (see `round_low_bits`); a class,
    not a lambda, so a training child process can receive it pickled."""

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def __call__(self, model: nn.Module) -> None:
        round_low_bits(model, self.bits)

    def __repr__(self) -> str:
        return f"RoundLowBits({self.bits})"


def capacity_bytes(model: nn.Module, bits: int) -> float:
    """Total capacity in bytes: `bits` per float32 parameter."""
    return sum(p.numel() for p in float32_params(model)) * bits / 8


def capacity_scan(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    seed: int,
    tolerance_pp: float = 1.0,
    bits_range: Iterable[int] = range(24),
    log: Callable[[str], None] = print,
) -> tuple[list[tuple[int, float]], int]:
    """Evaluate the model with k low mantissa bits overwritten, for each k in `bits_range`.

    Returns the curve [(k, accuracy)] and the capacity: the largest k such that it and every smaller
    scanned k stay within `tolerance_pp` percentage points of the unmodified accuracy. Requiring the
    smaller k too keeps a lucky draw past the knee of the curve from licensing bits the model needs.
    The weights are restored exactly afterwards, also on error.
    """
    bits_list = sorted({int(k) for k in bits_range})
    if any(k < 0 or k > MANTISSA_BITS for k in bits_list):
        raise ValueError(f"bits_range must lie within 0..{MANTISSA_BITS}, got {bits_list}")
    params = float32_params(model)
    originals = [p.detach().clone() for p in params]

    def restore() -> None:
        with torch.no_grad():
            for param, original in zip(params, originals):
                param.copy_(original)

    curve: list[tuple[int, float]] = []
    try:
        reference = None if 0 in bits_list else float(evaluate(model))
        for k in bits_list:
            restore()
            # A seed per k: each level is an independent message, reproducible on its own.
            overwrite_low_bits(model, k, seed * 1000 + k)
            accuracy = float(evaluate(model))
            curve.append((k, accuracy))
            log(f"capacity scan: {k:2d} low bits overwritten -> accuracy {accuracy:.4f}")
    finally:
        restore()
    if reference is None:
        reference = curve[0][1]
    capacity = 0
    for k, accuracy in curve:
        if (reference - accuracy) * 100 > tolerance_pp + 1e-9:
            break
        capacity = k
    log(f"capacity scan: capacity {capacity} bits (tolerance {tolerance_pp} pp of {reference:.4f})")
    return curve, capacity


def choose_dtype(
    kept: int, device_type: str, bf16_native: bool | None = None
) -> tuple[str, torch.dtype | None, int, list[str]]:
    """The narrowest native format keeping `kept` mantissa bits: (name, autocast dtype or None,
    bits it really keeps, warnings). On a GPU without native bfloat16 (compute capability below 8.0: a V100,
    a T4) torch's autocast emulates bfloat16 without an error, so float16 is chosen instead."""
    warnings: list[str] = []
    for name, dtype, bits in NATIVE_FORMATS:
        if name == "bfloat16" and device_type == "cuda" and bf16_native is False:
            if kept <= bits:
                warnings.append(
                    f"{kept} mantissa bits fit bfloat16, but bfloat16 is emulated on this GPU (compute "
                    "capability below 8.0); training in float16, which keeps 10 and runs natively "
                    '(mode = "stored" keeps bfloat16 weights, emulated)'
                )
            continue
        if kept <= bits:
            if name == "float16" and device_type != "cuda":
                # CPU autocast to float16 is slow and poorly covered; bfloat16 is the CPU's half format.
                warnings.append(
                    f"{kept} mantissa bits fit float16, but float16 autocast is poor on "
                    f"{device_type}; training in bfloat16, which keeps only 7"
                )
                return "bfloat16", torch.bfloat16, 7, warnings
            return name, dtype, bits, warnings
    warnings.append(
        f"no native format narrower than float32 keeps {kept} mantissa bits (bfloat16 keeps 7, "
        f'float16 keeps 10); training stays float32 — set mode = "truncate" to remove the bits '
        f"inside float32"
    )
    return "float32", None, MANTISSA_BITS, warnings


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that do bfloat16 arithmetic natively


def cpu_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """Which of BF16_CPU_FLAGS this CPU has ('' for none: bfloat16 is then emulated, and slower than float32),
    or None where /proc/cpuinfo does not say (not Linux, not x86)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None:
        return None
    return ", ".join(flag for flag in BF16_CPU_FLAGS if flag in flags)


def bfloat16_cpu_note(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """What a bfloat16 run on this CPU measures: native arithmetic, or an emulation slower than float32."""
    found = cpu_bfloat16(cpuinfo)
    if found is None:
        return None
    if found:
        return f"bfloat16 on this CPU is native ({found}): the energy is that of narrower arithmetic"
    return (
        "bfloat16 on this CPU is emulated (no avx512_bf16 or amx_bf16): expect it slower and costlier "
        "than float32, a property of this CPU, not of fewer bits"
    )


def apply(model: nn.Module, settings: dict[str, Any], ctx: CompressionContext) -> Applied:
    settings = validate({**DEFAULTS, **settings}, NAME)
    warnings: list[str] = []
    curve = None
    if settings["bits"] == "auto":
        ctx.log("stego: scanning steganographic capacity (24 evaluations)")
        curve, bits = capacity_scan(model, ctx.evaluate, ctx.seed, settings["tolerance"], log=ctx.log)
        chance = 1 / max(ctx.num_classes, 1)
        if curve[0][1] <= 1.5 * chance or bits == MANTISSA_BITS:
            # An untrained head scores the same whatever its low bits hold: the scan then licenses them all.
            warnings.append(
                f"the model scores {curve[0][1]:.1%} before training (chance is about {chance:.1%}) "
                f"and the scan found {bits} removable bits, which usually means it has not learned "
                f"yet; scan a fine-tuned model (greenlab --capacity) and set bits to its result"
            )
    else:
        bits = settings["bits"]
    needed = MANTISSA_BITS - bits
    device_type = torch.device(ctx.device).type if ctx.device is not None else "cpu"
    n_float32 = len(float32_params(model))
    if n_float32 < len(list(model.parameters())):
        warnings.append("parameters not stored as float32 are left as they are")

    hooks = TrainingHooks()
    compute_dtype, weights_dtype, kept = "float32", "float32", MANTISSA_BITS
    removable_bytes = capacity_bytes(model, bits)  # before the weights change format
    float32_count = sum(p.numel() for p in float32_params(model))
    mode = settings["mode"]
    if bits == 0:
        warnings.append(
            "0 bits to remove (the model needs all 23 mantissa bits): the model and its training are unchanged"
        )
    elif mode == "dtype":
        compute_dtype, autocast, kept, notes = choose_dtype(needed, device_type, ctx.bf16_native)
        warnings += notes
        hooks = TrainingHooks(autocast_dtype=autocast, grad_scaler=compute_dtype == "float16" and device_type == "cuda")
        if autocast is None:
            warnings.append("the model and its training are unchanged")
    elif mode == "stored":
        if needed > STORED_MANTISSA_BITS:
            warnings.append(
                f'mode "stored" keeps weights in bfloat16 ({STORED_MANTISSA_BITS} mantissa bits), '
                f"fewer than the {needed} this model needs; the model and its training are unchanged "
                f'— use mode = "dtype" (float16 arithmetic keeps 10) or lower bits'
            )
        else:
            model = model.to(torch.bfloat16)
            # autocast casts each batch to the weights' format at the first convolution or matrix product.
            hooks = TrainingHooks(autocast_dtype=torch.bfloat16)
            compute_dtype, weights_dtype, kept = "bfloat16", "bfloat16", STORED_MANTISSA_BITS
    else:
        kept = needed
        round_low_bits(model, bits)
        hooks = TrainingHooks(after_step=[RoundLowBits(bits)])
        warnings.append(
            'mode "truncate" rounds every float32 weight after each optimizer step: work counted '
            "in the run's energy that no narrower arithmetic pays back; it isolates fewer bits, "
            'not a hardware saving (mode "dtype" or "stored" measures that)'
        )
    if compute_dtype == "bfloat16" and device_type == "cpu":
        note = bfloat16_cpu_note()
        if note:
            warnings.append(note)

    columns = {
        "capacity_bits": bits,
        "capacity_bytes": removable_bytes,
        "compute_dtype": compute_dtype,
        "weights_dtype": weights_dtype,
        "mantissa_bits_kept": kept,
        "stego_mode": mode,
    }
    report = {
        **columns,
        "mantissa_bits_needed": needed,
        "tolerance_pp": settings["tolerance"],
        "bits_source": "scan" if curve is not None else "setting",
        "float32_params": float32_count,
        "mantissa_bits_kept_means": _KEPT_MEANS[mode],
    }
    if mode == "dtype" and hooks.autocast_dtype is not None:
        report["arithmetic"] = (
            f"autocast to {compute_dtype}: matrix products and convolutions, forward and "
            f"backward, run in {compute_dtype}; weights and the optimizer stay float32"
        )
    if curve is not None:
        report["capacity_curve"] = [list(point) for point in curve]
    return Applied(model=model, hooks=hooks, report=report, warnings=warnings, columns=columns, capacity_curve=curve)


__all__ = [
    "NAME",
    "DEFAULTS",
    "validate",
    "apply",
    "capacity_scan",
    "capacity_bytes",
    "round_low_bits",
    "overwrite_low_bits",
    "choose_dtype",
    "RoundLowBits",
    "float32_params",
]
