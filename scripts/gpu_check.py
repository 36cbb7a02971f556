"""Check, on a machine with an NVIDIA GPU, that NVML's energy counter agrees with integrated power.

Trains torchvision's resnet18 (random weights, 10 classes) on random 224x224 batches on one GPU for
about --seconds, while a background thread samples nvmlDeviceGetPowerUsage at 10 Hz and integrates it
(trapezoid). The energy counter (nvmlDeviceGetTotalEnergyConsumption) is read at the window's edges,
with torch.cuda.synchronize() just before each read so that queued kernels fall inside the window.
Prints both energies, their ratio, duration, steps, and the GPU's name, driver, power limit and
temperatures. Expect the ratio near 1 on a steady load; polled power on recent GPUs is a one-second
average, so the two differ most at the window's edges.

Exit status: 0 when measured, 2 when there is no CUDA GPU, no torch or no NVML (with one line saying
which). This script belongs to the developer checks, not to the lab: the lab's tracker samples meters
in its own way.

    python scripts/gpu_check.py [--seconds 60] [--device 0] [--batch 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from greenlab.core.measure.nvml import discover_nvml  # noqa: E402 - after the sys.path line that lets the script run from a checkout

SAMPLE_HZ = 10.0


class PowerIntegrator:
    """Samples one GPU's power on a thread and integrates it with the trapezoid rule."""

    def __init__(self, meter, component: str, hz: float = SAMPLE_HZ) -> None:
        self._meter = meter
        self._component = component
        self._period = 1.0 / hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.missed = 0

    def _sample(self) -> None:
        watts = self._meter.power_w().get(self._component)
        if watts is None:
            self.missed += 1
        else:
            self.samples.append((time.monotonic(), watts))

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._sample()
            next_at += self._period
            # Scheduling against a fixed grid keeps the rate at 10 Hz however long a read takes.
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # close the integral at the window's end

    def energy_j(self) -> float:
        return sum((t1 - t0) * (w0 + w1) / 2.0 for (t0, w0), (t1, w1) in zip(self.samples, self.samples[1:]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of the measured window (default 60)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index as torch numbers it (default 0)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=10,
        help="steps before the window, so cuDNN autotuning and allocation stay outside it",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
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
    meter, reason = discover_nvml([args.device])
    if meter is None:
        print(f"gpu_check: no NVML: {reason}", file=sys.stderr)
        return 2
    try:
        return run_check(torch, meter, args)
    finally:
        meter.close()


def run_check(torch, meter, args: argparse.Namespace) -> int:
    import torchvision

    component = f"gpu{args.device}"
    facts = meter.info()[component]
    has_counter = meter.method(component) == "counter"
    device = torch.device("cuda", args.device)
    torch.backends.cudnn.benchmark = True

    model = torchvision.models.resnet18(weights=None, num_classes=10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(args.batch, 3, 224, 224, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    model.train()
    for _ in range(args.warmup_steps):
        step()

    temp_start = meter.temperatures().get(component)
    sampler = PowerIntegrator(meter, component)

    torch.cuda.synchronize(device)
    counter_start = meter.energy_j().get(component) if has_counter else None
    t_start = time.monotonic()
    sampler.start()
    steps = 0
    while time.monotonic() - t_start < args.seconds:
        step()
        steps += 1
    torch.cuda.synchronize(device)
    counter_end = meter.energy_j().get(component) if has_counter else None
    t_end = time.monotonic()
    sampler.stop()
    temp_end = meter.temperatures().get(component)

    duration = t_end - t_start
    polled_j = sampler.energy_j()
    counter_j = (counter_end - counter_start) if counter_start is not None and counter_end is not None else None
    ratio = polled_j / counter_j if counter_j else None
    flags = meter.window_flags(component, duration, counter_j if has_counter else polled_j)

    results = {
        "gpu": facts.get("name"),
        "uuid": facts.get("uuid"),
        "driver_version": facts.get("driver_version"),
        "power_limit_w": facts.get("power_limit_w"),
        "mig_mode": facts.get("mig_mode"),
        "counter_supported": has_counter,
        "temperature_c_start": temp_start,
        "temperature_c_end": temp_end,
        "duration_s": duration,
        "steps": steps,
        "steps_per_s": steps / duration if duration else None,
        "batch": args.batch,
        "counter_energy_j": counter_j,
        "polled_energy_j": polled_j,
        "polled_over_counter": ratio,
        "power_samples": len(sampler.samples),
        "missed_samples": sampler.missed,
        "mean_power_w_counter": counter_j / duration if counter_j is not None and duration else None,
        "flags": list(flags),
        "torch": torch.__version__,
    }
    print(
        f"GPU              {results['gpu']} ({results['uuid']}), driver {results['driver_version']}, "
        f"power limit {_fmt(results['power_limit_w'], 'W')}, MIG {results['mig_mode']}"
    )
    print(f"temperature      {_fmt(temp_start, 'C')} -> {_fmt(temp_end, 'C')}")
    print(
        f"window           {duration:.2f} s, {steps} steps of batch {args.batch} "
        f"({_fmt(results['steps_per_s'], 'steps/s')})"
    )
    print(
        f"counter energy   {_fmt(counter_j, 'J')}"
        + ("" if has_counter else "  (nvmlDeviceGetTotalEnergyConsumption not supported on this GPU)")
    )
    print(
        f"polled energy    {_fmt(polled_j, 'J')}  ({len(sampler.samples)} samples at {SAMPLE_HZ:g} Hz, "
        f"{sampler.missed} missed)"
    )
    print(f"polled/counter   {_fmt(ratio, '', 4)}")
    print(f"mean power       {_fmt(results['mean_power_w_counter'], 'W')} (counter)")
    if flags:
        print(f"flags            {', '.join(flags)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


def _fmt(value, unit: str, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f} {unit}".rstrip()


if __name__ == "__main__":
    sys.exit(main())
