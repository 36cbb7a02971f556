"""A short calibration for a grid's forecast: a model's FLOPs per training sample, and the FLOP rate this
device reaches training it.

The forecast (greenlab.core.grid.forecast) asks for it where the store has no earlier runs to go by. It
runs as a child process — `python -m greenlab.core.train.calibration SPECS_JSON` prints one JSON object per
spec — so a face that forecasts never imports torch nor spends its own CPU on it. The model is built
untrained (no weights are fetched) and timed on random batches; what a technique changes is not
calibrated (the forecast says "calibrated on the uncompressed model").
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

PROBE_BATCH = 2  # the first, cheap measure that sizes the real one
MAX_STEP_S = 2.0  # the timed batch is the run's own, cut down only where a step of it would take longer
WARM_STEPS = 2  # untimed: the first allocates and initialises, the second settles the kernels' caches
MIN_TIMED_S = 1.0  # steps are timed until this much time has passed (at least MIN_STEPS, at most MAX_STEPS)
MIN_STEPS, MAX_STEPS = 5, 40


def calibrate(
    model_name: str, image_size: int, device: str = "auto", batch_size: int = 32, optimizer: str = "sgd"
) -> dict[str, Any]:
    """{model, image_size, device, batch, flops_per_sample, flop_per_s, steps, cores}: the FLOPs of one training step per
    sample (greenlab.core.train.compression.model_size), and those FLOPs over the median measured seconds of a
    step, at the run's own batch size, or a smaller one where the probe says a step of it would take longer
    than MAX_STEP_S: a tiny batch understates a CPU's throughput, the run's own batch of vit_b_16 on a CPU
    takes minutes to time. Steps are timed warm, for at least MIN_TIMED_S. `cores`: the CPU cores the steps
    kept busy (the CPU estimate prices CPU time, not wall time)."""
    import psutil
    import torch

    from greenlab.core.train import training, zoo
    from greenlab.core.train.compression.model_size import training_step_flops

    resolved = training.resolve_device(device)
    model = zoo.build_model(model_name, 10, False).to(resolved)
    # The run's own optimizer: Adam's step costs more than SGD's, and the forecast is of the run's steps.
    stepper = training.make_optimizer(optimizer, model.parameters(), 1e-3, 0.9, 0.0)
    loss_of = torch.nn.CrossEntropyLoss()
    model.train()

    def step_seconds(batch: int) -> list[float]:
        example = torch.randn(batch, 3, image_size, image_size, device=resolved)
        labels = torch.zeros(batch, dtype=torch.long, device=resolved)

        def step() -> None:
            stepper.zero_grad()
            loss_of(zoo_logits(model(example)), labels).backward()
            stepper.step()
            if resolved.type == "cuda":
                torch.cuda.synchronize()

        for _ in range(WARM_STEPS):  # a cold step is not what a run's thousands of steps take
            step()
        times: list[float] = []
        while len(times) < MIN_STEPS or (sum(times) < MIN_TIMED_S and len(times) < MAX_STEPS):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        return sorted(times)

    own = psutil.Process()
    batch = timed_batch(step_seconds(PROBE_BATCH), batch_size)
    cpu_before, wall_before = sum(own.cpu_times()[:2]), time.perf_counter()
    timed = step_seconds(batch)
    cores = (sum(own.cpu_times()[:2]) - cpu_before) / max(time.perf_counter() - wall_before, 1e-9)
    seconds = timed[len(timed) // 2]
    flops = training_step_flops(model, torch.randn(batch, 3, image_size, image_size, device=resolved))
    return {
        "model": model_name,
        "image_size": image_size,
        "device": str(resolved),
        "batch": batch,
        "flops_per_sample": flops / batch,
        "flop_per_s": flops / max(seconds, 1e-9),
        "steps": len(timed),
        "cores": round(cores, 2),
    }


def timed_batch(probe_step_s: list[float], batch_size: int) -> int:
    """The batch to time, from the probe's step times at PROBE_BATCH: the run's own, unless the probe's
    fastest step says a step of it would take longer than MAX_STEP_S (then as many samples as fit in it).
    The probe only sizes, and only downwards, because a step of two samples is unreliable: one descheduling
    of a torch thread (another process on the cores) makes it 100x slower, and a batch of two timed as the
    measure understates a CPU's throughput as much again (a 6-run grid of a minute was forecast at 19)."""
    per_sample = min(probe_step_s) / PROBE_BATCH
    if per_sample * batch_size <= MAX_STEP_S:
        return max(PROBE_BATCH, batch_size)
    return max(PROBE_BATCH, min(batch_size, int(MAX_STEP_S / max(per_sample, 1e-9))))


def zoo_logits(output: Any) -> Any:
    from greenlab.core.train.compression.model_size import output_logits

    return output_logits(output)


def main(argv: list[str]) -> int:
    """Each spec of the JSON list in argv[1] ({model, image_size, device, batch_size, optimizer}) calibrated, one
    JSON line each; a spec that cannot be calibrated gives {"error": ...} instead, so one bad model spoils no
    other. Every line carries `startup_s`: from this process's start until torch and the models were
    importable (what a grid's fork server and warm-up pay once)."""
    import psutil
    import torch  # noqa: F401 - imported here to time it: the start-up a grid pays once

    from greenlab.core.train import zoo  # noqa: F401 - the model zoo (torchvision) as a run's child imports it

    startup_s = round(time.time() - psutil.Process().create_time(), 2)
    for spec in json.loads(argv[1]):
        try:
            result = calibrate(
                spec["model"],
                int(spec["image_size"]),
                spec.get("device", "auto"),
                int(spec.get("batch_size", 32)),
                spec.get("optimizer", "sgd"),
            )
        except Exception as exc:  # noqa: BLE001 - the forecast says "not calibrated" and why, and goes on
            result = {**spec, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps({**result, "startup_s": startup_s}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
