"""GPU energy and power from NVML (NVIDIA's management library, through nvidia-ml-py's `pynvml`).

Job: find the GPUs this run uses (as CUDA numbers them, honouring CUDA_VISIBLE_DEVICES), read the
cumulative energy counter where the GPU has one (method `counter`, Volta and newer) and instantaneous
power for every GPU (the tracker integrates it where there is no counter: method `polled`), plus the
static facts a run record needs. Boundary: `pynvml` is imported inside functions, so a machine without
it (or without a driver) imports this module fine and `discover_nvml` says why there is no GPU meter.
Nothing here sleeps, starts threads or imports torch.

Why the counter and not polled power: on recent GPUs nvmlDeviceGetPowerUsage is a one-second average,
so integrating samples of it smears and misses load changes; nvmlDeviceGetTotalEnergyConsumption is
the driver's own running total (mJ since the driver loaded). The counter updates about every 100 ms,
so a window shorter than that can read a false 0 J: `window_flags` marks such windows.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from greenlab.core.measure.meter import Meter

# The driver refreshes the energy counter about every 100 ms; two updates make a window trustworthy.
COUNTER_UPDATE_S = 0.1
MIN_COUNTER_WINDOW_S = 2 * COUNTER_UPDATE_S
# Recent GPUs report power averaged over about one second.
POWER_AVERAGE_S = 1.0

FLAG_SHORT_WINDOW = "window_shorter_than_counter_update"
FLAG_COUNTER_STILL = "counter_did_not_advance"
FLAG_SHORT_POLLED_WINDOW = "window_shorter_than_power_average"


def _text(value: Any) -> str:
    """Older bindings return bytes for names, UUIDs and versions; newer ones return str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@dataclass
class NvmlGpu:
    """One GPU as this run sees it: its CUDA number, the NVML handle read for it, and static facts."""

    component: str
    handle: Any
    facts: dict[str, Any] = field(default_factory=dict)
    counter_supported: bool = False
    start_mj: int = 0


def parse_visible_devices(value: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as CUDA reads it: None when unset (all GPUs), else the entries in order.

    CUDA stops at the first entry it cannot use (a negative or repeated number, an empty item), so
    "0,-1,1" exposes only GPU 0; this does the same, so CUDA index i here is CUDA index i in torch.
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
    # CUDA accepts any unique prefix of a GPU UUID; NVML wants the whole UUID, so match by prefix.
    matches = []
    for index in range(count):
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        if _text(nv.nvmlDeviceGetUUID(handle)).startswith(entry):
            matches.append((handle, index))
    if len(matches) != 1:
        raise LookupError(f"{entry} matches {len(matches)} GPUs")
    return matches[0][0], None, matches[0][1]


def discover_nvml(cuda_indices: list[int] | None = None) -> tuple[NvmlMeter | None, str | None]:
    """A meter over the GPUs this run uses, or (None, one-line reason).

    `cuda_indices` are CUDA device numbers as torch sees them (after CUDA_VISIBLE_DEVICES); None means
    every visible GPU. Components are named `gpu<cuda index>`.
    """
    try:
        import pynvml as nv
    except ImportError:
        return None, "NVML bindings are not installed (pip install nvidia-ml-py); no GPU energy reading"
    try:
        nv.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, or an OSError from ctypes
        return None, f"NVML could not start ({_text(exc) or type(exc).__name__}); no NVIDIA driver on this machine?"

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
        gpus = []
        for i in wanted:
            try:
                handle, mig, nvml_index = _resolve(nv, visible[i], count)
            except (LookupError, nv.NVMLError) as exc:
                raise LookupError(f"CUDA device {i} ({visible[i]}) has no NVML device: {_text(exc)}") from exc
            gpus.append(_describe(nv, f"gpu{i}", i, visible[i], handle, mig, nvml_index, driver))
    except (LookupError, nv.NVMLError) as exc:
        _shutdown_quietly(nv)
        return None, _text(exc)
    return NvmlMeter(nv, gpus), None


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


def _describe(
    nv: Any,
    component: str,
    cuda_index: int,
    entry: str,
    handle: Any,
    mig: Any,
    nvml_index: int | None,
    driver: str | None,
) -> NvmlGpu:
    name = _optional(nv, "nvmlDeviceGetName", handle)
    uuid = _optional(nv, "nvmlDeviceGetUUID", handle)
    limit_mw = _optional(nv, "nvmlDeviceGetEnforcedPowerLimit", handle)
    if limit_mw is None:
        limit_mw = _optional(nv, "nvmlDeviceGetPowerManagementLimit", handle)
    temp = _optional(nv, "nvmlDeviceGetTemperature", handle, nv.NVML_TEMPERATURE_GPU)
    mig_mode = _optional(nv, "nvmlDeviceGetMigMode", handle)
    pci = _optional(nv, "nvmlDeviceGetPciInfo", handle)
    bus_id = getattr(pci, "busId", None) if pci is not None else None
    facts: dict[str, Any] = {
        "source": "nvml",
        "name": _text(name) if name is not None else None,
        "uuid": _text(uuid) if uuid is not None else None,
        "pci_bus_id": _text(bus_id) if bus_id is not None else None,
        "cuda_index": cuda_index,
        "nvml_index": nvml_index,
        "visible_as": entry,
        "driver_version": driver,
        "power_limit_w": limit_mw / 1000.0 if limit_mw is not None else None,
        "temperature_c_at_start": float(temp) if temp is not None else None,
        # nvmlDeviceGetMigMode returns [current, pending]; the current mode is what this run runs under.
        "mig_mode": bool(mig_mode[0]) if mig_mode is not None else None,
        # CUDA orders GPUs fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML by PCI bus; the
        # orders agree on a machine of identical GPUs, which is the case integer indices assume.
        "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST"),
    }
    if mig is not None:
        mig_uuid = _optional(nv, "nvmlDeviceGetUUID", mig)
        facts["mig_instance_uuid"] = _text(mig_uuid) if mig_uuid is not None else entry
        facts["measures_whole_gpu"] = True
    gpu = NvmlGpu(component=component, handle=handle, facts=facts)
    try:
        gpu.start_mj = int(nv.nvmlDeviceGetTotalEnergyConsumption(handle))
        gpu.counter_supported = True
    except nv.NVMLError:
        gpu.counter_supported = False
    facts["counter_supported"] = gpu.counter_supported
    return gpu


class NvmlMeter(Meter):
    """`gpu<i>` per CUDA device: cumulative joules from the counter since creation, and watts.

    A failed counter read leaves that GPU out of that call's `energy_j` result (the next good read still
    covers the gap, since the counter is cumulative); the error is kept in `last_errors`. A failed power
    or temperature read is skipped the same way: the live view can miss a sample, a run must not stop.
    """

    def __init__(self, nv: Any, gpus: list[NvmlGpu]) -> None:
        self._nv = nv
        self._gpus = gpus
        self._by_component = {g.component: g for g in gpus}
        self._closed = False
        self._close_lock = threading.Lock()
        self.last_errors: dict[str, str] = {}

    def components(self) -> list[str]:
        return [g.component for g in self._gpus]

    def method(self, component: str) -> str:
        gpu = self._by_component.get(component)
        if gpu is None:
            return "unavailable"
        return "counter" if gpu.counter_supported else "polled"

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
            try:
                out[g.component] = int(self._nv.nvmlDeviceGetPowerUsage(g.handle)) / 1000.0
            except self._nv.NVMLError as exc:
                self.last_errors[g.component] = f"nvmlDeviceGetPowerUsage: {_text(exc)}"
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
        elif method == "polled" and seconds < POWER_AVERAGE_S:
            return (FLAG_SHORT_POLLED_WINDOW,)
        return ()

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        _shutdown_quietly(self._nv)
