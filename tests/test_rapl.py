"""The RAPL CPU/DRAM meter against fake powercap trees built in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from greenlab.core.measure import rapl
from greenlab.core.measure.rapl import counter_delta_uj, discover_rapl

MAX = 262_143_328_850  # a real package max_energy_range_uj (2^32 units of 61 uJ)


def zone(
    root: Path, zone_id: str, name: str, energy_uj: int, max_uj: int = MAX, *, nested_in: Path | None = None
) -> Path:
    d = (nested_in or root) / zone_id
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def set_uj(d: Path, value: int) -> None:
    (d / "energy_uj").write_text(f"{value}\n")


def two_sockets(root: Path) -> dict[str, Path]:
    """The flat /sys/class/powercap layout of a two-socket server with dram domains, core and psys."""
    (root / "intel-rapl").mkdir(parents=True)
    return {
        "pkg0": zone(root, "intel-rapl:0", "package-0", 1_000_000),
        "dram0": zone(root, "intel-rapl:0:0", "dram", 500_000, 65_712_999_613),
        "pkg1": zone(root, "intel-rapl:1", "package-1", 2_000_000),
        "dram1": zone(root, "intel-rapl:1:0", "dram", 700_000, 65_712_999_613),
    }


def test_two_sockets_sum_packages_and_dram(tmp_path):
    z = two_sockets(tmp_path)
    meter, reason = discover_rapl(str(tmp_path))
    assert reason is None
    assert meter.components() == ["cpu", "dram"]
    assert meter.method("cpu") == meter.method("dram") == "counter"
    assert meter.energy_j() == {"cpu": 0.0, "dram": 0.0}
    set_uj(z["pkg0"], 1_000_000 + 30_000_000)  # 30 J
    set_uj(z["pkg1"], 2_000_000 + 12_500_000)  # 12.5 J
    set_uj(z["dram0"], 500_000 + 4_000_000)
    set_uj(z["dram1"], 700_000 + 1_000_000)
    assert meter.energy_j() == {"cpu": pytest.approx(42.5), "dram": pytest.approx(5.0)}
    info = meter.info()
    assert info["cpu"]["sockets"] == 2
    assert [d["name"] for d in info["cpu"]["domains"]] == ["package-0", "package-1"]
    assert info["cpu"]["domains"][0]["max_energy_range_uj"] == MAX
    assert info["cpu"]["psys_present"] is False
    assert info["dram"]["sockets_without_dram"] == []


def test_wraparound_mid_run_gives_the_true_delta(tmp_path):
    (tmp_path / "intel-rapl").mkdir()
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", MAX - 2_000_000)
    meter, _ = discover_rapl(str(tmp_path))
    set_uj(pkg, MAX - 500_000)
    assert meter.energy_j()["cpu"] == pytest.approx(1.5)
    # Counter passes MAX and restarts: 500_000 uJ to reach MAX, 1 uJ to roll to 0, then 3_000_000.
    set_uj(pkg, 3_000_000)
    assert meter.energy_j()["cpu"] == pytest.approx((1_500_000 + 500_001 + 3_000_000) / 1e6)


def test_counter_delta_formula():
    assert counter_delta_uj(10, 25, 100) == 15
    assert counter_delta_uj(90, 5, 100) == 16  # 90 -> 100 is 10, 100 -> 0 is 1, 0 -> 5 is 5
    assert counter_delta_uj(100, 0, 100) == 1
    assert counter_delta_uj(7, 7, 100) == 0


def test_psys_core_and_uncore_are_never_added(tmp_path):
    (tmp_path / "intel-rapl").mkdir()
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    core = zone(tmp_path, "intel-rapl:0:0", "core", 0)
    uncore = zone(tmp_path, "intel-rapl:0:1", "uncore", 0)
    psys = zone(tmp_path, "intel-rapl:1", "psys", 0)
    mmio = zone(tmp_path, "intel-rapl-mmio:0", "package-0", 0)
    meter, reason = discover_rapl(str(tmp_path))
    assert reason is None
    assert meter.components() == ["cpu"]
    for d, uj in ((pkg, 10_000_000), (core, 6_000_000), (uncore, 1_000_000), (psys, 25_000_000), (mmio, 10_000_000)):
        set_uj(d, uj)
    assert meter.energy_j() == {"cpu": pytest.approx(10.0)}
    info = meter.info()["cpu"]
    assert info["psys_present"] is True
    assert info["sockets"] == 1
    why = {z["zone"]: z["why"] for z in info["ignored_zones"]}
    assert why["intel-rapl:0:0"] == why["intel-rapl:0:1"] == "contained in package"
    assert "platform total" in why["intel-rapl:1"]
    assert "intel-rapl-mmio" in why


def test_missing_dram_leaves_cpu_working(tmp_path):
    (tmp_path / "intel-rapl").mkdir()
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 100)
    meter, reason = discover_rapl(str(tmp_path))
    assert reason is None
    assert meter.components() == ["cpu"]
    assert meter.method("dram") == "unavailable"
    set_uj(pkg, 2_000_100)
    assert meter.energy_j() == {"cpu": pytest.approx(2.0)}


def test_dram_on_one_socket_only_is_recorded(tmp_path):
    (tmp_path / "intel-rapl").mkdir()
    zone(tmp_path, "intel-rapl:0", "package-0", 0)
    zone(tmp_path, "intel-rapl:1", "package-1", 0)
    dram1 = zone(tmp_path, "intel-rapl:1:0", "dram", 0)
    meter, _ = discover_rapl(str(tmp_path))
    set_uj(dram1, 3_000_000)
    assert meter.energy_j()["dram"] == pytest.approx(3.0)
    assert meter.info()["dram"]["sockets_without_dram"] == [0]


def test_nested_layout_and_multi_die_packages(tmp_path):
    """/sys/devices/virtual/powercap nests subzones; Cascade Lake-AP names dies within a package."""
    ctype = tmp_path / "intel-rapl"
    ctype.mkdir()
    die0 = zone(tmp_path, "intel-rapl:0", "package-0-die-0", 0, nested_in=ctype)
    die1 = zone(tmp_path, "intel-rapl:1", "package-0-die-1", 0, nested_in=ctype)
    dram = zone(tmp_path, "intel-rapl:0:0", "dram", 0, nested_in=die0)
    meter, reason = discover_rapl(str(tmp_path))
    assert reason is None
    set_uj(die0, 1_000_000)
    set_uj(die1, 2_000_000)
    set_uj(dram, 500_000)
    assert meter.energy_j() == {"cpu": pytest.approx(3.0), "dram": pytest.approx(0.5)}
    assert meter.info()["cpu"]["sockets"] == 1


def test_tpmi_is_used_only_without_msr_packages(tmp_path):
    zone(tmp_path, "intel-rapl-tpmi:0", "package-0", 0)
    meter, reason = discover_rapl(str(tmp_path))
    assert reason is None and meter.info()["cpu"]["control_type"] == "intel-rapl-tpmi"
    zone(tmp_path, "intel-rapl:0", "package-0", 0)
    meter, _ = discover_rapl(str(tmp_path))
    assert meter.info()["cpu"]["control_type"] == "intel-rapl"


def test_permission_denied_gives_the_chmod_hint(tmp_path, monkeypatch):
    two_sockets(tmp_path)
    real = rapl.read_uj

    def denied(path: str) -> int:
        # Tests run as root, where chmod 000 does not stop a read: deny the way the kernel does for users.
        if path.endswith("energy_uj") and not path.endswith("max_energy_range_uj"):
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(rapl, "read_uj", denied)
    meter, hint = discover_rapl(str(tmp_path))
    assert meter is None
    assert "permission denied" in hint
    assert f"sudo chmod a+r {tmp_path}/intel-rapl:*/energy_uj" in hint
    assert "\n" not in hint


def test_read_failure_mid_run_skips_the_component_then_recovers(tmp_path, monkeypatch):
    z = two_sockets(tmp_path)
    meter, _ = discover_rapl(str(tmp_path))
    real = rapl.read_uj

    def flaky(path: str) -> int:
        if os.path.dirname(path) == str(z["pkg1"]):
            raise OSError(5, "Input/output error", path)
        return real(path)

    monkeypatch.setattr(rapl, "read_uj", flaky)
    set_uj(z["pkg0"], 1_000_000 + 1_000_000)
    set_uj(z["pkg1"], 2_000_000 + 2_000_000)
    set_uj(z["dram0"], 500_000 + 250_000)
    reading = meter.energy_j()
    assert "cpu" not in reading and reading["dram"] == pytest.approx(0.25)
    assert "Input/output error" in meter.last_errors["cpu"]
    monkeypatch.setattr(rapl, "read_uj", real)
    assert meter.energy_j()["cpu"] == pytest.approx(3.0)  # the skipped interval is still counted


def test_env_root_is_respected(tmp_path, monkeypatch):
    two_sockets(tmp_path)
    monkeypatch.setenv("GREENLAB_POWERCAP_ROOT", str(tmp_path))
    meter, reason = discover_rapl()
    assert reason is None
    assert meter.info()["cpu"]["root"] == str(tmp_path)


def test_no_tree_gives_a_reason(tmp_path, monkeypatch):
    missing = tmp_path / "nothing-here"
    meter, reason = discover_rapl(str(missing))
    assert meter is None and reason.startswith(f"no RAPL domains under {missing}")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("GREENLAB_POWERCAP_ROOT", str(empty))
    meter, reason = discover_rapl()
    assert meter is None and reason == f"no RAPL domains under {empty}"


def test_unreadable_dram_is_dropped_not_fatal(tmp_path, monkeypatch):
    z = two_sockets(tmp_path)
    os.remove(z["dram1"] / "energy_uj")
    meter, reason = discover_rapl(str(tmp_path))
    assert reason is None
    assert meter.info()["dram"]["sockets_without_dram"] == [1]
