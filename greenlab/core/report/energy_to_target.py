"""Energy to accuracy: what a run spent until its validation accuracy first reached a target.

The study compares at equal epochs; a reviewer also asks "at equal accuracy?". The target of a run is
its matching baselines' mean final accuracy minus 1 percentage point (baselines included, so they have a
figure to compare with). The energy is the sum of the epochs' energies (training and evaluation windows,
the scope of `energy_training_j`) up to and including the first epoch at or above the target.

A run flagged `diverged` (greenlab.core.run.divergence) is kept out: it sets no target as a baseline and
gets no figure of its own. Pure functions; the grid session (greenlab.core.grid.session) stores `compute`'s figures in
`runs.target_accuracy` and `runs.energy_to_target_j` at the end of a grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from statistics import mean
from typing import Any

from greenlab.core.report.compare import TARGET_DROP_PP, analysable, conditions_of, diverged, latest_runs, number
from greenlab.core.store.rows import EpochRow, RunRow

# The columns of `epochs` read here (Store.epochs_by_run(columns=...)).
EPOCH_COLUMNS = ("run_id", "epoch", "energy_j", "train_energy_j", "eval_energy_j", "val_accuracy")


def _number(value: Any) -> float | None:
    """A stored epoch's number, or None for no value, text (a hand edit) or a value that is not finite."""
    found = number(value)
    return found if found is not None and math.isfinite(found) else None


def epoch_energy(epoch: EpochRow) -> float | None:
    """The epoch's energy: `energy_j`, else its training plus evaluation windows, else unknown."""
    whole = _number(epoch.energy_j)
    if whole is not None:
        return whole
    train, evaluation = _number(epoch.train_energy_j), _number(epoch.eval_energy_j)
    return None if train is None or evaluation is None else train + evaluation


def accuracy_curve(epochs: Iterable[EpochRow]) -> list[tuple[int, float, float]]:
    """(epoch, cumulative energy, validation accuracy) epoch by epoch, up to the first epoch whose energy
    is unknown: the curve along which energy to target is read."""
    curve: list[tuple[int, float, float]] = []
    total = 0.0
    for epoch in sorted(epochs, key=lambda e: _number(e.epoch) or 0):
        energy, accuracy = epoch_energy(epoch), analysable("val_accuracy", epoch.val_accuracy)
        if energy is None or accuracy is None:
            break
        total += energy
        curve.append((int(_number(epoch.epoch) or 0), total, accuracy))
    return curve


def energy_to_target(epochs: Iterable[EpochRow], target: float) -> float | None:
    """Cumulative energy until val_accuracy first reaches `target`; None if it never does, or if an
    epoch on the way has no known energy (a partial sum would understate the cost)."""
    return next((joules for _epoch, joules, accuracy in accuracy_curve(epochs) if accuracy >= target), None)


def default_targets(rows: Iterable[RunRow], drop_pp: float = TARGET_DROP_PP) -> dict[str, float]:
    """Per conditions key: the completed baselines' mean final val_accuracy minus `drop_pp`. A baseline that
    diverged is left out: its chance-level accuracy would lower the target every technique is held to."""
    accuracies: dict[str, list[float]] = {}
    for row in latest_runs(rows):
        accuracy = analysable("val_accuracy", row.val_accuracy)
        if row.technique == "baseline" and accuracy is not None and not diverged(row):
            accuracies.setdefault(conditions_of(row), []).append(accuracy)
    return {key: mean(values) - drop_pp / 100.0 for key, values in accuracies.items()}


def compute(
    rows: Sequence[RunRow], epochs_of: Callable[[int], list[EpochRow]], drop_pp: float = TARGET_DROP_PP
) -> dict[int, tuple[float, float | None]]:
    """run id -> (target accuracy, energy to target) for every completed run whose conditions have
    completed baselines with an accuracy; a run that diverged gets none (it is kept out of energy to target)."""
    targets = default_targets(rows, drop_pp)
    result: dict[int, tuple[float, float | None]] = {}
    for row in rows:
        target = targets.get(conditions_of(row))
        usable = row.status == "completed" and not diverged(row)
        if usable and target is not None and row.id is not None:
            result[row.id] = (target, energy_to_target(epochs_of(row.id), target))
    return result


def with_energy_to_target(rows: Sequence[RunRow], epochs_of: Callable[[int], list[EpochRow]]) -> list[RunRow]:
    """Rows with both columns computed afresh from these rows' baselines, so every run of a cell is judged
    against the same target, whatever the store holds from an earlier grid."""
    computed = compute(rows, epochs_of)
    filled: list[RunRow] = []
    for row in rows:
        found = computed.get(row.id)
        if found is None:
            filled.append(row)
            continue
        target, joules = found
        filled.append(row.replaced(target_accuracy=target, energy_to_target_j=joules))
    return filled
