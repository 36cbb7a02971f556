"""The analysis plan: declared in [analysis] before the runs, validated like every setting, stored with the
grid's first run, and the plan its verdicts are judged by."""

from __future__ import annotations

import pytest

from greenlab.core.errors import ConfigError
from greenlab.core.plan import analysis
from greenlab.core.plan.analysis import AnalysisSettings, Plan, PostHoc
from greenlab.core.plan.config import parse_grid
from greenlab.core.store.database import Store
from tests.conftest import run_cli

BASE = '[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\ntechniques = ["baseline", "prune", "stego"]\n'


def test_defaults_when_no_analysis_table():
    grid = parse_grid(BASE)
    assert grid.analysis == AnalysisSettings()
    assert grid.analysis.primary == "energy_training_j" and grid.analysis.alpha == 0.05
    assert grid.analysis.ratio_band == pytest.approx((1 / 1.05, 1.05))  # symmetric on the log scale
    assert grid.analysis.accuracy_margin_pp == 1.0


def test_a_declared_plan_is_read_and_its_family_is_the_grids_comparisons():
    text = (
        '[analysis]\nprimary = "duration_s"\nalpha = 0.01\nequivalence_margin = 0.1\naccuracy_margin_pp = 2\n'
        + BASE
        + '[[experiment]]\nname = "y"\nmodels = ["tinycnn", "resnet18"]\ntechniques = ["baseline", "lowrank"]\n'
        "epochs = 3\n"
    )
    grid = parse_grid(text, "p.toml")
    assert grid.analysis == AnalysisSettings("duration_s", 0.01, 0.1, 2.0)
    plan = grid.plan()
    # x: tinycnn prune, stego; y: tinycnn lowrank, resnet18 lowrank (baselines are no comparison)
    assert plan.family_size == 4
    assert {(c.model, c.technique) for c in plan.cells} == {
        ("tinycnn", "prune"),
        ("tinycnn", "stego"),
        ("tinycnn", "lowrank"),
        ("resnet18", "lowrank"),
    }
    assert plan.source == "p.toml"


def test_the_same_declaration_is_the_same_plan_whatever_file_or_repeats():
    one = parse_grid(BASE, "a.toml").plan()
    more = parse_grid(BASE.replace('name = "x"', 'name = "x"\nrepeats = 5'), "b.toml").plan()
    assert one.digest() == more.digest()
    other_alpha = parse_grid("[analysis]\nalpha = 0.01\n" + BASE).plan()
    assert other_alpha.digest() != one.digest()


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("alpha = 0", "alpha: must be between 0 and 0.5 (exclusive), got 0"),
        ("alpha = 1", "alpha: must be between 0 and 0.5 (exclusive), got 1"),
        ("alpha = 0.5", "must be between 0 and 0.5"),
        ("equivalence_margin = -0.05", "equivalence_margin: must be between 0 and 1 (exclusive)"),
        ("equivalence_margin = 5", "equivalence_margin: must be between 0 and 1"),
        ("accuracy_margin_pp = -1", "accuracy_margin_pp: must be between 0 and 100"),
        ('primary = "energy"', "unknown primary 'energy'"),
        ('alpha = "0.05"', "alpha: must be a number"),
        ("alpa = 0.05", "unknown key 'alpa'; did you mean 'alpha'?"),
    ],
)
def test_bad_analysis_values_name_file_line_key_and_fix(line, fragment):
    text = BASE + f"\n[analysis]\n{line}\n"
    with pytest.raises(ConfigError) as caught:
        parse_grid(text, "bad.toml")
    message = str(caught.value)
    assert message.startswith("bad.toml:7: analysis."), message
    assert fragment in message, message
    assert "write e.g." in message or "remove it" in message or "analysis keys:" in message, message


def test_analysis_keys_in_defaults_or_an_experiment_point_at_analysis():
    with pytest.raises(ConfigError, match=r"belongs to the analysis plan.*under \[analysis\]"):
        parse_grid("[defaults]\nequivalence_margin = 0.1\n" + BASE, "old.toml")
    with pytest.raises(ConfigError, match=r"old.toml:5: experiment 'x'.alpha: .*\[analysis\]"):
        parse_grid(BASE + "alpha = 0.1\n", "old.toml")


def test_a_bad_plan_on_the_command_line_exits_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + "[analysis]\nalpha = 1\n")
    db = tmp_path / "out.db"
    result = run_cli("--headless", str(bad), "--db", str(db))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "analysis.alpha" in result.stderr and "bad.toml:6" in result.stderr
    assert "Traceback" not in result.stderr and not db.exists()


def test_the_plan_is_stored_with_the_first_run_once_per_declaration(tmp_path):
    plan = parse_grid(BASE, "e.toml").plan()
    store = Store(tmp_path / "runs.db")
    store.declare_plan(plan)
    assert not (tmp_path / "runs.db").exists()  # nothing before the first run
    first = store.start_run({"model": "tinycnn", "technique": "prune"})
    second = store.start_run({"model": "tinycnn", "technique": "stego"})
    again = Store(tmp_path / "runs.db")
    again.declare_plan(parse_grid(BASE, "elsewhere.toml").plan())  # the same declaration from another path
    third = again.start_run({"model": "tinycnn", "technique": "baseline"})
    plans = again.plans()
    assert len(plans) == 1
    (stored,) = plans.values()
    assert [again.run(i)["plan_id"] for i in (first, second, third)] == [stored.id] * 3
    assert stored.digest() == plan.digest() and stored.source == "e.toml" and stored.declared
    assert Store.reader(tmp_path / "runs.db").plans().keys() == plans.keys()


def test_post_hoc_values_are_named_beside_the_declared_ones():
    declared = AnalysisSettings()
    used, changed = PostHoc(equivalence_margin=0.1).apply(declared)
    assert used.equivalence_margin == 0.1 and changed == {"equivalence_margin": (0.1, 0.05)}
    assert PostHoc(alpha=0.05).apply(declared)[1] == {}  # the declared value again is not post hoc
    assert not PostHoc()


def test_the_analysis_table_documents_every_key_and_the_docs_hold_it_as_generated():
    from tests.conftest import REPO

    table = analysis.analysis_table()
    for key in analysis.ANALYSIS_KEYS:
        assert f"`{key}`" in table
    assert table in (REPO / "docs" / "statistics.md").read_text()


def test_an_implied_plan_is_labelled_and_keeps_the_stored_margin():
    plan = analysis.implied("demo", [analysis.Cell("k", "prune")], 0.1)
    assert not plan.declared and plan.analysis.equivalence_margin == 0.1
    assert "no declared plan" in plan.describe()
    assert Plan.from_stored({"id": 3, "analysis": '{"alpha": 0.01}', "cells": "[]"}).analysis.alpha == 0.01
