"""Drift diagnostics of one pipeline's accuracy matrix: the diagonal, the drop across a change, forgetting.

These are the figures the portraits case study checks (``experiments/portraits_yearly.py``):

* **lag profile:** mean accuracy over all (generation, slice) cells at each lag
  ``slice − training slice``; lag 0 is the diagonal (a model on the slice it was trained through).
  Drift shows as a profile that peaks near 0 and falls off on both sides.
* **drop across a change:** the generations trained in the ``window`` slices before a change point,
  evaluated on those slices and on the ``window`` slices after it.
* **forgetting:** for a span of early slices, the best mean accuracy any generation reached on it,
  minus the final generation's (the usual continual-learning definition, Chaudhry et al., 2018).

>>> m = torch.tensor([[0.9, 0.5, 0.4], [0.7, 0.9, 0.6], [0.6, 0.8, 0.9]], dtype=torch.float64)
>>> r = drift_report(m, trained_slices=[0, 1, 2], change_slice=1, window=1, early=range(0, 1))
>>> round(r.lag_profile[0], 3), round(r.drop.before, 3), round(r.drop.after, 3), round(r.forgetting, 3)
(0.9, 0.9, 0.5, 0.3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ctsim.measure.metrics import nanmean


@dataclass(frozen=True)
class Drop:
    before: float  # mean accuracy of the pre-change generations on the slices before the change
    after: float  # ... and on the slices after it

    @property
    def points(self) -> float:
        return 100 * (self.before - self.after)


@dataclass(frozen=True)
class DriftReport:
    lag_profile: dict[int, float]
    drop: Drop
    forgetting: float  # in accuracy (0-1)
    best_on_early: float
    final_on_early: float

    def band(self, lo: int, hi: int) -> float:
        """Mean of the lag profile over lags with ``lo ≤ |lag| ≤ hi``."""
        vals = [v for lag, v in self.lag_profile.items() if lo <= abs(lag) <= hi and not math.isnan(v)]
        return sum(vals) / len(vals) if vals else math.nan

    def peak_lag(self, within: int = 40) -> int:
        """The lag with the highest mean accuracy among ``|lag| ≤ within``."""
        cands = {lag: v for lag, v in self.lag_profile.items() if abs(lag) <= within and not math.isnan(v)}
        return max(cands, key=cands.__getitem__)

    def lines(self) -> list[str]:
        lags = [-40, -20, -10, -5, 0, 5, 10, 20, 40]
        profile = ", ".join(
            f"{lag:+d}: {self.lag_profile[lag]:.3f}" for lag in lags if lag in self.lag_profile
        )
        return [
            f"lag profile (slice - training slice: mean accuracy): {profile}",
            f"diagonal band |lag| <= 2: {self.band(0, 2):.3f}; far |lag| >= 20: {self.band(20, 10**6):.3f}; "
            f"peak at lag {self.peak_lag():+d}",
            f"drop across the change: {self.drop.before:.3f} before -> {self.drop.after:.3f} after "
            f"({self.drop.points:.1f} points)",
            f"forgetting of the early slices: best {self.best_on_early:.3f} -> "
            f"final {self.final_on_early:.3f} ({100 * self.forgetting:.1f} points)",
        ]


def drift_report(
    matrix: torch.Tensor,
    trained_slices: Sequence[int],
    change_slice: int,
    window: int = 10,
    early: range = range(0, 10),
) -> DriftReport:
    """Diagnostics of a (generations × slices) accuracy matrix; ``trained_slices[g]`` as in the tables."""
    matrix = matrix.double()
    num_slices = matrix.shape[1]
    sums: dict[int, list[float]] = {}
    for g, t in enumerate(trained_slices):
        for s in range(num_slices):
            v = float(matrix[g, s])
            if not math.isnan(v):
                sums.setdefault(s - t, []).append(v)
    profile = {lag: sum(v) / len(v) for lag, v in sorted(sums.items())}

    pre = [g for g, t in enumerate(trained_slices) if change_slice - window <= t < change_slice]
    before = range(max(0, change_slice - window), change_slice)
    after = range(change_slice, min(num_slices, change_slice + window))
    drop = Drop(nanmean(matrix[pre][:, list(before)]), nanmean(matrix[pre][:, list(after)]))

    on_early = torch.tensor([nanmean(matrix[g, list(early)]) for g in range(matrix.shape[0])])
    best, final = float(on_early.max()), float(on_early[-1])
    return DriftReport(profile, drop, best - final, best, final)
