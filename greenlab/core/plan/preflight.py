"""Preflight: check a grid for what it will need before any run starts or any row is written.

The devices a grid names must exist, its datasets and pretrained weights must be present or
downloadable, `imagefolder:` paths readable with class folders of images, and its numbers within what
this machine can hold. Every problem becomes one line naming the file, the line, the key and the fix.
Nothing is written, and the check takes seconds: torch is imported only when a grid names a GPU device
(device counts come from NVML through torch.cuda.device_count, so CUDA is never initialised here), and
each download host is probed once, all at the same time, with a short timeout.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from greenlab.core.errors import GreenLabError
from greenlab.core.plan import fetch
from greenlab.core.plan.config import GridRun, locate_setting
from greenlab.core.train import datasets, zoo

MAX_IMAGE_SIZE = 4096  # px; beyond any pretrained model's input and any sane fine-tuning
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
# One batch of float32 inputs may use at most this share of the machine's memory: the model's
# activations take many times more, so a batch beyond it cannot train here.
_BATCH_MEMORY_SHARE = 0.5
# torchvision's IMG_EXTENSIONS (ImageFolder reads these), kept here so the check needs no torchvision import.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Problem:
    """One thing that would fail the grid, located where the file sets it."""

    key: str  # e.g. "experiment 'demo'.device"
    message: str  # what is wrong, then the fix
    source: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.source and self.line else (self.source or "")
        return f"{where}: {self.key}: {self.message}" if where else f"{self.key}: {self.message}"


class PreflightError(GreenLabError):
    """The grid cannot run here; the message holds one line per problem."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class PreflightReport:
    problems: list[Problem] = field(default_factory=list)
    to_fetch: list[fetch.Requirement] = field(default_factory=list)  # missing, and its host answers
    reachable: dict[str, bool] = field(default_factory=dict)

    def raise_for_problems(self) -> None:
        if self.problems:
            raise PreflightError(self.problems)


def check(
    runs: list[GridRun],
    *,
    source: str | None = None,
    text: str | None = None,
    sources: fetch.Sources | None = None,
    probe: Callable[[Iterable[str]], dict[str, bool]] = fetch.probe_hosts,
    devices: bool = True,
) -> PreflightReport:
    """Every problem of the grid at once; `text` (the file's) lets each problem carry its line. `devices`
    False leaves the devices to whoever places the runs (a Ray cluster's GPUs are not this machine's)."""
    report = PreflightReport()
    found: dict[tuple[str, str, str], None] = {}

    def problem(run: GridRun, key: str, message: str) -> None:
        found[(run.experiment, key, message)] = None

    if devices:
        _check_devices(runs, problem)
    for run in runs:
        _check_numbers(run, problem)
        if run.settings.dataset.startswith(datasets.IMAGEFOLDER_PREFIX):
            folder = Path(run.settings.dataset[len(datasets.IMAGEFOLDER_PREFIX) :]).expanduser()
            message = image_folder_problem(folder)
            if message:
                problem(run, "dataset", message)
    _check_downloads(runs, sources, probe, problem, report, source)

    for experiment, key, message in found:
        line = locate_setting(text, experiment, key) if text is not None else None
        report.problems.append(Problem(f"experiment '{experiment}'.{key}", message, source, line))
    return report


def check_file(runs: list[GridRun], path: str | os.PathLike[str], **kwargs: object) -> PreflightReport:
    """`check` for a grid loaded from a file, its problems located in that file."""
    try:
        text: str | None = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = None
    return check(runs, source=str(path), text=text, **kwargs)  # type: ignore[arg-type]


# -- devices ---------------------------------------------------------------------------------------------
def _check_devices(runs: list[GridRun], problem: Callable[[GridRun, str, str], None]) -> None:
    named = [run for run in runs if run.settings.device.startswith(("cuda", "mps"))]
    if not named:
        return  # auto and cpu always work: no torch import for them
    import torch

    cuda_count = torch.cuda.device_count()  # NVML-based where available: no CUDA context is created
    for run in named:
        device = run.settings.device
        if device == "mps":
            mps = getattr(torch.backends, "mps", None)
            if not (mps and mps.is_available()):
                problem(
                    run,
                    "device",
                    "device 'mps' requested but Apple's Metal (MPS) is not available here; "
                    'use device = "cpu" or "auto"',
                )
            continue
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if cuda_count == 0:
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            problem(
                run,
                "device",
                f'device \'{device}\' requested but CUDA is not available here ({why}); use device = "cpu" or "auto"',
            )
        elif index >= cuda_count:
            problem(
                run,
                "device",
                f"device '{device}' requested but this machine has {cuda_count} CUDA "
                f"device{'s' if cuda_count > 1 else ''} (cuda:0 to cuda:{cuda_count - 1}); "
                'pick one of those, or use "cuda" or "auto"',
            )


# -- numbers ---------------------------------------------------------------------------------------------
def _machine_memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001 - no memory figure: skip the estimate rather than guess
        return None


def _check_numbers(run: GridRun, problem: Callable[[GridRun, str, str], None]) -> None:
    s = run.settings
    if s.epochs > MAX_EPOCHS:
        problem(run, "epochs", f"{s.epochs} epochs is beyond any fine-tuning (at most {MAX_EPOCHS}); lower epochs")
    if s.batch_size > MAX_BATCH_SIZE:
        problem(
            run,
            "batch_size",
            f"batch_size {s.batch_size} is beyond what any device holds (at most {MAX_BATCH_SIZE}); lower batch_size",
        )
    spec = zoo.spec_for(run.model)
    if spec.modality != "image":
        return
    if s.image_size is not None and s.image_size > MAX_IMAGE_SIZE:
        problem(
            run,
            "image_size",
            f"image_size {s.image_size} px is beyond any model's input (at most "
            f"{MAX_IMAGE_SIZE} px); lower image_size, or remove it to train at "
            "each model's own input size",
        )
        return
    size = s.image_size or datasets.default_image_size(s.dataset, spec.input_size, spec.min_input_size)
    batch_bytes = s.batch_size * 3 * size * size * 4  # one float32 batch of inputs
    memory = _machine_memory_bytes()
    if memory and batch_bytes > memory * _BATCH_MEMORY_SHARE:
        key = "image_size" if s.image_size is not None else "batch_size"
        problem(
            run,
            key,
            f"one batch of {s.batch_size} inputs at {size} px needs {batch_bytes / 1e9:.1f} GB "
            f"before any activation, and this machine has {memory / 1e9:.1f} GB of memory; "
            "lower batch_size or image_size",
        )


# -- image folders ---------------------------------------------------------------------------------------
def _entries(path: Path) -> list[os.DirEntry[str]]:
    with os.scandir(path) as listing:
        return list(listing)


def _holds_image(folder: Path) -> bool:
    for _root, _dirs, files in os.walk(folder, followlinks=True, onerror=_raise):
        if any(name.lower().endswith(IMAGE_EXTENSIONS) for name in files):
            return True
    return False


def _raise(error: OSError) -> None:
    raise error  # os.walk skips unreadable folders silently; ImageFolder would fail on them


def image_folder_problem(path: Path) -> str | None:
    """Why ImageFolder could not read `path` (one subfolder of images per class), or None."""
    readable = f"make it readable (chmod -R u+rX {path}) or fix the path"
    try:
        classes = sorted((e for e in _entries(path) if e.is_dir()), key=lambda e: e.name)
        empty = [e.name for e in classes if not _holds_image(Path(e.path))]
    except FileNotFoundError:
        return f"image folder {path} does not exist; give a folder with one subfolder of images per class"
    except OSError as exc:
        return f"cannot read image folder {path} ({exc.strerror or exc}); {readable}"
    if not classes:
        return (
            f"image folder {path} holds no class folders; put the images in one subfolder per class "
            f"({', '.join(IMAGE_EXTENSIONS)})"
        )
    if empty:
        return (
            f"class folder{'s' if len(empty) > 1 else ''} {', '.join(empty[:5])} in {path} hold"
            f"{'' if len(empty) > 1 else 's'} no image file ({', '.join(IMAGE_EXTENSIONS)}); add images or "
            "remove the folder"
        )
    return None


# -- downloads -------------------------------------------------------------------------------------------
def _check_downloads(
    runs: list[GridRun],
    sources: fetch.Sources | None,
    probe: Callable[[Iterable[str]], dict[str, bool]],
    problem: Callable[[GridRun, str, str], None],
    report: PreflightReport,
    source: str | None,
) -> None:
    needs = fetch.plan(runs, sources)
    missing = fetch.missing(needs)
    if not missing:
        return
    hosts = {item.host for item in missing if not (isinstance(item, fetch.HubModel) and fetch.hub_offline())}
    report.reachable = probe(hosts) if hosts else {}
    unreachable = set()
    for item in missing:
        if report.reachable.get(item.host) and not (isinstance(item, fetch.HubModel) and fetch.hub_offline()):
            report.to_fetch.append(item)
        else:
            unreachable.add(item)
    first_run = {run.experiment: run for run in reversed(runs)}
    for need in needs:
        if need.requirement in unreachable:
            alternative = {
                "dataset": '; or use dataset = "digits" (bundled, offline)',
                "models": "; or set pretrained = false (random init, offline)",
            }[need.key]
            if isinstance(need.requirement, fetch.HubModel):
                alternative = "; hf-tiny-bert runs fully offline"
            problem(
                first_run[need.experiment], need.key, fetch.unreachable_reason(need.requirement, source) + alternative
            )
