"""Compression techniques applied to a model before training, and the contract they share.

A run names one technique or a `+`-joined combination (`"prune+stego"`), applied in the written order.
Each technique module exposes:

- `NAME`: its name in experiments.toml;
- `DEFAULTS`: its settings with default values (a dict; the keys are the only keys accepted);
- `validate(table: dict, key_path: str) -> dict`: checks settings already merged over DEFAULTS and returns
  them normalised; raises ConfigError naming `key_path` + key, what is wrong and the fix;
- `apply(model, settings, ctx: CompressionContext) -> Applied`.

This package knows nothing of the store or the run supervisor: it gets a model and returns a model, training hooks
and plain facts for the supervisor to store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from greenlab.core.errors import ConfigError, suggest

BASELINE = "baseline"


@dataclass
class CompressionContext:
    """What a technique may use besides the model itself."""

    evaluate: Callable[[Any], float]  # model -> validation top-1 accuracy in [0, 1]
    device: Any  # torch.device the model lives on
    seed: int
    example_input: Any  # one input batch on `device`, for FLOP counts and dependency graphs
    num_classes: int
    log: Callable[[str], None] = print  # progress lines (a capacity scan takes a while)
    bf16_native: bool | None = None  # whether the device does bfloat16 in hardware (None: cannot tell)


@dataclass
class TrainingHooks:
    """How the training loop must change for a compressed model."""

    autocast_dtype: Any = None  # torch dtype to autocast forward passes to, or None for float32
    grad_scaler: bool = False  # float16 on CUDA needs loss scaling
    after_step: list[Callable[[Any], None]] = field(default_factory=list)  # run after each optimizer step

    def merge(self, other: TrainingHooks) -> TrainingHooks:
        return TrainingHooks(
            autocast_dtype=other.autocast_dtype or self.autocast_dtype,
            grad_scaler=self.grad_scaler or other.grad_scaler,
            after_step=self.after_step + other.after_step,
        )


@dataclass
class Applied:
    """The result of applying one technique (or a chain of them)."""

    model: Any
    hooks: TrainingHooks = field(default_factory=TrainingHooks)
    report: dict[str, Any] = field(default_factory=dict)  # technique facts, stored as JSON
    warnings: list[str] = field(default_factory=list)  # e.g. "no layer qualified for factorisation"
    columns: dict[str, Any] = field(default_factory=dict)  # values for named `runs` columns
    capacity_curve: list[tuple[int, float]] | None = None  # (bits overwritten, val accuracy)


def _registry() -> dict[str, Any]:
    """Technique modules by name; imported on first use (they import torch), so `import greenlab.core`
    and checking an experiments file stay light, and imported by name, so the import contracts see them."""
    from greenlab.core.train.compression import lowrank, prune, stego

    return {module.NAME: module for module in (stego, prune, lowrank)}


def _options() -> dict[str, Any]:
    """Each technique's settings declaration (greenlab.core.train.compression.options: no torch)."""
    from greenlab.core.train.compression.options import TECHNIQUES

    return {technique.name: technique for technique in TECHNIQUES}


def technique_names() -> list[str]:
    return [BASELINE, *_options().keys()]


def parse_technique(spec: str, key_path: str) -> list[str]:
    """Split a technique spec into its parts, checking each name."""
    known = technique_names()
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(
            f"a technique must be a non-empty string like 'baseline' or 'prune+stego', got {spec!r}", key=key_path
        )
    parts = [p.strip() for p in spec.split("+")]
    for part in parts:
        if part not in known:
            raise ConfigError(
                f"unknown technique '{part}'{suggest(part, known)} (known: {', '.join(known)})", key=key_path
            )
    if BASELINE in parts and len(parts) > 1:
        raise ConfigError(f"'baseline' cannot be combined ('{spec}'); list it on its own", key=key_path)
    if len(set(parts)) != len(parts):
        raise ConfigError(f"technique '{spec}' names a part twice", key=key_path)
    return parts


def settings_tables() -> dict[str, dict[str, Any]]:
    """Default settings of every technique that takes settings, by technique name."""
    return {name: dict(options.defaults) for name, options in _options().items()}


def validate_settings(name: str, table: dict[str, Any], key_path: str) -> dict[str, Any]:
    """Merge `table` over the technique's defaults, rejecting unknown keys, and validate it."""
    options = _options()[name]
    for key in table:
        if key not in options.defaults:
            raise ConfigError(
                f"unknown setting '{key}'{suggest(key, list(options.defaults))} for technique '{name}' "
                f"(known: {', '.join(options.defaults) or 'none'})",
                key=f"{key_path}.{key}",
            )
    merged = {**options.defaults, **table}
    return options.validate(merged, key_path)


def label(technique: str, settings: Any) -> str:
    """The technique as its results are grouped and shown: its name, with every setting that differs from
    the declared default in brackets (`prune[amount=0.9]`, `prune[amount=0.9]+stego`). Two runs of one name
    with different settings are different treatments and are never pooled; with the defaults it is the
    bare name. `settings` is a run's `techniques` table ({part: {key: value}}); anything else counts as
    the defaults (an older or damaged row)."""
    tables = settings if isinstance(settings, dict) else {}
    options = _options()
    shown = []
    for part in technique.split("+"):
        table = tables.get(part)
        defaults = options[part].defaults if part in options else {}
        given = table if isinstance(table, dict) else {}
        changed = [  # in the declared order, whatever order the row holds them in
            f"{key}={_setting_text(given[key])}"
            for key in defaults
            if key in given and not _same_setting(given[key], defaults[key])
        ]
        shown.append(f"{part}[{','.join(changed)}]" if changed else part)  # no space: one word in a table
    return "+".join(shown)


def _same_setting(value: Any, default: Any) -> bool:
    if isinstance(value, (int, float)) and isinstance(default, (int, float)) and not isinstance(value, bool):
        return float(value) == float(default)  # 1 and 1.0 are one setting (validation stores floats)
    return bool(value == default)


def _setting_text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)  # every digit: two settings, two labels


def apply(parts: list[str], model: Any, settings: dict[str, dict[str, Any]], ctx: CompressionContext) -> Applied:
    """Apply the named techniques in order; `baseline` returns the model untouched."""
    result = Applied(model=model)
    registry = _registry()
    for part in parts:
        if part == BASELINE:
            continue
        step = registry[part].apply(result.model, settings.get(part, {}), ctx)
        result = Applied(
            model=step.model,
            hooks=result.hooks.merge(step.hooks),
            report={**result.report, part: step.report},
            warnings=result.warnings + [f"{part}: {w}" for w in step.warnings],
            columns={**result.columns, **step.columns},
            capacity_curve=step.capacity_curve or result.capacity_curve,
        )
    return result
