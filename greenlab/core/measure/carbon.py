"""From joules to kWh, CO2e and cost, with the inputs stated (defaults and sources in docs/configuration.md, Accounting)."""

from __future__ import annotations

JOULES_PER_KWH = 3.6e6


def kwh(joules: float | None) -> float | None:
    return None if joules is None else joules / JOULES_PER_KWH


def facility_kwh(joules: float | None, pue: float) -> float | None:
    """Energy drawn from the grid: the IT energy times the facility's power usage effectiveness."""
    value = kwh(joules)
    return None if value is None else value * pue


def co2e_g(joules: float | None, carbon_g_per_kwh: float, pue: float) -> float | None:
    value = facility_kwh(joules, pue)
    return None if value is None else value * carbon_g_per_kwh


def cost(joules: float | None, price_per_kwh: float, pue: float) -> float | None:
    value = facility_kwh(joules, pue)
    return None if value is None else value * price_per_kwh
