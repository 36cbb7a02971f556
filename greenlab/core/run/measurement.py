"""A run's measurement while it runs, and the pure rules that turn what its meters measured into its record.

The supervisor fills a RunMeasurement from the child's events (each epoch an EpochRecord, from
`epoch_record`; the model's figures from `model_values`) and, when the run ends, hands `run_record` the
facts of its end (a RunEnd: the run's window, its outcome, the host's load); `run_record` returns the run's
RunRecord (greenlab.core.store.record), everything stored of it, whichever driver ran it. `energy_columns`
turns the run's window and the idle baseline into the `runs` energy columns and its components; `gpus_used`
decides which metered GPU the child really trained on, by UUID only: a board it cannot match leaves the
run's GPU energy unknown (`gpu_unmatched`), never another board's; `input_bound` says when the training
loop waited for data more than it computed. Nothing here reads a meter, talks to a process or writes the
store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from greenlab.core.measure import carbon, hostload
from greenlab.core.measure.meter import ComponentEnergy
from greenlab.core.measure.nvml import GRACE_HOPPER_SCOPE
from greenlab.core.measure.tracker import FLAG_SHORT_WINDOW_POLLED, FLAG_UNCERTAIN, WindowResult
from greenlab.core.plan.config import GridRun
from greenlab.core.run import divergence, pauses
from greenlab.core.run.pauses import PauseWatch
from greenlab.core.run.sharing import FLAG_GPU_SHARED, describe
from greenlab.core.store.record import ComponentRecord, EpochRecord, RunRecord, SampleRecord
from greenlab.core.store.schema import RUN_COLUMNS
from greenlab.core.train import child_events

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
    """What the supervisor knows of one run while it runs, the child's events applied by the methods named
    for them; the run's RunRecord is built from it at the end (`run_record`)."""

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
    # The record so far: the row's first values, the columns set since, the epochs, samples and capacity curve.
    start: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    epochs: list[EpochRecord] = field(default_factory=list)
    samples: list[SampleRecord] = field(default_factory=list)
    capacity: list[tuple[int, float]] = field(default_factory=list)

    def started(self, event: child_events.RunStarted) -> None:
        """The child said where it trains: the metered GPUs that are the run's (by UUID), its data's facts."""
        self.device = self.values["device"] = event.device
        self.num_classes, self.n_val = event.num_classes, event.n_val
        if event.input_pipeline is not None:
            self.meters_info["input_pipeline"] = event.input_pipeline
        gpu_facts = self._gpu_facts()
        used, flags = gpus_used(event.device, gpu_facts, cuda_uuid=event.cuda_uuid)
        self.gpus_unused = set(gpu_facts) - used
        self.gpu_unmatched = FLAG_GPU_UNMATCHED in flags
        self.flags.extend(flags)
        for component in used & set(gpu_facts):  # how the child's CUDA named the board, beside NVML's facts
            gpu_facts[component].update(cuda_index=event.cuda_index, cuda_uuid=event.cuda_uuid)

    def never_placed(self, metered_gpus: list[str]) -> None:
        """The child never said where it trained: no GPU did the run's work (a Grace Hopper module's CPU did)."""
        used, _flags = gpus_used("cpu", self._gpu_facts())
        self.gpus_unused = set(metered_gpus) - used

    def _gpu_facts(self) -> dict[str, dict[str, Any]]:
        return {c: facts for c, facts in self.meters_info["components"].items() if c.startswith("gpu")}

    def prepared(self, event: child_events.ModelPrepared) -> dict[str, Any]:
        """The model as compressed: its columns (returned, for the row meanwhile), notes and capacity curve."""
        self.warnings = list(event.warnings)
        self.capacity = capacity_curve(event)
        values = model_values(event)
        self.values.update(values)
        return values

    def epoch_finished(self, event: child_events.EpochFinished) -> EpochRecord:
        """An epoch's record, with its phases' energy; its loss and wait for data are kept for the run's."""
        self.last_train_loss = event.train_loss
        self.add_data_wait(event.train_s, event.train_data_wait_s)
        finished = epoch_record(event, self.epoch_energy(event.epoch))
        self.epochs.append(finished)
        return finished

    def completed(self, event: child_events.RunFinished) -> None:
        """The child finished its training and said so, with its final figures."""
        self.child_status, self.train_s, self.final = "completed", event.train_s, asdict(event)

    def failed(self, event: child_events.RunFailed) -> None:
        """A user's mistake is fully told by its message; an unexpected failure keeps its traceback, after a
        first line that faces show on their own."""
        error = event.error if event.user_error else f"{event.kind}: {event.error}"
        if event.traceback and not event.user_error:
            error += "\n\n" + event.traceback.rstrip()
        self.child_status, self.child_error = "failed", error

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
        """The energy figures of one finished epoch (EpochRecord's energy fields), from its phases' windows."""
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
            "flags": tuple(flags),
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


_MODEL_STATS = ("params_total", "params_nonzero", "model_bytes", "flops_step")


def model_values(event: child_events.ModelPrepared) -> dict[str, Any]:
    """The `runs` columns of the model as the child prepared it: its size and work after compression and
    before, the compression's report and notes, and the columns the technique reported."""
    return {
        **{k: event.after.get(k) for k in _MODEL_STATS},
        **{f"{k}_before": event.before.get(k) for k in _MODEL_STATS},
        "compression": event.report,
        "warnings": event.warnings,
        **{k: v for k, v in event.columns.items() if k in RUN_COLUMNS},
    }


def capacity_curve(event: child_events.ModelPrepared) -> list[tuple[int, float]]:
    """The capacity scan's (bits overwritten, validation accuracy) points, if the technique made one."""
    return [(int(bits), float(accuracy)) for bits, accuracy in event.capacity_curve or []]


def epoch_record(event: child_events.EpochFinished, energy: dict[str, Any]) -> EpochRecord:
    """One epoch's row: what the child reported, with its phases' energy (RunMeasurement.epoch_energy)."""
    return EpochRecord(
        epoch=event.epoch,
        train_loss=event.train_loss,
        val_accuracy=event.val_accuracy,
        val_f1=event.val_f1,
        val_loss=event.val_loss,
        duration_s=event.duration_s,
        train_s=event.train_s,
        eval_s=event.eval_s,
        train_data_wait_s=event.train_data_wait_s,
        eval_data_wait_s=event.eval_data_wait_s,
        **energy,
    )


def why_diverged(measured: RunMeasurement) -> str | None:
    """Why a completed run diverged (greenlab.core.run.divergence), from what its child reported."""
    settings = measured.run.settings
    evaluated = measured.n_val
    if evaluated is not None and settings.max_eval_batches:
        evaluated = min(evaluated, settings.max_eval_batches * settings.batch_size)
    return divergence.diverged(
        last_loss=measured.last_train_loss,
        accuracy=measured.final.get("val_accuracy"),
        num_classes=measured.num_classes,
        evaluated=evaluated,
        dataset=settings.dataset,
    )


@dataclass(frozen=True)
class RunEnd:
    """What the supervisor saw as a run ended, for `run_record`: its outcome, its window (as the run's:
    RunMeasurement.view), the sampler's cost in CPU seconds, and what the host and the run's boards did."""

    status: str
    error: str | None
    finished_at: str
    window: WindowResult
    temperature_end_c: dict[str, float] = field(default_factory=dict)
    sampler_cpu_s: float = 0.0
    samples_dropped: int = 0
    errors: tuple[str, ...] = ()  # the meters' and the faces' failures: flags, after the others
    host_load: dict[str, Any] | None = None  # what others used of the host meanwhile (hostload.others)
    paused: dict[str, Any] | None = None  # pauses.PauseWatch.verdict()
    diverged: str | None = None  # why_diverged, for a completed run
    gpu_utilisation: dict[str, Any] = field(default_factory=dict)  # the run's boards' utilisation, summarised
    gpu_processes: dict[str, Any] = field(default_factory=dict)  # other processes seen on the run's boards


def run_record(measured: RunMeasurement, end: RunEnd) -> RunRecord:
    """The run's whole record, from its measurement and its end: its energy and accounting columns, the
    meters' account of how each figure was obtained, its flags and notes."""
    unused = measured.gpus_unused
    columns, components, energy_flags = energy_columns(end.window, measured.idle, measured.phase_methods)
    flags = set(measured.flags)
    meters = {
        **measured.meters_info,
        "idle_w": {c: w for c, w in measured.idle.items() if c not in unused},
        "temperature_end_c": end.temperature_end_c,
        "components": {c: facts for c, facts in measured.meters_info["components"].items() if c not in unused},
    }
    if end.diverged:
        flags.add(divergence.FLAG_DIVERGED)
    if end.paused:
        flags.add(pauses.FLAG_PAUSED)
        meters["paused"] = end.paused
    if end.host_load is not None:
        meters["host_load"] = end.host_load
        if hostload.busy(end.host_load):
            flags.add(hostload.FLAG_HOST_BUSY)
    if unused:
        meters["gpus_not_used"] = {
            "components": sorted(unused),
            "why": f"the run trained on {measured.device or 'another device'}"
            + (" whose UUID matches none of them" if measured.gpu_unmatched else ""),
        }
    notes = _sharing_notes(end, meters)
    if notes:
        flags.add(FLAG_GPU_SHARED)
    bound = input_bound(measured.data_wait_s, measured.epochs_train_s)
    if bound:
        flags.add(FLAG_INPUT_BOUND)
        notes.append(bound)
    values = {
        **measured.values,
        "status": end.status,
        "error": end.error,
        "finished_at": end.finished_at,
        "duration_s": end.window.seconds,
        "train_s": measured.train_s,
        "data_wait_s": round(measured.data_wait_s, 4) if measured.epochs_train_s else None,
        "energy_training_j": measured.training_j,
        "val_accuracy": measured.final.get("val_accuracy"),
        "val_f1": measured.final.get("val_f1"),
        **columns,
        **accounting_columns(columns["energy_j"], measured.run.accounting()),
        "sampler_cpu_s": round(end.sampler_cpu_s, 4),
        "samples_dropped": end.samples_dropped,
        "meters": meters,
    }
    if notes:
        values["warnings"] = [*measured.warnings, *notes]
    return RunRecord(
        start=measured.start,
        values=values,
        epochs=tuple(measured.epochs),
        samples=tuple(s for s in measured.samples if s.component not in unused),
        components=tuple(ComponentRecord(**{**row, "flags": tuple(row["flags"])}) for row in components),
        capacity=tuple(measured.capacity),
        flags=(*sorted({*energy_flags, *flags}), *end.errors),
        dropped=tuple(sorted(unused)),
    )


def _sharing_notes(end: RunEnd, meters: dict[str, Any]) -> list[str]:
    """The run's boards as watched: their utilisation and the other processes on them (`meters`), and the
    notes for the run's warnings (flag `gpu_shared`)."""
    if end.gpu_utilisation:
        meters["gpu_utilisation"] = end.gpu_utilisation
    if not end.gpu_processes:
        return []
    meters["gpu_processes"] = end.gpu_processes
    return [
        f"{component} was shared: {describe(seen['processes'])} computed on it during the run; their work is "
        "in the run's GPU energy (flag gpu_shared): rerun on a GPU of its own"
        for component, seen in end.gpu_processes.items()
    ]
