"""Presampling policies, from the user's side: budgets, balance, reservoir statistics, windows, freshness."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import pytest
import torch
from scipy import stats

from ctsim.datasets.base import Samples
from ctsim.selection import (
    AllData,
    ClassBalanced,
    Freshness,
    NewData,
    Reservoir,
    TriggerBalanced,
    Uniform,
    Window,
)
from ctsim.selection.balanced import water_fill
from ctsim.selection.base import budget, context_from_intervals
from ctsim.stream import Stream, toy_stream
from ctsim.validation import ConfigError


def labelled(labels: list[int], slices: list[int] | None = None) -> Stream:
    """A stream whose key ``k`` has label ``labels[k]`` and slice ``slices[k]``, arriving in key order."""
    y = torch.tensor(labels)
    n = len(y)
    s = torch.zeros(n, dtype=torch.long) if slices is None else torch.tensor(slices)
    samples = Samples(
        x=torch.zeros(n, 1),
        y=y,
        time=s.double() + torch.arange(n).double() / n,
        slice=s,
        slice_labels=[f"s{i}" for i in range(int(s.max()) + 1)],
        num_classes=max(2, int(y.max()) + 1),
        change_points=[],
    )
    return Stream(samples, test_fraction=0.0)


def consecutive(sizes: list[int], seed: int = 0, stream: Stream | None = None):
    """A context whose trigger intervals hold ``sizes[i]`` consecutive keys each, from key 0."""
    bounds = [0, *torch.tensor(sizes).cumsum(0).tolist()]
    return context_from_intervals([list(range(a, b)) for a, b in pairwise(bounds)], seed, stream)


SIZES = [20, 30, 25]  # three trigger intervals, one per slice of STREAM
STREAM = toy_stream(SIZES)


def ctx(seed: int = 0):
    return consecutive(SIZES, seed, STREAM)


# every policy with a budget: (make, its pool size on ctx(), whether its choice is random)
BUDGETED = [
    pytest.param(lambda **b: NewData(**b), 25, True, id="new"),
    pytest.param(lambda **b: NewData(tail=1, **b), 55, True, id="new-tail"),
    pytest.param(lambda **b: AllData(**b), 75, True, id="all"),
    pytest.param(lambda **b: Uniform(**b), 75, True, id="uniform"),
    pytest.param(lambda **b: Uniform(of="interval", **b), 25, True, id="uniform-interval"),
    pytest.param(lambda **b: Reservoir(size=40, **b), 40, True, id="reservoir"),
    pytest.param(lambda **b: ClassBalanced(**b), 75, True, id="class"),
    pytest.param(lambda **b: ClassBalanced(of="interval", **b), 25, True, id="class-interval"),
    pytest.param(lambda **b: TriggerBalanced(**b), 75, True, id="trigger"),
    pytest.param(lambda **b: Freshness(**b), 75, False, id="freshness"),
    pytest.param(lambda **b: Freshness(mix=0.4, **b), 75, True, id="freshness-mix"),
    pytest.param(lambda **b: Window(size=2, **b), 55, True, id="window"),
    pytest.param(lambda **b: Window(size=1.5, unit="time", **b), 38, True, id="window-time"),
    pytest.param(lambda **b: Window(size=33, unit="samples", **b), 33, True, id="window-samples"),
]


@pytest.mark.parametrize("make,pool,random", BUDGETED)
@pytest.mark.parametrize("limit,fraction", [(7, None), (1, None), (None, 0.3), (None, 1.0), (500, None)])
def test_a_budget_gives_its_size_of_distinct_seen_keys_in_arrival_order(make, pool, random, limit, fraction):
    keys = make(limit=limit, fraction=fraction).select(ctx()).keys
    assert len(keys) == budget(pool, limit, fraction)
    assert keys.dtype == torch.long
    assert bool((keys[1:] > keys[:-1]).all())  # arrival order (keys arrive in key order), no key twice
    assert set(keys.tolist()) <= set(range(75))


@pytest.mark.parametrize("make,pool,random", BUDGETED)
def test_deterministic_per_seed_and_varies_across_seeds(make, pool, random):
    assert torch.equal(make(limit=10).select(ctx(3)).keys, make(limit=10).select(ctx(3)).keys)
    choices = {tuple(make(limit=10).select(ctx(seed)).keys.tolist()) for seed in range(5)}
    assert len(choices) == (5 if random else 1)


def test_without_a_budget_new_and_all_are_unchanged():
    assert NewData(tail=1).select(ctx()).keys.tolist() == list(range(20, 75))
    assert AllData().select(ctx()).keys.tolist() == list(range(75))


# --- class balance -------------------------------------------------------------------------------


def test_class_balanced_takes_equal_shares_when_every_class_can_pay():
    stream = labelled([0, 1, 2] * 20)
    for k in (3, 12, 30, 60):
        keys = ClassBalanced(limit=k).select(context_from_intervals([list(range(60))], 0, stream)).keys
        assert torch.bincount(stream.y[keys], minlength=3).tolist() == [k // 3] * 3


def test_class_balanced_water_fills_around_a_rare_class():
    stream = labelled([0] * 3 + [1] * 20 + [2] * 20)
    context = context_from_intervals([list(range(43))], 0, stream)
    counts = torch.bincount(stream.y[ClassBalanced(limit=15).select(context).keys], minlength=3)
    assert counts.tolist() == [3, 6, 6]
    for seed in range(5):
        context = context_from_intervals([list(range(43))], seed, stream)
        counts = torch.bincount(stream.y[ClassBalanced(limit=16).select(context).keys], minlength=3)
        assert counts[0] == 3 and counts.sum() == 16 and abs(int(counts[1] - counts[2])) == 1


def test_class_balanced_without_a_budget_cuts_every_class_to_the_rarest():
    stream = labelled([1] * 9 + [0] * 4 + [2] * 7)
    keys = ClassBalanced().select(context_from_intervals([list(range(20))], 0, stream)).keys
    assert torch.bincount(stream.y[keys], minlength=3).tolist() == [4, 4, 4]


def test_class_balanced_balances_over_the_classes_present_only():
    one_class = labelled([1] * 10)
    context = context_from_intervals([list(range(10))], 0, one_class)
    assert ClassBalanced().select(context).keys.tolist() == list(range(10))
    assert len(ClassBalanced(limit=4).select(context).keys) == 4
    two_of_three = labelled([0] * 10 + [2] * 10)  # class 1 absent: no share held back for it
    context = context_from_intervals([list(range(20))], 0, two_of_three)
    assert torch.bincount(two_of_three.y[ClassBalanced(limit=10).select(context).keys]).tolist() == [5, 0, 5]


def test_class_balanced_of_interval_balances_the_current_interval_only():
    stream = labelled([0] * 10 + [0, 1] * 10)
    context = context_from_intervals([list(range(10)), list(range(10, 30))], 0, stream)
    keys = ClassBalanced(of="interval", limit=8).select(context).keys
    assert keys.min() >= 10 and torch.bincount(stream.y[keys]).tolist() == [4, 4]


def test_class_balanced_draws_uniformly_within_a_class():
    stream = labelled([0] * 5 + [1] * 20)
    hits = torch.zeros(25)
    for seed in range(400):
        keys = ClassBalanced(limit=10).select(context_from_intervals([list(range(25))], seed, stream)).keys
        hits[keys] += 1
    assert hits[:5].tolist() == [400] * 5  # the rare class is taken whole
    assert stats.chisquare(hits[5:].numpy()).pvalue > 1e-3  # 5 of 20: each about 100 times


def test_class_balanced_needs_the_stream():
    with pytest.raises(ValueError, match="no stream"):
        ClassBalanced(limit=4).select(consecutive([10]))


# --- trigger balance -----------------------------------------------------------------------------


def _per_interval(keys, sizes):
    bounds = torch.tensor(sizes).cumsum(0)
    return torch.bincount(torch.bucketize(keys, bounds, right=True), minlength=len(sizes)).tolist()


def test_trigger_balanced_water_fills_over_intervals():
    sizes = [10, 2, 30, 8]
    assert _per_interval(TriggerBalanced(limit=8).select(consecutive(sizes)).keys, sizes) == [2, 2, 2, 2]
    assert _per_interval(TriggerBalanced(limit=20).select(consecutive(sizes)).keys, sizes) == [6, 2, 6, 6]
    assert _per_interval(TriggerBalanced(limit=32).select(consecutive(sizes)).keys, sizes) == [10, 2, 12, 8]
    for seed in range(5):
        counts = _per_interval(TriggerBalanced(limit=9).select(consecutive(sizes, seed)).keys, sizes)
        assert counts[1] == 2 and sum(counts) == 9 and sorted(counts) == [2, 2, 2, 3]


def test_trigger_balanced_without_a_budget_cuts_every_interval_to_the_smallest():
    sizes = [10, 3, 30, 8]
    assert _per_interval(TriggerBalanced().select(consecutive(sizes)).keys, sizes) == [3, 3, 3, 3]
    assert TriggerBalanced().select(consecutive([5])).keys.tolist() == list(range(5))


@pytest.mark.parametrize("seed", range(30))
def test_water_fill_is_max_min_fair(seed):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(0, 12, (int(torch.randint(1, 7, (1,), generator=g)),), generator=g).tolist()
    k = int(torch.randint(0, sum(sizes) + 1, (1,), generator=g))
    quota = water_fill(sizes, k, g)
    assert sum(quota) == k and all(0 <= q <= n for q, n in zip(quota, sizes))
    # a group that could give more never gives two less than another
    assert all(q >= max(quota) - 1 for q, n in zip(quota, sizes) if q < n)


# --- reservoir -----------------------------------------------------------------------------------

N, SIZE, SEEDS = 50, 10, 2000


def _inclusions(intervals_of_n: list[list[int]]) -> torch.Tensor:
    """How often each of N keys is in a size-SIZE reservoir, over SEEDS seeds, the keys arriving over
    one select call per entry of ``intervals_of_n``."""
    hits = torch.zeros(N)
    for seed in range(SEEDS):
        reservoir = Reservoir(size=SIZE)
        g = torch.Generator().manual_seed(seed)
        for i in range(1, len(intervals_of_n) + 1):
            keys = reservoir.select(replace(context_from_intervals(intervals_of_n[:i]), generator=g)).keys
        assert len(keys) == SIZE
        hits[keys] += 1
    return hits


def _assert_binomial(hits: torch.Tensor) -> None:
    # every key is kept with probability SIZE / N; bounds at 1e-4 / N per key (Bonferroni)
    lo, hi = stats.binom.interval(1 - 1e-4 / N, SEEDS, SIZE / N)
    assert lo <= hits.min() and hits.max() <= hi, (hits.min(), hits.max(), lo, hi)


def test_reservoir_keeps_every_key_with_probability_size_over_n():
    _assert_binomial(_inclusions([list(range(N))]))


def test_reservoir_fed_over_several_calls_has_the_same_distribution():
    one = _inclusions([list(range(N))])
    several = _inclusions([list(range(0, 4)), list(range(4, 23)), list(range(23, 24)), list(range(24, N))])
    _assert_binomial(several)
    assert stats.chi2_contingency(torch.stack([one, several]).numpy()).pvalue > 1e-3


def test_reservoir_holds_everything_until_full_and_keeps_its_size():
    reservoir = Reservoir(size=30)
    assert reservoir.select(consecutive([10, 15])).keys.tolist() == list(range(25))
    keys = reservoir.select(consecutive([10, 15, 40])).keys
    assert len(keys) == 30 and bool((keys[1:] > keys[:-1]).all())


def test_reservoir_refuses_a_context_shorter_than_what_it_processed():
    reservoir = Reservoir(size=5)
    reservoir.select(consecutive([20]))
    with pytest.raises(ValueError, match="fresh Reservoir"):
        reservoir.select(consecutive([10]))


# --- window --------------------------------------------------------------------------------------

WINDOW_STREAM = labelled([0, 1] * 30, [0] * 10 + [1] * 5 + [2] * 20 + [3] * 10 + [4] * 15)


@pytest.mark.parametrize("seen", [60, 45, 40, 12, 1])
@pytest.mark.parametrize("size", [1, 2, 3, 10])
def test_window_holds_exactly_the_last_slices(seen, size):
    context = context_from_intervals([list(range(seen))], 0, WINDOW_STREAM)
    keys = set(Window(size=size).select(context).keys.tolist())
    newest = int(WINDOW_STREAM.slice[seen - 1])
    assert keys == {k for k in range(seen) if newest - size < int(WINDOW_STREAM.slice[k]) <= newest}


@pytest.mark.parametrize("size", [0.25, 1, 2.5, 100])
def test_window_in_time_holds_exactly_the_last_stretch(size):
    context = context_from_intervals([list(range(50))], 0, WINDOW_STREAM)
    keys = Window(size=size, unit="time").select(context).keys
    t = WINDOW_STREAM.time
    assert set(keys.tolist()) == {k for k in range(50) if t[k] > t[49] - size}
    assert 49 in keys.tolist()


def test_window_in_samples_is_the_last_arrivals_and_needs_no_stream():
    assert Window(size=4, unit="samples").select(consecutive([3, 5])).keys.tolist() == [4, 5, 6, 7]
    assert Window(size=40, unit="samples").select(consecutive([3, 5])).keys.tolist() == list(range(8))


@pytest.mark.parametrize("unit", ["slices", "time"])
def test_window_needs_the_stream_for_slices_and_time(unit):
    with pytest.raises(ValueError, match="needs the stream"):
        Window(size=2, unit=unit).select(consecutive([3, 5]))


# --- freshness -----------------------------------------------------------------------------------


def test_freshness_keeps_the_newest():
    assert Freshness(limit=6).select(ctx()).keys.tolist() == list(range(69, 75))
    assert Freshness(fraction=0.1).select(ctx()).keys.tolist() == list(range(67, 75))


@pytest.mark.parametrize(
    "sizes,mix,limit,new",
    [
        ([50, 25], 0.3, 10, 3),  # ceil(0.3 · 10) = 3, not 4 (0.3 · 10 is 3.0000000000000004)
        ([50, 25], 0.5, 9, 5),
        ([50, 2], 0.5, 10, 2),  # the current interval is short: the rest is replayed
        ([3, 40], 0.1, 10, 7),  # old data is short: the rest is new
    ],
)
def test_freshness_mix_takes_its_share_from_the_current_interval(sizes, mix, limit, new):
    for seed in range(3):
        keys = Freshness(mix=mix, limit=limit).select(consecutive(sizes, seed)).keys
        assert len(keys) == limit and int((keys >= sizes[0]).sum()) == new


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: Uniform(fraction=0), r"fraction=0: expected null or a number in \(0, 1\]"),
        (lambda: AllData(fraction=1.5), r"fraction=1.5: expected null or a number in \(0, 1\]"),
        (lambda: NewData(limit=0), r"limit=0: expected null or an integer ≥ 1"),
        (lambda: Uniform(of="all", limit=3), r"of='all': expected one of \['seen', 'interval'\]"),
        (lambda: ClassBalanced(of="new"), r"of='new': expected one of"),
        (lambda: Reservoir(size=0), r"size=0: expected an integer ≥ 1"),
        (lambda: Reservoir(size=2.5), r"size=2.5: expected an integer ≥ 1"),
        (lambda: Window(size=0), r"size=0: expected an integer ≥ 1"),
        (lambda: Window(size=1.5, unit="slices"), r"size=1.5: expected an integer ≥ 1"),
        (lambda: Window(size=-1.0, unit="time"), r"size=-1.0: expected a number > 0"),
        (lambda: Window(unit="days"), r"unit='days': expected one of \['slices', 'time', 'samples'\]"),
        (lambda: Freshness(mix=1, limit=5), r"mix=1: expected null or a number in \(0, 1\)"),
        (lambda: Freshness(mix=0.0, limit=5), r"mix=0.0: expected null or a number in \(0, 1\)"),
    ],
)
def test_bad_settings_are_named(make, match):
    with pytest.raises(ConfigError, match=match):
        make()
