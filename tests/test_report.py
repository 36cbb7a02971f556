"""Comparisons against baselines: matching, means, confidence intervals and units."""

from __future__ import annotations

import json

import pytest

from greenlab.core import report


def row(technique, energy, *, epochs=2, acc=0.9, experiment="e", model="m"):
    return {"experiment": experiment, "model": model, "dataset": "digits", "technique": technique,
            "status": "completed", "energy_j": energy, "energy_training_j": energy / 2, "duration_s": 10.0,
            "val_accuracy": acc, "settings": json.dumps({"epochs": epochs, "techniques": {technique: {}}})}


def test_change_against_the_matching_baseline_only():
    rows = [row("baseline", 100.0), row("baseline", 300.0, epochs=5), row("prune", 50.0),
            row("prune", 600.0, epochs=5)]
    groups = {(g.technique, g.means["energy_j"]): g for g in report.summarize(rows)}
    assert groups[("prune", 50.0)].change["energy_j"] == pytest.approx(-50.0)
    assert groups[("prune", 600.0)].change["energy_j"] == pytest.approx(100.0)
    assert report.row_change(rows[2], rows, "energy_j") == pytest.approx(-50.0)


def test_confidence_interval_uses_the_exact_t_quantile():
    values = [10.0 + i for i in range(12)]  # 11 degrees of freedom: t = 2.201
    from statistics import stdev

    assert report.ci95(values) == pytest.approx(2.201 * stdev(values) / 12 ** 0.5)
    assert report.ci95([1.0]) is None


def test_energy_and_interval_share_a_unit():
    assert report.format_energy(7400.0, 994.0) == "2.06±0.28 Wh"
    assert report.format_energy(12.0, 1.5) == "12.0±1.5 J"
    assert report.format_energy(None) == "-"
