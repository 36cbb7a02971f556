"""Text for people: how every face writes labels, durations, energies, accuracies and how a figure was
obtained. One module, so the headless lines, the TUI and `greenlab report` say things the same way.

Pure functions of plain values; nothing here reads a meter, a store or a widget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from greenlab.core.measure import hostload
from greenlab.core.measure.meter import MEASURED_METHODS
from greenlab.core.store.rows import RunRow

KINDS = ("measured", "estimated", "mixed", "unavailable")


def run_label(model: str, technique: str, repeat: int, repeats: int) -> str:
    """'resnet18 · prune #2' (the repeat only when a grid has several)."""
    return f"{model} · {technique}" + (f" #{repeat + 1}" if repeats > 1 else "")


def clock(seconds: float | None) -> str:
    """'1:05' or '1:02:03' for elapsed times and ETAs; '-' when unknown (or not a number)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    whole = max(0, int(seconds))
    if whole >= 3600:
        return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
    return f"{whole // 60}:{whole % 60:02d}"


def duration(seconds: float | None) -> str:
    """'12.3 s' under a minute, else as `clock`; '-' when unknown (or not a number)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{seconds:.1f} s" if seconds < 60 else clock(seconds)


def energy(joules: float | None, ci_j: float | None = None) -> str:
    """J below an hour's watt (3600 J), Wh above, thousands separated; a confidence interval in the same
    unit."""
    if joules is None:
        return "-"
    if joules >= 3600:
        text = f"{joules / 3600:,.2f}"
        return f"{text} Wh" if ci_j is None else f"{text}±{ci_j / 3600:,.2f} Wh"
    return f"{joules:,.1f} J" if ci_j is None else f"{joules:,.1f}±{ci_j:,.1f} J"


def accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def significant(value: float, digits: int = 2) -> str:
    """`value` to `digits` significant figures, written out ('270', '0.9', '12,000'), never '2.7e+02';
    only beyond 1e15 or below 1e-6 in exponent form ('2.9e18')."""
    if not math.isfinite(value):
        return str(value)
    if value != 0 and not 1e-6 <= abs(value) < 1e15:
        return exponent_form(value, digits)
    rounded = float(f"{value:.{digits}g}")
    decimals = max(digits - 1 - math.floor(math.log10(abs(rounded))), 0) if rounded else 0
    text = f"{rounded:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def exponent_form(value: float, digits: int = 2) -> str:
    """'2.9e18', '1e-7': the shortest exponent form, for figures far from one."""
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    return f"{mantissa}e{int(exponent)}"


def about_energy(joules: float) -> str:
    """'45 J', '0.9 kJ', '270 kJ', '3.4 kWh': two significant figures, as precise as a forecast is."""
    if joules >= 3.6e6:
        return f"{significant(joules / 3.6e6)} kWh"
    if joules >= 100:
        return f"{significant(joules / 1000)} kJ"
    return f"{significant(joules)} J" if joules >= 0.01 or joules <= 0 else "< 0.01 J"


def about_duration(seconds: float | None) -> str:
    """'40 s', '1 min 30 s', '2 h 5 min', '3 days 4 h': as precise as a forecast is."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s < 600 else f"{round(s / 60)} min"
    if s < 86_400:
        return f"{s // 3600} h {(s % 3600) // 60} min"
    days, hours = s // 86_400, (s % 86_400) // 3600
    return f"{days} day{'s' if days != 1 else ''} {hours} h"


def left(seconds: float | None) -> str:
    """An ETA as time left, never a clock time: '10 h 32 min left', '40 s left'; '-' when unknown."""
    return "-" if seconds is None or not math.isfinite(seconds) else f"{about_duration(seconds)} left"


def money(amount: float | None, currency: str) -> str:
    """'1.23 EUR', '4.2 EUR cents', '< 0.01 EUR cents': a cost a person reads, never '1.8e-06 EUR'."""
    if amount is None or not math.isfinite(amount):
        return "-"
    unit = currency or "(no currency)"
    if abs(amount) >= 0.995:
        return f"{amount:,.2f} {unit}"
    cents = amount * 100
    if abs(cents) < 0.01:
        return f"< 0.01 {unit} cents" if cents >= 0 else f"> -0.01 {unit} cents"
    return f"{significant(cents)} {unit} cents"


def mass_co2e(grams: float | None) -> str:
    """'1.2 kg CO2e', '16 g CO2e', '0.42 mg CO2e', '< 0.001 mg CO2e'."""
    if grams is None or not math.isfinite(grams):
        return "-"
    if abs(grams) >= 1000:
        return f"{significant(grams / 1000)} kg CO2e"
    if abs(grams) >= 0.1:
        return f"{significant(grams)} g CO2e"
    if abs(grams * 1000) < 0.001:
        return "< 0.001 mg CO2e"
    return f"{significant(grams * 1000)} mg CO2e"


def loss(value: float | None) -> str:
    """A training loss: '0.4312', or '2.9e18' when it ran away (never 19 digits)."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e5 or (value != 0 and abs(value) < 1e-4):
        return exponent_form(value)
    return f"{value:.4f}"


def kind_of_methods(methods: Mapping[str, str]) -> str:
    """measured | estimated | mixed | unavailable, from each component's method."""
    kinds = {"measured" if m in MEASURED_METHODS else "estimated" for m in methods.values() if m != "unavailable"}
    if not kinds:
        return "unavailable"
    return kinds.pop() if len(kinds) == 1 else "mixed"


def kind_of_row(row: RunRow) -> str:
    """measured | estimated | mixed | unavailable, from a stored run's measured and estimated joules."""
    measured, estimated = row.energy_measured_j or 0.0, row.energy_estimated_j or 0.0
    if measured and estimated:
        return "mixed"
    if measured:
        return "measured"
    if estimated:
        return "estimated"
    return "unavailable"


def idle_text(watts: Mapping[str, float], seconds: float, host_load: Mapping[str, Any] | None = None) -> str:
    listed = ", ".join(f"{c} {w:.1f} W" for c, w in watts.items()) or "nothing measurable"
    text = f"idle baseline over {seconds:g} s: {listed}"
    if watts and host_load is not None and hostload.busy(host_load):
        # A baseline taken while others work is too high, and every net figure below it too low.
        text += (
            f"; the host was not idle (other processes used {host_load['other_share']:.0%} of its CPUs), so this "
            "baseline is too high and net energy too low: stop them, or rerun"
        )
    return text


def cooling_text(temperatures: Mapping[str, float], target_c: float) -> str:
    listed = ", ".join(f"{c} {t:.0f} °C" for c, t in temperatures.items())
    return f"cooling down to {target_c:g} °C: {listed}"


def host_busy(row: RunRow) -> str:
    """The warning for a run flagged `host_busy` (empty when it is not): how much of the host others used."""
    if "host_busy" not in row.flags:
        return ""
    share = (row.meters.get("host_load") or {}).get("other_share")
    used = f" {share:.0%} of" if isinstance(share, (int, float)) else ""
    return (
        f"the host was busy: other processes (on Ray, other runs on the node too) used{used} its CPUs "
        "meanwhile, so its CPU and DRAM figures (measured or estimated) include their effect (flag host_busy); "
        "compare it with care, or rerun on a quiet machine"
    )
