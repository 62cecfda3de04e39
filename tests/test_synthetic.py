"""The synthetic drift streams (SEA, hyperplane, RBF): concepts, drift kinds, ground truth, noise, runs."""

from __future__ import annotations

import inspect
import itertools

import polars as pl
import pytest
import torch
import yaml

from ctsim.datasets import SEA, Hyperplane, RandomRBF
from ctsim.datasets.base import Samples
from ctsim.measure.quality import trigger_quality
from ctsim.validation import ConfigError

from .conftest import REPO, build, run, small

DATASETS = (SEA, Hyperplane, RandomRBF)
CONFIGS = {SEA: "sea", Hyperplane: "hyperplane", RandomRBF: "rbf"}
ids = pytest.mark.parametrize("cls", DATASETS, ids=lambda c: c.name)


def rule(ds, s: Samples, concept: int) -> torch.Tensor:
    """The label each sample would have under ``concept``'s documented rule, without noise.

    RBF has no exact rule (clusters overlap): the class of the nearest centre of that concept.
    """
    if isinstance(ds, SEA):
        return (s.x[:, 0] + s.x[:, 1] <= ds.threshold(concept)).long()
    if isinstance(ds, Hyperplane):
        w = ds.concept_weights()[concept]
        return ((s.x * w).sum(1) >= 0.5 * w.sum()).long()
    c = ds.concept_centroids()
    return c.labels[torch.cdist(s.x, c.centres[concept]).argmin(1)]


def share_new(ds, s: Samples, old: int, new: int) -> list[float]:
    """Per slice, how far the data has moved from concept ``old`` (0) to ``new`` (1).

    SEA and hyperplane (run without noise): among inputs the two rules label differently, the share
    labelled as ``new`` says. RBF: where the slice's mean input lies on the way from the old concept's
    mean centre to the new one's (a sample's expected input is its centroid's centre).
    """
    if isinstance(ds, RandomRBF):
        c = ds.concept_centroids()
        p = c.weights / c.weights.sum()
        a, b = p @ c.centres[old], p @ c.centres[new]
        means = torch.stack([s.x[s.slice == k].mean(0) for k in range(len(s.slice_labels))])
        return (((means - a) @ (b - a)) / (b - a).square().sum()).tolist()
    before, after = rule(ds, s, old), rule(ds, s, new)
    differ = before != after
    return [float((s.y == after)[differ & (s.slice == k)].float().mean()) for k in range(len(s.slice_labels))]


def accuracy(labels: torch.Tensor, s: Samples, where: torch.Tensor) -> float:
    return float((labels == s.y)[where].float().mean())


@ids
def test_shapes_times_and_counts(cls):
    ds = cls(slices=12, change_points=[6], size=0.2, seed=3)
    s = ds.load()
    n = 12 * 100
    features = 3 if cls is SEA else 10
    assert ds.input_shape == (features,) and ds.model == "mlp" and (REPO / "conf/model/mlp.yaml").is_file()
    assert s.x.shape == (n, features) and s.x.dtype == torch.float32 and s.x.isfinite().all()
    assert s.y.dtype == torch.long and set(s.y.unique().tolist()) == set(range(ds.num_classes))
    assert s.num_classes == ds.num_classes == 2
    assert torch.equal(torch.bincount(s.slice, minlength=12), torch.full((12,), 100))
    assert s.time.dtype == torch.float64 and torch.equal(s.time.floor().long(), s.slice)  # time in slices
    assert s.slice_labels == ds.slice_labels == [f"t{k:02d}" for k in range(12)]
    assert len(cls(slices=5, change_points=[2]).slice_labels[-1]) == 2  # "t4"


def test_features_and_classes_are_configurable():
    assert Hyperplane(features=4, size=0.1).load().x.shape == (40 * 50, 4)
    s = RandomRBF(features=3, classes=5, centroids=10, size=0.1).load()
    assert s.x.shape == (40 * 50, 3) and s.num_classes == 5 and set(s.y.tolist()) == set(range(5))


@ids
def test_size_scales_every_slice_keeping_at_least_ten(cls):
    per_slice = torch.bincount(cls(size=0.25).load().slice)
    assert per_slice.tolist() == [125] * 40
    assert torch.bincount(cls(size=0.001).load().slice).tolist() == [10] * 40
    assert torch.bincount(cls(per_slice=40, size=0.5).load().slice).tolist() == [20] * 40


@ids
def test_same_seed_gives_identical_samples_and_other_seeds_differ(cls):
    a, b, c = (cls(size=0.2, seed=seed, drift="gradual").load() for seed in (4, 4, 5))
    for field in ("x", "y", "time", "slice"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.x, c.x) and not torch.equal(a.y, c.y) and not torch.equal(a.time, c.time)


@ids
def test_noise_replaces_the_configured_share_of_labels(cls):
    clean = cls(noise=0.0, seed=1).load()
    noisy = cls(noise=0.2, seed=1).load()
    assert torch.equal(clean.x, noisy.x) and torch.equal(clean.time, noisy.time)  # only labels change
    assert float((clean.y != noisy.y).float().mean()) == pytest.approx(0.2, abs=0.015)


def test_noise_replaces_labels_by_other_classes_with_many_classes():
    kwargs = {"classes": 4, "centroids": 12, "seed": 2}
    clean, noisy = (RandomRBF(noise=n, **kwargs).load() for n in (0.0, 0.3))
    changed = clean.y != noisy.y
    assert float(changed.float().mean()) == pytest.approx(0.3, abs=0.015)
    assert torch.bincount(noisy.y[changed], minlength=4).min() > 0.2 * changed.sum() / 4


@pytest.mark.parametrize("cls", [SEA, Hyperplane], ids=lambda c: c.name)
def test_each_segment_follows_its_concept_and_the_old_rule_falls_after_a_change(cls):
    """Default stream: concepts A, B, C, D from slices 0, 10, 20, 30; 10% label noise."""
    ds = cls()
    s = ds.load()
    segment = s.slice // 10
    for k in range(4):
        assert accuracy(rule(ds, s, k), s, segment == k) == pytest.approx(0.9, abs=0.02), k
        if k:
            assert accuracy(rule(ds, s, k - 1), s, segment == k) < 0.85, k  # measured: 0.75 to 0.86


def test_rbf_segments_follow_their_centroids():
    ds = RandomRBF()
    s = ds.load()
    segment = s.slice // 10
    for k in range(4):
        now = accuracy(rule(ds, s, k), s, segment == k)
        assert now > 0.8, k  # nearest centre: measured 0.86 to 0.89
        if k:  # redrawn centres: the old concept's rule is near chance (measured 0.50 to 0.68)
            assert accuracy(rule(ds, s, k - 1), s, segment == k) < now - 0.15, k


@ids
def test_abrupt_change_switches_concept_at_the_change_point(cls):
    ds = cls(slices=8, change_points=[4], noise=0.0)
    share = share_new(ds, ds.load(), 0, 1)
    lo, hi = (0.15, 0.85) if cls is RandomRBF else (0.0, 1.0)
    assert all(v <= lo for v in share[:4]) and all(v >= hi for v in share[4:]), share


@ids
def test_gradual_change_mixes_the_concepts_over_exactly_width_slices(cls):
    ds = cls(slices=10, change_points=[3], width=4, drift="gradual", noise=0.0, per_slice=2000)
    share = share_new(ds, ds.load(), 0, 1)
    tol = 0.08 if cls is RandomRBF else 0.0  # RBF's measure is a mean over the slice: not exact
    assert share[:3] == pytest.approx([0] * 3, abs=tol) and share[7:] == pytest.approx([1] * 3, abs=tol)
    mixing = share[3:7]
    assert all(tol < v < 1 - tol for v in mixing) and all(a < b for a, b in itertools.pairwise(mixing)), share
    if cls is not Hyperplane:  # SEA's mixture and RBF's centres move linearly in time
        assert mixing == pytest.approx([0.125, 0.375, 0.625, 0.875], abs=0.08)


@ids
def test_recurring_drift_returns_to_the_first_concept(cls):
    ds = cls(slices=9, change_points=[3, 6], drift="recurring", noise=0.0)
    share = share_new(ds, ds.load(), 0, 1)
    lo, hi = (0.15, 0.85) if cls is RandomRBF else (0.0, 1.0)
    assert all(v <= lo for v in share[:3] + share[6:]) and all(v >= hi for v in share[3:6]), share


def test_recurring_sea_alternates_its_first_two_thresholds():
    ds = SEA(slices=9, change_points=[3, 6], drift="recurring")
    s = ds.load()
    after = s.slice >= 6
    assert accuracy((s.x[:, 0] + s.x[:, 1] <= 8).long(), s, after) == pytest.approx(0.9, abs=0.03)
    assert [cp.what for cp in s.change_points] == [
        "SEA threshold 8 → 9",
        "SEA threshold 9 → 8; recurring: back to concept A",
    ]


@ids
@pytest.mark.parametrize("drift", ["abrupt", "gradual", "recurring"])
def test_change_points_are_the_configured_ground_truth(cls, drift):
    ds = cls(drift=drift, change_points=[5, 12, 30], width=3)
    points = ds.load().change_points
    assert points == ds.change_points
    assert [cp.slice for cp in points] == [5, 12, 30] and all(cp.what for cp in points)
    if drift == "gradual":
        assert [(cp.kind, cp.end_slice) for cp in points] == [
            ("gradual", 7),
            ("gradual", 14),
            ("gradual", 32),
        ]
    else:
        assert [(cp.kind, cp.end_slice) for cp in points] == [("abrupt", None)] * 3
    back = ["back to concept A" in cp.what for cp in points]
    assert back == ([False, True, False] if drift == "recurring" else [False] * 3)


def test_ground_truth_says_what_changed():
    assert [cp.what for cp in SEA().change_points] == [
        "SEA threshold 8 → 9",
        "SEA threshold 9 → 7",
        "SEA threshold 7 → 9.5",
    ]
    hyper = Hyperplane(change_points=[10]).change_points[0].what
    assert hyper.startswith("hyperplane weights, concept A → B (the boundary turns ") and hyper.endswith("°)")
    gradual = RandomRBF(drift="gradual", change_points=[10], width=5).change_points[0].what
    assert gradual.startswith("RBF centroids, concept A → B") and gradual.endswith("blended over 5 slices")
    assert SEA(change_points=[]).change_points == []  # a stationary stream


def test_trigger_quality_scores_against_the_ground_truth():
    q = trigger_quality([0, 10, 21, 35], num_slices=40, change_points=SEA().change_points)
    assert q.delays == [0, 1, 5] and q.false_alarms == 0
    gradual = SEA(drift="gradual").change_points
    assert trigger_quality([0, 12], 40, gradual, kinds=("gradual",)).delays == [2, None, None]


def test_cache_round_trip(tmp_path):
    ds = Hyperplane(size=0.2, seed=1, root=str(tmp_path), cache=True)
    first = ds.load()
    assert ds.cache_path.is_file() and ds.cache_path.parent == tmp_path / "hyperplane"
    again = Hyperplane(size=0.2, seed=1, root=str(tmp_path), cache=True).load()
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    other = Hyperplane(size=0.2, seed=1, drift="recurring", root=str(tmp_path), cache=True)
    assert other.cache_path != ds.cache_path and not torch.equal(other.load().y, first.y)
    Hyperplane(size=0.2, seed=2, root=str(tmp_path)).load()  # off by default: nothing written
    assert len(list((tmp_path / "hyperplane").iterdir())) == 2


def test_a_cache_root_that_is_a_file_is_reported_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    problems = SEA(root=str(tmp_path / "file"), cache=True).path_problems()
    assert [p.key for p in problems] == ["dataset.root"]
    assert SEA(root=str(tmp_path / "file")).path_problems() == []  # cache off: root unused


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (SEA, {"change_points": [10, 40]}, r"change_points=\[10, 40\]: expected .* in \[1, 39\]"),
        (SEA, {"change_points": [0, 5]}, r"change_points=\[0, 5\]: expected .* in \[1, 39\]"),
        (
            Hyperplane,
            {"change_points": [20, 10]},
            r"change_points=\[20, 10\]: expected a strictly increasing",
        ),
        (RandomRBF, {"change_points": [3, 3]}, r"change_points=\[3, 3\]: expected a strictly increasing"),
        (SEA, {"slices": 8}, r"change_points=\(10, 20, 30\): expected .* in \[1, 7\] \(slices=8\)"),
        (SEA, {"drift": "gradual", "change_points": [10, 12]}, r"change_points=\[10, 12\]: .*drift=gradual"),
        (SEA, {"drift": "gradual", "change_points": [38]}, r"the last at most at slice 36"),
        (SEA, {"drift": "sudden"}, r"drift='sudden': expected one of \['abrupt', 'gradual', 'recurring'\]"),
        (Hyperplane, {"noise": 0.5}, r"noise=0.5: expected a label-noise probability in \[0, 0.5\)"),
        (RandomRBF, {"noise": -0.1}, r"noise=-0.1: expected"),
        (SEA, {"size": 0}, r"size=0: expected a number in \(0, 1\]"),
        (SEA, {"size": 1.5}, r"size=1\.5: expected a number in \(0, 1\]"),
        (SEA, {"per_slice": 5}, r"per_slice=5: expected an integer ≥ 10"),
        (SEA, {"slices": 1, "change_points": []}, r"slices=1: expected an integer ≥ 2"),
        (SEA, {"width": 0}, r"width=0: expected an integer ≥ 1"),
        (SEA, {"seed": -1}, r"seed=-1: expected"),
        (SEA, {"thresholds": [8]}, r"thresholds=\[8\]: expected a list of ≥ 2 distinct numbers"),
        (SEA, {"thresholds": [8, 25]}, r"thresholds=\[8, 25\]: expected"),
        (Hyperplane, {"features": 1}, r"features=1: expected an integer ≥ 2"),
        (RandomRBF, {"classes": 3, "centroids": 2}, r"centroids=2: expected an integer ≥ classes \(3\)"),
    ],
)
def test_bad_arguments_name_the_key(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        SEA(noise=0.7, drift="x", size=-1)
    assert sorted(p.key for p in err.value.problems) == ["drift", "noise", "size"]


@ids
def test_yaml_mirrors_the_constructor_defaults(cls, tmp_path):
    config = yaml.safe_load((REPO / "conf" / "dataset" / f"{CONFIGS[cls]}.yaml").read_text())
    assert config.pop("_target_") == f"ctsim.datasets.{cls.__name__}"
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
    assert config == {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}
    plan = build(small(tmp_path, f"dataset={CONFIGS[cls]}", "model=mlp"))
    assert isinstance(plan.dataset, cls) and plan.dataset.name == CONFIGS[cls]


@ids
def test_runs_end_to_end_and_scores_triggers_against_the_change_point(cls, tmp_path):
    name = CONFIGS[cls]
    outcome = run(
        small(
            tmp_path,
            f"dataset={name}",
            "model=mlp",
            "dataset.slices=8",
            "dataset.change_points=[4]",
            "dataset.size=0.4",
            "train.epochs=1",
            "population.variants={}",
            "trigger=time",
            "trigger.every=3",
            "output.checkpoints=none",
        ),
        tmp_path / "out",
    )
    assert outcome.tables["generations"]["trigger_slice"].to_list() == [2, 5]  # ends of slices 2 and 5
    evals = outcome.tables["evals"].filter(pl.col("metric") == "accuracy")
    assert (
        evals.group_by("generation").agg(pl.col("slice").sort()).sort("generation")["slice"].to_list()
        == [list(range(8))] * 2
    )  # every generation is evaluated on every slice
    assert evals.filter("active")["slice"].to_list() == [3, 4, 5, 6, 7]
    quality = outcome.tables["quality"].row(0, named=True)  # the change at slice 4 is seen at slice 5
    assert (quality["change_points"], quality["detected"], quality["mean_delay_slices"]) == (1, 1, 1.0)
    assert (tmp_path / "out" / "quality.parquet").is_file()


def test_retraining_beats_a_static_model_after_rbf_centres_jump(tmp_path):
    outcome = run(
        small(
            tmp_path,
            "dataset=rbf",
            "model=mlp",
            "dataset.slices=12",
            "dataset.change_points=[6]",
            "dataset.size=0.5",
            "optimizer=adam",
            "optimizer.lr=0.01",
            "train.epochs=3",
            'population.variants={yearly: ["trigger=time"], never: ["trigger=never"]}',
            "output.checkpoints=none",
        ),
        tmp_path / "out",
    )
    after = (
        outcome.tables["evals"]
        .filter(pl.col("active") & (pl.col("metric") == "accuracy") & (pl.col("slice") >= 6))
        .group_by("pipeline")
        .agg(pl.col("value").mean())
    )
    acc = dict(after.iter_rows())
    assert acc["yearly"] > 0.7 and acc["yearly"] > acc["never"] + 0.15  # measured: 0.82 against 0.55
