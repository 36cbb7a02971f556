"""A throwaway first child of a grid: a few CPU training steps of a small network, measured by nothing.

The first run a machine does after the interpreter (or the fork server) starts pays for faulting in
torch's code and for building its CPU kernels; every later run finds them warm. Left to a measured run,
that cost lands on whichever technique happens to run first and biases its energy. The supervisor runs
this once before the grid's idle baseline (`python -m greenlab.core.run.warmup_main --event-fd N`, the same way
it starts runs), so the idle figure and every measured run see a warm machine. It writes no events.
"""

from __future__ import annotations

import argparse
import sys

WARMUP_STEPS = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="greenlab-warmup")
    parser.add_argument("--event-fd", type=int)  # started like a run; it has nothing to report
    parser.parse_args(argv)
    sys.stdin.read()  # the launcher hands every child a JSON document; this one needs none
    import torch

    from greenlab.core.train import datasets, training, zoo
    from greenlab.core.train.compression import TrainingHooks

    datasets.load("digits", image_size=32, batch_size=32, seed=0, val_fraction=0.2)
    torch.manual_seed(0)
    model = zoo.build_model("tinycnn", 10, pretrained=False)
    device = torch.device("cpu")
    opt = training.make_optimizer("adam", model.parameters(), 0.001, 0.9, 0.0)
    inputs, targets = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    for _ in range(WARMUP_STEPS):
        training.training_step(model, opt, None, inputs, targets, TrainingHooks(), device)
    training.evaluate(model, [(inputs, targets)], device, 10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
