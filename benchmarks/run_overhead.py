"""A run's fixed cost: from asking for a child process to its first finished batch, spawned and forked.

Both sides start the same tinycnn run on digits (3 batches of 64 at 32 px, CPU) and read its events
as the supervisor does:
- spawn: a fresh interpreter per run (`python -m greenlab.core.run.child_main`), importing torch every time;
- forkserver: a fork of a server that imported torch, torchvision and the rest once (its own start is
  paid once per supervisor, before any run, and printed apart).
The overhead is launch to the first BatchFinished event: start-up, data loading, building the model,
its FLOP count and one training step. The two alternate (spawn, fork, spawn, ...) to spread machine
noise; medians and their ratio are printed (goal: under 0.5 s forked). Nothing is asserted.
"""

from __future__ import annotations

import json
import os
import statistics
import time

from quick_grid import quick_grid

from greenlab.core.run.launcher import ForkServerLauncher, Launcher, SpawnLauncher
from greenlab.core.train import child_events

REPEATS = 7


def timed_run(launcher: Launcher, run_json: str, env: dict[str, str]) -> tuple[float, float]:
    """(seconds to the first BatchFinished, seconds to the child's exit), both from the launch call."""
    read_fd, write_fd = os.pipe()
    started = time.perf_counter()
    child = launcher.launch(run_json, write_fd, env)
    os.close(write_fd)
    first_batch = None
    with os.fdopen(read_fd) as stream:
        for line in stream:
            if first_batch is None and isinstance(child_events.decode(line), child_events.BatchFinished):
                first_batch = time.perf_counter() - started
    output = child.stdout.read()
    if child.wait() != 0 or first_batch is None:
        raise SystemExit(f"the run failed ({child.returncode}): {output[-500:]}")
    return first_batch, time.perf_counter() - started


def main() -> None:
    (run,) = quick_grid()
    run_json = json.dumps(run.to_json())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # as the supervisor passes it
    spawn = SpawnLauncher()
    with ForkServerLauncher(on_note=lambda note: print(f"note: {note}")) as fork:
        started = time.perf_counter()
        fork.start(env)
        server_start = time.perf_counter() - started
        if fork.server_pid is None:
            raise SystemExit("the fork server did not start; nothing to compare")
        results: dict[str, list[tuple[float, float]]] = {"spawn": [], "forkserver": []}
        for _ in range(REPEATS):
            results["spawn"].append(timed_run(spawn, run_json, env))
            results["forkserver"].append(timed_run(fork, run_json, env))
    medians = {name: statistics.median(first for first, _ in runs) for name, runs in results.items()}
    print(f"tinycnn on digits, 3 batches of 64 at 32 px on the CPU, {REPEATS} alternating repeats")
    print(f"fork server start (once per supervisor, before any run): {server_start:.2f} s")
    for name, runs in results.items():
        firsts = [round(first, 2) for first, _ in runs]
        totals = statistics.median(total for _, total in runs)
        print(
            f"{name:<10}: launch to first batch median {medians[name]:.2f} s  {firsts}; whole run median {totals:.2f} s"
        )
    print(
        f"overhead ratio (spawn / forkserver): {medians['spawn'] / medians['forkserver']:.1f}x   "
        f"goal: forkserver under 0.5 s"
    )


if __name__ == "__main__":
    main()
