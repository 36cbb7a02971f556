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
from hypothesis import given
from hypothesis import strategies as st

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
        _add(store, name, "tiny\x00cnn\x7f\x9b", "stego", repeat, 70.0 + repeat, 0.9)
        _add(store, name, "tiny\x00cnn\x7f\x9b", "baseline", repeat, 100.0 + repeat, 0.9)
    store.close()
    for fmt in ("text", "markdown", "latex", "csv", "json", "codecarbon"):
        code, out, err = _report(capsys, "--db", str(path), "--experiment", name, "--format", fmt)
        assert code == 0, err
        assert not any(char in out for char in "\x1b\x00\x07\x7f\x9b"), (fmt, out)
        assert "\\x1b" in out or fmt in ("json", "codecarbon"), (fmt, out)
    code, _, err = _report(capsys, "--db", str(path), "--experiment", "grid\x1b[0m")
    assert code == 2 and "\x1b" not in err and "grid\\x1b[0m" in err


@given(st.text(alphabet=st.characters(max_codepoint=0xB0), max_size=40), st.sampled_from(["\n", "", "\n\t", "]^\\"]))
def test_every_control_character_but_those_kept_is_written_out_and_nothing_else_changes(text, keep):
    from greenlab.core.text import escape_controls

    def shown(char: str) -> str:
        control = ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0
        return f"\\x{ord(char):02x}" if control and char not in keep else char

    assert escape_controls(text, keep) == "".join(map(shown, text))


# -- 5. a pending record whose row is gone ----------------------------------------------------------------------
def _kept_record(path, run_id, samples=35, row=None, **final):
    from greenlab.core.store import journal
    from greenlab.core.store.row_writes import AddEpoch, AddSamples, UpdateRun

    return journal.save(
        path,
        run_id,
        [
            AddEpoch({"run_id": run_id, "epoch": 1, "val_accuracy": 0.5}),
            AddSamples(run_id, [(0.1 * i, "cpu", 10.0) for i in range(samples)]),
            UpdateRun(run_id, {"status": "completed", "energy_j": 12.0, **final}),
        ],
        row=row,
    )


def _count(path, table):
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(f"select count(*) from {table}").fetchone()[0]


def test_a_record_whose_row_is_gone_is_set_aside_once_and_adds_nothing(tmp_path):
    from greenlab.core.store import journal
    from greenlab.core.store.database import Store

    path = tmp_path / "runs.db"
    store = Store(path)
    for _ in range(9):
        store.start_run({"model": "tinycnn", "technique": "baseline", "status": "completed"})
    run_id = store.start_run({"model": "tinycnn", "technique": "baseline", "settings_key": "k10"})
    identity = store.row_identity(run_id)
    store.close()
    _kept_record(path, run_id, row=identity)
    os.replace(path, tmp_path / "runs.db.truncated")  # moved aside, as the message advised
    heard = []
    for _ in range(3):  # every later open: no error, and never a sample more
        store = Store(path, on_notice=heard.append)
        store.start_run({"model": "tinycnn", "technique": "baseline"})
        store.close()
        assert _count(path, "samples") == 0 and _count(path, "epochs") == 0
    assert len(heard) == 1, heard
    assert heard[0].startswith(f"record of run {run_id} kept in {journal.folder(path) / 'unmatched'}/")
    assert "its row is in a store that is no longer here" in heard[0]
    assert journal.pending(path) == [] and len(list((journal.folder(path) / "unmatched").iterdir())) == 1


def test_a_record_is_never_replayed_into_another_runs_row_of_the_same_id(tmp_path):
    from greenlab.core.store.database import Store

    path = tmp_path / "runs.db"
    store = Store(path)
    run_id = store.start_run({"model": "tinycnn", "technique": "baseline", "settings_key": "mine"})
    store.close()
    _kept_record(path, run_id, row={"settings_key": "mine", "started_at": "2020-01-01T00:00:00+00:00"})
    store = Store(path)  # row 1 here is a run started at another time: not the record's
    row = store.run(run_id)
    assert row.status == "running" and row.energy_j is None and store.samples(run_id) == []
    assert store.notices and "kept in" in store.notices[0]


def test_a_replay_cut_short_adds_no_samples_and_is_tried_again_whole(tmp_path):
    from greenlab.core.store import journal
    from greenlab.core.store.database import Store

    path = tmp_path / "runs.db"
    store = Store(path)
    run_id = store.start_run({"model": "tinycnn", "technique": "baseline"})
    identity = store.row_identity(run_id)
    store.close()
    _kept_record(path, run_id, row=identity, no_such_column=1)  # the last write fails, after the samples
    for _ in range(2):
        Store(path).close()
        assert _count(path, "samples") == 0 and len(journal.pending(path)) == 1  # rolled back, kept


# -- 6. the store removed or replaced under a grid ----------------------------------------------------------------
def test_a_write_to_a_store_removed_or_replaced_since_it_was_opened_is_refused(tmp_path):
    from greenlab.core.store.database import Store, StoreReplaced

    path = tmp_path / "runs.db"
    store = Store(path)
    run_id = store.start_run({"model": "tinycnn", "technique": "baseline"})
    for suffix in ("", "-wal", "-shm"):  # moved away whole, with its log
        os.replace(f"{path}{suffix}", tmp_path / f"moved.db{suffix}")
    with pytest.raises(StoreReplaced, match="was removed while this grid had it open"):
        store.update_run(run_id, status="completed")
    other = Store(tmp_path / "other.db")
    other.start_run({"model": "resnet18", "technique": "baseline"})
    other.close()
    os.replace(tmp_path / "other.db", path)  # another store put in its place
    with pytest.raises(StoreReplaced, match="was replaced by another file"):
        store.update_run(run_id, status="completed")
    with pytest.raises(StoreReplaced):  # a second connection (the writer thread) never makes a new store
        Store(tmp_path / "gone.db", same_file=store.file)
    assert not (tmp_path / "gone.db").exists()
    store.close()
    assert Store(path).run(run_id).model == "resnet18"  # the stranger's row is untouched


def test_a_log_left_by_a_removed_store_is_never_read_as_a_new_stores(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    (tmp_path / "runs.db-wal").write_bytes(b"\x37\x7f\x06\x82" + b"\0" * 100)
    result = run_cli("--headless", str(grid), "--db", str(tmp_path / "runs.db"))
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr
    assert "runs.db is missing but" in err and "runs.db-wal is still there" in err and "move runs.db-wal" in err
    assert not (tmp_path / "runs.db").exists()


# -- 8. a read-only folder is refused before the grid ------------------------------------------------------------
def test_a_store_in_a_read_only_folder_is_refused_before_the_grid(tmp_path, capsys):
    from greenlab.core.store.database import Store

    with _tmpfs(tmp_path / "ro") as folder:
        store = Store(folder / "runs.db")
        store.start_run({"model": "tinycnn", "technique": "baseline"})
        store.close()
        _read_only(folder)
        grid = tmp_path / "g.toml"
        grid.write_text(GRID)
        result = run_cli("--headless", str(grid), "--db", str(folder / "runs.db"))
        assert result.returncode == 2, result.stdout + result.stderr
        err = result.stderr
        assert f"folder {folder} is not writable" in err and len(err.strip().splitlines()) == 1
        # a report only reads: it reads the store as it is, and leaves no -wal or -shm (it could not anyway)
        assert cli.main(["report", "--db", str(folder / "runs.db")]) == 2  # nothing to compare, but read
        assert "nothing to compare" in capsys.readouterr().err


def test_a_read_only_store_is_read_without_a_wal_or_shm_beside_it(tmp_path, capsys):
    import sqlite3

    from greenlab.core.store.database import Store

    path = tmp_path / "runs.db"
    store = Store(path)
    store.start_run({"model": "tinycnn", "technique": "baseline"})
    store.close()
    os.chmod(path, 0o444)
    os.chmod(tmp_path, 0o555)  # root ignores both for writing, but they say what the owner wants
    try:
        reader = Store.reader(path)
        assert len(reader.runs()) == 1
        reader.close()
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("runs.db")) == ["runs.db"]
    finally:
        os.chmod(tmp_path, 0o755)
    # another application's WAL database with a -wal but no -shm is identified without a -shm made for it
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as conn:
        conn.execute("pragma journal_mode = wal")
        conn.execute("create table foo (a)")
        conn.commit()
        conn.execute("pragma wal_checkpoint")
        conn.execute("insert into foo values (1)")  # in the log only
        conn.commit()
        import shutil

        shutil.copy(other, tmp_path / "copy.db")
        shutil.copy(tmp_path / "other.db-wal", tmp_path / "copy.db-wal")
    assert cli.main(["report", "--db", str(tmp_path / "copy.db")]) == 2
    assert "another application's database (tables foo" in capsys.readouterr().err
    assert not (tmp_path / "copy.db-shm").exists()
    os.remove(tmp_path / "copy.db")  # a file whose tables are in its log alone is refused unread
    with contextlib.closing(sqlite3.connect(tmp_path / "fresh.db")) as conn:
        conn.execute("pragma journal_mode = wal")
        conn.execute("create table foo (a)")
        conn.commit()
        shutil.copy(tmp_path / "fresh.db", tmp_path / "copy.db")
        shutil.copy(tmp_path / "fresh.db-wal", tmp_path / "copy.db-wal")
    assert cli.main(["report", "--db", str(tmp_path / "copy.db")]) == 2
    assert "keeps its tables only in its -wal log" in capsys.readouterr().err
    assert not (tmp_path / "copy.db-shm").exists()


# -- 9. a damaged store ------------------------------------------------------------------------------------------
def _store_of_runs(path, count=30):
    from greenlab.core.store.database import Store
    from tests.test_report_cli import _add

    store = Store(path)
    for repeat in range(count // 2):
        _add(store, "s", "tinycnn", "baseline", repeat, 100.0 + repeat, 0.9)
        _add(store, "s", "tinycnn", "stego", repeat, 70.0 + repeat, 0.9)
    store.close()


def _garble(path):
    """Garbage over the middle of a page of the runs table (a disk, a bad copy, another program), as the file
    is on disk; SQLite's own quick_check must see it."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        size = conn.execute("pragma page_size").fetchone()[0]
        try:
            leaves = [r[0] for r in conn.execute("select pageno from dbstat where name = 'runs' and pagetype = 'leaf'")]
        except sqlite3.OperationalError:  # no dbstat in this SQLite: the middle of the file
            leaves = [conn.execute("pragma page_count").fetchone()[0] // 2]
    with open(path, "r+b") as stream:
        stream.seek((leaves[0] - 1) * size + 100)
        stream.write(b"\xa5" * 2000)
        stream.flush()
        os.fsync(stream.fileno())
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        try:
            assert conn.execute("pragma quick_check").fetchone()[0] != "ok"
        except sqlite3.DatabaseError:
            pass


def test_a_damaged_store_is_refused_by_the_grid_the_report_and_check_and_never_written(tmp_path, capsys):
    import hashlib

    path = tmp_path / "runs.db"
    _store_of_runs(path)
    assert cli.main(["check", "--db", str(path)]) == 0
    assert f"{path}: sound (integrity_check ok; 30 runs)" in capsys.readouterr().out
    _garble(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    for argv in (
        ["--headless", str(grid), "--db", str(path)],
        ["report", "--db", str(path)],
        ["check", "--db", str(path)],
    ):
        result = run_cli(*argv)
        assert result.returncode == 2, argv
        err = result.stderr
        assert f"the run store {path} is damaged (" in err and '".recover"' in err, (argv, err)
        assert "GreenLab will not write to it" in err and len(err.strip().splitlines()) == 1
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    from greenlab.core.store.database import Store

    with pytest.raises(GreenLabError, match="is damaged"):
        Store(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


# -- 10. a store held exclusively -------------------------------------------------------------------------------
def _hold_exclusively(path, seconds):
    import subprocess
    import sys

    code = (
        "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "c.execute('pragma locking_mode = exclusive'); c.execute('begin exclusive'); c.execute('commit'); "
        "print('held', flush=True); time.sleep(float(sys.argv[2]))"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_store_held_with_locking_mode_exclusive_is_a_lock_waited_for(tmp_path, monkeypatch, capsys):
    from greenlab.core.store.database import Store

    path = tmp_path / "runs.db"
    _store_of_runs(path, 4)
    monkeypatch.setenv("GREENLAB_STORE_BUSY_S", "1")
    holder = _hold_exclusively(path, 60)
    try:
        heard = []
        with pytest.raises(GreenLabError) as refused:
            Store(path, on_busy=heard.append)
        assert "stayed locked by another process" in str(refused.value)
        assert "not a GreenLab run store" not in str(refused.value) and "choose another --db" not in str(refused.value)
        assert heard and heard[0].startswith("store busy, waiting")
        assert cli.main(["report", "--db", str(path)]) == 2
        err = capsys.readouterr().err
        assert "store busy, waiting" in err and "stayed locked by another process" in err
    finally:
        holder.kill()
        holder.wait()
    monkeypatch.setenv("GREENLAB_STORE_BUSY_S", "30")
    holder = _hold_exclusively(path, 1)  # let go within the budget: waited for, then opened
    store = Store(path)
    assert len(store.runs()) == 4
    store.close()
    holder.wait()


# -- grids under faults: the store removed, the disk full, the store damaged, the lock kept --------------------
TWO = GRID.replace('models = ["tinycnn"]', 'models = ["tinycnn"]\ntechniques = ["baseline", "prune"]')


def _session(db, on_event, text=TWO):
    from greenlab.core.grid.session import GridRequest, GridSession
    from greenlab.core.plan.config import parse_grid

    return GridSession(GridRequest.from_file(parse_grid(text, "g.toml"), db=str(db)), on_event=on_event)


def _at_first_epoch(action):
    """A listener that does `action` once, when the first run's first epoch has ended (its row is written)."""
    from greenlab.core.run.run_events import ChildEvent
    from greenlab.core.train import child_events

    heard, done = [], []

    def listen(event):
        heard.append(event)
        if not done and isinstance(event, ChildEvent) and isinstance(event.event, child_events.EpochFinished):
            done.append(True)
            action()

    return listen, heard


def _said(heard):
    from greenlab.core.grid.stop_rules import GridStopped
    from greenlab.core.run.run_events import Notice

    return [e.text for e in heard if isinstance(e, Notice)], [e for e in heard if isinstance(e, GridStopped)]


def test_a_store_removed_mid_grid_keeps_the_record_aside_and_says_so(tmp_path):
    from greenlab.core.store import journal
    from greenlab.core.store.database import Store

    path = tmp_path / "runs.db"
    listen, heard = _at_first_epoch(path.unlink)  # rm runs.db while the grid writes it
    outcome = _session(path, listen).run()
    notes, (stopped,) = _said(heard)
    assert stopped.store_failed and "the run store was removed or replaced while the grid ran" in stopped.cause
    (kept,) = journal.pending(path)
    assert f"run 1's record is kept in {kept}" in stopped.cause and len(stopped.not_started) == 1
    from greenlab.core.grid.presenter import GridPresenter
    from greenlab.core.run.run_events import RunStored

    (stored,) = [e for e in heard if isinstance(e, RunStored)]
    presenter = GridPresenter()
    for event in heard:
        presenter.apply(event)
    said = [line.text for line in presenter.snapshot().new_lines(0)]
    assert stored.kept_in == kept and any(f"[run 1]; not in the store: its record is kept in {kept}" in t for t in said)
    assert any("energy to target and the summary are left out" in n for n in notes)
    assert outcome.rows == [] and not path.exists()  # no new store made behind the user's back
    for leftover in ("runs.db-wal", "runs.db-shm"):
        (tmp_path / leftover).unlink(missing_ok=True)
    store = Store(path, on_notice=notes.append)  # a new store there: the record is set aside, once, said
    assert store.runs() == [] and journal.pending(path) == []
    assert notes[-1].startswith("record of run 1 kept in") and "no longer here" in notes[-1]


def test_a_full_disk_prints_the_runs_figures_when_even_the_pending_folder_cannot_take_them(tmp_path):
    from greenlab.core.store import journal

    with _tmpfs(tmp_path / "disk", size="1m") as disk:
        path = disk / "runs.db"
        listen, heard = _at_first_epoch(lambda: _fill(disk))
        _session(path, listen, text=GRID).run()
        notes, (stopped,) = _said(heard)
        assert "run 1's record could not be kept beside it either (No space left on device on " in stopped.cause
        assert str(disk) in stopped.cause and "free space there" in stopped.cause
        assert "the run's figures, so nothing measured is lost: {" in stopped.cause
        assert '"energy_j":' in stopped.cause and '"val_accuracy":' in stopped.cause
        kept = journal.folder(path)
        assert not kept.exists() or not list(kept.iterdir())  # no 0-byte record left behind
        (disk / "filler").unlink()
        import sqlite3

        from greenlab.core.store.database import ORPHANED, Store

        with contextlib.closing(sqlite3.connect(path)) as conn, conn:  # as if this process had ended
            conn.execute("update runs set supervisor_pid = ?", [2**22 + 11])
        (row,) = Store(path).runs()
        assert row.status == "interrupted" and row.error == ORPHANED  # which says the figures were printed
        assert "neither the store nor its pending folder could be written" in ORPHANED


def test_a_store_that_stays_locked_after_the_grid_stopped_ends_in_one_line_not_a_traceback(tmp_path, monkeypatch):
    from tests.test_reliability import _hold_lock

    monkeypatch.setenv("GREENLAB_STORE_BUSY_S", "1")
    path = tmp_path / "runs.db"
    holders = []
    listen, heard = _at_first_epoch(lambda: holders.append(_hold_lock(path, 30)))
    try:
        outcome = _session(path, listen, text=GRID).run()  # no exception: the summary's pass is left out
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    notes, (stopped,) = _said(heard)
    assert "the run store stayed locked by another process" in stopped.cause
    assert "energy to target and the summary are left out" in notes[-1]
    assert outcome.rows == []


def test_a_store_damaged_during_a_grid_is_refused_at_its_end_with_exit_2(tmp_path):
    path = tmp_path / "runs.db"
    _store_of_runs(path)
    listen, heard = _at_first_epoch(lambda: _garble(path))
    with pytest.raises(GreenLabError) as refused:
        _session(path, listen, text=GRID).run()
    assert f"the run store {path} is damaged (" in str(refused.value) and '".recover"' in str(refused.value)
    assert refused.value.exit_code == 2


# -- 11. Ctrl-C while the store is locked ----------------------------------------------------------------------
def test_two_ctrl_c_while_the_store_is_locked_stop_the_grid_and_keep_the_record(tmp_path):
    import signal
    import subprocess
    import sys
    import threading
    import time

    from greenlab.core.store import journal
    from tests.conftest import REPO
    from tests.test_reliability import LONG, _hold_lock

    grid = tmp_path / "g.toml"
    grid.write_text(LONG)
    path = tmp_path / "runs.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "greenlab", "--headless", str(grid), "--db", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    watchdog = threading.Timer(240, process.kill)  # a grid deaf to Ctrl-C fails the test, never hangs it
    watchdog.start()
    said, holder = [], None
    try:
        for line in process.stdout:
            said.append(line)
            if line.startswith("energy:") and holder is None:  # the run's row is written: lock the store
                holder = _hold_lock(path, 600)
            if line.startswith("store busy, waiting"):
                break
        process.send_signal(signal.SIGINT)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        said += process.stdout.readlines()
        code = process.wait(timeout=60)
    finally:
        watchdog.cancel()
        if holder is not None:
            holder.kill()
            holder.wait()
    text = "".join(said)
    assert code in (1, 130), text
    assert "grid stopped: the run store stayed locked by another process" in text, text
    (kept,) = journal.pending(path)
    assert f"run 1's record is kept in {kept}" in text and "Traceback" not in text


# -- 13. runaway input ------------------------------------------------------------------------------------------
def test_a_grid_file_over_the_size_cap_is_refused_unread(tmp_path, capsys):
    from greenlab.core.plan import limits

    grid = tmp_path / "g.toml"
    with grid.open("w") as out:  # a valid grid, then comments past the cap
        out.write(GRID)
        line = "# " + "x" * 98 + "\n"
        out.writelines(line for _ in range(limits.MAX_FILE_BYTES // len(line) + 10))
    assert cli.main(["--headless", str(grid), "--db", str(tmp_path / "runs.db")]) == 2
    err = capsys.readouterr().err
    assert "more than a grid file may hold (10,000,000)" in err and len(err) < 400
    assert not (tmp_path / "runs.db").exists()


def test_deeply_nested_tables_are_refused_in_one_line(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text(GRID + "deep = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n")
    assert cli.main(["--headless", str(grid), "--db", str(tmp_path / "runs.db")]) == 2
    err = capsys.readouterr().err
    assert "nested deeper than a grid file can be" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "body",
    [
        '[[experiment]]\nname = "h"\nmodels = ["tinycnn"]\n' + "k" * 5_000_000 + " = 1\n",  # a 5 MB key
        '[[experiment]]\nname = "h"\nmodels = [' + ", ".join(['"tinycnn"'] * 200_000) + "]\n",  # a name repeated
        '[[experiment]]\nname = "h"\nmodels = ["' + "m" * 3_000_000 + '"]\n',  # a 3 MB model name
    ],
    ids=["key", "list", "name"],
)
def test_runaway_input_is_quoted_in_about_80_characters(tmp_path, capsys, body):
    grid = tmp_path / "g.toml"
    grid.write_text(GRID.split("[[experiment]]")[0] + body)
    assert cli.main(["--headless", str(grid), "--db", str(tmp_path / "runs.db")]) == 2
    err = capsys.readouterr().err
    assert len(err) < 1000 and ("characters)" in err or "(200,000 items)" in err), err[:2000]


# -- 12. --ray at an address where something else answers -------------------------------------------------------
@pytest.fixture
def http_server():
    """A plain HTTP server on loopback, as another program on the machine may run."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_server():
    """A program that accepts connections and never says a word."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_an_address_where_an_http_server_answers_is_named_not_joined(http_server, monkeypatch):
    from greenlab.core.grid.ray_cluster import probe_address

    monkeypatch.setenv("GREENLAB_RAY_CONNECT_TIMEOUT_S", "5")
    for address in (f"127.0.0.1:{http_server}", f"ray://127.0.0.1:{http_server}"):
        with pytest.raises(GreenLabError) as refused:
            probe_address(address)
        assert f"an HTTP server answers at 127.0.0.1:{http_server} (" in str(refused.value)
        assert "token" not in str(refused.value)


def test_an_address_that_accepts_and_says_nothing_is_refused_within_the_timeout(silent_server, monkeypatch):
    from greenlab.core.grid.ray_cluster import probe_address

    monkeypatch.setenv("GREENLAB_RAY_CONNECT_TIMEOUT_S", "1")
    with pytest.raises(GreenLabError, match="accepts connections but did not answer as Ray .* within 1 s"):
        probe_address(f"127.0.0.1:{silent_server}")


def test_a_refused_connection_says_so_not_that_it_timed_out(silent_server):
    import socket

    from greenlab.core.grid.ray_cluster import probe_address

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(GreenLabError) as refused:
        probe_address(f"127.0.0.1:{port}")
    assert "refused the connection: nothing listens there" in str(refused.value)
    assert "did not answer within" not in str(refused.value)


def test_a_grpc_server_passes_the_probe():
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    from greenlab.core.grid.ray_cluster import probe_address

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        probe_address(f"127.0.0.1:{port}")  # what Ray's GCS and Ray Client are: left to ray.init
    finally:
        server.stop(None)


def test_headless_ray_at_an_http_server_exits_2_naming_it(http_server, tmp_path):
    pytest.importorskip("ray")
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    result = run_cli(
        "--headless", str(grid), "--db", str(tmp_path / "runs.db"), "--ray", f"127.0.0.1:{http_server}", timeout=120
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "an HTTP server answers at" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs.db").exists()


# -- 14. a paused run -------------------------------------------------------------------------------------------
def test_the_pause_watch_counts_a_stopped_process_and_a_silence_between_batches():
    from greenlab.core.run.pauses import PauseWatch

    watch = PauseWatch()
    for t in range(10):
        watch.state(float(t), stopped=False)
        watch.event(t * 0.1, batch=True)
    assert watch.verdict() is None  # a steady run
    for t in range(10, 40):
        watch.state(float(t), stopped=True)  # SIGSTOP for 30 s
    watch.state(40.0, stopped=False)
    watch.event(40.0, batch=True)  # the next batch, 39 s after the last
    found = watch.verdict()
    assert found["stopped_s"] == 30.0 and found["longest_batch_gap_s"] == pytest.approx(39.1)
    silent = PauseWatch()  # a pause the state check missed (a suspended host): the silence tells it
    for t in range(5):
        silent.event(t * 0.1, batch=True)
    silent.event(0.4 + 12.0, batch=True)
    assert silent.verdict()["longest_batch_gap_s"] == 12.0
    evaluation = PauseWatch()  # an epoch's evaluation between batches is no pause
    for t in range(5):
        evaluation.event(t * 0.1, batch=True)
    evaluation.event(0.5, batch=False)
    evaluation.event(20.0, batch=True)
    assert evaluation.verdict() is None


def test_a_run_stopped_mid_run_is_flagged_paused(tmp_path):
    import signal
    import threading

    from greenlab.core.grid.local import LocalDriver
    from greenlab.core.plan.config import parse_grid
    from greenlab.core.store.database import Store

    store = Store(tmp_path / "runs.db")
    driver = None

    def stop_for_a_while():
        pid = driver.supervisor._child.pid  # the training process
        os.kill(pid, signal.SIGSTOP)
        threading.Timer(4.0, os.kill, (pid, signal.SIGCONT)).start()

    listen, heard = _at_first_epoch(stop_for_a_while)
    driver = LocalDriver(store, on_event=listen)
    (outcome,) = driver.run_grid(parse_grid(GRID.replace("epochs = 1", "epochs = 2"), "g.toml").grid())
    row = store.run(outcome.run_id)
    assert outcome.status == "completed" and "paused" in row.flags
    assert row.meters["paused"]["stopped_s"] > 0
    notes, _ = _said(heard)
    assert any(n.startswith(f"run {outcome.run_id} was paused: its process was stopped for") for n in notes)


def test_a_paused_run_is_left_out_of_the_verdicts_on_energy_and_named_in_the_checks(tmp_path, capsys):
    from greenlab.core.store.database import Store
    from tests.test_report_cli import _add

    path = tmp_path / "st.db"
    store = Store(path)
    ids = []
    for repeat in range(4):
        _add(store, "s", "tinycnn", "baseline", repeat, 100.0 + repeat, 0.9)
        ids.append(_add(store, "s", "tinycnn", "stego", repeat, 70.0 + repeat, 0.9))
    store.update_run(ids[2], flags=["paused"], energy_training_j=500.0)  # stopped for minutes: its energy is off
    store.close()
    code, out, err = _report(capsys, "--db", str(path), "--format", "json")
    assert code == 0, err
    import json

    judged = {c["metric"]: c for c in json.loads(out)}
    energy = judged["energy_training_j"]
    assert energy["n"] == 3 and energy["verdict"] == "saves"
    assert any(d["kind"] == "paused" and d["run_ids"] == [ids[2]] for d in energy["diagnostics"])
    assert judged["val_accuracy"]["n"] == 4  # its accuracy is its own
    code, out, _ = _report(capsys, "--db", str(path))
    assert f"technique run {ids[2]} was paused mid-run (flag paused" in out
