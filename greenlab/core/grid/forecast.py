"""Before a grid: about how long it will take and how much energy it will use, and where each figure comes from.

Each run that will run (not one already stored, unless forced) is forecast from the store's earlier runs:
  1. **the same work**: completed runs of its conditions (`conditions_key`) and technique — their mean wall
     time and energy;
  2. **scaled**: runs of its model, technique and conditions but for the epochs and the batches per epoch
     (`max_train_batches`, else the dataset's size / `batch_size`) — their training part (`train_s`,
     `energy_training_j`) scaled by epochs × batches per epoch, the rest (start-up, data, compression)
     kept as it was;
  3. **calibrated**: otherwise, the model's FLOPs per sample and the FLOP rate this device reaches training
     it (greenlab.core.train.calibration, a child process), times the samples the run trains and evaluates,
     plus the start-up earlier runs took (and a capacity scan's evaluations for stego with bits = "auto");
     its energy is that time at the mean power of the store's runs, else at the CPU estimate's watts
     (greenlab.core.measure.estimate) for the cores the calibration kept busy. Calibration is on the
     uncompressed model.
The grid adds its idle baseline and its own start-up (the fork server and the warm-up run). CO2e and cost follow the runs' own accounting settings. `forecast` is pure
given the earlier runs and a calibration function; `calibrate_in_child` is the real one. A grid forecast
to take longer than `CONFIRM_ABOVE_S` asks before it starts in the TUI and is said loudly by headless.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from statistics import mean
from typing import Any

from greenlab.core.grid.calibrator import CalibrationSpec, Calibrator, busy
from greenlab.core.grid.queue import GridQueue, plan_queue
from greenlab.core.measure import carbon
from greenlab.core.plan.config import GridRun
from greenlab.core.report.formatting import about_duration, about_energy, mass_co2e, money
from greenlab.core.report.groups import conditions_settings
from greenlab.core.store.database import Store, resolve_path
from greenlab.core.store.rows import RunRow
from greenlab.core.store.schema import SCHEMA_VERSION
from greenlab.core.train import datasets, zoo
from greenlab.core.train.compression.options import MANTISSA_BITS

CONFIRM_ABOVE_S = 24 * 3600.0  # a grid forecast to run longer than a day asks first (TUI), or says so loudly
STARTUP_S = 0.5  # a run's start-up (a fork of the warm fork server, data, model) when no earlier run says
# A grid's own start-up before its first run: the fork server imports torch and an unmeasured warm-up run
# trains a few steps (greenlab.core.run.warmup_main). A calibration child measures the import (its
# `startup_s`); without one, this.
GRID_STARTUP_S = 5.0
WARMUP_S = 1.0  # the warm-up run itself, beyond the import
# Examples in the bundled and generated datasets, before the validation split (imagefolder: unknown).
DATASET_EXAMPLES = {"digits": 1797, "cifar10": 50_000, "fake-text": 1024}
FAKE_EXAMPLES = 512  # torchvision FakeData without train_limit
SCALED_AWAY = ("epochs", "max_train_batches", "train_limit")  # what scaling by work may differ in

HISTORY, SCALED, CALIBRATED, UNKNOWN = "history", "scaled", "calibrated", "unknown"

Calibrate = Callable[[list[CalibrationSpec]], dict[CalibrationSpec, dict[str, Any]]]


@dataclass(frozen=True)
class RunForecast:
    seconds: float | None
    joules: float | None
    source: str  # history | scaled | calibrated | unknown
    earlier: tuple[int, ...] = ()  # ids of the earlier runs it rests on
    why: str = ""  # unknown: why nothing could be said


@dataclass(frozen=True)
class Forecast:
    """A grid's forecast: totals over the runs that will run, and how many rest on each source."""

    runs: int
    skipped: int
    seconds: float | None
    joules: float | None
    co2e_g: float | None
    cost: float | None
    currency: str
    sources: dict[str, int] = field(default_factory=dict)  # source -> runs forecast from it
    earlier: int = 0  # distinct earlier runs the history and scaled parts rest on
    power_from: str = ""  # calibrated energy: "earlier runs" or "the CPU estimate"
    notes: tuple[str, ...] = ()  # why runs are unknown
    busy: str = ""  # the calibration's host was busy: 'forecast taken while the host was busy: ...'
    seconds_by_key: dict[str, float] = field(default_factory=dict)  # each run's own, by run key (the grid ETA)
    skipped_why: tuple[str, ...] = ()  # '3 already stored', '1 already queued in an earlier grid'

    @property
    def too_long(self) -> bool:
        return self.seconds is not None and self.seconds > CONFIRM_ABOVE_S

    @property
    def source_text(self) -> str:
        """'from 24 earlier runs', 'calibrated', '12 from 36 earlier runs, 12 calibrated'."""
        if not self.runs:
            return "nothing to run"
        parts = []
        known = self.sources.get(HISTORY, 0) + self.sources.get(SCALED, 0)
        if known:
            scaled = " (scaled by epochs and batches)" if self.sources.get(SCALED) else ""
            lead = "" if known == self.runs else f"{known} "
            parts.append(f"{lead}from {self.earlier} earlier run{'s' if self.earlier != 1 else ''}{scaled}")
        if self.sources.get(CALIBRATED):
            count = self.sources[CALIBRATED]
            power = f" at the power of {self.power_from}" if self.power_from else ""
            parts.append(("calibrated" if count == self.runs else f"{count} calibrated") + power)
        if self.sources.get(UNKNOWN):
            why = f": {self.notes[0]}" if self.notes else ""
            parts.append(f"{self.sources[UNKNOWN]} unknown{why}")
        return ", ".join(parts)

    def describe(self) -> str:
        """'24 runs · about 1 min 30 s · about 0.9 kJ, 0.1 g CO2e, 0.0001 USD (from 24 earlier runs)'."""
        skipped = ", ".join(self.skipped_why) or f"{self.skipped} already stored"
        if not self.runs:
            return f"nothing to run: {skipped}" if self.skipped else "nothing to run"
        head = f"{self.runs} run{'s' if self.runs != 1 else ''}"
        if self.skipped:
            head += f" ({skipped})"
        unknown = self.sources.get(UNKNOWN, 0)
        some = " at least" if unknown and unknown < self.runs else ""
        parts = [head]
        parts.append(f"about{some} {about_duration(self.seconds)}" if self.seconds is not None else "time unknown")
        if self.joules is not None:
            energy = f"about{some} {about_energy(self.joules)}"
            if self.co2e_g is not None:
                energy += f", {mass_co2e(self.co2e_g)}"
            if self.cost is not None:
                energy += f", {money(self.cost, self.currency)}"
            parts.append(energy)
        else:
            parts.append("energy unknown")
        busy = f"; {self.busy}" if self.busy else ""
        return " · ".join(parts) + f" ({self.source_text}){busy}"

    def against(self, seconds: float, used_j: Iterable[float | None], *, waited_s: float = 0.0) -> str:
        """How far the forecast was off, given the grid's own time (without `waited_s`, spent waiting for
        another grid's host lock) and its runs' energies (None: a run without one; energy is said only when
        some run has one): 'took 1 min 12 s against about 1 min 30 s forecast (-20 %); used 0.8 kJ against
        about 0.9 kJ (-11 %)', or 'waited 21 min for the host; ran 1.8 s against about 3 s forecast (-40 %)'."""
        known = [j for j in used_j if j is not None]
        joules = sum(known) if known else None
        waited = f"waited {about_duration(waited_s)} for the host; ran" if waited_s >= 0.5 else "took"
        parts = [f"{waited} {about_duration(seconds)}"]
        if self.seconds:
            parts[0] += f" against about {about_duration(self.seconds)} forecast ({_off(seconds, self.seconds)})"
        if joules is not None:
            used = f"used {about_energy(joules)}"
            if self.joules:
                used += f" against about {about_energy(self.joules)} ({_off(joules, self.joules)})"
            parts.append(used)
        return "; ".join(parts)


def _off(actual: float, forecast: float) -> str:
    return f"{100 * (actual - forecast) / forecast:+.0f} %"


# -- the work of a run -------------------------------------------------------------------------------------
def _examples(settings: dict[str, Any]) -> tuple[int, int] | None:
    """(training, validation) examples of a run's data, or None where only reading it would tell."""
    dataset = str(settings.get("dataset") or "")
    total = FAKE_EXAMPLES if dataset == "fake" else DATASET_EXAMPLES.get(dataset)
    if dataset == "fake" and settings.get("train_limit"):
        total = int(settings["train_limit"])
    if total is None:
        return None
    validation = max(1, int(round(total * float(settings.get("val_fraction") or 0.2))))
    training = total - validation
    if settings.get("train_limit"):
        training = min(training, int(settings["train_limit"]))
    return training, validation


def batches_per_epoch(settings: dict[str, Any]) -> int | None:
    """Training batches per epoch as the child counts them (drop_last when there is more than a batch),
    capped by max_train_batches; None when the dataset's size is unknown and nothing caps it."""
    size = int(settings.get("batch_size") or 1)
    cap = settings.get("max_train_batches")
    examples = _examples(settings)
    if examples is None:
        return int(cap) if cap else None
    batches = examples[0] // size if examples[0] > size else 1
    return min(batches, int(cap)) if cap else batches


def eval_batches(settings: dict[str, Any]) -> int | None:
    size = int(settings.get("batch_size") or 1)
    cap = settings.get("max_eval_batches")
    examples = _examples(settings)
    if examples is None:
        return int(cap) if cap else None
    batches = math.ceil(examples[1] / size)
    return min(batches, int(cap)) if cap else batches


def _work(settings: dict[str, Any]) -> float | None:
    batches = batches_per_epoch(settings)
    return None if batches is None else float(settings.get("epochs") or 1) * batches


def image_size(run: GridRun) -> int | None:
    """The input resolution the run's child will use (None for a text model)."""
    spec = zoo.MODELS.get(run.model)
    if spec is None or spec.modality != "image":
        return None
    s = run.settings
    return s.image_size or datasets.default_image_size(s.dataset, spec.input_size, spec.min_input_size)


# -- the forecast ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Earlier:
    """A stored run the forecast learns from: its row, and its seconds and joules (both known)."""

    row: RunRow
    seconds: float
    joules: float


def _usable(rows: Iterable[RunRow]) -> list[_Earlier]:
    return [
        _Earlier(r, float(r.duration_s), float(r.energy_j))
        for r in rows
        if r.status in ("completed", "superseded") and r.duration_s and r.energy_j is not None
    ]


def _from_rows(run: GridRun, earlier: list[_Earlier]) -> RunForecast | None:
    """Sources 1 and 2 of the module docstring; None when no earlier run fits."""
    same = [e for e in earlier if e.row.conditions_key == run.conditions_key() and e.row.technique == run.technique]
    if same:
        return RunForecast(
            mean(e.seconds for e in same),
            mean(e.joules for e in same),
            HISTORY,
            tuple(int(e.row.id) for e in same),
        )
    wanted = {**asdict(run.settings)}
    work = _work(wanted)
    key = {k: v for k, v in conditions_settings(RunRow.of(settings=wanted)).items() if k not in SCALED_AWAY}
    scaled: list[tuple[float, float, int]] = []
    for found in earlier:
        row = found.row
        if row.model != run.model or row.technique != run.technique:
            continue
        settings = conditions_settings(row)
        if {k: v for k, v in settings.items() if k not in SCALED_AWAY} != key:
            continue
        old = _work(settings)
        if work is None or old is None:
            same_batches = settings.get("max_train_batches") == wanted.get("max_train_batches")
            if not same_batches:
                continue
            factor = float(wanted.get("epochs") or 1) / float(settings.get("epochs") or 1)
        else:
            factor = work / old
        seconds, joules = found.seconds, found.joules
        train_s = float(row.train_s or seconds)
        train_j = float(row.energy_training_j) if row.energy_training_j is not None else joules
        scaled.append((seconds - train_s + factor * train_s, joules - train_j + factor * train_j, int(row.id)))
    if not scaled:
        return None
    return RunForecast(
        mean(s for s, _j, _i in scaled), mean(j for _s, j, _i in scaled), SCALED, tuple(i for *_x, i in scaled)
    )


def _priced(watts: float, power_from: str, run: GridRun, calibrations: dict[CalibrationSpec, dict[str, Any]]) -> float:
    """The watts a calibrated run is costed at: the store's runs' mean power as it is; the CPU estimate's
    (every core busy) for the share of cores the calibration's steps kept busy, as the estimate prices CPU
    time, not wall time."""
    calibration = calibrations.get(_spec(run) or ("", 0, "", 0, "")) or {}
    cpus = os.cpu_count() or 1
    if power_from != "the CPU estimate" or calibration.get("cores") is None:
        return watts
    return watts * min(max(float(calibration["cores"]), 0.0), cpus) / cpus


def _watts(earlier: list[_Earlier]) -> tuple[float, str]:
    """The power a calibrated run is costed at: the store's runs' mean, else the CPU estimate's watts."""
    if earlier:
        return mean(e.joules / e.seconds for e in earlier), "earlier runs"
    from greenlab.core.measure import estimate

    rule = estimate.cpu_power_rule(estimate.cpu_model_name(), virtual=estimate.virtualization())
    return float(rule["w_per_thread"]) * (os.cpu_count() or 1), "the CPU estimate"


def _calibrated(run: GridRun, calibration: dict[str, Any] | None, startup_s: float, watts: float) -> RunForecast:
    if calibration is None or "error" in calibration:
        why = calibration["error"] if calibration else "no calibration for a text model"
        return RunForecast(None, None, UNKNOWN, why=why)
    settings = asdict(run.settings)
    batches, evaluations = batches_per_epoch(settings), eval_batches(settings)
    if batches is None:
        return RunForecast(None, None, UNKNOWN, why=f"the size of {run.settings.dataset} is unknown")
    per_sample_s = float(calibration["flops_per_sample"]) / float(calibration["flop_per_s"])
    samples = run.settings.epochs * batches * run.settings.batch_size
    # An evaluation pass is a forward pass, about a third of a training step's work.
    eval_samples = (evaluations if evaluations is not None else batches // 4) * run.settings.batch_size
    evaluated = run.settings.epochs * eval_samples
    if "stego" in run.parts and run.technique_settings.get("stego", {}).get("bits") == "auto":
        evaluated += (MANTISSA_BITS + 1) * eval_samples  # the capacity scan evaluates once per bit count
    seconds = startup_s + per_sample_s * (samples + evaluated / 3)
    return RunForecast(seconds, seconds * watts, CALIBRATED)


def grid_startup_s(calibrations: Iterable[dict[str, Any]]) -> float:
    """The grid's start-up before its first run (GRID_STARTUP_S's comment): a calibration child's own."""
    measured = [float(c["startup_s"]) for c in calibrations if c.get("startup_s") is not None]
    return max(measured) + WARMUP_S if measured else GRID_STARTUP_S


def forecast(
    runs: Sequence[GridRun],
    earlier_rows: Iterable[RunRow],
    *,
    stored_keys: Iterable[str] = (),
    queued_keys: Iterable[str] = (),
    force: bool = False,
    calibrate: Calibrate | None = None,
) -> Forecast:
    """The grid's forecast (module docstring) over the runs it will run (greenlab.core.grid.queue: not
    those stored, queued before it or repeated); `calibrate` is called once with every spec that needs it
    (default: `calibrate_in_child`)."""
    return forecast_queue(plan_queue(runs, stored_keys, queued_keys, force=force), earlier_rows, calibrate=calibrate)


def forecast_queue(queue: GridQueue, earlier_rows: Iterable[RunRow], *, calibrate: Calibrate | None = None) -> Forecast:
    """`forecast` of a grid's queue already planned (a session's preview plans it once for both)."""
    todo = queue.to_run
    earlier = _usable(earlier_rows)
    per_run: list[RunForecast | None] = [_from_rows(run, earlier) for run in todo]
    missing = [run for run, found in zip(todo, per_run) if found is None]
    calibrations: dict[CalibrationSpec, dict[str, Any]] = {}
    specs = list(dict.fromkeys(spec for spec in (_spec(run) for run in missing) if spec is not None))
    if specs:
        calibrations = (calibrate or calibrate_in_child)(specs)
    power_from = ""
    if missing:
        startups = [e.seconds - float(e.row.train_s) for e in earlier if e.row.train_s]
        startup_s = mean(startups) if startups else STARTUP_S
        watts, power_from = _watts(earlier)
        per_run = [
            found
            if found is not None
            else _calibrated(
                run,
                calibrations.get(_spec(run) or ("", 0, "", 0, "")),
                startup_s,
                _priced(watts, power_from, run, calibrations),
            )
            for run, found in zip(todo, per_run)
        ]
    results = [found for found in per_run if found is not None]
    sources: dict[str, int] = {}
    for result in results:
        sources[result.source] = sources.get(result.source, 0) + 1
    known = [r for r in results if r.seconds is not None]
    seconds = sum(r.seconds for r in known if r.seconds is not None) if known else None
    joules = sum(r.joules for r in known if r.joules is not None) if known else None
    if seconds is not None and todo:
        idle = todo[0].settings.idle_s
        seconds += idle if todo[0].settings.idle_scope == "grid" else idle * len(todo)
        seconds += grid_startup_s(calibrations.values())
    accounting = todo[0].accounting() if todo else {}
    notes = tuple(dict.fromkeys(f"{r.why}" for r in results if r.source == UNKNOWN and r.why))
    used = [c for spec, c in calibrations.items() if any(_spec(run) == spec for run in missing) and "error" not in c]
    return Forecast(
        runs=len(todo),
        skipped=queue.skipped,
        skipped_why=tuple(queue.skipped_parts()),
        seconds=seconds,
        joules=joules,
        co2e_g=carbon.co2e_g(joules, accounting["carbon_g_per_kwh"], accounting["pue"]) if accounting else None,
        cost=carbon.cost(joules, accounting["price_per_kwh"], accounting["pue"]) if accounting else None,
        currency=str(accounting.get("currency") or ""),
        sources=sources,
        earlier=len({i for r in results for i in r.earlier}),
        power_from=power_from if sources.get(CALIBRATED) else "",
        notes=notes,
        busy=busy_text(used),
        seconds_by_key={
            run.settings_key(): found.seconds
            for run, found in zip(todo, per_run)
            if found is not None and found.seconds is not None
        },
    )


def busy_text(calibrations: Iterable[dict[str, Any]]) -> str:
    """'forecast taken while the host was busy: 1.9 of 2 cores used by other processes', or ''."""
    busiest = max((c for c in calibrations if busy(c)), key=lambda c: float(c["other_cores"]), default=None)
    if busiest is None:
        return ""
    cpus = busiest.get("cpus")
    of = f" of {cpus}" if cpus else ""
    return (
        f"forecast taken while the host was busy: {float(busiest['other_cores']):.1f}{of} cores used by other processes"
    )


def _spec(run: GridRun) -> CalibrationSpec | None:
    size = image_size(run)
    settings = run.settings
    return None if size is None else (run.model, size, settings.device, settings.batch_size, settings.optimizer)


# The calibrations a headless grid (or any caller without a Calibrator of its own) takes: one child at a time.
calibrate_in_child: Calibrate = Calibrator()


def read_history(db: str | None, *, rows: bool = True) -> tuple[list[RunRow], set[str]]:
    """The store's runs (none without `rows`) and its completed run keys, what a forecast and a grid's queue
    go by; reading never creates the store, and never waits for its write lock (it opens it read-only)."""
    if not resolve_path(db).is_file():
        return [], set()
    store = Store.reader(db)
    if store.version < SCHEMA_VERSION:  # an older store's run keys are what its migration recomputes
        store.close()
        store = Store(db)
    try:
        return (store.runs() if rows else []), store.completed_keys()
    finally:
        store.close()


def too_long_text(result: Forecast) -> str:
    """What a face says of a grid forecast to run longer than CONFIRM_ABOVE_S."""
    return (
        f"this grid is forecast to run for about {about_duration(result.seconds)}, longer than "
        f"{about_duration(CONFIRM_ABOVE_S)}"
    )
