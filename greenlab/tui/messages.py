"""The Textual messages of a running grid: one, carrying the presenter's newest snapshot.

The worker thread folds each grid event into the shared GridPresenter (greenlab.core.grid.presenter) and
posts `GridChanged` (post_message is thread-safe). Batches finish many times a second, so a newer snapshot
replaces one still queued (toolong's `can_replace`), and the worker posts a batch's progress at most a
few times a second (`is_progress`): the UI renders the latest state only. Widgets never see
a grid event, a process or a store write.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from greenlab.core.grid.presenter import GridSnapshot
from greenlab.core.run.run_events import ChildEvent
from greenlab.core.train import child_events


@dataclass
class GridChanged(Message):
    """The grids' state changed; `snapshot` is the whole of it."""

    snapshot: GridSnapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, GridChanged)


def is_progress(event: object) -> bool:
    """A batch finished: progress the next snapshot carries too, which the worker may leave unposted."""
    return isinstance(event, ChildEvent) and isinstance(event.event, child_events.BatchFinished)
