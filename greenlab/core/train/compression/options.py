"""Each technique's settings, declared without torch: names, defaults and validation.

An experiments file is checked against these before anything heavy is imported, so a wrong file (or a
runaway grid) is refused in a second, not after torch loads. The technique modules (stego, prune,
lowrank) re-export them beside the code that applies them; this module must never import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from greenlab.core.errors import ConfigError, suggest


@dataclass(frozen=True)
class TechniqueOptions:
    """A technique's name in experiments.toml, its settings' defaults and their check."""

    name: str
    defaults: dict[str, Any]
    validate: Callable[[dict[str, Any], str], dict[str, Any]]
    meanings: dict[str, str]  # one line per key, for docs/configuration.md (options_table)


# -- stego ------------------------------------------------------------------------------------------------
STEGO_MODES = ("dtype", "stored", "truncate")
MANTISSA_BITS = 23  # float32


def _validate_stego(table: dict[str, Any], key_path: str) -> dict[str, Any]:
    bits = table["bits"]
    if bits != "auto" and (isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= MANTISSA_BITS):
        raise ConfigError(
            f'bits must be an integer from 0 to {MANTISSA_BITS} or "auto", got {bits!r}; fix: write '
            f'bits = "auto" to measure the capacity first, or the number of low mantissa bits to remove '
            f"(for example bits = 16)",
            key=f"{key_path}.bits",
        )
    mode = table["mode"]
    if mode not in STEGO_MODES:
        raise ConfigError(
            f"mode must be one of {', '.join(repr(m) for m in STEGO_MODES)}, got {mode!r}"
            f'{suggest(str(mode), STEGO_MODES)}; fix: mode = "dtype" narrows the arithmetic, mode = "stored" '
            f'stores the weights in bfloat16, mode = "truncate" rounds the low bits away inside float32',
            key=f"{key_path}.mode",
        )
    tolerance = table["tolerance"]
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ConfigError(
            f"tolerance must be a number of accuracy percentage points >= 0, got {tolerance!r}; "
            f"fix: for example tolerance = 1.0",
            key=f"{key_path}.tolerance",
        )
    return {"bits": bits, "mode": mode, "tolerance": float(tolerance)}


STEGO = TechniqueOptions(
    "stego",
    {"bits": "auto", "mode": "dtype", "tolerance": 1.0},
    _validate_stego,
    {
        "bits": f'low mantissa bits to remove (0–{MANTISSA_BITS}); `"auto"` scans the model\'s capacity first',
        "mode": "how the bits are removed, see below",
        "tolerance": "accuracy drop (percentage points) the capacity scan allows",
    },
)

# -- prune ------------------------------------------------------------------------------------------------
PRUNE_METHODS = ("l1-unstructured", "structured")


def _validate_prune(table: dict[str, Any], key_path: str) -> dict[str, Any]:
    amount = table["amount"]
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 < amount < 1:
        raise ConfigError(
            f"amount must be a fraction strictly between 0 and 1, got {amount!r}; fix: for example "
            f"amount = 0.5 prunes half the weights (l1-unstructured) or half the channels (structured)",
            key=f"{key_path}.amount",
        )
    method = table["method"]
    if method not in PRUNE_METHODS:
        raise ConfigError(
            f'unknown method {method!r}{suggest(str(method), PRUNE_METHODS)}; fix: method = "l1-unstructured" '
            f'(zero the smallest weights) or method = "structured" (remove whole channels)',
            key=f"{key_path}.method",
        )
    return {"amount": float(amount), "method": method}


PRUNE = TechniqueOptions(
    "prune",
    {"amount": 0.5, "method": "l1-unstructured"},
    _validate_prune,
    {
        "amount": "share of weights (or channels) removed",
        "method": "`l1-unstructured` zeroes weights (masks kept through training); `structured` removes whole "
        "channels with torch-pruning's dependency graph",
    },
)


# -- lowrank ----------------------------------------------------------------------------------------------
def _validate_lowrank(table: dict[str, Any], key_path: str) -> dict[str, Any]:
    ratio = table["rank_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ConfigError(
            f"rank_ratio must be a fraction in (0, 1], got {ratio!r}; fix: for example rank_ratio = 0.5 keeps "
            f"half of each layer's full rank",
            key=f"{key_path}.rank_ratio",
        )
    energy = table["energy"]
    if energy is not None and (isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1):
        raise ConfigError(
            f"energy must be a fraction in (0, 1] of the squared singular values to keep, got {energy!r}; "
            f"fix: for example energy = 0.9, or leave it out to use rank_ratio",
            key=f"{key_path}.energy",
        )
    return {"rank_ratio": float(ratio), "energy": None if energy is None else float(energy)}


LOWRANK = TechniqueOptions(
    "lowrank",
    {"rank_ratio": 0.5, "energy": None},
    _validate_lowrank,
    {
        "rank_ratio": "rank kept, as a share of each layer's full rank",
        "energy": "instead, the share of squared singular values kept",
    },
)

TECHNIQUES = (STEGO, PRUNE, LOWRANK)  # the order techniques are listed in messages and tables


def _shown(default: Any) -> str:
    if default is None:
        return "none"
    return f'`"{default}"`' if isinstance(default, str) else str(default)


def options_table() -> str:
    """The documentation's table of technique settings, one row per key, from the declarations above."""
    lines = ["| table | key | default | meaning |", "|---|---|---|---|"]
    for technique in TECHNIQUES:
        for index, (key, default) in enumerate(technique.defaults.items()):
            table = f"| `{technique.name}` |" if index == 0 else "| |"  # a table's later keys: cell left blank
            lines.append(f"{table} `{key}` | {_shown(default)} | {technique.meanings[key]} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m greenlab.core.train.compression.options: print the docs' table
    print(options_table())
