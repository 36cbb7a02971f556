"""What a grid must download before it runs, and the downloads themselves, with progress and checksums.

A grid may need CIFAR-10 (torchvision's archive, into data/downloads), torchvision's pretrained weight
files (torch hub's cache, $TORCH_HOME/hub/checkpoints) and Hugging Face models (Hugging Face's cache).
`plan` lists what a grid needs, `fetch_all` downloads what is missing and reports progress as small
event dataclasses, so every face draws the same bars. Checksums are verified where the source publishes
them: CIFAR-10's md5 (torchvision's CIFAR10 class) and the sha256 prefix in the name of every
torchvision weight file (torch.hub's check_hash rule).

Where each file comes from is a `Sources` value, so tests and mirrors can point elsewhere. Nothing
here touches the run store.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from greenlab import __version__
from greenlab.core.errors import GreenLabError
from greenlab.core.plan.config import GridRun
from greenlab.core.train import datasets, zoo

PROBE_TIMEOUT_S = 3.0  # "downloadable" = the host answers a TCP connect this fast
_READ_TIMEOUT_S = 30.0  # a stalled transfer fails instead of hanging the grid
_CHUNK = 1 << 16
_PROGRESS_EVERY_S = 0.1


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # a hashlib name: md5, sha256
    expected: str  # hex digest, or its leading characters when `prefix`
    prefix: bool = False

    def matches(self, digest: str) -> bool:
        return digest.startswith(self.expected) if self.prefix else digest == self.expected

    def describe(self) -> str:
        return f"{self.algorithm} {'prefix ' if self.prefix else ''}{self.expected}"


@dataclass(frozen=True)
class FileDownload:
    """One file fetched from a URL into a cache folder."""

    what: str  # e.g. "CIFAR-10", "resnet18 weights"
    url: str
    dest: Path
    checksum: Checksum | None = None
    ready: tuple[Path, ...] = ()  # files whose presence also means nothing to do (an unpacked archive)
    unpack: bool = False  # extract the archive beside `dest` once verified

    @property
    def host(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    def present(self) -> bool:
        return self.dest.is_file() or (bool(self.ready) and all(p.is_file() for p in self.ready))

    def manual_fix(self) -> str:
        return f"put {self.dest.name} (from {self.url}) in {self.dest.parent}"


@dataclass(frozen=True)
class HubModel:
    """A Hugging Face model (config, tokenizer and weights) fetched into Hugging Face's cache."""

    what: str
    repo_id: str
    pretrained: bool
    endpoint: str

    @property
    def host(self) -> str:
        parts = urlsplit(self.endpoint)
        return f"{parts.scheme}://{parts.netloc}"

    def present(self) -> bool:
        from huggingface_hub import try_to_load_from_cache

        def cached(filename: str) -> bool:
            try:
                return isinstance(try_to_load_from_cache(self.repo_id, filename), str)
            except Exception:  # noqa: BLE001 - an id the hub rejects is not cached; fetching it will say why
                return False

        if not cached("config.json"):
            return False
        return not self.pretrained or any(
            cached(f)
            for f in (
                "model.safetensors",
                "pytorch_model.bin",
                "model.safetensors.index.json",
                "pytorch_model.bin.index.json",
            )
        )

    def manual_fix(self) -> str:
        from huggingface_hub import constants

        return (
            f"run `huggingface-cli download {self.repo_id}` with internet and copy the cache to "
            f"{constants.HF_HUB_CACHE}, or download it to a folder and use hf:/path/to/that/folder"
        )


Requirement = FileDownload | HubModel


@dataclass(frozen=True)
class Need:
    """A requirement and the setting of the experiment that asks for it (for located messages)."""

    requirement: Requirement
    experiment: str
    key: str  # "dataset" or "models"
    subject: str  # the dataset or model name


# -- where files come from --------------------------------------------------------------------------------
def _cifar10() -> FileDownload:
    from torchvision.datasets import CIFAR10

    root = datasets.data_dir()
    unpacked = root / CIFAR10.base_folder
    return FileDownload(
        "CIFAR-10",
        CIFAR10.url,
        root / CIFAR10.filename,
        Checksum("md5", CIFAR10.tgz_md5),
        ready=tuple(unpacked / name for name, _ in (*CIFAR10.train_list, *CIFAR10.test_list)),
        unpack=True,
    )


def weights_file(url: str, what: str) -> FileDownload:
    """A torch hub checkpoint: cached under its own name in $TORCH_HOME/hub/checkpoints, checked by the
    sha256 prefix the name carries (resnet18-f37072fd.pth), as torch.hub's check_hash does."""
    import torch.hub

    name = url.rsplit("/", 1)[-1]
    match = torch.hub.HASH_REGEX.search(name)
    checksum = Checksum("sha256", match.group(1), prefix=True) if match and match.group(1) else None
    return FileDownload(what, url, Path(torch.hub.get_dir()) / "checkpoints" / name, checksum)


def _torchvision_weights(model: str) -> FileDownload:
    from torchvision.models import get_model_weights

    return weights_file(get_model_weights(model).DEFAULT.url, f"{model} weights")


def _hf_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@dataclass(frozen=True)
class Sources:
    """Where each kind of file comes from; the defaults are torchvision's and Hugging Face's own hosts."""

    cifar10: Callable[[], FileDownload] = field(default=_cifar10)
    weights: Callable[[str], FileDownload] = field(default=_torchvision_weights)
    hf_endpoint: Callable[[], str] = field(default=_hf_endpoint)


def _hub_model(model: str, repo_id: str, pretrained: bool, sources: Sources) -> HubModel:
    return HubModel(model, repo_id, pretrained, sources.hf_endpoint())


def plan(runs: Iterable[GridRun], sources: Sources | None = None) -> list[Need]:
    """Everything the grid downloads on first use, once per experiment and setting, present or not."""
    sources = sources or Sources()
    needs: dict[Need, None] = {}
    cache: dict[str, Requirement] = {}

    def need(name: str, build: Callable[[], Requirement], run: GridRun, key: str) -> None:
        if name not in cache:
            cache[name] = build()
        needs[Need(cache[name], run.experiment, key, name)] = None

    for run in runs:
        s = run.settings
        if s.dataset == "cifar10":
            need("cifar10", sources.cifar10, run, "dataset")
        spec = zoo.spec_for(run.model)
        if spec.source == "torchvision" and s.pretrained:
            need(run.model, partial(sources.weights, run.model), run, "models")
        elif spec.source == "transformers":
            repo_id = run.model[len(zoo.HF_PREFIX) :]
            if not Path(repo_id).expanduser().is_dir():  # a local folder needs nothing fetched
                # Even random init reads the hub's config.json (and the tokenizer), so every hf: model needs it.
                need(
                    f"{run.model}:{s.pretrained}",
                    partial(_hub_model, run.model, repo_id, s.pretrained, sources),
                    run,
                    "models",
                )
    return list(needs)


def missing(needs: Iterable[Need]) -> list[Requirement]:
    """The distinct requirements not yet in their caches, in the grid's order."""
    seen: dict[Requirement, None] = {}
    for item in needs:
        if item.requirement not in seen and not item.requirement.present():
            seen[item.requirement] = None
    return list(seen)


# -- can we reach the hosts? ------------------------------------------------------------------------------
def _probe_target(host: str) -> tuple[str, int]:
    """The address a download from `host` connects to first: the proxy for its scheme, when one is set."""
    parts = urlsplit(host)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


def probe_hosts(hosts: Iterable[str], timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, bool]:
    """Whether each host (scheme://name[:port]) accepts a TCP connection within `timeout_s`, all at once.

    Threads with a join deadline, because a name lookup offline can take longer than any socket timeout.
    """
    results: dict[str, bool] = {}
    threads = []

    def probe(host: str) -> None:
        try:
            with socket.create_connection(_probe_target(host), timeout=timeout_s):
                results[host] = True
        except (OSError, ValueError):
            results[host] = False

    for host in dict.fromkeys(hosts):
        thread = threading.Thread(target=probe, args=(host,), daemon=True)
        thread.start()
        threads.append((host, thread))
    deadline = time.monotonic() + timeout_s + 0.5
    for _host, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {host: results.get(host, False) for host, _ in threads}


def hub_offline() -> bool:
    """Hugging Face's own switch for offline use (HF_HUB_OFFLINE=1): no hub download is tried then."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# -- progress events --------------------------------------------------------------------------------------
@dataclass
class DownloadStarted:
    what: str
    source: str  # URL or hub id
    dest: str
    total_bytes: int | None


@dataclass
class DownloadProgressed:
    what: str
    done_bytes: int
    total_bytes: int | None
    rate_bps: float  # bytes per second since the start
    eta_s: float | None


@dataclass
class DownloadFinished:
    what: str
    dest: str
    total_bytes: int
    seconds: float
    verified: str  # "md5 c58f... verified", or why nothing could be verified


@dataclass
class DownloadFailed:
    what: str
    reason: str  # what went wrong and where to put the file by hand


DownloadEvent = DownloadStarted | DownloadProgressed | DownloadFinished | DownloadFailed
DownloadListener = Callable[[DownloadEvent], None]


class FetchError(GreenLabError):
    """A file could not be fetched or failed its checksum; the message says where to put it by hand."""


class _Meter:
    """Turns byte counts into at most a few progress events a second."""

    def __init__(self, what: str, total: int | None, on_event: DownloadListener) -> None:
        self.what, self.total, self.on_event = what, total, on_event
        self.done = 0
        self.started = time.monotonic()
        self._last = 0.0

    def add(self, count: int, force: bool = False) -> None:
        self.done += count
        now = time.monotonic()
        if force or now - self._last >= _PROGRESS_EVERY_S:
            self._last = now
            elapsed = max(now - self.started, 1e-6)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate if self.total and rate > 0 else None
            self.on_event(DownloadProgressed(self.what, self.done, self.total, rate, eta))

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


def download_file(item: FileDownload, on_event: DownloadListener) -> DownloadFinished:
    """Fetch one file into its cache: streamed to a .part file, verified, then moved into place."""
    item.dest.parent.mkdir(parents=True, exist_ok=True)
    partial = item.dest.with_name(item.dest.name + ".part")
    hasher = hashlib.new(item.checksum.algorithm) if item.checksum else None
    request = urllib.request.Request(item.url, headers={"User-Agent": f"greenlab/{__version__}"})
    try:
        return _download_verified(item, request, partial, hasher, on_event)
    finally:
        partial.unlink(missing_ok=True)  # after a failure or Ctrl-C; a verified file was already moved


def _download_verified(
    item: FileDownload, request: urllib.request.Request, partial: Path, hasher: Any, on_event: DownloadListener
) -> DownloadFinished:
    try:
        with urllib.request.urlopen(request, timeout=_READ_TIMEOUT_S) as response, open(partial, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            on_event(DownloadStarted(item.what, item.url, str(item.dest), total))
            meter = _Meter(item.what, total, on_event)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                meter.add(len(chunk))
            meter.add(0, force=True)
        if total is not None and meter.done != total:
            raise OSError(f"the connection closed after {meter.done} of {total} bytes")
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"{item.what}: could not download {item.url} ({_reason(exc)}); {item.manual_fix()}") from None
    verified = "no published checksum to verify"
    if hasher is not None and item.checksum is not None:
        digest = hasher.hexdigest()
        if not item.checksum.matches(digest):
            raise FetchError(
                f"{item.what}: checksum mismatch: {item.checksum.algorithm} of the file from "
                f"{item.url} is {digest}, expected {item.checksum.describe()}; it was not kept. "
                f"Retry, or {item.manual_fix()}"
            )
        verified = f"{item.checksum.describe()} verified"
    os.replace(partial, item.dest)
    if item.unpack:
        _unpack(item)
    return DownloadFinished(item.what, str(item.dest), meter.done, meter.seconds, verified)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def _unpack(item: FileDownload) -> None:
    from torchvision.datasets.utils import extract_archive

    try:
        extract_archive(str(item.dest), str(item.dest.parent))
    except Exception as exc:  # noqa: BLE001 - any unreadable archive is the same problem for the user
        raise FetchError(
            f"{item.what}: {item.dest} passed its checksum but cannot be unpacked "
            f"({type(exc).__name__}: {exc}); delete it and fetch again"
        ) from None


def _hub_reporting_bar(report: Callable[[int], None]) -> type:
    """A silent tqdm class whose byte counts reach our events (huggingface_hub draws bars through tqdm)."""
    from tqdm.auto import tqdm

    class Reporting(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            report(int(n or 0))
            return super().update(n)

    return Reporting


def _hub_files(files: list[Any]) -> list[Any]:
    """Config, tokenizer and one weights format (safetensors when published): what transformers loads."""
    names = {f.filename for f in files}
    weights_ext = ".safetensors" if any(n.endswith(".safetensors") for n in names) else ".bin"
    chosen = []
    for f in files:
        name = f.filename
        top_level = "/" not in name
        if top_level and name.endswith((".json", ".txt", ".model", weights_ext)):
            chosen.append(f)
    return chosen


def download_hub_model(item: HubModel, on_event: DownloadListener) -> DownloadFinished:
    """Fetch a Hugging Face model's files into Hugging Face's cache, one file at a time with progress."""
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        listing = snapshot_download(item.repo_id, endpoint=item.endpoint, dry_run=True)
        files = [f for f in _hub_files(list(listing)) if f.will_download]
        total = sum(f.file_size or 0 for f in files) or None
        on_event(DownloadStarted(item.what, f"{item.endpoint}/{item.repo_id}", "Hugging Face cache", total))
        meter = _Meter(item.what, total, on_event)
        bar = _hub_reporting_bar(meter.add)
        for f in files:
            hf_hub_download(item.repo_id, f.filename, endpoint=item.endpoint, tqdm_class=bar)
        meter.add(0, force=True)
    except Exception as exc:  # noqa: BLE001 - hub errors come in many classes; each is the same for the user
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise FetchError(
            f"{item.what}: could not download {item.repo_id} from {item.endpoint} "
            f"({type(exc).__name__}: {first}); {item.manual_fix()}"
        ) from None
    return DownloadFinished(
        item.what,
        "Hugging Face cache",
        meter.done,
        meter.seconds,
        "checked by huggingface_hub (no checksum verified here)",
    )


# -- fetching a grid's needs ------------------------------------------------------------------------------
@dataclass
class FetchReport:
    present: list[Requirement] = field(default_factory=list)
    fetched: list[Requirement] = field(default_factory=list)
    failed: list[tuple[Requirement, str]] = field(default_factory=list)  # and why, with the manual fix


def unreachable_reason(item: Requirement, experiments_file: str | None = None, *, fetching: bool = False) -> str:
    """Why `item` cannot be fetched from here, and the ways to get it anyway. `fetching`: said by
    `greenlab --fetch` itself, where only the way by hand is left (and a rerun of it then checks the file)."""
    if isinstance(item, HubModel) and hub_offline():
        why = "HF_HUB_OFFLINE is set"
    else:
        why = f"{item.host} cannot be reached from here"
    command = f"`greenlab --fetch {experiments_file or 'FILE'}`"
    if fetching:
        return f"{item.what}: not in the cache and {why}; by hand: {item.manual_fix()}; then run {command} again"
    return f"{item.what}: not in the cache and {why}; run {command} on a machine with internet, or {item.manual_fix()}"


def fetch_all(
    requirements: Iterable[Requirement],
    on_event: DownloadListener,
    reachable: dict[str, bool] | None = None,
    *,
    experiments_file: str | None = None,
    fetching: bool = False,
) -> FetchReport:
    """Download every missing requirement; hosts found unreachable are not tried (each fails at once,
    with `unreachable_reason(item, experiments_file, fetching=fetching)`)."""
    report = FetchReport()
    todo: list[Requirement] = []
    for item in dict.fromkeys(requirements):
        (report.present if item.present() else todo).append(item)
    if reachable is None:
        reachable = probe_hosts(item.host for item in todo if not (isinstance(item, HubModel) and hub_offline()))
    for item in todo:
        if not reachable.get(item.host, False) or (isinstance(item, HubModel) and hub_offline()):
            reason = unreachable_reason(item, experiments_file, fetching=fetching)
            report.failed.append((item, reason))
            on_event(DownloadFailed(item.what, reason))
            continue
        try:
            if isinstance(item, HubModel):
                finished = download_hub_model(item, on_event)
            else:
                finished = download_file(item, on_event)
        except FetchError as exc:
            report.failed.append((item, str(exc)))
            on_event(DownloadFailed(item.what, str(exc)))
            continue
        report.fetched.append(item)
        on_event(finished)
    return report


# -- words for faces --------------------------------------------------------------------------------------
def format_bytes(count: float | None) -> str:
    if count is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def format_progress(event: DownloadEvent, width: int = 20) -> str:
    """One line for any download event: a bar with bytes, rate and ETA while it runs."""
    if isinstance(event, DownloadStarted):
        return f"{event.what}: downloading {format_bytes(event.total_bytes)} from {event.source}"
    if isinstance(event, DownloadProgressed):
        if event.total_bytes:
            fraction = min(event.done_bytes / event.total_bytes, 1.0)
            filled = int(width * fraction)
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} "
        else:
            bar = ""
        return (
            f"{event.what} {bar}{format_bytes(event.done_bytes)} of {format_bytes(event.total_bytes)} "
            f"at {format_bytes(event.rate_bps)}/s, ETA {format_eta(event.eta_s)}"
        )
    if isinstance(event, DownloadFinished):
        return (
            f"{event.what}: {format_bytes(event.total_bytes)} in {event.seconds:.1f} s into {event.dest}; "
            f"{event.verified}"
        )
    return f"{event.what}: FAILED: {event.reason}"
