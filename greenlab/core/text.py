"""Text from outside GreenLab made safe to show: control characters escaped, runaway input cut short.

A name in a grid file, a stored row or an error message may come from someone else (a shared grid file, a
store another tool wrote). Printed raw, an ESC starts a terminal escape sequence and a NUL cuts a CSV
field; echoed whole, a 5 MB key makes a 10 MB error line. The plan refuses control characters in what it
reads (greenlab.core.plan.config); every face escapes them in what it prints, with `escape_controls`, and
quotes input with `clip`.
"""

from __future__ import annotations

import functools
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
    # Only the characters to write out are matched: a report's 150,000 newlines are kept by the regex, in C,
    # not by a call each.
    return _controls_but(keep).sub(lambda m: _escaped(m.group()), text)


@functools.cache
def _controls_but(keep: str) -> re.Pattern[str]:
    controls = [chr(code) for code in (*range(0x20), *range(0x7F, 0xA0)) if chr(code) not in keep]
    return re.compile(f"[{re.escape(''.join(controls))}]")


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    """`text` cut to about `limit` characters, saying how long it was, for a message that quotes input."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text):,} characters)"
