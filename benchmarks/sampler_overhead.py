"""The sampler's own cost: CPU percent of one core at 10, 50 and 100 Hz (goal: under 1 % at 10 Hz).

Samples the meters this machine really has (RAPL/NVML where present, else the CPU/DRAM estimate over a
busy child process) plus a fake two-socket RAPL tree, so the figure includes sysfs reads even here.
Prints ratios measured in this one run; nothing is asserted.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from greenlab.core.measure.detect import build_meters
from greenlab.core.measure.rapl import discover_rapl
from greenlab.core.measure.tracker import EnergyTracker

SECONDS = 8.0


def fake_powercap(root: Path) -> None:
    for zone_id, name in (
        ("intel-rapl:0", "package-0"),
        ("intel-rapl:0:0", "dram"),
        ("intel-rapl:1", "package-1"),
        ("intel-rapl:1:0", "dram"),
    ):
        zone = root / zone_id
        zone.mkdir(parents=True)
        (zone / "name").write_text(name + "\n")
        (zone / "energy_uj").write_text("1000\n")
        (zone / "max_energy_range_uj").write_text("262143328850\n")


def measure(hz: float, child_pid: int, powercap: Path) -> tuple[float, int]:
    setup = build_meters(use_gpus=[0])
    rapl, _ = discover_rapl(str(powercap))
    meters = setup.meters + ([rapl] if rapl else [])
    tracker = EnergyTracker(meters, sample_hz=hz)
    tracker.track_processes([child_pid])
    tracker.start()
    time.sleep(SECONDS)
    tracker.stop()
    return 100.0 * tracker.sampler_cpu_s / SECONDS, tracker.sample_count


def main() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with tempfile.TemporaryDirectory() as folder:
            powercap = Path(folder)
            fake_powercap(powercap)
            print(f"sampler overhead over {SECONDS:g} s per rate (meters: this machine's + a fake RAPL tree)")
            print(f"{'rate':>7} {'samples':>8} {'CPU % of one core':>18}")
            for hz in (10, 50, 100):
                percent, count = measure(hz, busy.pid, powercap)
                print(f"{hz:>5} Hz {count:>8} {percent:>17.2f}%")
    finally:
        busy.kill()


if __name__ == "__main__":
    main()
