"""`greenlab report` on synthetic stores of known values: verdicts agree with scipy, every format renders,
plots are drawn, and bad input exits 2 with one line and nothing written."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from greenlab import cli
from greenlab.core.plan.analysis import AnalysisSettings, Cell, Plan
from greenlab.core.report import compare, render, stats
from greenlab.core.store.database import Store
from tests.conftest import run_cli

BASELINE = [100.0, 102.0, 98.0, 101.0, 99.0]
CELLS = {  # technique -> training energies; accuracy stays near the baseline's unless said
    "stego": [70.0, 71.5, 69.0, 70.5, 69.5],  # clearly saves
    "lowrank": [120.0, 121.0, 119.0, 122.0, 118.0],  # clearly costs
    "prune": [100.5, 101.0, 99.5, 100.0, 100.8],  # equivalent within 5 %
    "prune+stego": [80.0, 130.0, 105.0, 90.0, 112.0],  # inconclusive
}
EXPECTED = {"stego": "saves", "lowrank": "costs", "prune": "equivalent", "prune+stego": "inconclusive"}


def _add(
    store: Store,
    experiment: str,
    model: str,
    technique: str,
    repeat: int,
    energy: float,
    accuracy: float,
    epochs: int = 2,
) -> int:
    settings = {"epochs": epochs, "repeats": 5, "equivalence_margin": 0.05, "techniques": {technique: {}}}
    run_id = store.start_run(
        {
            "experiment": experiment,
            "model": model,
            "dataset": "digits",
            "technique": technique,
            "settings": settings,
            "repeat": repeat,
            "seed": repeat,
            "settings_key": f"{experiment}-{model}-{technique}-{repeat}-{epochs}",
        }
    )
    store.add_epoch({"run_id": run_id, "epoch": 1, "val_accuracy": accuracy - 0.05, "energy_j": energy / 2})
    store.add_epoch({"run_id": run_id, "epoch": 2, "val_accuracy": accuracy, "energy_j": energy / 2})
    store.update_run(
        run_id,
        status="completed",
        energy_training_j=energy,
        energy_j=energy + 300.0,
        energy_kwh=(energy + 300.0) / 3.6e6,
        energy_measured_j=0.0,
        energy_estimated_j=energy + 300.0,
        energy_cpu_j=energy + 250.0,
        energy_cpu_method="estimate",
        energy_dram_j=50.0,
        energy_dram_method="estimate",
        energy_gpu_method="unavailable",
        co2e_g=0.05,
        pue=1.0,
        duration_s=10.0 + energy / 100,
        val_accuracy=accuracy,
        val_f1=accuracy - 0.02,
        finished_at="2026-01-02T03:04:05+00:00",
        meters={"components": {"cpu": {"method": "estimate", "cpu_model": "Test CPU"}}},
    )
    return run_id


@pytest.fixture
def study(tmp_path):
    """Two models; four techniques of known outcome on 5 vs 5 runs; and a one-run experiment."""
    path = tmp_path / "study.db"
    store = Store(path)
    for model, scale in (("tinycnn", 1.0), ("resnet18", 10.0)):
        for repeat in range(5):
            _add(store, "study", model, "baseline", repeat, scale * BASELINE[repeat], 0.90 + 0.002 * repeat)
            for technique, energies in CELLS.items():
                accuracy = 0.85 if technique == "lowrank" else 0.90 + 0.002 * repeat
                _add(store, "study", model, technique, repeat, scale * energies[repeat], accuracy)
    _add(store, "single", "tinycnn", "baseline", 0, 100.0, 0.9, epochs=1)
    _add(store, "single", "tinycnn", "stego", 0, 71.0, 0.9, epochs=1)
    store.close()
    return path


def report(*args: str, capsys) -> tuple[int, str, str]:
    code = cli.main(["report", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_agrees_with_scipy(study, capsys, tmp_path):
    out = tmp_path / "report.json"
    code, _, _ = report(
        "--db", str(study), "--experiment", "study", "--format", "json", "--out", str(out), capsys=capsys
    )
    assert code == 0
    objects = json.loads(out.read_text())
    headline = {(o["model"], o["technique"]): o for o in objects if o["metric"] == "energy_training_j"}
    assert len(headline) == 8 and {o["metric"] for o in objects} >= {
        "energy_j",
        "duration_s",
        "val_accuracy",
        "val_f1",
        "energy_to_target_j",
    }
    raw_p = []
    for (model, technique), o in sorted(headline.items()):
        scale = 10.0 if model == "resnet18" else 1.0
        tech, base = scale * np.array(CELLS[technique]), scale * np.array(BASELINE)
        assert o["verdict"] == EXPECTED[technique], o["sentence"]
        assert (o["n"], o["n_baseline"]) == (5, 5)
        assert o["mean"] == pytest.approx(tech.mean()) and o["baseline_mean"] == pytest.approx(base.mean())
        lt, lb = np.log(tech), np.log(base)
        assert o["ratio"] == pytest.approx(math.exp(lt.mean() - lb.mean()))  # ratio of geometric means
        assert o["ratio_of_means"] == pytest.approx(tech.mean() / base.mean())
        assert o["p_value"] == pytest.approx(sps.ttest_ind(lt, lb, equal_var=False).pvalue)  # on logs too
        va, vb = lt.var(ddof=1) / 5, lb.var(ddof=1) / 5
        df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 4)
        half = sps.t.ppf(0.975, df) * math.sqrt(va + vb)
        assert o["ratio_ci_low"] == pytest.approx(math.exp(lt.mean() - lb.mean() - half))
        assert o["ratio_ci_high"] == pytest.approx(math.exp(lt.mean() - lb.mean() + half))
        assert o["test"] == stats.WELCH and o["df"] == pytest.approx(df)
        pooled = math.sqrt((lt.var(ddof=1) + lb.var(ddof=1)) / 2)
        j = math.gamma(4) / (math.sqrt(4) * math.gamma(3.5))
        assert o["effect_size"] == pytest.approx((lt.mean() - lb.mean()) / pooled * j)  # on the tested scale
        assert o["equivalence_bounds"] == pytest.approx([1 / 1.05, 1.05]) and o["margin"] == 0.05
        assert o["primary"] is True and o["role"] == "primary" and o["holm_family"] == 8
        assert o["plan"]["declared"] is False and o["energy_method"] == "estimated"
        assert o["equivalent"] == (technique == "prune")
        for key in ("model", "dataset", "technique", "metric", "p_holm", "sentence"):
            assert key in o
        raw_p.append(o["p_value"])
    # Holm over the 8 training-energy comparisons, by hand
    order = np.argsort(raw_p)
    expected, running = [0.0] * 8, 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (8 - rank) * raw_p[index]))
        expected[index] = running
    assert [o["p_holm"] for _, o in sorted(headline.items())] == pytest.approx(expected)
    stego = headline[("tinycnn", "stego")]
    assert stego["sentence"].startswith("stego saves 30 % training energy (")
    assert "% CI (Holm-adjusted, 8 comparisons)" in stego["sentence"]
    assert stego["word"] == "saves (estimated)" and "time" in stego["sentence"]
    assert "n = 5 vs 5" in stego["sentence"]
    inconclusive = headline[("tinycnn", "prune+stego")]
    assert inconclusive["repeats_to_decide"] > 5 and "runs per side would likely decide" in inconclusive["sentence"]
    accuracy = next(o for o in objects if o["metric"] == "val_accuracy" and o["technique"] == "lowrank")
    assert accuracy["difference_pp"] == pytest.approx(-5.4)  # 0.85 against 0.904, in points
    assert accuracy["difference_pp_ci_low"] < -5.4 < accuracy["difference_pp_ci_high"] < 0
    assert accuracy["verdict"] == "costs" and "pp validation accuracy" in accuracy["sentence"]
    assert accuracy["margin_pp"] == 1.0 and accuracy["equivalence_bounds"] == pytest.approx([-1.0, 1.0])
    assert accuracy["primary"] is False and accuracy["role"] == "secondary"


def test_one_run_cells_are_insufficient(study, capsys):
    code, out, _ = report(
        "--db", str(study), "--experiment", "single", "--format", "json", "--metric", "energy_training_j", capsys=capsys
    )
    assert code == 0
    (only,) = json.loads(out)
    assert only["verdict"] == "insufficient" and only["p_value"] is None and only["ratio"] == pytest.approx(0.71)
    assert "one run per cell cannot show significance" in only["sentence"]


def test_energy_to_target_is_a_metric(study, capsys):
    code, out, _ = report(
        "--db", str(study), "--experiment", "study", "--format", "json", "--metric", "energy_to_target_j", capsys=capsys
    )
    assert code == 0
    objects = {(o["model"], o["technique"]): o for o in json.loads(out)}
    assert {o["metric"] for o in objects.values()} == {"energy_to_target_j"}
    # lowrank ends at 0.85, below every target: it never reaches it, and says so
    lowrank = objects[("tinycnn", "lowrank")]
    assert lowrank["n"] == 0 and lowrank["n_missing"] == 5 and lowrank["verdict"] == "insufficient"
    assert "never reached the target accuracy" in lowrank["sentence"]
    assert objects[("tinycnn", "stego")]["verdict"] == "saves"


@pytest.mark.parametrize(
    "fmt, marker",
    [
        ("text", "change [CI]"),
        ("markdown", "| model |"),
        ("latex", "\\begin{tabular}"),
        ("csv", "energy_training_j_verdict"),
        ("json", '"verdict"'),
        ("codecarbon", "energy_consumed"),
    ],
)
def test_every_format_renders(study, capsys, fmt, marker):
    code, out, _ = report("--db", str(study), "--format", fmt, capsys=capsys)
    assert code == 0 and marker in out
    if fmt in ("text", "markdown", "latex"):
        assert "tinycnn" in out and "resnet18" in out and "stego saves" in out
        assert "Holm" in out and "insufficient" in out  # the legend


def test_the_text_table_has_a_row_per_model_and_a_group_per_technique(study, capsys):
    _, out, _ = report("--db", str(study), "--experiment", "study", capsys=capsys)
    header, columns = out.splitlines()[:2]
    assert header.split() == ["stego", "lowrank", "prune", "prune+stego"]  # order first run
    rows = out.splitlines()[3:5]
    assert rows[0].startswith("resnet18") and rows[1].startswith("tinycnn")
    assert "↓" in rows[1] and "↑" in rows[1] and "≈" in rows[1] and "?" in rows[1]
    assert "-5.4 pp" in rows[1]  # lowrank's accuracy change in percentage points


def test_csv_has_one_row_per_run_with_its_comparison(study, capsys):
    _, out, _ = report("--db", str(study), "--experiment", "study", "--format", "csv", capsys=capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 2 * 5 * 5  # two models x (baseline + 4 techniques) x 5 runs
    stego = [r for r in rows if r["technique"] == "stego" and r["model"] == "tinycnn"]
    assert {r["energy_training_j_verdict"] for r in stego} == {"saves"}
    assert {r["energy_training_j_verdict"] for r in rows if r["role"] == "baseline"} == {""}


def test_codecarbon_layout(study, capsys):
    _, out, err = report("--db", str(study), "--experiment", "single", "--format", "codecarbon", capsys=capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == list(render.CODECARBON_COLUMNS)
    assert {
        "timestamp",
        "run_id",
        "cpu_energy",
        "gpu_energy",
        "ram_energy",
        "energy_consumed",
        "emissions",
        "pue",
    } <= set(rows[0])
    first = rows[0]
    assert float(first["energy_consumed"]) == pytest.approx(400.0 / 3.6e6)
    assert float(first["cpu_energy"]) == pytest.approx(350.0 / 3.6e6)
    assert first["gpu_energy"] == "" and first["codecarbon_version"] == "" and first["country_name"] == ""
    assert float(first["emissions"]) == pytest.approx(0.05e-3) and first["timestamp"] == "2026-01-02T03:04:05"
    assert first["cpu_model"] == "Test CPU"
    assert "estimated energy" in err  # the layout cannot mark estimates, so the command says so


def test_a_report_reads_and_judges_what_it_shows_and_says_what_it_says_doing_it_all(study, capsys, monkeypatch):
    """Each format reads of `runs` what judging reads and what the format adds (compare.COLUMNS,
    render.COLUMNS), of `epochs` what energy to target reads, and judges the metrics it shows
    (render.metrics_shown): every format says, to the byte, what it says when every column is read and every
    metric judged — flags, arithmetic, host facts and plans of two primaries included."""
    store = Store(study)
    edits = {
        2: {"flags": ["host_busy", "input_bound"], "fp32_precision": "tf32", "data_wait_s": 1.5},
        7: {"flags": ["diverged", "net_below_idle"], "compute_dtype": "bfloat16", "bf16_native": 0},
        4: {"flags": ["paused", "gpu_shared"], "energy_gpu_j": 30.0, "energy_gpu_method": "nvml"},
        1: {"host": {"platform": "Linux", "cpu_count": 8}, "meters": {"components": {"gpu0": {"name": "H100"}}}},
    }
    for run_id, values in edits.items():
        store.update_run(run_id, **values)
    store.declare_plan(Plan(AnalysisSettings(primary="val_f1"), (Cell("c", "stego", "vgg16", "timed"),), "t.toml"))
    for repeat in range(3):
        _add(store, "timed", "vgg16", "baseline", repeat, 50.0 + repeat, 0.9)
        _add(store, "timed", "vgg16", "stego", repeat, 40.0 + repeat, 0.9)
    store.close()
    read: list[tuple[str, ...] | None] = []
    runs, epochs, judge = Store.runs, Store.epochs_by_run, compare.judge

    def named(self, columns=None):
        read.append(columns)
        return runs(self, columns)

    cases = [(fmt, *extra) for fmt in render.FORMATS for extra in ((), ("--metric", "val_accuracy"))]
    monkeypatch.setattr(Store, "runs", named)
    said = {case: report("--db", str(study), "--format", *case, capsys=capsys) for case in cases}
    assert all(columns is not None and "host" not in columns for columns in read[:2])  # text, text --metric
    monkeypatch.setattr(Store, "runs", lambda self, columns=None: runs(self))
    monkeypatch.setattr(Store, "epochs_by_run", lambda self, columns=None: epochs(self))
    monkeypatch.setattr(
        compare, "judge", lambda rows, plans, metrics=None, post_hoc=None: judge(rows, plans, post_hoc=post_hoc)
    )
    for case in cases:
        assert report("--db", str(study), "--format", *case, capsys=capsys) == said[case], case
    assert "primary metric is validation F1" in said[("text",)][1]


@pytest.mark.parametrize("suffix, magic", [("png", b"\x89PNG"), ("svg", b"<?xml")])
def test_plot_files(study, capsys, tmp_path, suffix, magic):
    path = tmp_path / f"figure.{suffix}"
    code, _, err = report("--db", str(study), "--experiment", "study", "--plot", str(path), capsys=capsys)
    assert code == 0 and f"wrote {path}" in err
    data = path.read_bytes()
    assert data.startswith(magic) and len(data) > 5000


def test_plot_bars_stay_in_the_physical_range(tmp_path):
    """Three runs far apart: the t-intervals reach below 0 J and outside 0–100 %; the drawn bars do not,
    and the figure says they are cut."""
    from matplotlib.container import ErrorbarContainer

    from greenlab.core.report import compare as core_report
    from greenlab.core.report import stats
    from greenlab.core.report.plot import CLIP_NOTE, bar_extent, build_figure

    path = tmp_path / "wide.db"
    store = Store(path)
    for repeat, (energy, accuracy) in enumerate(((1.0, 0.99), (100.0, 0.10), (2.0, 0.98))):
        _add(store, "study", "tinycnn", "baseline", repeat, energy, accuracy)
        _add(store, "study", "tinycnn", "stego", repeat, energy * 0.9, accuracy)
    store.close()
    half = stats.mean_ci95([99.0, 10.0, 98.0])
    assert 69.0 - half < 0 and 69.0 + half > 100  # the interval itself is out of range
    reader = Store.reader(path)
    rows = reader.runs()
    comparisons = core_report.judge(rows, reader.plans())
    figure = build_figure(rows, comparisons)
    model_axes, change_axes = figure.axes[0], figure.axes[-1]
    segments = [
        segment
        for c in model_axes.containers
        if isinstance(c, ErrorbarContainer)
        for collection in c.lines[2]
        for segment in collection.get_segments()
    ]
    assert len(segments) == 4  # x and y bars of baseline and stego
    xs = [x for segment in segments for x, _ in segment]
    ys = [y for segment in segments for _, y in segment]
    assert min(xs) >= 0.0 and min(ys) >= 0.0 and max(ys) <= 100.0
    assert min(ys) == 0.0 and max(ys) == 100.0 and min(xs) == 0.0  # cut at the bounds, not dropped
    changes = [
        x
        for c in change_axes.containers
        if isinstance(c, ErrorbarContainer)
        for collection in c.lines[2]
        for segment in collection.get_segments()
        for x, _ in segment
    ]
    assert changes and min(changes) >= -100.0
    assert CLIP_NOTE in [" ".join(text.get_text().split()) for text in figure.texts]  # wrapped to the width
    # cut only where a bound is passed, and never to a negative length
    assert bar_extent(69.0, half, half, 0.0, 100.0) == (69.0, 31.0)
    assert bar_extent(50.0, 10.0, 10.0, 0.0, 100.0) == (10.0, 10.0)
    assert bar_extent(-5.0, 1.0, 1.0) == (0.0, 1.0)


def test_energy_to_target_gives_the_real_reason_in_every_format(tmp_path, capsys):
    """1 of 3 runs a side never reach the target: 2 vs 2 values remain, and every format says why it is
    insufficient (runs that dropped out), never that too few runs have a value."""
    path = tmp_path / "unreached.db"
    store = Store(path)
    for repeat, accuracy in enumerate((0.90, 0.92, 0.85)):  # target: 0.89 - 1 pp; 0.85 never gets there
        _add(store, "study", "tinycnn", "baseline", repeat, BASELINE[repeat], accuracy)
        _add(store, "study", "tinycnn", "stego", repeat, 1.27 * BASELINE[repeat], accuracy)
    store.close()
    _, out, _ = report("--db", str(path), "--format", "json", "--metric", "energy_to_target_j", capsys=capsys)
    (found,) = json.loads(out)
    assert (found["n"], found["n_baseline"], found["verdict"]) == (2, 2, "insufficient")
    reason = "1 of 3 stego runs and 1 of 3 baseline runs never reached the target (88.0 %)"
    assert reason in found["sentence"] and "fewer than 2" not in found["sentence"]
    assert any("never reached the target" in note for note in found["notes"])
    for fmt in ("text", "markdown"):
        _, out, _ = report("--db", str(path), "--format", fmt, capsys=capsys)
        assert reason in out and "fewer than 2 runs a side have a value" not in out
    _, out, _ = report("--db", str(path), "--metric", "energy_to_target_j", capsys=capsys)
    assert (
        "insufficient (fewer than 2 usable runs a side, or no baseline, or a run that never reached the target)" in out
    )


def test_pareto_front():
    from greenlab.core.report.plot import pareto_front

    points = [(100.0, 90.0), (70.0, 90.0), (120.0, 85.0), (60.0, 80.0), (130.0, 95.0)]
    assert pareto_front(points) == [3, 1, 4]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--experiment", "nope"], "no runs of experiment 'nope'"),
        (["--metric", "energy"], "unknown --metric 'energy'"),
        (["--format", "pdf"], "unknown --format 'pdf'"),
        (["--margin", "-0.1"], "--margin is a fraction"),
        (["--margin", "5"], "--margin 0.05"),
        (["--margin", "abc"], "--margin must be a number"),
        (["--out", "{tmp}/missing/report.txt"], "does not exist"),
        (["--out", "{tmp}"], "is a folder"),
        (["--plot", "{tmp}/figure.pdf"], ".svg or .png"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(study, capsys, tmp_path, args, words):
    before = sorted(p.name for p in tmp_path.iterdir())
    stat = study.stat()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = (
        report("--db", str(study), "--out", str(tmp_path / "r.txt"), *args, capsys=capsys)
        if "--out" not in args
        else report("--db", str(study), *args, capsys=capsys)
    )
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and words in err and err.startswith("greenlab: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (study.stat().st_size, study.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)


def test_missing_store_exits_2_and_creates_nothing(tmp_path, capsys):
    code, _, err = report("--db", str(tmp_path / "none.db"), capsys=capsys)
    assert code == 2 and "no run store" in err and not (tmp_path / "none.db").exists()


def test_report_is_a_subcommand_and_the_flags_still_work(study):
    result = run_cli("report", "--db", str(study), "--experiment", "single", "--format", "json", timeout=120)
    assert result.returncode == 0 and json.loads(result.stdout)
    assert run_cli("--headless", str(study.parent / "absent.toml"), timeout=120).returncode == 2


def test_readme_documents_every_json_key_and_the_new_columns(study, capsys):
    VERDICT_COLUMNS = ("target_accuracy", "energy_to_target_j")
    from tests.conftest import REPO

    docs = (REPO / "docs" / "statistics.md").read_text()
    _, out, _ = report("--db", str(study), "--experiment", "study", "--format", "json", capsys=capsys)
    keys = {key for o in json.loads(out) for key in o}
    missing = [k for k in sorted(keys | set(VERDICT_COLUMNS)) if f"`{k}`" not in docs]
    assert not missing, f"docs/statistics.md lacks: {missing}"
    from greenlab.core.report import stats

    for verdict in stats.VERDICTS:  # the decision table states every word
        assert f"`{verdict}`" in docs.split("## The decision table")[1].split("##")[0], verdict
