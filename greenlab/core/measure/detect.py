"""Choose the best meter for every component on this machine, and say why for each fallback.

Order of preference: NVML for the GPUs the run uses; RAPL for cpu and dram; the labelled estimate for
whatever is left. The reasons (no RAPL, permission denied, no NVML, a GPU NVML would not open) are kept
and stored with the run. On a Grace Hopper module the GPU's counter already covers the Grace CPU and its
memory, so nothing is added for them: adding the estimate would count the CPU twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from greenlab.core.measure.estimate import EstimateMeter
from greenlab.core.measure.meter import Meter


@dataclass
class MeterSetup:
    meters: list[Meter]
    notes: dict[str, str] = field(default_factory=dict)  # component or source -> why it fell back


def build_meters(
    *,
    use_gpus: list[int] | None,
    cpu_tdp_w: float | None = None,
    cpu_w_per_thread: float | None = None,
    dram_w_per_gb: float = 0.375,
    powercap_root: str | None = None,
) -> MeterSetup:
    """Meters for cpu, dram and (when `use_gpus` is a list) those CUDA devices; an empty list means every
    visible GPU."""
    meters: list[Meter] = []
    notes: dict[str, str] = {}
    reason: str | None
    if use_gpus is not None:
        try:
            from greenlab.core.measure.nvml import discover_nvml
        except ImportError as exc:  # pragma: no cover - nvml.py ships with the package
            gpu_meter, reason = None, f"NVML support unavailable: {exc}"
        else:
            gpu_meter, reason = discover_nvml(use_gpus or None)
        if gpu_meter is not None:
            meters.append(gpu_meter)
            if gpu_meter.skipped:
                notes["gpu_skipped"] = "not metered: " + "; ".join(gpu_meter.skipped.values())
            module = gpu_meter.module_components()
            if module:
                why = (
                    f"Grace Hopper: the counter of {', '.join(module)} covers the whole module, Grace CPU and "
                    "memory included; nothing is added for them"
                )
                notes.update(cpu=why, dram=why)
                return MeterSetup(meters=meters, notes=notes)
        else:
            notes["gpu"] = reason or "no NVIDIA GPU"
    covered: set[str] = set()
    try:
        from greenlab.core.measure.rapl import discover_rapl
    except ImportError as exc:  # pragma: no cover
        rapl, reason = None, f"RAPL support unavailable: {exc}"
    else:
        rapl, reason = discover_rapl(powercap_root)
    if rapl is not None:
        meters.append(rapl)
        covered.update(rapl.components())
    elif reason:
        notes["cpu"] = reason
    missing = [c for c in ("cpu", "dram") if c not in covered]
    if "dram" in missing and rapl is not None:
        notes["dram"] = "RAPL has no dram domain on this CPU"
    if missing:
        meters.append(
            EstimateMeter(
                missing,
                cpu_tdp_w=cpu_tdp_w,
                cpu_w_per_thread=cpu_w_per_thread,
                dram_w_per_gb=dram_w_per_gb,
                reasons={c: notes.get(c, notes.get("cpu", "")) for c in missing},
            )
        )
    return MeterSetup(meters=meters, notes=notes)
