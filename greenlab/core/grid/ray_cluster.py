"""The Ray cluster a grid runs on: joining or starting it, its nodes, and where each run may be placed.

`connect(address)` starts a local Ray instance on this machine (`local`, the default) or joins a cluster
(`auto`, `ray://host:port`, or whatever RAY_ADDRESS says when no address is given). Placement follows
what can be attributed: a CUDA run takes one whole GPU (`num_gpus=1`: a shared board's energy cannot be
split), a CPU run takes all of a node's CPUs (or `cpus_per_run`), so its RAPL figures are its own.
`placement_problems` refuses, before anything is written, a grid the cluster cannot place.

Ray is imported inside these functions only: a grid without `--ray` never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenlab.core.errors import GreenLabError
from greenlab.core.grid.ray_noise import RayNoise
from greenlab.core.plan.config import GridRun, locate_setting
from greenlab.core.plan.preflight import PreflightError, Problem
from greenlab.core.text import clip, escape_controls
from greenlab.core.train import datasets

LOCAL = "local"
ADDRESS_ENV = "RAY_ADDRESS"
CONNECT_TIMEOUT_ENV = "GREENLAB_RAY_CONNECT_TIMEOUT_S"
CONNECT_TIMEOUT_S = 10.0  # ray.init retries an address where nothing listens for minutes; we ask once, this long
CLIENT_PORT = 10001  # Ray Client's port when a ray:// address names none


def resolve_address(address: str | None) -> str:
    """The address to use: the one given, else RAY_ADDRESS, else a local instance."""
    return address or os.environ.get(ADDRESS_ENV) or LOCAL


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise GreenLabError(
            "--ray needs Ray, which is not installed here; pip install 'greenlab[ray]' (or pip install ray)"
        ) from None
    return ray


@dataclass(frozen=True)
class Node:
    node_id: str
    hostname: str
    address: str
    cpus: int
    gpus: int


class RayCluster:
    """A connection to Ray; `close()` shuts down only an instance this object started."""

    def __init__(self, address: str, *, owned: bool, noise: RayNoise | None = None) -> None:
        self.address = address
        self.owned = owned
        self.noise = noise or RayNoise()

    # -- nodes ----------------------------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        """The alive nodes and their CPU and GPU totals."""
        ray = import_ray()
        found = []
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            resources = node.get("Resources", {})
            found.append(
                Node(
                    node_id=node["NodeID"],
                    hostname=node.get("NodeManagerHostname", ""),
                    address=node.get("NodeManagerAddress", ""),
                    cpus=int(resources.get("CPU", 0)),
                    gpus=int(resources.get("GPU", 0)),
                )
            )
        return found

    @property
    def single_host(self) -> bool:
        """Every node is this machine (a local instance, or a cluster started here): the driver then holds
        this host's measurement lock for the grid, as a local grid does, and the tasks hold none."""
        here = socket.gethostname()
        return all(node.hostname == here for node in self.nodes())

    def describe(self) -> str:
        nodes = self.nodes()
        cpus, gpus = sum(n.cpus for n in nodes), sum(n.gpus for n in nodes)
        kind = "a local Ray instance" if self.address == LOCAL else f"the Ray cluster at {self.address}"
        return (
            f"{kind}: {len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus} CPU{'s' if cpus != 1 else ''}, "
            f"{gpus} GPU{'s' if gpus != 1 else ''}"
        )

    # -- placement ------------------------------------------------------------------------------------
    def uses_gpu(self, run: GridRun) -> bool:
        device = run.settings.device
        return device.startswith("cuda") or (device == "auto" and any(n.gpus for n in self.nodes()))

    def task_options(self, run: GridRun) -> dict[str, Any]:
        """Ray resources for one run: a whole GPU (and a CPU per data-loading process), or a node's CPUs."""
        nodes = self.nodes()
        if self.uses_gpu(run):
            # `num_workers = "auto"` takes the spare cores the child will see on its node: reserve as many.
            cores = max((n.cpus for n in nodes if n.gpus), default=1)
            return {"num_gpus": 1, "num_cpus": 1 + datasets.worker_count(run.settings.num_workers, "cuda", cores)}
        cpus = run.settings.cpus_per_run or max((n.cpus for n in nodes), default=1)
        return {"num_cpus": cpus, "num_gpus": 0}

    def other_node(self, avoid: str, options: dict[str, Any]) -> str | None:
        """An alive node other than `avoid` that can hold a task with `options` (for a retry), or None."""
        for node in self.nodes():
            if (
                node.node_id != avoid
                and node.cpus >= options.get("num_cpus", 1)
                and node.gpus >= options.get("num_gpus", 0)
            ):
                return node.node_id
        return None

    def placement_problems(self, runs: list[GridRun]) -> list[tuple[GridRun, str, str]]:
        """(run, key, message) for each run the cluster cannot place; each message ends with the fix."""
        nodes = self.nodes()
        problems = []
        for run in runs:
            device = run.settings.device
            if device.startswith("cuda:"):
                problems.append(
                    (
                        run,
                        "device",
                        f"device '{device}' names a GPU, but on Ray each CUDA run gets "
                        'a whole GPU that Ray chooses; use device = "cuda" (or "auto")',
                    )
                )
                continue
            options = self.task_options(run)
            if not any(n.cpus >= options["num_cpus"] and n.gpus >= options["num_gpus"] for n in nodes):
                if options["num_gpus"]:
                    problems.append(
                        (
                            run,
                            "device",
                            f"device '{device}' needs a GPU, but no node of "
                            f"{self.describe()} has one with {options['num_cpus']} CPUs; "
                            'use device = "cpu", or add a GPU node',
                        )
                    )
                else:
                    most = max((n.cpus for n in nodes), default=0)
                    problems.append(
                        (
                            run,
                            "cpus_per_run",
                            f"a run needs {options['num_cpus']} CPUs, but the "
                            f"largest node has {most}; set cpus_per_run = {most} "
                            "or fewer",
                        )
                    )
        return problems

    def close(self) -> None:
        if self.owned:
            import_ray().shutdown()
            self.owned = False
        self.noise.restore()


def connect(address: str | None = None, noise: RayNoise | None = None) -> RayCluster:
    """Start a local Ray instance or join a cluster; GreenLabError (exit 2, nothing written) if it fails.
    A Ray already initialised in this process (by a test, say) is used as it is, and left running.
    Ray's own output goes to `noise`'s log (greenlab.core.grid.ray_noise) from here on."""
    ray = import_ray()
    address = resolve_address(address)
    noise = noise or RayNoise()
    if ray.is_initialized():
        noise.route_listener()
        return RayCluster(address, owned=False, noise=noise)
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address == LOCAL:
        options["_node_ip_address"] = "127.0.0.1"  # a local instance listens on this machine only
    else:
        probe_address(address)
    try:
        with _streams_with_descriptors(), noise.descriptor_quiet():
            ray.init(address=address, **options)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError, depending on the address
        where = noise.where()
        if address.startswith("ray://") and "timeout" in str(exc).lower():
            where = (
                "a cluster started with Ray's token authentication (on by default since Ray 2.60) refuses "
                "Ray Client without its token: start it with RAY_AUTH_MODE=disabled on a trusted network, or "
                "pass its GCS address (host:6379) from a machine that holds the token; see docs/ray.md"
                + (f"; {where}" if where else "")
            )
        raise GreenLabError(
            f"cannot use Ray at '{address}' ({first_line_of(exc)}); start a cluster with `ray start --head` "
            "and pass --ray auto (or its ray://host:port), or --ray local for this machine alone"
            + (f"; {where}" if where else "")
        ) from None
    noise.route_listener()
    return RayCluster(address, owned=True, noise=noise)


def connect_timeout_s() -> float:
    """How long to wait for a cluster's address to answer: GREENLAB_RAY_CONNECT_TIMEOUT_S, else 10 s."""
    text = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    try:
        value = float(text) if text else CONNECT_TIMEOUT_S
    except ValueError:
        raise GreenLabError(
            f"{CONNECT_TIMEOUT_ENV}={text!r} is not a number of seconds; set it to, say, 10, or unset it"
        ) from None
    if not value > 0:
        raise GreenLabError(f"{CONNECT_TIMEOUT_ENV}={text!r} must be above 0 seconds; set it to, say, 10, or unset it")
    return value


def endpoint(address: str) -> tuple[str, int] | None:
    """The host and port that `address` (auto, host:port or ray://host[:port]) reaches, or None when only
    ray.init can tell; GreenLabError when `auto` finds no cluster or the address has no port."""
    given = address
    if address == "auto":
        found = _auto_address(given)
        if found is None:
            return None
        address = found
    if address.startswith("ray://"):
        rest = address.removeprefix("ray://").split("/", 1)[0]
        host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", str(CLIENT_PORT))
    else:
        host, _, port = address.rpartition(":")
    host = host.strip("[]")  # an IPv6 literal
    if not host or not port.isdigit():
        raise GreenLabError(
            f"cannot use Ray at '{given}': not an address Ray knows; pass --ray host:port (a cluster's GCS, "
            "port 6379 by default), ray://host:10001 (Ray Client), auto, or local"
        )
    return host, int(port)


def _auto_address(given: str) -> str | None:
    """What `auto` means to Ray: RAY_ADDRESS, else the cluster last started here (`ray start`)."""
    env = os.environ.get(ADDRESS_ENV, "").strip()
    if env and env != "auto":
        return env
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:  # Ray moved its private helper: let ray.init find the cluster itself
        return None
    try:
        return str(canonicalize_bootstrap_address_or_die("auto"))
    except Exception as exc:  # noqa: BLE001 - ConnectionError or ValueError, depending on what it found
        raise GreenLabError(
            f"cannot use Ray at '{given}': {first_line_of(exc)}; start one with `ray start --head`, "
            "or pass its address (--ray host:port), or --ray local for this machine alone"
        ) from None


# An HTTP/2 client's first words (RFC 9113 §3.4) and an empty SETTINGS frame: a gRPC server (Ray's GCS, Ray
# Client) answers with a SETTINGS frame of its own; anything else that answers is not Ray.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_FRAME_SETTINGS = 0x04


def probe_address(address: str) -> None:
    """GreenLabError (exit 2) within the connect timeout unless a gRPC server (what Ray's GCS and Ray Client
    are) answers at the cluster's address: nothing listening, a program that accepts and says nothing, or
    one that speaks something else (an HTTP server) is named, instead of Ray's minutes of retries against
    it. An address only ray.init can resolve is left to it."""
    found = endpoint(address)
    if found is None:
        return
    host, port = found
    timeout = connect_timeout_s()
    fix = (
        "start the cluster there (`ray start --head`), check the address and port, or pass --ray local "
        f"for this machine alone ({CONNECT_TIMEOUT_ENV} sets the wait)"
    )
    deadline = time.monotonic() + timeout
    try:
        connection = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            why = f"did not answer within {timeout:g} s"
        elif isinstance(exc, ConnectionRefusedError):
            why = "refused the connection: nothing listens there"
        else:
            why = f"cannot be reached ({exc.strerror or type(exc).__name__})"
        raise GreenLabError(f"cannot use Ray at '{address}': {host}:{port} {why}; {fix}") from None
    with connection:
        answer = _first_answer(connection, deadline)
    if len(answer) >= 9 and answer[3] == _FRAME_SETTINGS:
        return  # a gRPC server: ray.init takes it from here
    raise GreenLabError(f"cannot use Ray at '{address}': {_what_answered(host, port, answer, timeout)}; {fix}")


def _first_answer(connection: socket.socket, deadline: float) -> bytes:
    """What the server at the other end says to an HTTP/2 preface, until the deadline: its first frame's
    9-byte header, or whatever else it sends (b"" if it says nothing, or closes)."""
    answer = b""
    try:
        connection.sendall(_HTTP2_PREFACE)
        while len(answer) < 9:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            connection.settimeout(left)
            chunk = connection.recv(256)
            if not chunk:
                break
            answer += chunk
            if not answer.startswith(b"\x00") and b"\n" in answer:
                break  # a line of text (HTTP/1, SMTP, ...): frames of HTTP/2 begin with a length's zero byte
    except OSError:
        pass  # reset or timed out: judged on what came before
    return answer


def _what_answered(host: str, port: int, answer: bytes, timeout: float) -> str:
    """The address's answer, named: what was found there instead of Ray."""
    if not answer:
        return (
            f"a program at {host}:{port} accepts connections but did not answer as Ray (a gRPC server) within "
            f"{timeout:g} s"
        )
    first = answer.split(b"\n", 1)[0].strip()
    if first.startswith(b"HTTP/"):
        text = first.decode("ascii", "replace")
        return f"an HTTP server answers at {host}:{port} ({escape_controls(clip(text, 60), keep='')}), not Ray"
    if b"<html" in answer.lower() or b"<!doctype" in answer.lower():  # an HTTP/0.9-style answer: a page, no status
        return f"an HTTP server answers at {host}:{port} (it sent a web page), not Ray"
    shown = escape_controls(clip(answer.decode("latin-1"), 40), keep="")
    return f"a program at {host}:{port} answers, but not as Ray (a gRPC server) does: it said {shown!r}"


def first_line_of(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_DEVNULL: Any = None


def _has_descriptor(stream: Any) -> bool:
    try:
        return stream.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def _streams_with_descriptors() -> Iterator[None]:
    """ray.init enables faulthandler on sys.stderr, which needs a file descriptor; a face that captures the
    streams (the TUI's print capture has none) lends os.devnull instead for the call, and leaves it open
    for faulthandler to keep."""
    global _DEVNULL
    if _has_descriptor(sys.stdout) and _has_descriptor(sys.stderr):
        yield
        return
    if _DEVNULL is None:  # one for the process: faulthandler keeps it, and each grid's ray.init finds it
        _DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - kept open for the process, never closed
    with contextlib.redirect_stdout(_DEVNULL), contextlib.redirect_stderr(_DEVNULL):
        yield


def check_placement(cluster: RayCluster, runs: list[GridRun], source: str | None = None) -> None:
    """PreflightError (exit 2, nothing written) listing each run the cluster cannot place, located in the
    experiments file `source` when given."""
    found = {(run.experiment, key, message): None for run, key, message in cluster.placement_problems(runs)}
    if not found:
        return
    try:
        text = Path(source).read_text(encoding="utf-8") if source else None
    except (OSError, UnicodeDecodeError):
        text = None
    raise PreflightError(
        [
            Problem(
                f"experiment '{experiment}'.{key}",
                message,
                source,
                locate_setting(text, experiment, key) if text is not None else None,
            )
            for experiment, key, message in found
        ]
    )
