"""The sensors dataset: shapes, determinism, designed drift, and a run of experiment=sensors_lstm."""

from __future__ import annotations

import polars as pl
import pytest
import torch
import torch.nn.functional as F

from ctsim.datasets.base import Samples
from ctsim.datasets.sensors import (
    CHANGE_POINTS,
    MONTHS,
    REPLACEMENT_MONTH,
    Sensors,
    monthly_counts,
    scaled_counts,
)
from ctsim.models import MLP
from ctsim.models.recurrent import GRU
from ctsim.validation import ConfigError

from .conftest import build, run, small

CHANGE = MONTHS.index(REPLACEMENT_MONTH)


@pytest.fixture(scope="module")
def full() -> Samples:
    return Sensors(seed=0).load()


def test_shapes_counts_and_slices(full):
    n = sum(monthly_counts())
    assert 2_000 < n < 5_000 and min(monthly_counts()) < max(monthly_counts()) / 2
    assert full.x.shape == (n, 24, 4) and full.x.dtype == torch.float32 and full.x.isfinite().all()
    assert full.y.dtype == torch.long and set(full.y.unique().tolist()) == {0, 1, 2}
    assert torch.equal(torch.bincount(full.slice, minlength=40), torch.tensor(monthly_counts()))
    assert full.slice_labels == list(MONTHS)
    assert (MONTHS[0], MONTHS[12], MONTHS[-1]) == ("2021-01", "2022-01", "2024-04")
    assert torch.equal(((full.time - 2021) * 12).floor().long(), full.slice)  # fractional years
    assert min(scaled_counts(0.01)) == 10 and abs(sum(scaled_counts(0.5)) - n / 2) < 40
    assert Sensors.input_shape == (24, 4) and Sensors.num_classes == 3


def test_same_seed_gives_identical_samples_and_other_seeds_differ():
    a, b, c = (Sensors(size=0.3, seed=s).load() for s in (5, 5, 6))
    for field in ("x", "y", "time", "slice"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.x, c.x) and not torch.equal(a.y, c.y)


def test_cache_round_trip(tmp_path):
    ds = Sensors(size=0.2, seed=1, root=str(tmp_path), cache=True)
    first = ds.load()
    assert ds.cache_path.is_file() and ds.cache_path.parent == tmp_path / "sensors"
    again = Sensors(size=0.2, seed=1, root=str(tmp_path), cache=True).load()
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    assert not list((tmp_path / "sensors").glob("*.tmp*"))
    Sensors(size=0.2, seed=2, root=str(tmp_path)).load()  # off by default: nothing written
    assert len(list((tmp_path / "sensors").iterdir())) == 1


def test_change_points_are_ground_truth(full):
    assert full.change_points == list(CHANGE_POINTS)
    assert [(cp.slice, cp.kind) for cp in CHANGE_POINTS if cp.kind == "abrupt"] == [(CHANGE, "abrupt")]
    assert MONTHS[CHANGE] == "2023-01"
    for cp in CHANGE_POINTS:
        assert 0 <= cp.slice < 40 and cp.what
        if cp.kind == "gradual":
            assert cp.end_slice is not None and cp.slice < cp.end_slice < 40


def test_replaced_sensors_read_worn_machines_as_healthy_ones_read_before(full):
    vibration = full.x[..., 0].mean(1)
    before, after = full.slice < CHANGE, full.slice >= CHANGE

    def level(label: int, era: torch.Tensor) -> float:
        return float(vibration[(full.y == label) & era].median())

    assert level(1, after) == pytest.approx(level(0, before), rel=0.1)
    assert level(2, after) < level(1, before)


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"size": 0}, "size"),
        ({"size": -1.0}, "size"),
        ({"size": 1.5}, "size"),
        ({"seed": -2}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_arguments_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=rf"{key}=-?\d"):
        Sensors(**kwargs)


def _fit(train: torch.Tensor, s: Samples) -> MLP:
    torch.manual_seed(0)
    model = MLP(Sensors.input_shape, Sensors.num_classes, hidden=[64])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    order = torch.Generator().manual_seed(0)
    for _ in range(150):
        keys = train[torch.randperm(len(train), generator=order)[:64]]
        loss = F.cross_entropy(model(s.x[keys]), s.y[keys])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _accuracy(model: MLP, keys: torch.Tensor, s: Samples) -> float:
    with torch.no_grad():
        return float((model(s.x[keys]).argmax(1) == s.y[keys]).float().mean())


def test_a_model_trained_before_the_replacement_loses_after_it(full):
    """A year of data before 2023-01 (80% to train on, 20% held out), then the six months after."""
    year = ((full.slice >= CHANGE - 12) & (full.slice < CHANGE)).nonzero().squeeze(1)
    year = year[torch.randperm(len(year), generator=torch.Generator().manual_seed(0))]
    cut = int(0.8 * len(year))
    after = ((full.slice >= CHANGE) & (full.slice < CHANGE + 6)).nonzero().squeeze(1)
    model = _fit(year[:cut], full)
    before_acc, after_acc = _accuracy(model, year[cut:], full), _accuracy(model, after, full)
    assert before_acc > 0.8
    assert before_acc - after_acc >= 0.10  # measured: 0.88 -> 0.36
    retrained = _fit(after, full)  # the new signature is learnable: new data repairs it
    late = (full.slice >= CHANGE + 6).nonzero().squeeze(1)
    assert _accuracy(retrained, late, full) > 0.75


def test_dataset_and_gru_compose(tmp_path):
    plan = build(small(tmp_path, "dataset=sensors", "model=gru"))
    assert plan.dataset.name == "sensors" and plan.dataset.input_shape == (24, 4)
    for p in plan.pipelines:
        assert p.model.factory.func is GRU and p.model.input_shape == (24, 4)
        assert p.model.build()(torch.zeros(2, 24, 4)).shape == (2, 3)


def test_recurrent_model_on_images_is_rejected_naming_the_shape(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.input_shape=\(1, 32, 32\): expected \(sequence length"):
        build(small(tmp_path, "model=lstm"))


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sensors_lstm")
    overrides = small(
        tmp,
        "experiment=sensors_lstm",
        "dataset.size=0.5",
        # fewer epochs for monthly; never keeps its own 50
        'population.variants.monthly=["trigger=time","trigger.every=1","train.epochs=3"]',
        "population.only=[monthly,never]",
    )
    return run(overrides, tmp / "run")


def test_sensors_lstm_runs_end_to_end(lstm_run):
    out = lstm_run.out_dir
    assert (out / "evals.parquet").is_file() and (out / "generations.parquet").is_file()
    gens = pl.read_parquet(out / "generations.parquet")
    assert gens.group_by("pipeline").len().sort("pipeline").rows() == [("monthly", 40), ("never", 1)]


def test_retraining_beats_never_after_the_replacement(lstm_run):
    evals = pl.read_parquet(lstm_run.out_dir / "evals.parquet")
    after = (
        evals.filter(pl.col("active") & (pl.col("metric") == "accuracy") & (pl.col("slice") >= CHANGE))
        .group_by("pipeline")
        .agg(((pl.col("value") * pl.col("n")).sum() / pl.col("n").sum()).alias("acc"))
    )
    acc = dict(after.iter_rows())
    assert acc["monthly"] > acc["never"] + 0.15  # measured: 0.71 against 0.46
