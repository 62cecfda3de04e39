"""The Python API as a notebook user gets it wrong: each mistake is answered by an error that names the
bad argument, key, path or generation and what was expected, before any run starts; and a generation's
model comes back from its checkpoint (``Result.model``)."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
import torch

import ctsim
from ctsim.registry import load_many, query
from ctsim.validation import ConfigError

TINY = ["dataset.size=0.05", "train.epochs=1", "progress=false", "output.plots=false"]
TWO = """# @package _global_
defaults:
  - override /dataset: sea
name: two
population:
  seeds: [0, 1]
  variants:
    often: [trigger=time, trigger.every=5]
    once: [trigger=never]
"""


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> ctsim.Result:
    """Two pipelines × two seeds on SEA, each pipeline's last checkpoint kept."""
    root = tmp_path_factory.mktemp("two")
    (root / "conf" / "experiment").mkdir(parents=True)
    (root / "conf" / "experiment" / "two.yaml").write_text(TWO)
    overrides = ["experiment=two", "output.checkpoints=last", *TINY]
    return ctsim.run(overrides, config_dir=root / "conf", out_dir=root / "runs" / "two")


@pytest.mark.parametrize("overrides", ["dataset=sea", {"dataset": "sea"}])
def test_overrides_not_in_a_list_are_refused_as_such(tmp_path, monkeypatch, overrides):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"overrides: .* is not a list; expected a list of the command"):
        ctsim.run(overrides)
    assert list(tmp_path.iterdir()) == []


def test_command_line_flags_name_the_argument_to_use_instead(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        ctsim.run(["--config-dir", "my_conf", "-m", "dataset=sea", 3])
    lines = str(info.value).splitlines()[1:]
    assert lines[0] == "  --config-dir: a command-line flag, not an override; use config_dir=..."
    assert lines[1] == "  -m: a command-line flag, not an override; use one ctsim.run call per job (a loop)"
    assert lines[2] == "  overrides=3: expected strings in the command line's syntax (key=value)"
    assert len(lines) == 3  # "my_conf" is not reported: the flags are refused before Hydra reads anything
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_says_to_call_run_once_per_value(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"ctsim\.run runs one job, so call it once per value") as info:
        ctsim.run(["dataset=sea", "trigger=time,amount", *TINY])
    assert "-m" not in str(info.value)  # the command line's advice, which ctsim.run cannot take


def test_a_config_dir_that_is_no_folder_is_refused_before_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf.yaml").write_text("name: x\n")
    with pytest.raises(
        ConfigError, match=r"config_dir='my_conf': expected a folder of config files \(no such"
    ):
        ctsim.run(["dataset=sea", *TINY], config_dir="my_conf")
    with pytest.raises(ConfigError, match=r"config_dir='conf.yaml': expected a folder .* \(a file\)"):
        ctsim.run(["dataset=sea", *TINY], config_dir="conf.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf.yaml"]  # no run was made


def test_load_says_why_a_path_is_no_run_folder(two, tmp_path):
    runs = two.run_dir.parent
    with pytest.raises(FileNotFoundError, match=r"not a ctsim run directory: no such file or folder"):
        ctsim.load(runs / "tow")
    with pytest.raises(FileNotFoundError, match=r"not a ctsim run directory: it is a file"):
        ctsim.load(two.run_dir / "cost.parquet")
    with pytest.raises(FileNotFoundError, match=r"it holds 1 run\(s\) below it \(.*two\): load one of them"):
        ctsim.load(runs)
    with pytest.raises(TypeError, match=r"run_dir: expected a run folder .*, got NoneType"):
        ctsim.load(None)
    assert ctsim.load(two).cost.equals(two.cost)  # a Result is taken for its folder


def test_a_result_still_reads_after_the_notebook_changes_folder(two, monkeypatch):
    monkeypatch.chdir(two.run_dir.parent)
    result = ctsim.load("two")  # a relative path, as a notebook gives it
    monkeypatch.chdir(Path(os.sep))
    assert result.run_dir == Path("two")
    assert result.cost.equals(two.cost) and result.status["status"] == "finished"


def test_query_names_what_it_expects_for_tables_and_load_many_a_missing_root(two, tmp_path):
    sql = "SELECT pipeline, seed, triggers FROM cost ORDER BY pipeline, seed"
    with pytest.raises(TypeError, match=r"tables: expected the tables to query, by name .* got str"):
        query(sql, str(two.run_dir))
    with pytest.raises(TypeError, match="got Result"):
        query(sql, two)
    with pytest.raises(FileNotFoundError, match=r"under .*nowhere \(no such file or folder\)"):
        load_many(tmp_path / "nowhere")
    found = query(sql, load_many(two.run_dir.parent))
    assert found.rows() == [("often", 0, 8), ("often", 1, 8), ("once", 0, 1), ("once", 1, 1)]


def test_the_model_of_a_generation_holds_its_checkpoint(two):
    model = two.model("often", 1)  # its last generation, the one output.checkpoints=last kept
    saved = torch.load(two.run_dir / "checkpoints/often/seed1/gen0007.pt", weights_only=True)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert model.state_dict().keys() == saved.keys()
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)
    assert model(torch.randn(5, 3)).shape == (5, 2)  # SEA: 3 features, 2 classes
    assert not torch.equal(two.model("often", 0).state_dict()["head.weight"], saved["head.weight"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), r"pipeline: the run has several, name one of \['often', 'once'\]"),
        (("oftn",), r"pipeline='oftn': the run has no such pipeline; expected one of \['often', 'once'\]"),
        (("often",), r"seed: pipeline 'often' has several, name one of \[0, 1\]"),
        (("often", 2), r"seed=2: pipeline 'often' has no such seed; expected one of \[0, 1\]"),
        (("often", 0, 8), r"generation=8: often seed 0 has no such generation; it has 0-7"),
        (
            ("often", 0, 3),
            r"often seed 0 generation 3: its checkpoint was not kept \(output.checkpoints=last\)",
        ),
    ],
)
def test_a_generation_the_run_lacks_is_named_with_what_it_has(two, args, message):
    with pytest.raises(LookupError, match=message):
        two.model(*args)


def test_the_documented_tables_are_polars_frames_with_the_documented_units(two):
    gens = two.generations
    assert isinstance(gens, pl.DataFrame)
    assert gens.filter(pl.col("checkpoint").is_not_null()).height == 4  # each pipeline's last, per seed
    assert (two.cost["total_s"] >= two.cost["train_s"]).all()  # seconds, summed over phases
