"""`greenlab --fetch`: downloads from a local HTTP server on 127.0.0.1 (never the network), checksums,
progress events, the offline messages (a closed loopback port) and "nothing to download"."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import tarfile
import threading
from functools import partial

import pytest

from greenlab.console import ConsoleView
from greenlab.core.plan import fetch
from greenlab.core.plan.config import expand_grid, parse_experiments
from greenlab.headless import run_fetch
from tests.conftest import QUICK_DEFAULTS, REPO, run_cli
from tests.test_preflight import closed_port

WEIGHTS = bytes(range(256)) * 800  # 200 kB: several chunks, so progress has something to report


@pytest.fixture
def server(tmp_path):
    """A local HTTP server of tmp_path/served; yields its base URL."""
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _weights_grid(tmp_path):
    toml = tmp_path / "experiments.toml"
    toml.write_text(
        QUICK_DEFAULTS.replace("pretrained = false", "pretrained = true")
        + '[[experiment]]\nname = "w"\nmodels = ["resnet18"]\n'
    )
    return toml


def test_weights_are_fetched_and_verified_by_the_hash_in_their_name(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    served, base = server
    name = f"resnet18-{hashlib.sha256(WEIGHTS).hexdigest()[:8]}.pth"  # torchvision's naming
    (served / name).write_bytes(WEIGHTS)
    sources = fetch.Sources(weights=lambda model: fetch.weights_file(f"{base}/{name}", f"{model} weights"))
    toml = _weights_grid(tmp_path)
    out = io.StringIO()
    assert run_fetch(str(toml), out=out, sources=sources) == 0
    cached = tmp_path / "torch" / "hub" / "checkpoints" / name
    assert cached.read_bytes() == WEIGHTS
    text = out.getvalue()
    assert "resnet18 weights: downloading 204.8 kB from" in text
    assert " 100% 204.8 kB of 204.8 kB at " in text and "B/s, ETA 0:00" in text  # plain lines off a terminal
    assert f"sha256 prefix {name[9:17]} verified" in text
    again = io.StringIO()
    assert run_fetch(str(toml), out=again, sources=sources) == 0
    assert again.getvalue().startswith("nothing to download")


def test_a_wrong_checksum_exits_2_and_keeps_nothing(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    served, base = server
    name = "resnet18-00000000.pth"  # the name promises a hash the content does not have
    (served / name).write_bytes(WEIGHTS)
    sources = fetch.Sources(weights=lambda model: fetch.weights_file(f"{base}/{name}", f"{model} weights"))
    out = io.StringIO()
    with pytest.raises(fetch.FetchError) as caught:
        run_fetch(str(_weights_grid(tmp_path)), out=out, sources=sources)
    assert caught.value.exit_code == 2
    assert "(resnet18 weights); the FAILED line above says why" in str(caught.value)
    shown = out.getvalue()  # the failure's line, as it happened, carries why and the way by hand
    assert "resnet18 weights: FAILED: checksum mismatch" in shown and "expected sha256 prefix 00000000" in shown
    assert f"put {name} (from {base}/{name}) in {tmp_path / 'torch' / 'hub' / 'checkpoints'}" in shown
    assert list((tmp_path / "torch" / "hub" / "checkpoints").iterdir()) == []  # no file, no .part


def test_cifar10_archive_is_verified_by_md5_and_unpacked(server, tmp_path):
    served, base = server
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"fake"))
    (served / "cifar.tar.gz").write_bytes(archive.getvalue())
    md5 = hashlib.md5(archive.getvalue()).hexdigest()
    item = dataclasses.replace(fetch._cifar10(), url=f"{base}/cifar.tar.gz", checksum=fetch.Checksum("md5", md5))
    assert not item.present()
    events = []
    report = fetch.fetch_all([item], events.append)
    assert report.fetched == [item] and report.failed == []
    assert item.present() and (tmp_path / "data" / "downloads" / "cifar-10-batches-py" / "test_batch").is_file()
    finished = [e for e in events if isinstance(e, fetch.DownloadFinished)]
    assert finished[0].verified == f"md5 {md5} verified"
    progressed = [e for e in events if isinstance(e, fetch.DownloadProgressed)]
    assert progressed[-1].done_bytes == progressed[-1].total_bytes == len(archive.getvalue())


def test_cifar10_source_is_torchvisions():
    from torchvision.datasets import CIFAR10

    item = fetch._cifar10()
    assert item.url == CIFAR10.url and item.checksum == fetch.Checksum("md5", CIFAR10.tgz_md5)
    assert item.dest.name == "cifar-10-python.tar.gz" and item.unpack


def test_weights_source_carries_the_torch_hub_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    item = fetch._torchvision_weights("resnet18")
    assert item.url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert item.checksum == fetch.Checksum("sha256", "f37072fd", prefix=True)
    assert item.dest == tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"


def test_offline_fetch_exits_2_naming_what_is_missing_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    port = closed_port()
    url = f"http://127.0.0.1:{port}/resnet18-f37072fd.pth"
    sources = fetch.Sources(weights=lambda model: fetch.weights_file(url, f"{model} weights"))
    out = io.StringIO()
    toml = _weights_grid(tmp_path)
    with pytest.raises(fetch.FetchError) as caught:
        run_fetch(str(toml), out=out, sources=sources)
    shown = out.getvalue()
    failed = [line for line in shown.splitlines() if "FAILED" in line]
    assert failed == [
        f"resnet18 weights: FAILED: not in the cache and http://127.0.0.1:{port} cannot be reached "
        f"from here; by hand: put resnet18-f37072fd.pth (from http://127.0.0.1:{port}/"
        f"resnet18-f37072fd.pth) in {tmp_path / 'torch' / 'hub' / 'checkpoints'}; then run "
        f"`greenlab --fetch {toml}` again"
    ]
    # The last word names the grid's file and what failed, without repeating why: said once is enough.
    assert str(caught.value) == (
        f"{toml}: 1 of 1 file not fetched (resnet18 weights); the FAILED line above says why and how to get it by hand"
    )
    assert "--fetch FILE" not in shown + str(caught.value) and "machine with internet" not in shown


def test_the_shipped_grid_has_nothing_to_download():
    done = run_cli("--fetch", "experiments.toml", cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("nothing to download")


def test_plan_lists_each_need_once_per_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    grid = expand_grid(
        parse_experiments(
            QUICK_DEFAULTS.replace("pretrained = false", "pretrained = true").replace('"digits"', '"cifar10"')
            + '[[experiment]]\nname = "a"\nmodels = ["tinycnn", "resnet18", "alexnet"]\n'
            + 'techniques = ["baseline", "prune"]\n'
            + '[[experiment]]\nname = "b"\nmodels = ["resnet18"]\npretrained = false\n'
        )
    )
    needs = fetch.plan(grid)
    assert [(n.experiment, n.key, n.subject) for n in needs] == [
        ("a", "dataset", "cifar10"),
        ("a", "models", "resnet18"),
        ("a", "models", "alexnet"),
        ("b", "dataset", "cifar10"),
    ]
    assert [r.what for r in fetch.missing(needs)] == ["CIFAR-10", "resnet18 weights", "alexnet weights"]


def test_progress_words():
    line = fetch.format_progress(fetch.DownloadProgressed("x", 50_000_000, 200_000_000, 10_000_000, 15.0))
    assert line == "x [#####...............]  25% 50.0 MB of 200.0 MB at 10.0 MB/s, ETA 0:15"
    assert fetch.format_eta(3725) == "1:02:05" and fetch.format_eta(None) == "--:--"


def test_bar_redraws_one_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    bar = ConsoleView(out)
    bar(fetch.DownloadStarted("x", "http://h/x", "/tmp/x", 100))
    bar(fetch.DownloadProgressed("x", 50, 100, 10.0, 5.0))
    bar(fetch.DownloadFinished("x", "/tmp/x", 100, 1.0, "md5 abc verified"))
    text = out.getvalue()
    assert "\r\033[K" in text and " 50% " in text
    assert text.rstrip("\n").endswith("x: 100 B in 1.0 s into /tmp/x; md5 abc verified")


def test_probe_sees_a_listening_port_and_a_closed_one(server):
    _, base = server
    closed = f"http://127.0.0.1:{closed_port()}"
    assert fetch.probe_hosts([base, closed]) == {base: True, closed: False}


def test_a_headless_grid_downloads_what_it_needs_first_with_progress(server, tmp_path, monkeypatch):
    """The grid session prepares the grid before opening the store: a reachable missing file is fetched there."""
    from greenlab.console import ConsoleView
    from greenlab.core.grid.session import GridRequest, GridSession
    from greenlab.core.plan.config import load_grid

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    served, base = server
    name = f"resnet18-{hashlib.sha256(WEIGHTS).hexdigest()[:8]}.pth"
    (served / name).write_bytes(WEIGHTS)
    sources = fetch.Sources(weights=lambda model: fetch.weights_file(f"{base}/{name}", f"{model} weights"))
    toml = _weights_grid(tmp_path)
    out = io.StringIO()
    request = GridRequest.from_file(load_grid(toml), db=str(tmp_path / "runs.db"), sources=sources)
    GridSession(request, on_event=ConsoleView(out)).prepare()
    assert (tmp_path / "torch" / "hub" / "checkpoints" / name).read_bytes() == WEIGHTS
    assert "resnet18 weights: downloading" in out.getvalue() and "verified" in out.getvalue()
    assert not (tmp_path / "runs.db").exists()
