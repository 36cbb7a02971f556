"""`Field`: the text input of every form and search in the TUI, keeping keys in the order they were typed.

Textual's `Input` inserts a printable key as soon as it arrives, but its editing keys (backspace, delete,
the cursor moves) are bindings, run only after the key has bubbled up to the app, one message queue per
widget on the way; Tab is the screen's. Typed fast (or on a busy host, where the queues fall behind), the
letters overtake the edits: "0.0071", six backspaces and "0.003" left "0.007", and "resnet18 prune", 14
backspaces and "stego" left "resne". A `Field` runs its own editing keys and Tab where the key arrives, in
order, and hands a key that arrived after focus moved on to the widget that has focus now.
"""

from __future__ import annotations

from textual import events
from textual.widgets import Input

_MOVES_FOCUS = {"tab": "focus_next", "shift+tab": "focus_previous"}


class Field(Input):
    """An `Input` whose keys are never reordered (see the module docstring)."""

    async def _on_key(self, event: events.Key) -> None:
        focused = self.app.focused
        if focused is not None and focused is not self:
            # Focus moved on (a Tab earlier in the same burst) after this key was sent here: it belongs there.
            event.stop()
            event.prevent_default()
            focused.post_message(events.Key(event.key, event.character))
            return
        if not event.is_printable:
            if event.key in _MOVES_FOCUS:
                event.stop()
                event.prevent_default()
                getattr(self.screen, _MOVES_FOCUS[event.key])()
                return
            for binding in self._bindings.key_to_bindings.get(event.key, ()):
                if self.check_action(binding.action, ()) is False:
                    continue
                event.stop()
                event.prevent_default()
                await self.run_action(binding.action)
                return
        await super()._on_key(event)
