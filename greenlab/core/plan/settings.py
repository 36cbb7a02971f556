"""Every run setting declared once: type, default, bounds, whether it keys a run, and its documentation.

`RunSettings` is the one declaration; `check` validates merged values against it (the experiments file
and the TUI's form both go through it) and `settings_table` renders the documentation's table (docs/configuration.md) from it, so the
documentation cannot drift from what is accepted. Checks that involve more than one field, or other
modules (dataset names, the device pattern), sit in `check` after the declared ones.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from greenlab.core.errors import ConfigError, suggest, toml_text
from greenlab.core.train import datasets

_MAX_SEED = 2**32 - 1
MAX_REPEATS = 1000  # n = 1000 per cell narrows an interval 22 times beyond n = 2; a typo is likelier than a need
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
OPTIMIZERS = ("sgd", "adam", "adamw")
IDLE_SCOPES = ("grid", "run")
FP32_PRECISIONS = ("ieee", "tf32")
ORDERS = ("shuffle", "rotate", "as-written")
_NUMBER = (int, float)


@dataclass(frozen=True)
class Spec:
    """What a setting accepts and means. Bounds are inclusive unless `exclusive`."""

    types: tuple[type, ...]
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive: bool = False
    choices: tuple[str, ...] | None = None
    keyed: bool = True  # part of the run's key: it changes the run's work (see config.run_key)
    group: str = "training"  # training | measurement | accounting | analysis
    fix: str = ""  # appended to a bound's message: why the bound is there
    shown_default: str | None = None  # the documented default, where the value itself says little
    example: Any = None  # a value to suggest in a message, where the default is None


def setting(default: Any, types: tuple[type, ...], doc: str, **spec: Any) -> Any:
    return field(default=default, metadata={"spec": Spec(types, doc, **spec)})


@dataclass(frozen=True)
class RunSettings:
    """Training, measurement and accounting settings of one run; every key may sit in [defaults]."""

    dataset: str = setting("digits", (str,), "see Models and datasets")
    epochs: int = setting(2, (int,), "fine-tuning epochs", minimum=1)
    batch_size: int = setting(64, (int,), "examples per batch", minimum=1)
    lr: float = setting(0.01, _NUMBER, "learning rate", minimum=0, exclusive=True)
    optimizer: str = setting("sgd", (str,), "sgd, adam or adamw", choices=OPTIMIZERS)
    momentum: float = setting(0.9, _NUMBER, "SGD momentum", minimum=0)
    weight_decay: float = setting(0.0, _NUMBER, "weight decay", minimum=0)
    device: str = setting("auto", (str,), "auto (cuda if present, else mps, else cpu), cpu, cuda, cuda:N or mps")
    seed: int = setting(
        0,
        (int,),
        "a run's seed is `seed + repeat`: it drives initialisation, the order of "
        "training batches and compression draws, so repeats are independent draws; the "
        "train/validation split stays fixed by `seed`, so every technique and repeat sees the "
        "same examples",
        minimum=0,
    )
    repeats: int = setting(
        1,
        (int,),
        "independent runs of every model and technique",
        minimum=1,
        maximum=MAX_REPEATS,
        keyed=False,
        fix=" (more repeats than any energy study needs: the interval narrows as 1/√n)",
    )
    order: str = setting(
        "shuffle",
        (str,),
        "the order of techniques within each repeat: `shuffle` (seeded by "
        "`seed`, the model and the repeat), `rotate` (repeat r starts with the r-th technique) or "
        "`as-written`; the first two keep the baseline, or any technique, from always running "
        "first on a cold machine. Each run stores its place as `grid_position`",
        choices=ORDERS,
        keyed=False,
    )
    pretrained: bool = setting(True, (bool,), 'torchvision `weights="DEFAULT"`; false = random init (offline)')
    image_size: int | None = setting(
        None,
        (int,),
        "input size in pixels; digits: the model's minimum (at least 32 px), others: the model's input size",
        minimum=8,
        shown_default="natural",
        example=32,
    )
    max_train_batches: int | None = setting(
        None, (int,), "cap on training batches per epoch (quick or energy-only runs)", minimum=1, example=10
    )
    max_eval_batches: int | None = setting(None, (int,), "cap on evaluation batches", minimum=1, example=4)
    train_limit: int | None = setting(None, (int,), "use at most this many training examples", minimum=2, example=1000)
    val_fraction: float = setting(
        0.2, _NUMBER, "share of the data held out for validation (a seeded split)", minimum=0, maximum=1, exclusive=True
    )
    num_workers: int | str = setting(
        "auto",
        (int, str),
        "DataLoader worker processes; `auto`: none off CUDA (batches are cached tensors), on CUDA one per "
        "spare core, at most 4. On CUDA they persist across epochs and start before the first measured window",
        minimum=0,
        example="auto",
    )
    fp32_precision: str = setting(
        "ieee",
        (str,),
        "what float32 matrix products and convolutions run in on CUDA: `ieee` (23 mantissa bits) or `tf32` "
        "(10; torch's default for convolutions, faster on Ampere and later). Stored with each run as "
        "`fp32_precision`; no effect off CUDA",
        choices=FP32_PRECISIONS,
    )
    idle_s: float = setting(
        5.0,
        _NUMBER,
        "seconds of idle power measured as the baseline (0 disables)",
        minimum=0,
        group="measurement",
        fix=" (0 disables the idle baseline)",
    )
    idle_scope: str = setting(
        "grid",
        (str,),
        "`grid`: the idle baseline once before the grid; `run`: before every run",
        choices=IDLE_SCOPES,
        group="measurement",
    )
    cooldown_c: float | None = setting(
        None,
        _NUMBER,
        "wait until every GPU is below this temperature (°C) before a run",
        group="measurement",
        example=60,
    )
    cooldown_timeout_s: float = setting(300.0, _NUMBER, "the longest cool-down wait", minimum=0, group="measurement")
    sample_hz: float = setting(10.0, _NUMBER, "power sampling rate", minimum=1, maximum=200, group="measurement")
    cpu_tdp_w: float | None = setting(
        None,
        _NUMBER,
        "CPU estimate: this package TDP over its threads, instead of the table",
        minimum=0,
        exclusive=True,
        group="measurement",
        example=65,
    )
    cpu_w_per_thread: float | None = setting(
        None,
        _NUMBER,
        "CPU estimate: watts of one busy hardware thread, instead of any rule",
        minimum=0,
        exclusive=True,
        group="measurement",
        shown_default="rule",
        example=5,
    )
    dram_w_per_gb: float = setting(
        0.375, _NUMBER, "DRAM estimate: watts per resident GB", minimum=0, group="measurement"
    )
    cpus_per_run: int | None = setting(
        None,
        (int,),
        "with `--ray`: CPUs a CPU run reserves on its node; by "
        "default all of the node's, so no other run shares its CPU packages "
        "and their RAPL energy is the run's alone (fewer let runs share a node: "
        "flagged `shared_node_cpu`)",
        minimum=1,
        keyed=False,
        group="measurement",
        shown_default="the node's",
        example=4,
    )
    carbon_g_per_kwh: float = setting(
        475.0, _NUMBER, "grid carbon intensity (see Accounting)", minimum=0, keyed=False, group="accounting"
    )
    pue: float = setting(
        1.0,
        _NUMBER,
        "power usage effectiveness of the facility",
        minimum=1,
        keyed=False,
        group="accounting",
        fix=" (a PUE below 1 is impossible)",
    )
    price_per_kwh: float = setting(0.29, _NUMBER, "electricity price", minimum=0, keyed=False, group="accounting")
    currency: str = setting("EUR", (str,), "currency of `price_per_kwh`", keyed=False, group="accounting")


class Declaration:
    """The specs and defaults of one declared dataclass (run settings, the analysis plan): its checks,
    messages and documentation table all come from here."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.specs: dict[str, Spec] = {f.name: f.metadata["spec"] for f in fields(cls)}

    def default(self, name: str) -> Any:
        return {f.name: f.default for f in fields(self.cls)}[name]

    def fix_text(self, name: str) -> str:
        """The fix a message about setting `name` ends with, from its declaration: a valid line to write
        (the default, or the declared example where the default is none) and how to get the default back."""
        spec, default = self.specs[name], self.default(name)
        if default is not None:
            return f"write e.g. {name} = {toml_text(default)} (the default)"
        example = spec.example if spec.example is not None else spec.minimum
        back = f"remove it for the default ({self.default_text(name).strip('`')})"
        return f"write e.g. {name} = {toml_text(example)}, or {back}" if example is not None else back

    def check_one(self, name: str, value: Any, key: str) -> None:
        spec = self.specs[name]
        fix = self.fix_text(name)
        if value is None and self.default(name) is None:
            return
        if not isinstance(value, spec.types) or (isinstance(value, bool) and bool not in spec.types):
            kind = "a number" if float in spec.types else _type_name(spec.types[0])
            raise ConfigError(f"must be {kind}, got {toml_text(value)}; {fix}", key=key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"must be a finite number, got {toml_text(value)}; {fix}", key=key)
        if spec.choices is not None and value not in spec.choices:
            raise ConfigError(
                f"unknown {name} '{value}'{suggest(str(value), spec.choices)} "
                f"(known: {', '.join(spec.choices)}); {fix}",
                key=key,
            )
        low, high = spec.minimum, spec.maximum
        number = float(value) if isinstance(value, (int, float)) else 0.0  # its type was checked above
        if spec.exclusive:
            if (low is not None and number <= low) or (high is not None and number >= high):
                bounds = f"between {low:g} and {high:g} (exclusive)" if high is not None else f"greater than {low:g}"
                raise ConfigError(f"must be {bounds}, got {value}{spec.fix}; {fix}", key=key)
        elif low is not None and high is not None and not low <= number <= high:
            raise ConfigError(f"must be between {low:g} and {high:g}, got {value}{spec.fix}; {fix}", key=key)
        elif low is not None and number < low:
            raise ConfigError(f"must be at least {low:g}, got {value}{spec.fix}; {fix}", key=key)

    def default_text(self, name: str) -> str:
        spec, default = self.specs[name], self.default(name)
        if spec.shown_default is not None:
            return spec.shown_default
        if default is None:
            return "none"
        if isinstance(default, bool):
            return "true" if default else "false"
        if isinstance(default, str):
            return f'`"{default}"`'
        return f"{default:g}" if isinstance(default, float) else str(default)

    def table(self) -> str:
        """A markdown table, one row per setting, from the declarations."""
        lines = ["| key | default | meaning |", "|---|---|---|"]
        for name, spec in self.specs.items():
            notes = [] if spec.keyed else ["not part of a run's key"]
            doc = spec.doc + _bounds_text(spec) + (f"; {', '.join(notes)}" if notes else "")
            lines.append(f"| `{name}` | {self.default_text(name)} | {spec.group}: {doc} |")
        return "\n".join(lines)


RUN_SETTINGS = Declaration(RunSettings)
SPECS: dict[str, Spec] = RUN_SETTINGS.specs
SETTING_KEYS = tuple(SPECS)
UNKEYED_SETTINGS = frozenset(name for name, spec in SPECS.items() if not spec.keyed)
ACCOUNTING_SETTINGS = tuple(name for name, spec in SPECS.items() if spec.group == "accounting")


def _type_name(kind: type) -> str:
    return {int: "a whole number", float: "a number", str: "text in quotes", bool: "true or false"}[kind]


def fix_text(name: str) -> str:
    return RUN_SETTINGS.fix_text(name)


def check(values: dict[str, Any], key_prefix: str) -> RunSettings:
    """Validate merged settings against their declarations; raise ConfigError on the first problem."""
    for name, value in values.items():
        RUN_SETTINGS.check_one(name, value, f"{key_prefix}.{name}")
    s = RunSettings(**values)
    if s.seed + s.repeats - 1 > _MAX_SEED:  # a run's seed is seed + repeat; torch takes 32 bits
        raise ConfigError(
            f"must be at most {_MAX_SEED - s.repeats + 1} (seed + repeats - 1 is a 32-bit seed), "
            f"got {s.seed}; {fix_text('seed')}",
            key=f"{key_prefix}.seed",
        )
    if isinstance(s.num_workers, str) and s.num_workers != "auto":
        raise ConfigError(
            f'must be a whole number or "auto", got {toml_text(s.num_workers)}; {fix_text("num_workers")}',
            key=f"{key_prefix}.num_workers",
        )
    if not _DEVICE_PATTERN.match(s.device):
        raise ConfigError(
            f"unknown device '{s.device}'; use auto, cpu, cuda, cuda:N or mps", key=f"{key_prefix}.device"
        )
    datasets.check_name(s.dataset, f"{key_prefix}.dataset")
    return s


def _bounds_text(spec: Spec) -> str:
    if spec.choices or (spec.minimum is None and spec.maximum is None):
        return ""
    low, high = spec.minimum, spec.maximum
    if spec.exclusive:
        if high is not None:
            return f" ({low:g} < value < {high:g})"
        return f" (> {low:g})"
    return f" ({low:g}–{high:g})" if high is not None else f" (≥ {low:g})"


def settings_table() -> str:
    """The documentation's table of settings, one row per setting, from the declarations above."""
    return RUN_SETTINGS.table()


if __name__ == "__main__":  # python -m greenlab.core.plan.settings: print the documentation's table
    print(settings_table())
