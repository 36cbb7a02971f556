"""How busy the rest of the host was while a run ran: the CPU time of every other process, from the
system-wide counters at the run's start and end, less the run's own and its supervisor's.

A busy host skews both ways of obtaining CPU energy: RAPL counts the whole package, other processes
included, and the estimate prices the run's CPU-seconds, which contention inflates (threads that spin
while they wait for a core). Neither can be corrected after the fact, so such a run is flagged
`host_busy` with the share that others used; nothing here reads a meter or writes the store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psutil

FLAG_HOST_BUSY = "host_busy"
BUSY_SHARE = 0.10  # others' share of the host's CPU capacity above which a run's CPU figures are suspect
# ... and no fewer CPU-seconds than this: ending a process (unmapping a forked torch) costs the kernel tens
# of milliseconds that no counter of the run's own sees, which on a sub-second run alone would exceed 10 %.
MIN_OTHER_CPU_S = 0.5


@dataclass(frozen=True)
class Mark:
    """System-wide busy and stolen CPU seconds, and this process's own, at one moment."""

    at: float  # monotonic seconds
    busy_s: float
    steal_s: float
    own_s: float


def mark() -> Mark:
    times = psutil.cpu_times()
    # Busy is all but idle and iowait; guest time is already inside user on Linux, steal is the hypervisor's.
    idle = times.idle + getattr(times, "iowait", 0.0)
    steal = getattr(times, "steal", 0.0)
    busy = sum(times) - idle - steal - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    own = psutil.Process().cpu_times()
    return Mark(time.monotonic(), busy, steal, own.user + own.system)


def others(start: Mark, end: Mark, run_cpu_s: float | None, cpus: int | None = None) -> dict[str, Any]:
    """What other processes used between `start` and `end`, as CPU-seconds and as a share of the host's
    capacity over that time; the share is None when the run's own CPU time is unknown."""
    cpus = cpus or os.cpu_count() or 1
    capacity = max(end.at - start.at, 1e-9) * cpus
    steal_share = round(max(end.steal_s - start.steal_s, 0.0) / capacity, 4)
    if run_cpu_s is None:
        return {
            "other_cpu_s": None,
            "other_share": None,
            "steal_share": steal_share,
            "cpus": cpus,
            "why": "the run did not report its CPU time",
        }
    other = max(end.busy_s - start.busy_s - (end.own_s - start.own_s) - run_cpu_s, 0.0)
    return {
        "other_cpu_s": round(other, 3),
        "other_share": round(other / capacity, 4),
        "steal_share": steal_share,
        "cpus": cpus,
        "busy_above": BUSY_SHARE,
        "busy_above_cpu_s": MIN_OTHER_CPU_S,
    }


def busy(load: Mapping[str, Any] | None) -> bool:
    """Others used more than BUSY_SHARE of the host, and more than MIN_OTHER_CPU_S in all."""
    if not load or load.get("other_share") is None or load.get("other_cpu_s") is None:
        return False
    return load["other_share"] > BUSY_SHARE and load["other_cpu_s"] > MIN_OTHER_CPU_S
