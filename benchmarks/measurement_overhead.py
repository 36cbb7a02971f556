"""Training throughput with GreenLab's measurement on, against a plain PyTorch loop with none.

Both sides train tinycnn-sized work on digits for the same number of steps on the CPU:
- plain: a bare loop in a fresh interpreter, no events, no sampler;
- measured: a full GreenLab run (child process, JSON-lines events per batch, sampler at 10 Hz and
  window edges per phase), timing the training loop the same way.
The two alternate (plain, measured, plain, ...) to spread machine noise; the ratio of median
training-loop times is printed (goal: at least 0.98). Nothing is asserted.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from greenlab.core.plan.config import expand_grid, parse_experiments
from greenlab.core.run.supervisor import RunSupervisor
from greenlab.core.store.database import Store

MODEL, STEPS, BATCH, SIZE, REPEATS = "resnet18", 30, 32, 32, 3

PLAIN = f"""
import time, torch, torch.nn.functional as F
from greenlab.core.train import datasets, training, zoo
training.seed_everything(0)
data = datasets.load("digits", image_size={SIZE}, batch_size={BATCH}, seed=0, val_fraction=0.2)
model = zoo.build_model("{MODEL}", 10, pretrained=False)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
model.train()
steps, started = 0, time.perf_counter()
while steps < {STEPS}:
    for x, y in data.train:
        if steps >= {STEPS}:
            break
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        float(loss.item())
        steps += 1
print(time.perf_counter() - started)
"""

GRID = f"""
[defaults]
epochs = 1
batch_size = {BATCH}
image_size = {SIZE}
pretrained = false
device = "cpu"
idle_s = 0
max_train_batches = {STEPS}
max_eval_batches = 1
sample_hz = 10
[[experiment]]
name = "bench"
models = ["{MODEL}"]
"""


def plain_seconds() -> float:
    out = subprocess.run([sys.executable, "-c", PLAIN], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measured_seconds(store: Store) -> tuple[float, float]:
    (run,) = expand_grid(parse_experiments(GRID))
    outcome = RunSupervisor(store).execute(run)
    if outcome.status != "completed":
        raise SystemExit(f"measured run failed: {outcome.error}")
    (epoch,) = store.epochs(outcome.run_id)
    return epoch["train_s"], outcome.row["sampler_cpu_s"] / outcome.row["duration_s"]


def main() -> None:
    plain, measured, sampler = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bench.db")
        for _ in range(REPEATS):
            plain.append(plain_seconds())
            seconds, share = measured_seconds(store)
            measured.append(seconds)
            sampler.append(share)
    ratio = statistics.median(plain) / statistics.median(measured)
    print(f"{MODEL}, {STEPS} steps of batch {BATCH} at {SIZE} px on the CPU, {REPEATS} alternating repeats")
    print(f"plain loop      : median {statistics.median(plain):.2f} s  {[round(s, 2) for s in plain]}")
    print(f"with measurement: median {statistics.median(measured):.2f} s  {[round(s, 2) for s in measured]}")
    print(f"throughput ratio (measured / plain): {ratio:.3f}   goal >= 0.98")
    print(f"sampler CPU during the runs: {100 * statistics.median(sampler):.2f} % of one core")


if __name__ == "__main__":
    main()
