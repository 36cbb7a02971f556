"""What a user meets in the first hour of the TUI: a delete that names what it deletes, keys typed fast,
an empty field, a quit confirmed during a run, help and palette texts that read whole."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from textual import events
from textual.content import Content
from textual.widgets import DataTable, Input

from greenlab.tui.app import GreenLabApp
from greenlab.tui.dialogs import ConfirmDelete
from greenlab.tui.runs import ROW_LIMIT
from tests.conftest import sync
from tests.tui_demo import seed_store


def rendered(markup: str | None) -> str:
    """A border title as it reads on screen (it is kept as markup)."""
    return Content.from_markup(markup or "").plain


def demo_app(tmp_path) -> GreenLabApp:
    """The app on a store of the demo's runs (14, of three models and four techniques)."""
    db = tmp_path / "demo.db"
    seed_store(db)
    return GreenLabApp(db=db, experiments=None)


async def on_runs_pane(app, pilot) -> None:
    """Switch to the Runs pane and wait until its rows and verdicts are in."""
    await pilot.press("f4")
    await app.workers.wait_for_complete()
    await pilot.pause()


@sync
async def test_delete_names_the_marked_runs_and_those_a_search_hides(tmp_path):
    app = demo_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await on_runs_pane(app, pilot)
        runs, table = app.runs_pane, app.query_one("#runs-table", DataTable)
        first, second = runs.shown[0], runs.shown[1]
        await pilot.press("space", "down", "space")
        assert runs.marked == {first.run.id, second.run.id}
        assert (first.run.technique, second.run.technique) == ("baseline", "stego")  # the demo store's first two
        await pilot.press("slash", *"baseline", "enter")  # a search that hides the second
        assert first in runs.shown and second not in runs.shown
        assert app.focused is table
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmDelete)
        question = app.screen.question
        assert (
            f"run {first.run.id} {first.run.model}" in question
            and f"run {second.run.id} {second.run.model}" in question
        )
        assert f"1 of them is hidden by the search or a filter: run {second.run.id}." in question
        await pilot.press("n")


def _burst(app, keys) -> None:
    """Keys posted all at once, as a fast typist (or a busy host) delivers them: no pause between them."""
    for key in keys:
        if len(key) == 1:
            app.post_message(events.Key({".": "full_stop", " ": "space"}.get(key, key), key))
        else:
            app.post_message(events.Key(key, None))


@pytest.mark.slow
@sync
async def test_keys_typed_without_pauses_while_a_grid_runs_are_neither_lost_nor_reordered(tmp_path):
    from tests.test_tui_app import _long_tinycnn_app

    app = _long_tinycnn_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+r")
        deadline = time.monotonic() + 60
        while app.live.current is None:  # the grid's child is training now
            assert time.monotonic() < deadline, "the run never began"
            await pilot.pause(0.1)
        await pilot.press("f4", "slash")
        search = app.query_one("#runs-search", Input)
        assert app.focused is search
        _burst(app, [*"resnet18 prune", *["backspace"] * 14, *"stego"])
        await pilot.pause(0.5)
        assert search.value == "stego"
        await pilot.press("escape", "f2")
        lr = app.query_one("#f-lr", Input)
        lr.focus()
        await pilot.pause()
        _burst(app, ["end", *"71", *["backspace"] * 12, *"0.003"])
        await pilot.pause(0.5)
        assert lr.value == "0.003"
        epochs, batch = app.query_one("#f-epochs", Input), app.query_one("#f-batch_size", Input)
        epochs.focus()
        await pilot.pause()
        before = epochs.value
        _burst(app, ["tab", *"128", "shift+tab", "end", "backspace", *"7"])  # the next field, then back
        await pilot.pause(0.5)
        assert batch.value == "128" and epochs.value == before[:-1] + "7"
        app.cancel_everything()
        while app.running:
            await pilot.pause(0.2)


@sync
async def test_an_emptied_field_is_refused_not_taken_as_its_default(tmp_path):
    from tests.test_tui_usability import app_for

    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.query_one("#f-repeats", Input).value = ""
        await pilot.pause()
        status = str(app.query_one("#setup-status").render())
        assert "repeats: is empty; write a value (the default is 1)" in status, status
        assert app.query_one("#f-repeats").has_class("-invalid")
        await pilot.press("ctrl+r")
        assert not app.running and app.presenter.snapshot().queue == ()
        app.query_one("#f-max_train_batches", Input).value = ""  # blank here means no cap: allowed
        app.query_one("#f-repeats", Input).value = "2"
        await pilot.pause()
        assert "2 repeats" in str(app.query_one("#setup-status").render())


@sync
async def test_stored_control_characters_are_shown_escaped_never_obeyed(tmp_path):
    """A store another tool wrote may hold an ESC in a name: the TUI writes it out as \\x1b."""
    from greenlab.core.store.database import Store

    db = tmp_path / "runs.db"
    store = Store(db)
    run_id = store.start_run({"model": "evil\x1b[31mred\x00", "technique": "baseline", "experiment": "e\x07"})
    store.update_run(run_id, status="completed", energy_j=5.0)
    store.close()
    app = GreenLabApp(db=db, experiments=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await on_runs_pane(app, pilot)
        row = app.query_one("#runs-table", DataTable).get_row_at(0)
        assert str(row[1]) == "evil\\x1b[31mred\\x00"
        app.action_open_detail(run_id)
        await pilot.pause()
        summary = str(app.screen.query_one("#detail-summary").render())
        assert "evil\\x1b[31mred\\x00" in summary and "\x1b" not in summary and "\\x07" in summary


@sync
async def test_a_report_from_the_palette_is_the_command_lines_under_its_rules(tmp_path, capsys):
    from greenlab import cli
    from greenlab.tui.report_dialog import ReportDialog

    app = demo_app(tmp_path)
    db = app.db_path
    target = tmp_path / "report.md"
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert "Report: write to a file" in commands and "Export runs as CSV" in commands

        async def write(path, *, force=False):
            app.action_write_report("markdown")
            await pilot.pause()
            assert isinstance(app.screen, ReportDialog)
            app.screen.query_one("#report-path", Input).value = str(path)
            if force:
                app.screen.query_one("#report-force").value = True
            await pilot.press("enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
            return [(n.title, n.message) for n in app._notifications]

        told = await write(target)
        assert ("Report written", f"greenlab report: wrote {target}") in told
        written = target.read_text()
        told = await write(target)  # the same file again: refused, left as it was
        assert any(t == "Report not written" and "--force" in m for t, m in told), told
        assert target.read_text() == written
        told = await write(db, force=True)  # the store itself: never, even when replacing is asked for
        assert any(t == "Report not written" and "store" in m for t, m in told), told
    assert cli.main(["report", "--db", str(db), "--format", "markdown"]) == 0
    assert capsys.readouterr().out == written  # byte for byte what the command line prints


@sync
async def test_a_study_sized_table_lists_a_page_at_a_time_and_says_how_to_reach_the_rest(tmp_path):
    from greenlab.core.store.database import Store

    db = tmp_path / "runs.db"
    store = Store(db, durable=False)
    for n in range(250):
        run_id = store.start_run({"model": f"m{n % 9}", "technique": "baseline", "settings_key": f"k{n}"})
        store.update_run(run_id, status="completed", energy_j=float(n + 1))
    store.close()
    app = GreenLabApp(db=db, experiments=None)
    async with app.run_test(size=(70, 20)) as pilot:
        await on_runs_pane(app, pilot)
        table = app.query_one("#runs-table", DataTable)
        # the count and the page on the table they count, with the keys that reach the others, whole at the
        # smallest terminal the app supports
        assert table.row_count == ROW_LIMIT == 100
        assert rendered(table.border_title) == "250 of 250 runs · rows 1–100 (] next, / finds)"
        assert table.size.width >= len(rendered(table.border_title)) + 4
        await pilot.press("right_square_bracket")
        assert rendered(table.border_title) == "250 of 250 runs · rows 101–200 ([ ] pages, / finds)"
        assert str(table.get_row_at(0)[0]) == "101"
        await pilot.press("right_square_bracket", "right_square_bracket")  # past the last page: it stays
        assert table.row_count == 50
        assert rendered(table.border_title) == "250 of 250 runs · rows 201–250 ([ back, / finds)"
        await pilot.press("left_square_bracket")
        assert str(table.get_row_at(0)[0]) == "101"


@sync
async def test_the_first_page_is_listed_from_the_store_before_the_whole_store_is_read(tmp_path):
    from greenlab.core.store.database import Store
    from greenlab.tui.runs import table_rows

    db = tmp_path / "runs.db"
    store = Store(db, durable=False)
    for _n in range(250):
        store.update_run(store.start_run({"model": "m", "technique": "baseline"}), status="completed")
    page, total = store.first_runs(ROW_LIMIT)
    newest, _total = store.first_runs(3, descending=True)
    store.close()
    assert (
        total == 250
        and [r["id"] for r in page] == list(range(1, ROW_LIMIT + 1))
        and [r["id"] for r in newest] == [250, 249, 248]
    )
    app = GreenLabApp(db=db, experiments=None)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.runs_pane
        while pane.comparisons is None:  # the read the pane starts after the first frame, done
            await pilot.pause(0.05)
        pane.rows = []  # as at the start, before anything was listed
        pane._read(pane.RowsRead(pane._generation, table_rows(page, {}, against_baselines=False), total))
        await pilot.pause()
        assert app.query_one("#runs-table", DataTable).row_count == ROW_LIMIT
        title = rendered(app.query_one("#runs-table").border_title)
        assert title == "reading 250 runs · rows 1–100 listed meanwhile"
        pane.reload()  # the whole store follows and replaces it
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(pane.rows) == 250
        assert rendered(app.query_one("#runs-table").border_title).startswith("250 of 250 runs")


@given(
    top=st.floats(0.01, 1e6),
    series=st.integers(1, 6),
    rows=st.integers(6, 60),
)
def test_the_legend_rows_stay_above_the_highest_point(top, series, rows):
    from greenlab.tui.charts import CHART_CHROME_ROWS, legend_headroom

    limit = legend_headroom(top, series, rows)
    plot_rows = max(rows - CHART_CHROME_ROWS, series + 2)
    # the highest point's row, counted from the top of the plot, is below the legend's rows
    row_of_top = (1 - top / limit) * plot_rows
    assert limit >= top and row_of_top >= series + 1 - 1e-9


@sync
async def test_the_energy_accuracy_chart_names_its_series_by_marker_not_a_legend_over_the_points(tmp_path):
    app = demo_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await on_runs_pane(app, pilot)
        chart = app.query_one("#tradeoff")
        assert "• baseline" in str(chart.border_subtitle) and "x " in str(chart.border_subtitle)
