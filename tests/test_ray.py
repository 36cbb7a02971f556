"""A grid on Ray: tasks measure on their node, the driver alone writes the store, faults and cancels.

Only ever a local Ray instance on this machine (2 CPUs, no dashboard, 127.0.0.1), started once for the
module and shut down after it; nothing here connects anywhere else. The first tests need no Ray at all
(a node record applied to the store, the live tracker, GPU pinning and placement rules over a described cluster).
"""

from __future__ import annotations

import os
import sys

import pytest

from greenlab.core.grid import ray_cluster
from greenlab.core.grid.grid_events import RunQueued
from greenlab.core.grid.presenter import GridPresenter
from greenlab.core.grid.ray_cluster import Node, RayCluster
from greenlab.core.measure.remote_tracker import RemoteTracker
from greenlab.core.plan.config import expand_grid, parse_experiments
from greenlab.core.run.run_events import ChildEvent, RunBegan
from greenlab.core.run.sinks import MemorySink, StoreSink
from greenlab.core.store.database import Store
from greenlab.core.store.record import ComponentRecord, EpochRecord, RunRecord, SampleRecord
from greenlab.core.store.row_writes import AddSamples
from greenlab.core.train import child_events
from tests.conftest import QUICK_DEFAULTS, REPO
from tests.fake_pynvml import FakeGpu, make_fake_pynvml


def grid_of(body: str, defaults: str = QUICK_DEFAULTS):
    return expand_grid(parse_experiments(defaults + body))


# -- without Ray ----------------------------------------------------------------------------------------------
def test_a_node_record_is_written_once_however_often_it_is_applied(tmp_path):
    sink = MemorySink(run_id=5)
    assert sink.run(5) is None and not sink.started and sink.record() is None
    assert sink.start_run({"model": "tinycnn", "technique": "baseline"}) == 5
    writer = sink.writer()
    writer.submit(AddSamples(5, [(0.1, "cpu", 10.0)]))  # the record at the end holds it
    record = RunRecord(
        values={"status": "completed", "energy_j": 7.5, "meters": {"components": {}}},
        epochs=(EpochRecord(1, train_loss=1.0, val_accuracy=0.5),),
        samples=(SampleRecord(0.1, "cpu", 10.0), SampleRecord(0.2, "cpu", 12.0)),
        components=(ComponentRecord("cpu", 7.5, "estimate"),),
        capacity=((3, 0.5), (4, 0.4)),
        dropped=("gpu1",),  # a GPU metered but not used
    )
    assert sink.store_record(5, record) == 5
    kept = sink.record()
    assert kept is not None and kept.status == "completed" and kept.start["model"] == "tinycnn"
    assert sink.run(5)["energy_j"] == 7.5 and sink.run(5)["model"] == "tinycnn"

    store = Store(tmp_path / "runs.db")
    writer_of_the_store = StoreSink(store)
    run_id = writer_of_the_store.start_run({**kept.start, "executor": "ray", "node": "n1"})
    store.add_samples(run_id, [(0.0, "gpu1", 50.0), (0.1, "cpu", 10.0)])  # written live, before the record
    for _ in range(2):  # a record applied twice is still one record
        assert writer_of_the_store.store_record(run_id, kept) == run_id
    row = store.run(run_id)
    assert (row["status"], row["executor"], row["node"], row["energy_j"]) == ("completed", "ray", "n1", 7.5)
    assert len(store.epochs(run_id)) == 1 and [s.component for s in store.samples(run_id)] == ["cpu", "cpu"]
    assert len(store.components(run_id)) == 1
    assert store.db.execute("select count(*) from capacity").fetchone()[0] == 2


def test_the_driver_follows_a_nodes_power_from_its_samples():
    clock = [100.0]
    tracker = RemoteTracker({"cpu": "rapl", "gpu0": "counter"}, clock=lambda: clock[0])
    assert tracker.components() == ["cpu", "gpu0"] and tracker.running_j(0.0) == {}
    tracker.add_samples([(0.0, "cpu", 10.0), (1.0, "cpu", 30.0), (0.5, "gpu0", 100.0), (1.5, "gpu0", 100.0)])
    tracker.add_samples([(1.0, "cpu", 30.0), (2.0, "cpu", 30.0)])  # a sample already seen is ignored
    clock[0] = 102.5
    assert tracker.now() == pytest.approx(2.5)
    assert tracker.latest() == {"cpu": 30.0, "gpu0": 100.0}
    assert tracker.history("cpu") == [(0.0, 10.0), (1.0, 30.0), (2.0, 30.0)]
    assert tracker.running_j(0.0) == pytest.approx({"cpu": 20.0 + 30.0, "gpu0": 100.0})
    assert tracker.running_j(1.0)["cpu"] == pytest.approx(30.0)


def test_rays_gpu_index_is_pinned_to_the_boards_uuid(monkeypatch):
    from greenlab.core.grid.ray_task import pin_gpus_by_uuid

    gpus = [FakeGpu(uuid=f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd") for i in range(4)]
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml(gpus))
    environ = {"CUDA_VISIBLE_DEVICES": "2"}
    facts = pin_gpus_by_uuid(environ)
    assert environ["CUDA_VISIBLE_DEVICES"] == gpus[2].uuid and facts["gpu_uuids"] == [gpus[2].uuid]
    assert facts["cuda_visible_devices"] == "2"
    environ = {"CUDA_VISIBLE_DEVICES": gpus[1].uuid}  # already a UUID: nothing to do
    assert pin_gpus_by_uuid(environ) == {"cuda_visible_devices": gpus[1].uuid}
    environ = {}  # a CPU task: no GPU named
    assert pin_gpus_by_uuid(environ) == {"cuda_visible_devices": None} and environ == {}
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml([], init_error=RuntimeError("no driver")))
    environ = {"CUDA_VISIBLE_DEVICES": "0"}
    assert "no driver" in pin_gpus_by_uuid(environ)["uuid_error"] and environ["CUDA_VISIBLE_DEVICES"] == "0"


class DescribedCluster(RayCluster):
    """A cluster as Ray would describe it, without Ray."""

    def __init__(self, nodes):
        super().__init__("auto", owned=False)
        self._nodes = nodes

    def nodes(self):
        return self._nodes


def test_placement_gives_a_gpu_run_a_whole_board_and_a_cpu_run_a_whole_node(tmp_path):
    big, small = Node("a", "gpu-box", "10.0.0.1", 32, 8), Node("b", "cpu-box", "10.0.0.2", 8, 0)
    cluster = DescribedCluster([big, small])
    (cpu_run,) = grid_of('[[experiment]]\nname = "c"\nmodels = ["tinycnn"]\n')
    (cuda_run,) = grid_of('[[experiment]]\nname = "g"\nmodels = ["tinycnn"]\ndevice = "cuda"\nnum_workers = 2\n')
    (auto_run,) = grid_of('[[experiment]]\nname = "a"\nmodels = ["tinycnn"]\ndevice = "auto"\n')
    (shared_run,) = grid_of('[[experiment]]\nname = "s"\nmodels = ["tinycnn"]\ncpus_per_run = 4\n')
    assert cluster.task_options(cuda_run) == {"num_gpus": 1, "num_cpus": 3}
    assert cluster.task_options(auto_run)["num_gpus"] == 1  # auto trains on a GPU where the cluster has one
    # num_workers = "auto": the child takes up to 4 of its node's spare cores for data loading; Ray reserves them
    assert cluster.task_options(auto_run)["num_cpus"] == 5
    assert cluster.task_options(cpu_run) == {"num_cpus": 32, "num_gpus": 0}  # every CPU of the largest node
    assert cluster.task_options(shared_run) == {"num_cpus": 4, "num_gpus": 0}
    assert cluster.other_node("a", {"num_cpus": 4, "num_gpus": 0}) == "b"
    assert cluster.other_node("a", {"num_cpus": 1, "num_gpus": 1}) is None
    assert cluster.placement_problems([cpu_run, cuda_run, auto_run, shared_run]) == []

    toml = tmp_path / "grid.toml"
    toml.write_text(
        QUICK_DEFAULTS + '[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\ndevice = "cuda:1"\n'
        '[[experiment]]\nname = "y"\nmodels = ["tinycnn"]\ncpus_per_run = 64\n'
    )
    with pytest.raises(ray_cluster.PreflightError) as refused:
        ray_cluster.check_placement(cluster, expand_grid(parse_experiments(toml.read_text())), str(toml))
    lines = str(refused.value).splitlines()
    assert len(lines) == 2
    assert "experiment 'x'.device: device 'cuda:1' names a GPU" in lines[0] and 'device = "cuda"' in lines[0]
    assert f"{toml}:" in lines[1] and "largest node has 32; set cpus_per_run = 32 or fewer" in lines[1]
    cpu_only = DescribedCluster([small])
    assert cpu_only.task_options(auto_run) == {"num_cpus": 8, "num_gpus": 0}  # auto runs on the CPUs here
    (problem,) = cpu_only.placement_problems([cuda_run])
    assert problem[1] == "device" and "needs a GPU" in problem[2]


def test_the_address_defaults_to_ray_address_then_a_local_instance(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_cluster.resolve_address("") == ray_cluster.resolve_address(None) == "local"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert ray_cluster.resolve_address("") == "ray://head:10001"
    assert ray_cluster.resolve_address("local") == "local" and ray_cluster.resolve_address("auto") == "auto"


def test_a_stopped_grid_splits_its_tasks_once_into_started_and_never_started():
    """The inbox decides in one call which tasks had started when the grid stopped: a later TaskStarted is
    refused (its task returns no record), a retry of a started task is not, and messages of refused starts
    never reach the driver, so GridStopped's "not started" list is the truth."""
    from greenlab.core.grid.ray_task import Inbox, Relayed, TaskStarted
    from greenlab.core.run.run_events import Notice

    def started(tag: int, attempt: int = 0) -> TaskStarted:
        return TaskStarted(tag, attempt, "node", "host", 1, {}, None)

    inbox = Inbox()
    assert inbox.put([started(0)]) is False
    assert inbox.stop_starting() == [0]
    assert inbox.put([started(1)]) is True  # too late: it must not run
    assert inbox.put([Relayed(0, 0, Notice("still running"))]) is False
    assert inbox.put([started(0, attempt=1)]) is False  # a retry of a run that had begun
    assert [m.tag for m in inbox.take()] == [0, 0, 0]
    inbox.cancel("stopped by signal SIGTERM")
    assert inbox.put([]) == "stopped by signal SIGTERM"  # the nodes store the driver's reason


def test_ray_init_gets_streams_with_descriptors_under_a_face_that_captures_them(monkeypatch):
    """The TUI's print capture answers fileno() with -1; ray.init enables faulthandler on sys.stderr."""
    import faulthandler
    import io

    class Capture(io.StringIO):
        def fileno(self) -> int:
            return -1

    captured = Capture()
    monkeypatch.setattr(sys, "stderr", captured)
    monkeypatch.setattr(sys, "stdout", captured)
    seen = {}

    class FakeRay:
        @staticmethod
        def is_initialized():
            return False

        @staticmethod
        def init(**options):
            seen["fd"] = sys.stderr.fileno()
            faulthandler.enable(file=sys.stderr)  # what ray.init does; -1 would raise ValueError
            faulthandler.disable()

    monkeypatch.setattr(ray_cluster, "import_ray", lambda: FakeRay)
    cluster = ray_cluster.connect("local")
    assert seen["fd"] >= 0 and cluster.owned
    assert sys.stderr is captured and sys.stdout is captured  # the face's capture is back afterwards


# -- on a local Ray instance ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    """One local instance for the module: 2 CPUs on 127.0.0.1, its workers isolated as the tests are."""
    ray = pytest.importorskip("ray")
    folder = tmp_path_factory.mktemp("ray")
    patch = pytest.MonkeyPatch()
    # Workers inherit this environment when the instance starts: GreenLab importable, no real RAPL.
    patch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    patch.setenv("GREENLAB_POWERCAP_ROOT", str(folder / "no-powercap"))
    patch.setenv("GREENLAB_DATA_DIR", str(folder / "data"))
    patch.delenv("GREENLAB_DB", raising=False)
    ray.init(
        # "local": a new instance even where another test or program left one running
        # (an address-less init would join it and refuse num_cpus).
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level="warning",
        object_store_memory=200 * 1024**2,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        patch.undo()


def run_on_ray(tmp_path, runs, *, listen=None, **options):
    """The grid through a RayDriver on the module's instance; (outcomes, store, events, presenter, driver)."""
    from greenlab.core.grid.ray_driver import RayDriver

    store = Store(tmp_path / "runs.db")
    presenter = GridPresenter()
    presenter.add_grid(0, runs)
    seen = []
    holder = {}

    def on_event(event):
        seen.append(event)
        presenter.apply(event)
        if listen is not None:
            listen(event, holder["driver"])

    driver = holder["driver"] = RayDriver(store, ray_cluster.connect(), on_event=on_event, **options)
    outcomes = driver.run_grid(runs)
    return outcomes, store, seen, presenter, driver


def no_database_on_node():
    """The real task, on a node where opening any SQLite database fails the task."""

    def task(request, inbox):
        import sqlite3

        from greenlab.core.grid import ray_task

        connect = sqlite3.connect

        def refuse(*args, **kwargs):
            raise AssertionError("a Ray node opened a database: only the driver may write the store")

        sqlite3.connect = refuse
        try:
            return ray_task.run_on_node(request, inbox)
        finally:
            sqlite3.connect = connect

    return task


def dies_on(attempts):
    """The real task, whose Ray worker SIGKILLs itself on the given attempts once the run's first batch has
    reached the driver: a worker killed mid-run (the OOM killer, a lost node), deterministically."""

    def task(request, inbox):
        import os
        import signal

        from greenlab.core.grid import ray_task

        if request.attempt in attempts:
            send = ray_task.Channel.send

            def send_then_die(channel, message):
                send(channel, message)
                if (
                    isinstance(message, ray_task.Relayed)
                    and type(getattr(message.event, "event", None)).__name__ == "BatchFinished"
                ):
                    channel.flush()
                    os.kill(os.getpid(), signal.SIGKILL)

            ray_task.Channel.send = send_then_die  # only this worker, which dies with it
        return ray_task.run_on_node(request, inbox)

    return task


def slow_inbox(seconds):
    """The real task, whose every delivery to the driver takes `seconds` (a loaded driver, a far node)."""

    def task(request, inbox):
        import time

        import ray

        from greenlab.core.grid import ray_task

        @ray.remote(num_cpus=0)
        def put_late(batch):
            time.sleep(seconds)
            return ray.get(inbox.put.remote(batch))

        class LateInbox:
            class put:  # noqa: N801 - quacks like the actor handle's method
                remote = staticmethod(put_late.remote)

        return ray_task.run_on_node(request, LateInbox())

    return task


def test_a_run_that_waits_on_the_driver_keeps_its_node_to_itself(ray_instance, tmp_path):
    """Ray lends a task's CPUs away while its main thread blocks in ray.get: a slow delivery must not let a
    second whole-node run onto the node."""
    runs = grid_of('[[experiment]]\nname = "w"\nmodels = ["tinycnn"]\ntechniques = ["baseline", "prune"]\n')
    outcomes, store, _seen, _presenter, _driver = run_on_ray(tmp_path, runs, task=slow_inbox(1.5))
    assert [o.status for o in outcomes] == ["completed", "completed"], [o.error for o in outcomes]
    for row in store.runs():
        assert row["concurrent_runs"] == [] and "shared_node_cpu" not in row["flags"]


def test_a_grid_runs_on_ray_and_only_the_driver_writes_the_store(ray_instance, tmp_path):
    runs = grid_of('[[experiment]]\nname = "e"\nmodels = ["tinycnn"]\ntechniques = ["baseline", "prune"]\n')
    outcomes, store, seen, presenter, _driver = run_on_ray(tmp_path, runs, task=no_database_on_node())
    node_id = ray_instance.nodes()[0]["NodeID"]
    assert [o.status for o in outcomes] == ["completed", "completed"], [o.error for o in outcomes]
    rows = store.runs()
    assert len(rows) == 2
    for row in rows:
        assert (row["status"], row["executor"], row["node"], row["attempts"]) == ("completed", "ray", node_id, 1)
        assert row["supervisor_pid"] == os.getpid()  # the driver wrote it
        placement = row["meters"]["placement"]
        assert placement["node_id"] == node_id and placement["resources"] == {"num_cpus": 2, "num_gpus": 0}
        assert placement["omp_num_threads"] == "2"  # Ray's, inherited by the run's torch
        assert row["host"]["hostname"] == placement["hostname"]
        assert store.epochs(row["id"]) and store.samples(row["id"])
        assert {c.component for c in store.components(row["id"])} == {"cpu", "dram"}
        assert row["energy_j"] > 0 and row["val_accuracy"] is not None
        # A run takes all of the node's CPUs: none shared them, so nothing is flagged.
        assert row["concurrent_runs"] == [] and "shared_node_cpu" not in row["flags"]
    # Live events came back tagged with the stored runs' ids, and the presenter followed them.
    began = [e for e in seen if isinstance(e, RunBegan)]
    assert sorted(e.run_id for e in began) == sorted(r["id"] for r in rows)
    assert all(isinstance(e.tracker, RemoteTracker) for e in began)
    batches = [e for e in seen if isinstance(e, ChildEvent) and isinstance(e.event, child_events.BatchFinished)]
    assert {e.run_id for e in batches} == {r["id"] for r in rows}
    snapshot = presenter.snapshot()
    assert [e.status for e in snapshot.queue] == ["completed", "completed"] and snapshot.running == ()
    assert snapshot.current.stored is not None


# Columns that say when, where and how much: they differ between any two runs of the same work.
ASIDE = {
    "id",
    "started_at",
    "finished_at",
    "duration_s",
    "train_s",
    "data_wait_s",
    "energy_j",
    "energy_kwh",
    "energy_measured_j",
    "energy_estimated_j",
    "energy_net_j",
    "idle_w",
    "energy_training_j",
    "energy_gpu_j",
    "energy_cpu_j",
    "energy_dram_j",
    "co2e_g",
    "cost",
    "sampler_cpu_s",
    "samples_dropped",
    "host",
    "supervisor_pid",
    "meters",
    "flags",
    "executor",
    "node",
    "concurrent_runs",
    "target_accuracy",
    "energy_to_target_j",
}


def _untimed(warnings):
    return [w for w in warnings or [] if not w.startswith("input-bound")]


def test_the_same_grid_through_both_drivers_stores_the_same_rows(ray_instance, tmp_path):
    """One driver protocol: the local driver and the Ray driver run the same grid through the same one-run
    supervisor and store the same rows, column for column, timing and energy aside."""
    from greenlab.core.grid.local import LocalDriver

    runs = grid_of('[[experiment]]\nname = "both"\nmodels = ["tinycnn"]\ntechniques = ["baseline", "prune"]\n')
    (tmp_path / "local").mkdir()
    local_store = Store(tmp_path / "local" / "runs.db")
    local = LocalDriver(local_store).run_grid(runs)
    remote, ray_store, _seen, _presenter, _driver = run_on_ray(tmp_path, runs)
    assert [o.status for o in local] == [o.status for o in remote] == ["completed", "completed"]
    local_rows, ray_rows = local_store.runs(), ray_store.runs()
    assert [r["executor"] for r in local_rows] == ["local"] * 2 and [r["executor"] for r in ray_rows] == ["ray"] * 2
    for mine, theirs in zip(local_rows, ray_rows, strict=True):
        for column in mine:
            if column == "warnings":  # an input-bound note is timing, as the flags are (a run's 0.1 s of training)
                assert _untimed(mine[column]) == _untimed(theirs[column]), column
            elif column not in ASIDE:
                assert mine[column] == theirs[column], column
        # how each energy was obtained is the same whichever driver ran it; Ray adds where it ran
        meters, ray_meters = mine["meters"], theirs["meters"]
        assert set(ray_meters) == set(meters) | {"placement"}
        assert meters["launcher"] == ray_meters["launcher"] and set(meters["fallbacks"]) == set(ray_meters["fallbacks"])
        assert {k: (v["method"], v.get("formula")) for k, v in meters["components"].items()} == {
            k: (v["method"], v.get("formula")) for k, v in ray_meters["components"].items()
        }
        assert len(local_store.epochs(mine["id"])) == len(ray_store.epochs(theirs["id"]))
        assert {c.component for c in local_store.components(mine["id"])} == {
            c.component for c in ray_store.components(theirs["id"])
        }


def test_runs_sharing_a_node_are_flagged_and_list_each_other(ray_instance, tmp_path):
    runs = grid_of(
        '[[experiment]]\nname = "s"\nmodels = ["tinycnn"]\ntechniques = ["baseline", "prune"]\n'
        "cpus_per_run = 1\nepochs = 2\nmax_train_batches = 60\n"
    )
    outcomes, store, _seen, _presenter, _driver = run_on_ray(tmp_path, runs)
    assert [o.status for o in outcomes] == ["completed", "completed"], [o.error for o in outcomes]
    first, second = store.runs()
    assert first["concurrent_runs"] == [second["id"]]
    assert second["concurrent_runs"] == [first["id"]]
    for row in (first, second):
        assert "shared_node_cpu" in row["flags"]
        placement = row["meters"]["placement"]
        assert placement["resources"]["num_cpus"] == 1 and placement["omp_num_threads"] == "1"


def test_a_killed_worker_is_retried_once_and_stored_once(ray_instance, tmp_path):
    runs = grid_of('[[experiment]]\nname = "k"\nmodels = ["tinycnn"]\n')
    outcomes, store, seen, presenter, driver = run_on_ray(tmp_path, runs, task=dies_on({0}))
    (row,) = store.runs()
    assert [o.status for o in outcomes] == ["completed"] and row["status"] == "completed"
    assert row["attempts"] == 2 and row["error"] is None
    first, retry = driver.attempts[0]
    assert first.worker_pid != retry.worker_pid  # the retry ran in another worker (the first one is dead)
    (earlier,) = row["meters"]["placement"]["earlier_attempts"]
    assert "died" in earlier["error"] and "WorkerCrashedError" in earlier["error"]
    assert len(store.epochs(row["id"])) == 1  # the retry's epochs only, once
    assert [e.status for e in presenter.snapshot().queue] == ["completed"]
    assert any("retrying once" in line.text for line in presenter.snapshot().log)
    assert sum(isinstance(e, RunQueued) for e in seen) == 2


def test_a_record_the_store_cannot_take_waits_beside_it_and_the_grid_stops(ray_instance, tmp_path, monkeypatch):
    """The driver's write of a node's record fails (the store locked past the busy budget): the record goes
    to the pending folder, the grid starts nothing more and says where it is, and the next open imports it."""
    from greenlab.core.grid.stop_rules import GridStopped
    from greenlab.core.store import journal
    from greenlab.core.store.database import StoreBusy

    runs = grid_of('[[experiment]]\nname = "k"\nmodels = ["tinycnn"]\ntechniques = ["baseline", "prune"]\n')
    monkeypatch.setattr(ray_cluster.RayCluster, "task_options", lambda self, run: {"num_cpus": 2, "num_gpus": 0})

    def locked(self, *args, **kwargs):
        raise StoreBusy("database is locked (held by another process for longer than 0 s)")

    monkeypatch.setattr(Store, "write_record", locked)
    outcomes, store, seen, _presenter, _driver = run_on_ray(tmp_path, runs)
    monkeypatch.undo()
    (stopped,) = [e for e in seen if isinstance(e, GridStopped)]
    kept = journal.pending(store.path)
    # Ray queues run 2 behind run 1 on the one node and may start it before the driver has settled run 1:
    # a run that had begun when the grid stopped finishes and its record waits too; one that had not is
    # never started. Either way each run is kept or named as not started, exactly once.
    kept_runs = [e for e in seen if type(e).__name__ == "RunStored"]
    assert len(kept) >= 1 and sorted(map(str, kept)) == sorted(str(e.kept_in) for e in kept_runs)
    assert str(kept_runs[0].kept_in) in stopped.cause
    assert "goes into the store the next time it is opened" in stopped.cause
    assert len(kept) + len(stopped.not_started) == len(runs)
    assert [r.technique for r in stopped.not_started] == [r.technique for r in runs[len(kept) :]]
    assert outcomes == []
    store.close()
    reopened = Store(store.path)
    rows = reopened.runs()
    assert len(rows) == len(kept) and all(row["status"] == "completed" for row in rows)
    assert all(len(reopened.epochs(row["id"])) == 1 and len(reopened.samples(row["id"])) > 0 for row in rows)
    assert journal.pending(store.path) == []


def test_a_run_whose_row_the_busy_store_never_took_is_kept_whole_and_imported_once(ray_instance, tmp_path, monkeypatch):
    """The store is locked from the run's start: neither its row nor its record can be written. The record
    waits beside the store with the row's first values, and the next open inserts the row and its epochs
    and samples, once, even if that open is cut short and done again."""
    from greenlab.core.store import journal
    from greenlab.core.store.database import StoreBusy

    runs = grid_of('[[experiment]]\nname = "k"\nmodels = ["tinycnn"]\n')

    def locked(self, *args, **kwargs):
        raise StoreBusy("database is locked (held by another process for longer than 0 s)")

    monkeypatch.setattr(Store, "start_run", locked)
    monkeypatch.setattr(Store, "write_record", locked)
    outcomes, store, seen, presenter, _driver = run_on_ray(tmp_path, runs)
    assert outcomes == [] and not store.path.exists()  # not a byte reached the store
    (kept,) = journal.pending(store.path)
    assert any("its row is written with its record" in line.text for line in presenter.snapshot().log)
    (stored,) = [e for e in seen if type(e).__name__ == "RunStored"]
    assert stored.kept_in == kept
    store.close()
    monkeypatch.undo()

    real_replay = Store.replay
    monkeypatch.setattr(Store, "replay", locked)  # the first import inserts the row, then finds the store busy
    first = Store(store.path)
    assert len(first.runs()) == 1 and len(journal.pending(store.path)) == 1
    first.close()
    monkeypatch.setattr(Store, "replay", real_replay)
    reopened = Store(store.path)
    (row,) = reopened.runs()
    assert row["status"] == "completed" and row["executor"] == "ray" and row["model"] == "tinycnn"
    assert len(reopened.epochs(row["id"])) == 1 and len(reopened.samples(row["id"])) > 0
    assert journal.pending(store.path) == []
    reopened.close()


def test_a_run_whose_worker_dies_twice_is_stored_failed_with_the_reason(ray_instance, tmp_path):
    runs = grid_of('[[experiment]]\nname = "k"\nmodels = ["tinycnn"]\n')
    outcomes, store, _seen, presenter, _driver = run_on_ray(tmp_path, runs, task=dies_on({0, 1}))
    (row,) = store.runs()
    assert [o.status for o in outcomes] == ["failed"] and row["status"] == "failed" and row["attempts"] == 2
    assert row["error"].count("the Ray worker running it on") == 2 and "on the first attempt" in row["error"]
    assert [e.status for e in presenter.snapshot().queue] == ["failed"]


def test_cancel_stores_the_running_runs_as_interrupted_and_never_starts_the_rest(ray_instance, tmp_path):
    long = QUICK_DEFAULTS.replace("max_train_batches = 3", "max_train_batches = 400").replace(
        "epochs = 1", "epochs = 50"
    )
    runs = grid_of(
        '[[experiment]]\nname = "c"\nmodels = ["tinycnn"]\ncpus_per_run = 1\n'
        'techniques = ["baseline", "prune", "lowrank"]\n',
        defaults=long,
    )
    state = {"began": set(), "epoch": False}

    def listen(event, driver):  # cancel once both runs that fit run and one has finished an epoch
        if isinstance(event, RunBegan):
            state["began"].add(event.run_id)
        if isinstance(event, ChildEvent) and isinstance(event.event, child_events.EpochFinished):
            state["epoch"] = True
        if len(state["began"]) == 2 and state["epoch"]:
            driver.cancel()

    outcomes, store, _seen, presenter, _driver = run_on_ray(tmp_path, runs, listen=listen)
    rows = store.runs()
    assert len(rows) == 2  # the third never started: no row
    assert [o.status for o in outcomes] == ["interrupted", "interrupted"]
    for row in rows:
        assert row["status"] == "interrupted" and "cancelled by the user" in row["error"]
        assert row["finished_at"] and row["energy_j"] > 0 and store.samples(row["id"])
    assert sum(len(store.epochs(row["id"])) for row in rows) >= 1  # the partial data came back
    presenter.end_grid(0, cancelled=True)
    assert sorted(e.status for e in presenter.snapshot().queue) == ["cancelled", "interrupted", "interrupted"]


def test_the_tui_runs_a_grid_on_ray_with_a_row_per_running_run(ray_instance, tmp_path):
    """The Setup pane's Ray field as a user fills it: two runs at once, each with its row, stored by ray."""
    import asyncio
    import time

    from textual.widgets import Input

    from greenlab.tui.app import GreenLabApp

    path = tmp_path / "experiments.toml"
    path.write_text(
        QUICK_DEFAULTS.replace("max_train_batches = 3", "max_train_batches = 60")
        + '[[experiment]]\nname = "t"\nmodels = ["tinycnn"]\ntechniques = ["baseline", "prune"]\n'
        "cpus_per_run = 1\nepochs = 2\n"
    )

    async def drive() -> int:
        app = GreenLabApp(db=tmp_path / "runs.db", experiments=str(path))
        most = 0
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            field = app.query_one("#f-ray", Input)
            field.focus()
            await pilot.press(*"local")
            await pilot.press("escape", "ctrl+r")
            deadline = time.monotonic() + 180
            while len(app.live.snapshot.stored if app.live.snapshot else ()) < 2 or app.running:
                assert time.monotonic() < deadline, "the Ray grid did not finish"
                most = max(most, app.live.running_table.row_count)
                await pilot.pause(0.2)
        return most

    most = asyncio.run(drive())
    store = Store(tmp_path / "runs.db")
    rows = store.runs()
    assert [(r["status"], r["executor"]) for r in rows] == [("completed", "ray"), ("completed", "ray")]
    assert most == 2  # both ran at once, each on its row


def test_a_ctrl_c_while_the_driver_handles_messages_still_cancels_the_grid(ray_instance, tmp_path):
    """The driver defers Ctrl-C while it takes messages and stores records; deferred is not dropped."""
    import signal

    long = QUICK_DEFAULTS.replace("max_train_batches = 3", "max_train_batches = 400").replace(
        "epochs = 1", "epochs = 50"
    )
    runs = grid_of(
        '[[experiment]]\nname = "i"\nmodels = ["tinycnn"]\ntechniques = ["baseline", "prune"]\n', defaults=long
    )
    sent = []

    def listen(event, driver):  # on the driver's main thread, inside the deferred block: as a user's Ctrl-C
        if not sent and isinstance(event, ChildEvent) and isinstance(event.event, child_events.EpochFinished):
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        run_on_ray(tmp_path, runs, listen=listen)
    rows = Store(tmp_path / "runs.db").runs()
    assert sent and [r["status"] for r in rows] == ["interrupted"]  # the second run never started
    assert "cancelled by the user" in rows[0]["error"]
