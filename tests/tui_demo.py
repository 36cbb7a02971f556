"""Deterministic demo data for screenshots and snapshot tests: a seeded store and a scripted live run.

Nothing here is a measurement. `seed_store` writes fake runs through the ordinary Store methods (the same
calls the supervisor makes), shaped like a GPU study so every column and chart has something to show;
the experiment is named "demo" to keep it apart from real runs. `FakeTracker` and `play_live_run` feed
the live pane the messages a real run would, with a frozen clock, so its pictures never change.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from greenlab.core.grid import grid_events
from greenlab.core.plan.config import GridRun, RunSettings, build_experiments, expand_grid
from greenlab.core.store.database import Store
from greenlab.core.train import child_events

MODELS = {
    "resnet18": (311_000.0, 0.912, 840.0),
    "densenet121": (384_000.0, 0.897, 1010.0),
    "vit_b_16": (978_000.0, 0.941, 2330.0),
}  # baseline joules, accuracy, seconds
TECHNIQUES = {
    "baseline": (1.0, 0.0, 1.0),
    "stego": (0.58, -0.004, 0.61),
    "prune": (0.97, -0.012, 0.99),
    "lowrank": (0.94, -0.021, 0.95),
}  # energy factor, accuracy change, time factor
SETTINGS = RunSettings(dataset="cifar10", epochs=3, batch_size=64, device="cuda:0", pretrained=True, idle_s=5.0)
TECHNIQUE_SETTINGS = {
    "stego": {"bits": 16, "mode": "dtype", "tolerance": 1.0},
    "prune": {"amount": 0.5, "method": "l1-unstructured"},
    "lowrank": {"rank_ratio": 0.5, "energy": None},
}
GPU_SHARE, CPU_SHARE = 0.78, 0.2  # of each run's energy; dram takes the rest


def _meters() -> dict[str, Any]:
    return {
        "components": {
            "gpu0": {
                "method": "counter",
                "name": "NVIDIA H100 80GB HBM3 (demo)",
                "counter": "nvmlDeviceGetTotalEnergyConsumption",
            },
            "cpu": {
                "method": "estimate",
                "formula": "tdp_w / package_threads * cpu_seconds",
                "tdp_w": 205.0,
                "why": "RAPL not readable without root",
            },
            "dram": {"method": "estimate", "formula": "resident_gb * w_per_gb", "w_per_gb": 0.375},
        },
        "fallbacks": {"cpu": "RAPL not readable without root"},
        "idle_w": {"gpu0": 68.0},
        "idle_s": 5.0,
    }


def _trace(rng: random.Random, seconds: float, mean_w: float, points: int = 240) -> list[tuple[float, float]]:
    """A plausible power trace: ramp-up, epochs with evaluation dips, noise."""
    trace = []
    for i in range(points):
        t = seconds * i / (points - 1)
        ramp = min(1.0, t / (seconds * 0.05 + 1e-9))
        epoch_phase = (t / seconds * SETTINGS.epochs) % 1.0
        dip = 0.55 if epoch_phase > 0.9 else 1.0  # evaluation at the end of each epoch
        trace.append((round(t, 2), max(0.0, mean_w * ramp * dip * (1 + 0.06 * math.sin(t / 7) + rng.gauss(0, 0.03)))))
    return trace


def seed_store(path: str | Path) -> list[int]:
    """Write the demo runs into a store at `path` (a new file is best); returns their ids."""
    rng = random.Random(20250601)
    store = Store(path)
    ids = []
    try:
        plan = [(model, technique, 0, "completed") for model in MODELS for technique in TECHNIQUES]
        plan += [("vit_b_16", "prune+stego", 0, "failed"), ("densenet121", "lowrank", 1, "interrupted")]
        for model, technique, repeat, status in plan:
            ids.append(_seed_run(store, rng, model, technique, repeat, status))
    finally:
        store.close()
    return ids


def _seed_run(store: Store, rng: random.Random, model: str, technique: str, repeat: int, status: str) -> int:
    base_j, base_acc, base_s = MODELS[model]
    parts = technique.split("+")
    factor_j = math.prod(TECHNIQUES[p][0] for p in parts if p in TECHNIQUES)
    factor_s = math.prod(TECHNIQUES[p][2] for p in parts if p in TECHNIQUES)
    accuracy = base_acc + sum(TECHNIQUES[p][1] for p in parts if p in TECHNIQUES) + rng.uniform(-0.002, 0.002)
    energy = base_j * factor_j * rng.uniform(0.98, 1.02)
    seconds = base_s * factor_s * rng.uniform(0.98, 1.02)
    epochs_done = SETTINGS.epochs
    if status == "interrupted":
        energy, seconds, epochs_done = energy * 0.4, seconds * 0.4, 1
    if status == "failed":
        energy, seconds, epochs_done = energy * 0.05, seconds * 0.05, 0
    techniques = {p: TECHNIQUE_SETTINGS[p] for p in parts if p in TECHNIQUE_SETTINGS}
    settings = {**asdict(SETTINGS), "techniques": techniques}
    run_id = store.start_run(
        {
            "experiment": "demo",
            "model": model,
            "dataset": SETTINGS.dataset,
            "technique": technique,
            "settings": settings,
            "settings_key": f"demo-{model}-{technique}-{repeat}",
            "seed": 0,
            "repeat": repeat,
            "device": "cuda:0",
            "sampler_hz": 10.0,
            "carbon_g_per_kwh": 475.0,
            "pue": 1.0,
            "currency": "USD",
            "meters": _meters(),
        }
    )
    gpu, cpu = energy * GPU_SHARE, energy * CPU_SHARE
    dram = energy - gpu - cpu
    idle_gpu = 68.0 * seconds
    components = [
        {
            "component": "gpu0",
            "energy_j": gpu,
            "method": "counter",
            "idle_w": 68.0,
            "net_energy_j": gpu - idle_gpu,
            "inputs": {
                "counter_mj_start": 912_345_000,
                "counter_mj_end": 912_345_000 + int(gpu * 1000),
                "polled_j": round(gpu * 0.993, 1),
            },
            "flags": [],
        },
        {
            "component": "cpu",
            "energy_j": cpu,
            "method": "estimate",
            "idle_w": None,
            "net_energy_j": cpu,
            "inputs": {"cpu_seconds": round(cpu / 205.0 * 64, 1), "tdp_w": 205.0, "package_threads": 64},
            "flags": ["estimated_cpu"],
        },
        {
            "component": "dram",
            "energy_j": dram,
            "method": "estimate",
            "idle_w": None,
            "net_energy_j": dram,
            "inputs": {"mean_resident_gb": round(dram / seconds / 0.375, 2), "w_per_gb": 0.375},
            "flags": [],
        },
    ]
    for epoch in range(1, epochs_done + 1):
        share = 1 / SETTINGS.epochs
        store.add_epoch(
            {
                "run_id": run_id,
                "epoch": epoch,
                "train_loss": round(1.9 / (epoch + 0.6) + 0.1, 4),
                "val_accuracy": accuracy - 0.05 * (SETTINGS.epochs - epoch),
                "val_f1": accuracy - 0.05 * (SETTINGS.epochs - epoch) - 0.01,
                "val_loss": round(1.7 / (epoch + 0.8) + 0.2, 4),
                "duration_s": seconds * share,
                "train_s": seconds * share * 0.9,
                "eval_s": seconds * share * 0.1,
                "energy_j": energy * share,
                "train_energy_j": energy * share * 0.92,
                "eval_energy_j": energy * share * 0.08,
            }
        )
    mean_gpu, mean_cpu, mean_dram = gpu / seconds, cpu / seconds, dram / seconds
    rows = []
    for component, mean_w in (("gpu0", mean_gpu), ("cpu", mean_cpu), ("dram", mean_dram)):
        rows.extend((t, component, w) for t, w in _trace(rng, seconds, mean_w))
    store.add_samples(run_id, rows)
    completed = status == "completed"
    store.update_run(
        run_id,
        status=status,
        finished_at="2025-06-01T12:00:00+00:00",
        duration_s=seconds,
        train_s=seconds * 0.9 if completed else None,
        error={
            "failed": "RuntimeError: CUDA out of memory while tracing the pruned graph (demo row)",
            "interrupted": "cancelled by the user",
        }.get(status),
        val_accuracy=accuracy if completed else None,
        val_f1=accuracy - 0.01 if completed else None,
        energy_j=energy,
        energy_kwh=energy / 3.6e6,
        energy_measured_j=gpu,
        energy_estimated_j=cpu + dram,
        energy_training_j=energy * epochs_done / SETTINGS.epochs,
        energy_net_j=energy - idle_gpu,
        idle_w=68.0,
        energy_gpu_j=gpu,
        energy_gpu_method="counter",
        energy_cpu_j=cpu,
        energy_cpu_method="estimate",
        energy_dram_j=dram,
        energy_dram_method="estimate",
        co2e_g=energy / 3.6e6 * 475.0,
        cost=energy / 3.6e6 * 0.30,
        params_total=11_181_642,
        params_nonzero=5_590_821 if "prune" in parts else 11_181_642,
        params_total_before=11_181_642,
        params_nonzero_before=11_181_642,
        flags=[],
        warnings=(["prune: unstructured pruning keeps every matrix its size"] if "prune" in parts else []),
    )
    store.set_components(run_id, components)
    return run_id


class FakeTracker:
    """Answers what the live pane asks of an EnergyTracker, from fixed traces and a settable clock."""

    METHODS = {"gpu0": "counter", "cpu": "estimate", "dram": "estimate"}
    MEAN_W = {"gpu0": 286.0, "cpu": 71.0, "dram": 4.2}

    def __init__(self) -> None:
        self.t = 0.0
        rng = random.Random(7)
        self._traces = {c: _trace(rng, 600.0, w, points=1200) for c, w in self.MEAN_W.items()}

    def components(self) -> list[str]:
        return list(self.METHODS)

    def method(self, component: str) -> str:
        return self.METHODS[component]

    def methods(self) -> dict[str, str]:
        return dict(self.METHODS)

    def running_j(self, since: float) -> dict[str, float]:
        """Trapezoid joules of each trace from `since` to now, as the tracker's readings would give."""
        energy = {}
        for component in self.METHODS:
            points = [(t, w) for t, w in self.history(component) if t >= since]
            energy[component] = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(points, points[1:]))
        return energy

    def now(self) -> float:
        return self.t

    def history(self, component: str) -> list[tuple[float, float]]:
        return [(t, w) for t, w in self._traces[component] if t <= self.t]

    def latest(self) -> dict[str, float]:
        return {c: self.history(c)[-1][1] for c in self.METHODS if self.history(c)}


class FrozenClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def demo_grid() -> list[GridRun]:
    data = {
        "defaults": {"dataset": "cifar10", "epochs": 3, "device": "cuda:0", "idle_s": 5, "order": "as-written"},
        "experiment": [
            {
                "name": "demo",
                "models": ["resnet18", "vit_b_16"],
                "techniques": ["baseline", "stego", "prune"],
                "stego": {"bits": 16, "mode": "dtype"},
            }
        ],
    }
    return expand_grid(build_experiments(data, source="demo"))


async def play_live_run(app: Any, pilot: Any, clock: FrozenClock, seconds: float = 83.0) -> None:
    """Drive the app's presenter through the events of a run in its second epoch, then settle."""
    from greenlab.core.run import supervisor
    from greenlab.tui import messages

    grid = demo_grid()
    tracker = FakeTracker()
    presenter = app.presenter
    presenter.add_grid(99, grid)

    def post(event: Any) -> None:
        app.post_message(messages.GridChanged(presenter.apply(event, grid=99)))

    start = clock.t
    post(grid_events.RunQueued(0, len(grid), grid[0]))
    post(supervisor.RunBegan(16, grid[0], tracker))
    clock.t = start + 150.0  # the first run took 150 s: the grid's ETA counts the runs left at that pace
    post(supervisor.RunStored(16, grid[0], "completed", None, {"energy_j": 86.39 * 3600}))
    await pilot.pause()
    app.clear_notifications()  # the stored run's toast would hide part of the picture
    post(grid_events.RunQueued(1, len(grid), grid[1]))
    post(supervisor.RunBegan(17, grid[1], tracker))
    await pilot.pause()
    tracker.t = seconds
    clock.t = start + 150.0 + seconds
    post(
        supervisor.ChildEvent(
            17,
            child_events.RunStarted(
                device="cuda:0",
                dataset="cifar10",
                n_train=40_000,
                n_val=10_000,
                num_classes=10,
                image_size=224,
                input_description="3x224x224 (CIFAR-10 resized)",
                batches_per_epoch=625,
                epochs=3,
            ),
        )
    )
    post(
        supervisor.ChildEvent(
            17,
            child_events.EpochFinished(
                epoch=1,
                train_loss=0.8123,
                val_accuracy=0.8431,
                val_f1=0.8402,
                val_loss=0.6011,
                train_s=24.0,
                eval_s=3.1,
            ),
        )
    )
    post(supervisor.ChildEvent(17, child_events.PhaseBegan(2, "train")))
    for batch in range(1, 402, 50):  # several batches at once: the newest supersedes the queued ones
        post(supervisor.ChildEvent(17, child_events.BatchFinished(2, batch, 625, 0.52 + 0.001 * (batch % 7))))
    await pilot.pause()
    app.live.redraw(chart=True)  # the chart as it stands once every event is in, whatever the timer drew
    await pilot.pause()


PANES = ("setup", "live", "runs", "detail")


async def show(app: Any, pilot: Any, pane: str, clock: FrozenClock) -> None:
    """Bring the app to `pane` with demo content, ready for a screenshot (the store must be seeded)."""
    await pilot.pause()  # let the first mount finish: TabbedContent applies its initial tab then
    app.sub_title = "store data/runs.db"  # the real path differs per machine and per test
    if pane == "live":
        app.action_show_pane("live")
        await play_live_run(app, pilot, clock)
    elif pane in ("runs", "detail"):
        app.action_show_pane("runs")
        await pilot.pause()
        await app.workers.wait_for_complete()  # the verdicts are judged on a worker thread
        await pilot.pause()
        if pane == "detail":
            app.action_open_detail(5)  # resnet18 · stego in the seeded order
            await pilot.pause()
    else:
        app.action_show_pane("setup")
        await app.workers.wait_for_complete()  # the forecast is made on a worker thread
    await pilot.pause()
    # The cursor blinks; a screenshot taken mid-blink would differ from the next one.
    for widget in app.screen.query("Input"):
        widget.cursor_blink = False
