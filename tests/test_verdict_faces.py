"""One store, three faces: the headless summary, the TUI's verdicts table and `greenlab report` give the same
verdict for the same runs, with or without a filter, whatever else the store holds."""

from __future__ import annotations

import json

from textual.widgets import DataTable

from greenlab import cli
from greenlab.core.grid.session import GridOutcome, plan_verdicts
from greenlab.core.plan.config import parse_grid
from greenlab.core.report.render import verdict_summary
from greenlab.core.run.supervisor import run_row_values
from greenlab.core.store.database import Store
from greenlab.tui.app import GreenLabApp
from tests.conftest import sync

GRID_A = """
[analysis]
alpha = 0.05
[[experiment]]
name = "a"
models = ["tinycnn"]
techniques = ["baseline", "prune", "stego", "lowrank"]
repeats = 4
"""
GRID_B = GRID_A.replace('name = "a"', 'name = "b"').replace('"tinycnn"', '"resnet18"')
ENERGY_A = {
    "baseline": [100.0, 103.0, 97.0, 101.0],
    "prune": [92.0, 94.0, 90.0, 93.0],
    "stego": [101.0, 99.0, 102.0, 98.0],
    "lowrank": [100.0, 104.0, 96.0, 100.0],
}
ENERGY_B = {
    "baseline": [50.0, 51.0, 49.0, 50.5],
    "prune": [50.5, 49.5, 50.0, 50.2],
    "stego": [49.0, 51.0, 50.0, 50.1],
    "lowrank": [50.0, 50.5, 49.5, 50.3],
}


def _fill(store: Store, text: str, energies: dict[str, list[float]], source: str, durations=None):
    grid_file = parse_grid(text, source)
    grid = grid_file.grid()
    plan = grid_file.plan(grid)
    store.declare_plan(plan)
    for run in grid:
        run_id = store.start_run(run_row_values(run))
        energy = energies[run.technique][run.repeat]
        store.update_run(
            run_id,
            status="completed",
            energy_training_j=energy,
            energy_j=energy + 20,
            duration_s=energy / 10 if durations is None else durations[run.technique][run.repeat],
            val_accuracy=0.9 + 0.001 * run.repeat,
            val_f1=0.9,
            energy_measured_j=energy + 20,
            energy_estimated_j=0.0,
        )
    return plan


def _report(db, *args, capsys, metric: str = "energy_training_j") -> dict[str, str]:
    assert cli.main(["report", "--db", str(db), "--format", "json", "--metric", metric, *args]) == 0
    return {o["technique"]: o["word"] for o in json.loads(capsys.readouterr().out) if o["model"] == "tinycnn"}


def _headless(store: Store, plan) -> dict[str, str]:
    found = {}
    for line in verdict_summary(plan_verdicts(store, plan)).splitlines():
        parts = line.split()
        if parts and parts[0] == "tinycnn" and len(parts) > 2 and "v" in parts[2]:
            found[parts[1]] = line.split("  ")[-1].strip()
    return found


async def _tui(db, search: str = "", title: list[str] | None = None) -> dict[str, str]:
    app = GreenLabApp(db=str(db))
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.press("f4")
        pane = app.runs_pane
        if search:
            await pilot.press("slash", *search, "enter")
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        table = pane.query_one("#verdicts-table", DataTable)
        if title is not None:
            title.append(str(table.border_title))
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        verdict = [str(column.label) for column in table.ordered_columns].index("verdict")
        return {str(r[1]): str(r[verdict]) for r in rows if str(r[0]) == "tinycnn"}


@sync
async def test_three_faces_agree_on_one_store_whatever_else_it_holds(tmp_path, capsys):
    db = tmp_path / "runs.db"
    store = Store(db)
    plan = _fill(store, GRID_A, ENERGY_A, "a.toml")
    alone = {"report": _report(db, capsys=capsys), "headless": _headless(store, plan), "tui": await _tui(db)}
    assert alone["report"]["prune"] == "saves"  # p about 0.01 in a family of 3: Holm keeps it
    assert alone["report"] == alone["headless"] == alone["tui"], alone
    # another experiment's null comparisons join the store: a's verdicts stay as they were, in every face
    _fill(store, GRID_B, ENERGY_B, "b.toml")
    shared = {
        "report": _report(db, capsys=capsys),
        "filtered": _report(db, "--experiment", "a", capsys=capsys),
        "headless": _headless(store, plan),
        "tui": await _tui(db),
        "searched": await _tui(db, "tinycnn"),
    }
    store.close()
    for face, found in shared.items():
        assert found == alone["report"], (face, found)


@sync
async def test_every_face_judges_the_plans_primary_metric(tmp_path, capsys):
    """A plan whose primary metric is time: prune saves training energy but not time, and every face shows
    the time verdict as the primary one (the TUI names the metric in its title)."""
    db = tmp_path / "runs.db"
    store = Store(db)
    steady = {t: [10.0, 10.4, 9.6, 10.1] for t in ENERGY_A}
    plan = _fill(
        store, GRID_A.replace("alpha = 0.05", 'alpha = 0.05\nprimary = "duration_s"'), ENERGY_A, "a.toml", steady
    )
    assert plan.analysis.primary == "duration_s"
    assert _report(db, capsys=capsys)["prune"] == "saves"  # training energy, a secondary metric here
    title: list[str] = []
    faces = {
        "report": _report(db, capsys=capsys, metric="duration_s"),
        "headless": _headless(store, plan),
        "tui": await _tui(db, title=title),
    }
    store.close()
    assert faces["report"]["prune"] == "equivalent"
    assert faces["report"] == faces["headless"] == faces["tui"], faces
    assert "time (primary metric)" in title[0]


@sync
async def test_a_flagged_verdict_says_so_beside_it_in_every_face(tmp_path, capsys):
    """Diagnostics come before the verdicts they qualify: the headless summary lists them above its table
    and marks the row, the TUI's verdicts table names them in its check column, the report's text puts the
    check line before the sentence."""
    db = tmp_path / "runs.db"
    store = Store(db)
    energies = {
        "baseline": [100.0, 101.0, 99.0, 100.0, 160.0],  # run 5 an outlier
        "prune": [80.0, 81.0, 79.0, 80.5, 79.5],
        "stego": [100.0, 101.0, 99.0, 100.5, 99.5],
        "lowrank": [100.0, 101.5, 99.0, 100.5, 99.0],
    }
    plan = _fill(store, GRID_A.replace("repeats = 4", "repeats = 5"), energies, "a.toml")
    summary = verdict_summary(plan_verdicts(store, plan))
    store.close()
    table_at = summary.index("Verdicts on training energy")
    assert summary.index("check: tinycnn: baseline run") < table_at
    assert all(line.endswith("(see check)") for line in summary[table_at:].splitlines() if line.startswith("tinycnn "))

    app = GreenLabApp(db=str(db))
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("f4")
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        table = app.runs_pane.query_one("#verdicts-table", DataTable)
        header = [str(column.label) for column in table.ordered_columns]
        checks = header.index("check (w)")
        # model and technique pinned, then the verdict word, its interval and what to check
        assert header[:5] == ["model", "technique", "verdict", "Δ primary [CI]", "check (w)"]
        assert table.fixed_columns == 2
        flagged = {str(table.get_row_at(i)[1]): str(table.get_row_at(i)[checks]) for i in range(table.row_count)}
    assert "outlier" in flagged["prune"], flagged

    assert cli.main(["report", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert text.index("check (training energy): baseline run") < text.index("[primary] prune")


@sync
async def test_one_technique_at_two_settings_is_two_comparisons_in_every_face(tmp_path, capsys):
    """Experiment b prunes the same model under the same conditions at amount 0.9: its runs are another
    treatment, never pooled with a's prune at the default 0.5, and each plan keeps its own family."""
    db = tmp_path / "runs.db"
    store = Store(db)
    plan_a = _fill(store, GRID_A, ENERGY_A, "a.toml")
    grid_b = (
        '[[experiment]]\nname = "b"\nmodels = ["tinycnn"]\ntechniques = ["baseline", "prune"]\nrepeats = 4\n'
        "[experiment.prune]\namount = 0.9\n"
    )
    plan_b = _fill(store, grid_b, {"baseline": ENERGY_A["baseline"], "prune": [99.0, 104.0, 97.0, 101.0]}, "b.toml")
    assert [c.technique for c in plan_b.cells] == ["prune[amount=0.9]"]
    report = _report(db, capsys=capsys)
    assert report["prune"] == "saves" and report["prune[amount=0.9]"] == "equivalent", report
    assert cli.main(["report", "--db", str(db), "--format", "json", "--experiment", "a"]) == 0
    a_only = [o for o in json.loads(capsys.readouterr().out) if o["metric"] == "energy_training_j"]
    prune = next(o for o in a_only if o["technique"] == "prune")
    assert prune["n"] == 4 and prune["holm_family"] == 3 and prune["word"] == "saves", prune
    assert _headless(store, plan_a)["prune"] == "saves" and _headless(store, plan_b) == {
        "prune[amount=0.9]": "equivalent"
    }
    tui = await _tui(db)
    store.close()
    assert tui["prune"] == "saves" and tui["prune[amount=0.9]"] == "equivalent", tui


def test_a_plan_stored_before_labels_counts_its_cell_once_under_the_label_its_runs_carry(tmp_path, capsys):
    """An older GreenLab stored plan b's cell as bare `prune` although b pruned at 0.9: that cell is b's
    labelled comparison, not an extra never-run one that would enlarge b's family."""
    import sqlite3

    db = tmp_path / "runs.db"
    store = Store(db)
    _fill(store, GRID_A, ENERGY_A, "a.toml")
    grid_b = GRID_A.replace('name = "a"', 'name = "b"') + "[experiment.prune]\namount = 0.9\n"
    _fill(store, grid_b, {t: [v - 5 for v in values] for t, values in ENERGY_A.items()}, "b.toml")
    store.close()
    assert cli.main(["report", "--db", str(db), "--format", "json", "--experiment", "b"]) == 0
    labelled = {o["technique"]: o for o in json.loads(capsys.readouterr().out) if o["metric"] == "energy_training_j"}
    conn = sqlite3.connect(db)
    cells = json.loads(conn.execute("select cells from plans where source = 'b.toml'").fetchone()[0])
    for cell in cells:
        cell["technique"] = cell["technique"].split("[")[0]
    conn.execute("update plans set cells = ? where source = 'b.toml'", [json.dumps(cells)])
    conn.commit()
    conn.close()
    assert cli.main(["report", "--db", str(db), "--format", "json", "--experiment", "b"]) == 0
    legacy = {o["technique"]: o for o in json.loads(capsys.readouterr().out) if o["metric"] == "energy_training_j"}
    assert set(legacy) == set(labelled) == {"prune[amount=0.9]", "stego", "lowrank"}
    for technique, comparison in labelled.items():
        assert legacy[technique]["holm_family"] == comparison["holm_family"] == 3
        assert legacy[technique]["word"] == comparison["word"]


def test_plans_with_different_primaries_get_a_table_each_headed_by_its_metric(tmp_path, capsys):
    db = tmp_path / "runs.db"
    store = Store(db)
    steady = {t: [10.0, 10.4, 9.6, 10.1] for t in ENERGY_A}
    _fill(store, GRID_A.replace("alpha = 0.05", 'alpha = 0.05\nprimary = "duration_s"'), ENERGY_A, "a.toml", steady)
    _fill(store, GRID_B, ENERGY_B, "b.toml")
    store.close()
    for fmt in ("text", "markdown", "latex"):
        assert cli.main(["report", "--db", str(db), "--format", fmt]) == 0
        text = capsys.readouterr().out
        time_at, energy_at = text.index("primary metric is time"), text.index("primary metric is training energy")
        time_part, energy_part = (text[time_at:energy_at], text[energy_at:])
        if time_at > energy_at:
            time_part, energy_part = text[time_at:], text[energy_at:time_at]
        assert "tinycnn" in time_part and "resnet18" not in time_part, fmt
        assert "resnet18" in energy_part and "tinycnn" not in energy_part, fmt
        if fmt == "text":
            assert "change: time (primary metric)" in time_part
            assert "change: training energy (primary metric)" in energy_part
            assert "[primary] prune is equivalent to the baseline in time" in time_part


@sync
async def test_a_grid_that_ends_in_the_tui_tells_its_verdicts_as_headless_prints_them(tmp_path):
    """The TUI renders the session's outcome: the grid's verdicts on its primary metric, a line each, with
    the words the headless summary and the Runs pane use."""
    db = tmp_path / "runs.db"
    store = Store(db)
    plan = _fill(store, GRID_A, ENERGY_A, "a.toml")
    outcome = GridOutcome([], False, db, verdicts=plan_verdicts(store, plan))
    headless = _headless(store, plan)
    store.close()
    app = GreenLabApp(db=str(db))
    told: list[tuple[str, str]] = []
    async with app.run_test(size=(120, 40)) as pilot:
        app.notify = lambda message, *a, title="", **k: told.append((title, str(message)))  # type: ignore[method-assign]
        app._tell_outcome(3, outcome)
        await pilot.pause()
    [(title, text)] = told
    assert title == "Grid 3: verdicts on training energy"
    lines = text.splitlines()
    assert lines[-1] == "Runs pane: v lists them, w explains one"
    assert {line.split(" · ")[1].split(":")[0]: line.split(": ", 1)[1] for line in lines[:-1]} == headless
