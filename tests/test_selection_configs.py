"""The selection YAMLs share one block (conf/selection/_base.yaml: ``limit``, ``fraction``, ``downsample``);
every option composes to the values it had when each file repeated that block."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ctsim.app.cli import CONF_DIR
from ctsim.app.help import options

from .conftest import cli

# conf/selection/<option>.yaml composed, as it was before the shared block (measured at commit 1d199ec)
BEFORE = {
    "all": {"_target_": "ctsim.selection.AllData", "fraction": None, "limit": None},
    "class_balanced": {
        "_target_": "ctsim.selection.ClassBalanced",
        "fraction": None,
        "limit": None,
        "of": "seen",
    },
    "freshness": {"_target_": "ctsim.selection.Freshness", "fraction": None, "limit": None, "mix": None},
    "new": {"_target_": "ctsim.selection.NewData", "fraction": None, "limit": None, "tail": 0},
    "reservoir": {"_target_": "ctsim.selection.Reservoir", "fraction": None, "limit": None, "size": 1000},
    "trigger_balanced": {"_target_": "ctsim.selection.TriggerBalanced", "fraction": None, "limit": None},
    "uniform": {"_target_": "ctsim.selection.Uniform", "fraction": None, "limit": None, "of": "seen"},
    "window": {
        "_target_": "ctsim.selection.Window",
        "fraction": None,
        "limit": None,
        "size": 5,
        "unit": "slices",
    },
}
LOSS = {
    "_target_": "ctsim.selection.ScoreDownsampler",
    "score": "loss",
    "form": "stb",
    "fraction": 0.5,
    "draw": "top",
    "weights": False,
}
RS2 = {"_target_": "ctsim.selection.RS2", "fraction": 0.5, "replacement": False}


def _selection(*overrides: str) -> tuple[dict, str | None]:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="test"):
        cfg = compose("config", overrides=["population.variants={}", *overrides], return_hydra_config=True)
    choice = cfg.hydra.runtime.choices["selection/downsample"]
    return OmegaConf.to_container(cfg.selection, resolve=True), choice


def test_every_option_is_listed_here():
    found = {p.stem for p in (CONF_DIR / "selection").glob("*.yaml") if not p.stem.startswith("_")}
    assert found == set(BEFORE)


@pytest.mark.parametrize("option", sorted(BEFORE))
def test_every_selection_option_composes_as_before(option):
    assert _selection(f"selection={option}") == (BEFORE[option], None)
    loss = _selection(f"selection={option}", "selection/downsample=loss")
    assert loss == ({**BEFORE[option], "downsample": LOSS}, "loss")
    budget = _selection(f"selection={option}", "selection/downsample=rs2", "selection.limit=5")
    assert budget == ({**BEFORE[option], "downsample": RS2, "limit": 5}, "rs2")


def test_each_option_file_holds_only_what_is_its_own():
    for path in (CONF_DIR / "selection").glob("*.yaml"):
        if path.stem == "_base":
            continue
        own = OmegaConf.load(path)
        assert list(own.defaults) == ["_base", "_self_"], path.name
        assert "limit" not in own and "fraction" not in own, path.name


def test_the_shared_block_is_no_option_of_help(tmp_path):
    assert "_base" not in options()["selection"]
    done = cli(["--help"], tmp_path, timeout=300)
    assert done.returncode == 0 and " new " in done.stdout and "_base" not in done.stdout


def test_the_shared_block_picked_as_an_option_is_refused(tmp_path):
    done = cli(["population.variants={}", "selection=_base"], tmp_path, timeout=300)
    assert done.returncode == 2
    assert "selection._target_=null: expected the class of the selection policy" in done.stderr
    assert not (tmp_path / "results").exists()
