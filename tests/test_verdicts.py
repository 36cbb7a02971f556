"""Verdicts a statistician signs: each defect of the old report as a test, the plan's family, and properties
over random stores (no format crashes, the interval and the test agree, unrelated runs change nothing,
energies of 0 or below never save)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenlab import cli
from greenlab.core.plan.analysis import AnalysisSettings, Cell, Plan
from greenlab.core.report import compare, render
from greenlab.core.report.plot import build_figure
from greenlab.core.store.rows import RunRow

FORMATS = ("text", "markdown", "latex", "csv", "json", "codecarbon")


class Rows:
    """Synthetic run rows (the store's columns a verdict reads), with ids in insertion order."""

    def __init__(self) -> None:
        self.rows: list[RunRow] = []

    def add(
        self,
        technique: str,
        energy: float | None,
        *,
        accuracy: float = 0.9,
        model: str = "m",
        experiment: str = "a",
        plan_id: int | None = None,
        conditions: str | None = None,
        **extra,
    ) -> RunRow:
        row = RunRow.of(
            id=len(self.rows) + 1,
            experiment=experiment,
            model=model,
            dataset="digits",
            technique=technique,
            status="completed",
            energy_training_j=energy,
            energy_j=None if energy is None else energy + 10,
            duration_s=10.0,
            val_accuracy=accuracy,
            val_f1=accuracy,
            settings_key=f"k{len(self.rows) + 1}",
            conditions_key=conditions or f"{model}-cond",
            plan_id=plan_id,
            **{"energy_measured_j": 1.0, "energy_estimated_j": 0.0, **extra},
        )
        self.rows.append(row)
        return row

    def cell(self, technique: str, energies, **kw) -> None:
        for energy in energies:
            self.add(technique, energy, **kw)


def plan_of(rows: list[dict], experiment: str, plan_id: int, **analysis) -> Plan:
    cells = sorted(
        {
            (r["conditions_key"], r["technique"], r["model"])
            for r in rows
            if r["experiment"] == experiment and r["technique"] != "baseline"
        }
    )
    return Plan(
        AnalysisSettings(**analysis),
        tuple(Cell(c, t, m, experiment) for c, t, m in cells),
        f"{experiment}.toml",
        id=plan_id,
    )


def by_cell(comparisons, metric="energy_training_j"):
    return {(c.model, c.technique): c for c in comparisons if c.metric == metric}


def render_all(comparisons, rows) -> None:
    """Every format, as `greenlab report` renders it: none may raise."""
    render.render_text(comparisons)
    render.render_markdown(comparisons)
    render.render_latex(comparisons)
    json.loads(render.render_json(comparisons))
    render.render_csv(rows, comparisons, compare.METRICS)
    render.render_codecarbon(rows)
    render.verdict_summary(comparisons)


# -- the defects, each as it was seen ----------------------------------------------------------------------------
def test_identical_values_that_are_not_binary_exact_do_not_crash_any_format():
    """Accuracy 0.1 in three runs of each side (a diverged 10-class model) divided by zero in the log TOST."""
    r = Rows()
    for technique in ("baseline", "prune"):
        for energy in (100.0, 101.0, 99.0):
            r.add(technique, energy, accuracy=0.1)
    comparisons = compare.judge(r.rows)
    render_all(comparisons, r.rows)
    accuracy = by_cell(comparisons, "val_accuracy")[("m", "prune")]
    assert accuracy.verdict == "no spread" and accuracy.stats.p_value is None
    assert "identical in all 3 runs of each side: 10.0 % against 10.0 % validation accuracy" in accuracy.sentence


def test_json_never_fails_on_a_store_with_energies_of_zero_or_below():
    """The Fieller branch (any energy <= 0) made `--format json` fail with a numpy bool."""
    r = Rows()
    r.cell("baseline", [100.0, 0.0, 98.0])
    r.cell("prune", [50.0, 52.0, -3.0])
    comparisons = compare.judge(r.rows)
    data = json.loads(render.render_json(comparisons))
    assert all(isinstance(o["equivalent"], (bool, type(None))) for o in data)


def test_a_negative_baseline_never_turns_into_a_saving_and_is_named():
    """Net energy below idle (-100, -103, -97 J) made a technique that used 45 J 'save 55 %'."""
    r = Rows()
    for energy in (-100.0, -103.0, -97.0):
        r.add("baseline", energy, flags='["net_below_idle"]')
    r.cell("prune", [45.0, 46.0, 44.0])
    (c,) = compare.judge(r.rows, metrics=("energy_training_j",))
    assert c.verdict == "insufficient" and c.stats.n_baseline == 0
    assert [e.run_id for e in c.excluded] == [1, 2, 3] and {e.reason for e in c.excluded} == {"net below idle"}
    assert "3 runs with training energy ≤ 0 or not finite left out: ids 1, 2, 3 (net below idle)" in c.sentence
    assert "saves" not in c.sentence


def test_two_left_out_runs_are_counted_and_the_rest_still_judged():
    r = Rows()
    r.cell("baseline", [100.0, 101.0, 99.0, 0.0, 100.5])
    r.cell("prune", [60.0, 61.0, 59.0, float("nan"), 60.5])
    (c,) = compare.judge(r.rows, metrics=("energy_training_j",))
    assert (c.stats.n, c.stats.n_baseline) == (4, 4) and c.verdict == "saves"
    assert [(e.run_id, e.reason) for e in c.excluded] == [(9, "not finite"), (4, "zero")]
    assert "2 runs with training energy ≤ 0 or not finite left out: ids 9, 4 (not finite, zero)" in c.sentence
    assert c.to_dict()["excluded"][0] == {"run_id": 9, "side": "technique", "value": None, "reason": "not finite"}


@pytest.mark.parametrize(
    "metric, technique_value, baseline_value, n",
    [("energy_training_j", 90.0, 100.0, 3), ("val_accuracy", 0.88, 0.90, 5)],
)
def test_two_constant_samples_give_no_p_and_no_saving(metric, technique_value, baseline_value, n):
    r = Rows()
    for _ in range(n):
        if metric == "val_accuracy":
            r.add("baseline", 100.0 + len(r.rows), accuracy=baseline_value)
            r.add("prune", 100.0 + len(r.rows), accuracy=technique_value)
        else:
            r.add("baseline", baseline_value)
            r.add("prune", technique_value)
    c = by_cell(compare.judge(r.rows, metrics=(metric,)), metric)[("m", "prune")]
    assert c.verdict == "no spread" and c.stats.p_value is None and c.p_holm is None
    assert f"identical in all {n} runs of each side" in c.sentence and "p <" not in c.sentence


def test_ci_and_p_are_one_scale():
    r = Rows()
    r.cell("baseline", [100.0, 101.0, 99.0, 100.0, 160.0])
    r.cell("prune", [80.0, 82.0, 81.0, 83.0])
    (c,) = compare.judge(r.rows, metrics=("energy_training_j",))
    low, high = c.interval
    assert (high < 1 or low > 1) == (c.stats.p_value < 0.05)


def family_store(extra_null_experiment: bool) -> list[dict]:
    """Experiment a: prune (p about 0.012) and two nulls. Experiment b (optional): three more nulls."""
    r = Rows()
    r.cell("baseline", [100.0, 103.0, 97.0, 101.0], experiment="a", plan_id=1)
    r.cell("prune", [92.0, 94.0, 90.0, 93.0], experiment="a", plan_id=1)
    r.cell("stego", [101.0, 99.0, 102.0, 98.0], experiment="a", plan_id=1)
    r.cell("lowrank", [100.0, 104.0, 96.0, 100.0], experiment="a", plan_id=1)
    if extra_null_experiment:
        for technique in ("prune", "stego", "lowrank"):
            r.cell("baseline", [50.0, 51.0, 49.0], experiment="b", model="n", plan_id=2)
            r.cell(technique, [50.5, 49.5, 50.0], experiment="b", model="n", plan_id=2)
    return r.rows


def plans_for(rows):
    return {1: plan_of(rows, "a", 1), 2: plan_of(rows, "b", 2)}


def test_a_verdict_does_not_depend_on_what_else_the_store_holds_or_a_filter():
    alone_rows = family_store(False)
    shared_rows = family_store(True)
    alone = by_cell(compare.judge(alone_rows, plans_for(alone_rows)))[("m", "prune")]
    shared = by_cell(compare.judge(shared_rows, plans_for(shared_rows)))[("m", "prune")]
    filtered = by_cell(compare.of_experiment(compare.judge(shared_rows, plans_for(shared_rows)), "a"))[("m", "prune")]
    assert alone.holm_family == shared.holm_family == filtered.holm_family == 3
    assert alone.verdict == shared.verdict == filtered.verdict
    assert alone.p_holm == pytest.approx(shared.p_holm) and alone.sentence == shared.sentence
    # a view of some rows picks comparisons; it never re-judges them
    shown = [r["id"] for r in shared_rows if r["technique"] == "prune" and r["experiment"] == "a"]
    (picked,) = [
        c
        for c in compare.of_runs(compare.judge(shared_rows, plans_for(shared_rows)), shown)
        if c.metric == "energy_training_j"
    ]
    assert picked.verdict == alone.verdict and picked.p_holm == pytest.approx(alone.p_holm)


def test_a_declared_comparison_without_runs_still_counts_in_the_family():
    rows = family_store(False)
    plan = plan_of(rows, "a", 1)
    bigger = Plan(plan.analysis, (*plan.cells, Cell("never-run", "prune", "x", "a")), "a.toml", id=1)
    c = by_cell(compare.judge(rows, {1: bigger}))[("m", "prune")]
    assert c.holm_family == 4


def test_accuracy_equivalence_states_the_margin_tested():
    r = Rows()
    for acc in (0.900, 0.905, 0.895, 0.902):
        r.add("baseline", 100.0 + 10 * acc, accuracy=acc)
    for acc in (0.901, 0.906, 0.896, 0.903):
        r.add("stego", 100.0 + 10 * acc, accuracy=acc)
    c = by_cell(compare.judge(r.rows, metrics=("val_accuracy",)), "val_accuracy")[("m", "stego")]
    assert c.verdict == "equivalent"
    assert "within ±1 pp" in c.sentence and "±5 %" not in c.sentence and "4.5 pp" not in c.sentence
    data = c.to_dict()
    assert data["margin_pp"] == 1.0 and data["margin"] is None and data["equivalence_bounds"] == [-1.0, 1.0]
    # the interval the equivalence reads is given in the band's unit too: inside [-1, 1] pp, as decided
    low, high = data["difference_pp_ci90_low"], data["difference_pp_ci90_high"]
    assert -1.0 < low < high < 1.0
    assert low == pytest.approx(100 * data["difference_ci90_low"]) and high == pytest.approx(
        100 * data["difference_ci90_high"]
    )


def test_the_ratio_band_is_symmetric_on_the_log_scale():
    r = Rows()
    r.cell("baseline", [100.0, 101.0, 99.0, 100.5, 99.5])
    r.cell("prune", [100.2, 100.8, 99.6, 100.4, 100.0])
    c = by_cell(compare.judge(r.rows))[("m", "prune")]
    low, high = c.to_dict()["equivalence_bounds"]
    assert math.log(high) == pytest.approx(-math.log(low)) and high == pytest.approx(1.05)
    assert "ratio 0.952–1.050, symmetric on the log scale" in c.sentence


def test_significant_and_negligible_are_both_said():
    r = Rows()
    r.cell("baseline", [100.0, 100.2, 99.8, 100.1, 99.9, 100.0])
    r.cell("prune", [98.0, 98.2, 97.8, 98.1, 97.9, 98.0])
    c = by_cell(compare.judge(r.rows))[("m", "prune")]
    assert c.verdict == "saves" and c.negligible and c.word == "saves, negligible"
    assert "significant yet negligible" in c.sentence and c.to_dict()["negligible"] is True
    assert render.mark(c) == "↓≈"


def test_an_estimated_energy_says_so_in_its_word_and_json():
    r = Rows()
    r.cell("baseline", [100.0, 101.0, 99.0], energy_measured_j=0.0, energy_estimated_j=100.0)
    r.cell("prune", [60.0, 61.0, 59.0], energy_measured_j=0.0, energy_estimated_j=60.0)
    c = by_cell(compare.judge(r.rows))[("m", "prune")]
    assert c.word == "saves (estimated)" and c.to_dict()["energy_method"] == "estimated"
    assert "so this is a saving in time" in c.sentence
    costly = Rows()
    costly.cell("baseline", [60.0, 61.0, 59.0], energy_measured_j=0.0, energy_estimated_j=60.0)
    costly.cell("prune", [100.0, 101.0, 99.0], energy_measured_j=0.0, energy_estimated_j=100.0)
    cost = by_cell(compare.judge(costly.rows))[("m", "prune")]
    assert cost.word == "costs (estimated)" and "so this is a cost in time as much as in energy" in cost.sentence
    same = Rows()
    same.cell("baseline", [100.0, 101.0, 99.0], energy_measured_j=0.0, energy_estimated_j=100.0)
    same.cell("prune", [100.2, 100.9, 99.4], energy_measured_j=0.0, energy_estimated_j=100.0)
    equal = by_cell(compare.judge(same.rows))[("m", "prune")]
    assert equal.word == "equivalent (estimated)" and render.mark(equal).endswith(render.ESTIMATED_MARK)
    assert "so this is an equivalence in time" in equal.sentence
    r.rows[0] = r.rows[0].replaced(energy_measured_j=50.0)
    mixed = by_cell(compare.judge(r.rows))[("m", "prune")]
    assert mixed.energy_method == "mixed" and mixed.word == "saves (partly estimated)"
    time = by_cell(compare.judge(r.rows, metrics=("duration_s",)), "duration_s")
    assert all(c.energy_method is None for c in time.values())


def test_diagnostics_flag_outliers_spread_and_order_and_drop_nothing():
    r = Rows()
    r.cell("baseline", [100.0, 101.0, 99.0, 100.0, 160.0])  # an outlier
    r.cell("prune", [80.0, 84.0, 88.0, 92.0, 96.0])  # a steady rise with run order
    r.cell("stego", [130.0, 100.0, 101.0, 99.0, 100.0])  # a slow first run
    found = by_cell(compare.judge(r.rows))
    prune, stego = found[("m", "prune")], found[("m", "stego")]
    kinds = {(d.side, d.kind) for d in prune.diagnostics}
    assert ("baseline", "outlier") in kinds and ("technique", "drift") in kinds
    assert ("baseline", "high_cv") in kinds  # 160 among 100s: CV 22 %
    assert prune.stats.n_baseline == 5  # flagged, not dropped
    outlier = next(d for d in prune.diagnostics if d.kind == "outlier")
    assert outlier.run_ids == (5,) and "baseline run 5 is an outlier (160 J" in outlier.text
    assert ("technique", "warm_up") in {(d.side, d.kind) for d in stego.diagnostics}
    text = render.render_text(compare.judge(r.rows))
    assert text.index("check (training energy): baseline run 5 is an outlier") < text.index("[primary] prune")
    summary = render.verdict_summary(compare.judge(r.rows))
    table = summary.index("Verdicts on training energy")
    assert summary.index("check: m: baseline run 5 is an outlier") < table  # read before the verdicts
    prune_row = next(line for line in summary[table:].splitlines() if line.startswith("m ") and "prune" in line)
    assert prune_row.endswith("(see check)")
    assert prune.to_dict()["diagnostics"][0]["kind"] in ("outlier", "drift", "high_cv", "warm_up")


def test_post_hoc_values_are_labelled_in_every_format(tmp_path, capsys):
    from greenlab.core.plan.analysis import PostHoc

    r = Rows()
    r.cell("baseline", [100.0, 101.0, 99.0], plan_id=1)
    r.cell("prune", [100.5, 100.8, 99.6], plan_id=1)
    plans = {1: plan_of(r.rows, "a", 1)}
    comparisons = compare.judge(r.rows, plans, post_hoc=PostHoc(equivalence_margin=0.1, alpha=0.1))
    for text in (
        render.render_text(comparisons),
        render.render_markdown(comparisons),
        render.render_latex(comparisons),
    ):
        assert "Post hoc" in text and "declared 0.05" in text
    table = render.render_csv(r.rows, comparisons, ("energy_training_j",))
    assert "equivalence_margin=0.1 (declared 0.05)" in table and "alpha=0.1 (declared 0.05)" in table
    data = json.loads(render.render_json(comparisons))
    assert data[0]["post_hoc"] == {
        "alpha": {"used": 0.1, "declared": 0.05},
        "equivalence_margin": {"used": 0.1, "declared": 0.05},
    }
    assert data[0]["plan"]["equivalence_margin"] == 0.05 and data[0]["margin"] == 0.1


# -- properties over random stores ---------------------------------------------------------------------------
energy = st.one_of(
    st.floats(min_value=-50.0, max_value=1e5, allow_nan=False),
    st.just(0.0),
    st.none(),
    st.just(float("nan")),
    st.just(float("inf")),
)
accuracy = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.just(0.1), st.none())
cell_values = st.lists(st.tuples(energy, accuracy), min_size=0, max_size=6)


@st.composite
def stores(draw):
    r = Rows()
    for model in ("m1", "m2"):
        for technique in ("baseline", "prune", "stego"):
            for e, a in draw(cell_values):
                r.add(
                    technique,
                    e,
                    accuracy=0.5 if a is None else a,
                    model=model,
                    experiment="a",
                    plan_id=1,
                    energy_measured_j=draw(st.sampled_from([0.0, 1.0])),
                    energy_estimated_j=1.0,
                )
    return r.rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores())
def test_no_format_crashes_and_nothing_at_or_below_zero_saves(rows):
    plans = {1: plan_of(rows, "a", 1)}
    comparisons = compare.judge(rows, plans)
    render_all(comparisons, rows)
    if comparisons:
        build_figure(rows, comparisons)
    for c in comparisons:
        if c.metric in compare.DIFFERENCE_METRICS:
            continue
        values = [v for _, v in compare.usable([r for r in rows if r["id"] in c.run_ids], c.metric, "t")[0]]
        assert all(v is None or v > 0 for v in values)
        if c.verdict == "saves" and c.interval is not None:
            assert c.interval[1] < 1  # a saving has its whole (matching) interval below no change
        if c.stats.p_value is not None and c.p_holm is not None and abs(c.p_holm - 0.05) > 1e-9:
            low, high = c.interval
            assert (high < 1 or low > 1) == (c.p_holm < 0.05)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stores(), stores())
def test_unrelated_runs_and_filters_change_no_verdict(rows, unrelated):
    plans = {1: plan_of(rows, "a", 1)}
    before = {(c.cell, c.metric): (c.verdict, c.p_holm, c.sentence) for c in compare.judge(rows, plans)}
    offset = len(rows)
    others = [
        r.replaced(
            id=r["id"] + offset,
            settings_key=f"u{r['id']}",
            experiment="z",
            plan_id=2,
            conditions_key="other-" + r["conditions_key"],
        )
        for r in unrelated
    ]
    plans[2] = plan_of(others, "z", 2)
    together = compare.judge(rows + others, plans)
    after = {(c.cell, c.metric): (c.verdict, c.p_holm, c.sentence) for c in together if c.plan.id == 1}
    assert after == before
    picked = {(c.cell, c.metric): (c.verdict, c.p_holm, c.sentence) for c in compare.of_experiment(together, "a")}
    assert picked == before


def test_the_report_cli_exits_0_on_the_defect_stores(tmp_path, capsys):
    """The store the issue found crashing every format: accuracy 0.1 everywhere, an energy of 0."""
    from greenlab.core.store.database import Store

    path = tmp_path / "defects.db"
    store = Store(path)
    for technique, energies in (("baseline", (100.0, 0.0, 98.0)), ("prune", (50.0, 52.0, 51.0))):
        for repeat, e in enumerate(energies):
            run_id = store.start_run(
                {
                    "experiment": "d",
                    "model": "tinycnn",
                    "technique": technique,
                    "settings_key": f"{technique}{repeat}",
                    "conditions_key": "c",
                }
            )
            store.update_run(
                run_id,
                status="completed",
                energy_training_j=e,
                energy_j=e,
                duration_s=1.0,
                val_accuracy=0.1,
                val_f1=0.1,
            )
    store.close()
    for fmt in FORMATS:
        code = cli.main(["report", "--db", str(path), "--format", fmt])
        out = capsys.readouterr().out
        assert code == 0 and out, fmt


# -- a statistician's review, each finding as a test ----------------------------------------------------------
def test_a_withheld_energy_to_target_shows_no_survivors_estimate():
    r = Rows()
    for energy, target in ((100.0, 50.0), (102.0, 52.0), (98.0, None)):
        r.add("baseline", energy, energy_to_target_j=target, target_accuracy=0.88)
    for energy, target in ((60.0, 30.0), (61.0, 31.0), (59.0, 29.0)):
        r.add("prune", energy, energy_to_target_j=target, target_accuracy=0.88)
    c = by_cell(compare.judge(r.rows, metrics=("energy_to_target_j",)), "energy_to_target_j")[("m", "prune")]
    assert c.verdict == "insufficient" and c.interval is None and c.stats.estimate is None
    assert render.change_text(c, with_ci=True) == "-"
    data = c.to_dict()
    assert data["ratio"] is None and data["adjusted_ci_low"] is None and data["p_value"] is None


def test_an_equivalence_says_when_the_unadjusted_interval_alone_would_have_found_a_change():
    r = Rows()
    r.cell("baseline", [100.0, 100.4, 99.6, 100.2, 99.8, 100.1, 99.9, 100.0], plan_id=1)
    r.cell("a", [98.9, 99.1, 98.8, 99.0, 99.2, 98.9, 99.1, 99.0], plan_id=1)  # -1 %: p about 0.001 alone
    r.cell("b", [100.5, 99.5, 101.0, 99.0, 100.0, 100.2, 99.8, 100.0], plan_id=1)
    r.cell("c", [100.3, 99.7, 100.9, 99.1, 100.1, 100.4, 99.6, 100.0], plan_id=1)
    plan = plan_of(r.rows, "a", 1)
    bigger = Plan(plan.analysis, (*plan.cells, *(Cell(f"x{i}", "t") for i in range(40))), "a.toml", id=1)
    a = by_cell(compare.judge(r.rows, {1: bigger}))[("m", "a")]
    if a.verdict == "equivalent" and a.stats.ci_high < 1:
        assert "Holm's adjustment over the plan's 43 comparisons governs" in a.sentence
    assert a.verdict in ("equivalent", "saves")


def test_outliers_are_not_flagged_in_three_runs_and_a_zero_mad_falls_back():
    from greenlab.core.report import diagnostics

    assert diagnostics.outliers([100.0, 101.0, 160.0]) == []  # three runs cannot tell an outlier
    assert diagnostics.outliers([0.9, 0.9, 0.9, 0.9001]) == []  # MAD 0: the mean deviation stands in
    assert [i for i, _ in diagnostics.outliers([100.0] * 9 + [180.0])] == [9]  # MAD 0, one clearly off
    flagged = 0
    import random

    rng = random.Random(2)
    for _ in range(2000):
        flagged += bool(diagnostics.outliers([rng.gauss(0, 1) for _ in range(5)]))
    assert flagged / 2000 < 0.08  # about 5 % of clean 5-run sides, not the 21 % of the textbook 3.5


def test_one_constant_side_is_flagged():
    r = Rows()
    r.cell("baseline", [100.0, 101.0, 99.0])
    r.cell("prune", [90.0, 90.0, 90.0])
    c = by_cell(compare.judge(r.rows))[("m", "prune")]
    assert any(d.kind == "one_side_constant" and d.side == "technique" for d in c.diagnostics)


def test_small_changes_keep_their_digits_and_two_runs_read_as_both():
    from greenlab.core.report import words

    assert words._num(0.042) == "0.042" and words._num(2.34) == "2.3" and words._num(31.0) == "31"
    r = Rows()
    r.cell("baseline", [100.0, 100.0])
    r.cell("prune", [90.0, 90.0])
    c = by_cell(compare.judge(r.rows))[("m", "prune")]
    assert "identical in both runs of each side" in c.sentence
