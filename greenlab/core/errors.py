"""Errors the faces turn into one clear line and exit code 2 (bad input) — never a traceback.

A message quotes the user's input (a key, a value, a list) cut to about 80 characters (greenlab.core.text.clip):
a 5 MB key or a list of 200,000 names makes a short line, not a 10 MB one.
"""

from __future__ import annotations

import re

from greenlab.core.text import CLIP_CHARS, clip

_QUOTED = re.compile("'([^'\\n]{" + str(CLIP_CHARS + 1) + ",})'")
DETAIL_CHARS = 2000  # no message of ours is longer: the rest would be echoed input


class GreenLabError(Exception):
    """Base of every error that is the user's to fix; its message is complete and printable as is."""

    exit_code = 2


class ConfigError(GreenLabError):
    """An experiments file, a setting or a name is wrong.

    The message names the file (and line when known), the key path, what is wrong and the fix.
    """

    def __init__(
        self, message: str, *, source: str | None = None, line: int | None = None, key: str | None = None
    ) -> None:
        self.detail = message
        self.source = source
        self.line = line
        self.key = key
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.source:
            where = self.source + (f":{self.line}" if self.line else "")
        if self.key:
            where = f"{where}: {clip(self.key)}" if where else clip(self.key)
        detail = _QUOTED.sub(lambda quoted: f"'{clip(quoted.group(1))}'", self.detail)
        detail = detail if len(detail) <= DETAIL_CHARS else detail[: DETAIL_CHARS - 1] + "…"
        return f"{where}: {detail}" if where else detail

    def located(self, source: str, line: int | None = None) -> ConfigError:
        """The same error, placed in a file (settings validators know keys, not files)."""
        return ConfigError(self.detail, source=source, line=line if line else self.line, key=self.key)


class ModelUnavailableError(GreenLabError):
    """Pretrained weights (or a hub model) could not be loaded; the message says how to run offline."""


def suggest(name: str, known: list[str] | tuple[str, ...]) -> str:
    """A ' did you mean ...?' suffix for an unknown name, or '' when nothing is close."""
    import difflib

    if len(name) > 4 * CLIP_CHARS:  # no known name is that long, and difflib would take seconds on megabytes
        return ""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if not match:
        lowered = {k.lower().replace("-", "").replace("_", ""): k for k in known}
        key = name.lower().replace("-", "").replace("_", "")
        if key in lowered:
            match = [lowered[key]]
    return f"; did you mean '{match[0]}'?" if match else ""


def toml_text(value: object) -> str:
    """A value as it is written in TOML (true, "text", [1, 2]), so a message quotes what the user wrote; cut
    to about 80 characters (a list of 200,000 names is quoted by its start and its length)."""
    if isinstance(value, (list, tuple)) and len(value) > CLIP_CHARS:  # never rendered whole: its start, its length
        return f"{_toml_text(value[:CLIP_CHARS])[: CLIP_CHARS - 1]}… ({len(value):,} items)"
    return clip(_toml_text(value))


def _toml_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        import json

        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_text(v)}" for k, v in value.items()) + "}"
    return repr(value) if isinstance(value, float) else str(value)
