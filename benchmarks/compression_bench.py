"""Work and time of one training step under each compression technique, as ratios to the baseline.

For torchvision resnet18 (random init, 10 classes) this builds one model per technique, counts the FLOPs
of a training step (forward and backward, torch's FlopCounterMode) and times real training steps
(forward, backward, SGD update and the technique's after-step hooks). Timing is interleaved: every round
runs each technique in a rotated order, after a warm-up, and the table reports medians over rounds, so
that drifting clocks and a warming machine hit all techniques alike.

    .venv/bin/python benchmarks/compression_bench.py [--size 64] [--batch 8] [--rounds 7] [--device cpu]

It measures time, not energy: on one machine and one device, time per step is the first-order proxy,
and the FLOPs column says how much of a change is arithmetic.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from greenlab.core.train import compression  # noqa: E402 - after the sys.path line that lets the script run from a checkout
from greenlab.core.train.compression import stego  # noqa: E402 - after the sys.path line that lets the script run from a checkout
from greenlab.core.train.compression.model_size import model_stats  # noqa: E402 - after the sys.path line that lets the script run from a checkout
from greenlab.core.train.training import synchronize, training_step  # noqa: E402 - after the sys.path line that lets the script run from a checkout

VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("baseline", "baseline", {}),
    ("stego truncate 16", "stego", {"stego": {"bits": 16, "mode": "truncate"}}),
    ("stego dtype 16", "stego", {"stego": {"bits": 16, "mode": "dtype"}}),
    ("stego stored 16", "stego", {"stego": {"bits": 16, "mode": "stored"}}),
    ("prune l1-unstructured 0.5", "prune", {"prune": {"amount": 0.5, "method": "l1-unstructured"}}),
    ("prune structured 0.5", "prune", {"prune": {"amount": 0.5, "method": "structured"}}),
    ("lowrank 0.5", "lowrank", {"lowrank": {"rank_ratio": 0.5}}),
]


def build(spec: str, tables: dict[str, Any], example: torch.Tensor, device: torch.device) -> tuple[Any, Any, list]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).to(device)
    parts = compression.parse_technique(spec, "bench")
    settings = {
        p: compression.validate_settings(p, tables.get(p, {}), f"bench.{p}") for p in parts if p != compression.BASELINE
    }
    ctx = compression.CompressionContext(
        evaluate=lambda m: 0.0, device=device, seed=0, example_input=example, num_classes=10, log=lambda line: None
    )
    applied = compression.apply(parts, model, settings, ctx)
    return applied.model, applied.hooks, applied.warnings


def make_step(model: Any, hooks: Any, x: torch.Tensor, y: torch.Tensor, device: torch.device):
    """The training loop's own step (greenlab.core.train.training.training_step), synchronised for timing."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type) if hooks.grad_scaler else None
    model.train()

    def step() -> None:
        training_step(model, opt, scaler, x, y, hooks, device)
        synchronize(device)

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="input resolution (default 64)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (median over them)")
    parser.add_argument("--steps", type=int, default=1, help="steps per technique per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per technique first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: on a shared machine a multi-threaded step waits at every "
        "barrier for whichever thread another process preempted, and times scatter tenfold)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    started = time.perf_counter()
    rows = []
    for label, spec, tables in VARIANTS:
        model, hooks, _ = build(spec, tables, x, device)
        dtype = hooks.autocast_dtype or torch.float32
        # bytes as stored: autocast narrows the arithmetic, only "stored" narrows the weights
        rows.append(
            {
                "label": label,
                "stats": model_stats(model, x, autocast_dtype=hooks.autocast_dtype),
                "times": [],
                "cpu": [],
                "step": make_step(model, hooks, x, y, device),
                "dtype": str(dtype).removeprefix("torch."),
            }
        )
    print(
        f"resnet18, batch {args.batch} x 3 x {args.size} x {args.size}, {device}, "
        f"{torch.get_num_threads()} threads; built in {time.perf_counter() - started:.1f} s"
    )
    if device.type == "cpu":  # the bfloat16 rows mean one thing on a CPU that has the instructions, another without
        print(stego.bfloat16_cpu_note() or "bfloat16 on this CPU: unknown (no /proc/cpuinfo flags)")

    for row in rows:
        for _ in range(args.warmup):
            row["step"]()
    for round_index in range(args.rounds):
        shift = round_index % len(rows)
        for row in rows[shift:] + rows[:shift]:  # rotate who goes first: no technique always runs warm
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                row["step"]()
            row["times"].append((time.perf_counter() - t0) / args.steps)
            row["cpu"].append((time.process_time() - c0) / args.steps)

    base = rows[0]
    base_time = statistics.median(base["times"])
    base_cpu = statistics.median(base["cpu"])
    base_min = min(base["times"])
    header = (
        f"{'technique':<27} {'dtype':>9} {'FLOPs/step':>11} {'FLOPs':>6} {'nonzero':>8} "
        f"{'bytes':>6} {'step ms':>8} {'time':>6} {'spread':>7} {'min time':>9} {'cpu time':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        s, b = row["stats"], base["stats"]
        median = statistics.median(row["times"])
        spread = (max(row["times"]) - min(row["times"])) / median
        print(
            f"{row['label']:<27} {row['dtype']:>9} {s['flops_step'] / 1e9:>9.2f} G "
            f"{s['flops_step'] / b['flops_step']:>6.2f} {s['params_nonzero'] / b['params_nonzero']:>8.2f} "
            f"{s['model_bytes'] / b['model_bytes']:>6.2f} {median * 1e3:>8.1f} {median / base_time:>6.2f} "
            f"{spread:>6.0%} {min(row['times']) / base_min:>9.2f} "
            f"{statistics.median(row['cpu']) / base_cpu:>9.2f}"
        )
    print(
        f"ratios are to the baseline; time = median wall time over {args.rounds} interleaved rounds of "
        f"{args.steps} step(s); spread = (max - min) / median; min time = fastest round, the least disturbed "
        f"by other processes; cpu time = median process CPU time; total {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
