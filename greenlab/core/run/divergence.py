"""Whether a completed run diverged: its training ran away, or it learned nothing a guess would not.

A run with lr = 1e9 "completes" at a training loss of 1.97e9 and 10 % accuracy on ten classes; stored as
it is, it looks like any other run and its energy and accuracy join the verdicts. The supervisor
(greenlab.core.run.supervisor) adds `FLAG_DIVERGED` to such a run's flags from what its child reported;
the runs table and the report name it, and energy to target leaves it out (its target is never reached for
a reason that is not the technique's). Pure functions, no torch: the rule is documented in docs/schema.md.

The rule, for a run of a classifier over C classes (any one suffices):

- **non-finite**: the last epoch's mean training loss is NaN or infinite;
- **exploded**: that loss is above `EXPLODED_FACTOR` × ln C — ten times the cross-entropy of a uniform
  guess, which any model scores before it learns (2.3 for ten classes): a model that ends far above it
  has weights that ran away, not a model that learns slowly;
- **at chance**: the final validation accuracy is at most 1/C plus `CHANCE_Z` binomial standard errors
  of a guesser's accuracy over the examples evaluated (√(p(1 − p)/n), p = 1/C): no better than guessing,
  given how few examples were evaluated. Not applied to datasets whose labels are random
  (`RANDOM_LABEL_DATASETS`), where chance is all there is to learn.
"""

from __future__ import annotations

import math

FLAG_DIVERGED = "diverged"
EXPLODED_FACTOR = 10.0  # × ln C, the cross-entropy of a uniform guess
CHANCE_Z = 2.0  # binomial standard errors above 1/C still read as "at chance"
RANDOM_LABEL_DATASETS = ("fake",)  # torchvision's FakeData: random images with random labels


def chance_accuracy(num_classes: int) -> float:
    """The accuracy of a uniform guess over `num_classes` classes."""
    return 1.0 / max(num_classes, 1)


def exploded(loss: float, num_classes: int) -> bool:
    """The loss is above EXPLODED_FACTOR × ln C (C of at least 2, so the bound is never 0)."""
    return loss > EXPLODED_FACTOR * math.log(max(num_classes, 2))


def at_chance(accuracy: float, num_classes: int, evaluated: int) -> bool:
    """No better than guessing: within CHANCE_Z binomial standard errors above 1/C over `evaluated` examples."""
    p = chance_accuracy(num_classes)
    margin = CHANCE_Z * math.sqrt(p * (1 - p) / max(evaluated, 1))
    return accuracy <= p + margin


def diverged(
    *,
    last_loss: float | None,
    accuracy: float | None,
    num_classes: int | None,
    evaluated: int | None,
    dataset: str = "",
) -> str | None:
    """Why a completed run diverged ("loss 1.97e+09 exploded (above 23.0 = 10 × ln 10)"), or None."""
    if last_loss is not None and not math.isfinite(last_loss):
        return f"training loss {last_loss} is not finite"
    if not num_classes:
        return None  # without the classes there is no chance level and no bound to tell against
    if last_loss is not None and exploded(last_loss, num_classes):
        bound = EXPLODED_FACTOR * math.log(max(num_classes, 2))
        return f"training loss {last_loss:.3g} exploded (above {bound:.1f} = {EXPLODED_FACTOR:g} × ln {num_classes})"
    if accuracy is None or not evaluated or dataset in RANDOM_LABEL_DATASETS:
        return None
    if not math.isfinite(accuracy) or at_chance(accuracy, num_classes, evaluated):
        return (
            f"validation accuracy {accuracy:.1%} is at chance ({chance_accuracy(num_classes):.1%} for "
            f"{num_classes} classes, over {evaluated} examples)"
        )
    return None
