"""Writing a report's files (`greenlab report --out/--plot`, the TUI's export) without harming another file.

An output path is checked before anything is rendered (`check_output`) and written only through a temporary
file in the same folder, fsynced and renamed into place (`write_outputs`), so a full disk or a crash leaves
the old file whole, never truncated or half-written. It refuses: the run store itself and its SQLite
companions (-wal, -shm, -journal), another output of the same command, a symbolic link at the path (it is
never followed), anything that is not a plain file, and an existing file unless `force` is given. Every
refusal is a GreenLabError: one line naming the path, why and the fix, with nothing written.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from greenlab.core.errors import GreenLabError
from greenlab.core.files import disk_of

STORE_COMPANIONS = ("", "-wal", "-shm", "-journal")  # the store's own files, which no output may replace


@dataclass(frozen=True)
class Output:
    """One file to write: where, what, and how the user named it in messages (`--out`, "the export")."""

    path: Path
    data: bytes | str
    name: str = "the report"


def _same(a: Path, b: Path) -> bool:
    """One file under two spellings: the same resolved path, or (both existing) the same device and inode,
    which catches a hard link or a folder reached through a link."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _protected(store_path: Path | None) -> list[Path]:
    if store_path is None:
        return []
    return [store_path.with_name(store_path.name + suffix) for suffix in STORE_COMPANIONS]


def check_output(
    path: str | os.PathLike[str],
    *,
    name: str = "the report",
    store_path: Path | None = None,
    others: Iterable[str | os.PathLike[str]] = (),
    force: bool = False,
) -> Path:
    """`path` as a place an output may be written, or GreenLabError naming why not (see the module docstring)."""
    target = Path(path)
    shown = f"{name} {target}"
    try:
        found = os.lstat(target)
    except FileNotFoundError:
        found = None
    except OSError as exc:
        raise GreenLabError(f"{shown}: {exc.strerror or exc}; choose another path") from None
    if found is not None and stat.S_ISLNK(found.st_mode):
        raise GreenLabError(
            f"{shown} is a symbolic link (to {os.readlink(target)}); GreenLab does not write through a link: "
            "name the file itself, or remove the link"
        )
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise GreenLabError(f"{shown} is a folder; name a file in it, e.g. {target / 'report.txt'}")
    for protected in _protected(store_path):
        if _same(target, protected):
            raise GreenLabError(
                f"{shown} is {'the run store' if protected == store_path else 'a file of the run store'} "
                f"({protected}); writing there would destroy it: choose another path"
            )
    for other in others:
        if _same(target, Path(other)):
            raise GreenLabError(f"{shown} is also the path of another output ({other}); give each its own file")
    folder = target.parent
    if not folder.is_dir():
        raise GreenLabError(f"{shown}: the folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GreenLabError(f"{shown}: the folder {folder} is not writable; choose a path you can write to")
    if found is not None:
        if not stat.S_ISREG(found.st_mode):
            raise GreenLabError(f"{shown} exists and is not a plain file; choose another path")
        if not force:
            raise GreenLabError(f"{shown} exists; pass --force to replace it, or choose another path")
    return target


def _temporary(target: Path, data: bytes, mode: int) -> Path:
    """`data` in a new file beside `target`, on the disk before this returns."""
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _place(temporary: Path, target: Path, force: bool) -> None:
    """Rename `temporary` to `target`. Without `force`, a file that appeared there meanwhile is kept: the
    new one is hard-linked in, which fails rather than replaces (a rename where links are not supported)."""
    if force:
        os.replace(temporary, target)  # replaces a name, never writes through it: a link there is replaced
        return
    try:
        os.link(temporary, target)
    except FileExistsError:
        raise GreenLabError(f"{target} appeared while the report was written; it is left as it is") from None
    except OSError:
        if os.path.lexists(target):
            raise GreenLabError(f"{target} appeared while the report was written; it is left as it is") from None
        os.replace(temporary, target)
        return
    temporary.unlink(missing_ok=True)


def write_outputs(outputs: Sequence[Output], *, store_path: Path | None = None, force: bool = False) -> None:
    """Write every output whole or none: each is checked (`check_output`, against the store and the others),
    written to a temporary file beside it and renamed into place only once all are on the disk."""
    for index, output in enumerate(outputs):
        check_output(
            output.path,
            name=output.name,
            store_path=store_path,
            others=[o.path for i, o in enumerate(outputs) if i != index],
            force=force,
        )
    temporaries: list[tuple[Output, Path]] = []
    current, placing = (outputs[0] if outputs else None), False
    try:
        for output in outputs:
            current = output
            data = output.data.encode("utf-8") if isinstance(output.data, str) else output.data
            mode = 0o666  # trimmed by the umask, as any new file
            with contextlib.suppress(OSError):
                mode = stat.S_IMODE(os.stat(output.path, follow_symlinks=False).st_mode)  # a replaced file's own
            temporaries.append((output, _temporary(Path(output.path), data, mode)))
        placing = True
        for output, temporary in temporaries:
            current = output
            _place(temporary, Path(output.path), force)
    except BaseException as exc:
        for _output, temporary in temporaries:
            temporary.unlink(missing_ok=True)
        if not isinstance(exc, OSError) or current is None:
            raise
        folder = Path(current.path).parent
        changed = "an earlier output was already in place" if placing else "no existing file was changed"
        raise GreenLabError(
            f"cannot write {current.name} {current.path} ({exc.strerror or exc}; on {disk_of(folder)}); "
            f"{changed}: free space there or choose another path"
        ) from None


def write_output(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    store_path: Path | None = None,
    others: Iterable[str | os.PathLike[str]] = (),
    force: bool = False,
    name: str = "the report",
) -> None:
    """One output (see `write_outputs`); `others` are paths it must not be (another output of the same act)."""
    check_output(path, name=name, store_path=store_path, others=others, force=force)
    write_outputs([Output(Path(path), data, name)], store_path=store_path, force=force)
