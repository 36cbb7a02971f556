"""The TUI's plain parts, without an app: the form's data, themes, its message, table sorting and filtering."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenlab.core.errors import ConfigError
from greenlab.core.plan.config import parse_experiments
from greenlab.core.store.rows import RunRow
from greenlab.tui import form, messages
from greenlab.tui.runs import COLUMN_KEYS, COLUMNS, filter_rows, sort_rows, table_rows
from greenlab.tui.themes import load_theme, load_themes, theme_dirs

ROOT = Path(__file__).resolve().parents[1]


def _values(**settings: str) -> form.FormValues:
    base = {
        "dataset": "digits",
        "epochs": "1",
        "batch_size": "32",
        "lr": "0.01",
        "optimizer": "sgd",
        "device": "cpu",
        "repeats": "1",
        "seed": "0",
        "max_train_batches": "",
        "idle_s": "0",
        "pretrained": False,
    }
    return form.FormValues(
        models=["tinycnn"],
        settings={**base, **settings},
        techniques=["baseline"],
        technique_settings={"prune": {"amount": "0.5", "method": "l1-unstructured"}},
    )


# -- the form -----------------------------------------------------------------------------------------
def test_coerce_reads_text_as_toml_would():
    assert form.coerce("3") == 3 and isinstance(form.coerce("3"), int)
    assert form.coerce("0.5") == 0.5
    assert form.coerce("auto") == "auto"
    assert form.coerce("true") is True
    assert form.coerce("  ") is None


def test_form_builds_the_experiments_structure():
    values = _values(max_train_batches="4")
    values.techniques = ["baseline", "prune"]
    data = form.experiments_data(values)
    assert data["defaults"]["epochs"] == 1 and data["defaults"]["max_train_batches"] == 4
    assert data["defaults"]["pretrained"] is False
    experiment = data["experiment"][0]
    assert experiment["models"] == ["tinycnn"] and experiment["techniques"] == ["baseline", "prune"]
    assert experiment["prune"] == {"amount": 0.5, "method": "l1-unstructured"}
    runs = form.validate(values)
    assert [(r.model, r.technique) for r in runs] == [("tinycnn", "baseline"), ("tinycnn", "prune")]


def test_unticked_technique_settings_do_not_block_a_run():
    values = _values()
    values.technique_settings["prune"]["amount"] = "7"
    assert len(form.validate(values)) == 1  # prune is not ticked


@pytest.mark.parametrize(
    "field, typed, toml",
    [
        ("epochs", "0", "epochs = 0"),
        ("lr", "fast", 'lr = "fast"'),
        ("dataset", "digit", 'dataset = "digit"'),
        ("optimizer", "adamm", 'optimizer = "adamm"'),
    ],
)
def test_form_errors_carry_the_loader_message(field, typed, toml):
    with pytest.raises(ConfigError) as from_form:
        form.validate(_values(**{field: typed}))
    text = f'[defaults]\n{toml}\n[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\n'
    with pytest.raises(ConfigError) as from_file:
        parse_experiments(text, "experiments.toml")
    assert from_form.value.detail == from_file.value.detail
    assert form.field_of(from_form.value) == field


def test_technique_error_names_its_field():
    values = _values()
    values.techniques = ["prune"]
    values.technique_settings["prune"]["amount"] = "2"
    with pytest.raises(ConfigError) as caught:
        form.validate(values)
    assert form.field_of(caught.value) == "prune.amount"
    assert "amount must be a fraction" in str(caught.value)


def test_initial_values_come_from_the_offered_file(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text(
        '[defaults]\nepochs = 3\nmax_eval_batches = 2\n[[experiment]]\nname = "a"\n'
        'models = ["resnet18"]\ntechniques = ["baseline", "prune"]\n[experiment.prune]\namount = 0.3\n'
    )
    values = form.initial_values(str(path))
    assert values.models == ["resnet18"] and values.settings["epochs"] == "3"
    assert values.techniques == ["baseline", "prune"]
    assert values.technique_settings["prune"]["amount"] == "0.3"
    assert values.hidden_settings == {"max_eval_batches": 2}
    assert form.validate(values)[0].settings.max_eval_batches == 2


def test_initial_values_without_a_file_are_offline_defaults():
    values = form.initial_values(None)
    assert values.models == ["tinycnn"] and values.settings["pretrained"] is False


# -- themes -------------------------------------------------------------------------------------------
def test_repository_themes_load():
    themes, problems = load_themes([ROOT / "themes"])
    names = {t.name for t in themes}
    assert {"greenlab-dark", "greenlab-light"} <= names and not problems
    light = next(t for t in themes if t.name == "greenlab-light")
    assert light.dark is False and light.primary.startswith("#")
    assert (ROOT / "themes").resolve() in theme_dirs()


def test_bad_theme_file_is_refused_with_its_key(tmp_path):
    (tmp_path / "bad.toml").write_text('name = "bad"\nprimary = "greenish"\n')
    with pytest.raises(ConfigError) as caught:
        load_theme(tmp_path / "bad.toml")
    assert caught.value.key == "primary" and "not a colour" in str(caught.value)
    themes, problems = load_themes([tmp_path])
    assert themes == [] and len(problems) == 1


def test_stylesheet_names_no_colours():
    css = (ROOT / "greenlab" / "tui" / "greenlab.tcss").read_text()
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    values = [line.split(":", 1)[1] for line in css.splitlines() if ":" in line and line.strip().endswith(";")]
    for value in values:
        assert not re.search(r"#[0-9a-fA-F]{3,8}\b|rgb\(|hsl\(", value), value


def test_unknown_theme_is_a_config_error():
    from greenlab.tui.app import run_app

    with pytest.raises(ConfigError, match="unknown theme 'greenlab-drak'; did you mean 'greenlab-dark'"):
        run_app(db=None, theme="greenlab-drak")


# -- messages -----------------------------------------------------------------------------------------
def test_a_newer_snapshot_replaces_a_queued_one():
    from greenlab.core.grid.presenter import GridSnapshot

    older, newer = messages.GridChanged(GridSnapshot(version=1)), messages.GridChanged(GridSnapshot(version=2))
    assert newer.can_replace(older) and newer.snapshot.version == 2


# -- runs table ---------------------------------------------------------------------------------------
def _run(run_id, technique, status, energy, seconds, accuracy):
    return RunRow.of(
        id=run_id,
        experiment="e",
        model="m",
        dataset="d",
        technique=technique,
        status=status,
        energy_j=energy,
        duration_s=seconds,
        val_accuracy=accuracy,
    )


ROWS = [
    _run(1, "baseline", "completed", 100.0, 10.0, 0.9),
    _run(2, "stego", "completed", 60.0, 8.0, 0.88),
    _run(3, "prune", "failed", None, 1.0, None),
]


def test_changes_against_the_matching_baseline():
    rows = table_rows(ROWS, {})
    assert rows[0].change["energy_j"] is None
    assert rows[1].change["energy_j"] == pytest.approx(-40.0)


def test_a_run_that_did_not_complete_shows_no_change():
    """An interrupted run measured part of the work: "-40 %" against the baseline would read as a saving."""
    stopped = [ROWS[1].replaced(id=4, status=status) for status in ("interrupted", "failed", "running")]
    rows = table_rows([*ROWS[:2], *stopped], {})
    assert rows[1].change["energy_j"] == pytest.approx(-40.0)
    for row in rows[2:]:
        assert row.change["energy_j"] is None and row.change["duration_s"] is None, row.run.status


def test_sort_keeps_missing_values_last_both_ways():
    rows = table_rows(ROWS, {})
    assert [r.run.id for r in sort_rows(rows, "energy")] == [2, 1, 3]
    assert [r.run.id for r in sort_rows(rows, "energy", reverse=True)] == [1, 2, 3]
    assert [r.run.id for r in sort_rows(rows, "technique")] == [1, 3, 2]


_RANDOM_ROW = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["tinycnn", "resnet18"]),
        "technique": st.sampled_from(["baseline", "prune", "stego"]),
        "status": st.sampled_from(["completed", "failed", "running"]),
        "energy_j": st.one_of(st.none(), st.integers(0, 5).map(float)),  # few values: ties, broken by id
        "duration_s": st.one_of(st.none(), st.floats(0, 100)),
    }
)


@given(
    st.lists(_RANDOM_ROW, max_size=30),
    st.sampled_from(COLUMN_KEYS),
    st.booleans(),
    st.sampled_from([None, "tinycnn"]),
    st.sampled_from(["", "prune", "resnet18 stego"]),
)
@settings(max_examples=150, deadline=None)
def test_a_filter_keeps_the_order_and_the_reversed_order_is_the_descending_one(rows, column, reverse, model, query):
    """The pane sorts a study's rows once per column and filters the sorted list on every key: that is the
    same as filtering then sorting, and reversing the ascending order is sorting descending (missing last)."""
    rows = table_rows([RunRow.of(id=i + 1, **row) for i, row in enumerate(rows)], {})
    filters = {"model": model, "status": None}
    assert filter_rows(sort_rows(rows, column, reverse), filters, query) == sort_rows(
        filter_rows(rows, filters, query), column, reverse
    )
    getter = next(c.value for c in COLUMNS if c.key == column)
    present = [r for r in rows if getter(r) is not None]
    descending = sorted(present, key=lambda r: (getter(r), r.run.id), reverse=True)
    assert sort_rows(rows, column, reverse=True) == descending + [r for r in rows if getter(r) is None]


def test_filter_rows():
    assert [r.run.id for r in filter_rows(table_rows(ROWS, {}), {"status": "completed", "model": None})] == [1, 2]


def test_the_run_detail_shows_the_arithmetic_and_the_wait_for_data_when_recorded():
    from greenlab.tui.detail import DetailScreen

    row = RunRow.of(
        id=1,
        model="resnet18",
        technique="baseline",
        status="completed",
        compute_dtype="tf32",
        fp32_precision="tf32",
        bf16_native=0,
        weights_dtype="float32",
        data_wait_s=3.2,
    )
    summary = DetailScreen(1, {"run": lambda i: row, "components": lambda i: []})._summary()
    assert "arithmetic tf32 (float32 precision tf32, bfloat16 emulated here)  weights float32" in summary
    assert "waited for data 3.2 s" in summary
    older = row.replaced(fp32_precision=None, bf16_native=None, data_wait_s=None)
    assert "arithmetic" not in DetailScreen(1, {"run": lambda i: older, "components": lambda i: []})._summary()
