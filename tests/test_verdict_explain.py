"""The TUI's verdicts explain themselves: an inconclusive one says how many runs per side would decide, and
`w` opens the selected verdict's full sentence with its checks, exactly as `greenlab report` writes it."""

from __future__ import annotations

from textual.widgets import DataTable

from greenlab.core.report import compare, render
from greenlab.tui.app import GreenLabApp
from greenlab.tui.dialogs import HelpScreen, VerdictScreen
from greenlab.tui.runs import would_decide
from tests.conftest import sync
from tests.test_groups import _grid
from tests.tui_demo import seed_store


def test_an_inconclusive_verdict_says_how_many_runs_per_side_would_decide():
    rows = _grid(1)
    noisy = zip(rows[3:], (7.0, 11.0, 10.5))  # a noisy technique: inconclusive
    rows[3:] = [row.replaced(energy_training_j=energy, energy_j=energy) for row, energy in noisy]
    (energy,) = [c for c in compare.judge(rows) if c.metric == compare.HEADLINE]
    assert energy.verdict == "inconclusive" and energy.repeats_to_decide is not None
    assert would_decide(energy) == f"about {energy.repeats_to_decide} runs per side"
    assert f"about {energy.repeats_to_decide} runs per side would likely decide" in energy.sentence
    (saves,) = [c for c in compare.judge(_grid(1)) if c.metric == compare.HEADLINE]
    assert saves.verdict == "saves" and would_decide(saves) == ""


@sync
async def test_w_opens_the_selected_verdict_as_the_report_writes_it(tmp_path):
    db = tmp_path / "runs.db"
    seed_store(db)
    app = GreenLabApp(db=db)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        await app.workers.wait_for_complete()
        await pilot.pause()
        verdicts = app.query_one("#verdicts-table", DataTable)
        verdicts.focus()
        await pilot.press("down")
        await pilot.press("w")
        await pilot.pause()
        assert isinstance(app.screen, VerdictScreen)
        chosen = app.runs_pane.chosen_verdict()
        assert chosen is not None and app.screen.title_text.startswith(f"{chosen.label} · {chosen.technique}")
        report = render.render_text(app.runs_pane.comparisons)
        assert app.screen.lines == render.explanation(chosen, app.runs_pane.comparisons)
        assert all(line in report for line in app.screen.lines)  # word for word the report's
        assert any(line.startswith("[primary] ") for line in app.screen.lines)
        shown = [str(s.render()) for s in app.screen.query(".verdict-line")]
        assert shown == app.screen.lines
        await pilot.press("escape")
        assert not isinstance(app.screen, VerdictScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("#help-keys", DataTable)
        keys = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        assert any("as greenlab report writes it" in k for k in keys)
        await pilot.press("escape")
        commands = [c.title for c in app._screen_commands(app.screen)]
        assert "Explain verdict" in commands


@sync
async def test_a_group_named_by_its_settings_keeps_its_brackets_in_the_tui(tmp_path):
    """`tinycnn [lr=0.01]` is text: read as markup, the bracket vanished and two groups read `tinycnn`."""
    from greenlab.core.store.database import Store

    store = Store(tmp_path / "runs.db")
    for row in _grid(1, lr=0.01) + _grid(10, lr=0.1):
        run_id = store.start_run(
            {k: row.value(k) for k in ("experiment", "model", "dataset", "technique", "settings_key", "conditions_key")}
            | {"settings": row.settings}
        )
        store.update_run(run_id, status="completed", energy_j=row.energy_j, energy_training_j=row.energy_j)
    store.close()
    app = GreenLabApp(db=tmp_path / "runs.db")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        await app.workers.wait_for_complete()
        await pilot.pause()
        verdicts = app.query_one("#verdicts-table", DataTable)
        shown = sorted(verdicts.get_row_at(i)[0].plain for i in range(verdicts.row_count))
        assert shown == ["tinycnn [lr=0.01]", "tinycnn [lr=0.1]"]
        verdicts.focus()
        await pilot.press("w")
        await pilot.pause()
        assert str(app.screen.query_one("#verdict-title").render()).startswith("tinycnn [lr=")
