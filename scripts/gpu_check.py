"""The check for the day a GPU is lent: one run of under 8 minutes that says whether GreenLab measures it right.

On one CUDA device, in order (durations at --scale 1):
1. identity: torch's UUID for the device must be an NVML board's (GreenLab selects boards by UUID only);
   the board's NVML index, CUDA_DEVICE_ORDER and what is known of it are recorded;
2. 30 s idle;
3. 60 s of steady training load (torchvision's resnet18, random weights, on random 224 px batches): the
   energy counter against integrated instant power (NVML_FI_DEV_POWER_INSTANT; the 1 s average where the
   driver lacks it). They must agree within 5 %, or the check fails;
4. 20 cycles of 0.5 s load / 0.5 s idle: the counter, instant power and the averaged reading over a load
   that changes faster than the average, and how far nvmlDeviceGetPowerUsage lags the instant field;
5. windows of 0.1, 0.3, 1 and 3 s under load, 5 of each: the counter's quantisation against integrated
   instant power, beside the uncertainty GreenLab states for such a window (± one 100 ms update);
6. a real 2-run GreenLab grid (baseline and stego, one epoch) through the fork server, and its report,
   with one line per technique against the study's claim.

Beside the counter, a thread samples nvmlDeviceGetPowerUsage and the instant field at 50 Hz for the
whole check; CUDA is synchronised at every window's edges. Everything is written under --out:
results.json (every figure), samples.csv, windows.csv, summary.md (the basis of docs/gpu-results.md),
grid/ (the experiments file, runs.db, the headless log, report.md and report.json).

Exit status: 0 when every check passed; 1 when one failed (each says why: the steady-load counter and
integrated power differ by more than 5 %, torch's UUID is no NVML board's, or the grid failed); 2 when
there is no CUDA GPU, no torch or no NVML (one line says which). `--scale` shortens every phase (the
CPU test runs it at 0.01 against a fake NVML); figures from a scaled run are not results.

    python scripts/gpu_check.py [--device 0] [--out gpu-check] [--scale 1] [--no-grid]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from greenlab.core.measure.nvml import COUNTER_UPDATE_S, discover_nvml  # noqa: E402 - after the sys.path line that lets the script run from a checkout
from greenlab.core.run.measurement import gpus_used  # noqa: E402 - after the sys.path line, as above

SAMPLE_HZ = 50.0
AGREEMENT_LIMIT = 0.05  # steady load: counter vs integrated instant power
IDLE_S, STEADY_S, WARMUP_S = 30.0, 60.0, 10.0
CYCLES, CYCLE_ON_S, CYCLE_OFF_S = 20, 0.5, 0.5
WINDOWS_S, WINDOW_REPEATS = (0.1, 0.3, 1.0, 3.0), 5
# The study's claims (Mei & Stamp 2025), per technique, for the grid's lines.
CLAIMS = {
    "stego": "saves: major energy benefits in almost every case",
    "prune": "no significant improvement in energy",
    "lowrank": "no significant improvement in energy",
}


class Sampler:
    """Samples one board at SAMPLE_HZ on a thread: the counter (J since the meter opened), the averaged
    reading and the instant field (W), tagged with the phase the main thread is in."""

    def __init__(self, meter: Any, component: str, hz: float = SAMPLE_HZ) -> None:
        self.meter, self.component, self.period = meter, component, 1.0 / hz
        self.rows: list[tuple[float, str, float | None, float | None, float | None]] = []
        self.phase = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-check-sampler", daemon=True)

    def read(self) -> tuple[float, str, float | None, float | None, float | None]:
        row = (
            time.monotonic(),
            self.phase,
            self.meter.energy_j().get(self.component),
            self.meter.power_usage_w().get(self.component),
            self.meter.instant_power_w().get(self.component),
        )
        self.rows.append(row)
        return row

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.read()
            next_at += self.period
            # A fixed grid keeps the rate whatever a read costs; a late tick is skipped, never bunched.
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at, delay = time.monotonic(), 0.0
            self._stop.wait(delay)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def integrate(rows: list[tuple[Any, ...]], column: int, t0: float, t1: float) -> float | None:
    """Trapezoid integral of a power column (W) from t0 to t1, edges interpolated; None without samples."""
    points = [(r[0], r[column]) for r in rows if r[column] is not None]
    if len(points) < 2 or t1 <= t0:
        return None
    inside = [(t, w) for t, w in points if t0 < t < t1]
    before = [p for p in points if p[0] <= t0][-1:] or [points[0]]
    after = [p for p in points if p[0] >= t1][:1] or [points[-1]]
    edge = [(t0, _at(before[0], inside[0] if inside else after[0], t0)), *inside]
    edge.append((t1, _at(inside[-1] if inside else before[0], after[0], t1)))
    return sum((tb - ta) * (wa + wb) / 2 for (ta, wa), (tb, wb) in zip(edge, edge[1:]))


def _at(a: tuple[float, float], b: tuple[float, float], t: float) -> float:
    if b[0] == a[0]:
        return a[1]
    return a[1] + (b[1] - a[1]) * (t - a[0]) / (b[0] - a[0])


def compute_device(torch: Any, index: int) -> Any:
    """The device the load runs on (the CPU test swaps in the CPU)."""
    return torch.device("cuda", index)


class Load:
    """Training steps of a model on random batches held on the device: a steady, realistic GPU load."""

    def __init__(self, torch: Any, device: Any, model: str, batch: int, image_size: int) -> None:
        from greenlab.core.train import zoo

        self.torch, self.device = torch, device
        self.model = zoo.build_model(model, 10, pretrained=False).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.x = torch.randn(batch, 3, image_size, image_size, device=device)
        self.y = torch.randint(0, 10, (batch,), device=device)
        self.steps = 0

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        self.steps += 1

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.step()
            self.sync()

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def window(sampler: Sampler, load: Load | None, seconds: float) -> dict[str, Any]:
    """One measured window: fresh counter reads at edges taken after a synchronise, load (or idle) between."""
    if load is not None:
        load.sync()
    start = sampler.read()
    if load is not None:
        load.run_for(seconds)
    else:
        time.sleep(seconds)
    end = sampler.read()
    t0, t1 = start[0], end[0]
    counter = end[2] - start[2] if start[2] is not None and end[2] is not None else None
    return {
        "seconds": t1 - t0,
        "counter_j": counter,
        "instant_j": integrate(sampler.rows, 4, t0, t1),
        "usage_j": integrate(sampler.rows, 3, t0, t1),
        "t0": t0,
        "t1": t1,
    }


def relative(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b - 1


def usage_lag_s(rows: list[tuple[Any, ...]], t0: float, t1: float, period: float) -> float | None:
    """How far nvmlDeviceGetPowerUsage trails the instant field over [t0, t1]: the shift (up to 1.5 s) that
    best lines the two series up."""
    series = [(r[0], r[3], r[4]) for r in rows if t0 <= r[0] <= t1 and r[3] is not None and r[4] is not None]
    if len(series) < 10:
        return None
    usage = [u for _, u, _ in series]
    instant = [i for _, _, i in series]
    best: tuple[float, int] | None = None
    for shift in range(min(len(series) // 2, int(1.5 / period) + 1)):
        pairs = list(zip(usage[shift:], instant[: len(instant) - shift]))
        error = sum((u - i) ** 2 for u, i in pairs) / len(pairs)
        if best is None or error < best[0]:
            best = (error, shift)
    return None if best is None else best[1] * period


def counter_update_s(rows: list[tuple[Any, ...]], phase: str) -> float | None:
    """The median time between changes of the counter's value in a phase (its update period as seen)."""
    changes, last = [], None
    for t, row_phase, counter, _u, _i in rows:
        if row_phase != phase or counter is None:
            continue
        if last is not None and counter != last[1]:
            changes.append(t)
        last = (t, counter)
    gaps = [b - a for a, b in zip(changes, changes[1:])]
    return statistics.median(gaps) if gaps else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--device", type=int, default=0, help="CUDA device index as torch numbers it (default 0)")
    p.add_argument("--out", default="gpu-check", help="folder for every result file (default gpu-check)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every phase's duration (tests: 0.01)")
    p.add_argument("--model", default="resnet18", help="the load's model (default resnet18)")
    p.add_argument("--batch", type=int, default=64, help="the load's batch size (default 64)")
    p.add_argument("--image-size", type=int, default=224, help="the load's image size (default 224)")
    p.add_argument("--no-grid", action="store_true", help="skip the 2-run GreenLab grid")
    p.add_argument("--grid-device", help="device of the grid's runs (default cuda:DEVICE)")
    p.add_argument("--grid-model", default="resnet18", help="model of the grid (default resnet18)")
    p.add_argument("--grid-dataset", default="fake", help='dataset of the grid (default "fake": offline)')
    p.add_argument("--grid-batches", type=int, default=40, help="training batches of the grid's one epoch")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_check: torch is not installed; this check needs torch with CUDA and an NVIDIA GPU", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU available to torch (no NVIDIA GPU or driver on this machine); nothing to measure",
            file=sys.stderr,
        )
        return 2
    if not 0 <= args.device < torch.cuda.device_count():
        print(
            f"gpu_check: CUDA device {args.device} does not exist ({torch.cuda.device_count()} visible)",
            file=sys.stderr,
        )
        return 2
    meter, reason = discover_nvml()
    if meter is None:
        print(f"gpu_check: no NVML: {reason}", file=sys.stderr)
        return 2
    try:
        return run_check(torch, meter, args)
    finally:
        meter.close()


def run_check(torch: Any, meter: Any, args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "scale": args.scale,
        "host": platform.node(),
        "torch": torch.__version__,
        "cuda_device": args.device,
        "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "nvml_skipped": meter.skipped,
    }

    # 1. identity: the board is found by UUID, as GreenLab finds a run's board.
    props = torch.cuda.get_device_properties(args.device)
    torch_uuid = str(getattr(props, "uuid", "") or "")
    facts = meter.info()
    used, flags = gpus_used(f"cuda:{args.device}", facts, cuda_uuid=torch_uuid)
    results["identity"] = {"torch_uuid": torch_uuid, "torch_name": getattr(props, "name", None), "flags": flags}
    if not used:
        failures.append(f"torch's UUID {torch_uuid!r} for cuda:{args.device} is no NVML board's ({flags})")
        return finish(out, results, failures)
    (component,) = used
    board = facts[component]
    results["gpu"] = board
    results["identity"].update(
        nvml_uuid=board.get("uuid"),
        nvml_index=board.get("nvml_index"),
        index_agrees=board.get("nvml_index") == args.device,
    )
    print(f"GPU         {board.get('name')} ({board.get('uuid')}), driver {board.get('driver_version')}")
    print(f"power       {board.get('power_reading')}")
    print(f"identity    torch and NVML agree on the UUID; NVML index {board.get('nvml_index')} for cuda:{args.device}")
    results["fp32_precision_default"] = {
        "matmul": getattr(torch.backends.cuda.matmul, "fp32_precision", None),
        "conv": getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None),
    }

    device = compute_device(torch, args.device)
    sampler = Sampler(meter, component)
    sampler.start()
    try:
        # 2. idle
        sampler.phase = "idle"
        idle = window(sampler, None, IDLE_S * args.scale)
        results["idle"] = {**idle, "counter_w": _watts(idle["counter_j"], idle["seconds"])}
        print(f"idle        {_fmt(results['idle']['counter_w'], 'W')} (counter, {idle['seconds']:.1f} s)")

        # 3. steady load, after a warm-up outside the window (allocation, cuDNN autotuning)
        load = Load(torch, device, args.model, args.batch, args.image_size)
        sampler.phase = "warmup"
        load.run_for(WARMUP_S * args.scale)
        sampler.phase = "steady"
        steps = load.steps
        steady = window(sampler, load, STEADY_S * args.scale)
        power_column = "instant_j" if steady["instant_j"] is not None else "usage_j"
        difference = relative(steady[power_column], steady["counter_j"])
        results["steady"] = {
            **steady,
            "steps": load.steps - steps,
            "counter_w": _watts(steady["counter_j"], steady["seconds"]),
            "compared_with": power_column,
            "difference": difference,
            "counter_update_s_seen": counter_update_s(sampler.rows, "steady"),
        }
        print(
            f"steady      counter {_fmt(steady['counter_j'], 'J')}, {power_column.replace('_j', '')} power "
            f"{_fmt(steady[power_column], 'J')} ({_pct(difference)}), {_fmt(results['steady']['counter_w'], 'W')}"
        )
        if difference is None or abs(difference) > AGREEMENT_LIMIT:
            failures.append(
                f"steady load: the counter and integrated {power_column.removesuffix('_j')} power differ by "
                f"{_pct(difference)} (limit {AGREEMENT_LIMIT:.0%})"
            )

        # 4. on/off cycles
        sampler.phase = "cycles"
        start = sampler.read()[0]
        cycles = []
        for _ in range(CYCLES):
            on = window(sampler, load, CYCLE_ON_S * args.scale)
            off = window(sampler, None, CYCLE_OFF_S * args.scale)
            cycles.append({"on": on, "off": off})
        end = sampler.read()[0]
        block = {
            "counter_j": sum((c[s]["counter_j"] or 0.0) for c in cycles for s in ("on", "off")),
            "instant_j": integrate(sampler.rows, 4, start, end),
            "usage_j": integrate(sampler.rows, 3, start, end),
        }
        results["cycles"] = {
            **block,
            "instant_vs_counter": relative(block["instant_j"], block["counter_j"]),
            "usage_vs_counter": relative(block["usage_j"], block["counter_j"]),
            "usage_lag_s": usage_lag_s(sampler.rows, start, end, sampler.period),
        }
        print(
            f"cycles      instant {_pct(results['cycles']['instant_vs_counter'])}, average "
            f"{_pct(results['cycles']['usage_vs_counter'])} of the counter; the average lags "
            f"{_fmt(results['cycles']['usage_lag_s'], 's', 2)}"
        )

        # 5. short windows under load
        sampler.phase = "windows"
        windows = []
        for seconds in WINDOWS_S:
            for repeat in range(WINDOW_REPEATS):
                w = window(sampler, load, seconds * args.scale)
                windows.append(
                    {
                        "length_s": seconds * args.scale,
                        "repeat": repeat,
                        **w,
                        "counter_vs_instant": relative(w["counter_j"], w["instant_j"]),
                        "stated_uncertainty": COUNTER_UPDATE_S / w["seconds"] if w["seconds"] else None,
                    }
                )
        results["windows"] = _window_summary(windows)
        for length, summary in results["windows"].items():
            print(
                f"window {length:>5} counter vs instant: worst {_pct(summary['worst'])}, stated "
                f"{_within(summary['stated_uncertainty'])}"
            )
    finally:
        sampler.stop()
    _write_samples(out, sampler)
    _write_windows(out, windows)

    # 6. the grid
    if not args.no_grid:
        results["grid"] = run_grid(out / "grid", args)
        if results["grid"]["exit_code"] != 0:
            failures.append(f"the grid exited with {results['grid']['exit_code']} (see grid/headless.log)")
    return finish(out, results, failures)


def _window_summary(windows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary = {}
    for length in sorted({w["length_s"] for w in windows}):
        mine = [w for w in windows if w["length_s"] == length]
        errors = [w["counter_vs_instant"] for w in mine if w["counter_vs_instant"] is not None]
        summary[f"{length:g}s"] = {
            "n": len(mine),
            "zero_counter": sum(1 for w in mine if not w["counter_j"]),
            "mean": statistics.fmean(errors) if errors else None,
            "worst": max(errors, key=abs) if errors else None,
            "stated_uncertainty": statistics.fmean(w["stated_uncertainty"] for w in mine if w["stated_uncertainty"]),
        }
    return summary


GRID = """# Written by scripts/gpu_check.py: a 2-run grid on one GPU, offline.
[defaults]
dataset = "{dataset}"
device = "{device}"
pretrained = false
epochs = 1
batch_size = {batch}
train_limit = {train_limit}
max_train_batches = {batches}
max_eval_batches = {eval_batches}
idle_s = {idle_s}
sample_hz = 20

[[experiment]]
name = "gpu-check"
models = ["{model}"]
techniques = ["baseline", "stego"]

[experiment.stego]
bits = 16
mode = "dtype"
"""


def run_grid(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A real grid through the fork server (`greenlab --headless`), then `greenlab report` on it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("runs.db", "runs.db-wal", "runs.db-shm"):
        (folder / name).unlink(missing_ok=True)  # this script's own store: a fresh grid each time
    batches = max(2, int(args.grid_batches * min(1.0, args.scale * 10)))
    text = GRID.format(
        dataset=args.grid_dataset,
        device=args.grid_device or f"cuda:{args.device}",
        batch=args.batch,
        train_limit=max(2 * args.batch, batches * args.batch),
        batches=batches,
        eval_batches=max(1, batches // 4),
        idle_s=round(5.0 * args.scale, 3),
        model=args.grid_model,
    )
    (folder / "experiments.toml").write_text(text)
    db = folder / "runs.db"
    env = {**os.environ, "GREENLAB_LAUNCHER": "forkserver", "GREENLAB_DB": str(db)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")]))
    grid = subprocess.run(
        [sys.executable, "-m", "greenlab", "--headless", str(folder / "experiments.toml"), "--db", str(db)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    (folder / "headless.log").write_text(grid.stdout + grid.stderr)
    result: dict[str, Any] = {"exit_code": grid.returncode, "experiments": text}
    for fmt, name in (("markdown", "report.md"), ("json", "report.json")):
        report = subprocess.run(
            [sys.executable, "-m", "greenlab", "report", "--db", str(db), "--format", fmt, "--out", str(folder / name)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        result[f"report_{fmt}_exit_code"] = report.returncode
    result["claims"] = claim_lines(folder / "report.json")
    result["runs"] = _grid_runs(db)
    return result


def claim_lines(report: Path) -> list[str]:
    """One line per technique of the grid: its change in training energy and verdict, and the study's claim."""
    try:
        comparisons = json.loads(report.read_text())
    except (OSError, ValueError):
        return []
    lines = []
    for c in comparisons:
        if c.get("metric") != "energy_training_j":
            continue
        technique = str(c.get("technique", ""))
        claim = CLAIMS.get(technique.split("[")[0], "no claim")
        ratio = c.get("ratio")
        change = f"{ratio - 1:+.1%}" if isinstance(ratio, (int, float)) else "n/a"
        lines.append(
            f"{c.get('model')} {technique}: training energy {change}, verdict {c.get('word') or c.get('verdict')} "
            f"(n = {c.get('n')} v {c.get('n_baseline')}); the study: {claim}"
        )
    return lines


def _grid_runs(db: Path) -> list[dict[str, Any]]:
    """The grid's runs as stored (what each figure is and how it was obtained), read with the store's API."""
    from greenlab.core.store.database import Store

    if not db.exists():
        return []
    keep = (
        "id",
        "technique",
        "status",
        "device",
        "energy_j",
        "energy_training_j",
        "energy_gpu_j",
        "energy_gpu_method",
        "energy_cpu_method",
        "compute_dtype",
        "fp32_precision",
        "bf16_native",
        "data_wait_s",
        "train_s",
        "val_accuracy",
        "flags",
    )
    return [{k: row.get(k) for k in keep} for row in Store(db).runs()]


def finish(out: Path, results: dict[str, Any], failures: list[str]) -> int:
    results["failures"] = failures
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "summary.md").write_text(summary_markdown(results))
    for failure in failures:
        print(f"gpu_check: FAILED: {failure}", file=sys.stderr)
    print(f"results     {out / 'results.json'}, {out / 'summary.md'}")
    return 1 if failures else 0


def summary_markdown(r: dict[str, Any]) -> str:
    gpu = r.get("gpu", {})
    lines = [
        f"# GPU check, {r['date']}" + (f" (scaled x{r['scale']:g}: not results)" if r["scale"] != 1 else ""),
        "",
        f"- GPU: {gpu.get('name')} ({gpu.get('uuid')}), driver {gpu.get('driver_version')}, "
        f"compute capability {gpu.get('compute_capability')}, power limit {gpu.get('power_limit_w')} W",
        f"- power reading: {gpu.get('power_reading')}",
        _identity_line(r.get("identity", {}), r["cuda_device"]),
        f"- torch {r['torch']}, default float32 precision {r.get('fp32_precision_default')}",
    ]
    if "steady" in r:
        s = r["steady"]
        lines += [
            f"- idle: {_fmt(r['idle']['counter_w'], 'W')} (counter)",
            f"- steady load: counter {_fmt(s['counter_j'], 'J')} over {s['seconds']:.1f} s "
            f"({_fmt(s['counter_w'], 'W')}), {s['compared_with']} {_pct(s['difference'])}; counter updates "
            f"seen every {_fmt(s['counter_update_s_seen'], 's', 3)}",
            f"- on/off cycles: instant {_pct(r['cycles']['instant_vs_counter'])}, average "
            f"{_pct(r['cycles']['usage_vs_counter'])} of the counter; the average lags "
            f"{_fmt(r['cycles']['usage_lag_s'], 's', 2)}",
            "",
            "| window | n | counter read 0 | counter vs instant, mean | worst | stated uncertainty |",
            "|---|---|---|---|---|---|",
        ]
        for length, w in r["windows"].items():
            lines.append(
                f"| {length} | {w['n']} | {w['zero_counter']} | {_pct(w['mean'])} | {_pct(w['worst'])} | "
                f"{_within(w['stated_uncertainty'])} |"
            )
    if "grid" in r:
        lines += ["", "## The grid", "", *(f"- {line}" for line in r["grid"]["claims"])]
    lines += (
        ["", "## Checks", "", *(f"- FAILED: {f}" for f in r["failures"])]
        if r["failures"]
        else ["", "All checks passed."]
    )
    return "\n".join(lines) + "\n"


def _identity_line(identity: dict[str, Any], index: int) -> str:
    if not identity.get("nvml_uuid"):
        return f"- identity: torch's UUID {identity.get('torch_uuid')} for cuda:{index} is no NVML board's"
    agrees = "the same" if identity.get("index_agrees") else "NOT the same (an index match would meter another board)"
    return (
        f"- identity: torch's cuda:{index} is NVML's {identity['nvml_uuid']} (NVML index "
        f"{identity.get('nvml_index')}: {agrees} index)"
    )


def _write_samples(out: Path, sampler: Sampler) -> None:
    with open(out / "samples.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t_s", "phase", "counter_j", "power_usage_w", "power_instant_w"])
        t0 = sampler.rows[0][0] if sampler.rows else 0.0
        for t, phase, counter, usage, instant in sampler.rows:
            writer.writerow([round(t - t0, 4), phase, counter, usage, instant])


def _write_windows(out: Path, windows: list[dict[str, Any]]) -> None:
    with open(out / "windows.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        columns = ["length_s", "repeat", "seconds", "counter_j", "instant_j", "usage_j", "counter_vs_instant"]
        writer.writerow(columns)
        for w in windows:
            writer.writerow([w[c] for c in columns])


def _watts(joules: float | None, seconds: float) -> float | None:
    return joules / seconds if joules is not None and seconds > 0 else None


def _fmt(value: float | None, unit: str, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f} {unit}".rstrip()


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def _within(value: float | None) -> str:
    return "n/a" if value is None else f"±{value:.1%}"


if __name__ == "__main__":
    sys.exit(main())
