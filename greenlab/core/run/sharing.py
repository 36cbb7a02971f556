"""Who else computes on a run's GPU: the processes NVML lists on a board, less the run's own.

NVML's energy counter is per board: another user's job on the same GPU is counted as the run's, and an
idle baseline taken while one ran is too high. So the supervisor watches the boards it meters, during
the idle baseline and about once a second during the run (`GpuWatch.observe`), and this module keeps
what it saw: every process that is not the run's child, its descendants or GreenLab's own processes,
with its GPU memory, and the boards' utilisation. A run with such a process on its board is flagged
`gpu_shared`; an idle baseline of a board that was busy is refused.

Boundary: reads a meter's `processes` and `utilisation` (greenlab.core.measure.nvml) and psutil for the
child's descendants; it never writes the store and decides nothing about energy.

PIDs: inside a container NVML may list the host's pids, which match none of the run's. When a board the
run's child computes on lists none of the run's pids, its own process is among them under another pid:
only a list longer than one then shows someone else, and those processes are kept as `unattributed`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

FLAG_GPU_SHARED = "gpu_shared"
# Utilisation (share of the last sample period with a kernel running) above which an idle board is busy.
IDLE_BUSY_PCT = 5.0


def own_pids(roots: list[int]) -> set[int]:
    """The run's processes: `roots` (its child, the fork server, this supervisor) and their descendants."""
    pids = set(roots)
    for pid in roots:
        try:
            pids.update(child.pid for child in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            continue
    return pids


@dataclass
class GpuWatch:
    """What the watched boards showed: other processes per component (pid -> what was seen of it) and
    utilisation samples. `t0` is when watching began (monotonic seconds)."""

    others: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    unattributed: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    utilisation: dict[str, list[float]] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)

    def observe(self, meter: Any, ours: set[int], components: list[str], *, computing: bool) -> list[str]:
        """Read the boards once; returns the components on which someone else was seen for the first time.

        `computing`: the run's child computes on these boards now (during the run), so one of the listed
        processes is the run's even where NVML's pids are not in this pid namespace.
        """
        if not components or not hasattr(meter, "processes"):
            return []
        try:
            listed = meter.processes(components)
            rates = meter.utilisation(components)
        except Exception:  # noqa: BLE001 - a board that cannot be read now is read again at the next tick
            return []
        for component, rate in rates.items():
            self.utilisation.setdefault(component, []).append(rate)
        seen_t = round(time.monotonic() - self.t0, 1)
        new = []
        for component, processes in listed.items():
            if computing and processes and not {p["pid"] for p in processes} & ours:
                # Another pid namespace: one of these is the run's own; only a second process is someone else.
                if len(processes) < 2:
                    continue
                target, theirs = self.unattributed, processes
            else:
                target, theirs = self.others, [p for p in processes if p["pid"] not in ours]
            if not theirs:
                continue
            first = not self.others.get(component) and not self.unattributed.get(component)
            known = target.setdefault(component, {})
            for process in theirs:
                entry = known.setdefault(process["pid"], {**process, "first_seen_s": seen_t})
                memory = process.get("used_memory_mb")
                if memory is not None and (entry.get("used_memory_mb") or 0) < memory:
                    entry["used_memory_mb"] = memory
            if first:
                new.append(component)
        return new

    def shared(self, components: set[str] | list[str]) -> dict[str, dict[str, Any]]:
        """Per component among `components` on which someone else computed: the processes seen, for the
        run's `meters.gpu_processes`."""
        out: dict[str, dict[str, Any]] = {}
        for component in components:
            others = list(self.others.get(component, {}).values())
            unattributed = list(self.unattributed.get(component, {}).values())
            if others:
                out[component] = {"processes": others}
            elif unattributed:
                out[component] = {
                    "processes": unattributed,
                    "why": "NVML lists pids of another pid namespace (a container?): one of these is the run's",
                }
        return out

    def utilisation_summary(self, components: set[str] | list[str]) -> dict[str, dict[str, float]]:
        return {
            c: {"mean_pct": round(sum(v) / len(v), 1), "max_pct": max(v), "samples": len(v)}
            for c in components
            if (v := self.utilisation.get(c))
        }

    def busy_at_idle(self, components: list[str]) -> dict[str, str]:
        """Why each board's idle baseline is refused: a compute process on it, or utilisation above
        IDLE_BUSY_PCT while nothing of the run's ran. Empty when every board was idle."""
        refused = {}
        for component in components:
            processes = list(self.others.get(component, {}).values())
            rates = self.utilisation.get(component, [])
            reasons = []
            if processes:
                reasons.append(f"{len(processes)} compute process(es) on it ({describe(processes)})")
            if rates and max(rates) > IDLE_BUSY_PCT:
                reasons.append(f"utilisation up to {max(rates):.0f} %")
            if reasons:
                refused[component] = (
                    " and ".join(reasons) + "; its idle baseline was refused (no net figure for it): free the GPU"
                )
        return refused


def describe(processes: list[dict[str, Any]]) -> str:
    """'pid 4242, 3.0 GB; pid 7' for a line the user reads."""
    parts = []
    for process in processes:
        memory = process.get("used_memory_mb")
        parts.append(f"pid {process['pid']}" + (f", {memory / 1024:.1f} GB" if memory is not None else ""))
    return "; ".join(parts)


def supervisor_pids(child_pid: int | None, server_pid: int | None) -> list[int]:
    """The roots of the run's own processes: its child, the fork server that forked it, this process."""
    return [pid for pid in (child_pid, server_pid, os.getpid()) if pid is not None]
