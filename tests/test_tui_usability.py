"""The TUI as a keyboard user meets it: keys that never surprise, state without colour, help, preferences."""

from __future__ import annotations

import html
import re

from textual.content import Content
from textual.widgets import Input, TabbedContent

from greenlab.tui.app import GreenLabApp
from greenlab.tui.dialogs import CancelChoice, HelpScreen
from tests.conftest import sync

FILE = """
[defaults]
dataset = "digits"
epochs = 2
pretrained = false
device = "cpu"
idle_s = 0

[[experiment]]
name = "keys"
models = ["tinycnn"]
techniques = ["baseline"]
"""


def app_for(tmp_path) -> GreenLabApp:
    path = tmp_path / "experiments.toml"
    path.write_text(FILE)
    return GreenLabApp(db=tmp_path / "runs.db", experiments=str(path))


def screen_text(app) -> str:
    """What the terminal shows, line by line, from the app's SVG screenshot."""
    rows: dict[float, list[tuple[float, str]]] = {}
    for match in re.finditer(r'<text[^>]*x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', app.export_screenshot()):
        text = html.unescape(match.group(3)).replace("\xa0", " ")
        rows.setdefault(float(match.group(2)), []).append((float(match.group(1)), text))
    return "\n".join("".join(t for _x, t in sorted(rows[y])) for y in sorted(rows))


def active(app) -> str:
    return app.query_one("#panes", TabbedContent).active


@sync
async def test_digits_type_into_a_field_and_function_keys_switch_panes(tmp_path):
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        epochs = app.query_one("#f-epochs", Input)
        epochs.focus()
        await pilot.press("end", "2")
        assert epochs.value == "22" and active(app) == "setup"  # a digit in a field is text
        await pilot.press("backspace")
        await pilot.press("f4")  # a function key never types: it switches from anywhere
        assert active(app) == "runs" and epochs.value == "2"
        await pilot.press("f2")
        epochs.focus()
        await pilot.press("escape")  # leaves the field...
        assert not isinstance(app.focused, Input)
        await pilot.press("3")  # ...and then digits switch panes
        assert active(app) == "runs" and epochs.value == "2"


@sync
async def test_a_setting_changed_from_the_file_is_marked(tmp_path):
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        epochs = app.query_one("#f-epochs", Input)
        label = app.query_one("#l-epochs")
        assert "*" not in str(label.render())
        epochs.value = "5"
        await pilot.pause()
        assert str(label.render()).endswith("*") and epochs.has_class("-changed")
        epochs.value = "2"
        await pilot.pause()
        assert "*" not in str(label.render()) and not epochs.has_class("-changed")


@sync
async def test_a_changed_marker_stands_apart_from_the_value_and_inputs_are_what_runs_use(tmp_path):
    """`batch size *99999999999` read as one word; resnet18's 224 px was not what a digits run uses (32 px)."""
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.query_one("#f-batch_size", Input).value = "99999999999"
        app.query_one("#f-max_train_batches", Input).value = "3"
        await pilot.pause()
        text = screen_text(app)
        for key in ("batch_size", "max_train_batches"):
            label, value = app.query_one(f"#l-{key}"), app.query_one(f"#f-{key}")
            shown = str(label.render())
            assert shown.endswith(" *") and label.region.right == value.region.x
            assert len(shown) < label.region.width  # a blank cell between the marker and the value
        assert re.search(r"resnet18 +11\.7M +32\b", text) and re.search(r"vit_b_16 +86\.6M +224\b", text)
        app.query_one("#f-dataset", Input).value = "cifar10"  # real images: the model's own resolution
        await pilot.pause()
        assert re.search(r"resnet18 +11\.7M +224\b", screen_text(app))


@sync
async def test_ticked_and_unticked_read_without_colour(tmp_path):
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        text = screen_text(app).replace(" ", "")  # the SVG places words apart: compare without spaces
        assert "[x]tinycnn" in text and "[]resnet18" in text
        assert "[x]baseline" in text and "[]stego" in text and "[]pretrainedweights" in text


@sync
async def test_help_lists_the_keys_of_the_pane(tmp_path):
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("f4")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        rows = [
            tuple(str(c) for c in app.screen.query_one("#help-keys").get_row_at(i))
            for i in range(app.screen.query_one("#help-keys").row_count)
        ]
        described = {description for _key, description in rows}
        assert {"Sort", "Reverse the order", "Mark", "Filter as you type", "Help", "Quit", "Runs"} <= described
        assert rows[0][1] in ("Sort", "Reverse the order", "Mark", "Filter as you type")  # the pane's own keys first
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.resize_terminal(80, 24)  # the list is longer than the dialog: how to close it stays in sight
        await pilot.pause()
        hint = app.screen.query_one("#help-hint")
        assert hint.region.height == 1 and hint.region.bottom <= 24 and "escape" in str(hint.render())


@sync
async def test_the_runs_search_is_kept_between_launches_without_another_change(tmp_path):
    """docs/tui.md promises the search is kept; it was saved only when another setting changed after it."""
    from greenlab.tui import preferences

    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("f4", "slash", *"tiny")
        await pilot.pause()
        saved, _problems = preferences.load()
        assert saved.runs["search"] == "tiny"  # written as typed, not only at exit
    again = app_for(tmp_path)
    async with again.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert again.query_one("#runs-search", Input).value == "tiny"
        assert again.runs_pane.query_text == "tiny"


@sync
async def test_preferences_persist_between_launches(tmp_path):
    from greenlab.tui import preferences

    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.theme = "greenlab-light"
        app.query_one("#f-epochs", Input).value = "7"
        app.query_one("#f-ray", Input).value = "auto"
        await pilot.pause()
        saved, _problems = preferences.load()
        assert saved.setup["ray"] == "auto"  # kept as typed, whatever else changes or not
        await pilot.press("f4")
        await pilot.press("s", "r")  # sort by model, reversed
    saved, problems = preferences.load()
    assert problems == [] and saved.theme == "greenlab-light"
    assert saved.setup["settings"]["epochs"] == "7" and saved.runs["sort"] == "model" and saved.runs["reverse"]
    again = app_for(tmp_path)
    async with again.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert again.theme == "greenlab-light"
        epochs = again.query_one("#f-epochs", Input)
        assert epochs.value == "7" and epochs.has_class("-changed")  # restored, and still marked against the file
        assert again.query_one("#f-ray", Input).value == "auto" and again.query_one("#setup-pane").ray_address == "auto"
        assert (again.runs_pane.sort_column, again.runs_pane.reverse) == ("model", True)


@sync
async def test_several_runs_at_once_get_a_row_each(tmp_path):
    """A Ray grid runs several at once: each running run has its row, gone once it is stored."""
    from greenlab.core.run import supervisor
    from greenlab.tui import messages
    from tests.tui_demo import FakeTracker, demo_grid

    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        grid = demo_grid()
        app.presenter.add_grid(7, grid)

        def post(event) -> None:
            app.post_message(messages.GridChanged(app.presenter.apply(event, grid=7)))

        running = app.live.running_table
        post(supervisor.RunBegan(1, grid[0], FakeTracker()))
        await pilot.pause()
        app.live.redraw()
        assert not running.display  # one run: the panel above says it all
        post(supervisor.RunBegan(2, grid[1], FakeTracker()))
        await pilot.pause()
        app.live.redraw()
        await pilot.pause()
        assert running.display and running.row_count == 2
        assert [str(running.get_row_at(i)[1]) for i in range(2)] == ["1", "2"]
        assert "Running now" in screen_text(app)
        post(supervisor.RunBegan(3, grid[2], FakeTracker()))
        await pilot.pause()
        app.live.redraw()
        assert [str(running.get_row_at(i)[1]) for i in range(3)] == ["1", "2", "3"]
        post(supervisor.RunStored(1, grid[0], "completed", None, {"energy_j": 10.0}))
        await pilot.pause()
        app.live.redraw()
        assert [str(running.get_row_at(i)[1]) for i in range(running.row_count)] == ["2", "3"]
        post(supervisor.RunStored(2, grid[1], "completed", None, {"energy_j": 10.0}))
        await pilot.pause()
        app.live.redraw()
        assert not running.display and running.row_count == 0

        # x on a Ray grid: it stops as a whole, and the question says so
        app._grid_active, app._active_ray = True, "local"  # as _launch leaves them for a Ray grid
        await pilot.press("x")
        assert isinstance(app.screen, CancelChoice) and "Ray grid" in app.screen.question
        assert str(app.screen.query_one("#answer-0").label) == "This grid (r)"
        assert [b.description for b in app.screen.BINDINGS if b.key == "r"] == ["Stop this Ray grid"]
        await pilot.press("n")
        app._grid_active = False


@sync
async def test_a_corrupted_preferences_file_warns_and_uses_the_defaults(tmp_path):
    from greenlab.tui import preferences

    preferences.config_path().parent.mkdir(parents=True, exist_ok=True)
    preferences.config_path().write_text("theme = [unclosed\n")
    app = app_for(tmp_path)
    told: list[tuple[str, str]] = []
    notify = app.notify
    # Kept as said: under load the toast's few seconds may be over before the check runs.
    app.notify = lambda message, *a, title="", **k: (
        told.append((title, message)),
        notify(message, *a, title=title, **k),
    )[1]  # type: ignore[method-assign]
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.theme == "greenlab-dark"
        assert any(title == "Preferences" and "cannot be read" in message for title, message in told)


@sync
async def test_a_user_keymap_rebinds_an_action_by_its_id(tmp_path):
    from greenlab.tui import preferences

    preferences.save(preferences.Preferences(keymap={"runs.sort": "o"}))
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("f4")
        await pilot.press("o")
        assert app.runs_pane.sort_column == "model"


@sync
async def test_runs_table_pins_columns_searches_deletes_and_shows_partial_accuracy(tmp_path):
    from textual.widgets import DataTable

    from greenlab.core.store.database import Store
    from greenlab.tui.dialogs import ConfirmDelete
    from tests.tui_demo import seed_store

    db = tmp_path / "demo.db"
    seed_store(db)
    app = GreenLabApp(db=db, experiments=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("f4")
        runs, table = app.runs_pane, app.query_one("#runs-table", DataTable)
        assert table.fixed_columns == 3 and [str(c.label) for c in table.columns.values()][:4] == [
            "id ▲",
            "model",
            "technique",
            "status",
        ]
        interrupted = next(r for r in runs.shown if r.run.status == "interrupted")
        row = table.get_row(str(interrupted.run.id))
        assert str(row[6]).startswith("(") and str(row[6]).endswith("%)")  # the last epoch's, marked partial
        assert table.border_subtitle == "(acc) = last epoch of a stopped run"
        # at 80 columns each filter's prompt and the count (on the table's title) stay whole
        for key in ("model", "technique", "status"):
            assert app.query_one(f"#filter-{key}").size.width >= len(f"{key}: all") + len(" ▼ "), key
        counted = Content.from_markup(table.border_title or "").plain
        assert counted.endswith(" runs") and table.size.width >= len(counted) + 4
        # a filter chosen while another widget has focus keeps every column wide enough for its cells
        app.query_one("#filter-technique").value = "stego"
        await pilot.pause()
        for index, column in enumerate(table.columns.values()):
            widest = max(len(str(table.get_row_at(r)[index])) for r in range(table.row_count))
            assert column.width >= widest, column.label
        app.query_one("#filter-technique").clear()
        await pilot.pause()
        await pilot.press("slash", *"vit", "enter")
        assert runs.shown and {r.run.model for r in runs.shown} == {"vit_b_16"}
        assert app.focused is table
        await pilot.press("space", "down", "space", "d")
        assert isinstance(app.screen, ConfirmDelete)
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(runs.marked) == 0 and len(runs.rows) == 12
    store = Store(db)
    assert (
        len(store.runs()) == 12
        and not store.db.execute("select count(*) from samples where run_id not in (select id from runs)").fetchone()[0]
    )
    store.close()


@sync
async def test_a_delete_waiting_on_another_processs_lock_leaves_the_ui_answering(tmp_path):
    """A backup or a sqlite3 shell holds the store's write lock: the delete waits on its thread and says
    so, keys are still answered, and the runs go once the lock does."""
    import subprocess
    import sys

    from greenlab.core.store.database import Store
    from tests.tui_demo import seed_store

    db = tmp_path / "demo.db"
    seed_store(db)
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "c.execute('begin exclusive'); print('locked', flush=True); sys.stdin.readline(); c.execute('rollback')"
    )
    app = GreenLabApp(db=db, experiments=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f4")
        await app.workers.wait_for_complete()
        await pilot.pause()
        runs = app.runs_pane
        before = len(runs.rows)
        holder = subprocess.Popen([sys.executable, "-c", code, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert holder.stdout.readline().strip() == b"locked"
            await pilot.press("space", "d", "y")
            for _ in range(50):  # the busy note comes within about a second
                await pilot.pause(0.1)
                if any("store busy, waiting" in str(n.message) for n in app._notifications):
                    break
            else:
                raise AssertionError("no store-busy notification")
            await pilot.press("s")  # the UI thread answers while the delete waits
            await pilot.pause()
            assert len(runs.rows) == before and runs.marked
        finally:
            holder.communicate(b"\n", timeout=30)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(runs.rows) == before - 1 and not runs.marked
    store = Store(db)
    assert len(store.runs()) == before - 1
    store.close()


def test_the_tui_page_lists_every_key_by_its_id():
    from textual.binding import Binding

    from greenlab.tui import app, detail, dialogs, runs
    from tests.conftest import REPO

    docs = (REPO / "docs" / "tui.md").read_text()
    classes = [
        app.GreenLabApp,
        runs.RunsPane,
        detail.DetailScreen,
        dialogs.ConfirmQuit,
        dialogs.CancelChoice,
        dialogs.CancelRayGrid,
        dialogs.ConfirmDelete,
        dialogs.HelpScreen,
    ]
    ids = [b.id for cls in classes for b in cls.BINDINGS if isinstance(b, Binding)]
    assert all(ids) and [i for i in ids if f"`{i}`" not in docs] == []


@sync
async def test_a_superseded_run_is_listed_but_not_plotted_twice(tmp_path):
    from greenlab.core.store.database import Store

    db = tmp_path / "runs.db"
    store = Store(db)
    for energy in (10.0, 12.0):  # a run and its forced rerun
        run_id = store.start_run({"model": "tinycnn", "technique": "baseline", "settings_key": "k"})
        store.update_run(run_id, status="completed", energy_j=energy, val_accuracy=0.5)
    store.close()
    app = GreenLabApp(db=db, experiments=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("f4")
        await pilot.pause()
        assert sorted(r.run.status for r in app.runs_pane.shown) == ["completed", "superseded"]
        assert app.query_one("#tradeoff").border_title == "Energy against accuracy: 1 shown runs"
