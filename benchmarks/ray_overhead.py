"""What running a grid through Ray costs per run: the same small CPU grid, locally and on `--ray local`.

Both sides run tinycnn on digits (baseline, prune and lowrank, 2 repeats: 6 runs of 3 batches each, no
idle baseline) into fresh stores:
- local: LocalDriver.run_grid, one run after another in this process's supervisor;
- ray: RayDriver.run_grid on a local Ray instance with this machine's CPUs; each CPU run takes every CPU
  of the node, so the runs go one after another there too, and the difference is Ray's: a task per run,
  a worker (with its own fork server) on the node, the record sent back and written by the driver.
After an untimed one-run grid (file caches), the rounds go local, ray, ray, local, each Ray round on a
fresh local instance (whose start is printed apart: once per grid), so a warming machine favours
neither. Machines are noisy and a tiny run's own time swings by seconds, so each run's measured time
(`duration_s`, child start to exit) is taken out of the grid's wall time: what is left per run is what
supervising it costs, the fork server's start included, and the difference between the two sides is
Ray's scheduling overhead per run. The ratio of wall time per run (ray / local) is printed too.
Nothing is asserted.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from quick_grid import quick_grid

from greenlab.core.grid.local import LocalDriver
from greenlab.core.store.database import Store

EXPERIMENT = """
[[experiment]]
name = "bench"
models = ["tinycnn"]
techniques = ["baseline", "prune", "lowrank"]
repeats = 2
"""


def timed_grid(driver, runs) -> tuple[float, float]:
    """(wall seconds of the grid, seconds its runs measured themselves)."""
    started = time.perf_counter()
    outcomes = driver.run_grid(runs)
    wall = time.perf_counter() - started
    if {o.status for o in outcomes} != {"completed"} or len(outcomes) != len(runs):
        raise SystemExit(f"a run did not complete: {[(o.status, o.error) for o in outcomes]}")
    return wall, sum(o.row["duration_s"] for o in outcomes)


def main() -> None:
    import ray

    from greenlab.core.grid import ray_cluster
    from greenlab.core.grid.ray_driver import RayDriver

    runs = quick_grid(EXPERIMENT)
    results: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
    starts = []
    with tempfile.TemporaryDirectory() as folder:
        os.environ["GREENLAB_LOCK_DIR"] = str(Path(folder) / "lock")
        LocalDriver(Store(Path(folder) / "warm-up.db")).run_grid(runs[:1])  # file caches, not timed
        for number, side in enumerate(("local", "ray", "ray", "local")):
            store = Store(Path(folder) / f"{number}-{side}.db")
            if side == "local":
                results[side].append(timed_grid(LocalDriver(store), runs))
                continue
            started = time.perf_counter()
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
            starts.append(time.perf_counter() - started)
            try:
                results[side].append(timed_grid(RayDriver(store, ray_cluster.connect()), runs))
            finally:
                ray.shutdown()
    n = len(runs)
    print(
        f"tinycnn on digits, {n} CPU runs of 3 batches of 64 at 32 px, {os.cpu_count()} CPUs, one after another; "
        "rounds local, ray, ray, local"
    )
    print(f"local Ray instance start (once per grid): {statistics.mean(starts):.2f} s")
    around = {}
    for side, rounds in results.items():
        walls = [wall for wall, _measured in rounds]
        around[side] = statistics.mean((wall - measured) / n for wall, measured in rounds)
        grids = " and ".join(f"{w:.2f}" for w in walls)
        print(
            f"{side:<6}: grid {grids} s; per run {statistics.mean(walls) / n:.2f} s, "
            f"of which {around[side]:.2f} s outside the run's own measured time"
        )
    wall_ratio = statistics.mean(w for w, _m in results["ray"]) / statistics.mean(w for w, _m in results["local"])
    print(
        f"Ray's scheduling overhead per run: {around['ray'] - around['local']:+.2f} s; "
        f"wall time per run ratio (ray / local): {wall_ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
