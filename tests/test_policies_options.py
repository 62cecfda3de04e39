"""Trigger and selection options as docs/triggers.md and docs/selection.md document them, tried the way a
user tries them: a tiny run from overrides, read back from the run folder's tables."""

from __future__ import annotations

import pytest
import yaml

from ctsim.app.cli import CONF_DIR
from ctsim.selection import NewData, ScoreDownsampler
from ctsim.selection.base import context_from_intervals
from ctsim.triggers.rules import PValue
from ctsim.validation import ConfigError

from .conftest import build, run, small

# SEA, 6 slices of 50 samples (45 train), an MLP, one epoch: a run takes about a second
TINY_SEA = [
    "population.variants={}",  # one pipeline, as a command line that picks a group runs
    "dataset=sea",
    "model=mlp",
    "dataset.slices=6",
    "dataset.size=0.1",
    "dataset.change_points=[3]",
    "train.epochs=1",
    "output.checkpoints=none",
]


@pytest.mark.parametrize("tail", [1, 3, 10])
def test_new_with_a_tail_trains_on_the_last_tail_intervals_however_many_came_before(tmp_path, tail):
    """``selection=new selection.tail=3`` with a trigger every slice: generation g trains on slices
    max(0, g - 3) … g. A tail longer than the intervals so far took only the newest of them (generation 2
    trained on slices 1-2, generation 3 on 0-3)."""
    gens = run(small(tmp_path, *TINY_SEA, "selection=new", f"selection.tail={tail}"), tmp_path / "run")
    gens = gens.tables["generations"].sort("generation")
    first = gens["first_slice"].to_list()
    assert first == [max(0, g - tail) for g in range(6)], first
    assert gens["last_slice"].to_list() == list(range(6))
    per_slice = gens["n_selected"][0]  # the first generation trains on slice 0 alone
    assert gens["n_selected"].to_list() == [per_slice * (g - f + 1) for g, f in enumerate(first)]


def test_new_with_a_tail_one_longer_than_the_earlier_intervals_keeps_them_all():
    ctx = context_from_intervals([[0], [1, 2], [3], [4, 5]])  # 3 earlier intervals, then the current one
    assert NewData(tail=4).select(ctx).keys.tolist() == [0, 1, 2, 3, 4, 5]
    assert NewData(tail=5).select(ctx).keys.tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("detector", ["ks", "cvm"])
def test_the_per_feature_detectors_take_their_correction_from_the_command_line(tmp_path, detector):
    """docs/triggers.md: ks and cvm combine per-feature p-values with ``correction: bonferroni`` or
    ``fdr_bh``. cvm's YAML lacked the key, so ``trigger.detector.correction=fdr_bh`` was an unknown key."""
    over = ["trigger=drift", f"trigger/detector={detector}", "trigger.detector.correction=fdr_bh"]
    plan = build(small(tmp_path, *TINY_SEA, *over))
    assert plan.pipelines[0].trigger.detector.correction == "fdr_bh"
    with pytest.raises(ConfigError, match=r"trigger\.detector\.correction='holm': expected one of"):
        build(small(tmp_path, *TINY_SEA, *over[:2], "trigger.detector.correction=holm"))


def test_the_pvalue_rule_defaults_to_the_documented_alpha():
    """docs/triggers.md: ``pvalue`` (default: fire when p < alpha, 0.01), as its YAML says; the class
    gave 0.05 to a rule built in Python."""
    config = yaml.safe_load((CONF_DIR / "trigger" / "rule" / "pvalue.yaml").read_text())
    assert PValue().alpha == config["alpha"] == 0.01
    assert PValue().decide(type("R", (), {"p_value": 0.02, "distance": 0.0})()) is False


def test_a_weights_that_is_no_boolean_is_named_once(tmp_path):
    over = ["selection/downsample=entropy", "selection.downsample.weights=yes"]
    with pytest.raises(ConfigError) as e:
        build(small(tmp_path, *TINY_SEA, *over))
    named = [p for p in e.value.problems if p.key.endswith("weights")]
    assert [str(p) for p in named] == ["selection.downsample.weights='yes': expected true or false"]
    with pytest.raises(ConfigError, match="weights=true: expected false unless draw=proportional"):
        ScoreDownsampler("entropy", weights=True)
