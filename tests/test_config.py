"""experiments.toml: good files expand into the right grid; bad ones give one located message, exit 2."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenlab.core.errors import ConfigError
from greenlab.core.plan.config import expand_grid, load_experiments, parse_experiments
from greenlab.core.plan.settings import SPECS
from tests.conftest import run_cli

GOOD = """
[defaults]
epochs = 3
lr = 0.05
repeats = 2
pretrained = false

[[experiment]]
name = "demo"
models = ["tinycnn", "resnet18"]
techniques = ["baseline", "prune", "prune+stego"]
[experiment.prune]
amount = 0.3

[[experiment]]
name = "second"
models = ["alexnet"]
epochs = 1
"""


def test_good_file_expands_models_x_techniques_x_repeats():
    experiments = parse_experiments(GOOD, "good.toml")
    assert [e.name for e in experiments] == ["demo", "second"]
    demo = experiments[0]
    assert demo.settings.epochs == 3 and demo.settings.lr == 0.05 and demo.settings.repeats == 2
    assert demo.technique_settings["prune"]["amount"] == 0.3
    assert experiments[1].settings.epochs == 1  # per-experiment override
    assert experiments[1].techniques == ("baseline",)
    grid = expand_grid(experiments)
    assert len(grid) == 2 * 3 * 2 + 1 * 1 * 2  # "second" inherits repeats = 2
    # repeats interleave techniques: repeat 0 of each technique before repeat 1 of any
    first_model = [r for r in grid if r.model == "tinycnn"]
    assert [r.repeat for r in first_model] == [0, 0, 0, 1, 1, 1]
    combined = next(r for r in grid if r.technique == "prune+stego")
    assert combined.parts == ["prune", "stego"]
    assert set(combined.technique_settings) == {"prune", "stego"}


def test_settings_key_is_stable_and_sensitive():
    grid = expand_grid(parse_experiments(GOOD))
    again = expand_grid(parse_experiments(GOOD))
    assert [r.settings_key() for r in grid] == [r.settings_key() for r in again]
    changed = expand_grid(parse_experiments(GOOD.replace("lr = 0.05", "lr = 0.02")))
    assert grid[0].settings_key() != changed[0].settings_key()
    assert len({r.settings_key() for r in grid}) == len(grid)


def test_repository_files_are_valid():
    from tests.conftest import REPO

    assert len(expand_grid(load_experiments(REPO / "experiments.toml"))) == 2 * 4 * 3  # 3 repeats: verdicts
    paper = expand_grid(load_experiments(REPO / "examples" / "paper.toml"))
    assert len(paper) == 9 * 4 * 3
    assert {r.model for r in paper} >= {"densenet121", "vgg16", "vit_b_16", "inception_v3"}


BAD_CASES = [
    # (file text, fragments the message must contain)
    (
        '[[experiment]]\nname = "demo"\nmodels = ["resnet-18"]\n',
        ["bad.toml:3", "experiment 'demo'.models", "unknown model 'resnet-18'", "did you mean 'resnet18'"],
    ),
    (
        '[defaults]\nepochs = -1\n[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\n',
        ["bad.toml:2", "defaults.epochs", "at least 1", "write e.g. epochs = 2 (the default)"],
    ),
    (
        '[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\nepoch = 2\n',
        ["bad.toml:4", "experiment 'x'.epoch", "unknown key 'epoch'", "did you mean 'epochs'"],
    ),
    (
        '[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\n[experiment.prun]\namount = 0.5\n',
        [
            "bad.toml:4",
            "experiment 'x'.prun",
            "unknown technique table 'prun'",
            "did you mean 'prune'",
            "(technique tables: stego, prune, lowrank)",
        ],
    ),
    ("[defaults]\nepochs = 2\nlr = \n", ["bad.toml:3", "not valid TOML"]),
    (
        '[defaults]\nepochs = "two"\n[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\n',
        ["defaults.epochs", "must be a whole number", 'got "two"', "write e.g. epochs = 2"],
    ),
    (
        '[defaults]\nepochs = 2.5\n[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\n',
        ["bad.toml:2: defaults.epochs: must be a whole number, got 2.5; write e.g. epochs = 2 (the default)"],
    ),
    (
        '[defaults]\nepochs = true\n[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\n',
        ["bad.toml:2: defaults.epochs: must be a whole number, got true; write e.g. epochs = 2 (the default)"],
    ),
    (
        '[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\nlr = -1\n',
        ["bad.toml:4: experiment 'x'.lr: must be greater than 0, got -1; write e.g. lr = 0.01 (the default)"],
    ),
    (
        '[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\nimage_size = 4\n',
        ["must be at least 8, got 4; write e.g. image_size = 32, or remove it for the default (natural)"],
    ),
    ("[defaults]\nepochs = 1\n", ["no experiments", "[[experiment]]"]),
    (
        '[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\ntechniques = ["baseline", "prunning"]\n',
        ["experiment 'x'.techniques", "unknown technique 'prunning'", "did you mean 'prune'"],
    ),
    (
        '[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\noptimizer = "adamm"\n',
        ["experiment 'x'.optimizer", "unknown optimizer 'adamm'", "did you mean 'adam'"],
    ),
    (
        '[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\ndataset = "mnist"\n',
        ["experiment 'x'.dataset", "unknown dataset 'mnist'"],
    ),
    ('[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\ndevice = "gpu"\n', ["experiment 'x'.device", "cuda:N"]),
    (
        '[[experiment]]\nname = "x"\nmodels = []\n',
        ["bad.toml:3", "experiment 'x'.models", "non-empty list", 'got []; write e.g. models = ["tinycnn"]'],
    ),
    (
        '[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\n[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\n',
        ["bad.toml:5", "duplicate experiment name 'x'", 'rename one, e.g. name = "x-2"'],
    ),
    ('[experiments]\nname = "x"\n', ["unknown top-level table 'experiments'", "did you mean 'experiment'"]),
    ('[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\nrepeats = 0\n', ["experiment 'x'.repeats"]),
    ('[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\npue = 0.5\n', ["experiment 'x'.pue", "below 1"]),
    ("experiment = [1]\n", ["experiment[0]", "must be a table", "[[experiment]]"]),
    (
        '[defaults]\nlr = nan\n[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\n',
        ["bad.toml:2", "defaults.lr", "finite"],
    ),
    ('[defaults]\nidle_s = inf\n[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\n', ["defaults.idle_s", "finite"]),
    ('[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\nseed = 9999999999999\n', ["experiment 'x'.seed", "32-bit"]),
    (
        '[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\ntechniques = ["baseline"]\n[experiment.prune]\namount = 1.5\n',
        ["bad.toml:6", "experiment 'x'.prune.amount"],
    ),
    (
        '[defaults.prune]\namount = 1.5\n[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\ntechniques = ["prune"]\n',
        ["bad.toml:2", "defaults.prune.amount"],
    ),
    ('[defaults]\nprune = 3\n[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\n', ["[defaults.prune]"]),
    (
        '[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\ntechniques = ["prune+stego", "prune + stego"]\n',
        ["experiment 'x'.techniques", "twice", "remove the repeat"],
    ),
]


@pytest.mark.parametrize("text,fragments", BAD_CASES)
def test_bad_files_name_file_line_key_and_fix(text, fragments):
    with pytest.raises(ConfigError) as caught:
        parse_experiments(text, "bad.toml")
    message = str(caught.value)
    assert message.startswith("bad.toml")
    for fragment in fragments:
        assert fragment in message, message


def test_technique_spelling_is_normalised():
    text = '[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\ntechniques = [" prune + stego "]\n'
    (run,) = expand_grid(parse_experiments(text))
    assert run.technique == "prune+stego" and run.parts == ["prune", "stego"]


EXPERIMENT = '[[experiment]]\nname = "{name}"\nmodels = ["tinycnn"]\ntechniques = ["prune"]\n'
LOCATED_CASES = [
    # (file text, the line the message must name): every key at its own line, however it is written
    (EXPERIMENT.format(name="a") + "[experiment.prun]\namount = 0.5\n", 5),  # a misspelt technique table
    ("[defaults]\nepochs = 1\n[defaults.prun]\namount = 0.5\n" + EXPERIMENT.format(name="a"), 3),
    ("[defaults.prun]\namount = 0.5\n" + EXPERIMENT.format(name="a"), 1),  # no [defaults] header at all
    (
        EXPERIMENT.format(name="a")
        + "[experiment.prune]\namount = 0.5\n"
        + EXPERIMENT.format(name="b")
        + '[experiment.prune]\namount = 0.5\nmethod = "nope"\n',
        13,
    ),
    (EXPERIMENT.format(name="a") + "lr = 0.1\n" + EXPERIMENT.format(name="b") + "lr = -1\n", 10),
    (EXPERIMENT.format(name="a") + "prune.amount = 1.5\n", 5),  # a dotted key
    (EXPERIMENT.format(name="a") + "lowrank = {rank_ratio = 0.5}\nprune = {amount = 1.5}\n", 6),  # inline
    (EXPERIMENT.format(name="a.b") + '[experiment.prune]\namount = 0.5\nmethod = "nope"\n', 7),  # a dotted name
    ('[ experiment ]\nname = "x"\n', 1),
]


@pytest.mark.parametrize("text,line", LOCATED_CASES)
def test_nested_tables_and_keys_are_located_at_their_own_line(text, line):
    with pytest.raises(ConfigError) as caught:
        parse_experiments(text, "a.toml")
    assert str(caught.value).startswith(f"a.toml:{line}: "), (str(caught.value), text)


@pytest.mark.parametrize("name", list(SPECS))
def test_every_setting_of_the_wrong_type_names_its_fix(name):
    """The fix comes from the declaration (greenlab.core.plan.settings), so no setting can lack one."""
    wrong = "[1]"  # a list: no setting takes one
    text = f'[[experiment]]\nname = "x"\nmodels = ["tinycnn"]\n{name} = {wrong}\n'
    with pytest.raises(ConfigError) as caught:
        parse_experiments(text, "bad.toml")
    message = str(caught.value)
    assert message.startswith(f"bad.toml:4: experiment 'x'.{name}: must be ") and ", got [1]; " in message
    assert f"write e.g. {name} = " in message or "remove it for the default" in message, message
    written = message.split(f"write e.g. {name} = ")[-1].split(" (the default)")[0].split(", or remove")[0]
    parse_experiments(text.replace(f"{name} = {wrong}", f"{name} = {written}"), "good.toml")  # the fix is valid


def test_a_file_that_is_not_utf8_names_the_line_and_the_fix(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[defaults]\nepochs = 2\n# café\n[[experiment]]\nname = "x"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_experiments(path)
    assert str(caught.value) == (f"{path}:3: not UTF-8 text (byte 0xe9 cannot be read); save the file as UTF-8")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_experiments(tmp_path / "nope.toml")


def test_cli_bad_file_exits_2_with_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[experiment]]\nname = "demo"\nmodels = ["resnet-18"]\n')
    db = tmp_path / "out.db"
    result = run_cli("--headless", str(bad), "--db", str(db))
    assert result.returncode == 2
    assert "did you mean 'resnet18'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
    assert not db.exists()


ORDERED = """
[defaults]
pretrained = false
repeats = 4
order = "{order}"
[[experiment]]
name = "e"
models = ["tinycnn"]
techniques = ["baseline", "stego", "prune", "lowrank"]
"""


def _firsts(order):
    grid = expand_grid(parse_experiments(ORDERED.format(order=order)))
    assert [r.position for r in grid] == list(range(len(grid)))
    assert [r.repeat for r in grid] == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4  # repeats still interleave
    return [grid[4 * repeat].technique for repeat in range(4)], grid


def test_rotate_puts_each_technique_first_once():
    firsts, _ = _firsts("rotate")
    assert firsts == ["baseline", "stego", "prune", "lowrank"]


def test_shuffle_is_seeded_and_does_not_always_start_with_the_baseline():
    firsts, grid = _firsts("shuffle")
    assert len(set(firsts)) > 1
    assert [r.technique for r in grid] == [r.technique for r in _firsts("shuffle")[1]]  # reproducible
    assert all(
        sorted(r.technique for r in grid if r.repeat == k) == sorted(["baseline", "stego", "prune", "lowrank"])
        for k in range(4)
    )


def test_as_written_keeps_the_files_order_and_order_is_checked():
    firsts, _ = _firsts("as-written")
    assert firsts == ["baseline"] * 4
    with pytest.raises(ConfigError, match="unknown order 'random'"):
        parse_experiments(ORDERED.format(order="random"))


def test_order_is_not_part_of_a_runs_key():
    shuffled = {(r.technique, r.repeat): r.settings_key() for r in _firsts("shuffle")[1]}
    written = {(r.technique, r.repeat): r.settings_key() for r in _firsts("as-written")[1]}
    assert shuffled == written


def test_the_settings_table_in_the_docs_is_generated_from_the_declarations():
    from greenlab.core.plan.settings import settings_table
    from tests.conftest import REPO

    assert settings_table() in (REPO / "docs" / "configuration.md").read_text()


def test_the_compression_table_in_the_docs_is_generated_from_the_declarations():
    from greenlab.core.train.compression.options import TECHNIQUES, options_table
    from tests.conftest import REPO

    assert all(set(t.meanings) == set(t.defaults) for t in TECHNIQUES)  # every key explained, none invented
    assert options_table() in (REPO / "docs" / "configuration.md").read_text()


def test_the_accounting_prose_names_the_declared_defaults():
    from greenlab.core.plan.settings import RUN_SETTINGS
    from tests.conftest import REPO

    prose = (REPO / "docs" / "configuration.md").read_text().split("## Accounting", 1)[1]
    for name in ("carbon_g_per_kwh", "pue", "price_per_kwh"):
        written = re.search(rf"`{name} = ([0-9.]+)`", prose)
        assert written and float(written[1]) == RUN_SETTINGS.default(name), name
    assert f"`price_per_kwh = {RUN_SETTINGS.default('price_per_kwh'):g}` {RUN_SETTINGS.default('currency')}" in prose


def test_every_setting_is_declared_with_a_type_and_documentation():
    from dataclasses import fields

    from greenlab.core.plan.settings import SPECS, RunSettings

    assert [f.name for f in fields(RunSettings)] == list(SPECS)
    assert all(spec.doc and spec.types for spec in SPECS.values())


# -- a technique's label: its name and the settings that are not the default --------------------------------
_PRUNE_SETTINGS = st.fixed_dictionaries(
    {"amount": st.sampled_from([0.5, 0.3, 0.9, 0.25]), "method": st.sampled_from(["l1-unstructured", "structured"])}
)


@given(_PRUNE_SETTINGS, _PRUNE_SETTINGS)
def test_two_settings_of_a_technique_never_share_a_label(first, second):
    from greenlab.core.train import compression

    same_label = compression.label("prune", {"prune": first}) == compression.label("prune", {"prune": second})
    assert same_label == (first == second)


def test_a_label_is_the_bare_name_at_the_defaults_and_names_each_changed_setting():
    from greenlab.core.train import compression

    defaults = compression.settings_tables()
    assert compression.label("prune+stego", defaults) == "prune+stego"
    assert compression.label("baseline", {}) == "baseline"
    assert compression.label("stego", {"stego": {**defaults["stego"], "bits": 16, "mode": "truncate"}}) == (
        "stego[bits=16,mode=truncate]"
    )
    assert compression.label("prune+stego", {"prune": {"amount": 0.9}, "stego": {"bits": "auto"}}) == (
        "prune[amount=0.9]+stego"
    )
    assert compression.label("prune", "not a table") == "prune"  # a damaged row reads as the defaults
    # every digit counts: settings that differ in the seventh digit are two treatments
    assert compression.label("prune", {"prune": {"amount": 0.1234561}}) != compression.label(
        "prune", {"prune": {"amount": 0.1234564}}
    )


def test_the_bare_name_of_a_label_survives_a_plus_inside_a_setting():
    from greenlab.core.report.compare import _bare
    from greenlab.core.train import compression

    made = compression.label("stego+prune", {"stego": {"tolerance": 1e16}, "prune": {"amount": 0.9}})
    assert made == "stego[tolerance=1e+16]+prune[amount=0.9]" and _bare(made) == "stego+prune"
