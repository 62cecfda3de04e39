"""Drift detectors: two-sample tests between a reference and a current window.

Each detector is a small class with one method, ``compare(reference, current, generator) ->
Result``: a distance (bigger: more drift) and a p-value (None when it was asked for none). The
reference is (n, d) and the current window (m, d) float features; :class:`LabelShift` takes 1-D
integer labels instead. ``generator`` (a CPU ``torch.Generator``) seeds every permutation, so a
result is reproducible given its state. Either window with fewer than 2 samples is a ValueError.

* :class:`MMD`: maximum mean discrepancy, in torch on the tensors' device (Modyn's default);
  :func:`mmd_many` tests several pairs in one batched pass.
* :class:`KS`, :class:`CvM`: per-feature Kolmogorov-Smirnov / Cramér-von Mises tests, p-values
  corrected for the number of features.
* :class:`Energy`, :class:`Wasserstein`: per-feature distances averaged, p-value by permutation.
* :class:`LabelShift`: chi-squared test on the label counts.

The per-feature detectors run in numpy float64 on the CPU.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ctsim.validation import ConfigError, Problem, check, is_int, one_of

CORRECTIONS = ("bonferroni", "fdr_bh")


@dataclass(frozen=True)
class Result:
    """One comparison: the detector's statistic (bigger: more drift) and its p-value, if any."""

    distance: float
    p_value: float | None


class Detector(Protocol):
    name: str

    def compare(
        self, reference: torch.Tensor, current: torch.Tensor, generator: torch.Generator
    ) -> Result: ...


# -- shared helpers -------------------------------------------------------------------------------
def _permutations_problem(permutations: object) -> Problem | None:
    return check(
        "permutations",
        permutations,
        is_int(permutations) and permutations >= 0,
        "an integer ≥ 0 (0: no p-value)",
    )


def _check_sizes(name: str, reference: torch.Tensor, current: torch.Tensor, ndim: int = 2) -> None:
    for side, t in (("reference", reference), ("current", current)):
        if t.ndim != ndim:
            shape = "(samples, features)" if ndim == 2 else "(samples,)"
            raise ValueError(f"{name}: the {side} window must have shape {shape}, got {tuple(t.shape)}")
        if len(t) < 2:
            raise ValueError(f"{name}: the {side} window has {len(t)} samples; a test needs at least 2")
    if ndim == 2 and reference.shape[1] != current.shape[1]:
        raise ValueError(f"{name}: {reference.shape[1]} reference features but {current.shape[1]} current")


def _membership(n: int, total: int, permutations: int, generator: torch.Generator) -> np.ndarray:
    """(1 + permutations, total) 0/1 rows marking the reference side of the pooled sample: the observed
    split (its first ``n`` rows), then one random split per permutation.

    A permutation's reference side is the ``n`` rows with the smallest of ``torch.rand(total)`` keys
    drawn from ``generator`` (stable argsort): the same splits on any device, for any detector.
    """
    keys = torch.rand(permutations, total, generator=generator).numpy()
    rows = np.zeros((1 + permutations, total))
    rows[0, :n] = 1
    np.put_along_axis(rows[1:], np.argsort(keys, axis=1, kind="stable")[:, :n], 1.0, axis=1)
    return rows


def _p_value(statistics: np.ndarray | torch.Tensor, tolerance: float) -> float:
    """(count(permuted ≥ observed) + 1) / (permutations + 1); ``statistics[0]`` is the observed one.

    Permuted statistics within ``tolerance`` of the observed count as ties, so as exceeding it: the
    same split reached by another route is never rounded into a smaller p-value (conservative)."""
    exceed = statistics[1:] >= statistics[0] - tolerance
    return (int(exceed.sum()) + 1) / len(statistics)


def _combine(p_values: np.ndarray, correction: str) -> float:
    """One p-value for "no feature changed" from one per feature."""
    if correction == "bonferroni":
        return float(min(1.0, len(p_values) * p_values.min()))
    # Benjamini-Hochberg's smallest adjusted p-value is Simes' global test.
    return float(_stats().false_discovery_control(p_values, method="bh").min())


def _to_numpy(name: str, reference: torch.Tensor, current: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    _check_sizes(name, reference, current)
    return tuple(t.detach().to("cpu", torch.float64).numpy() for t in (reference, current))


# -- MMD ------------------------------------------------------------------------------------------
class MMD:
    """Squared maximum mean discrepancy with a Gaussian kernel, in torch on the tensors' device.

    Modyn's default drift detector (``DataDriftTrigger``: MMD on the model's embeddings; Gretton et
    al., "A Kernel Two-Sample Test", JMLR 2012). The distance is the **unbiased** estimate
    MMD²_u (within-window sums leave out i = j): about 0 when nothing changed, and may then be
    slightly negative. The kernel is ``exp(-|x - y|² / (2σ²))`` with σ² the (lower) median squared
    distance between distinct rows of the pooled sample (the median heuristic); if that is 0 (more
    than half the rows coincide, e.g. constant features) σ² = 1.

    The p-value is ``(count(permuted ≥ observed) + 1) / (permutations + 1)``, from ``permutations``
    random splits of the pooled sample drawn from ``generator`` on the CPU (the same draws on any
    device). The kernel matrix is computed once and all splits are scored in one matrix product:
    O((n + m)² (d + permutations)) time, O((n + m)²) memory. Computed in float64 if an input is,
    else in float32.

    Args:
        permutations: random splits for the p-value; 0: no p-value (``p_value`` is None).

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(100, 3, generator=g)
    >>> r = MMD(permutations=100).compare(x, torch.randn(100, 3, generator=g) + 1, g)
    >>> r.distance > 0.1, r.p_value
    (True, 0.009900990099009901)
    """

    name = "mmd"

    def __init__(self, permutations: int = 200):
        ConfigError.raise_all([_permutations_problem(permutations)])
        self.permutations = permutations

    def compare(self, reference: torch.Tensor, current: torch.Tensor, generator: torch.Generator) -> Result:
        _check_sizes(self.name, reference, current)
        n, m = len(reference), len(current)
        z = torch.cat([reference, current]).to(_float_dtype(reference, current))
        kernel = _gaussian_kernel(z - z.mean(dim=0))
        side = torch.from_numpy(_membership(n, n + m, self.permutations, generator)).to(kernel)
        statistics = _mmd2(kernel, side, 1 - side, n, m)
        return _mmd_result(statistics, self.permutations)

    def compare_many(
        self, pairs: list[tuple[torch.Tensor, torch.Tensor]], generator: torch.Generator
    ) -> list[Result]:
        """:func:`mmd_many` with this detector's permutations."""
        return mmd_many(pairs, self.permutations, generator)


def mmd_many(
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    permutations: int,
    generator: torch.Generator | Sequence[torch.Generator],
) -> list[Result]:
    """``[MMD(permutations).compare(r, c, generator) for r, c in pairs]`` in few batched passes.

    For many pipelines' windows on one GPU: the pairs (on one device; sizes and feature counts may
    differ) are zero-padded to the largest pooled sample of their group and masked, and every pair's
    kernel matrix and permutation statistics come from batched products. Pairs are grouped by pooled
    size (each group's smallest at least :data:`GROUP_SHARE` of its largest), so a small window is
    not padded to a large one's size: padding costs quadratically (one study's padded passes took
    6× the work of its pairs). The permutations are drawn from ``generator`` pair after pair, in the
    given order, as the loop would draw them, so the results equal the loop's (up to rounding); or
    from one generator per pair (a sequence), as each pipeline's own trigger draws them.
    """
    generators = [generator] * len(pairs) if isinstance(generator, torch.Generator) else list(generator)
    ConfigError.raise_all([_permutations_problem(permutations)])
    if not pairs:
        return []
    for reference, current in pairs:
        _check_sizes("mmd", reference, current)
    device = pairs[0][0].device
    if any(t.device != device for pair in pairs for t in pair):
        raise ValueError(f"mmd_many: every window must be on one device, got {[p[0].device for p in pairs]}")
    dtype = _float_dtype(*(t for pair in pairs for t in pair))
    features = max(r.shape[1] for r, _ in pairs)
    sides = [  # drawn in the pairs' order, whatever the groups
        _membership(len(r), len(r) + len(c), permutations, g) for (r, c), g in zip(pairs, generators)
    ]
    results: list[Result | None] = [None] * len(pairs)
    for group in _groups([len(r) + len(c) for r, c in pairs]):
        found = _mmd_padded([pairs[b] for b in group], [sides[b] for b in group], features, dtype)
        for b, statistics in zip(group, found):
            results[b] = _mmd_result(statistics, permutations)
    return results  # type: ignore[return-value]


class FixedReference:
    """MMD² without permutations (``MMD(0)``) of many current windows against one fixed reference,
    with the reference's own share computed once.

    A drift trigger with ``reference: trained`` compares every current window with the same
    reference (the active model's training set) until the next model. ``MMD(0).compare`` rebuilds the
    whole pooled kernel every time, though the reference × reference block (most of it, when the
    reference is the larger window) does not change. This summarises that block once, in memory that
    does not grow with its n²/2 pairs, and per current window computes only the reference × current
    and current × current blocks. It is the same statistic:

    * **bandwidth** (the median heuristic): the lower median of all the pooled sample's distinct pairs.
      The reference's squared distances are counted in fine bins (:data:`BIN_SHARE` of their median
      wide). Only the bins around the median are kept as values, sorted: the pooled median lies
      between the reference's values at ranks ``k - |current share|`` and ``k``, and is found by
      merging those with the current share's values in that band. A window whose band reaches past
      the kept bins widens them (one more pass over the reference's pairs).
    * **kernel sum** over the reference's pairs: per bin, ``Σ exp(-d / s)`` from the bin's first
      :data:`TERMS` moments about its centre (a Taylor series in ``(d - centre) / s``, whose remainder
      is below 1e-16 relative at the bandwidths the bins are made for; if a bandwidth makes it
      larger, the sum is taken over the pairs again, exactly).

    The rounding differs from ``compare``'s (rows centred on the reference's mean, sums in another
    order, the reference's kernel sum in float64): on random windows the distances agree to 1e-12
    relative in float64 and to float32 rounding (1e-6 absolute) in float32 (tested).

    Memory: the bins, and the values of the kept middle bins (a few times ``n × m`` for windows of
    ``m`` samples); building one computes the n²/2 distances twice, a block of rows at a time. It
    runs on the CPU, whatever the windows' device: its binned sums (``bincount``) are deterministic
    there, so a resumed run's replay makes the same decisions.

    >>> g = torch.Generator().manual_seed(0)
    >>> ref, cur = torch.randn(60, 3, generator=g).double(), torch.randn(20, 3, generator=g).double() + 1
    >>> fixed = FixedReference(ref)
    >>> abs(fixed.distance(cur) - MMD(0).compare(ref, cur, g).distance) < 1e-12
    True
    """

    def __init__(self, reference: torch.Tensor):
        _check_sizes("mmd", reference, reference)
        self.dtype = _float_dtype(reference)
        z = reference.detach().to("cpu", self.dtype)
        self.mean = z.mean(dim=0)
        self.z = z - self.mean
        self.norms = (self.z * self.z).sum(dim=-1)
        self.pairs = len(z) * (len(z) - 1) // 2
        self.finite = bool(torch.isfinite(self.z).all())
        self.width, bins = self._bins() if self.finite else (1.0, 1)
        self.moments = torch.zeros(bins, TERMS, dtype=torch.float64)  # Σ (d - centre)^k
        counts = torch.zeros(bins, dtype=torch.int64)
        for d in self._upper_blocks() if self.finite else ():
            index = self._index(d)
            block = torch.bincount(index, minlength=bins)
            counts += block
            self.moments[:, 0] += block  # the zeroth moment is the count (exact in float64)
            t = d.double().sub_(index.double().add_(0.5).mul_(self.width))  # about the bin's centre
            power = t.clone()
            for k in range(1, TERMS):
                self.moments[:, k] += torch.bincount(index, weights=power, minlength=bins)
                if k + 1 < TERMS:
                    power *= t
        self.below = torch.cumsum(counts, 0) - counts  # pairs in the bins before each bin
        self.counts = counts
        self.kept: tuple[int, torch.Tensor] = (0, self.z.new_empty(0))  # first rank, sorted values

    def _bins(self) -> tuple[float, int]:
        """The bin width (:data:`BIN_SHARE` of the median distance of up to 512 evenly spread rows)
        and the number of bins up to the largest possible distance, 4 max |z|² (at most :data:`BINS`)."""
        sample = self.z[:: max(1, len(self.z) // 512)]
        median = float(_upper(_squared_distances(sample)).median()) if len(sample) > 1 else 0.0
        top = 4 * float(self.norms.max())
        width = BIN_SHARE * median if median > 0 else top / BINS
        width = max(width, top / (BINS - 2), torch.finfo(self.dtype).tiny)
        return width, min(BINS, int(top / width) + 2)

    def _index(self, d: torch.Tensor) -> torch.Tensor:
        """Each distance's bin: ``d × (1 / width)`` rounded down (the distances are ≥ 0), monotone in
        ``d`` (equal values share a bin)."""
        return torch.mul(d, 1 / self.width).long().clamp_max_(len(self.moments) - 1)

    def _upper_blocks(self):
        """The squared distances above the diagonal, a block of rows at a time (no n × n matrix): per
        block of rows ``lo:hi``, the pairs among them, then all their pairs with the rows after ``hi``."""
        n, rows = len(self.z), max(1, BLOCK_ENTRIES // max(len(self.z), 1))
        for lo in range(0, n - 1, rows):
            hi = min(n - 1, lo + rows)
            z, norms = self.z[lo:hi], self.norms[lo:hi]
            yield _upper(_distances(z, norms, z, norms))
            yield _distances(z, norms, self.z[hi:], self.norms[hi:]).flatten()

    def _keep(self, first: int, last: int) -> None:
        """Keep, sorted, the values of the whole bins holding the reference's ranks ``first..last``."""
        ends = self.below + self.counts
        lo = int(torch.searchsorted(ends, torch.tensor([first], device=ends.device), right=True))
        hi = int(torch.searchsorted(ends, torch.tensor([last], device=ends.device), right=True))
        values = []
        for d in self._upper_blocks():
            index = self._index(d)
            values.append(d[(index >= lo) & (index <= hi)])
        self.kept = (int(self.below[lo]), _sorted(torch.cat(values)))

    def _median(self, b: torch.Tensor) -> torch.Tensor:
        """The lower median of the reference's pairs and ``b`` together (widening the kept bins if needed)."""
        k = (self.pairs + len(b) - 1) // 2
        first, last = max(0, k - len(b)), min(self.pairs - 1, k)
        start, values = self.kept
        if first < start or last >= start + len(values):
            margin = (last - first + 1) // 2  # room for windows up to about twice as large
            self._keep(max(0, first - margin), min(self.pairs - 1, last + margin))
            start, values = self.kept
        return _merged_lower_median(values, b, offset=start, total=self.pairs)

    def _kernel_sum(self, s: torch.Tensor) -> float:
        """``Σ exp(-d / s)`` over the reference's pairs: from the bins' moments, or exactly if the
        series' remainder could exceed 1e-16 relative at this ``s``."""
        r = self.width / (2 * float(s))
        if r**TERMS / math.factorial(TERMS) * math.exp(2 * r) > 1e-16:
            return sum(float((d / -s).exp_().double().sum()) for d in self._upper_blocks())
        centres = (torch.arange(len(self.moments), dtype=torch.float64) + 0.5) * self.width
        terms = [(-1 / float(s)) ** k / math.factorial(k) for k in range(TERMS)]
        terms = torch.tensor(terms, dtype=torch.float64)
        return float(((-centres / float(s)).exp() * (self.moments @ terms)).sum())

    def distance(self, current: torch.Tensor) -> float:
        """``MMD(0).compare(reference, current, g).distance``, up to rounding."""
        _check_sizes("mmd", self.z, current)
        if not self.finite:
            return float("nan")  # as compare: a NaN median, NaN kernel
        zc = current.detach().to("cpu", self.dtype) - self.mean
        n, m = len(self.z), len(zc)
        across = _distances(self.z, self.norms, zc, (zc * zc).sum(dim=-1))
        within = _upper(_squared_distances(zc))
        bandwidth = self._median(torch.cat([across.flatten(), within]))
        scale = -2 * (bandwidth if bandwidth > 0 else torch.ones_like(bandwidth))
        xx = 2 * self._kernel_sum(-scale) / (n * (n - 1))
        yy = 2 * (within / scale).exp_().sum() / (m * (m - 1))
        xy = across.div_(scale).exp_().sum() / (n * m)  # in place: across is not needed again
        return float(xx + yy - 2 * xy)


TERMS = 5
"""Moments per bin of a kept reference's squared distances (orders 0 to 4)."""

BIN_SHARE = 1 / 256
"""A kept reference's bin width, as a share of its median squared distance: at the median heuristic's
bandwidth the series in ``(d - centre) / s`` converges as (1/1024)^k: its remainder after
:data:`TERMS` terms is below 1e-17 relative."""

BINS = 2**16
"""The most bins of a kept reference (wider bins when its distances spread further)."""

BLOCK_ENTRIES = 2**22
"""Pairs of a kept reference computed per block while building it (float64 moments: 32 MB a block)."""


def _upper(d2: torch.Tensor) -> torch.Tensor:
    """The entries above the diagonal of a square matrix, row by row."""
    i, j = torch.triu_indices(len(d2), len(d2), offset=1, device=d2.device)
    return d2[i, j]


def _sorted(t: torch.Tensor) -> torch.Tensor:
    """``t`` (1-D) in ascending order, NaNs last: numpy's sort on the CPU (about 3× torch's there)."""
    if t.device.type == "cpu":
        return torch.from_numpy(np.sort(t.numpy()))
    return t.sort().values


def _merged_lower_median(
    a: torch.Tensor, b: torch.Tensor, offset: int = 0, total: int | None = None
) -> torch.Tensor:
    """The lower median of ``a`` (sorted) and ``b`` (any order) together: ``torch.cat([a, b]).median()``.

    The k-th value of the union lies between ``a[k - len(b)]`` and ``a[k]`` (fewer than k values are
    below it, at least k + 1 at or below it), so only the values of ``b`` in that band are sorted,
    and merged with ``a``'s band by rank. ``a`` may be the ranks ``offset..`` of a sorted whole of
    ``total`` values (every value below ``a[0]`` or above ``a[-1]`` strictly so) that holds both ends
    of the band.

    >>> a, b = torch.tensor([1.0, 2.0, 2.0, 7.0]), torch.tensor([5.0, 0.0, 2.0])
    >>> _merged_lower_median(a, b), torch.cat([a, b]).median()
    (tensor(2.), tensor(2.))
    """
    total = len(a) if total is None else total
    if bool(torch.isnan(b).any()) or (len(a) and bool(torch.isnan(a[-1]))):
        return torch.tensor(float("nan"), dtype=b.dtype, device=b.device)  # as median: NaN in, NaN out
    k = (total + len(b) - 1) // 2
    inf = torch.tensor(float("inf"), dtype=b.dtype, device=b.device)
    low = a[k - len(b) - offset] if k >= len(b) else -inf
    high = a[k - offset] if k < total else inf
    first = int(torch.searchsorted(a, low.reshape(1)))  # values of a below the band
    last = int(torch.searchsorted(a, high.reshape(1), right=True))
    below = b < low
    band = _sorted(b[~below & (b <= high)])
    return _kth_of_two_sorted(a[first:last], band, k - offset - first - int(below.sum()))


def _kth_of_two_sorted(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th (0-based) value of two sorted 1-D tensors together, by bisection on how many of the
    first k + 1 come from ``a`` (about 2 log2(len(a)) element reads, no pass over either).

    >>> _kth_of_two_sorted(torch.tensor([1.0, 2.0, 2.0, 7.0]), torch.tensor([0.0, 2.0, 5.0]), 3)
    tensor(2.)
    """
    lo, hi = max(0, k + 1 - len(b)), min(len(a), k + 1)
    while lo < hi:  # the fewest taken from a such that b's part holds nothing above a[taken]
        taken = (lo + hi) // 2
        rest = k + 1 - taken
        if rest > 0 and bool(b[rest - 1] > a[taken]):
            lo = taken + 1
        else:
            hi = taken
    rest = k + 1 - lo
    if lo == 0:
        return b[rest - 1]
    return a[lo - 1] if rest == 0 else torch.maximum(a[lo - 1], b[rest - 1])


GROUP_SHARE = 0.8
"""The smallest pooled sample of a batched MMD pass, as a share of its largest."""


def _groups(totals: Sequence[int]) -> list[list[int]]:
    """Indices of ``totals`` in groups of similar size (largest first), each group's smallest at
    least :data:`GROUP_SHARE` of its largest, and each group's padded kernels at most
    :data:`PASS_ENTRIES` entries.

    >>> _groups([100, 900, 95, 1000, 300])
    [[3, 1], [4], [0, 2]]
    """
    found: list[list[int]] = []
    for b in sorted(range(len(totals)), key=lambda b: -totals[b]):
        largest = totals[found[-1][0]] if found else 0
        if found and totals[b] >= GROUP_SHARE * largest and (len(found[-1]) + 1) * largest**2 <= PASS_ENTRIES:
            found[-1].append(b)
        else:
            found.append([b])
    return found


PASS_ENTRIES = 2**27
"""The most kernel entries of one batched MMD pass (512 MB in float32): a group of large windows is
split into passes of fewer pairs (a pair larger than this alone takes a pass of its own)."""


def _mmd_padded(
    pairs: list[tuple[torch.Tensor, torch.Tensor]], sides: list[np.ndarray], features: int, dtype: torch.dtype
) -> torch.Tensor:
    """Every permutation's statistic of each pair (rows), the pairs zero-padded to one pooled size."""
    device = pairs[0][0].device
    sizes = [(len(r), len(c)) for r, c in pairs]
    total = max(n + m for n, m in sizes)
    # Padded rows are zero features outside the mask: their kernel entries are never counted.
    z = torch.zeros(len(pairs), total, features, dtype=dtype, device=device)
    valid = torch.zeros(len(pairs), total, dtype=dtype, device=device)
    side = torch.zeros(len(pairs), len(sides[0]), total, dtype=dtype)  # filled on the CPU
    for b, ((reference, current), (n, m)) in enumerate(zip(pairs, sizes)):
        pooled = torch.cat([reference, current]).to(dtype)
        z[b, : n + m, : pooled.shape[1]] = pooled - pooled.mean(dim=0)
        valid[b, : n + m] = 1
        side[b, :, : n + m] = torch.from_numpy(sides[b])
    kernel = _gaussian_kernel_batched(z, [n + m for n, m in sizes])
    side = side.to(device)
    n = torch.tensor([s[0] for s in sizes], dtype=dtype, device=device)[:, None]
    m = torch.tensor([s[1] for s in sizes], dtype=dtype, device=device)[:, None]
    return _mmd2(kernel, side, valid[:, None, :] - side, n, m).cpu()  # one device sync per group


def _float_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is, else float32 (half precision is too coarse for the kernel sums)."""
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)


def _squared_distances(z: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances of the rows of centred ``z`` (..., N, d); the diagonal is 0."""
    norms = (z * z).sum(dim=-1)
    d2 = _distances(z, norms, z, norms)
    d2.diagonal(dim1=-2, dim2=-1).zero_()  # as multiplying by 1 - eye, without the (N, N) identity
    return d2


def _distances(
    a: torch.Tensor, a_norms: torch.Tensor, b: torch.Tensor, b_norms: torch.Tensor
) -> torch.Tensor:
    """Squared distances between the rows of ``a`` (..., n, d) and ``b`` (..., m, d), given their
    squared norms: ``(|a|² + |b|²) - 2 a·b`` clamped at 0, in one fused product-and-add (doubling
    rounds nothing, so the values are those of the expression as written)."""
    return torch.add(
        a_norms[..., :, None] + b_norms[..., None, :], a @ b.transpose(-1, -2), alpha=-2
    ).clamp_min_(0)


def _median_bandwidth(d2: torch.Tensor) -> torch.Tensor:
    """The (lower) median squared distance between distinct rows, or 1 if that is 0."""
    bandwidth = _upper(d2).median()
    return torch.where(bandwidth > 0, bandwidth, torch.ones_like(bandwidth))


def _gaussian_kernel(z: torch.Tensor) -> torch.Tensor:
    d2 = _squared_distances(z)
    return d2.div_(-2 * _median_bandwidth(d2)).exp_()  # exp(-d2 / (2σ²)) in place: the same values


def _gaussian_kernel_batched(z: torch.Tensor, totals: Sequence[int]) -> torch.Tensor:
    """Kernels of zero-padded pooled samples; each bandwidth from its own ``totals[b]`` rows (a selection,
    so exactly the median of the unpadded sample's distances as computed here)."""
    d2 = _squared_distances(z)
    bandwidth = torch.stack([_median_bandwidth(d2[b, :t, :t]) for b, t in enumerate(totals)])
    return d2.div_(-2 * bandwidth[:, None, None]).exp_()  # exp(-d2 / (2σ²)) in place: the same values


def _mmd2(kernel: torch.Tensor, a: torch.Tensor, b: torch.Tensor, n, m) -> torch.Tensor:
    """Unbiased MMD² of every split: rows of ``a`` / ``b`` mark the reference / current side.

    The kernel's diagonal is exactly 1 (distance 0), so leaving out i = j subtracts n (m)."""
    ka, kb = a @ kernel, b @ kernel
    xx = ((ka * a).sum(dim=-1) - n) / (n * (n - 1))
    yy = ((kb * b).sum(dim=-1) - m) / (m * (m - 1))
    xy = (ka * b).sum(dim=-1) / (n * m)
    return xx + yy - 2 * xy


def _mmd_result(statistics: torch.Tensor, permutations: int) -> Result:
    statistics = statistics.cpu()
    tolerance = 100 * torch.finfo(statistics.dtype).eps  # kernel averages are at most 1
    p = _p_value(statistics, tolerance) if permutations else None
    return Result(float(statistics[0]), p)


# -- per-feature tests with analytic p-values ------------------------------------------------------
class KS:
    """Kolmogorov-Smirnov test per feature (``scipy.stats.ks_2samp``, vectorised over features).

    The distance is the largest KS statistic over features; the p-value tests "no feature changed"
    by combining the per-feature p-values: ``bonferroni`` (``min(1, d · min p)``; Holm's method gives
    the same global p-value) or ``fdr_bh`` (Benjamini-Hochberg's smallest adjusted p-value, i.e.
    Simes' test: less conservative when several features move; valid for independent or positively
    dependent features). Evidently's default for tabular columns; Rabanser et al., "Failing
    Loudly", NeurIPS 2019, use it on embeddings.

    Args:
        correction: ``bonferroni`` or ``fdr_bh``.

    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(100, 3, generator=g), torch.randn(100, 3, generator=g)
    >>> y[:, 0] += 1  # one feature shifts
    >>> r = KS().compare(x, y, g)
    >>> round(r.distance, 2), r.p_value < 1e-6
    (0.49, True)
    """

    name = "ks"

    def __init__(self, correction: str = "bonferroni"):
        ConfigError.raise_all([one_of("correction", correction, CORRECTIONS)])
        self.correction = correction

    def compare(self, reference: torch.Tensor, current: torch.Tensor, generator: torch.Generator) -> Result:
        x, y = _to_numpy(self.name, reference, current)
        with warnings.catch_warnings():  # scipy falls back to the asymptotic p-value on ties, and says so
            warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful")
            test = _stats().ks_2samp(x, y, axis=0)
        return Result(float(test.statistic.max()), _combine(test.pvalue, self.correction))


class CvM:
    """Cramér-von Mises test per feature (``scipy.stats.cramervonmises_2samp``, vectorised over features).

    The distance is the largest CvM statistic over features; p-values are combined as in
    :class:`KS` (over all d features; a feature constant in both windows has statistic 0 and p-value
    1). More sensitive than KS to shifts spread over the whole distribution. scipy's
    asymptotic p-value (exact below 20 samples a side) costs about 1 ms per feature: fine for up
    to a few hundred features.

    Args:
        correction: ``bonferroni`` or ``fdr_bh``.

    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(100, 3, generator=g), torch.randn(100, 3, generator=g)
    >>> CvM().compare(x, y + 1, g).p_value < 1e-6
    True
    """

    name = "cvm"

    def __init__(self, correction: str = "bonferroni"):
        ConfigError.raise_all([one_of("correction", correction, CORRECTIONS)])
        self.correction = correction

    def compare(self, reference: torch.Tensor, current: torch.Tensor, generator: torch.Generator) -> Result:
        x, y = _to_numpy(self.name, reference, current)
        statistic, p = np.zeros(x.shape[1]), np.ones(x.shape[1])
        # scipy's statistic on all-tied values is not 0 (p about 0.04): a constant feature never tests
        varies = np.ptp(np.concatenate([x, y]), axis=0) > 0
        if varies.any():
            test = _stats().cramervonmises_2samp(x[:, varies], y[:, varies], axis=0)
            statistic[varies], p[varies] = test.statistic, test.pvalue
        return Result(float(statistic.max()), _combine(p, self.correction))


# -- per-feature distances with permutation p-values -----------------------------------------------
def _cdf_distances(
    x: np.ndarray, y: np.ndarray, permutations: int, generator: torch.Generator, energy: bool
) -> np.ndarray:
    """(1 + permutations,) per-feature 1-D distances, averaged over features: observed, then permuted.

    Both distances integrate the gap between the two empirical CDFs over the pooled sorted values,
    as scipy does: Wasserstein-1 = ∫|F - G|, energy = sqrt(2 ∫ (F - G)²). The rows are permuted
    jointly (all features together), so each split is one relabelling of the pooled rows.
    """
    n, m = len(x), len(y)
    z = np.concatenate([x, y])
    side = _membership(n, n + m, permutations, generator)
    seen = np.arange(1, n + m)  # pooled values at or below each gap
    total = np.zeros(len(side))
    for feature in z.T:
        order = np.argsort(feature, kind="stable")
        gaps = np.diff(feature[order])
        below = np.cumsum(side[:, order], axis=1)[:, :-1]  # reference values at or below each gap
        gap = below / n - (seen - below) / m
        total += np.sqrt(2 * (gap * gap) @ gaps) if energy else np.abs(gap) @ gaps
    return total / z.shape[1]


def _permutation_result(statistics: np.ndarray, permutations: int) -> Result:
    tolerance = 1e-10 * abs(statistics[0])
    return Result(float(statistics[0]), _p_value(statistics, tolerance) if permutations else None)


class Energy:
    """Energy distance per feature (``scipy.stats.energy_distance``), averaged over features.

    Székely and Rizzo's energy statistic in 1-D, ``sqrt(2 ∫ (F - G)²)`` for the windows' empirical
    CDFs F and G (in the features' units). The p-value comes from ``permutations`` random splits
    of the pooled rows (drawn from ``generator``), all scored in one vectorised pass: O(permutations ·
    d · (n + m)) time. Computed as scipy does (equal to its values to rounding).

    Args:
        permutations: random splits for the p-value; 0: no p-value (``p_value`` is None).

    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(100, 3, generator=g), torch.randn(100, 3, generator=g)
    >>> Energy(permutations=100).compare(x, y + 1, g).p_value
    0.009900990099009901
    """

    name = "energy"

    def __init__(self, permutations: int = 200):
        ConfigError.raise_all([_permutations_problem(permutations)])
        self.permutations = permutations

    def compare(self, reference: torch.Tensor, current: torch.Tensor, generator: torch.Generator) -> Result:
        x, y = _to_numpy(self.name, reference, current)
        statistics = _cdf_distances(x, y, self.permutations, generator, energy=True)
        return _permutation_result(statistics, self.permutations)


class Wasserstein:
    """Wasserstein-1 distance per feature (``scipy.stats.wasserstein_distance``), averaged over features.

    The earth mover's distance between the windows' 1-D empirical distributions, ``∫|F - G|`` (in
    the features' units: the mean shift, for a pure shift). The p-value comes from ``permutations``
    random splits of the pooled rows, as for :class:`Energy`.

    Args:
        permutations: random splits for the p-value; 0: no p-value (``p_value`` is None).

    >>> x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    >>> Wasserstein(permutations=0).compare(x, x + 0.5, torch.Generator())
    Result(distance=0.5, p_value=None)
    """

    name = "wasserstein"

    def __init__(self, permutations: int = 200):
        ConfigError.raise_all([_permutations_problem(permutations)])
        self.permutations = permutations

    def compare(self, reference: torch.Tensor, current: torch.Tensor, generator: torch.Generator) -> Result:
        x, y = _to_numpy(self.name, reference, current)
        statistics = _cdf_distances(x, y, self.permutations, generator, energy=False)
        return _permutation_result(statistics, self.permutations)


# -- labels ---------------------------------------------------------------------------------------
class LabelShift:
    """Chi-squared test of label proportions (``scipy.stats.chi2_contingency``), for label shift.

    Compares 1-D integer label tensors: the 2 × C table of counts over the classes seen in either
    window, Pearson's statistic without Yates' correction (for every C alike). The distance is the
    statistic divided by the total count: Cramér's V² (φ²) of the table, from 0 (same proportions)
    to 1 (no class shared), independent of the window sizes. If only one class occurs in both
    windows the distance is 0 and the p-value 1. The chi-squared approximation wants about 5
    expected samples per cell: rare classes make the p-value rough. No permutations.

    >>> before = torch.tensor([0] * 50 + [1] * 50)
    >>> after = torch.tensor([0] * 80 + [1] * 20)
    >>> r = LabelShift().compare(before, after, torch.Generator())
    >>> round(r.distance, 3), r.p_value < 1e-4
    (0.099, True)
    """

    name = "label"
    on_labels = True  # the drift trigger passes labels, not features

    def compare(self, reference: torch.Tensor, current: torch.Tensor, generator: torch.Generator) -> Result:
        _check_sizes(self.name, reference, current, ndim=1)
        if reference.dtype.is_floating_point or current.dtype.is_floating_point:
            raise ValueError(f"label: expects integer labels, got {reference.dtype} and {current.dtype}")
        labels = torch.cat([reference, current]).cpu()
        _, index = torch.unique(labels, return_inverse=True)  # the classes seen, none with 0 counts
        classes = int(index.max()) + 1
        if classes == 1:
            return Result(0.0, 1.0)
        sides = (index[: len(reference)], index[len(reference) :])
        table = np.stack([torch.bincount(side, minlength=classes).numpy() for side in sides])
        test = _stats().chi2_contingency(table, correction=False)
        return Result(float(test.statistic / table.sum()), float(test.pvalue))


# -- names --------------------------------------------------------------------------------------
DETECTORS: dict[str, type] = {
    "mmd": MMD,
    "ks": KS,
    "cvm": CvM,
    "energy": Energy,
    "wasserstein": Wasserstein,
    "label": LabelShift,
}


def make_detector(name: str, **options: object) -> Detector:
    """The detector called ``name`` in configs, built with ``options``.

    >>> make_detector("ks", correction="fdr_bh").correction
    'fdr_bh'
    """
    if name not in DETECTORS:
        raise ConfigError([Problem("detector", name, "one of " + ", ".join(DETECTORS))])
    return DETECTORS[name](**options)


def _stats():
    """``scipy.stats``, imported when a test first runs: importing it takes about a second, which every
    command would otherwise pay at start."""
    from scipy import stats

    return stats
