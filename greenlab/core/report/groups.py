"""Names of the groups runs are compared in: a model, and what sets its conditions apart from its siblings'.

Two grids of one model with different seeds or learning rates make two groups (two conditions keys) that a
table would label `tinycnn` twice, or by a hash. `group_labels` names each by the settings that differ
between the groups of its model — `tinycnn [lr=0.01]`, `tinycnn [lr=0.1, seed=5]` — and by its dataset
where the model ran on several: `tinycnn (cifar10)`. Every face takes its labels from here (through
`Comparison.group`): the TUI's verdicts, each report format and the plot's panel titles. Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from greenlab.core.plan.settings import SETTING_KEYS, UNKEYED_SETTINGS, RunSettings
from greenlab.core.store.rows import RunRow

MAX_SHOWN = 3  # differing settings named in a label; more read as a sentence, not a name
# Settings stored with a run that set no condition (the repeat count, the accounting inputs, ...).
_NOT_CONDITIONS = UNKEYED_SETTINGS | {"techniques"}


def conditions_settings(row: RunRow) -> dict[str, Any]:
    """The settings of a run that make its conditions, with today's defaults for any it did not store."""
    stored = row.settings
    merged = {**asdict(RunSettings()), **{k: v for k, v in stored.items() if k in SETTING_KEYS}}
    if row.dataset and "dataset" not in stored:
        merged["dataset"] = row.dataset
    return {k: v for k, v in merged.items() if k not in _NOT_CONDITIONS}


def setting_text(value: Any) -> str:
    """A setting's value as a label shows it: 0.01, 1e+09, true, none."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def group_labels(groups: Iterable[tuple[str, str, RunRow]]) -> dict[str, str]:
    """conditions key -> its label, from (conditions key, model, one of its runs) of every group to tell
    apart (the whole store's, so a label never depends on what a view shows)."""
    settings: dict[str, dict[str, Any]] = {}
    models: dict[str, str] = {}
    for key, model, row in groups:
        if key not in settings:
            settings[key], models[key] = conditions_settings(row), model
    siblings: dict[str, list[str]] = {}
    for key, model in models.items():
        siblings.setdefault(model, []).append(key)
    labels = {}
    for model, keys in siblings.items():
        if len(keys) == 1:
            labels[keys[0]] = model
            continue
        names = sorted({name for key in keys for name in settings[key]})
        differing = [n for n in names if len({setting_text(settings[k].get(n)) for k in keys}) > 1]
        datasets = "dataset" in differing
        others = [n for n in differing if n != "dataset"]
        for key in keys:
            label = model + (f" ({settings[key].get('dataset')})" if datasets else "")
            shown = [f"{n}={setting_text(settings[key].get(n))}" for n in others[:MAX_SHOWN]]
            if len(others) > MAX_SHOWN:
                shown.append(f"+{len(others) - MAX_SHOWN} more")
            if shown:
                label += f" [{', '.join(shown)}]"
            elif not datasets:  # the same settings under another key epoch (measured under older rules)
                label += f" [{key.split(':')[-1][:6]}]"
            labels[key] = label
    return labels
