"""The core never loads a user interface: each core module imports in a fresh interpreter without textual."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import greenlab.core


def _core_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(greenlab.core.__path__, "greenlab.core."))


def test_core_modules_are_found():
    modules = _core_modules()
    assert "greenlab.core.run.supervisor" in modules and "greenlab.core.measure.tracker" in modules


def test_importing_core_loads_no_textual():
    modules = _core_modules()
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'textual_plotext') "
        "or m.startswith('greenlab.tui'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"core pulled in: {result.stdout}"
