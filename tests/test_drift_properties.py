"""The designed drift shows in a real accuracy matrix (a cheaper form of experiment=portraits_yearly).

Full size (``python experiments/portraits_yearly.py``) is 84 × 84 on 37,189 portraits; here 15% of the
portraits, everything else as Modyn's Yearbook setup. The properties (at 15%, measured once: near-diagonal
0.71 against 0.57 at lags 30-40, peak at lag -5, a 29.5-point drop, 0.55 forgetting; each bound holds with
room):

* the diagonal: models are most accurate near the slices they were trained through; accuracy falls
  off on both sides (lags within ±10 beat lags 30-40 slices away, before and after);
* the mid-century change: models trained in the decade before 1970 lose ≥15 points after it;
* forgetting: the final model is ≥5 points below the best any generation reached on the 1930s.
"""

from __future__ import annotations

import pytest

from ctsim.datasets.portraits import HAIR_CHANGE_YEAR, YEARS
from ctsim.measure.metrics import pipeline_matrix
from ctsim.reports.analysis import drift_report

from .conftest import run, small


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift")
    outcome = run(
        small(tmp, "experiment=portraits_yearly", "dataset.size=0.15", "output.checkpoints=none"), tmp / "run"
    )
    matrix, trained = pipeline_matrix(
        outcome.tables["evals"], outcome.tables["generations"], "portraits_yearly", 0
    )
    assert matrix.shape == (84, 84)
    return drift_report(
        matrix, trained, change_slice=YEARS.index(HAIR_CHANGE_YEAR), window=10, early=range(10)
    )


def test_accuracy_peaks_near_the_diagonal(report):
    near = report.band(0, 10)
    assert near > report.band(30, 40) + 0.05
    past = [v for lag, v in report.lag_profile.items() if -40 <= lag <= -30]
    future = [v for lag, v in report.lag_profile.items() if 30 <= lag <= 40]
    assert near > sum(past) / len(past) + 0.05  # forgetting side
    assert near > sum(future) / len(future) + 0.05  # drift side
    assert abs(report.peak_lag()) <= 10


def test_models_trained_before_1970_lose_15_points_after_it(report):
    assert report.drop.points >= 15


def test_late_models_forget_the_1930s(report):
    assert report.forgetting >= 0.05
