"""experiments.toml: parse, validate and expand into a grid of runs (models x techniques x repeats).

Every problem becomes one ConfigError naming the file, the line where known, the key path, what is
wrong and the fix. Nothing here touches the store, so an invalid file writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from greenlab.core.errors import ConfigError, suggest, toml_text
from greenlab.core.plan import analysis, limits
from greenlab.core.plan.analysis import AnalysisSettings, Plan
from greenlab.core.plan.settings import ACCOUNTING_SETTINGS, SETTING_KEYS, UNKEYED_SETTINGS, RunSettings, check
from greenlab.core.plan.tomlfile import tomllib
from greenlab.core.train import compression, zoo


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# Runs measured under different rules are never the same run nor the same conditions: the epoch changes
# when what a run does or how it is measured changes (2: rounded stego truncation, a seed per repeat for the
# data order, balanced fake-text, the VM-aware CPU estimate; 3: images resized once before the measured
# windows instead of per batch inside them, the float32 precision set explicitly). Stores of schema 1 hold
# epoch-1 runs; a run of epoch 2 keeps the key it was stored with.
KEY_EPOCH = 3
LEGACY_KEY_EPOCH = 1


def conditions_key(model: str, settings: dict[str, Any], *, epoch: int = KEY_EPOCH) -> str:
    """What makes two runs comparable: the model and every setting that changes the work (data, training,
    device, measurement), but not the technique, the repeat, `repeats`, the accounting inputs or the
    experiment's name. A technique is compared with the baselines of its conditions.

    `settings` may be a stored `runs.settings` JSON object from an older GreenLab: missing settings take
    today's defaults, so the key of an unchanged run stays the same across versions.
    """
    merged = {**asdict(RunSettings()), **{k: v for k, v in settings.items() if k in SETTING_KEYS}}
    work = {k: v for k, v in merged.items() if k not in UNKEYED_SETTINGS}
    payload: dict[str, Any] = {"model": model, "settings": work}
    if epoch != LEGACY_KEY_EPOCH:
        payload["epoch"] = epoch
    return _digest(payload)


def run_key(
    model: str,
    technique: str,
    repeat: int,
    settings: dict[str, Any],
    technique_settings: dict[str, Any],
    *,
    epoch: int = KEY_EPOCH,
) -> str:
    """Identical runs share this key: same conditions, technique, technique settings and repeat index.
    A grid skips a run whose key is already completed (raising `repeats` runs only the new repeats)."""
    return _digest(
        {
            "conditions": conditions_key(model, settings, epoch=epoch),
            "technique": technique,
            "repeat": repeat,
            "techniques": technique_settings,
        }
    )


EXPERIMENT_KEYS = ("name", "models", "techniques")
TOP_LEVEL_TABLES = ("defaults", "experiment", analysis.TABLE)
_LIST_EXAMPLES = {"models": ["tinycnn"], "techniques": ["baseline", "prune"]}  # offered in a list's fix


@dataclass(frozen=True)
class Experiment:
    name: str
    models: tuple[str, ...]
    techniques: tuple[str, ...]
    settings: RunSettings
    technique_settings: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class GridRun:
    """One run of the grid: what a grid driver executes and the store records."""

    experiment: str
    model: str
    technique: str
    repeat: int
    settings: RunSettings
    technique_settings: dict[str, dict[str, Any]]  # only the parts this technique uses
    position: int = 0  # its place in the grid as run (0 first), stored as `grid_position`

    @property
    def parts(self) -> list[str]:
        return self.technique.split("+")

    def settings_dict(self) -> dict[str, Any]:
        """Everything that determines the run's result, as stored in `runs.settings`."""
        return {**asdict(self.settings), "techniques": self.technique_settings}

    @property
    def seed(self) -> int:
        """The run's own seed: initialisation, data order and compression draws of repeat r use seed + r,
        so repeats are independent draws; the train/validation split stays fixed by `settings.seed`."""
        return self.settings.seed + self.repeat

    def settings_key(self) -> str:
        """See `run_key`: identical runs share it (a rerun skips them)."""
        return run_key(self.model, self.technique, self.repeat, asdict(self.settings), self.technique_settings)

    def technique_label(self) -> str:
        """The technique with its non-default settings (compression.label): what its results are grouped by."""
        return compression.label(self.technique, self.technique_settings)

    def conditions_key(self) -> str:
        """See `conditions_key`: the baselines this run is compared with share it."""
        return conditions_key(self.model, asdict(self.settings))

    def accounting(self) -> dict[str, Any]:
        return {k: getattr(self.settings, k) for k in ACCOUNTING_SETTINGS}

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "model": self.model,
            "technique": self.technique,
            "repeat": self.repeat,
            "settings": asdict(self.settings),
            "technique_settings": self.technique_settings,
            "position": self.position,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GridRun:
        return cls(
            experiment=data["experiment"],
            model=data["model"],
            technique=data["technique"],
            repeat=data["repeat"],
            settings=RunSettings(**data["settings"]),
            technique_settings=data["technique_settings"],
            position=data.get("position", 0),
        )


@dataclass(frozen=True)
class GridFile:
    """An experiments file as loaded: its experiments and its declared analysis plan."""

    experiments: list[Experiment]
    analysis: AnalysisSettings
    source: str = ""

    def grid(self) -> list[GridRun]:
        return expand_grid(self.experiments)

    def plan(self, grid: list[GridRun] | None = None) -> Plan:
        """The plan the grid's verdicts are judged by: the file's [analysis] over the grid's comparisons."""
        return Plan.for_grid(self.grid() if grid is None else grid, self.analysis, self.source)


KeyPath = tuple[Any, ...]  # a key's place in the parsed data: ("experiment", 0, "prune", "amount")

_NAME = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'  # a bare or quoted key
_DOTTED = rf"{_NAME}(?:\s*\.\s*{_NAME})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(#.*)?$")  # not an array's row: [1, 2],
_KEY = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART = re.compile(rf"{_NAME}")


def _names(dotted: str) -> list[str]:
    return [part.strip("\"'") for part in _PART.findall(dotted)]


class _Locator:
    """Finds the line of any key in the TOML text, so semantic errors can point at it too.

    One pass records where every table header ([defaults.prune], each [[experiment]], [experiment.prune]
    under it) and every key (plain, dotted, or an inline table's name) first appears, by its path in the
    parsed data, arrays of tables counted as TOML counts them. A path not written in the file (a setting
    left at its default) takes the line of its nearest written parent.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[KeyPath, int] = {}
        arrays: dict[KeyPath, int] = {}  # an array of tables: how many of its tables are open so far
        table: KeyPath = ()
        in_string = False
        for number, line in enumerate(text.splitlines(), start=1):
            if line.count('"""') % 2 or line.count("'''") % 2:  # a multi-line string opens or closes
                in_string = not in_string
                if in_string:
                    self._key(table, line, number)
                continue
            if in_string:
                continue
            header = _HEADER.match(line)
            if header:
                names = _names(header.group(2))
                if header.group(1) == "[[":  # one more table of the array: its parents are their latest
                    array = (*self._resolve(names[:-1], arrays), *names[-1:])
                    arrays[array] = arrays.get(array, 0) + 1
                    table = (*array, arrays[array] - 1)
                else:
                    table = self._resolve(names, arrays)
                self.lines.setdefault(table, number)
                continue
            self._key(table, line, number)

    @staticmethod
    def _resolve(names: list[str], arrays: dict[KeyPath, int]) -> KeyPath:
        """A header's names as a path: each array of tables on the way stands for its latest table."""
        path: KeyPath = ()
        for name in names:
            path = (*path, name)
            if path in arrays:
                path = (*path, arrays[path] - 1)
        return path

    def _key(self, table: KeyPath, line: str, number: int) -> None:
        match = _KEY.match(line)
        if match:
            names = _names(match.group(1))
            for depth in range(1, len(names) + 1):  # a dotted key also writes its parents
                self.lines.setdefault((*table, *names[:depth]), number)

    def line_of(self, path: KeyPath | None) -> int | None:
        """The line of `path`, or of its nearest parent written in the file; None if none is."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def validate_settings(values: dict[str, Any], key_prefix: str) -> RunSettings:
    """Check merged settings against their declarations (greenlab.core.plan.settings)."""
    return check(values, key_prefix)


def _split_table(
    table: dict[str, Any], key_path: str, allowed_extra: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Separate plain settings from technique tables, rejecting unknown keys."""
    technique_tables = compression.settings_tables()
    settings: dict[str, Any] = {}
    per_technique: dict[str, dict[str, Any]] = {}
    known = (*SETTING_KEYS, *allowed_extra, *technique_tables)
    for key, value in table.items():
        if key in allowed_extra:
            continue
        if key in technique_tables:
            if not isinstance(value, dict):
                section = "defaults" if key_path == "defaults" else "experiment"
                raise ConfigError(
                    f"must be a table: write [{section}.{key}] with its settings below it", key=f"{key_path}.{key}"
                )
            per_technique[key] = value
        elif key in SETTING_KEYS:
            settings[key] = value
        elif key in analysis.ANALYSIS_KEYS:  # declared once for the grid, before its runs
            raise ConfigError(
                f"'{key}' belongs to the analysis plan, declared once for the whole grid: move it "
                f"under [analysis] (e.g. {key} = {toml_text(analysis.DECLARATION.default(key))})",
                key=f"{key_path}.{key}",
            )
        elif isinstance(value, dict):  # a table here can only be a technique's: name those, not every setting
            raise ConfigError(
                f"unknown technique table '{key}'{suggest(key, tuple(technique_tables))}; remove it "
                f"or fix its name (technique tables: {', '.join(technique_tables)})",
                key=f"{key_path}.{key}",
            )
        else:
            raise ConfigError(
                f"unknown key '{key}'{suggest(key, known)}; remove it or fix its name "
                f"(settings: {', '.join(SETTING_KEYS)})",
                key=f"{key_path}.{key}",
            )
    return settings, per_technique


def parse_grid(text: str, source: str = "<string>", *, guarded: bool = False) -> GridFile:
    """Parse the text of an experiments file; raise ConfigError located in `source`. `guarded`: the file's
    bytes already passed limits.guard_text (load_grid), so the text is not encoded again to count."""
    if not guarded:
        limits.guard_text(text.encode("utf-8", "replace"), source)  # a runaway file, refused before parsing
    try:
        data = tomllib.loads(text)
    except RecursionError:  # tables or arrays nested thousands deep: the parser recurses once per level
        raise ConfigError(
            "tables or arrays are nested deeper than a grid file can be (an experiments file needs three "
            "levels); fix the file",
            source=source,
        ) from None
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        if line is None:
            match = re.search(r"line (\d+)", str(exc))
            line = int(match.group(1)) if match else None
        raise ConfigError(f"not valid TOML: {exc}; fix the syntax there", source=source, line=line) from None
    locator = _Locator(text)
    try:
        experiments, declared = _build(data, locator)
    except _Located as located:
        raise located.error.located(source, located.line) from None
    return GridFile(experiments, declared, source)


def parse_experiments(text: str, source: str = "<string>") -> list[Experiment]:
    """The experiments of an experiments file's text (see parse_grid for its analysis plan)."""
    return parse_grid(text, source).experiments


def build_grid(data: dict[str, Any], source: str = "settings") -> GridFile:
    """Validate experiments given as data (the TUI's form) with the same rules and messages as a file."""
    try:
        experiments, declared = _build(data, _Locator(""))
    except _Located as located:
        raise located.error.located(source) from None
    return GridFile(experiments, declared, source)


def build_experiments(data: dict[str, Any], source: str = "settings") -> list[Experiment]:
    return build_grid(data, source).experiments


class _Located(Exception):
    def __init__(self, error: ConfigError, line: int | None) -> None:
        self.error, self.line = error, line


def _build(data: dict[str, Any], locator: _Locator) -> tuple[list[Experiment], AnalysisSettings]:
    def fail(error: ConfigError, path: KeyPath | None) -> NoReturn:
        raise _Located(error, locator.line_of(path))

    for key in data:
        if key not in TOP_LEVEL_TABLES:
            fail(
                ConfigError(
                    f"unknown top-level table '{key}'{suggest(key, TOP_LEVEL_TABLES)}; "
                    "only [defaults], [[experiment]] and [analysis] are read",
                    key=key,
                ),
                (key,),
            )
    declared = AnalysisSettings()
    if analysis.TABLE in data:
        try:
            declared = analysis.check(data[analysis.TABLE])
        except ConfigError as exc:
            fail(exc, tuple((exc.key or analysis.TABLE).split(".")))
    defaults_table = data.get("defaults", {})
    if not isinstance(defaults_table, dict):
        fail(ConfigError("must be a table: [defaults]", key="defaults"), ("defaults",))
    try:
        max_runs = limits.max_runs(defaults_table)
    except ConfigError as exc:
        fail(exc, ("defaults", limits.MAX_RUNS_KEY))
    defaults_table = {k: v for k, v in defaults_table.items() if k != limits.MAX_RUNS_KEY}
    try:
        default_settings, default_techniques = _split_table(defaults_table, "defaults", ())
        validate_settings({**asdict(RunSettings()), **default_settings}, "defaults")
        for part, table in default_techniques.items():  # checked here, so errors point at [defaults.X]
            compression.validate_settings(part, table, f"defaults.{part}")
    except ConfigError as exc:
        fail(exc, tuple((exc.key or "defaults").split(".")))  # defaults.X or defaults.prune.X

    experiments_raw = data.get("experiment")
    if not experiments_raw:
        fail(
            ConfigError(
                "no experiments; add at least one [[experiment]] table with name, models and techniques",
                key="experiment",
            ),
            None,
        )
    if not isinstance(experiments_raw, list):
        fail(
            ConfigError("must be an array of tables: write [[experiment]], not [experiment]", key="experiment"),
            ("experiment",),
        )
    if len(experiments_raw) > max_runs:
        # Counted before any experiment is validated: each is at least one run, and validating 600,000
        # inline tables (`experiment = [{...}, ...]`, which the header count cannot see) takes minutes.
        fail(limits.too_many_experiments(len(experiments_raw), max_runs), ("experiment",))

    found = limits.control_character(data)  # a name or setting that would drive the terminal it is shown on
    if found is not None:
        fail(found[0], found[1])

    experiments: list[Experiment] = []
    names: set[str] = set()
    for index, raw in enumerate(experiments_raw):
        label = f"experiment[{index}]"
        try:
            if not isinstance(raw, dict):
                raise ConfigError(
                    f"must be a table, got {raw!r}; write each experiment as an [[experiment]] "
                    "table with name, models and techniques",
                    key=label,
                )
            name = raw.get("name")
            if not isinstance(name, str) or not name.strip():
                raise ConfigError('every experiment needs a name = "..."', key=f"{label}.name")
            label = f"experiment '{name}'"
            if name in names:
                raise ConfigError(
                    f"duplicate experiment name '{name}'; names must be unique: rename one, "
                    f"e.g. name = {toml_text(name + '-2')}",
                    key=f"{label}.name",
                )
            names.add(name)
            limits.refuse_in_experiment(raw, label)
            settings_raw, techniques_raw = _split_table(raw, label, EXPERIMENT_KEYS)
            settings = validate_settings({**asdict(RunSettings()), **default_settings, **settings_raw}, label)
            models = _string_list(raw, "models", label)
            for model in models:
                zoo.check_name(model, f"{label}.models")
            written = _string_list(raw, "techniques", label) if "techniques" in raw else ["baseline"]
            # "prune + stego" and "prune+stego" are one technique: store the normalised spelling.
            specs = ["+".join(compression.parse_technique(spec, f"{label}.techniques")) for spec in written]
            if len(set(specs)) != len(specs):
                raise ConfigError(
                    f"lists a technique twice: {toml_text(written)}; remove the repeat", key=f"{label}.techniques"
                )
            # Every table is checked, used or not: a typo in an unused table is still a typo.
            technique_settings = {
                part: compression.validate_settings(
                    part, {**default_techniques.get(part, {}), **techniques_raw.get(part, {})}, f"{label}.{part}"
                )
                for part in {*techniques_raw, *(p for spec in specs for p in spec.split("+"))}
                if part != compression.BASELINE
            }
        except ConfigError as exc:
            # The key path below the experiment's label (names may hold dots; setting keys never do).
            below = (exc.key or "")[len(label) + 1 :].split(".") if (exc.key or "").startswith(label + ".") else []
            fail(exc, ("experiment", index, *filter(None, below)))
        experiments.append(
            Experiment(
                name=name,
                models=tuple(models),
                techniques=tuple(specs),
                settings=settings,
                technique_settings=technique_settings,
            )
        )
    sizes = [limits.Size(e.name, len(e.models), len(e.techniques), e.settings.repeats) for e in experiments]
    try:
        limits.check_size(sizes, max_runs)  # counted, not expanded: a runaway grid costs nothing
    except ConfigError as exc:
        fail(exc, ("defaults", limits.MAX_RUNS_KEY))
    return experiments, declared


def _string_list(raw: dict[str, Any], key: str, label: str) -> list[str]:
    value = raw.get(key)
    example = f"{key} = {toml_text(_LIST_EXAMPLES[key])}"
    if value is None:
        raise ConfigError(f"missing; add e.g. {example}", key=f"{label}.{key}")
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"must be a non-empty list of names in quotes, got {toml_text(value)}; write e.g. {example}",
            key=f"{label}.{key}",
        )
    if len(set(value)) != len(value):
        raise ConfigError(f"lists a name twice: {toml_text(value)}; remove the repeat", key=f"{label}.{key}")
    return value


def load_grid(path: str | Path) -> GridFile:
    """Read and validate an experiments file: its experiments and its analysis plan."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            data = stream.read(limits.MAX_FILE_BYTES + 1)  # never more: a runaway file is refused unread
            if len(data) > limits.MAX_FILE_BYTES:
                size = os.fstat(stream.fileno()).st_size
                raise limits.too_large(max(size, len(data)), str(path))
    except FileNotFoundError:
        raise ConfigError("file not found; pass the path of an experiments.toml", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read it ({exc.strerror or exc}); pass the path of an experiments.toml you can read",
            source=str(path),
        ) from None
    limits.guard_text(data, str(path))  # on the bytes as read: a runaway file is never decoded
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # TOML is UTF-8: point at the first byte that is not
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be read); save the file as UTF-8",
            source=str(path),
            line=line,
        ) from None
    del data  # the text replaces it: a large file is held once, not twice, while it is parsed
    return parse_grid(text, str(path), guarded=True)


def load_experiments(path: str | Path) -> list[Experiment]:
    """Read and validate an experiments file's experiments (see load_grid for its analysis plan)."""
    return load_grid(path).experiments


def technique_order(techniques: tuple[str, ...], order: str, repeat: int, seed: int, model: str) -> list[str]:
    """The techniques of one repeat in the order they run.

    `rotate` starts repeat r at the r-th technique; `shuffle` draws a permutation seeded by the grid's
    seed, the model and the repeat (the same file gives the same order); `as-written` keeps the file's
    order. Rotating or shuffling keeps the baseline, or any technique, from always running first, on a
    cold machine, or last, on the warmest.
    """
    names = list(techniques)
    if order == "rotate" and names:
        shift = repeat % len(names)
        return names[shift:] + names[:shift]
    if order == "shuffle":
        digest = hashlib.sha256(f"{seed}:{model}:{repeat}".encode()).digest()
        random.Random(int.from_bytes(digest[:8], "big")).shuffle(names)
    return names


def expand_grid(experiments: list[Experiment]) -> list[GridRun]:
    """models x techniques x repeats, in an order that interleaves techniques within each repeat.

    Interleaving (repeat 0 of every technique, then repeat 1, ...) spreads a warming machine's penalty
    across techniques instead of loading it onto whichever technique runs last; within a repeat the
    `order` setting rotates or shuffles the techniques. Each run's `position` is its place in the grid.
    """
    runs: list[GridRun] = []
    for experiment in experiments:
        settings = experiment.settings
        for model in experiment.models:
            for repeat in range(settings.repeats):
                for technique in technique_order(experiment.techniques, settings.order, repeat, settings.seed, model):
                    parts = technique.split("+")
                    used = {p: experiment.technique_settings[p] for p in parts if p in experiment.technique_settings}
                    runs.append(
                        GridRun(
                            experiment=experiment.name,
                            model=model,
                            technique=technique,
                            repeat=repeat,
                            settings=settings,
                            technique_settings=used,
                            position=len(runs),
                        )
                    )
    return runs


# -- locating a grid's settings in the file (for checks made after loading, e.g. greenlab.core.plan.preflight) --
def locate_setting(text: str, experiment: str, key: str) -> int | None:
    """The line of `key` as it applies to `experiment` in an experiments file's text.

    The experiment's own table wins; then [defaults]; then the experiment's header line (a value left at
    its built-in default has no line of its own). None when the text does not hold that experiment.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    tables = data.get("experiment")
    if not isinstance(tables, list):
        return None
    names = [table.get("name") if isinstance(table, dict) else None for table in tables]
    if experiment not in names:
        return None
    index = names.index(experiment)
    locator = _Locator(text)
    if key in tables[index]:
        return locator.line_of(("experiment", index, key))
    defaults = data.get("defaults")
    if isinstance(defaults, dict) and key in defaults:
        return locator.line_of(("defaults", key))
    return locator.line_of(("experiment", index))
