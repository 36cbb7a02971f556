"""`make screenshots`: SVG pictures of every pane, from a seeded demo store, into screenshots/.

Runs the app headless (App.run_test) at 120x40 on a throwaway store filled by tests/tui_demo.py (dev-only
fixtures, not shipped), so the pictures show the same fake study on every machine.
Usage: python scripts/screenshots.py [DIR]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: greenlab and tests

SIZE = (120, 40)
# (file name, pane, theme)
SHOTS = (("setup.svg", "setup", "greenlab-dark"), ("live.svg", "live", "greenlab-dark"),
         ("runs.svg", "runs", "greenlab-dark"), ("detail.svg", "detail", "greenlab-dark"),
         ("runs-light.svg", "runs", "greenlab-light"))


async def _shoot(db: Path, out: Path, name: str, pane: str, theme: str, experiments: str | None) -> Path:
    from greenlab.tui.app import GreenLabApp
    from tests.tui_demo import FrozenClock, show

    clock = FrozenClock()
    app = GreenLabApp(db=db, theme=theme, experiments=experiments, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await show(app, pilot, pane, clock)
        return Path(app.save_screenshot(filename=name, path=str(out)))


def main(argv: list[str] | None = None) -> int:
    from tests.tui_demo import seed_store

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    experiments = "experiments.toml" if Path("experiments.toml").exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        seed_store(db)
        for name, pane, theme in SHOTS:
            path = asyncio.run(_shoot(db, out, name, pane, theme, experiments))
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
