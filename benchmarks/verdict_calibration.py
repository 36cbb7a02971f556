"""How often the verdicts are wrong, and how often they find what is there: a simulation of the real method.

Every simulated study goes through GreenLab's own code (greenlab.core.report.stats: compare, holm, decide,
repeats_for), exactly as `greenlab report` calls it. A family is a plan's set of comparisons: 1, 4 or 12
techniques; every 4 of them share one baseline sample (one model's baseline, as in a grid).

Designs: n = 3, 5 and 10 runs per side, with equal variances and the technique's variance 3x the
baseline's, log-normal run-to-run noise with a CV of 5, 10 and 20 %; then, at a CV of 10 %, unbalanced
sides (3 against 5, 5 against 3, 2 against 5, 3 against 10: a failed or an extra run, a shared baseline)
and variances 10x unequal, beyond the design the defaults are judged by.
- null: nothing differs. The false-verdict rate is how often `saves` or `costs` is said: per comparison,
  and family-wise (any false claim in the family). At α = 0.05 both must stay at or under 5 % beyond the
  simulation's error (its 95 % interval is printed).
- effect: every technique truly saves 10 % (ratio 0.90). Power is how often `saves` is said.
- repeats to decide: for each `inconclusive` under the effect, a fresh study of the suggested number of
  runs per side, at the family's strictest Holm level (what the estimate promises, with 80 % power); how
  often it decides (saves, costs or equivalent).
- false equivalence: the technique truly costs exactly the margin (ratio 1.05, the band's edge); how often
  `equivalent` is said (two one-sided tests at α: at most α).

- payback (greenlab.core.report.payback): a technique that costs 30 % more to fine-tune (1,300 J against
  1,000 J) and saves 0.1 J of 0.7 J per inference pays back after 3,000 inferences; how often the
  interval of that point (Fieller's) holds 3,000 (its coverage, at 95 %), and how often "pays back" is said.

Usage: python benchmarks/verdict_calibration.py [--sims 1000] [--seed 1] [--payback-only]. Two processes
share the work.
Nothing is asserted; the table in docs/statistics.md comes from a run of this script.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from greenlab.core.report import stats

ALPHA = 0.05
MARGIN = 0.05
SIZES = ((3, 3), (5, 5), (10, 10))  # (technique runs, baseline runs): the defaults' balanced designs
VARIANCES = (1.0, 3.0)  # technique variance / baseline variance (of the logs)
CVS = (0.05, 0.10, 0.20)
FAMILIES = (1, 4, 12)
BEYOND = [
    ((3, 5), 3.0),
    ((5, 3), 3.0),
    ((2, 5), 3.0),
    ((3, 10), 3.0),
    ((3, 5), 10.0),
    ((3, 3), 10.0),
    ((5, 5), 10.0),
]  # unbalanced sides and 10x variances, at a CV of 10 %
EFFECT = 0.90


@dataclass(frozen=True)
class Design:
    n: int
    n_baseline: int
    variance_ratio: float
    cv: float
    family: int


def _sample(rng: random.Random, n: int, log_mean: float, log_sd: float) -> list[float]:
    return [math.exp(rng.gauss(log_mean, log_sd)) for _ in range(n)]


def _family(rng: random.Random, d: Design, ratio: float) -> list[stats.TwoSample]:
    """One simulated plan: `family` comparisons, every 4 sharing a baseline sample."""
    sd0 = math.sqrt(math.log1p(d.cv**2))
    sd1 = sd0 * math.sqrt(d.variance_ratio)
    results = []
    baseline: list[float] = []
    for i in range(d.family):
        if i % 4 == 0:
            baseline = _sample(rng, d.n_baseline, 0.0, sd0)
        results.append(stats.compare(_sample(rng, d.n, math.log(ratio), sd1), baseline, alpha=ALPHA, margin=MARGIN))
    return results


def _decide(results: list[stats.TwoSample], family: int) -> list[tuple[stats.Decision, stats.HolmStep]]:
    steps = stats.holm([r.p_value for r in results], family, ALPHA)
    return [(stats.decide(r, step), step) for r, step in zip(results, steps)]


def simulate(d: Design, sims: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    false_claims = family_errors = comparisons = 0
    found = effect_comparisons = 0
    followed = decided = 0
    edge_equivalent = 0
    for _ in range(sims):
        # a true cost of exactly the margin: "equivalent" would be wrong
        edge_equivalent += sum(
            bool(r.equivalent) for r in _family(rng, Design(d.n, d.n_baseline, d.variance_ratio, d.cv, 1), 1 + MARGIN)
        )
        # nothing differs
        decisions = _decide(_family(rng, d, 1.0), d.family)
        claims = sum(1 for decision, _ in decisions if decision.verdict in (stats.SAVES, stats.COSTS))
        false_claims += claims
        family_errors += claims > 0
        comparisons += len(decisions)
        # every technique saves 10 %
        results = _family(rng, d, EFFECT)
        for result, (decision, step) in zip(results, _decide(results, d.family)):
            effect_comparisons += 1
            found += decision.verdict == stats.SAVES
            if decision.verdict == stats.INCONCLUSIVE and followed < sims:
                needed = stats.repeats_for(result, step)
                if needed is None or needed > 200:
                    continue
                sd0 = math.sqrt(math.log1p(d.cv**2))
                again = stats.compare(
                    _sample(rng, needed, math.log(EFFECT), sd0 * math.sqrt(d.variance_ratio)),
                    _sample(rng, needed, 0.0, sd0),
                    alpha=ALPHA,
                    margin=MARGIN,
                )
                strictest = stats.HolmStep(
                    None if again.p_value is None else min(1.0, again.p_value * d.family), d.family, d.family
                )
                followed += 1
                decided += stats.decide(again, strictest).verdict in (stats.SAVES, stats.COSTS, stats.EQUIVALENT)
    return {
        "false": false_claims / comparisons,
        "familywise": family_errors / sims,
        "power": found / effect_comparisons,
        "followed": followed,
        "decided": decided / followed if followed else float("nan"),
        "comparisons": comparisons,
        "sims": sims,
        "edge": edge_equivalent / sims,
    }


def _interval(rate: float, count: int) -> str:
    """A 95 % Wilson interval of a simulated rate."""
    z = 1.96
    centre = (rate + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(rate * (1 - rate) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return f"[{100 * max(0.0, centre - half):.1f}, {100 * (centre + half):.1f}]"


PAYBACK_TRUE = 3000.0  # (1300 - 1000) J / (0.7 - 0.6) J per inference


def payback_coverage(n: int, cv: float, sims: int, seed: int) -> dict[str, float]:
    """How often the payback interval holds the true point, and how often it pays back is said."""
    from greenlab.core.report import payback

    rng = random.Random(seed)
    sd = math.sqrt(math.log1p(cv * cv))

    def runs(train: float, per: float) -> list[tuple[float, float]]:
        # log-normal noise with the design's CV around each true mean (the mean, not the median, is true)
        return [
            (train * rng.lognormvariate(-sd * sd / 2, sd), per * rng.lognormvariate(-sd * sd / 2, sd)) for _ in range(n)
        ]

    covered = said = 0
    for _ in range(sims):
        found = payback.payback(runs(1300.0, 0.6), runs(1000.0, 0.7))
        if found is None:
            continue
        if found.word == payback.PAYS_BACK:
            said += 1
        if found.interval is not None and found.interval[0] <= PAYBACK_TRUE <= found.interval[1]:
            covered += 1
    return {"coverage": covered / sims, "pays back": said / sims}


def payback_table(sims: int, seed: int) -> None:
    print(
        f"\npayback at a true {PAYBACK_TRUE:,.0f} inferences: coverage of its 95 % interval, and how often it is said"
    )
    print(f"{'n a side':>9} {'CV':>4}  {'coverage %':>10} {'[95 % sim]':>12}  {'pays back %':>11}")
    for n in (3, 5, 10):
        for cv in (0.05, 0.10):
            r = payback_coverage(n, cv, sims, seed * 7919 + n)
            print(
                f"{n:>9} {100 * cv:>3g}%  {100 * r['coverage']:>10.1f} {_interval(r['coverage'], sims):>12}  "
                f"{100 * r['pays back']:>11.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=1000, help="simulated studies per design (default 1000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cv", type=float, nargs="*", default=list(CVS))
    parser.add_argument("--payback-only", action="store_true", help="only the payback interval's coverage")
    args = parser.parse_args()
    if args.payback_only:
        payback_table(args.sims, args.seed)
        return
    designs = [Design(n, n0, v, cv, m) for n, n0 in SIZES for v in VARIANCES for cv in args.cv for m in FAMILIES]
    designs += [Design(n, n0, v, 0.10, m) for (n, n0), v in BEYOND for m in (1, 4)]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(
                simulate, designs, [args.sims] * len(designs), [args.seed * 100_003 + i for i in range(len(designs))]
            )
        )
    print(
        f"{len(designs)} designs x {args.sims} simulated studies, α = {ALPHA}, equivalence ±{100 * MARGIN:g} %, "
        f"effect ratio {EFFECT} ({time.perf_counter() - started:.0f} s)"
    )
    print(
        "false: saves/costs said when nothing differs, per comparison and family-wise [95 % simulation "
        "interval]; power: saves found at a true 10 % saving; decides: follow-ups of the suggested size "
        "that decided (how many were simulated); edge ≈: equivalent said at a true ratio of 1.05"
    )
    header = (
        f"{'n v n0':>7} {'var':>4} {'CV':>4} {'m':>3}  {'false %':>6} {'[95 % sim]':>12}  "
        f"{'family %':>8} {'[95 % sim]':>12}  {'power %':>7}  {'decides %':>12}  {'edge ≈ %':>8}"
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    for d, r in zip(designs, results):
        if (d.n, d.n_baseline) in SIZES and d.variance_ratio in VARIANCES:
            worst = max(worst, r["familywise"])
        decides = "-" if not r["followed"] else f"{100 * r['decided']:.0f} ({r['followed']})"
        print(
            f"{f'{d.n}v{d.n_baseline}':>7} {d.variance_ratio:>4g} {100 * d.cv:>3g}% {d.family:>3}  "
            f"{100 * r['false']:>6.1f} {_interval(r['false'], r['comparisons']):>12}  "
            f"{100 * r['familywise']:>8.1f} {_interval(r['familywise'], r['sims']):>12}  "
            f"{100 * r['power']:>7.1f}  {decides:>12}  {100 * r['edge']:>8.1f}"
        )
    print(
        f"\nworst family-wise false-verdict rate of the balanced designs up to 3x unequal variances: "
        f"{100 * worst:.1f} % (α = {100 * ALPHA:g} %)"
    )
    payback_table(args.sims, args.seed)


if __name__ == "__main__":
    main()
