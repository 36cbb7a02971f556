"""Checkboxes and a selection list whose state reads without colour: `[x]` ticked, `[ ]` not.

Textual draws both states as the same `▐X▌` and tells them apart by colour only, so in a 16-colour
terminal, or to a colour-blind user, every box looks ticked. These subclasses change only the glyphs.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.content import Content
from textual.strip import Strip
from textual.widgets import Checkbox, OptionList, SelectionList
from textual.widgets.option_list import OptionDoesNotExist

TICKED, UNTICKED = "[x]", "[ ]"  # three cells, as wide as Textual's own button: the gutter stays the same


class TickBox(Checkbox):
    @property
    def _button(self) -> Content:
        style = self.get_visual_style("toggle--button")
        return Content.styled(TICKED if self.value else UNTICKED, style)


class TickList(SelectionList):
    def render_line(self, y: int) -> Strip:
        line = OptionList.render_line(self, y)
        _, scroll_y = self.scroll_offset
        index = scroll_y + y
        try:
            selection = self.get_option_at_index(index)
        except OptionDoesNotExist:
            return line
        underlying = next(iter(line)).style or self.rich_style
        component = (
            "selection-list--button"
            + ("-selected" if selection.value in self._selected else "")
            + ("-highlighted" if self.highlighted == index else "")
        )
        button = self.get_component_rich_style(component)
        meta = Style(meta={"option": index})  # clicking the box toggles the option, as in SelectionList
        glyph = TICKED if selection.value in self._selected else UNTICKED
        return Strip([Segment(glyph, style=underlying + button + meta), Segment(" ", style=underlying), *line])
