"""A stand-in for nvidia-ml-py's `pynvml`, for machines with no NVIDIA driver.

Only the calls GreenLab's NVML meter makes exist here, with the same names, units (mW, mJ, deg C, bytes)
and error classes. Tests change a `FakeGpu`'s fields to move its counters between readings, or give it
`live_w` so its counter advances in real time. Scenarios of real machines are fields too: a board that
refuses to open (`open_error`, e.g. a cgroup-constrained container), one without the instant-power
field (`instant_mw=None`), other users' processes (`processes`), MIG instances (`FakeMig`).
Inject with `monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml(...))`.
"""

from __future__ import annotations

import time
import types
from dataclasses import dataclass, field


class NVMLError(Exception):
    def __init__(self, value: int = 999, text: str = "Unknown Error") -> None:
        super().__init__(text)
        self.value = value


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(3, "Not Supported")


class NVMLError_NoPermission(NVMLError):
    def __init__(self) -> None:
        super().__init__(4, "Insufficient Permissions")


class NVMLError_LibraryNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(12, "NVML Shared Library Not Found")


class NVMLError_NotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(6, "Not Found")


class NVMLError_FunctionNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(13, "Function Not Found")


NVML_FI_DEV_POWER_AVERAGE = 185
NVML_FI_DEV_POWER_INSTANT = 186
NVML_VALUE_TYPE_UNSIGNED_INT = 1
ARCH = {"volta": 5, "turing": 6, "ampere": 7, "ada": 8, "hopper": 9, "blackwell": 10}


@dataclass
class FakeProcess:
    pid: int
    usedGpuMemory: int | None = 512 * 2**20  # noqa: N815 - pynvml's attribute name


@dataclass
class FakeGpu:
    uuid: str
    name: str | bytes = "NVIDIA H200"
    energy_mj: int | None = 1_000_000  # None: the counter is not supported (pre-Volta)
    power_mw: int | None = 250_000  # nvmlDeviceGetPowerUsage; None: the power read fails
    temperature_c: int = 35
    power_limit_mw: int = 700_000
    mig_mode: tuple[int, int] | None = (0, 0)  # None: MIG not supported
    instant_mw: int | None = None  # NVML_FI_DEV_POWER_INSTANT; None: the field is not supported
    architecture: int = ARCH["hopper"]
    compute_capability: tuple[int, int] = (9, 0)
    pci_bus_id: str = "00000000:1B:00.0"
    open_error: Exception | None = None  # nvmlDeviceGetHandleByIndex raises this for the board
    processes: list[FakeProcess] = field(default_factory=list)
    utilisation_pct: int = 0
    # Watts that move the counter in real time (and that POWER_INSTANT reads, unless instant_mw is set).
    live_w: float | None = None
    _t0: float = field(default_factory=time.monotonic)

    def energy_now_mj(self) -> int | None:
        if self.energy_mj is None:
            return None
        if self.live_w is None:
            return self.energy_mj
        return self.energy_mj + int(self.live_w * (time.monotonic() - self._t0) * 1000)


@dataclass
class FakeMig:
    uuid: str
    parent: FakeGpu


def make_fake_pynvml(
    gpus: list[FakeGpu],
    *,
    init_error: Exception | None = None,
    migs: list[FakeMig] | None = None,
    driver: str | bytes = "570.86.15",
    bytes_uuid_only: bool = False,
    field_values: bool = True,
) -> types.ModuleType:
    """A module object with the pynvml API over `gpus`; `calls` counts init and shutdown.

    `field_values=False` is an old driver without nvmlDeviceGetFieldValues.
    """
    mod = types.ModuleType("pynvml")
    mod.calls = {"init": 0, "shutdown": 0, "processes": 0}
    mod.gpus = gpus
    mod.NVMLError = NVMLError
    mod.NVMLError_NotSupported = NVMLError_NotSupported
    mod.NVMLError_NoPermission = NVMLError_NoPermission
    mod.NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    mod.NVMLError_NotFound = NVMLError_NotFound
    mod.NVML_TEMPERATURE_GPU = 0
    mod.NVML_FI_DEV_POWER_AVERAGE = NVML_FI_DEV_POWER_AVERAGE
    mod.NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT
    mod.NVML_VALUE_TYPE_UNSIGNED_INT = NVML_VALUE_TYPE_UNSIGNED_INT
    mod.NVML_SUCCESS = 0
    for arch, number in ARCH.items():
        setattr(mod, f"NVML_DEVICE_ARCH_{arch.upper()}", number)
    migs = migs or []

    def nvmlInit() -> None:
        if init_error is not None:
            raise init_error
        mod.calls["init"] += 1

    def nvmlShutdown() -> None:
        mod.calls["shutdown"] += 1

    def nvmlDeviceGetCount() -> int:
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(index: int) -> FakeGpu:
        if not 0 <= index < len(gpus):
            raise NVMLError(2, "Invalid Argument")
        if gpus[index].open_error is not None:
            raise gpus[index].open_error
        return gpus[index]

    def nvmlDeviceGetHandleByUUID(uuid):
        if bytes_uuid_only:
            if not isinstance(uuid, bytes):
                raise TypeError("bytes or integer address expected instead of str instance")
            uuid = uuid.decode()
        for item in list(gpus) + list(migs):
            if item.uuid == uuid:
                if isinstance(item, FakeGpu) and item.open_error is not None:
                    raise item.open_error
                return item
        raise NVMLError_NotFound()

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig: FakeMig) -> FakeGpu:
        return mig.parent

    def nvmlDeviceGetMaxMigDeviceCount(gpu: FakeGpu) -> int:
        if gpu.mig_mode is None:
            raise NVMLError_NotSupported()
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(gpu: FakeGpu, index: int) -> FakeMig:
        mine = [m for m in migs if m.parent is gpu]
        if index >= len(mine):
            raise NVMLError_NotFound()
        return mine[index]

    def nvmlDeviceGetTotalEnergyConsumption(gpu: FakeGpu) -> int:
        energy = gpu.energy_now_mj()
        if energy is None:
            raise NVMLError_NotSupported()
        return energy

    def nvmlDeviceGetPowerUsage(gpu: FakeGpu) -> int:
        if gpu.power_mw is None:
            raise NVMLError(15, "GPU is lost")
        return gpu.power_mw

    def nvmlDeviceGetFieldValues(gpu: FakeGpu, field_ids):
        values = []
        for field_id in field_ids:
            value = types.SimpleNamespace(uiVal=0)
            ret = 3  # NVML_ERROR_NOT_SUPPORTED
            if field_id == NVML_FI_DEV_POWER_INSTANT:
                instant = gpu.instant_mw
                if instant is None and gpu.live_w is not None:
                    instant = int(gpu.live_w * 1000)
                if instant is not None:
                    value.uiVal, ret = instant, 0
            values.append(
                types.SimpleNamespace(
                    fieldId=field_id, nvmlReturn=ret, valueType=NVML_VALUE_TYPE_UNSIGNED_INT, value=value
                )
            )
        return values

    def nvmlDeviceGetComputeRunningProcesses(gpu: FakeGpu) -> list[FakeProcess]:
        mod.calls["processes"] += 1
        return list(gpu.processes)

    def nvmlDeviceGetUtilizationRates(gpu: FakeGpu):
        return types.SimpleNamespace(gpu=gpu.utilisation_pct, memory=0)

    def nvmlDeviceGetName(gpu):
        return gpu.name

    def nvmlDeviceGetUUID(item):
        return item.uuid

    def nvmlSystemGetDriverVersion():
        return driver

    def nvmlDeviceGetEnforcedPowerLimit(gpu: FakeGpu) -> int:
        return gpu.power_limit_mw

    def nvmlDeviceGetTemperature(gpu: FakeGpu, sensor: int) -> int:
        assert sensor == 0
        return gpu.temperature_c

    def nvmlDeviceGetMigMode(gpu: FakeGpu) -> list[int]:
        if gpu.mig_mode is None:
            raise NVMLError_NotSupported()
        return list(gpu.mig_mode)

    def nvmlDeviceGetArchitecture(gpu: FakeGpu) -> int:
        return gpu.architecture

    def nvmlDeviceGetCudaComputeCapability(gpu: FakeGpu) -> tuple[int, int]:
        return gpu.compute_capability

    def nvmlDeviceGetPciInfo(gpu: FakeGpu):
        return types.SimpleNamespace(busId=gpu.pci_bus_id)

    functions = [
        nvmlInit,
        nvmlShutdown,
        nvmlDeviceGetCount,
        nvmlDeviceGetHandleByIndex,
        nvmlDeviceGetHandleByUUID,
        nvmlDeviceGetDeviceHandleFromMigDeviceHandle,
        nvmlDeviceGetMaxMigDeviceCount,
        nvmlDeviceGetMigDeviceHandleByIndex,
        nvmlDeviceGetTotalEnergyConsumption,
        nvmlDeviceGetPowerUsage,
        nvmlDeviceGetComputeRunningProcesses,
        nvmlDeviceGetUtilizationRates,
        nvmlDeviceGetName,
        nvmlDeviceGetUUID,
        nvmlSystemGetDriverVersion,
        nvmlDeviceGetEnforcedPowerLimit,
        nvmlDeviceGetTemperature,
        nvmlDeviceGetMigMode,
        nvmlDeviceGetArchitecture,
        nvmlDeviceGetCudaComputeCapability,
        nvmlDeviceGetPciInfo,
    ]
    if field_values:
        functions.append(nvmlDeviceGetFieldValues)
    for fn in functions:
        setattr(mod, fn.__name__, fn)
    return mod
