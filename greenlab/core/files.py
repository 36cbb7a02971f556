"""Facts about files and disks that several parts of GreenLab name in their messages (which disk is full)."""

from __future__ import annotations

import os
from pathlib import Path


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the filesystem that holds `path` (or its nearest existing parent)."""
    here = Path(os.path.abspath(path))
    while not here.exists() and here != here.parent:
        here = here.parent
    device = here.stat().st_dev
    while here != here.parent and here.parent.stat().st_dev == device:
        here = here.parent
    return here


def disk_of(path: str | os.PathLike[str]) -> str:
    """The disk holding `path`, as a message names it: its folder and, when another, its mount point
    ("/data/runs (the disk mounted at /data)")."""
    folder = Path(os.path.abspath(path))
    try:
        mounted = mount_point(folder)
    except OSError:
        return str(folder)
    return str(folder) if mounted == folder else f"{folder} (the disk mounted at {mounted})"
