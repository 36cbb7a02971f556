"""Labelled estimates for machines where nothing can be measured (VMs, containers, laptops without RAPL).

CPU: energy = watts of one busy hardware thread x CPU-seconds of the run's processes. That is "TDP x
utilisation" integrated exactly: utilisation is CPU-seconds over wall-seconds x threads, so no sampling is
involved and no interval sleeps are needed. The watts per thread come from the first rule that applies
(`cpu_power_rule`): the user's figure, a known processor's TDP over its package's threads, a server vCPU's
figure on a virtual machine (never a desktop TDP divided by the few vCPUs a guest sees), or CodeCarbon's
85 W default. DRAM: watts = resident memory of the run's processes (GB) x a stated W/GB. Both are
`estimate`s and store the inputs of their formulas and the rule used.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any

import psutil

from greenlab.core.measure.meter import Meter

# Common CPUs: (TDP in W, hardware threads per package), from the vendors' specification pages. Keys are
# matched as whole words against the normalised model name (see `normalise_cpu_name`).
CPU_TABLE: dict[str, tuple[float, int]] = {
    "EPYC 9654": (360, 192),
    "EPYC 9554": (360, 128),
    "EPYC 7763": (280, 128),
    "EPYC 7742": (225, 128),
    "EPYC 7543": (225, 64),
    "EPYC 7B13": (240, 128),
    "EPYC 7R13": (240, 96),
    "EPYC 9R14": (360, 192),
    "Xeon Platinum 8480": (350, 112),
    "Xeon Platinum 8380": (270, 80),
    "Xeon Platinum 8375C": (300, 64),
    "Xeon Platinum 8259CL": (210, 48),
    "Xeon Platinum 8175M": (240, 48),
    "Xeon Gold 6248": (150, 40),
    "Xeon Gold 6130": (125, 32),
    "Xeon E5-2686 v4": (145, 36),
    "Ryzen 9 7950X": (170, 32),
    "Ryzen 9 5950X": (105, 32),
    "Ryzen 7 5800X": (105, 16),
    "Core i9-13900K": (125, 32),
    "Core i7-12700": (65, 20),
    "Core i7-10700": (65, 16),
    "Core i5-12400": (65, 12),
    "Apple M1": (20, 8),
    "Apple M2": (22, 8),
}
# CodeCarbon's fallback constant for an unknown CPU on bare metal; applied to the threads this machine shows.
DEFAULT_TDP_W = 85.0
# A virtual machine's vCPU is one hardware thread of a server package. Cloud Carbon Footprint's average
# maximum watts per vCPU over the AWS micro-architectures (SPECpower data) is the figure for a busy vCPU.
VM_W_PER_VCPU = 3.5
VM_W_PER_VCPU_SOURCE = (
    "Cloud Carbon Footprint methodology: AWS average max watts per vCPU (SPECpower), "
    "for a vCPU of an unknown server CPU"
)
DEFAULT_DRAM_W_PER_GB = 0.375  # 3 W per 8 GB DIMM, the figure CodeCarbon uses
# Hypervisors and clouds as /sys/class/dmi/id names them.
_VM_VENDORS = (
    "kvm",
    "qemu",
    "vmware",
    "virtualbox",
    "xen",
    "amazon ec2",
    "google compute engine",
    "microsoft corporation",
    "openstack",
    "bochs",
    "parallels",
    "hetzner",
    "digitalocean",
)


def normalise_cpu_name(name: str) -> str:
    """'Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz' -> 'intel xeon platinum 8380': trademarks, the
    words CPU and Processor, clock speeds and core counts removed, lower case, single spaces."""
    text = re.sub(r"\((r|tm|c)\)", " ", name, flags=re.IGNORECASE)
    text = re.sub(r"@\s*[\d.]+\s*[gm]hz", " ", text, flags=re.IGNORECASE)
    text = re.sub(r"\b\d+-core\b|\bcpu\b|\bprocessor\b|\bwith radeon graphics\b", " ", text, flags=re.IGNORECASE)
    return " ".join(text.lower().split())


def match_cpu(model_name: str) -> str | None:
    """The CPU_TABLE key naming this processor, or None."""
    normalised = normalise_cpu_name(model_name)
    for key in CPU_TABLE:
        if re.search(r"(^|\s)" + re.escape(normalise_cpu_name(key)) + r"($|\s)", normalised):
            return key
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_model_name(root: Path = Path("/")) -> str:
    for line in _read(root / "proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def socket_count(root: Path = Path("/")) -> int:
    """Distinct physical packages in /proc/cpuinfo (1 where it does not say)."""
    ids = {
        line.split(":", 1)[1].strip()
        for line in _read(root / "proc/cpuinfo").splitlines()
        if line.startswith("physical id")
    }
    return max(1, len(ids))


def virtualization(root: Path = Path("/")) -> str | None:
    """Why this looks like a slice of a server (a VM or a CPU-limited container), or None on bare metal."""
    for line in _read(root / "proc/cpuinfo").splitlines():
        if line.startswith("flags") and "hypervisor" in line.split(":", 1)[1].split():
            return "the CPU flags include 'hypervisor'"
    for name in ("sys_vendor", "product_name"):
        value = _read(root / "sys/class/dmi/id" / name).strip()
        if value and any(vendor in value.lower() for vendor in _VM_VENDORS):
            return f"DMI {name} is '{value}'"
    quota = _read(root / "sys/fs/cgroup/cpu.max").split()
    if quota and quota[0] != "max":
        return f"a cgroup limits the CPU (cpu.max {' '.join(quota)})"
    return None


def cpu_power_rule(
    model_name: str,
    *,
    cpu_tdp_w: float | None = None,
    cpu_w_per_thread: float | None = None,
    virtual: str | None = None,
    threads_visible: int | None = None,
    sockets: int = 1,
) -> dict[str, Any]:
    """The watts of one busy hardware thread, the rule that gave them and its inputs, in this order:
    the user's `cpu_w_per_thread`; the user's `cpu_tdp_w` over this package's threads; a known processor's
    TDP over its package's threads; on a VM or limited container, a server vCPU's figure; else CodeCarbon's
    85 W over the threads this machine shows per package.
    """
    threads = threads_visible or max(1, (psutil.cpu_count(logical=True) or 1) // max(1, sockets))
    if cpu_w_per_thread is not None:
        return {"w_per_thread": cpu_w_per_thread, "rule": "config cpu_w_per_thread"}
    if cpu_tdp_w is not None:
        rule = {
            "w_per_thread": cpu_tdp_w / threads,
            "rule": "config cpu_tdp_w / package threads",
            "tdp_w": cpu_tdp_w,
            "package_threads": threads,
        }
        if virtual is not None:  # the guest sees a few vCPUs of a package with many threads
            rule["warning"] = (
                f"a virtual machine ({virtual}): cpu_tdp_w is divided by the {threads} vCPUs "
                "this guest sees, not by the host package's threads, which overstates a thread's "
                "power; set cpu_w_per_thread instead"
            )
        return rule
    key = match_cpu(model_name)
    if key is not None:
        tdp, package_threads = CPU_TABLE[key]
        return {
            "w_per_thread": tdp / package_threads,
            "rule": f"table: {key} TDP / package threads",
            "tdp_w": tdp,
            "package_threads": package_threads,
        }
    if virtual is not None:
        return {
            "w_per_thread": VM_W_PER_VCPU,
            "rule": "virtual machine: watts of a busy server vCPU",
            "source": VM_W_PER_VCPU_SOURCE,
            "virtual": virtual,
        }
    return {
        "w_per_thread": DEFAULT_TDP_W / threads,
        "rule": "default TDP / package threads (CPU not in the table; set cpu_w_per_thread or cpu_tdp_w)",
        "tdp_w": DEFAULT_TDP_W,
        "package_threads": threads,
    }


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

    def ended(self, pid: int, cpu_seconds: float) -> None:
        """A tracked process's own final CPU time (it says so as it ends): the time after the last read
        counts too."""
        if pid in self.cpu_seconds_by_pid or pid in self.members:
            self.cpu_seconds_by_pid[pid] = max(cpu_seconds, self.cpu_seconds_by_pid.get(pid, 0.0))

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

    def __init__(
        self,
        components: list[str],
        *,
        cpu_tdp_w: float | None = None,
        cpu_w_per_thread: float | None = None,
        dram_w_per_gb: float = DEFAULT_DRAM_W_PER_GB,
        reasons: dict[str, str] | None = None,
        root: Path = Path("/"),
    ) -> None:
        import time

        self._clock = time.monotonic
        self._components = components
        self.processes = ProcessSet()
        self.cpu_model = cpu_model_name(root)
        self.cpu_rule = cpu_power_rule(
            self.cpu_model,
            cpu_tdp_w=cpu_tdp_w,
            cpu_w_per_thread=cpu_w_per_thread,
            virtual=virtualization(root),
            sockets=socket_count(root),
        )
        self.w_per_thread = float(self.cpu_rule["w_per_thread"])
        self.dram_w_per_gb = dram_w_per_gb
        self.reasons = reasons or {}

    def track_processes(self, pids: list[int]) -> None:
        self.processes.track(pids)

    def process_ended(self, pid: int, cpu_seconds: float) -> None:
        self.processes.ended(pid, cpu_seconds)

    def components(self) -> list[str]:
        return list(self._components)

    def method(self, component: str) -> str:
        return "estimate"

    def cpu_seconds(self) -> float:
        return self.processes.cpu_seconds(self._clock())

    def energy_j(self) -> dict[str, float]:
        if "cpu" not in self._components:
            return {}
        return {"cpu": self.w_per_thread * self.cpu_seconds()}

    def power_w(self) -> dict[str, float]:
        if "dram" not in self._components:
            return {}
        return {"dram": self.processes.resident_gb() * self.dram_w_per_gb}

    def info(self) -> dict[str, dict[str, Any]]:
        facts: dict[str, dict[str, Any]] = {}
        if "cpu" in self._components:
            facts["cpu"] = {
                "formula": "w_per_thread * cpu_seconds",
                "cpu_model": self.cpu_model,
                **self.cpu_rule,
                "why": self.reasons.get("cpu", "no CPU energy counter"),
            }
        if "dram" in self._components:
            facts["dram"] = {
                "formula": "resident_gb * w_per_gb, integrated over samples",
                "w_per_gb": self.dram_w_per_gb,
                "why": self.reasons.get("dram", "no DRAM counter"),
            }
        return facts

    def window_inputs(self, component: str, energy_j: float, seconds: float) -> dict[str, Any]:
        if component == "cpu":
            return {
                "cpu_seconds": round(energy_j / self.w_per_thread, 4),
                "w_per_thread": round(self.w_per_thread, 4),
                "rule": self.cpu_rule["rule"],
            }
        if component == "dram" and seconds > 0:
            return {
                "mean_resident_gb": round(energy_j / seconds / self.dram_w_per_gb, 4),
                "w_per_gb": self.dram_w_per_gb,
            }
        return {}
