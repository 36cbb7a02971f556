"""Numbers people read: one formatting module for every face, never '2.7e+02 kJ', '1.8e-06 EUR', a loss of
nineteen digits or an ETA that reads as a clock time."""

from __future__ import annotations

import math
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from greenlab.core.report import formatting as fmt

finite = st.floats(allow_nan=False, allow_infinity=False)


def test_the_examples_people_met():
    assert fmt.about_energy(2.7e5) == "270 kJ"
    assert [fmt.about_energy(j) for j in (45, 900, 12_345, 3.6e7)] == ["45 J", "0.9 kJ", "12 kJ", "10 kWh"]
    assert fmt.money(1.8e-6, "EUR") == "< 0.01 EUR cents"
    assert fmt.money(0.042, "EUR") == "4.2 EUR cents"
    assert fmt.money(12.3456, "USD") == "12.35 USD"
    assert fmt.loss(2852374505253240832.0) == "2.9e18"
    assert fmt.loss(0.43123) == "0.4312"
    assert fmt.left(10 * 3600 + 32 * 60) == "10 h 32 min left"
    assert fmt.mass_co2e(0.016) == "16 mg CO2e" and fmt.mass_co2e(1234.0) == "1.2 kg CO2e"


@given(st.floats(1e-6, 1e15 * 0.999) | st.floats(-1e15 * 0.999, -1e-6))
def test_significant_writes_numbers_out_within_two_significant_figures(value):
    text = fmt.significant(value)
    assert "e" not in text
    assert math.isclose(float(text.replace(",", "")), value, rel_tol=0.05)


@given(finite.filter(lambda v: v != 0 and not 1e-6 <= abs(v) < 1e15))
def test_significant_uses_a_short_exponent_only_far_from_one(value):
    text = fmt.significant(value)
    assert "e" in text and "+" not in text and len(text) <= 9
    written, exact = Decimal(text), Decimal(value)  # Decimal: 1.8e308 is beyond a float
    assert abs(written - exact) <= Decimal("0.05") * abs(exact)


@given(finite, st.sampled_from(["EUR", "USD", ""]))
def test_money_is_never_in_exponent_form(amount, currency):
    text = fmt.money(amount, currency)
    assert "e-" not in text and "e+" not in text


@given(st.floats(0, 1e12))
def test_energy_forecasts_and_time_left_read_as_people_say_them(value):
    assert "e+" not in fmt.about_energy(value) and "e-" not in fmt.about_energy(value)
    text = fmt.left(value)
    assert text.endswith(" left") and ":" not in text


@given(finite)
def test_a_loss_is_short_whatever_it_is(value):
    assert len(fmt.loss(value)) <= 12
