"""A run's record while it runs, and the pure rules that turn its energy windows into stored figures.

The supervisor fills a RunMeasurement from the child's events; `energy_columns` turns the run's window and the
idle baseline into the `runs` columns and `energy_components` rows; `gpus_used` decides which metered GPU
the child really trained on. Nothing here reads a meter, talks to a process or writes the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from greenlab.core.measure import carbon
from greenlab.core.measure.tracker import FLAG_SHORT_WINDOW_POLLED, WindowResult
from greenlab.core.plan.config import GridRun
from greenlab.core.run.pauses import PauseWatch

FLAG_NET_BELOW_IDLE = "net_below_idle"  # a component drew less than its idle baseline: a bad baseline
FLAG_NO_IDLE_BASELINE = "no_idle_baseline"  # measured energy without a baseline: no net figure
FLAG_GPU_BY_INDEX = "gpu_matched_by_index"  # the child's GPU could not be matched by UUID or PCI bus id
FLAG_ENERGY_INCOMPLETE = "energy_incomplete"  # a component had no reading: energy_j is unknown
_PHASE_FLAGS_FOR_THE_RUN = (FLAG_SHORT_WINDOW_POLLED, "stale_reading")


@dataclass
class RunMeasurement:
    """What the supervisor knows of one run while it runs; the stored row is built from it at the end."""

    run_id: int
    run: GridRun
    t0: float  # tracker time when the child started
    idle: dict[str, float]  # idle watts per measured component
    meters_info: dict[str, Any]
    child_status: str | None = None  # what the child reported: completed | failed
    child_error: str | None = None
    supervisor_error: str | None = None
    device: str | None = None  # as the child reported it
    child_pid: int | None = None
    server_pid: int | None = None  # the fork server that forked the child, if one did
    train_s: float | None = None
    final: dict[str, Any] = field(default_factory=dict)  # the RunFinished event's fields
    gpus_unused: set[str] = field(default_factory=set)  # metered GPU components the child did not use
    phase_energy: dict[int, dict[str, float | None]] = field(default_factory=dict)
    phase_windows: dict[int, dict[str, WindowResult]] = field(default_factory=dict)
    training_j: float | None = None
    training_unknown: bool = False
    flags: list[str] = field(default_factory=list)
    phase_methods: dict[str, set[str]] = field(default_factory=dict)  # gpu/cpu/dram -> methods its phases used
    child_cpu_s: float | None = None  # the child's and its reaped children's CPU time, as it reported them
    host_start: Any = None  # hostload.Mark when the run's window began
    # What tells a diverged run (greenlab.core.run.divergence): the classes, the validation examples, the
    # last epoch's mean training loss.
    num_classes: int | None = None
    n_val: int | None = None
    last_train_loss: float | None = None
    pauses: PauseWatch = field(default_factory=PauseWatch)  # whether the child was stopped mid-run (pauses)

    def add_phase(self, epoch: int, phase: str, window: WindowResult) -> None:
        """Record a phase's window; one phase without a reading makes the training total unknown. Its flags
        and methods (a short phase measured by polled power) reach the run's row too."""
        for name, energy in window.components.items():
            self.phase_methods.setdefault(_group(name), set()).add(energy.method)
        # What changes how a phase's figure was obtained reaches the run; a short phase's counter and polled
        # disagreeing is the cause of the fallback, not news about the run.
        self.flags.extend(
            flag for flag in window.flags() if flag in _PHASE_FLAGS_FOR_THE_RUN and flag not in self.flags
        )
        joules = window.total_j()
        self.phase_energy.setdefault(epoch, {})[phase] = joules
        self.phase_windows.setdefault(epoch, {})[phase] = window
        if joules is None or self.training_unknown:
            self.training_unknown, self.training_j = True, None
        else:
            self.training_j = (self.training_j or 0.0) + joules

    def epoch_energy(self, epoch: int) -> dict[str, Any]:
        """The epochs-table energy columns of one finished epoch."""
        energies = self.phase_energy.get(epoch, {})
        windows = self.phase_windows.get(epoch, {})
        train_j, eval_j = energies.get("train"), energies.get("eval")
        flags = sorted({f for w in windows.values() for f in w.flags()})
        return {
            "energy_j": None if train_j is None or eval_j is None else train_j + eval_j,
            "train_energy_j": train_j,
            "eval_energy_j": eval_j,
            "train_window_s": windows["train"].seconds if "train" in windows else None,
            "eval_window_s": windows["eval"].seconds if "eval" in windows else None,
            "flags": flags,
        }


def gpus_used(
    device: str,
    gpu_facts: dict[str, dict[str, Any]],
    *,
    cuda_uuid: str | None = None,
    pci_bus_id: str | None = None,
    cuda_index: int | None = None,
) -> tuple[set[str], list[str]]:
    """(metered GPU components the child trained on, flags). Only a CUDA run uses a GPU; its board is
    found by UUID, else PCI bus id — CUDA and NVML number boards differently — and only then by index."""
    if not device.startswith("cuda") or not gpu_facts:
        return set(), []

    def same_uuid(nvml_uuid: Any) -> bool:
        if not (cuda_uuid and nvml_uuid):
            return False
        return str(nvml_uuid).lower().removeprefix("gpu-") == cuda_uuid.lower().removeprefix("gpu-")

    def same_bus(nvml_bus: Any) -> bool:
        return bool(pci_bus_id and nvml_bus) and _bus(str(nvml_bus)) == _bus(str(pci_bus_id))

    for matches in (same_uuid, same_bus):
        key = "uuid" if matches is same_uuid else "pci_bus_id"
        found = {c for c, facts in gpu_facts.items() if matches(facts.get(key))}
        if found:
            return found, []
    index = cuda_index if cuda_index is not None else 0
    by_index = {c for c, facts in gpu_facts.items() if facts.get("cuda_index") == index}
    return by_index, [FLAG_GPU_BY_INDEX]


def _bus(value: str) -> str:
    """'00000000:3B:00.0', '0000:3b:00.0' and '3b:00.0' name the same PCI device."""
    parts = value.strip().lower().split(":")
    if len(parts) == 2:
        parts = ["0", *parts]
    try:
        domain, bus, slot = parts[-3:]
        device, _, function = slot.partition(".")
        return f"{int(domain, 16)}:{int(bus, 16)}:{int(device, 16)}.{function or '0'}"
    except ValueError:
        return value.strip().lower()


def _group(component: str) -> str:
    return "gpu" if component.startswith("gpu") else component


def energy_columns(
    window: WindowResult, idle: dict[str, float], phase_methods: dict[str, set[str]] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """`runs` columns, `energy_components` rows and the run's energy flags, from the run's window and the
    idle baseline.

    Net energy is gross minus idle watts x seconds, signed: a negative net (the component drew less than
    at idle) is kept and flagged `net_below_idle`, since it shows a bad baseline. A measured component
    without a baseline has no net (NULL, flagged `no_idle_baseline`), and then neither has the run. An
    estimate follows the run's own processes and so is net already: its net equals its gross.
    """
    columns: dict[str, Any] = {}
    rows = []
    net_total: float | None = 0.0
    idle_total = 0.0
    run_flags: set[str] = set()
    groups: dict[str, list[Any]] = {"gpu": [], "cpu": [], "dram": []}
    for name, energy in window.components.items():
        flags = list(energy.flags)
        idle_w = idle.get(name) if energy.measured else None
        net: float | None = None
        if energy.energy_j is not None:
            if energy.method == "estimate":
                net = energy.energy_j
            elif idle_w is not None:
                net = energy.energy_j - idle_w * window.seconds
                if net < 0:
                    flags.append(FLAG_NET_BELOW_IDLE)
            elif energy.measured:
                flags.append(FLAG_NO_IDLE_BASELINE)
        if net is None or net_total is None:
            net_total = None
        else:
            net_total += net
        if idle_w is not None:
            idle_total += idle_w
        run_flags.update(flags)
        rows.append(
            {
                "component": name,
                "energy_j": energy.energy_j,
                "method": energy.method,
                "idle_w": idle_w,
                "net_energy_j": net,
                "inputs": energy.inputs,
                "flags": flags,
            }
        )
        groups[_group(name)].append(energy)
    for group, members in groups.items():
        values = [m.energy_j for m in members if m.energy_j is not None]
        columns[f"energy_{group}_j"] = sum(values) if values else None
        # A group's method names every way its figures were obtained, a phase's polled fallback included.
        methods = sorted({m.method for m in members} | ((phase_methods or {}).get(group, set()) if members else set()))
        columns[f"energy_{group}_method"] = "+".join(methods) if methods else "unavailable"
    measured, estimated = window.split_j()
    # A component without a reading leaves the total unknown, never a partial sum labelled as the whole.
    total = measured + estimated if window.total_j() is not None else None
    if total is None:
        run_flags.add(FLAG_ENERGY_INCOMPLETE)
    columns.update(
        energy_j=total,
        energy_kwh=carbon.kwh(total),
        energy_measured_j=measured,
        energy_estimated_j=estimated,
        energy_net_j=net_total,
        idle_w=idle_total if any(r["idle_w"] is not None for r in rows) else None,
    )
    return columns, rows, sorted(run_flags)


def accounting_columns(energy_j: float | None, accounting: dict[str, Any]) -> dict[str, Any]:
    """CO2e and cost of a run's gross energy under the given accounting inputs, with the inputs."""
    return {
        "co2e_g": carbon.co2e_g(energy_j, accounting["carbon_g_per_kwh"], accounting["pue"]),
        "cost": carbon.cost(energy_j, accounting["price_per_kwh"], accounting["pue"]),
        **accounting,
    }
