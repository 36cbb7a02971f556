"""What compression saves once deployed (issue 32's statistics): the payback point with its interval, and
an energy change split into mean power and time, held to known answers and to properties over random
inputs."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from greenlab.core.report import energy_split, payback

positive = st.floats(0.5, 1000.0, allow_nan=False)


def _runs(train: float, per_inference: float, n: int = 6, spread: float = 0.01, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [
        (train * (1 + spread * rng.standard_normal()), per_inference * (1 + spread * rng.standard_normal()))
        for _ in range(n)
    ]


def test_a_technique_that_costs_to_fine_tune_and_saves_per_inference_pays_back_where_the_two_meet():
    found = payback.payback(_runs(1300.0, 0.6, seed=1), _runs(1000.0, 0.7, seed=2))
    assert found is not None and found.word == payback.PAYS_BACK
    assert found.inferences == found.extra_train_j / found.saving_j
    assert 2400 < found.inferences < 3600  # 300 J more, 0.1 J less each: about 3,000
    low, high = found.interval
    assert low < found.inferences < high
    assert found.text().startswith(f"pays back after {round(found.inferences):,} inferences [")


def test_the_other_words():
    cheaper_both = payback.payback(_runs(900.0, 0.5), _runs(1000.0, 0.7, seed=2))
    assert cheaper_both.text() == "saves from the first inference"
    dearer_both = payback.payback(_runs(1100.0, 0.9), _runs(1000.0, 0.7, seed=2))
    assert dearer_both.text() == "never pays back"
    runs_out = payback.payback(_runs(900.0, 0.8), _runs(1000.0, 0.7, seed=2))
    assert runs_out.word == payback.USES_UP and 700 < runs_out.inferences < 1300  # 100 J saved, 0.1 J each
    noisy = payback.payback(_runs(1300.0, 0.7, spread=0.3), _runs(1000.0, 0.7, spread=0.3, seed=2))
    assert noisy.word == "inconclusive" and noisy.text().startswith("inconclusive (pays back after ")
    assert noisy.text().endswith(", or never)")
    assert payback.payback(_runs(1.0, 1.0, n=1), _runs(1.0, 1.0)) is None  # no interval from one run


@settings(max_examples=60, deadline=None)
@given(scale=st.floats(0.01, 100.0), train=positive, extra=positive, per=positive, share=st.floats(0.05, 0.9))
def test_the_payback_point_does_not_depend_on_the_unit_of_energy(scale, train, extra, per, share):
    technique, baseline = _runs(train + extra, per * (1 - share), seed=3), _runs(train, per, seed=4)
    first = payback.payback(technique, baseline)
    second = payback.payback(
        [(e * scale, i * scale) for e, i in technique], [(e * scale, i * scale) for e, i in baseline]
    )
    assert first.word == second.word
    if first.inferences is not None:
        assert math.isclose(first.inferences, second.inferences, rel_tol=1e-9)
        assert all(math.isclose(a, b, rel_tol=1e-9) or a == b for a, b in zip(first.interval, second.interval))


@settings(max_examples=100, deadline=None)
@given(
    technique=st.lists(st.tuples(positive, positive), min_size=2, max_size=8),
    baseline=st.lists(st.tuples(positive, positive), min_size=2, max_size=8),
)
def test_the_energy_change_is_exactly_its_power_part_times_its_time_part(technique, baseline):
    found = energy_split.split(technique, baseline)
    assert math.isclose(found.energy.estimate, found.power.estimate * found.time.estimate, rel_tol=1e-9)


def test_a_known_split_reads_as_shorter_time_and_lower_power():
    # 25 % less time at 7 % less mean power (energies follow: 0.75 × 0.93 = 0.6975 of the baseline's)
    baseline = [(100.0 * k, 10.0 * k) for k in (0.98, 1.0, 1.02, 0.99, 1.01)]
    technique = [(e * 0.75 * 0.93, s * 0.75) for e, s in baseline]
    found = energy_split.split(technique, baseline)
    assert math.isclose(found.time.estimate, 0.75) and math.isclose(found.power.estimate, 0.93)
    # every run's mean power fell by the same 7 %: no spread, so no interval to give it
    assert found.text() == "saves 30 % [29–32 %]: 25 % [23–27 %] from shorter time, 7 % from lower mean power"
    estimated = energy_split.split(technique, baseline, estimated=True)
    assert estimated.power is None and "none of it is power" in estimated.text()
