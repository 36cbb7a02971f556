"""`make screenshots`: SVG pictures of every pane from real runs, into screenshots/.

Runs the default grid (experiments.toml, offline, about a minute on two CPU cores) into a throwaway
store, then drives the app headless (App.run_test) at 120x40: the runs and detail panes show those
stored runs, and the live pane is taken while the same grid really trains in a second throwaway store.
Nothing here is invented; the figures are this machine's. Usage: python scripts/screenshots.py [DIR]
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's greenlab

SIZE = (120, 40)
EXPERIMENTS = "experiments.toml"


async def _wait(pilot, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await pilot.pause(0.2)


async def _shoot(db: Path, out: Path, name: str, pane: str, theme: str) -> Path:
    from greenlab.core.store.database import Store
    from greenlab.tui.app import GreenLabApp

    app = GreenLabApp(db=db, theme=theme, experiments=EXPERIMENTS)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.sub_title = "store data/runs.db"  # the throwaway path differs on every machine
        if pane == "live":
            await pilot.press("ctrl+r")
            # a resnet18 run well into its training: the chart has a few seconds of power to show
            await _wait(
                pilot,
                lambda: (
                    app.live.current is not None
                    and app.live.current.run.model == "resnet18"
                    and app.live.current.phase == "train"
                    and app.live.current.batch >= 6
                ),
                300,
            )
            app.live.redraw()
            app.live.redraw()
            await pilot.pause()
        elif pane in ("runs", "detail"):
            app.action_show_pane("runs")
            await pilot.pause()
            if pane == "detail":
                store = Store(db)
                run_id = next(r.id for r in store.completed_runs() if (r.model, r.technique) == ("resnet18", "lowrank"))
                store.close()
                app.action_open_detail(run_id)
                await pilot.pause()
        for widget in app.screen.query("Input"):
            widget.cursor_blink = False  # a screenshot mid-blink would differ from the next one
        app.clear_notifications()
        await pilot.pause()
        path = Path(app.save_screenshot(filename=name, path=str(out)))
        if pane == "live":
            app.cancel_everything()  # the picture is taken: stop the grid (stored as interrupted, then gone)
            await _wait(pilot, lambda: not app.running, 60)
        return path


def main(argv: list[str] | None = None) -> int:
    from greenlab.headless import run_headless

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GREENLAB_CONFIG"] = str(Path(tmp) / "config.toml")  # never the user's preferences
        db = Path(tmp) / "runs.db"
        print(f"running the default grid ({EXPERIMENTS}) for the pictures; about a minute on two cores")
        log = io.StringIO()
        if run_headless(EXPERIMENTS, db=str(db), out=log) != 0:
            print(log.getvalue())
            return 1
        for name, pane, theme, store in (
            ("setup.svg", "setup", "greenlab-dark", db),
            ("live.svg", "live", "greenlab-dark", Path(tmp) / "live.db"),
            ("runs.svg", "runs", "greenlab-dark", db),
            ("detail.svg", "detail", "greenlab-dark", db),
            ("runs-light.svg", "runs", "greenlab-light", db),
        ):
            print(f"wrote {asyncio.run(_shoot(store, out, name, pane, theme))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
