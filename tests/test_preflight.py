"""Preflight: a grid that cannot run here exits 2 before any run, with one located line per problem and
no store file. Offline cases point the download sources at a closed loopback port (never the network)."""

from __future__ import annotations

import dataclasses
import os
import socket

import pytest

from greenlab.core.plan import fetch, preflight
from greenlab.core.plan.config import expand_grid, load_experiments, parse_experiments
from greenlab.headless import run_headless
from tests.conftest import QUICK_DEFAULTS, REPO, run_cli

# A guard, not a timed assertion: the issue asks each of these to exit within 20 s.
FAST_S = 20


def _torch_cuda_count() -> int:
    import torch

    return torch.cuda.device_count()


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once, as offline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _refused(cli, db) -> str:
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert not db.exists(), "preflight must write nothing"
    assert "Traceback" not in cli.stderr
    return cli.stderr


@pytest.mark.skipif(_torch_cuda_count() > 0, reason="this machine has CUDA")
def test_cuda_without_cuda_exits_2_located_and_writes_nothing(write_toml, tmp_path):
    toml = write_toml('[[experiment]]\nname = "gpu"\nmodels = ["tinycnn"]\ndevice = "cuda"\n')
    db = tmp_path / "runs.db"
    stderr = _refused(run_cli("--headless", str(toml), "--db", str(db), timeout=FAST_S), db)
    line = toml.read_text().splitlines().index('device = "cuda"') + 1
    assert f"{toml}:{line}: experiment 'gpu'.device: device 'cuda' requested but CUDA is not available" in stderr
    assert 'use device = "cpu" or "auto"' in stderr


@pytest.mark.skipif(_torch_cuda_count() > 3, reason="this machine has a cuda:3")
def test_missing_cuda_index_exits_2(write_toml, tmp_path):
    toml = write_toml('[[experiment]]\nname = "gpu"\nmodels = ["tinycnn"]\ndevice = "cuda:3"\n')
    db = tmp_path / "runs.db"
    stderr = _refused(run_cli("--headless", str(toml), "--db", str(db), timeout=FAST_S), db)
    assert "experiment 'gpu'.device: device 'cuda:3' requested" in stderr


def test_mps_where_there_is_none_exits_2(write_toml, tmp_path):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    toml = write_toml('[[experiment]]\nname = "mac"\nmodels = ["tinycnn"]\ndevice = "mps"\n')
    db = tmp_path / "runs.db"
    stderr = _refused(run_cli("--headless", str(toml), "--db", str(db), timeout=FAST_S), db)
    assert "experiment 'mac'.device: device 'mps' requested but Apple's Metal (MPS) is not available" in stderr


def test_absurd_image_size_exits_2(write_toml, tmp_path):
    toml = write_toml('[[experiment]]\nname = "huge"\nmodels = ["tinycnn"]\nimage_size = 100000\n')
    db = tmp_path / "runs.db"
    stderr = _refused(run_cli("--headless", str(toml), "--db", str(db), timeout=FAST_S), db)
    line = toml.read_text().splitlines().index("image_size = 100000") + 1
    assert f"{toml}:{line}: experiment 'huge'.image_size: image_size 100000 px is beyond" in stderr


def test_empty_image_folder_exits_2(write_toml, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    toml = write_toml(f'[[experiment]]\nname = "mine"\nmodels = ["tinycnn"]\ndataset = "imagefolder:{images}"\n')
    db = tmp_path / "runs.db"
    stderr = _refused(run_cli("--headless", str(toml), "--db", str(db), timeout=FAST_S), db)
    assert f"experiment 'mine'.dataset: image folder {images} holds no class folders" in stderr


def test_image_folder_problems(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "dog" / "nested").mkdir(parents=True)
    (folder / "cat" / "notes.txt").write_text("not an image")
    assert "cat, dog in" in preflight.image_folder_problem(
        folder
    ) and "no image file" in preflight.image_folder_problem(folder)
    (folder / "cat" / "a.PNG").write_bytes(b"\x89PNG")
    (folder / "dog" / "nested" / "b.jpg").write_bytes(b"\xff\xd8")
    assert preflight.image_folder_problem(folder) is None
    assert "does not exist" in preflight.image_folder_problem(tmp_path / "nowhere")

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    # root reads any folder, so an unreadable one is simulated where the check lists it
    monkeypatch.setattr(preflight, "_entries", denied)
    message = preflight.image_folder_problem(folder)
    assert f"cannot read image folder {folder} (Permission denied)" in message and "chmod -R u+rX" in message


def test_unreadable_image_folder_stops_headless(write_toml, tmp_path, monkeypatch):
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "a.png").write_bytes(b"\x89PNG")
    toml = write_toml(f'[[experiment]]\nname = "mine"\nmodels = ["tinycnn"]\ndataset = "imagefolder:{folder}"\n')

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(preflight, "_entries", denied)
    db = tmp_path / "runs.db"
    with pytest.raises(preflight.PreflightError) as caught:
        run_headless(str(toml), db=str(db))
    assert caught.value.exit_code == 2 and "cannot read image folder" in str(caught.value)
    assert not db.exists()


def test_image_extensions_follow_torchvision():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert set(preflight.IMAGE_EXTENSIONS) == set(IMG_EXTENSIONS)


def test_offline_cifar10_names_the_file_and_the_folder(write_toml, tmp_path):
    port = closed_port()
    toml = write_toml('[[experiment]]\nname = "c"\nmodels = ["tinycnn"]\ndataset = "cifar10"\n')
    sources = fetch.Sources(
        cifar10=lambda: dataclasses.replace(fetch._cifar10(), url=f"http://127.0.0.1:{port}/cifar-10-python.tar.gz")
    )
    db = tmp_path / "runs.db"
    with pytest.raises(preflight.PreflightError) as caught:
        run_headless(str(toml), db=str(db), sources=sources)
    message = str(caught.value)
    assert caught.value.exit_code == 2 and not db.exists()
    line = toml.read_text().splitlines().index('dataset = "cifar10"') + 1
    assert message.startswith(
        f"{toml}:{line}: experiment 'c'.dataset: CIFAR-10: not in the cache and "
        f"http://127.0.0.1:{port} cannot be reached"
    )
    assert f"greenlab --fetch {toml}" in message
    assert (
        f"put cifar-10-python.tar.gz (from http://127.0.0.1:{port}/cifar-10-python.tar.gz) in "
        f"{tmp_path / 'data' / 'downloads'}" in message
    )
    assert 'dataset = "digits"' in message


def test_offline_pretrained_weights(write_toml, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    port = closed_port()
    toml = write_toml('[[experiment]]\nname = "w"\nmodels = ["tinycnn", "resnet18"]\npretrained = true\n')
    sources = fetch.Sources(
        weights=lambda model: dataclasses.replace(
            fetch._torchvision_weights(model), url=f"http://127.0.0.1:{port}/resnet18-f37072fd.pth"
        )
    )
    db = tmp_path / "runs.db"
    with pytest.raises(preflight.PreflightError) as caught:
        run_headless(str(toml), db=str(db), sources=sources)
    (problem,) = caught.value.problems  # tinycnn is built in: only resnet18 needs weights
    assert (
        problem.key == "experiment 'w'.models"
        and problem.line == toml.read_text().splitlines().index('models = ["tinycnn", "resnet18"]') + 1
    )
    assert "resnet18 weights: not in the cache" in problem.message
    assert (
        f"put resnet18-f37072fd.pth (from http://127.0.0.1:{port}/resnet18-f37072fd.pth) in "
        f"{tmp_path / 'torch' / 'hub' / 'checkpoints'}" in problem.message
    )
    assert "set pretrained = false" in problem.message
    assert not db.exists()


def test_cached_weights_pass_without_probing(write_toml, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "resnet18-f37072fd.pth").write_bytes(b"cached")
    runs = expand_grid(
        parse_experiments(QUICK_DEFAULTS + '[[experiment]]\nname = "w"\nmodels = ["resnet18"]\npretrained = true\n')
    )

    def no_probe(hosts):
        raise AssertionError(f"probed {list(hosts)} although everything is cached")

    report = preflight.check(runs, probe=no_probe)
    assert report.problems == [] and report.to_fetch == []


def test_reachable_missing_file_is_fetched_not_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    runs = expand_grid(
        parse_experiments(QUICK_DEFAULTS + '[[experiment]]\nname = "w"\nmodels = ["alexnet"]\npretrained = true\n')
    )
    report = preflight.check(runs, probe=lambda hosts: dict.fromkeys(hosts, True))
    assert report.problems == []
    assert [item.what for item in report.to_fetch] == ["alexnet weights"]


def test_memory_estimate_against_the_machine(monkeypatch):
    monkeypatch.setattr(preflight, "_machine_memory_bytes", lambda: 1_000_000_000)
    runs = expand_grid(
        parse_experiments(
            QUICK_DEFAULTS + '[[experiment]]\nname = "m"\nmodels = ["tinycnn"]\nimage_size = 1024\nbatch_size = 64\n'
        )
    )
    (problem,) = preflight.check(runs).problems
    assert problem.key == "experiment 'm'.image_size"
    assert "needs 0.8 GB" in problem.message and "1.0 GB of memory" in problem.message
    small = expand_grid(parse_experiments(QUICK_DEFAULTS + '[[experiment]]\nname = "m"\nmodels = ["tinycnn"]\n'))
    assert preflight.check(small).problems == []


def test_absurd_epochs_and_batch_size(monkeypatch):
    monkeypatch.setattr(preflight, "_machine_memory_bytes", lambda: None)
    runs = expand_grid(
        parse_experiments(
            QUICK_DEFAULTS + '[[experiment]]\nname = "n"\nmodels = ["tinycnn"]\n'
            "epochs = 1000000\nbatch_size = 10000000\n"
        )
    )
    keys = sorted(p.key for p in preflight.check(runs).problems)
    assert keys == ["experiment 'n'.batch_size", "experiment 'n'.epochs"]


def test_every_problem_once_per_experiment(write_toml, tmp_path):
    toml = write_toml(
        '[[experiment]]\nname = "a"\nmodels = ["tinycnn", "resnet18"]\n'
        'techniques = ["baseline", "prune"]\nimage_size = 100000\nrepeats = 3\n'
    )
    report = preflight.check_file(expand_grid(load_experiments(toml)), toml)
    assert [p.key for p in report.problems] == ["experiment 'a'.image_size"]


def test_the_shipped_grid_passes_offline_without_torchvision():
    import subprocess
    import sys

    code = (
        "import sys; from greenlab.core.plan import preflight; from greenlab.core.plan.config import expand_grid, "
        "load_experiments; r = preflight.check_file(expand_grid(load_experiments('experiments.toml')), "
        "'experiments.toml', probe=None); print(r.problems, r.to_fetch, 'torchvision' in sys.modules)"
    )
    # nothing to download and no GPU named: no weights lookup, no probe (probe=None would raise)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.stdout.strip() == "[] [] False", done.stdout + done.stderr
