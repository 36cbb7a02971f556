"""Hostile files and unlucky faults: what an attacker sharing a folder, or a user whose disk fills or whose
store is moved away mid-grid, can do to GreenLab, and what GreenLab does instead of harm. Each test holds
one promise of docs/reliability.md ("Hostile files and faults").

Run as root, "another user's file" is a file chown-ed to nobody (65534); a full disk and a read-only folder
are small tmpfs mounts, skipped where this machine does not allow mounting.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess

import pytest

from greenlab import cli
from greenlab.core.errors import GreenLabError
from greenlab.core.measure import host_lock
from tests.conftest import QUICK_DEFAULTS, run_cli

GRID = QUICK_DEFAULTS.replace("max_train_batches = 3", "max_train_batches = 2").replace(
    "max_eval_batches = 2", "max_eval_batches = 1"
) + ('[[experiment]]\nname = "h"\nmodels = ["tinycnn"]\n')
NOBODY = 65534


def _as_root() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def _tmpfs(path, size="512k", read_only=False):
    """A small filesystem of its own at `path` (a full disk, a read-only folder); skips where mounting is
    not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(disk):
    """Fill the disk to its last byte with a file named filler."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"x" * 4096)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"x")
    finally:
        os.close(fd)


def _read_only(path):
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)


# -- 1. the host lock follows no link and widens no one's file -------------------------------------------------
@pytest.fixture
def shared_folder(tmp_path, monkeypatch):
    """A sticky, world-writable lock folder that another user (nobody) owns, as /tmp/greenlab may be."""
    if not _as_root():
        pytest.skip("needs root to make a folder and files of another user")
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o1777)
    os.chown(folder, NOBODY, NOBODY)
    monkeypatch.setenv("GREENLAB_LOCK_DIR", str(folder))
    return folder


def _private_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root's own bytes\n")
    os.chmod(secret, 0o600)
    return secret


def test_the_host_lock_follows_no_link_planted_in_a_shared_folder(shared_folder, tmp_path):
    secret = _private_file(tmp_path)
    link = shared_folder / host_lock.LOCK_NAME
    link.symlink_to(secret)
    os.lchown(link, NOBODY, NOBODY)  # the folder's owner made it: fs.protected_symlinks lets it be followed
    for attempt in (lambda: host_lock.HostLock("a.db").try_acquire(), host_lock.current_holder):
        with pytest.raises(GreenLabError) as refused:
            attempt()
        assert f"lock {link} is a symbolic link (to {secret})" in str(refused.value)
        assert refused.value.exit_code == 2
    assert host_lock.read_holder(link) is None
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_text() == "root's own bytes\n"


def test_the_host_lock_refuses_another_users_file_that_is_no_lock(shared_folder, tmp_path):
    planted = shared_folder / host_lock.LOCK_NAME
    planted.write_text("a file of nobody's\n")
    os.chmod(planted, 0o644)
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(GreenLabError, match="belongs to user 65534 and is not a lock GreenLab made"):
        host_lock.HostLock("a.db").try_acquire()
    assert stat.S_IMODE(planted.stat().st_mode) == 0o644 and planted.read_text() == "a file of nobody's\n"
    planted.unlink()
    secret = _private_file(tmp_path)
    os.link(secret, planted)  # a second name for someone's file
    with pytest.raises(GreenLabError, match="is a hard link"):
        host_lock.HostLock("a.db").try_acquire()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_text() == "root's own bytes\n"
    planted.unlink()
    os.mkfifo(planted)
    with pytest.raises(GreenLabError, match="is not a plain file"):
        host_lock.current_holder()


def test_a_lock_another_users_greenlab_made_is_shared(shared_folder):
    made = shared_folder / host_lock.LOCK_NAME
    made.write_text("")
    os.chmod(made, 0o666)
    os.chown(made, NOBODY, NOBODY)
    lock = host_lock.HostLock("a.db")
    assert lock.try_acquire()
    assert host_lock.read_holder(made).pid == os.getpid()
    lock.release()
    assert stat.S_IMODE(made.stat().st_mode) == 0o666 and made.stat().st_uid == NOBODY


def test_a_grid_refuses_a_linked_lock_with_exit_2(shared_folder, tmp_path):
    secret = _private_file(tmp_path)
    link = shared_folder / host_lock.LOCK_NAME
    link.symlink_to(secret)
    os.lchown(link, NOBODY, NOBODY)
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    result = run_cli("--headless", str(grid), "--db", str(tmp_path / "runs.db"), "--no-wait")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is a symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_text() == "root's own bytes\n"
    assert not (tmp_path / "runs.db").exists()


# -- 2. --db through a symbolic link --------------------------------------------------------------------------
def test_a_db_that_is_a_link_is_refused_unless_its_target_is_named(tmp_path, capsys):
    from greenlab.core.store.database import Store

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "victim.db"
    target.write_bytes(b"")
    project = tmp_path / "project"
    project.mkdir()
    link = project / "runs.db"
    link.symlink_to(target)
    with pytest.raises(GreenLabError) as refused:
        Store(link).start_run({"model": "tinycnn", "technique": "baseline"})
    assert f"--db {link} is a symbolic link (to {target})" in str(refused.value)
    assert f"name the file itself (--db {target})" in str(refused.value)
    assert target.read_bytes() == b"" and sorted(p.name for p in elsewhere.iterdir()) == ["victim.db"]
    assert cli.main(["report", "--db", str(link)]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    store = Store(target)  # named by its own path, the target is the user's choice
    store.start_run({"model": "tinycnn", "technique": "baseline"})
    store.close()


def test_a_dangling_link_into_a_missing_folder_exits_2_at_once(tmp_path):
    link = tmp_path / "runs.db"
    link.symlink_to(tmp_path / "missing" / "runs.db")
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    result = run_cli("--headless", str(grid), "--db", str(link))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is a symbolic link" in result.stderr and "which does not exist" in result.stderr
    assert result.stdout == "" and not (tmp_path / "missing").exists()


# -- 3. report outputs ------------------------------------------------------------------------------------------
@pytest.fixture
def small_study(tmp_path):
    """A store with one comparison to report: three baselines and three stego runs of tinycnn."""
    from greenlab.core.store.database import Store
    from tests.test_report_cli import _add

    path = tmp_path / "st.db"
    store = Store(path)
    for repeat in range(3):
        _add(store, "s", "tinycnn", "baseline", repeat, 100.0 + repeat, 0.9)
        _add(store, "s", "tinycnn", "stego", repeat, 70.0 + repeat, 0.9)
    store.close()
    return path


def _report(capsys, *args):
    code = cli.main(["report", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_a_report_never_replaces_the_store_or_its_companions(small_study, capsys, suffix):
    companion = small_study.with_name(small_study.name + suffix)
    if suffix:
        companion.write_bytes(b"sqlite's own")
    before = _snapshot(small_study.parent)
    for force in ([], ["--force"]):
        code, out, err = _report(capsys, "--db", str(small_study), "--out", str(companion), *force)
        assert code == 2 and out == "" and "the run store" in err and "choose another path" in err, err
        assert len(err.strip().splitlines()) == 1
    # the same file by another spelling: a path through a linked folder
    (small_study.parent / "via").symlink_to(small_study.parent)
    code, _, err = _report(capsys, "--db", str(small_study), "--out", str(small_study.parent / "via" / companion.name))
    assert code == 2 and "the run store" in err
    assert _snapshot(small_study.parent) == before


def test_the_plot_may_not_replace_the_report(small_study, tmp_path, capsys):
    figure = tmp_path / "fig.svg"
    code, _, err = _report(capsys, "--db", str(small_study), "--out", str(figure), "--plot", str(figure))
    assert code == 2 and "is also the path of another output" in err
    assert not figure.exists()


def test_an_existing_output_is_replaced_only_with_force_and_a_link_never_followed(small_study, tmp_path, capsys):
    report = tmp_path / "report.txt"
    report.write_text("last week's report\n")
    os.chmod(report, 0o640)
    code, _, err = _report(capsys, "--db", str(small_study), "--out", str(report))
    assert code == 2 and "exists; pass --force to replace it" in err
    assert report.read_text() == "last week's report\n"
    code, _, err = _report(capsys, "--db", str(small_study), "--out", str(report), "--force")
    assert code == 0, err
    assert "stego" in report.read_text() and stat.S_IMODE(report.stat().st_mode) == 0o640
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's file\n")
    link = tmp_path / "out.txt"
    link.symlink_to(victim)
    for force in ([], ["--force"]):
        code, _, err = _report(capsys, "--db", str(small_study), "--out", str(link), *force)
        assert code == 2 and f"is a symbolic link (to {victim})" in err
    code, _, err = _report(capsys, "--db", str(small_study), "--plot", str(tmp_path / "fig.svg"))
    assert code == 0
    code, _, err = _report(capsys, "--db", str(small_study), "--plot", str(tmp_path / "fig.svg"))
    assert code == 2 and "--plot" in err and "exists" in err
    assert victim.read_text() == "someone's file\n" and link.is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_report_on_a_full_disk_leaves_the_old_file_whole(small_study, tmp_path, capsys):
    from greenlab.core.report.output import write_output

    with _tmpfs(tmp_path / "small", size="64k") as disk:
        report = disk / "report.txt"
        report.write_text("the old report, whole\n")
        _fill(disk)
        code, _, err = _report(capsys, "--db", str(small_study), "--out", str(report), "--force")
        assert code == 2 and "No space left on device" in err and str(disk) in err, err
        assert "no existing file was changed" in err
        assert report.read_text() == "the old report, whole\n"
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "report.txt"]  # no temporary left
        with pytest.raises(GreenLabError, match="No space left on device"):  # the face-free call, for the TUI
            write_output(report, "x" * 200_000, store_path=small_study, force=True)
        assert report.read_text() == "the old report, whole\n"


# -- 4. untrusted text on the terminal ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, key",
    [
        ('[[experiment]]\nname = "red\\u001b[31m"\nmodels = ["tinycnn"]\n', "experiment[0].name"),
        ('[[experiment]]\nname = "h"\nmodels = ["tiny\\u0000cnn"]\n', "experiment[0].models[0]"),
        ('[[experiment]]\nname = "h"\nmodels = ["tinycnn"]\ndataset = "dig\\u009bits"\n', "experiment[0].dataset"),
    ],
)
def test_control_characters_in_names_and_settings_are_refused_naming_the_key(tmp_path, capsys, body, key):
    grid = tmp_path / "g.toml"
    grid.write_text(QUICK_DEFAULTS + body)
    assert cli.main(["--headless", str(grid), "--db", str(tmp_path / "runs.db")]) == 2
    err = capsys.readouterr().err
    assert f"{key}: the value holds a control character" in err, err
    assert "\x1b" not in err and "\x00" not in err and "\x9b" not in err
    assert not (tmp_path / "runs.db").exists()


def test_a_currency_with_nul_is_refused_too(tmp_path):
    from greenlab.core.errors import ConfigError
    from greenlab.core.plan.config import parse_grid

    with pytest.raises(ConfigError) as refused:
        parse_grid(GRID.replace("[defaults]\n", '[defaults]\ncurrency = "E\\u0000UR"\n'), "g.toml")
    assert "g.toml:3: defaults.currency: the value holds a control character (\\x00 at character 2)" in str(
        refused.value
    )


def test_stored_control_characters_are_escaped_wherever_printed(tmp_path, capsys):
    """A store written by another tool (or a GreenLab that accepted such names) with ESC and NUL in names."""
    from greenlab.core.store.database import Store
    from tests.test_report_cli import _add

    path = tmp_path / "st.db"
    store = Store(path)
    name = "grid\x1b]0;pwned\x07\x1b[31m"
    for repeat in range(3):
        _add(store, name, "tinycnn", "baseline", repeat, 100.0 + repeat, 0.9)
        _add(store, name, "tiny\x00cnn", "stego", repeat, 70.0 + repeat, 0.9)
        _add(store, name, "tiny\x00cnn", "baseline", repeat, 100.0 + repeat, 0.9)
    store.close()
    for fmt in ("text", "markdown", "latex", "csv", "json", "codecarbon"):
        code, out, err = _report(capsys, "--db", str(path), "--experiment", name, "--format", fmt)
        assert code == 0, err
        assert "\x1b" not in out and "\x00" not in out and "\x07" not in out, (fmt, out)
        assert "\\x1b" in out or fmt in ("json", "codecarbon"), (fmt, out)
    code, _, err = _report(capsys, "--db", str(path), "--experiment", "grid\x1b[0m")
    assert code == 2 and "\x1b" not in err and "grid\\x1b[0m" in err
