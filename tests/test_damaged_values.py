"""Stores the schema allows but no grid writes — text in a REAL column, ±inf, ±1e308, zero and negative
energies, accuracies outside 0–1, a hand-edited plan — never crash a face, and every face leaves out the
same values: the verdicts, the headless table's means and the TUI's Δ columns take one rule
(compare.left_out_because)."""

from __future__ import annotations

import json
import math
import sqlite3
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenlab import cli
from greenlab.core.report import compare, render, stats
from greenlab.core.store.database import Store
from greenlab.tui.runs import table_rows

METRICS = ("energy_training_j", "energy_j", "duration_s", "val_accuracy", "val_f1")
NASTY = st.one_of(
    st.floats(min_value=1.0, max_value=1e4),  # a measurement
    st.floats(min_value=0.0, max_value=1.0),  # an accuracy
    st.sampled_from([0.0, -100.0, -1e-9, 1e308, -1e308, math.inf, -math.inf, 1.5, "abc", "", None]),
)


def _store(path, values: list[dict[str, object]], plan_analysis: str | None = None) -> None:
    """Three baselines and three prune runs of one model, their columns set to `values` (the first three
    the baselines'); epochs carry the same accuracies. Written as a hand edit would: straight into SQLite."""
    store = Store(path)
    ids = []
    for i in range(6):
        technique = "baseline" if i < 3 else "prune"
        run_id = store.start_run(
            {
                "experiment": "e",
                "model": "m",
                "dataset": "digits",
                "technique": technique,
                "settings": {"epochs": 1},
                "repeat": i % 3,
                "seed": i % 3,
                "settings_key": f"m-{technique}-{i % 3}",
                "conditions_key": "c",
            }
        )
        store.add_epoch({"run_id": run_id, "epoch": 1, "val_accuracy": 0.5, "energy_j": 10.0})
        store.update_run(run_id, status="completed", energy_measured_j=1.0, energy_estimated_j=0.0)
        ids.append(run_id)
    store.close()
    conn = sqlite3.connect(path)
    for run_id, row in zip(ids, values):
        for column, value in row.items():
            conn.execute(f"update runs set {column} = ? where id = ?", [value, run_id])
        conn.execute("update epochs set val_accuracy = ? where run_id = ?", [row.get("val_accuracy"), run_id])
    if plan_analysis is not None:
        conn.execute(
            "insert into plans (digest, source, created_at, analysis, cells) values (?, ?, ?, ?, ?)",
            ["d", "hand.toml", "2026-01-01", plan_analysis, json.dumps([{"conditions": "c", "technique": "prune"}])],
        )
        conn.execute("update runs set plan_id = (select max(id) from plans)")
    conn.commit()
    conn.close()


def _taken(metric: str, value: object) -> float | None:
    """What the analysis may take, written out independently of the code under test."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if value is None or not math.isfinite(value):  # type: ignore[arg-type]
        return None
    if metric in ("val_accuracy", "val_f1"):
        return value if 0 <= value <= 1 else None  # type: ignore[return-value,operator]
    return value if value > 0 else None  # type: ignore[return-value,operator]


def _exact_mean(values: list[float]) -> float:
    return float(sum(Fraction(v) for v in values) / len(values))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.fixed_dictionaries(dict.fromkeys(METRICS, NASTY)), min_size=6, max_size=6))
def test_no_face_crashes_and_every_face_leaves_out_the_same_values(tmp_path_factory, capsys, values):
    path = tmp_path_factory.mktemp("damaged") / "runs.db"
    _store(path, values)
    for fmt in ("text", "json", "csv", "markdown", "latex", "codecarbon"):
        code = cli.main(["report", "--db", str(path), "--format", fmt])
        out, err = capsys.readouterr()
        assert code in (0, 2), (fmt, err)
        assert "Traceback" not in err
    runs = Store.reader(path).runs()
    judged = {c.metric: c for c in compare.judge(runs)}
    groups = {g.technique: g for g in compare.summarize(runs)}
    rows = table_rows(runs, {})
    for metric in METRICS:
        taken = [[_taken(metric, v[metric]) for v in values[side]] for side in (slice(0, 3), slice(3, 6))]
        base, technique = ([x for x in side if x is not None] for side in taken)
        comparison = judged[metric]
        assert (comparison.stats.n_baseline, comparison.stats.n) == (len(base), len(technique))
        assert len(comparison.excluded) == 6 - len(base) - len(technique) - sum(v[metric] is None for v in values)
        for name, kept in (("baseline", base), ("prune", technique)):
            mean = groups[name].means[metric]
            assert (mean is None) == (not kept), (metric, name)
            if kept:
                assert mean == pytest.approx(_exact_mean(kept), rel=1e-9)
        base_mean = _exact_mean(base) if base else None
        for row, taken_value in zip(rows[3:], taken[1]):
            expected = None
            if taken_value is not None and base_mean is not None:
                if metric in compare.DIFFERENCE_METRICS:
                    expected = 100 * (taken_value - base_mean)
                else:
                    expected = 100 * (taken_value - base_mean) / base_mean  # the baseline mean is positive here
            if expected is None or not math.isfinite(expected):
                assert row.change[metric] is None, (metric, row.run.value(metric), base_mean)
            else:
                assert row.change[metric] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_a_negative_baseline_reads_as_no_change_not_a_saving(tmp_path):
    """Net energy below idle (-100, -103, -97 J) against 45 J: no percent, in the table and the TUI alike."""
    path = tmp_path / "runs.db"
    energies = [-100.0, -103.0, -97.0, 45.0, 46.0, 44.0]
    _store(path, [{"energy_training_j": e, "val_accuracy": 0.9} for e in energies])
    runs = Store.reader(path).runs()
    groups = {g.technique: g for g in compare.summarize(runs)}
    assert groups["baseline"].means["energy_training_j"] is None
    assert groups["prune"].change["energy_training_j"] is None
    assert all(row.change["energy_training_j"] is None for row in table_rows(runs, {}))
    (verdict,) = compare.judge(runs, metrics=("energy_training_j",))
    assert verdict.verdict == stats.INSUFFICIENT and verdict.stats.n_baseline == 0
    assert "-145" not in render.render_text([verdict])


@pytest.mark.parametrize(
    "analysis, shown",
    [
        ('{"alpha": 0.9}', "its stored alpha is not valid"),
        ('{"alpha": "x", "equivalence_margin": 0.1}', "its stored alpha is not valid"),
        ('{"primary": "nonsense"}', "its stored primary is not valid"),
        ("not json", None),
    ],
)
def test_a_hand_edited_plan_is_read_with_its_defaults_and_says_so(tmp_path, capsys, analysis, shown):
    path = tmp_path / "runs.db"
    values = [{"energy_training_j": 100.0 + i, "val_accuracy": 0.9} for i in range(3)]
    values += [{"energy_training_j": 80.0 + i, "val_accuracy": 0.9} for i in range(3)]
    _store(path, values, plan_analysis=analysis)
    (plan,) = Store.reader(path).plans().values()
    assert plan.analysis.alpha == (0.05 if "alpha" in analysis or analysis == "not json" else plan.analysis.alpha)
    assert cli.main(["report", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    if shown:
        assert shown in out and "default" in out
    if "equivalence_margin" in analysis:
        assert plan.analysis.equivalence_margin == 0.1  # the valid values are kept


def test_the_plot_draws_a_damaged_store(tmp_path, capsys):
    path = tmp_path / "runs.db"
    values = [
        {"energy_training_j": v, "energy_j": v, "val_accuracy": a}
        for v, a in [(100.0, 0.9), ("abc", 1e308), (-5.0, 0.91), (80.0, math.inf), (0.0, 0.9), (81.0, 0.92)]
    ]
    _store(path, values)
    assert cli.main(["report", "--db", str(path), "--plot", str(tmp_path / "p.svg")]) == 0, capsys.readouterr().err
    assert (tmp_path / "p.svg").stat().st_size > 1000
