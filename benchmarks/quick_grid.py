"""The benchmarks' shared grid: tinycnn on digits at 32 px on the CPU, three batches, no idle baseline.

Each benchmark adds its own experiment table (models, techniques, repeats) to these defaults, so a change
of the common conditions is made once. Imported by the scripts beside it (python benchmarks/NAME.py puts
this folder on the path).
"""

from __future__ import annotations

from greenlab.core.plan.config import GridRun, expand_grid, parse_experiments

DEFAULTS = """
[defaults]
dataset = "digits"
epochs = 1
batch_size = 64
image_size = 32
pretrained = false
device = "cpu"
idle_s = 0
max_train_batches = 3
max_eval_batches = 1
"""


def quick_grid(experiment: str = '[[experiment]]\nname = "bench"\nmodels = ["tinycnn"]\n') -> list[GridRun]:
    """The runs of DEFAULTS with `experiment` (an [[experiment]] table, keys of it may override defaults)."""
    return expand_grid(parse_experiments(DEFAULTS + experiment))
