"""How far the forecast is off: grids of three shapes run as a user runs them, each into a fresh store.

For each shape, `greenlab --headless FILE --db FRESH` prints its forecast before the first run (a fresh
store: every run is calibrated) and, at the end, the grid's time and energy against it. This prints one
line per shape: forecast, actual, and the error in percent, for time and energy; then the same grid again
into the store it filled (now forecast from its own history). The shapes: short tinycnn runs (start-up
dominates), longer resnet18 runs (training dominates), and the repository's default grid (a mix, the one
the README promises within about a minute or so on two cores). A busy host makes the calibration slower
than the runs that follow (or the reverse): the forecast line says so when it happens.

    python benchmarks/forecast_accuracy.py [--only NAME]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMON = """
[defaults]
dataset = "digits"
batch_size = 64
lr = 0.003
optimizer = "adam"
device = "cpu"
pretrained = false
max_eval_batches = 4
"""
SHAPES = {
    "short tinycnn": COMMON
    + """epochs = 1
repeats = 2
idle_s = 0
max_train_batches = 5
[[experiment]]
name = "short"
models = ["tinycnn"]
techniques = ["baseline", "stego", "prune", "lowrank"]
""",
    "longer resnet18": COMMON
    + """epochs = 2
repeats = 1
idle_s = 0
max_train_batches = 20
[[experiment]]
name = "longer"
models = ["resnet18"]
techniques = ["baseline", "prune"]
""",
    "default grid": (REPO / "experiments.toml").read_text(),
}
AGAINST = re.compile(
    r"(?:took|ran) (.+?) against about (.+?) forecast \(([+-]\d+) %\)(?:; used (.+?) against about (.+?) \(([+-]\d+) %\))?"
)


def run_shape(name: str, text: str, folder: Path) -> list[str]:
    grid = folder / f"{name.replace(' ', '-')}.toml"
    grid.write_text(text)
    db = folder / f"{name.replace(' ', '-')}.db"
    lines = []
    for attempt in ("fresh store", "its own history"):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "greenlab", "--headless", str(grid), "--db", str(db)]
            + (["--force"] if attempt != "fresh store" else []),
            capture_output=True,
            text=True,
            cwd=folder,
            env={**os.environ, "GREENLAB_DATA_DIR": str(folder / "data")},
        )
        wall = time.monotonic() - started
        forecast = next((line for line in done.stdout.splitlines() if line.startswith("forecast: ")), "")
        found = AGAINST.search(done.stdout)
        if done.returncode != 0 or found is None:
            lines.append(f"{name:<16} {attempt:<16} failed (exit {done.returncode}): {done.stderr.strip()[-200:]}")
            break
        took, said, off, used, said_j, off_j = found.groups()
        lines.append(
            f"{name:<16} {attempt:<16} time {took:>11} vs {said:>11} ({off:>4} %)   "
            f"energy {used or '-':>8} vs {said_j or '-':>8} ({off_j or '?':>4} %)   {wall:5.0f} s in all"
        )
        if "host was busy" in forecast:
            lines.append(f"{'':<16} {'':<16} {forecast.split('; ', 1)[-1]}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SHAPES), help="one shape only")
    args = parser.parse_args()
    print(f"forecast against actual, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'shape':<16} {'forecast from':<16} time: actual vs forecast (error); energy likewise")
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in SHAPES.items():
            if args.only and name != args.only:
                continue
            for line in run_shape(name, text, Path(tmp)):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
