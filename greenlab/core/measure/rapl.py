"""CPU and DRAM energy from RAPL counters in the Linux powercap tree (/sys/class/powercap).

Job: find the package domain of every socket and their dram subdomains, read their `energy_uj`
counters, and total them into two components, `cpu` and `dram` (method `counter`). Boundary: this
module only reads sysfs files; it never sleeps, starts threads or stores anything (the tracker samples
it), and it never estimates: where RAPL is absent or unreadable, `discover_rapl` says why and the
caller picks the labelled estimate instead.

Which zones are summed, and why:
- `package-N` (or `package-N-die-M` on multi-die parts) top-level zones: the whole socket.
- `dram` subzones of a package: memory, which the package figure does not contain.
- `core` and `uncore` subzones are parts of the package, and `psys` (a top-level zone on some laptops
  and desktops) covers the whole platform including package and dram: adding any of them would count
  the same joules twice, so they are only recorded.
- AMD CPUs appear under the same `intel-rapl` control type since Linux 5.8, with package and core
  domains but no dram: on AMD the `dram` component is simply absent. Intel's later interfaces
  publish the same package again: `intel-rapl-mmio` (client parts, next to the MSR zones, so it is never
  read) and `intel-rapl-tpmi` (Xeon 6; read only when no `intel-rapl` package exists, never both).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Any

from greenlab.core.measure.meter import Meter

DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"
ROOT_ENV = "GREENLAB_POWERCAP_ROOT"

# Control types in order of preference; the first one that has a package domain is used alone.
# Mainline kernels register AMD under `intel-rapl`; some tools also probe `amd-rapl`, accepting it costs nothing.
CONTROL_TYPES = ("intel-rapl", "amd-rapl", "intel-rapl-tpmi")

_PACKAGE_NAME = re.compile(r"^package-(\d+)(?:-die-(\d+))?$")
_CONTAINED_IN_PACKAGE = ("core", "uncore")


@dataclass
class RaplDomain:
    """One powercap zone whose counter is summed: its place, its wrap point and its running total."""

    path: str
    name: str
    component: str
    socket: int
    max_energy_range_uj: int
    last_uj: int = 0
    total_uj: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "socket": self.socket,
            "max_energy_range_uj": self.max_energy_range_uj,
        }


def read_uj(path: str) -> int:
    """The integer in a sysfs attribute file (energy_uj, max_energy_range_uj).

    One function for every counter read, so that tests can stand in for the kernel's permission check
    (tests run as root, where chmod 000 does not deny a read).
    """
    with open(path, encoding="ascii") as f:
        return int(f.read().strip())


def _read_name(zone_dir: str) -> str | None:
    try:
        with open(os.path.join(zone_dir, "name"), encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def counter_delta_uj(last: int, now: int, max_energy_range_uj: int) -> int:
    """Energy between two readings of one counter, across at most one wrap.

    `energy_uj` takes values 0..max_energy_range_uj (the kernel publishes the counter's all-ones value
    converted to uJ), so the counter runs modulo max_energy_range_uj + 1. The hardware really wraps one
    energy unit (15-61 uJ) after that value rather than 1 uJ, an error of microjoules per wrap; adding
    only max_energy_range_uj (CodeCarbon, Zeus) is off by the same amount. Two or more wraps between
    readings cannot be seen at all: the range is tens to hundreds of kJ, minutes at full load, and the
    tracker reads every sample (10 Hz), so that needs a stall of minutes.
    """
    return (now - last) % (max_energy_range_uj + 1)


def _zone_dirs(root: str, ctype: str) -> dict[str, str]:
    """Zone id (e.g. 'intel-rapl:0:1') -> directory, for the flat class layout and the nested one.

    /sys/class/powercap lists every zone flat; /sys/devices/virtual/powercap (or a root pointing at the
    control type) nests subzones inside their parent. Only zone-named directories are entered, so the
    `device` and `subsystem` links that loop back up the sysfs tree are never followed.
    """
    pattern = re.compile(re.escape(ctype) + r"(:\d+)+$")
    found: dict[str, str] = {}

    def visit(base: str, depth: int) -> None:
        try:
            entries = sorted(os.listdir(base))
        except OSError:
            return
        for entry in entries:
            path = os.path.join(base, entry)
            if pattern.match(entry):
                found.setdefault(entry, path)
            elif not (depth == 0 and entry == ctype):
                continue
            if depth < 3:
                visit(path, depth + 1)

    visit(root, 0)
    return found


def _permission_hint(root: str, ctype: str) -> str:
    return (
        f"RAPL counters under {root} are not readable (permission denied); grant read access with: "
        f"sudo chmod a+r {root}/{ctype}:*/energy_uj {root}/{ctype}:*:*/energy_uj"
        " — falling back to the CPU estimate"
    )


def discover_rapl(root: str | None = None) -> tuple[RaplMeter | None, str | None]:
    """A meter over every socket's package and dram counters, or (None, one-line reason).

    `root` defaults to $GREENLAB_POWERCAP_ROOT, else /sys/class/powercap. Every chosen counter is read
    once here, so a permission problem shows now (with the chmod that fixes it), not mid-run.
    """
    root = root or os.environ.get(ROOT_ENV) or DEFAULT_POWERCAP_ROOT
    if not os.path.isdir(root):
        return None, f"no RAPL domains under {root} (the directory does not exist)"

    present = [c for c in CONTROL_TYPES + ("intel-rapl-mmio",) if _zone_dirs(root, c)]
    for ctype in CONTROL_TYPES:
        zones = {z: (path, _read_name(path)) for z, path in _zone_dirs(root, ctype).items()}
        packages: dict[str, tuple[str, int]] = {}
        for zone_id, (path, name) in zones.items():
            match = _PACKAGE_NAME.match(name or "")
            if zone_id.count(":") == 1 and match:
                packages[zone_id] = (path, int(match.group(1)))
        if not packages:
            continue
        drams: dict[str, tuple[str, int]] = {}
        ignored: list[dict[str, str]] = []
        psys_present = False
        for zone_id, (path, name) in zones.items():
            parent = zone_id.rsplit(":", 1)[0]
            if zone_id in packages:
                continue
            if zone_id.count(":") == 1 and name == "psys":
                psys_present = True
                why = "platform total: contains package and dram"
            elif zone_id.count(":") == 2 and name == "dram" and parent in packages:
                drams[zone_id] = (path, packages[parent][1])
                continue
            elif name in _CONTAINED_IN_PACKAGE:
                why = "contained in package"
            else:
                why = "not a package or dram domain"
            ignored.append({"zone": zone_id, "name": name or "?", "why": why})
        for other in present:
            if other != ctype:
                ignored.append(
                    {"zone": other, "name": other, "why": "another interface to the same packages; never added"}
                )
        return _build(root, ctype, packages, drams, ignored, psys_present)

    return None, f"no RAPL domains under {root}"


def _build(
    root: str,
    ctype: str,
    packages: dict[str, tuple[str, int]],
    drams: dict[str, tuple[str, int]],
    ignored: list[dict[str, str]],
    psys_present: bool,
) -> tuple[RaplMeter | None, str | None]:
    domains: list[RaplDomain] = []
    dropped_dram: list[dict[str, str]] = []
    for component, found in (("cpu", packages), ("dram", drams)):
        for zone_id, (path, socket) in found.items():
            name = _read_name(path) or zone_id
            try:
                max_range = read_uj(os.path.join(path, "max_energy_range_uj"))
                now = read_uj(os.path.join(path, "energy_uj"))
            except PermissionError:
                return None, _permission_hint(root, ctype)
            except (OSError, ValueError) as exc:
                if component == "dram":
                    # Memory is the smaller, optional figure: losing it must not cost the CPU counter.
                    dropped_dram.append({"zone": zone_id, "why": f"unreadable: {exc}"})
                    continue
                return None, f"RAPL package counter {path} is unreadable ({exc}); falling back to the CPU estimate"
            if max_range <= 0:
                if component == "dram":
                    dropped_dram.append({"zone": zone_id, "why": "max_energy_range_uj is 0"})
                    continue
                return None, f"RAPL package counter {path} reports max_energy_range_uj 0; cannot handle its wraparound"
            domains.append(
                RaplDomain(
                    path=path, name=name, component=component, socket=socket, max_energy_range_uj=max_range, last_uj=now
                )
            )
    return RaplMeter(
        domains, root=root, control_type=ctype, psys_present=psys_present, ignored=ignored + dropped_dram
    ), None


class RaplMeter(Meter):
    """`cpu` (all packages) and `dram` (all dram domains) as cumulative joules since creation.

    A failed read (the file vanished, an I/O error) leaves that component out of that call's result and
    keeps each counter's last good reading, so the next good read still covers the gap: a cumulative
    counter loses nothing from a skipped sample. The failure is kept in `last_errors`. A window whose
    edge reading is missing therefore has no measured energy, which the tracker reports as such.
    """

    def __init__(
        self,
        domains: list[RaplDomain],
        *,
        root: str = DEFAULT_POWERCAP_ROOT,
        control_type: str = "intel-rapl",
        psys_present: bool = False,
        ignored: list[dict[str, str]] | None = None,
    ) -> None:
        self._domains = domains
        self._root = root
        self._control_type = control_type
        self._psys_present = psys_present
        self._ignored = ignored or []
        self.last_errors: dict[str, str] = {}
        # The tracker's sampling thread and a window edge on the caller's thread may read at once;
        # two readers advancing `last_uj` together would count one interval twice.
        self._lock = threading.Lock()

    def components(self) -> list[str]:
        return [c for c in ("cpu", "dram") if any(d.component == c for d in self._domains)]

    def method(self, component: str) -> str:
        return "counter" if component in self.components() else "unavailable"

    def energy_j(self) -> dict[str, float]:
        failed: set[str] = set()
        with self._lock:
            for d in self._domains:
                try:
                    now = read_uj(os.path.join(d.path, "energy_uj"))
                except (OSError, ValueError) as exc:
                    failed.add(d.component)
                    self.last_errors[d.component] = f"{d.path}/energy_uj: {exc}"
                    continue
                d.total_uj += counter_delta_uj(d.last_uj, now, d.max_energy_range_uj)
                d.last_uj = now
            totals: dict[str, float] = {}
            for c in self.components():
                if c not in failed:
                    totals[c] = sum(d.total_uj for d in self._domains if d.component == c) / 1e6
        return totals

    def info(self) -> dict[str, dict[str, Any]]:
        sockets = sorted({d.socket for d in self._domains if d.component == "cpu"})
        out: dict[str, dict[str, Any]] = {}
        for c in self.components():
            mine = [d for d in self._domains if d.component == c]
            entry: dict[str, Any] = {
                "source": "rapl",
                "control_type": self._control_type,
                "root": self._root,
                "domains": [d.describe() for d in mine],
                "sockets": len(sockets),
                "psys_present": self._psys_present,
                "ignored_zones": self._ignored,
            }
            if c == "dram":
                entry["sockets_without_dram"] = sorted(set(sockets) - {d.socket for d in mine})
            out[c] = entry
        return out
