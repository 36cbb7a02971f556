"""The shape of the code, held by tests: SQL only in the store, typed rows of the whole public schema, each
package saying what it owns (and docs/architecture.md saying it too, with what each imports), and every lint
exception giving its reason."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from greenlab.core.store.rows import JSON_COLUMNS, ComponentRow, EpochRow, RunRow, Sample
from greenlab.core.store.schema import COMPONENT_COLUMNS, EPOCH_COLUMNS, RUN_COLUMNS, SAMPLE_COLUMNS
from tests.conftest import REPO

PACKAGE = REPO / "greenlab"
SQL = re.compile(
    r"^\s*(select\b.+\bfrom\b|insert\s+into\b|update\s+\w+\s+set\b|delete\s+from\b|create\s+(table|index)\b"
    r"|pragma\b|begin\s+(immediate|exclusive|transaction)\b|(commit|rollback)$)",
    re.I | re.S,
)


def _strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):  # an f-string: its literal parts
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            found.append((node.lineno, text))
    return found


def test_no_sql_text_outside_the_store():
    # benchmarks and scripts too: they are the store's users as much as the faces are
    offenders = []
    for path in (p for folder in (PACKAGE, REPO / "benchmarks", REPO / "scripts") for p in folder.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "core" / "store"):
            continue
        for line, text in _strings(path):
            if SQL.search(text):
                offenders.append(f"{path.relative_to(REPO)}:{line}: {text[:60]!r}")
    assert not offenders, "SQL outside greenlab/core/store/ (in greenlab/, benchmarks/ or scripts/):\n" + "\n".join(
        offenders
    )


def test_the_store_really_holds_the_sql_the_check_looks_for():
    """The check above is not vacuous: the store's own module trips it."""
    assert any(SQL.search(text) for _, text in _strings(PACKAGE / "core" / "store" / "database.py"))


def test_a_run_row_is_the_whole_public_schema_with_its_json_decoded():
    assert list(RunRow.__dataclass_fields__) == list(RUN_COLUMNS)
    row = RunRow.from_stored({"id": 1, "flags": '["a"]', "meters": "not json", "settings": '{"lr": 0.1}'})
    assert row.flags == ["a"] and row.meters == {} and row.value("settings") == {"lr": 0.1}
    assert set(JSON_COLUMNS) <= set(RUN_COLUMNS)
    assert list(row.as_dict()) == list(RUN_COLUMNS) and row.as_dict()["id"] == 1
    with pytest.raises(KeyError, match="no runs column 'absent'"):
        row.value("absent")
    with pytest.raises(TypeError, match="no runs column 'absent'"):
        RunRow.of(absent=1)
    assert RunRow.of(flags='["a"]', energy_j="1.5") == RunRow(0, flags=["a"], energy_j=1.5)
    assert row.replaced(flags='["b"]').flags == ["b"] and row.flags == ["a"]


def test_the_rows_of_epochs_samples_and_components_are_their_tables_with_json_decoded():
    assert list(EpochRow.__dataclass_fields__) == list(EPOCH_COLUMNS)
    assert list(Sample.__dataclass_fields__) == list(SAMPLE_COLUMNS)
    assert list(ComponentRow.__dataclass_fields__) == list(COMPONENT_COLUMNS)
    part = ComponentRow.from_stored({"run_id": 1, "inputs": '{"tdp_w": 85}', "flags": "not json", "unknown": 1})
    assert (part.inputs, part.flags, part.component) == ({"tdp_w": 85}, [], None)
    assert EpochRow.from_stored({"run_id": 1, "epoch": 2, "flags": '["x"]'}).flags == ["x"]


def test_stored_json_columns_are_decoded_only_in_the_store():
    """The faces and the report read runs' JSON columns through store.rows (RunRow, `decode`), never by
    parsing stored text themselves: one decoder, one rule for text that is not JSON."""
    readers = [*(PACKAGE / "core" / "report").rglob("*.py"), *(PACKAGE / "tui").rglob("*.py")]
    readers += [PACKAGE / "headless.py", PACKAGE / "report_cli.py"]
    offenders = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in readers
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr == "loads"
        and isinstance(node.value, ast.Name)
        and node.value.id == "json"
    ]
    assert not offenders, "JSON parsed outside greenlab/core/store/:\n" + "\n".join(offenders)
    from greenlab.core.store.rows import decode

    assert decode("flags", '["x"]') == ["x"] and decode("flags", "not json") == []
    assert decode("settings", {"lr": 0.1}) == {"lr": 0.1}


def test_every_core_package_says_what_it_owns():
    for init in (PACKAGE / "core").rglob("__init__.py"):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and len(docstring) > 80, f"{init.relative_to(REPO)} needs a docstring of what it owns"


CORE = ("plan", "train", "measure", "store", "run", "report", "grid")  # the layers' order, lowest first


def _architecture_table() -> dict[str, tuple[str, str]]:
    """docs/architecture.md's package table: package -> (what it owns, what it imports)."""
    rows = {}
    for line in (REPO / "docs" / "architecture.md").read_text().splitlines():
        match = re.fullmatch(r"\| `core/(\w+)` \| (.+) \| (.+) \|", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def _core_packages_imported(package: str) -> set[str]:
    """The other core packages a package's modules import, in functions too."""
    found = set()
    for path in (PACKAGE / "core" / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[:2] == ["greenlab", "core"] and len(parts) > 2 and parts[2] in CORE:
                    found.add(parts[2])
    return found - {package}


def test_the_architecture_page_names_what_each_core_package_imports():
    table = _architecture_table()
    assert sorted(table) == sorted(CORE)
    for package, (_, imports) in table.items():
        if imports == "everything below":
            said = set(CORE[: CORE.index(package)])
        else:
            said = set() if imports == "—" else {name.strip() for name in imports.split(",")}
        assert _core_packages_imported(package) == said, f"docs/architecture.md: what core/{package} imports"


def test_the_architecture_page_names_every_module_of_each_core_package():
    for package, (owns, _) in _architecture_table().items():
        folder = PACKAGE / "core" / package
        modules = {path.stem for path in folder.glob("*.py") if path.stem != "__init__"}
        modules |= {f"{path.parent.name}/" for path in folder.glob("*/__init__.py")}
        named = set(re.findall(r"`([a-z_]+/?)`", owns))
        assert named == modules, (
            f"docs/architecture.md, core/{package}: not a module {named - modules}, unnamed {modules - named}"
        )


def test_every_noqa_gives_its_reason():
    bare = []
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "benchmarks").glob("*.py"), *(REPO / "scripts").glob("*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = re.search(r"#\s*noqa(:\s*[A-Z]+\d+(,\s*[A-Z]+\d+)*)?(.*)$", line)
            if match and not re.search(r"\w{3,}", match.group(3) or ""):
                bare.append(f"{path.relative_to(REPO)}:{number}")
    assert not bare, "a noqa without its reason:\n" + "\n".join(bare)


# Dicts the readers below keep under names of a row's columns, and why they are not rows: a run's settings
# (and the form's, and a setting in a label), the calibration and the accounting a forecast is priced with,
# a table row's change per metric, the filters chosen, a meter's facts, the form's saved values.
NOT_ROWS = frozenset(
    {
        "settings",
        "settings[key]",
        "initial.settings",
        "calibration",
        "accounting",
        "r.change",
        "self.filters()",
        "facts",
        "data",
        "saved",
    }
)


def test_the_report_the_forecast_and_the_tui_read_rows_by_attribute():
    """A stored row (a run, an epoch, a sample, a component) is read as `row.energy_j`, never `row["energy_j"]`
    or `row.get("energy_j")`: a misspelt attribute fails mypy, a misspelt key reads as None. A column named
    by a variable goes through `RunRow.value`, which is never given a constant."""
    from dataclasses import fields

    names = {f.name for kind in (RunRow, EpochRow, ComponentRow, Sample) for f in fields(kind)}
    readers = [*(PACKAGE / "core" / "report").rglob("*.py"), PACKAGE / "core" / "grid" / "forecast.py"]
    readers += [*(PACKAGE / "tui").rglob("*.py")]
    offenders = []
    for path in readers:
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                receiver, key = node.value, node.slice
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                if node.func.attr == "value" and isinstance(node.args[0], ast.Constant):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.get_source_segment(text, node)}")
                    continue
                if node.func.attr != "get":
                    continue
                receiver, key = node.func.value, node.args[0]
            else:
                continue
            if not (isinstance(key, ast.Constant) and key.value in names):
                continue
            if ast.get_source_segment(text, receiver) not in NOT_ROWS:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.get_source_segment(text, node)}")
    assert not offenders, "a row read by a string key (read its attribute):\n" + "\n".join(offenders)
