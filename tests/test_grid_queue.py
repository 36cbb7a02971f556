"""What a grid will run, said before it runs: the queue a face shows is the one the drivers' Resume keeps,
the forecast prices only the runs that will run, and a preview never creates the store."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from greenlab.core.grid import forecast as fc
from greenlab.core.grid.driver import Resume
from greenlab.core.grid.queue import QUEUED, REPEATED, STORED, plan_queue
from greenlab.core.grid.session import GridRequest, GridSession, queue_of
from greenlab.core.plan.analysis import Plan
from greenlab.core.store.rows import RunRow
from tests.test_forecast import grid

POOL = grid()  # four distinct runs: tinycnn baseline and prune, two repeats each


class CompletedStore:
    """What Resume reads of a store: its completed runs by key (no run is going on elsewhere)."""

    def __init__(self, keys: set[str]) -> None:
        self.keys = keys

    def completed_by_key(self) -> dict[str, RunRow]:
        return {key: RunRow.of(id=1) for key in self.keys}

    def running_elsewhere(self, key: str) -> None:
        return None

    def update_run(self, *args: object, **values: object) -> None:
        """A kept run's accounting recomputed: nothing to check here."""


@settings(max_examples=200, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(POOL) - 1), max_size=10),
    stored=st.sets(st.integers(0, len(POOL) - 1)),
    force=st.booleans(),
)
def test_the_queue_foretells_exactly_what_resume_runs(picks, stored, force):
    runs = [POOL[i] for i in picks]
    keys = {POOL[i].settings_key() for i in stored}
    resume = Resume(CompletedStore(keys), force)  # type: ignore[arg-type]
    ran = [run for index, run in enumerate(runs) if resume.skip_reason(index, run) is None]
    queue = plan_queue(runs, keys, force=force)
    assert queue.to_run == ran
    assert queue.skipped == len(runs) - len(ran)
    assert sorted(
        queue.indices(STORED) + queue.indices(REPEATED) + [e.index for e in queue.entries if not e.skipped]
    ) == list(range(len(runs)))


def test_runs_queued_in_an_earlier_grid_are_skipped_unless_forced_and_each_skip_says_why():
    first, second, third = POOL[:3]
    runs = [first, second, first, third]
    queue = plan_queue(runs, {second.settings_key()}, {third.settings_key()})
    assert queue.to_run == [first]
    assert (queue.indices(STORED), queue.indices(QUEUED), queue.indices(REPEATED)) == ([1], [3], [2])
    assert queue.entries[2].same_as == 0
    assert queue.describe("grid.toml", force_hint="--force") == (
        "1 of 4 runs from grid.toml; skipped: 1 already stored (--force), 1 already queued in an earlier grid, "
        "1 repeating an earlier entry of this grid"
    )
    forced = plan_queue(runs, {second.settings_key()}, {third.settings_key()}, force=True)
    assert forced.to_run == [first, second, third]  # forced: stored and queued run again, an entry never twice
    assert plan_queue([second], {second.settings_key()}).describe("f") == "nothing new from f: 1 already stored"


def test_the_forecast_prices_a_repeated_entry_once_and_says_what_it_left_out():
    first, second = POOL[:2]
    earlier = [
        RunRow.of(
            id=1,
            model=first.model,
            technique=first.technique,
            status="completed",
            settings_key=second.settings_key(),
            conditions_key=first.conditions_key(),
            settings={},
            dataset=first.settings.dataset,
            duration_s=10.0,
            energy_j=100.0,
        )
    ]
    result = fc.forecast([first, first, second], earlier, stored_keys={second.settings_key()}, calibrate=lambda s: {})
    assert (result.runs, result.skipped) == (1, 2)
    assert result.describe().startswith("1 run (1 already stored, 1 repeating an earlier entry of this grid) · ")


def test_a_preview_of_a_grid_into_a_store_not_made_yet_creates_nothing(tmp_path):
    db = tmp_path / "data" / "runs.db"
    (tmp_path / "data").mkdir()
    queue = queue_of(POOL, str(db))
    assert queue.to_run == POOL
    session = GridSession(GridRequest(runs=POOL, plan=Plan.for_grid(POOL), source="t", db=str(db)))
    assert session.queue({POOL[0].settings_key()}).indices(QUEUED) == [0]
    assert not db.exists()
