"""Theme data files: find themes/*.toml, check them, and turn them into Textual `Theme` objects.

A theme file holds the fields of `textual.theme.Theme` (name, dark, primary, secondary, accent, ...)
and an optional [variables] table. Stylesheets never name a colour; they use the variables these files
feed (`$primary`, `$surface`, ...), so a new look is a new data file, not a code change.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

from greenlab.core.errors import ConfigError
from greenlab.core.plan.tomlfile import tomllib

DEFAULT_THEME = "greenlab-dark"
_COLOUR_KEYS = (
    "primary",
    "secondary",
    "warning",
    "error",
    "success",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)
_KNOWN_KEYS = {f.name for f in fields(Theme)}


def theme_dirs() -> list[Path]:
    """Where theme files are looked for, later ones overriding earlier ones of the same name.

    The repository's themes/ comes first (found from this file, so it works from any working directory
    in an editable install); then ./themes; then $GREENLAB_THEMES for a user's own.
    """
    candidates = [Path(__file__).resolve().parents[2] / "themes", Path.cwd() / "themes"]
    extra = os.environ.get("GREENLAB_THEMES")
    if extra:
        candidates.append(Path(extra).expanduser())
    seen: list[Path] = []
    for path in candidates:
        if path.is_dir() and path.resolve() not in seen:
            seen.append(path.resolve())
    return seen


def load_theme(path: Path) -> Theme:
    """One theme file; raises ConfigError naming the file, the key and the fix."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it ({exc})", source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None
    for key in data:
        if key not in _KNOWN_KEYS:
            raise ConfigError(
                f"unknown key '{key}' (known: {', '.join(sorted(_KNOWN_KEYS))})", source=str(path), key=key
            )
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        raise ConfigError('missing; add name = "my-theme"', source=str(path), key="name")
    if "primary" not in data:
        raise ConfigError('missing; add primary = "#RRGGBB"', source=str(path), key="primary")
    for key in _COLOUR_KEYS:
        if key in data:
            try:
                Color.parse(data[key])
            except (ColorParseError, TypeError):
                raise ConfigError(f'not a colour: {data[key]!r}; use "#RRGGBB"', source=str(path), key=key) from None
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ConfigError("must be a table: [variables]", source=str(path), key="variables")
    return Theme(**{**data, "variables": {str(k): str(v) for k, v in variables.items()}})


def load_themes(dirs: list[Path] | None = None) -> tuple[list[Theme], list[str]]:
    """Every valid theme in `dirs`, and one message per file that was refused (shown, never fatal)."""
    themes: dict[str, Theme] = {}
    problems: list[str] = []
    for directory in theme_dirs() if dirs is None else dirs:
        for path in sorted(directory.glob("*.toml")):
            try:
                theme = load_theme(path)
            except ConfigError as exc:
                problems.append(str(exc))
                continue
            themes[theme.name] = theme
    return list(themes.values()), problems
