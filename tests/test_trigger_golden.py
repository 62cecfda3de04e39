"""Golden decisions: which arrival batches every policy of the drift study fires on, through the real
simulation, on a fixed small stream (portraits at size 0.05, an MLP, float64, seed 0).

The values were captured from the code before the trigger phase was made faster; a change that alters
any policy's decisions fails here. A deliberate change of behaviour updates them in its own commit.
"""

from __future__ import annotations

import pytest

from .conftest import run, small

EVERY = list(range(84))  # one arrival batch per slice at this size: 84 batches
GOLDEN = {
    "mmd_0.005_i100": [2, 25, 32, 42, 63],
    "mmd_0.005_i250": [2, 28, 38],
    "mmd_0.005_i500": [2, 38, 48],
    "mmd_0.01_i100": [2, 25, 32, 63],
    "mmd_0.01_i250": [2, 28, 38],
    "mmd_0.01_i500": [2, 38, 48],
    "mmd_0.03_i100": [2, 32, 36],
    "mmd_0.03_i250": [2, 38, 44],
    "mmd_0.03_i500": [2, 38, 48],
    "mmd_p_i250": [2, 38],
    "ks_i250": [2, 38],
    "label_i500": [2],
    "mmd_quantile_i250": [2, 68],
    "mmd_rolling_i250": [2, 49],
    "performance": [2],
    "cost": EVERY,
    "ensemble": [2],
    "yearly": EVERY,
    "never": [0],
    "scratch_yearly": EVERY,  # the oracle's exact candidates: a yearly trigger, training from scratch
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("golden")
    overrides = small(
        tmp,
        "experiment=portraits_drift",
        "dataset.size=0.05",
        "model=mlp",
        "train.epochs=1",
        "optimizer.lr=0.05",
        "population.seeds=[0]",
        "engine.dtype=float64",
        "output.checkpoints=none",
    )
    return run(overrides, tmp / "run").tables["generations"]


def test_every_policy_of_the_drift_study_fires_on_its_golden_batches(study):
    fired = {
        p: d.sort("generation")["trigger_batch"].to_list()
        for (p,), d in study.group_by("pipeline", maintain_order=True)
    }
    assert fired == GOLDEN
