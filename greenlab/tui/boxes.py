"""A widget with a title on its border: the one way every pane composes its boxes."""

from __future__ import annotations

from typing import TypeVar

from textual.widget import Widget

W = TypeVar("W", bound=Widget)


def titled(widget: W, title: str) -> W:
    """`widget` with `title` on its top border (Textual's border_title), ready to yield."""
    widget.border_title = title
    return widget
