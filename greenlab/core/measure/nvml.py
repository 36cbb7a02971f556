"""GPU energy and power from NVML (NVIDIA's management library, through nvidia-ml-py's `pynvml`).

Job: open every GPU this run may use (as CUDA_VISIBLE_DEVICES lists them), one component per physical
board, read the cumulative energy counter where the board has one (method `counter`, Volta and newer)
and power for every board (the tracker integrates it where there is no counter: method `polled`), who
else computes on a board (`processes`, `utilisation`), plus the static facts a run record needs.
Boundary: `pynvml` is imported inside functions, so a machine without it (or without a driver) imports
this module fine and `discover_nvml` says why there is no GPU meter. Nothing here sleeps, starts
threads or imports torch; which board is the run's is decided by the run (greenlab.core.run.measurement),
by UUID, from what its child reports.

What the readings are, on the GPUs this is for:
- The counter (nvmlDeviceGetTotalEnergyConsumption) is the driver's own running total (mJ since the
  driver loaded) and the run's figure. It updates about every 100 ms, so a window's two edges may each
  be up to one update late: `window_uncertainty_j` states that, and windows shorter than two updates are
  flagged (the tracker then takes polled power).
- Power: nvmlDeviceGetPowerUsage is a one-second moving average on Ampere and later (GA100 aside), about
  0.5 s behind the load; the field NVML_FI_DEV_POWER_INSTANT is the instantaneous draw. Power is read from
  the field where the driver has it, else from the average, and every figure built from it says which
  (`power_reading`).
- The counter is per physical GPU: a MIG instance is metered through its parent, once however many of
  its instances are visible, and the facts list the instances; another user's job on the board is in
  it too (`processes`). On Grace Hopper (GH200) it covers the whole module, Grace CPU and memory
  included (`covers_cpu`): the caller must not add a CPU estimate on top.
- A board NVML refuses (Insufficient Permissions in a constrained container, a lost GPU) is skipped and
  named (`skipped`); the others are still metered.
"""

from __future__ import annotations

import os
import platform
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenlab.core.measure.meter import Meter

# The driver refreshes the energy counter about every 100 ms; two updates make a window trustworthy.
COUNTER_UPDATE_S = 0.1
MIN_COUNTER_WINDOW_S = 2 * COUNTER_UPDATE_S
# Recent GPUs report nvmlDeviceGetPowerUsage averaged over about one second, centred half a second back.
POWER_AVERAGE_S = 1.0
POWER_AVERAGE_LAG_S = 0.5

FLAG_SHORT_WINDOW = "window_shorter_than_counter_update"
FLAG_COUNTER_STILL = "counter_did_not_advance"
FLAG_SHORT_POLLED_WINDOW = "window_shorter_than_power_average"

POWER_INSTANT = "instant"
POWER_AVERAGE = "average"
POWER_READINGS = {
    POWER_INSTANT: "NVML_FI_DEV_POWER_INSTANT: instantaneous power",
    POWER_AVERAGE: (
        f"nvmlDeviceGetPowerUsage: a {POWER_AVERAGE_S:g} s moving average, about {POWER_AVERAGE_LAG_S:g} s "
        "behind the load (Ampere and later, GA100 aside; this driver has no instant-power field)"
    ),
    "usage": "nvmlDeviceGetPowerUsage: instantaneous on this GPU (before Ampere, or GA100)",
}
# GA100 boards (A100, A30) report nvmlDeviceGetPowerUsage without the one-second averaging.
_GA100_NAMES = ("A100", "A30")
GRACE_HOPPER_SCOPE = "module: Hopper GPU, Grace CPU and their memory (GH200)"
_GRACE_CPU_PART = "0xd4f"  # Arm Neoverse V2, the Grace CPU's core


def _text(value: Any) -> str:
    """Older bindings return bytes for names, UUIDs and versions; newer ones return str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@dataclass
class NvmlGpu:
    """One physical GPU as this run sees it: the NVML handle read for it, and static facts."""

    component: str
    handle: Any
    facts: dict[str, Any] = field(default_factory=dict)
    counter_supported: bool = False
    start_mj: int = 0
    power_source: str = POWER_AVERAGE  # a POWER_READINGS key
    module: bool = False  # Grace Hopper: the counter covers the CPU too


def parse_visible_devices(value: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as CUDA reads it: None when unset (all GPUs), else the entries in order.

    CUDA stops at the first entry it cannot use (a negative or repeated number, an empty item), so
    "0,-1,1" exposes only GPU 0; this does the same, so entry i here is what CUDA may call device i.
    """
    if value is None:
        return None
    entries: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry or entry in entries:
            break
        if entry.lstrip("-").isdigit():
            if int(entry) < 0:
                break
            entry = str(int(entry))
        elif not entry.startswith(("GPU-", "MIG-")):
            break
        entries.append(entry)
    return entries


def _handle_by_uuid(nv: Any, uuid: str) -> Any:
    try:
        return nv.nvmlDeviceGetHandleByUUID(uuid)
    except TypeError:
        # Old bindings hand the argument straight to ctypes as a char*, which takes bytes only.
        return nv.nvmlDeviceGetHandleByUUID(uuid.encode())


def _resolve(nv: Any, entry: str, count: int) -> tuple[Any, Any | None, int | None]:
    """(handle to read, MIG instance handle or None, NVML index or None) for one visible-device entry."""
    if entry.isdigit():
        index = int(entry)
        if index >= count:
            raise LookupError(f"index {index} is beyond the {count} GPU(s) NVML sees")
        return nv.nvmlDeviceGetHandleByIndex(index), None, index
    if entry.startswith("MIG-"):
        mig = _handle_by_uuid(nv, entry)
        # Energy and power exist only for the whole GPU, so a MIG slice is measured through its parent.
        return nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig), mig, None
    # CUDA accepts any unique prefix of a GPU UUID; NVML wants the whole UUID, so match by prefix. A board
    # NVML will not open cannot be this entry's (CUDA could not open it either).
    matches = []
    for index in range(count):
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nv.nvmlDeviceGetUUID(handle))
        except nv.NVMLError:
            continue
        if uuid.startswith(entry):
            matches.append((handle, index))
    if len(matches) != 1:
        raise LookupError(f"{entry} matches {len(matches)} GPUs")
    return matches[0][0], None, matches[0][1]


def discover_nvml(
    cuda_indices: list[int] | None = None, *, root: Path = Path("/")
) -> tuple[NvmlMeter | None, str | None]:
    """A meter over the GPUs this run may use, or (None, one-line reason).

    `cuda_indices` are positions in the visible-device list (CUDA_VISIBLE_DEVICES, or every GPU NVML sees);
    None means all of them. A board that fails to open is skipped and named in the meter's `skipped`;
    only when none opens is there no meter. Components are named `gpu<position>` of the first entry
    that reaches the board; the board's identity is its UUID in the facts (`root` is where /proc is
    read, to recognise a Grace CPU).
    """
    try:
        import pynvml as nv
    except ImportError:
        return None, "NVML bindings are not installed (pip install nvidia-ml-py); no GPU energy reading"
    try:
        nv.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, or an OSError from ctypes
        return None, f"NVML could not start ({_text(exc) or type(exc).__name__}); no NVIDIA driver on this machine?"

    skipped: dict[str, str] = {}
    try:
        count = int(nv.nvmlDeviceGetCount())
        if count == 0:
            raise LookupError("NVML found no NVIDIA GPU")
        raw_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        visible = parse_visible_devices(raw_visible)
        if visible is None:
            visible = [str(i) for i in range(count)]
        if not visible:
            raise LookupError(f"CUDA_VISIBLE_DEVICES={raw_visible!r} hides every GPU")
        wanted = list(range(len(visible))) if cuda_indices is None else list(cuda_indices)
        for i in wanted:
            if not 0 <= i < len(visible):
                raise LookupError(
                    f"CUDA device {i} is not visible ({len(visible)} visible GPU(s)"
                    + (f", CUDA_VISIBLE_DEVICES={raw_visible!r})" if raw_visible is not None else ")")
                )
        try:
            driver = _text(nv.nvmlSystemGetDriverVersion())
        except nv.NVMLError:
            driver = None
        grace = grace_cpu(root)
        gpus: list[NvmlGpu] = []
        by_board: dict[str, NvmlGpu] = {}
        for i in wanted:
            try:
                handle, mig, nvml_index = _resolve(nv, visible[i], count)
                board = _board_key(nv, handle)
                if board in by_board:  # a second MIG instance of a metered board: one counter, read once
                    _add_instance(nv, by_board[board], mig, visible[i])
                    continue
                gpu = _describe(nv, f"gpu{i}", visible[i], handle, mig, nvml_index, driver, grace)
            except (LookupError, nv.NVMLError) as exc:
                skipped[visible[i]] = f"GPU {visible[i]}: {_text(exc) or type(exc).__name__}"
                continue
            by_board[board] = gpu
            gpus.append(gpu)
        if not gpus:
            raise LookupError("no GPU could be opened: " + "; ".join(skipped.values()))
    except (LookupError, nv.NVMLError) as exc:
        _shutdown_quietly(nv)
        return None, _text(exc)
    return NvmlMeter(nv, gpus, skipped), None


def _board_key(nv: Any, handle: Any) -> str:
    uuid = _optional(nv, "nvmlDeviceGetUUID", handle)
    return _text(uuid) if uuid is not None else f"handle:{id(handle)}"


def grace_cpu(root: Path = Path("/")) -> bool:
    """Whether this machine's CPU is NVIDIA Grace (Arm Neoverse V2 cores): with a Hopper GPU, a GH200."""
    if root == Path("/") and platform.machine().lower() not in ("aarch64", "arm64"):
        return False
    try:
        text = (root / "proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    parts = {line.split(":", 1)[1].strip().lower() for line in text.splitlines() if line.startswith("CPU part")}
    return _GRACE_CPU_PART in parts


def grace_hopper(nv: Any, name: str | None, handle: Any, grace: bool) -> str | None:
    """How this board was recognised as a Grace Hopper module, or None: by its name (GH200), or as a Hopper
    GPU beside a Grace CPU that is not a PCIe card (a Grace server may also hold PCIe H100s, whose counter
    is the card's own)."""
    upper = (name or "").upper()
    if "GH200" in upper:
        return f"device name {name}"
    arch = _optional(nv, "nvmlDeviceGetArchitecture", handle)
    hopper = getattr(nv, "NVML_DEVICE_ARCH_HOPPER", 9)
    if grace and arch is not None and int(arch) == hopper and "PCIE" not in upper:
        return f"a Hopper GPU ({name}) beside a Grace CPU (Arm part {_GRACE_CPU_PART})"
    return None


def _shutdown_quietly(nv: Any) -> None:
    try:
        nv.nvmlShutdown()
    except Exception:  # noqa: BLE001 - shutting down after a failure must not hide the failure's reason
        pass


def _optional(nv: Any, fn_name: str, *args: Any) -> Any:
    """A query that some GPUs, drivers or bindings lack: its value, or None."""
    fn = getattr(nv, fn_name, None)
    if fn is None:
        return None
    try:
        return fn(*args)
    except nv.NVMLError:
        return None


def _field_number(value: Any) -> float | None:
    """The number an nvmlFieldValue_t holds (None when the driver returned an error for the field)."""
    if getattr(value, "nvmlReturn", 1) != 0:
        return None
    kinds = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
    attribute = kinds.get(int(getattr(value, "valueType", 1)), "uiVal")
    try:
        return float(getattr(value.value, attribute))
    except (AttributeError, TypeError, ValueError):
        return None


def _instant_mw(nv: Any, handle: Any) -> float | None:
    """Instantaneous power (mW) from NVML_FI_DEV_POWER_INSTANT, or None where the driver lacks it."""
    field_id = getattr(nv, "NVML_FI_DEV_POWER_INSTANT", None)
    fn = getattr(nv, "nvmlDeviceGetFieldValues", None)
    if field_id is None or fn is None:
        return None
    try:
        values = fn(handle, [field_id])
    except (nv.NVMLError, OSError, AttributeError):  # an old libnvidia-ml has no such function at all
        return None
    return _field_number(values[0]) if len(values) else None


def _averaged(nv: Any, name: str | None, handle: Any) -> bool:
    """Whether nvmlDeviceGetPowerUsage averages over a second on this board: Ampere and later, GA100 aside;
    a board whose architecture NVML does not tell is assumed to (the label then errs on the side of lag)."""
    if name and any(part in name.upper() for part in _GA100_NAMES):
        return False
    arch = _optional(nv, "nvmlDeviceGetArchitecture", handle)
    ampere = getattr(nv, "NVML_DEVICE_ARCH_AMPERE", 7)
    unknown = getattr(nv, "NVML_DEVICE_ARCH_UNKNOWN", 0xFFFFFFFF)
    if arch is None or int(arch) == unknown:
        return True
    return int(arch) >= ampere


def _mig_instances(nv: Any, handle: Any) -> list[str]:
    """UUIDs of the MIG instances NVML lists on a parent GPU (empty outside MIG mode)."""
    most = _optional(nv, "nvmlDeviceGetMaxMigDeviceCount", handle)
    uuids = []
    for index in range(int(most or 0)):
        mig = _optional(nv, "nvmlDeviceGetMigDeviceHandleByIndex", handle, index)
        uuid = _optional(nv, "nvmlDeviceGetUUID", mig) if mig is not None else None
        if uuid is not None:
            uuids.append(_text(uuid))
    return uuids


def _add_instance(nv: Any, gpu: NvmlGpu, mig: Any, entry: str) -> None:
    instances = gpu.facts.setdefault("mig_instances", [])
    uuid = _optional(nv, "nvmlDeviceGetUUID", mig) if mig is not None else None
    name = _text(uuid) if uuid is not None else entry
    if name not in instances:
        instances.append(name)
    gpu.facts.setdefault("visible_as_also", []).append(entry)


def _describe(
    nv: Any,
    component: str,
    entry: str,
    handle: Any,
    mig: Any,
    nvml_index: int | None,
    driver: str | None,
    grace: bool,
) -> NvmlGpu:
    raw_name = _optional(nv, "nvmlDeviceGetName", handle)
    name = _text(raw_name) if raw_name is not None else None
    uuid = _optional(nv, "nvmlDeviceGetUUID", handle)
    limit_mw = _optional(nv, "nvmlDeviceGetEnforcedPowerLimit", handle)
    if limit_mw is None:
        limit_mw = _optional(nv, "nvmlDeviceGetPowerManagementLimit", handle)
    temp = _optional(nv, "nvmlDeviceGetTemperature", handle, nv.NVML_TEMPERATURE_GPU)
    mig_mode = _optional(nv, "nvmlDeviceGetMigMode", handle)
    pci = _optional(nv, "nvmlDeviceGetPciInfo", handle)
    bus_id = getattr(pci, "busId", None) if pci is not None else None
    capability = _optional(nv, "nvmlDeviceGetCudaComputeCapability", handle)
    facts: dict[str, Any] = {
        "source": "nvml",
        "name": name,
        "uuid": _text(uuid) if uuid is not None else None,
        "pci_bus_id": _text(bus_id) if bus_id is not None else None,
        "nvml_index": nvml_index,
        "visible_as": entry,
        "driver_version": driver,
        "power_limit_w": limit_mw / 1000.0 if limit_mw is not None else None,
        "temperature_c_at_start": float(temp) if temp is not None else None,
        # nvmlDeviceGetMigMode returns [current, pending]; the current mode is what this run runs under.
        "mig_mode": bool(mig_mode[0]) if mig_mode is not None else None,
        "compute_capability": f"{capability[0]}.{capability[1]}" if capability is not None else None,
    }
    instances = _mig_instances(nv, handle) if facts["mig_mode"] else []
    if mig is not None:
        mig_uuid = _optional(nv, "nvmlDeviceGetUUID", mig)
        facts["mig_instance_uuid"] = _text(mig_uuid) if mig_uuid is not None else entry
        if facts["mig_instance_uuid"] not in instances:
            instances.append(facts["mig_instance_uuid"])
    if instances or mig is not None:
        facts["mig_instances"] = instances
        facts["measures_whole_gpu"] = True  # the counter and power are the parent's, every instance's work
    gpu = NvmlGpu(component=component, handle=handle, facts=facts)
    try:
        gpu.start_mj = int(nv.nvmlDeviceGetTotalEnergyConsumption(handle))
        gpu.counter_supported = True
    except nv.NVMLError:
        gpu.counter_supported = False
    facts["counter_supported"] = gpu.counter_supported
    if _instant_mw(nv, handle) is not None:
        gpu.power_source = POWER_INSTANT
    else:
        gpu.power_source = POWER_AVERAGE if _averaged(nv, name, handle) else "usage"
    facts["power_reading"] = POWER_READINGS[gpu.power_source]
    recognised = grace_hopper(nv, name, handle, grace)
    if recognised:
        gpu.module = True
        facts["scope"] = GRACE_HOPPER_SCOPE
        facts["scope_recognised_by"] = recognised
    return gpu


class NvmlMeter(Meter):
    """`gpu<i>` per physical board: cumulative joules from the counter since creation, and watts.

    A failed counter read leaves that GPU out of that call's `energy_j` result (the next good read still
    covers the gap, since the counter is cumulative); the error is kept in `last_errors`. A failed power
    or temperature read is skipped the same way: the live view can miss a sample, a run must not stop.
    `skipped` names the boards that could not be opened, with NVML's reason.
    """

    def __init__(self, nv: Any, gpus: list[NvmlGpu], skipped: dict[str, str] | None = None) -> None:
        self._nv = nv
        self._gpus = gpus
        self._by_component = {g.component: g for g in gpus}
        self._closed = False
        self._close_lock = threading.Lock()
        self.last_errors: dict[str, str] = {}
        self.skipped: dict[str, str] = dict(skipped or {})

    def components(self) -> list[str]:
        return [g.component for g in self._gpus]

    def method(self, component: str) -> str:
        gpu = self._by_component.get(component)
        if gpu is None:
            return "unavailable"
        return "counter" if gpu.counter_supported else "polled"

    def module_components(self) -> list[str]:
        """Components whose counter covers a Grace CPU and its memory too (GH200)."""
        return [g.component for g in self._gpus if g.module]

    def energy_j(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for g in self._gpus:
            if not g.counter_supported:
                continue
            try:
                now_mj = int(self._nv.nvmlDeviceGetTotalEnergyConsumption(g.handle))
            except self._nv.NVMLError as exc:
                self.last_errors[g.component] = f"nvmlDeviceGetTotalEnergyConsumption: {_text(exc)}"
                continue
            out[g.component] = (now_mj - g.start_mj) / 1000.0
        return out

    def power_w(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for g in self._gpus:
            if g.power_source == POWER_INSTANT:
                milliwatts = _instant_mw(self._nv, g.handle)
                if milliwatts is not None:
                    out[g.component] = milliwatts / 1000.0
                    continue
                self.last_errors[g.component] = "NVML_FI_DEV_POWER_INSTANT: no value"
                continue  # never mix the averaged reading into an instant series unannounced
            try:
                out[g.component] = int(self._nv.nvmlDeviceGetPowerUsage(g.handle)) / 1000.0
            except self._nv.NVMLError as exc:
                self.last_errors[g.component] = f"nvmlDeviceGetPowerUsage: {_text(exc)}"
        return out

    def power_usage_w(self) -> dict[str, float]:
        """nvmlDeviceGetPowerUsage per component, whatever `power_w` reads (the GPU check compares both)."""
        out: dict[str, float] = {}
        for g in self._gpus:
            try:
                out[g.component] = int(self._nv.nvmlDeviceGetPowerUsage(g.handle)) / 1000.0
            except self._nv.NVMLError:
                continue
        return out

    def instant_power_w(self) -> dict[str, float]:
        """NVML_FI_DEV_POWER_INSTANT per component where the driver has it."""
        out: dict[str, float] = {}
        for g in self._gpus:
            milliwatts = _instant_mw(self._nv, g.handle)
            if milliwatts is not None:
                out[g.component] = milliwatts / 1000.0
        return out

    def temperatures(self) -> dict[str, float]:
        """GPU core temperature (deg C) per component, for start/end records and the cool-down wait."""
        out: dict[str, float] = {}
        for g in self._gpus:
            try:
                out[g.component] = float(self._nv.nvmlDeviceGetTemperature(g.handle, self._nv.NVML_TEMPERATURE_GPU))
            except self._nv.NVMLError:
                continue
        return out

    def processes(self, components: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """The compute processes NVML lists on each board: pid and GPU memory (MB, None where the driver
        does not say). A board whose list cannot be read is absent (not "no processes")."""
        out: dict[str, list[dict[str, Any]]] = {}
        for g in self._gpus:
            if components is not None and g.component not in components:
                continue
            fn = getattr(self._nv, "nvmlDeviceGetComputeRunningProcesses", None)
            if fn is None:
                continue
            try:
                listed = fn(g.handle)
            except self._nv.NVMLError:
                continue
            out[g.component] = [
                {
                    "pid": int(p.pid),
                    "used_memory_mb": round(p.usedGpuMemory / 2**20, 1)
                    if getattr(p, "usedGpuMemory", None) is not None
                    else None,
                }
                for p in listed
            ]
        return out

    def utilisation(self, components: list[str] | None = None) -> dict[str, float]:
        """GPU utilisation (% of the last sample period with a kernel running) per board."""
        out: dict[str, float] = {}
        for g in self._gpus:
            if components is not None and g.component not in components:
                continue
            rates = _optional(self._nv, "nvmlDeviceGetUtilizationRates", g.handle)
            if rates is not None:
                out[g.component] = float(rates.gpu)
        return out

    def info(self) -> dict[str, dict[str, Any]]:
        return {g.component: dict(g.facts) for g in self._gpus}

    def window_flags(self, component: str, seconds: float, energy_j: float | None) -> tuple[str, ...]:
        """Flags that forbid reading a window's figure as real; a flagged 0 J is 'too short to see'."""
        method = self.method(component)
        if method == "counter":
            if seconds < MIN_COUNTER_WINDOW_S:
                return (FLAG_SHORT_WINDOW,)
            if seconds > 0 and energy_j == 0:
                return (FLAG_COUNTER_STILL,)
        elif method == "polled" and seconds < POWER_AVERAGE_S and self._power_lag_s(component) > 0:
            return (FLAG_SHORT_POLLED_WINDOW,)
        return ()

    def _power_lag_s(self, component: str) -> float:
        gpu = self._by_component.get(component)
        return POWER_AVERAGE_LAG_S if gpu is not None and gpu.power_source == POWER_AVERAGE else 0.0

    def window_uncertainty_j(
        self, component: str, method: str, seconds: float, energy_j: float | None, sample_period_s: float
    ) -> float | None:
        """How far a window's figure may be off, in joules, from how it was read.

        Counter: each edge reads a total up to one update period old, so the figure may miss or gain up to
        one period of the window's mean power (±COUNTER_UPDATE_S / seconds of it: 50 % at 0.2 s, 5 % at
        2 s). Polled: the integral's edges are a sample period apart from the true ones, and an averaged
        reading lags the load by POWER_AVERAGE_LAG_S more.
        """
        if energy_j is None or seconds <= 0 or component not in self._by_component:
            return None
        mean_w = abs(energy_j) / seconds
        if method == "counter":
            return mean_w * COUNTER_UPDATE_S
        if method == "polled":
            return mean_w * (sample_period_s + self._power_lag_s(component))
        return None

    def window_inputs(self, component: str, energy_j: float, seconds: float) -> dict[str, Any]:
        gpu = self._by_component.get(component)
        if gpu is None:
            return {}
        inputs: dict[str, Any] = {"power_reading": gpu.power_source}
        if gpu.module:
            inputs["scope"] = "module"
        return inputs

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        _shutdown_quietly(self._nv)
