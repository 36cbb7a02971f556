"""The setup form's data: from typed text to the experiments dict the config loader validates.

No widget lives here. The form's values are plain strings and flags; `experiments_data` builds the same
structure an experiments.toml parses to, so `config.build_experiments` refuses bad input with exactly the
messages a file would get. `field_of` maps such an error back to the form field to highlight.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from greenlab.core.errors import ConfigError
from greenlab.core.plan.analysis import Plan
from greenlab.core.plan.config import SETTING_KEYS, GridRun, RunSettings, build_grid
from greenlab.core.plan.tomlfile import tomllib
from greenlab.core.train import compression

EXPERIMENT_NAME = "tui"
# The training settings the form shows; everything else comes from the defaults (or an experiments file).
FORM_SETTINGS = (
    "dataset",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "device",
    "repeats",
    "seed",
    "max_train_batches",
    "idle_s",
    "pretrained",
)
# A blank field means "not set" only where not set means something: no cap on training batches. Elsewhere a
# blank is refused (an emptied repeats field silently running 1 repeat would surprise).
BLANK_MEANS_UNSET = frozenset({"max_train_batches"})
# Settings whose value is text: typed text is passed through, so "10" stays a (wrong) string, as in TOML.
_TEXT_SETTINGS = {f.name for f in fields(RunSettings) if f.type in ("str", str)}
# Technique settings that take one of a few names: the form offers a choice instead of free text.
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("stego", "mode"): ("dtype", "truncate"),
    ("prune", "method"): ("l1-unstructured", "structured"),
}


def coerce(text: str) -> Any:
    """Typed text as TOML would read the value: integers, numbers, true/false, else the text itself.

    Blank means "not set" (None), which the loader reads as the setting's default.
    """
    text = text.strip()
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass
class FormValues:
    """What the form holds: settings as typed, chosen models and techniques, technique tables."""

    models: list[str] = field(default_factory=list)
    extra_models: str = ""  # comma-separated, e.g. hf:bert-base-uncased
    settings: dict[str, Any] = field(default_factory=dict)  # key -> typed text, or bool for pretrained
    techniques: list[str] = field(default_factory=list)
    combinations: str = ""  # comma-separated, e.g. prune+stego
    technique_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> key -> text
    # Settings the form does not show, carried over as read from the offered file (max_eval_batches,
    # sample_hz, carbon_g_per_kwh, ...): a run from the form measures like a run from the file.
    hidden_settings: dict[str, Any] = field(default_factory=dict)
    # The offered file's [analysis] table: a grid from the form is judged under the plan the file declares.
    analysis: dict[str, Any] = field(default_factory=dict)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def experiments_data(values: FormValues) -> dict[str, Any]:
    """The experiments structure ({"defaults": ..., "experiment": [...]}) the form describes."""
    defaults: dict[str, Any] = dict(values.hidden_settings)
    for key, raw in values.settings.items():
        value = raw if isinstance(raw, bool) else (raw.strip() if key in _TEXT_SETTINGS else coerce(raw))
        if value is None or value == "":
            if key not in BLANK_MEANS_UNSET:
                default = getattr(RunSettings(), key)
                raise ConfigError(f"is empty; write a value (the default is {default})", key=f"defaults.{key}")
            continue  # TOML has no null: the key is left out and its default applies (no cap)
        defaults[key] = value
    techniques = list(values.techniques) + _split(values.combinations)
    experiment: dict[str, Any] = {
        "name": EXPERIMENT_NAME,
        "models": list(values.models) + _split(values.extra_models),
        "techniques": techniques,
    }
    used = {part.strip() for spec in techniques for part in spec.split("+")}
    for name, table in values.technique_settings.items():
        if name not in used:
            continue  # an unticked technique's settings cannot block a run
        typed = {}
        for key, raw in table.items():
            value = coerce(raw) if isinstance(raw, str) and (name, key) not in CHOICES else raw
            if value is not None:
                typed[key] = value
        experiment[name] = typed
    data: dict[str, Any] = {"defaults": defaults, "experiment": [experiment]}
    if values.analysis:
        data["analysis"] = dict(values.analysis)
    return data


def validate(values: FormValues) -> list[GridRun]:
    """The grid the form describes; raises ConfigError with the loader's message."""
    return build_grid(experiments_data(values), source="settings").grid()


def declared_plan(values: FormValues, runs: list[GridRun], source: str = "the setup form") -> Plan:
    """The analysis plan of the form's grid: the offered file's [analysis] (or the defaults) over its runs."""
    return replace(build_grid(experiments_data(values), source="settings").plan(runs), source=source)


def field_of(error: ConfigError) -> str | None:
    """The form field an error is about ("epochs", "models", "stego.bits"), from its key path."""
    key = error.key or ""
    for prefix in (f"experiment '{EXPERIMENT_NAME}'.", "defaults."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key or None


def initial_values(experiments_path: str | None) -> FormValues:
    """Form defaults: the [defaults] and first experiment of the offered file where readable, else the
    built-in defaults with pretrained weights off (the offline choice).

    The file is read leniently (no validation), so one bad table does not empty the whole form.
    """
    base = {**asdict(RunSettings()), "pretrained": False}
    defaults: dict[str, Any] = {}
    first: dict[str, Any] = {}
    analysis: dict[str, Any] = {}
    if experiments_path:
        try:
            data = tomllib.loads(Path(experiments_path).read_text(encoding="utf-8"))
            defaults = data.get("defaults", {}) if isinstance(data.get("defaults"), dict) else {}
            experiments = data.get("experiment")
            first = (
                experiments[0]
                if isinstance(experiments, list) and experiments and isinstance(experiments[0], dict)
                else {}
            )
            analysis = data.get("analysis", {}) if isinstance(data.get("analysis"), dict) else {}
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            pass
    merged = {**base, **{k: v for k, v in {**defaults, **first}.items() if k in SETTING_KEYS}}
    settings: dict[str, Any] = {}
    for key in FORM_SETTINGS:
        value = merged.get(key)
        settings[key] = bool(value) if key == "pretrained" else ("" if value is None else _text(value))
    tables: dict[str, dict[str, Any]] = {}
    for name, table in compression.settings_tables().items():
        given = {**(defaults.get(name) or {}), **(first.get(name) or {})}
        tables[name] = {
            key: _text({**table, **given}.get(key)) if (name, key) not in CHOICES else {**table, **given}.get(key)
            for key in table
        }
    models = [m for m in first.get("models", []) if isinstance(m, str)] or ["tinycnn"]
    known = compression.technique_names()
    techniques = [t for t in first.get("techniques", []) if isinstance(t, str) and t in known] or ["baseline"]
    combinations = ", ".join(t for t in first.get("techniques", []) if isinstance(t, str) and "+" in t)
    hidden = {k: v for k, v in {**defaults, **first}.items() if k in SETTING_KEYS and k not in FORM_SETTINGS}
    return FormValues(
        models=models,
        settings=settings,
        techniques=techniques,
        combinations=combinations,
        technique_settings=tables,
        hidden_settings=hidden,
        analysis=analysis,
    )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
