"""Labelled estimates for machines where nothing can be measured (VMs, containers, laptops without RAPL).

CPU: energy = TDP / package threads x CPU-seconds of the run's processes. That is "TDP x utilisation"
integrated exactly: utilisation is CPU-seconds over wall-seconds x threads, so no sampling is involved and
no interval sleeps are needed. DRAM: watts = resident memory of the run's processes (GB) x a stated W/GB.
Both are `estimate`s and store the inputs of their formulas.
"""

from __future__ import annotations

import platform
from typing import Any

import psutil

from greenlab.core.energy.meter import Meter

# Common CPUs: (TDP in W, hardware threads per package), from the vendors' specification pages.
# Matching is by substring of /proc/cpuinfo's model name; the first match wins.
CPU_TABLE: dict[str, tuple[float, int]] = {
    "EPYC 9654": (360, 192), "EPYC 9554": (360, 128), "EPYC 7763": (280, 128), "EPYC 7742": (225, 128),
    "EPYC 7543": (225, 64), "EPYC 7B13": (240, 128), "EPYC 7R13": (240, 96), "EPYC 9R14": (360, 192),
    "Xeon Platinum 8480": (350, 112), "Xeon Platinum 8380": (270, 80), "Xeon Platinum 8375C": (300, 64),
    "Xeon Platinum 8259CL": (210, 48), "Xeon Platinum 8175M": (240, 48), "Xeon Gold 6248": (150, 40),
    "Xeon Gold 6130": (125, 32), "Xeon CPU @ 2.20GHz": (165, 48), "Xeon E5-2686 v4": (145, 36),
    "Ryzen 9 7950X": (170, 32), "Ryzen 9 5950X": (105, 32), "Ryzen 7 5800X": (105, 16),
    "Core(TM) i9-13900K": (125, 32), "Core(TM) i7-12700": (65, 20), "Core(TM) i7-10700": (65, 16),
    "Core(TM) i5-12400": (65, 12), "Apple M1": (20, 8), "Apple M2": (22, 8),
}
# CodeCarbon's fallback constant for an unknown CPU; applied to the threads this machine shows.
DEFAULT_TDP_W = 85.0
DEFAULT_DRAM_W_PER_GB = 0.375  # 3 W per 8 GB DIMM, the figure CodeCarbon uses


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def socket_count() -> int:
    """Distinct physical packages in /proc/cpuinfo (1 where it does not say)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            ids = {line.split(":", 1)[1].strip() for line in handle if line.startswith("physical id")}
    except OSError:
        return 1
    return max(1, len(ids))


def lookup_tdp(model_name: str, configured_w: float | None) -> dict[str, Any]:
    """The TDP (per package) and the hardware threads of one package, and where they came from."""
    # A TDP is per package: on a two-socket machine each package's threads share its own TDP.
    threads_visible = max(1, (psutil.cpu_count(logical=True) or 1) // socket_count())
    if configured_w is not None:
        return {"tdp_w": configured_w, "package_threads": threads_visible, "tdp_source": "config cpu_tdp_w"}
    for key, (tdp, threads) in CPU_TABLE.items():
        if key in model_name:
            return {"tdp_w": tdp, "package_threads": threads, "tdp_source": f"table: {key}"}
    return {"tdp_w": DEFAULT_TDP_W, "package_threads": threads_visible,
            "tdp_source": "default (CPU not in table; set cpu_tdp_w)"}


class ProcessSet:
    """The run's processes: tracked roots and their descendants, with monotonic CPU-seconds.

    Children are rediscovered at most once a second: walking the process tree at every 10 Hz sample would
    cost more than the sampler's whole budget.
    """

    _REFRESH_S = 1.0

    def __init__(self) -> None:
        self.roots: list[psutil.Process] = []
        self.members: dict[int, psutil.Process] = {}
        self.cpu_seconds_by_pid: dict[int, float] = {}
        self._last_refresh = -1e9

    def track(self, pids: list[int]) -> None:
        for pid in pids:
            try:
                process = psutil.Process(pid)
            except psutil.NoSuchProcess:
                continue
            self.roots.append(process)
            self.members[pid] = process
        self._last_refresh = -1e9

    def _refresh(self, now: float) -> None:
        if now - self._last_refresh < self._REFRESH_S:
            return
        self._last_refresh = now
        for root in self.roots:
            try:
                for child in root.children(recursive=True):
                    self.members.setdefault(child.pid, child)
            except psutil.Error:
                continue

    def cpu_seconds(self, now: float) -> float:
        self._refresh(now)
        for pid, process in list(self.members.items()):
            try:
                times = process.cpu_times()
                used = times.user + times.system
            except psutil.Error:
                del self.members[pid]  # exited: keep its last CPU-seconds
                continue
            self.cpu_seconds_by_pid[pid] = max(used, self.cpu_seconds_by_pid.get(pid, 0.0))
        return sum(self.cpu_seconds_by_pid.values())

    def resident_gb(self) -> float:
        total = 0
        for process in list(self.members.values()):
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total / 1e9


class EstimateMeter(Meter):
    """`cpu` and/or `dram` as labelled estimates over the tracked processes."""

    def __init__(self, components: list[str], *, cpu_tdp_w: float | None = None,
                 dram_w_per_gb: float = DEFAULT_DRAM_W_PER_GB, reasons: dict[str, str] | None = None) -> None:
        import time

        self._clock = time.monotonic
        self._components = components
        self.processes = ProcessSet()
        self.cpu_model = cpu_model_name()
        self.tdp = lookup_tdp(self.cpu_model, cpu_tdp_w)
        self.dram_w_per_gb = dram_w_per_gb
        self.reasons = reasons or {}
        self._origin_cpu_s: float | None = None

    def track_processes(self, pids: list[int]) -> None:
        self.processes.track(pids)

    def components(self) -> list[str]:
        return list(self._components)

    def method(self, component: str) -> str:
        return "estimate"

    def cpu_seconds(self) -> float:
        return self.processes.cpu_seconds(self._clock())

    def energy_j(self) -> dict[str, float]:
        if "cpu" not in self._components:
            return {}
        watts_per_thread = self.tdp["tdp_w"] / self.tdp["package_threads"]
        return {"cpu": watts_per_thread * self.cpu_seconds()}

    def power_w(self) -> dict[str, float]:
        if "dram" not in self._components:
            return {}
        return {"dram": self.processes.resident_gb() * self.dram_w_per_gb}

    def info(self) -> dict[str, dict[str, Any]]:
        facts: dict[str, dict[str, Any]] = {}
        if "cpu" in self._components:
            facts["cpu"] = {"formula": "tdp_w / package_threads * cpu_seconds", "cpu_model": self.cpu_model,
                            **self.tdp, "why": self.reasons.get("cpu", "no CPU energy counter")}
        if "dram" in self._components:
            facts["dram"] = {"formula": "resident_gb * w_per_gb, integrated over samples",
                             "w_per_gb": self.dram_w_per_gb, "why": self.reasons.get("dram", "no DRAM counter")}
        return facts

    def window_inputs(self, component: str, energy_j: float, seconds: float) -> dict[str, Any]:
        if component == "cpu":
            watts_per_thread = self.tdp["tdp_w"] / self.tdp["package_threads"]
            return {"cpu_seconds": round(energy_j / watts_per_thread, 4), "tdp_w": self.tdp["tdp_w"],
                    "package_threads": self.tdp["package_threads"]}
        if component == "dram" and seconds > 0:
            return {"mean_resident_gb": round(energy_j / seconds / self.dram_w_per_gb, 4),
                    "w_per_gb": self.dram_w_per_gb}
        return {}
