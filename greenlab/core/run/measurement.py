"""A run's record while it runs, and the pure rules that turn its energy windows into stored figures.

The supervisor fills a RunMeasurement from the child's events; `energy_columns` turns the run's window and the
idle baseline into the `runs` columns and `energy_components` rows; `gpus_used` decides which metered GPU
the child really trained on, by UUID only: a board it cannot match leaves the run's GPU energy unknown
(`gpu_unmatched`), never another board's; `input_bound` says when the training loop waited for data
more than it computed. Nothing here reads a meter, talks to a process or writes the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from greenlab.core.measure import carbon
from greenlab.core.measure.meter import ComponentEnergy
from greenlab.core.measure.nvml import GRACE_HOPPER_SCOPE
from greenlab.core.measure.tracker import FLAG_SHORT_WINDOW_POLLED, FLAG_UNCERTAIN, WindowResult
from greenlab.core.plan.config import GridRun
from greenlab.core.run.pauses import PauseWatch

FLAG_NET_BELOW_IDLE = "net_below_idle"  # a component drew less than its idle baseline: a bad baseline
FLAG_NO_IDLE_BASELINE = "no_idle_baseline"  # measured energy without a baseline: no net figure
FLAG_GPU_UNMATCHED = "gpu_unmatched"  # a CUDA run whose board no metered GPU's UUID matches: GPU energy unknown
FLAG_MIG_WHOLE_GPU = "mig_whole_gpu"  # a MIG instance: the figure is the whole GPU's, other instances' work included
FLAG_GRACE_HOPPER = "grace_hopper_module"  # the GPU figure is a GH200 module's: Grace CPU and memory included
FLAG_ENERGY_INCOMPLETE = "energy_incomplete"  # a component had no reading: energy_j is unknown
FLAG_INPUT_BOUND = "input_bound"  # the training loop waited for data more than INPUT_BOUND_SHARE of its time
INPUT_BOUND_SHARE = 0.20
# The component that stands for a CUDA run's board when no metered GPU matched it: no reading, so the
# run's GPU energy, and its total, are unknown rather than another board's or a partial sum.
UNMATCHED_GPU = "gpu"
_PHASE_FLAGS_FOR_THE_RUN = (FLAG_SHORT_WINDOW_POLLED, "stale_reading", FLAG_UNCERTAIN, FLAG_GPU_UNMATCHED)


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
    gpu_unmatched: bool = False  # a CUDA run whose board no metered GPU matched: its GPU energy is unknown
    gpu_watch: Any = None  # greenlab.core.run.sharing.GpuWatch: who else computed on the run's board
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
    warnings: list[str] = field(default_factory=list)  # the run's notes, as ModelPrepared stored them
    data_wait_s: float = 0.0  # the training phases' wait for data, summed over the epochs
    epochs_train_s: float = 0.0  # the training phases' time, summed over the epochs
    pauses: PauseWatch = field(default_factory=PauseWatch)  # whether the child was stopped mid-run (pauses)

    def view(self, window: WindowResult) -> WindowResult:
        """A window as the run's: without the metered GPUs it did not use, and with an unknown GPU where its
        own board could not be matched (so the window's total is unknown, never a partial sum)."""
        mine = window.without(self.gpus_unused)
        if self.gpu_unmatched:
            mine.components[UNMATCHED_GPU] = ComponentEnergy(
                UNMATCHED_GPU, None, "unavailable", {}, (FLAG_GPU_UNMATCHED,)
            )
        return mine

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
            "train_uncertainty_j": windows["train"].uncertainty_j() if "train" in windows else None,
            "eval_uncertainty_j": windows["eval"].uncertainty_j() if "eval" in windows else None,
            "flags": flags,
        }

    def add_data_wait(self, train_s: float, data_wait_s: float | None) -> None:
        """One epoch's training time and its wait for data (None from a child that did not time it)."""
        if data_wait_s is not None:
            self.data_wait_s += data_wait_s
            self.epochs_train_s += train_s


def input_bound(data_wait_s: float, train_s: float) -> str | None:
    """The note of an input-bound run, or None: its training loop waited for data more than
    INPUT_BOUND_SHARE of its training time, so its energy measures data loading and an idle device as much
    as the model and its compression."""
    if train_s <= 0 or data_wait_s <= INPUT_BOUND_SHARE * train_s:
        return None
    return (
        f"input-bound: the training loop waited {data_wait_s:.1f} s for data in {train_s:.1f} s of training "
        f"({data_wait_s / train_s:.0%}); its energy measures data loading as much as the model. Raise "
        'num_workers (or leave it "auto" on a GPU), lower image_size, or cache the dataset nearer '
        "(flag input_bound)"
    )


def gpus_used(
    device: str, gpu_facts: dict[str, dict[str, Any]], *, cuda_uuid: str | None = None
) -> tuple[set[str], list[str]]:
    """(metered GPU components that are the run's, flags).

    A CUDA run's board is the metered GPU whose UUID is the one its child reported, or whose MIG instances
    include it (flag `mig_whole_gpu`: the counter is the whole GPU's). Nothing else is trusted: CUDA and
    NVML number boards differently (CUDA puts the fastest first by default; a container may show NVML
    every board and CUDA one), so with no match the run's GPU energy is unknown (flag `gpu_unmatched`),
    never another board's. A Grace Hopper module's counter covers the CPU too, so it stays the run's
    even when the run trained on the CPU (flag `grace_hopper_module`).
    """
    modules = {c for c, facts in gpu_facts.items() if facts.get("scope") == GRACE_HOPPER_SCOPE}
    if not device.startswith("cuda") or not gpu_facts:
        return modules, [FLAG_GRACE_HOPPER] if modules else []
    wanted = _uuid_hex(cuda_uuid)
    for component, facts in gpu_facts.items():
        if not wanted:
            break
        flags = []
        if _uuid_hex(facts.get("uuid")) != wanted:
            if wanted not in {_uuid_hex(u) for u in facts.get("mig_instances") or []}:
                continue
            flags.append(FLAG_MIG_WHOLE_GPU)
        if component in modules:
            flags.append(FLAG_GRACE_HOPPER)
        return {component}, flags
    return set(), [FLAG_GPU_UNMATCHED]


def _uuid_hex(value: Any) -> str:
    """'GPU-8a0b…', 'MIG-8a0b…' and torch's bare '8a0b…' name one device: compare the hex digits only."""
    if not value:
        return ""
    text = str(value).strip().lower()
    for prefix in ("gpu-", "mig-"):
        text = text.removeprefix(prefix)
    return "".join(ch for ch in text if ch in "0123456789abcdef")


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
