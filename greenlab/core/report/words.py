"""A comparison's verdict in words: the sentence every face prints, and the notes beside it.

Pure functions from a decided comparison (greenlab.core.report.compare.Comparison) to text. The sentence names
the interval that matches the decision (Holm-adjusted in a family of several), the test's p before and
after Holm, the family, the runs on each side, and whatever was left out or declared after the runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from greenlab.core.plan import metrics
from greenlab.core.report import stats

if TYPE_CHECKING:
    from greenlab.core.report.compare import Comparison, Excluded


def _num(value: float) -> str:
    """'30', '2.3', '0.042': enough digits that a small change never reads as 0."""
    if not math.isfinite(value):
        return "unbounded"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 1 or value == 0 else f"{value:.2g}"


def format_p(p: float) -> str:
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3g}" if p < 0.1 else f"p = {p:.2f}"


def _bare_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else format_p(p)[4:]


def _signed(value: float, unit: str) -> str:
    return f"{'+' if value >= 0 else '-'}{_num(abs(value))} {unit}".rstrip()


def _span(low: float, high: float, unit: str, signed: bool = True) -> str:
    """'27–33 %' for the size of a saving or cost; '-10 to +80 %' for a signed change; an end a t interval of
    very few runs cannot bound (e^1000) is said to be unbounded."""
    if not math.isfinite(high):
        return f"{_signed(low, '').strip() if signed else _num(low)} {unit} to unbounded above"
    if not signed:
        return f"{_num(low)}–{_num(high)} {unit}"
    return f"{_signed(low, '').strip()} to {_signed(high, unit)}"


def level_text(level: float) -> str:
    """0.95 -> '95', 0.98333 -> '98.3', 0.99583 -> '99.6'."""
    return f"{100 * level:.3g}"


def _display(c: Comparison, value: float) -> float:
    """A value on the display scale as a change: percent of the baseline for a ratio, pp for a difference."""
    return 100 * (value - 1) if c.stats.scale == stats.RATIO else 100 * value


def value_text(metric: str, value: float) -> str:
    if metric in metrics.DIFFERENCE_METRICS:
        return f"{100 * value:.1f} %"
    if metric == "duration_s":
        return f"{value:.3g} s"
    return f"{value:.4g} J"


def interval_label(c: Comparison) -> str:
    """'95 % CI', or '98.3 % CI (Holm-adjusted, 3 comparisons)' where the family has several."""
    level = c.decision.adjusted_level if c.decision.adjusted_level is not None else 1 - c.analysis.alpha
    if c.holm_family > 1:
        return f"{level_text(level)} % CI (Holm-adjusted, {c.holm_family} comparisons)"
    return f"{level_text(level)} % CI"


def _p_text(c: Comparison) -> str:
    s = c.stats
    if s.p_value is None:
        return "no p"
    text = format_p(s.p_value)
    if c.holm_family > 1 and c.p_holm is not None:
        text += f", Holm {_bare_p(c.p_holm)}"
    return text


def _counts(c: Comparison) -> str:
    return f"n = {c.stats.n} vs {c.stats.n_baseline}"


def sentence(c: Comparison) -> str:
    """The verdict in words, e.g. "stego saves 30 % training energy (95 % CI 27–33 %, p < 0.001, n = 5 vs 5)"."""
    s = c.stats
    label = metrics.label(c.metric)
    in_pp = c.in_pp
    unit = "pp" if in_pp else "%"
    change = None if s.estimate is None else _display(c, s.estimate)
    shown = c.interval
    low, high = (None, None) if shown is None else (_display(c, shown[0]), _display(c, shown[1]))
    verdict = c.verdict

    if verdict == stats.INSUFFICIENT:
        text = _insufficient(c, label, change, unit)
    elif verdict == stats.NO_SPREAD:
        assert s.mean is not None and s.baseline_mean is not None
        sides = (
            "both runs of each side"
            if s.n == s.n_baseline == 2
            else f"all {s.n} runs of each side"
            if s.n == s.n_baseline
            else f"each side ({s.n} technique runs, {s.n_baseline} baseline runs)"
        )
        text = (
            f"{c.technique}: identical in {sides}: {value_text(c.metric, s.mean)} against "
            f"{value_text(c.metric, s.baseline_mean)} {label}; with no spread there is nothing to test the "
            "difference against, so no p-value and no verdict"
        )
    elif c.significant and low is not None and high is not None and change is not None:
        gain = verdict == stats.SAVES
        if in_pp:
            size, lo, hi = (change, low, high) if gain else (-change, -high, -low)
            word = "gains" if gain else "costs"
        else:
            size, lo, hi = (-change, -high, -low) if gain else (change, low, high)
            word = verdict
        more = "" if in_pp or gain else " more"
        text = (
            f"{c.technique} {word} {_num(size)} {unit}{more} {label} ({interval_label(c)} "
            f"{_span(lo, hi, unit, signed=False)}, {_p_text(c)}, {_counts(c)})"
        )
        if c.negligible:
            text += (
                f", significant yet negligible: its {level_text(1 - 2 * c.analysis.alpha)} % CI lies inside "
                f"the declared equivalence band {_band(c)}"
            )
        text += _estimated_clause(c)
    elif verdict == stats.EQUIVALENT and s.eq_low is not None and s.eq_high is not None and change is not None:
        text = (
            f"{c.technique} is equivalent to the baseline in {label} within {_band(c)} "
            f"({_signed(change, unit)}, {level_text(1 - 2 * c.analysis.alpha)} % CI "
            f"{_span(_display(c, s.eq_low), _display(c, s.eq_high), unit)}, TOST {format_p(s.p_equivalence or 1.0)}, "
            f"{_counts(c)})"
        ) + _governs(c)
        text += _estimated_clause(c)
    else:
        observed = _signed(change, unit) if change is not None else "no estimate"
        interval = (
            f"{interval_label(c)} {_span(low, high, unit)}, "
            if low is not None and high is not None
            else "no bounded interval, "
        )
        text = f"{c.technique}: inconclusive on {label}, {observed} ({interval}{_p_text(c)}, {_counts(c)})"
        text += _governs(c)
        if c.repeats_to_decide is not None:
            text += (
                f"; about {c.repeats_to_decide} runs per side would likely decide (80 % power if the "
                "observed difference and spread were the truth)"
            )
        elif s.sufficient:
            text += f"; more than {stats.MAX_REPEATS:,} runs per side would be needed at this spread"
    return text + _missing_note(c) + _post_hoc_note(c)


def _insufficient(c: Comparison, label: str, change: float | None, unit: str) -> str:
    s = c.stats
    if c.metric == "energy_to_target_j" and (s.n_missing or s.n_baseline_missing):
        if s.n == 0 and s.n_baseline:
            where = f" = {100 * c.target:.1f} %" if c.target is not None else ""
            return (
                f"{c.technique} never reached the target accuracy (the baselines' mean minus 1 pp{where}) "
                f"in any of its {s.n_missing} runs: no energy to target to compare"
            )
        return _unreached_sentence(c)
    if not c.baseline_run_ids:
        return (
            f"{c.technique}: no completed baseline with the same conditions to compare {label} with; "
            "run the baseline too"
        )
    left_out = list(c.excluded)
    if left_out and (s.n < 2 or s.n_baseline < 2):
        side = "the baseline" if s.n_baseline < 2 else "its"
        return (
            f"{c.technique}: too few {label} values the analysis can use on {side} side "
            f"({_counts(c)}): {excluded_note(left_out, c.metric)}"
        )
    if s.n == 0 or s.n_baseline == 0:
        return f"{c.technique}: no values of {label} on {'its' if s.n == 0 else 'the baseline'} side"
    observed = f"{_signed(change, unit)} {label}" if change is not None else label
    if s.n + s.n_missing < 2 or s.n_baseline + s.n_baseline_missing < 2:
        why = "one run per cell cannot show significance; set repeats = 3 or more"
    else:
        why = "fewer than 2 runs a side have a value"
    return f"{c.technique}: {observed} from {_counts(c)}, too few to judge: {why}"


def _band(c: Comparison) -> str:
    """'±5 % (ratio 0.952–1.05, symmetric on the log scale)' or '±1 pp', with a post hoc margin said so."""
    if c.in_pp:
        text = f"±{c.analysis.accuracy_margin_pp:g} pp"
        changed = c.post_hoc.get("accuracy_margin_pp")
        if changed:
            text += f" (post hoc; the plan declared ±{changed[1]:g} pp)"
        return text
    low, high = c.stats.equivalence_bounds
    text = f"±{100 * c.analysis.equivalence_margin:g} % (ratio {low:.3f}–{high:.3f}, symmetric on the log scale)"
    changed = c.post_hoc.get("equivalence_margin")
    if changed:
        text += f" (post hoc; the plan declared ±{100 * changed[1]:g} %)"
    return text


def _governs(c: Comparison) -> str:
    """Where the unadjusted 95 % CI excludes no change but Holm's adjustment did not find it significant,
    say which one governs."""
    s = c.stats
    if c.holm_family <= 1 or s.ci_low is None or s.ci_high is None:
        return ""
    if s.ci_high < s.neutral or s.ci_low > s.neutral:
        unit = "pp" if c.in_pp else "%"
        return (
            f"; the unadjusted {level_text(1 - c.analysis.alpha)} % CI "
            f"{_span(_display(c, s.ci_low), _display(c, s.ci_high), unit)} excludes no change, but Holm's "
            f"adjustment over the plan's {c.holm_family} comparisons governs: not significant"
        )
    return ""


def _estimated_clause(c: Comparison) -> str:
    if c.energy_method == "estimated":
        # An estimate is CPU time × watts: whatever it finds, it found in time first.
        found = {"saves": "a saving", "costs": "a cost", "equivalent": "an equivalence"}.get(c.verdict, "a change")
        return (
            f"; the energy is estimated (CPU time × watts, no meter here), so this is {found} in time "
            "as much as in energy"
        )
    if c.energy_method == "mixed":
        return "; part of the energy is estimated (CPU time × watts), part measured"
    return ""


def _post_hoc_note(c: Comparison) -> str:
    changed = c.post_hoc.get("alpha")
    return f"; α = {changed[0]:g} given post hoc (the plan declared {changed[1]:g})" if changed else ""


def _unreached_sentence(c: Comparison) -> str:
    """Why energy to target is not judged when some runs never reached it: enough values may remain on
    both sides, so the count of values is not the reason; the runs that dropped out are."""
    s = c.stats
    where = f" ({100 * c.target:.1f} %)" if c.target is not None else ""
    share = s.n_missing / max(1, s.n + s.n_missing) - s.n_baseline_missing / max(1, s.n_baseline + s.n_baseline_missing)
    if share > 0:
        bias = f"favour {c.technique}, which reached it less often"
    elif share < 0:
        bias = "favour the baseline, which reached it less often"
    else:
        bias = "understate both sides' cost"
    return (
        f"{c.technique}: energy to the target accuracy is insufficient: {unreached_sides(s, c.technique)} "
        f"never reached the target{where}, so comparing only the runs that did would {bias}"
    )


def unreached_sides(s: stats.TwoSample, technique: str) -> str:
    """'1 of 3 stego runs and 1 of 3 baseline runs': each side that lost runs, out of its runs."""
    sides = []
    if s.n_missing:
        sides.append(f"{s.n_missing} of {s.n + s.n_missing} {technique} runs")
    if s.n_baseline_missing:
        sides.append(f"{s.n_baseline_missing} of {s.n_baseline + s.n_baseline_missing} baseline runs")
    return " and ".join(sides)


def unreached_note(s: stats.TwoSample, technique: str) -> str:
    return (
        f"verdict withheld: {unreached_sides(s, technique)} never reached the target accuracy; "
        "comparing only the runs that did would be biased"
    )


DIVERGED_NOTE = "diverged (flag diverged"  # how a face tells this note from the others
# Notes on what a comparison's runs computed and fed (greenlab.core.report.compare), each opening with these.
TF32_NOTE, EMULATED_NOTE, INPUT_BOUND_NOTE = "float32 ran in TF32", "bfloat16 was emulated", "input-bound"


def diverged_note(run_ids: list[int], of: int) -> str:
    """'1 of 6 runs diverged (flag diverged: ...): run 25'; their energy counts, their accuracy means little."""
    ids = ", ".join(str(i) for i in run_ids)
    return (
        f"{len(run_ids)} of {of} runs {DIVERGED_NOTE}: training loss not finite or exploded, or accuracy at "
        f"chance): run{'s' if len(run_ids) != 1 else ''} {ids}; their energy counts here, their accuracy "
        "says nothing about the technique, and energy to target leaves them out"
    )


def excluded_note(excluded: Iterable[Excluded], metric: str) -> str:
    """'2 runs with training energy ≤ 0 left out: ids 4, 7 (net below idle)'; runs that diverged are left
    out of energy to target, and said so."""
    items = list(excluded)
    label = metrics.label(metric)
    parts = []
    for reason, what in (("diverged", "that diverged"), ("paused", "paused mid-run (flag paused)")):
        went_wrong = [e for e in items if e.reason == reason]
        items = [e for e in items if e.reason != reason]
        if went_wrong:
            ids = ", ".join(str(e.run_id) for e in went_wrong)
            parts.append(
                f"{len(went_wrong)} run{'s' if len(went_wrong) != 1 else ''} {what} left out: "
                f"id{'s' if len(went_wrong) != 1 else ''} {ids}"
            )
    if items:
        what = (
            f"{label} ≤ 0 or not finite"
            if metric not in metrics.DIFFERENCE_METRICS
            else f"{label} outside 0–1 or not finite"
        )
        ids = ", ".join(str(e.run_id) for e in items)
        reasons = ", ".join(dict.fromkeys(e.reason for e in items))
        count = f"{len(items)} run{'s' if len(items) != 1 else ''}"
        parts.append(f"{count} with {what} left out: id{'s' if len(items) != 1 else ''} {ids} ({reasons})")
    return "; ".join(parts)


def _missing_note(c: Comparison) -> str:
    s = c.stats
    notes = []
    if (s.n_missing or s.n_baseline_missing) and c.metric != "energy_to_target_j":
        sides = []
        if s.n_missing:
            sides.append(f"{s.n_missing} of {s.n + s.n_missing} technique runs")
        if s.n_baseline_missing:
            sides.append(f"{s.n_baseline_missing} of {s.n_baseline + s.n_baseline_missing} baseline runs")
        notes.append(f"{' and '.join(sides)} have no {c.metric} (left out)")
    if c.excluded and c.verdict != stats.INSUFFICIENT:
        notes.append(excluded_note(c.excluded, c.metric))
    caveats = [
        n
        for n in c.notes
        if "measured beside other work" in n
        or DIVERGED_NOTE in n
        or n.startswith((TF32_NOTE, EMULATED_NOTE, INPUT_BOUND_NOTE))
    ]
    notes += caveats
    return "".join(f"; {n}" for n in notes)
