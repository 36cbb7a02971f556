"""A stand-in for nvidia-ml-py's `pynvml`, for machines with no NVIDIA driver.

Only the calls GreenLab's NVML meter makes exist here, with the same names, units (mW, mJ, deg C)
and error classes. Tests change a `FakeGpu`'s fields to move its counters between readings.
Inject with `monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml(...))`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass


class NVMLError(Exception):
    def __init__(self, value: int = 999, text: str = "Unknown Error") -> None:
        super().__init__(text)
        self.value = value


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(3, "Not Supported")


class NVMLError_LibraryNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(12, "NVML Shared Library Not Found")


class NVMLError_NotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(6, "Not Found")


@dataclass
class FakeGpu:
    uuid: str
    name: str | bytes = "NVIDIA H200"
    energy_mj: int | None = 1_000_000  # None: the counter is not supported (pre-Volta)
    power_mw: int | None = 250_000  # None: the power read fails
    temperature_c: int = 35
    power_limit_mw: int = 700_000
    mig_mode: tuple[int, int] | None = (0, 0)  # None: MIG not supported


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
) -> types.ModuleType:
    """A module object with the pynvml API over `gpus`; `calls` counts init and shutdown."""
    mod = types.ModuleType("pynvml")
    mod.calls = {"init": 0, "shutdown": 0}
    mod.gpus = gpus
    mod.NVMLError = NVMLError
    mod.NVMLError_NotSupported = NVMLError_NotSupported
    mod.NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    mod.NVMLError_NotFound = NVMLError_NotFound
    mod.NVML_TEMPERATURE_GPU = 0
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
        return gpus[index]

    def nvmlDeviceGetHandleByUUID(uuid):
        if bytes_uuid_only:
            if not isinstance(uuid, bytes):
                raise TypeError("bytes or integer address expected instead of str instance")
            uuid = uuid.decode()
        for item in list(gpus) + list(migs):
            if item.uuid == uuid:
                return item
        raise NVMLError_NotFound()

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig: FakeMig) -> FakeGpu:
        return mig.parent

    def nvmlDeviceGetTotalEnergyConsumption(gpu: FakeGpu) -> int:
        if gpu.energy_mj is None:
            raise NVMLError_NotSupported()
        return gpu.energy_mj

    def nvmlDeviceGetPowerUsage(gpu: FakeGpu) -> int:
        if gpu.power_mw is None:
            raise NVMLError(15, "GPU is lost")
        return gpu.power_mw

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

    for fn in (
        nvmlInit,
        nvmlShutdown,
        nvmlDeviceGetCount,
        nvmlDeviceGetHandleByIndex,
        nvmlDeviceGetHandleByUUID,
        nvmlDeviceGetDeviceHandleFromMigDeviceHandle,
        nvmlDeviceGetTotalEnergyConsumption,
        nvmlDeviceGetPowerUsage,
        nvmlDeviceGetName,
        nvmlDeviceGetUUID,
        nvmlSystemGetDriverVersion,
        nvmlDeviceGetEnforcedPowerLimit,
        nvmlDeviceGetTemperature,
        nvmlDeviceGetMigMode,
    ):
        setattr(mod, fn.__name__, fn)
    return mod
