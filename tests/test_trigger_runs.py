"""Data- and model-driven triggers in real runs: both engines agree, outputs carry trigger quality,
and bad trigger settings are named before any training."""

from __future__ import annotations

import pytest

from ctsim.validation import ConfigError

from .conftest import REPO, build, cli, run, small

VARIANTS = [
    '+population.variants.mmd=["trigger=drift","trigger.interval=100","trigger/rule=threshold","trigger.rule.value=0"]',
    '+population.variants.ks=["trigger=drift","trigger/detector=ks","trigger/rule=quantile"]',
    '+population.variants.label=["trigger=drift","trigger/detector=label","trigger.unit=slices","trigger.window=3"]',
    '+population.variants.perf=["trigger=performance","trigger.label_delay=1","trigger.min_accuracy=0.8"]',
    '+population.variants.cost=["trigger=cost","trigger.regret=misclassifications","trigger.conversion_factor=1e8"]',
    '+population.variants.both=["trigger=ensemble","trigger.members.performance.min_accuracy=0.85"]',
    "population.only=[mmd,ks,label,perf,cost,both]",
]
SMALL = [
    "dataset.size=0.05",
    "model=mlp",
    "optimizer.lr=0.05",
    "output.checkpoints=none",
    "stream.arrival_batch=50",
]


@pytest.fixture(scope="module")
def both_engines(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift_engines")
    common = small(tmp, *SMALL, *VARIANTS, "population.seeds=[0,1]", "engine.dtype=float64", "train.epochs=1")
    batched = run([*common, "engine=batched"], tmp / "batched")
    sequential = run([*common, "engine=sequential"], tmp / "sequential")
    return batched.tables, sequential.tables


def test_drift_triggered_population_gives_identical_evals_on_both_engines(both_engines):
    batched, sequential = both_engines
    keys = ["pipeline", "seed", "generation", "slice", "metric"]
    a, b = batched["evals"].sort(keys), sequential["evals"].sort(keys)
    assert a.select(keys).equals(b.select(keys))
    assert a["value"].equals(b["value"])
    cols = ["pipeline", "seed", "generation", "trigger_batch", "trigger_reason"]
    gens = batched["generations"].sort(cols[:3]).select(cols)
    assert gens.equals(sequential["generations"].sort(cols[:3]).select(cols))
    # the triggers decided from model signals: more than the initial model, and not on every batch
    reasons = " ".join(gens["trigger_reason"].to_list())
    for word in (
        "drift: mmd",
        "drift: ks",
        "drift: label",
        "performance: accuracy",
        "cost: regret",
        "initial model",
    ):
        assert word in reasons, word


def test_the_quality_table_scores_every_pipeline(both_engines):
    batched, _ = both_engines
    q = batched["quality"]
    assert q.height == 12 and set(q["pipeline"]) == {"mmd", "ks", "label", "perf", "cost", "both"}
    gens = batched["generations"].group_by("pipeline", "seed").len()
    joined = q.join(gens, on=["pipeline", "seed"])
    assert joined["triggers"].equals(joined["len"].alias("triggers"))
    assert joined["change_points"].to_list() == [1] * 12  # portraits: one abrupt change (1970)
    assert ((q["never_incorporated"] >= 0) & (q["never_incorporated"] < 1)).all()


@pytest.mark.parametrize(
    "overrides,match",
    [
        (
            ["trigger=drift", "trigger.rule.alpha=1.5"],
            r"trigger\.rule\.alpha=1\.5: expected a number in \(0, 1\)",
        ),
        (["trigger=drift", "trigger/rule=threshold", "trigger.rule.value=-1"], r"value=-1"),
        (["trigger=drift", "trigger.unit=hours"], r"trigger\.unit='hours': expected one of"),
        (
            ["trigger=drift", "+trigger.detector.permutatons=5"],
            r"trigger\.detector\.permutatons: unknown key",
        ),
        (["trigger=drift", "trigger.encoder._target_=no.such.Module"], r"trigger\.encoder\._target_"),
        (["trigger=ensemble", "~trigger.members"], r"trigger\.members='\{\}': expected at least one member"),
        (
            ["trigger=ensemble", "trigger.mode=at_least", "trigger.at_least=3"],
            r"at_least=3: expected an integer from 1 to the number of members \(2\)",
        ),
        (["trigger=performance", "trigger.min_accuracy=2"], r"min_accuracy=2"),
        (["trigger=cost", "trigger.regret=loss"], r"regret='loss'"),
        (
            ["trigger=drift", "trigger.detector.permutations=50"],
            r"trigger\.detector\.permutations=50: expected more than 99 for rule\.alpha=0\.01",
        ),
    ],
)
def test_bad_trigger_settings_are_named_at_start_up(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        build(small(tmp_path, "population.variants={}", *overrides))


def test_an_unknown_detector_lists_the_detectors(tmp_path):
    done = cli(["population.variants={}", "trigger=drift", "trigger/detector=mmdd"], cwd=tmp_path)
    assert done.returncode == 2
    assert (
        "trigger.detector='mmdd': expected one of the options "
        "['cvm', 'energy', 'ks', 'label', 'mmd', 'wasserstein']" in done.stderr
    )


def test_a_window_larger_than_the_stream_stops_before_training(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in ("run", "empty"):  # a new folder named on the command line, and an empty one
        args = [
            "population.variants={}",
            "trigger=drift",
            "trigger.window=10000000",
            "dataset.size=0.02",
            f"dataset.root={tmp_path / 'data'}",
            f"hydra.run.dir={tmp_path / folder}",
            "progress=false",
        ]
        done = cli(args, cwd=REPO)
        assert done.returncode == 2, done.stderr
        assert "trigger.window=10000000: expected at most the stream's" in done.stderr
        assert "Traceback" not in done.stderr
    # left as they were (Hydra's files once stayed, and the corrected command was refused the folder)
    assert not (tmp_path / "run").exists()
    assert list((tmp_path / "empty").iterdir()) == []


class WrongShape:
    pass


def test_an_encoder_whose_output_does_not_fit_is_named(tmp_path):
    from ctsim.simulation import stream_problems

    plan = build(
        small(
            tmp_path,
            "population.variants={}",
            "trigger=drift",
            "dataset.size=0.02",
            "+trigger.encoder.in_features=5",
            "+trigger.encoder.out_features=3",
            "trigger.encoder._target_=torch.nn.Linear",
        )
    )
    stream = plan.stream.build(plan.dataset.load())
    problems = stream_problems(stream, plan.pipelines)
    assert len(problems) == 1 and problems[0].key.endswith("trigger.encoder")
    assert "a module that takes inputs of shape (n, 1, 32, 32)" in str(problems[0])


def test_the_drift_study_builds_its_sweep(tmp_path):
    """experiment=portraits_drift: Modyn's sweep shape, every variant built before anything runs."""
    from ctsim.triggers import CostTrigger, DriftTrigger, EnsembleTrigger, PerformanceTrigger, TimeTrigger
    from ctsim.triggers.detectors import KS, MMD, LabelShift
    from ctsim.triggers.rules import DynamicQuantile, DynamicRollingAverage, Threshold

    plan = build(small(tmp_path, "experiment=portraits_drift"))
    by = {}
    for p in plan.pipelines:
        by.setdefault(p.name, []).append(p)
    assert len(by) == 20 and all(len(v) == 3 for v in by.values())
    thresholds = {
        (p.trigger.rule.value, p.trigger.interval)
        for n, v in by.items()
        for p in v[:1]
        if isinstance(getattr(p.trigger, "rule", None), Threshold)
    }
    assert thresholds == {(t, i) for t in (0.005, 0.01, 0.03) for i in (100, 250, 500)}
    kinds = {type(v[0].trigger) for v in by.values()}
    assert kinds == {
        DriftTrigger,
        PerformanceTrigger,
        CostTrigger,
        EnsembleTrigger,
        TimeTrigger,
        type(by["never"][0].trigger),
    }
    detectors = {type(v[0].trigger.detector) for v in by.values() if isinstance(v[0].trigger, DriftTrigger)}
    assert detectors == {MMD, KS, LabelShift}
    rules = {type(v[0].trigger.rule) for v in by.values() if isinstance(v[0].trigger, DriftTrigger)}
    assert {DynamicQuantile, DynamicRollingAverage, Threshold} <= rules
    assert {p.train.epochs for p in plan.pipelines} == {5} and {
        p.train.init for p in plan.pipelines if p.name != "scratch_yearly"
    } == {"finetune"}
    # the oracle's exact candidates: from scratch on all data so far, every year
    scratch = by["scratch_yearly"][0]
    assert scratch.train.init == "scratch" and type(scratch.selection).__name__ == "AllData"
    assert isinstance(scratch.trigger, TimeTrigger) and scratch.trigger.every == 1
