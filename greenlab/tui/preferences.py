"""The TUI's preferences between launches: theme, the setup form's last values, the runs table's sort and
filters, and a keymap — one TOML file in the user's config folder.

Where: $GREENLAB_CONFIG, else $XDG_CONFIG_HOME/greenlab/config.toml, else ~/.config/greenlab/config.toml.
A file that cannot be read or parsed gives a warning and the defaults, never a crash; a value of the wrong
kind is dropped with a warning. Written whole and atomically (a temporary file renamed over the old one).

    theme = "greenlab-light"

    [keymap]              # binding id = keys (see the help screen, ?, for ids in docs/tui.md)
    "runs.sort" = "o"

    [runs]
    sort = "energy"
    reverse = true
    search = "resnet"

    [runs.filters]
    technique = "stego"

    [setup]               # the form as last used; "setup" keys are the form's own
    models = ["tinycnn"]
    ...
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenlab.core.plan.tomlfile import tomllib

CONFIG_ENV = "GREENLAB_CONFIG"


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "greenlab" / "config.toml"


@dataclass
class Preferences:
    theme: str | None = None
    setup: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)
    keymap: dict[str, str] = field(default_factory=dict)


_KINDS: dict[str, type] = {"theme": str, "setup": dict, "runs": dict, "keymap": dict}


def load(path: Path | None = None) -> tuple[Preferences, list[str]]:
    """The preferences, and warnings about what could not be used (the defaults stand in for it)."""
    path = path or config_path()
    if not path.exists():
        return Preferences(), []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return Preferences(), [f"{path}: cannot be read ({exc}); using the defaults. Fix or delete the file."]
    warnings = []
    values: dict[str, Any] = {}
    for key, value in data.items():
        kind = _KINDS.get(key)
        if kind is None:
            warnings.append(f"{path}: unknown key '{key}' ignored (known: {', '.join(_KINDS)})")
        elif not isinstance(value, kind):
            warnings.append(f"{path}: '{key}' must be a {'table' if kind is dict else 'string'}; ignored")
        else:
            values[key] = value
    keymap = values.get("keymap", {})
    if any(not isinstance(keys, str) for keys in keymap.values()):
        warnings.append(f'{path}: keymap values must be strings of keys, e.g. "runs.sort" = "o"; ignored')
        values["keymap"] = {}
    return Preferences(**values), warnings


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _value(key)


def _table(lines: list[str], name: str, table: dict[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and v is not None}
    nested = {k: v for k, v in table.items() if isinstance(v, dict)}
    if name:
        lines.append(f"\n[{name}]")
    lines += [f"{_key(k)} = {_value(v)}" for k, v in scalars.items()]
    for key, sub in nested.items():
        _table(lines, f"{name}.{_key(key)}" if name else _key(key), sub)


def to_toml(preferences: Preferences) -> str:
    lines = ["# GreenLab's TUI preferences, written when the app closes; edit freely (see docs/tui.md, Preferences)."]
    _table(
        lines,
        "",
        {
            "theme": preferences.theme,
            "keymap": preferences.keymap,
            "runs": preferences.runs,
            "setup": preferences.setup,
        },
    )
    return "\n".join(lines) + "\n"


def save(preferences: Preferences, path: Path | None = None) -> str | None:
    """Write the preferences; returns a warning instead of raising when the file cannot be written."""
    path = path or config_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, delete=False, prefix=".config-", suffix=".toml"
        ) as handle:
            handle.write(to_toml(preferences))
        os.replace(handle.name, path)
    except OSError as exc:
        return f"preferences not saved to {path}: {exc}"
    return None
