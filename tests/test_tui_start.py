"""The TUI's start: its first frame waits for nothing it does not draw. The store is checked before the UI
(a bad --db is one line and exit 2), but opened to write — sqlite-utils imported, migrations, records kept
aside, runs orphaned by a dead supervisor closed — on a thread once the first frame is drawn, and the Runs
pane reads it after that."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from greenlab.core.plan.config import parse_grid
from greenlab.core.run.supervisor import run_row_values
from greenlab.core.store.database import ORPHANED, Store

START = textwrap.dedent(
    """
    import json, sys
    from greenlab.tui.app import GreenLabApp

    seen = {}

    class Watched(GreenLabApp):
        def on_mount(self):
            seen["sqlite_utils at mount"] = "sqlite_utils" in sys.modules
            super().on_mount()

    async def main():
        app = Watched(db=sys.argv[1])
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            for _ in range(100):
                if app.runs_pane.shown:
                    break
                await pilot.pause(0.1)
            seen["listed"] = [(r.run.id, r.run.status) for r in app.runs_pane.shown]

    import asyncio
    asyncio.run(main())
    print(json.dumps(seen))
    """
)


def test_the_store_is_opened_to_write_after_the_first_frame_and_its_orphans_are_closed(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    (run,) = parse_grid('[[experiment]]\nname = "o"\nmodels = ["tinycnn"]\ntechniques = ["baseline"]\n', "o").grid()
    orphan = store.start_run(run_row_values(run))
    store.update_run(orphan, supervisor_pid=2**22 + 12345)  # no such process: its supervisor died mid-run
    store.close()
    done = subprocess.run(
        [sys.executable, "-c", START, str(db)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["sqlite_utils at mount"] is False  # the writer's open (and its import) came after
    assert seen["listed"] == [[orphan, "interrupted"]]  # closed before the Runs pane read it
    assert Store.reader(db).run(orphan)["error"] == ORPHANED
