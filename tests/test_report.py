"""Comparisons against baselines: matching on conditions, means, confidence intervals, sentences, units."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenlab.core.report import compare, formatting, render, stats
from greenlab.core.store.rows import RunRow


def row(technique, energy, *, epochs=2, acc=0.9, experiment="e", model="m", **settings):
    return RunRow.of(
        experiment=experiment,
        model=model,
        dataset="digits",
        technique=technique,
        status="completed",
        energy_j=energy,
        energy_training_j=energy / 2,
        duration_s=10.0,
        val_accuracy=acc,
        settings=json.dumps({"epochs": epochs, "techniques": {technique: {}}, **settings}),
    )


def test_change_against_the_matching_baseline_only():
    rows = [row("baseline", 100.0), row("baseline", 300.0, epochs=5), row("prune", 50.0), row("prune", 600.0, epochs=5)]
    groups = {(g.technique, g.means["energy_j"]): g for g in compare.summarize(rows)}
    assert groups[("prune", 50.0)].change["energy_j"] == pytest.approx(-50.0)
    assert groups[("prune", 600.0)].change["energy_j"] == pytest.approx(100.0)
    assert compare.changes(rows)[2]["energy_j"] == pytest.approx(-50.0)


def test_experiments_with_the_same_conditions_share_a_baseline():
    rows = [row("baseline", 100.0, experiment="a"), row("prune", 50.0, experiment="b")]
    assert compare.changes(rows)[1]["energy_j"] == pytest.approx(-50.0)
    assert compare.conditions_of(rows[0]) == compare.conditions_of(rows[1])


@pytest.mark.parametrize(
    "key, a, b",
    [
        ("repeats", 1, 3),
        ("carbon_g_per_kwh", 475, 50),
        ("pue", 1.0, 1.5),
        ("price_per_kwh", 0.29, 0.1),
        ("currency", "EUR", "USD"),
        ("equivalence_margin", 0.05, 0.1),
    ],
)
def test_accounting_and_repeats_are_not_conditions(key, a, b):
    assert compare.conditions_of(row("baseline", 1.0, **{key: a})) == compare.conditions_of(
        row("prune", 1.0, **{key: b})
    )


def test_work_settings_model_and_dataset_are_conditions():
    base = row("baseline", 1.0)
    assert compare.conditions_of(base) != compare.conditions_of(row("baseline", 1.0, epochs=3))
    assert compare.conditions_of(base) != compare.conditions_of(row("baseline", 1.0, lr=0.1))
    assert compare.conditions_of(base) != compare.conditions_of(row("baseline", 1.0, model="other"))
    assert compare.conditions_of(base) != compare.conditions_of(base.replaced(dataset="cifar10"))


def test_a_stored_conditions_key_wins():
    a, b = row("baseline", 100.0, epochs=2), row("prune", 50.0, epochs=5)
    a, b = a.replaced(conditions_key="k"), b.replaced(conditions_key="k")
    assert compare.conditions_of(a) == compare.conditions_of(b) == "k"
    assert compare.changes([a, b])[1]["energy_j"] == pytest.approx(-50.0)
    assert compare.conditions_of(a.replaced(conditions_key=None)) != "k"  # NULL: computed from the settings


def test_a_forced_rerun_replaces_its_earlier_run():
    first = row("baseline", 100.0).replaced(id=1, settings_key="s")
    rerun = row("baseline", 200.0).replaced(id=2, settings_key="s")
    assert compare.latest_runs([rerun, first]) == [rerun]


def test_comparisons_and_sentences():
    rows = [
        row("baseline", e, acc=a).replaced(id=i)
        for i, (e, a) in enumerate([(100.0, 0.900), (102.0, 0.902), (98.0, 0.898)])
    ]
    rows += [
        row("stego", e, acc=a).replaced(id=10 + i)
        for i, (e, a) in enumerate([(70.0, 0.900), (71.0, 0.902), (69.0, 0.898)])
    ]
    rows += [row("prune", e).replaced(id=20, experiment="other") for e in [80.0]]
    found = {(c.technique, c.metric): c for c in compare.judge(rows, metrics=("energy_j", "val_accuracy"))}
    stego = found[("stego", "energy_j")]
    assert stego.verdict == "saves" and stego.holm_family == 1  # prune has one run: no p, not in the family
    assert stego.sentence.startswith("stego saves 30 % whole-run energy (95 % CI ")
    assert stego.stats.estimate == pytest.approx((70 * 71 * 69) ** (1 / 3) / (100 * 102 * 98) ** (1 / 3))
    assert "n = 3 vs 3" in stego.sentence and stego.baseline_run_ids == (0, 1, 2)
    assert found[("stego", "val_accuracy")].verdict == "equivalent"
    assert found[("stego", "val_accuracy")].to_dict()["difference_pp"] == pytest.approx(0.0, abs=1e-9)
    prune = found[("prune", "energy_j")]
    assert prune.verdict == "insufficient" and "one run per cell cannot show significance" in prune.sentence
    only_other = compare.of_experiment(compare.judge(rows, metrics=("energy_j",)), "other")
    assert [c.technique for c in only_other] == ["prune"]
    assert only_other[0].stats.n_baseline == 3  # baselines come from every experiment


def test_a_technique_without_baseline_is_insufficient_and_says_why():
    (c,) = compare.judge([row("prune", 1.0).replaced(id=1), row("prune", 2.0).replaced(id=2)], metrics=("energy_j",))
    assert c.verdict == "insufficient" and "no completed baseline" in c.sentence


def test_the_margin_comes_from_the_plan_post_hoc_values_are_labelled_and_old_runs_keep_theirs():
    from greenlab.core.plan.analysis import AnalysisSettings, Cell, Plan, PostHoc

    rows = [row("baseline", 100.0 + i).replaced(id=i) for i in range(3)]
    rows += [row("prune", 100.0 + i, equivalence_margin=0.2).replaced(id=10 + i) for i in range(3)]
    # runs from before plans: an implied plan with the margin they stored
    (old,) = compare.judge(rows, metrics=("energy_j",))
    assert old.analysis.equivalence_margin == 0.2 and not old.plan.declared
    assert "no declared plan" in old.plan.describe()
    (posthoc,) = compare.judge(rows, metrics=("energy_j",), post_hoc=PostHoc(equivalence_margin=0.01))
    assert posthoc.analysis.equivalence_margin == 0.01 and posthoc.post_hoc == {"equivalence_margin": (0.01, 0.2)}
    assert posthoc.to_dict()["post_hoc"] == {"equivalence_margin": {"used": 0.01, "declared": 0.2}}
    # runs of a declared plan: its margin, whatever the runs' settings say
    key = compare.conditions_of(rows[3])
    plan = Plan(AnalysisSettings(equivalence_margin=0.1), (Cell(key, "prune"),), "e.toml", id=7)
    planned = [r.replaced(plan_id=7) for r in rows]
    (declared,) = compare.judge(planned, {7: plan}, metrics=("energy_j",))
    assert declared.analysis.equivalence_margin == 0.1 and declared.plan.id == 7
    assert declared.stats.equivalence_bounds == pytest.approx((1 / 1.1, 1.1))


def test_confidence_interval_uses_the_exact_t_quantile():
    values = [10.0 + i for i in range(12)]  # 11 degrees of freedom: t = 2.201
    from statistics import stdev

    from scipy.stats import t

    assert stats.mean_ci95(values) == pytest.approx(t.ppf(0.975, 11) * stdev(values) / 12**0.5)
    assert stats.mean_ci95(values) == pytest.approx(2.201 * stdev(values) / 12**0.5, rel=1e-4)  # printed tables
    assert stats.mean_ci95(values[:2] * 40) == pytest.approx(t.ppf(0.975, 79) * stdev(values[:2] * 40) / 80**0.5)
    assert stats.mean_ci95([1.0]) is None


def test_energy_and_interval_share_a_unit():
    assert formatting.energy(7400.0, 994.0) == "2.06±0.28 Wh"
    assert formatting.energy(12.0, 1.5) == "12.0±1.5 J"
    assert formatting.energy(None) == "-"


def test_the_headless_summary_says_plainly_that_one_run_cannot_show_significance():
    from greenlab.core.report import render

    rows = [row("baseline", 100.0).replaced(id=1), row("lowrank", 128.6).replaced(id=2)]
    text = render.verdict_summary(compare.judge(rows, metrics=("energy_training_j",)))
    assert "insufficient" in text and "1v1" in text
    assert "One run per cell cannot show significance: set repeats = 3" in text
    rows += [row("baseline", e).replaced(id=10 + i) for i, e in enumerate([102.0, 98.0])]
    rows += [row("lowrank", e).replaced(id=20 + i) for i, e in enumerate([70.0, 71.0])]
    text = render.verdict_summary(compare.judge(rows, metrics=("energy_training_j",)))
    assert "One run per cell" not in text and "m: lowrank" in text and "[" in text


def test_the_headless_table_says_what_its_plus_minus_and_delta_are_and_stays_aligned():
    from greenlab.headless import summary_table

    rows = [
        row("baseline", e, acc=a).replaced(id=i)
        for i, (e, a) in enumerate([(2000.0, 0.9), (2200.0, 0.92), (1800.0, 0.88)])
    ]
    rows += [row("stego", e).replaced(id=10 + i) for i, e in enumerate([1400.0, 1500.0, 1440.0])]
    text = summary_table(rows)
    assert "±: half-width of the 95 % confidence interval of the mean" in text
    assert "Δ: the mean against the baseline's mean" in text
    header, _, *table = text.splitlines()
    energy_end = header.index(" energy") + len(" energy")
    for line in table[:2]:
        assert "±" in line and line[energy_end - 1] == "J"  # the energy with its ± fits its column
    single = summary_table([row("baseline", 100.0).replaced(id=1), row("stego", 70.0).replaced(id=2)])
    assert "±" not in single and "Δ: the mean" in single  # no interval from one run, so no legend for it


def test_the_verdicts_header_names_no_holm_family_when_no_comparison_has_a_p():
    from greenlab.core.report import render

    rows = [row("baseline", 100.0).replaced(id=1), row("stego", 70.0).replaced(id=2)]
    text = render.verdict_summary(compare.judge(rows, metrics=("energy_training_j",)))
    assert "Holm over 0" not in text and "no comparison has a p-value: fewer than 2 runs a side" in text
    legend = render.legend(compare.judge(rows, metrics=("energy_training_j",)))
    assert "Holm over 0" not in legend and "no comparison has a p-value" in legend
    rows += [row("baseline", e).replaced(id=10 + i) for i, e in enumerate([102.0, 98.0])]
    rows += [row("stego", e).replaced(id=20 + i) for i, e in enumerate([70.0, 71.0])]
    text = render.verdict_summary(compare.judge(rows, metrics=("energy_training_j",)))
    assert "Holm over each plan's declared family (1 comparison)" in text


def test_the_docs_promise_the_headless_table_what_it_shows():
    from tests.conftest import REPO

    docs = " ".join((REPO / "docs" / "commands.md").read_text().split())
    start = docs.index("The headless summary shows")
    paragraph = docs[start : docs.index("Exit codes of `--headless`", start)]
    assert "each with its change in percent (and a 95 % confidence interval" not in paragraph
    assert "half-width of the 95 % confidence interval of its mean" in paragraph


def test_the_readme_shows_the_verdicts_table_headed_as_the_headless_run_prints_it():
    from tests.conftest import REPO

    rows = [row("baseline", e).replaced(id=i) for i, e in enumerate([100.0, 102.0, 98.0])]
    rows += [row("prune", e).replaced(id=10 + i) for i, e in enumerate([70.0, 71.0, 69.0])]
    text = render.verdict_summary(compare.judge(rows, metrics=("energy_training_j",)))
    header, rule = text.splitlines()[1:3]
    assert f"{header}\n{rule}\n" in (REPO / "README.md").read_text() and " 3v3 " in text


def test_accuracy_is_equivalent_only_within_a_point():
    """A relative 5 % would call 90 % and 86 % equivalent; accuracy is judged within ±1 pp."""
    base = [row("baseline", 100.0, acc=a).replaced(id=i) for i, a in enumerate([0.900, 0.905, 0.895])]
    near = [row("stego", 100.0, acc=a).replaced(id=10 + i) for i, a in enumerate([0.901, 0.906, 0.896])]
    far = [row("prune", 100.0, acc=a).replaced(id=20 + i) for i, a in enumerate([0.880, 0.885, 0.875])]
    found = {c.technique: c for c in compare.judge(base + near + far, metrics=("val_accuracy",))}
    assert found["stego"].verdict == "equivalent"
    assert found["prune"].verdict == "costs"  # 2 pp less, clearly


def test_energy_to_target_with_runs_that_never_reached_it_is_insufficient():
    base = [row("baseline", 100.0).replaced(id=i, energy_to_target_j=e) for i, e in enumerate([50.0, 52.0, 51.0])]
    tech = [row("prune", 100.0).replaced(id=10 + i, energy_to_target_j=e) for i, e in enumerate([20.0, 21.0, None])]
    (found,) = compare.judge(base + tech, metrics=("energy_to_target_j",))
    assert found.verdict == "insufficient" and found.stats.n_missing == 1


def test_energy_to_target_names_the_runs_that_never_reached_it_not_a_lack_of_values():
    """2 vs 2 values remain: the reason to withhold a verdict is the run per side that dropped out."""

    def cell(technique, energies, first):
        return [
            row(technique, 100.0).replaced(id=first + i, energy_to_target_j=e, target_accuracy=0.889)
            for i, e in enumerate(energies)
        ]

    rows = cell("baseline", [50.0, 52.0, None], 0) + cell("stego", [64.0, 65.0, None], 10)
    (found,) = compare.judge(rows, metrics=("energy_to_target_j",))
    assert found.verdict == "insufficient" and (found.stats.n, found.stats.n_baseline) == (2, 2)
    assert "fewer than 2 runs" not in found.sentence and "too few" not in found.sentence
    assert found.sentence == (
        "stego: energy to the target accuracy is insufficient: 1 of 3 stego runs and 1 of 3 "
        "baseline runs never reached the target (88.9 %), so comparing only the runs that "
        "did would understate both sides' cost"
    )
    assert found.to_dict()["notes"] == [
        "verdict withheld: 1 of 3 stego runs and 1 of 3 baseline runs never "
        "reached the target accuracy; comparing only the runs that did would be "
        "biased"
    ]
    rows = cell("baseline", [50.0, 52.0, 51.0], 0) + cell("stego", [64.0, 65.0, None], 10)
    (found,) = compare.judge(rows, metrics=("energy_to_target_j",))
    assert (
        "1 of 3 stego runs never reached" in found.sentence
        and "favour stego, which reached it less often" in found.sentence
    )


def test_runs_to_decide_are_counted_at_the_holm_level_the_verdict_uses():
    """5 % alone would promise a decision from runs that the Holm-adjusted p then calls inconclusive."""
    rows = [row("baseline", e) for e in (100.0, 104.0, 96.0)]
    rows += [row("prune", e) for e in (88.0, 92.0, 85.0)]  # raw p about 0.02: Holm over the family withholds it
    rows += [row(t, e) for t in ("stego", "lowrank", "mix", "other") for e in (99.0, 103.0, 101.0)]
    prune = next(c for c in compare.judge(rows, metrics=["energy_j"]) if c.technique == "prune")
    s = prune.stats
    assert prune.verdict == "inconclusive" and s.p_value < 0.05 < prune.p_holm
    import math

    plain = stats.repeats_to_decide(s.tested_sd, s.tested_baseline_sd, s.center, math.log1p(0.05))
    assert plain <= 4  # what 5 % alone would have said
    assert prune.repeats_to_decide > max(plain, 3)
    assert f"about {prune.repeats_to_decide} runs per side would likely decide" in prune.sentence


def test_runs_flagged_busy_or_sharing_a_node_are_counted_in_the_sentence_and_notes():
    """The verdict stands, but energy and time say how many of their runs covered other work too."""
    rows = [row("baseline", e).replaced(id=i) for i, e in enumerate((100.0, 101.0, 99.0), 1)]
    rows += [row("prune", e).replaced(id=i) for i, e in enumerate((60.0, 61.0, 59.0), 4)]
    rows[1] = rows[1].replaced(flags=json.dumps(["host_busy"]))
    rows[4] = rows[4].replaced(flags=["host_busy", "shared_node_cpu"])
    by_metric = {c.metric: c for c in compare.judge(rows, metrics=("energy_j", "val_accuracy"))}
    energy = by_metric["energy_j"]
    assert energy.verdict == "saves"
    assert energy.sentence.endswith(
        "; 2 of 6 runs measured beside other work on their host (flags host_busy, shared_node_cpu)"
    )  # a run with both counts once
    assert energy.to_dict()["notes"][-1].startswith("2 of 6 runs measured beside other work")
    assert "other work" not in by_metric["val_accuracy"].sentence  # accuracy is not a figure of the host
    clean = compare.judge([r.replaced(flags="[]") for r in rows], metrics=("energy_j",))
    assert "flag" not in clean[0].sentence and not clean[0].stats.notes


def test_the_verdict_says_when_float32_ran_in_tf32_bfloat16_was_emulated_or_runs_were_input_bound():
    rows = [row("baseline", e).replaced(id=i) for i, e in enumerate((100.0, 101.0, 99.0), 1)]
    rows += [row("stego", e).replaced(id=i) for i, e in enumerate((60.0, 61.0, 59.0), 4)]
    rows = [r.replaced(fp32_precision="tf32") for r in rows]
    rows[3] = rows[3].replaced(compute_dtype="bfloat16", bf16_native=0, flags=["input_bound"])
    (energy,) = compare.judge(rows, metrics=("energy_j",))
    notes = energy.to_dict()["notes"]
    assert "float32 ran in TF32 (10 mantissa bits) in 6 of 6 runs (fp32_precision)" in notes
    assert "bfloat16 was emulated in 1 of 6 runs: their energy is the emulation's" in notes
    assert any(n.startswith("input-bound: 1 of 6 runs waited for data") for n in notes)
    assert "float32 ran in TF32" in energy.sentence and "input-bound" in energy.sentence
    ieee = [r.replaced(fp32_precision="ieee", compute_dtype="float32", flags=[]) for r in rows]
    (clean,) = compare.judge(ieee, metrics=("energy_j",))
    assert not [n for n in clean.to_dict()["notes"] if "TF32" in n or "input-bound" in n]


def test_the_csv_says_what_each_run_computed_in_and_how_long_it_waited_for_data():
    import csv
    import io

    rows = [row("baseline", e).replaced(id=i) for i, e in enumerate((100.0, 101.0), 1)]
    rows += [row("stego", e).replaced(id=i) for i, e in enumerate((60.0, 61.0), 3)]
    rows = [r.replaced(compute_dtype="tf32", fp32_precision="tf32", data_wait_s=0.25) for r in rows]
    comparisons = compare.judge(rows, metrics=("energy_j",))
    table = list(csv.DictReader(io.StringIO(render.render_csv(rows, comparisons, ("energy_j",)))))
    assert {(r["compute_dtype"], r["fp32_precision"], r["data_wait_s"]) for r in table} == {("tf32", "tf32", "0.25")}


def test_a_run_beside_another_job_on_its_gpu_is_counted_as_beside_other_work():
    rows = [row("baseline", e).replaced(id=i) for i, e in enumerate((100.0, 101.0, 99.0), 1)]
    rows += [row("prune", e).replaced(id=i) for i, e in enumerate((60.0, 61.0, 59.0), 4)]
    rows[4] = rows[4].replaced(flags=["gpu_shared"])
    (energy,) = compare.judge(rows, metrics=("energy_j",))
    assert energy.sentence.endswith("; 1 of 6 runs measured beside other work on their host (flag gpu_shared)")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_the_reports_json_text_is_json_dumps_byte_for_byte(value):
    from greenlab.core.report import json_text

    assert json_text.dumps(value) == json.dumps(value, indent=2, allow_nan=False)


def test_the_reports_json_text_refuses_what_json_dumps_refuses_and_hands_it_the_rest():
    import enum

    from greenlab.core.report import json_text

    for bad in (float("nan"), [1.0, float("inf")], {"x": -float("inf")}):
        with pytest.raises(ValueError):
            json_text.dumps(bad)

    class Level(enum.IntEnum):
        HIGH = 2

    for other in ({1: "a", "b": [True, None]}, [Level.HIGH, (1, 2)], {"t": (1.5, "é")}):
        assert json_text.dumps(other) == json.dumps(other, indent=2, allow_nan=False)
