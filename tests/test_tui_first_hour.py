"""What a user meets in the first hour of the TUI: a delete that names what it deletes, keys typed fast,
an empty field, a quit confirmed during a run, help and palette texts that read whole."""

from __future__ import annotations

from textual.widgets import DataTable

from greenlab.tui.app import GreenLabApp
from greenlab.tui.dialogs import ConfirmDelete
from tests.conftest import sync
from tests.tui_demo import seed_store


@sync
async def test_delete_names_the_marked_runs_and_those_a_search_hides(tmp_path):
    db = tmp_path / "demo.db"
    seed_store(db)
    app = GreenLabApp(db=db, experiments=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("f4")
        await app.workers.wait_for_complete()
        await pilot.pause()
        runs, table = app.runs_pane, app.query_one("#runs-table", DataTable)
        first, second = runs.shown[0], runs.shown[1]
        await pilot.press("space", "down", "space")
        assert runs.marked == {first["id"], second["id"]}
        assert (first["technique"], second["technique"]) == ("baseline", "stego")  # the demo store's first two
        await pilot.press("slash", *"baseline", "enter")  # a search that hides the second
        assert first in runs.shown and second not in runs.shown
        assert app.focused is table
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmDelete)
        question = app.screen.question
        assert f"run {first['id']} {first['model']}" in question and f"run {second['id']} {second['model']}" in question
        assert f"1 of them is hidden by the search or a filter: run {second['id']}." in question
        await pilot.press("n")
