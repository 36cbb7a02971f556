"""Text from outside GreenLab made safe to show: control characters escaped, runaway input cut short.

A name in a grid file, a stored row or an error message may come from someone else (a shared grid file, a
store another tool wrote). Printed raw, an ESC starts a terminal escape sequence and a NUL cuts a CSV
field; echoed whole, a 5 MB key makes a 10 MB error line. The plan refuses control characters in what it
reads (greenlab.core.plan.config); every face escapes them in what it prints, with `escape_controls`, and
quotes input with `clip`.
"""

from __future__ import annotations

import re

# C0 controls, DEL and the C1 controls (0x9b is CSI to many terminals): none belongs in a name or a setting.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
CLIP_CHARS = 80  # how much of a user's input a message quotes


def first_control(text: str) -> tuple[int, str] | None:
    """The position and the escaped form of the first control character in `text`, or None."""
    found = CONTROL.search(text)
    return (found.start(), _escaped(found.group())) if found else None


def _escaped(char: str) -> str:
    return f"\\x{ord(char):02x}"


def escape_controls(text: str, keep: str = "\n") -> str:
    """`text` with every control character but those in `keep` written as \\xNN: shown, never obeyed."""
    if text.isprintable():  # the common case, checked in C: no control character to write out
        return text
    return CONTROL.sub(lambda m: m.group() if m.group() in keep else _escaped(m.group()), text)


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    """`text` cut to about `limit` characters, saying how long it was, for a message that quotes input."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text):,} characters)"
