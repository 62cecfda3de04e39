"""The selection contract: at each trigger, choose the keys (and optional weights) to train on.

A policy sees a narrow context: the keys seen so far, the keys of the current trigger interval and
of each earlier one, a seeded generator for random choices, and the stream (each key's label, time
and slice). It returns sample keys; it never touches the input tensors or the model.

Selection runs in two stages, as in Modyn:

1. **Presampling** (:class:`Presampler`): the policy's *pool* (new data, all data, a window, a
   reservoir, ...), cut to its *budget*: ``limit`` samples or a ``fraction`` of the pool. No model.
2. **Downsampling** (optional, ``downsample``; :mod:`ctsim.selection.downsample`): a score from the
   model about to be trained keeps the most informative part of the candidates, before training
   (sample-then-batch) or inside every training step (batch-then-sample); or RS2 trains each epoch
   on a fresh random subset.

**The contract.** A selection policy is any class with ``select(ctx) -> Selection``
(:class:`SelectionPolicy`), and optionally a ``downsample`` attribute
(:class:`~ctsim.selection.downsample.Downsampled`: None, a
:class:`~ctsim.selection.downsample.ScoreDownsampler` or :class:`~ctsim.selection.downsample.RS2`). A
:class:`Presampler` subclass gives ``pool(ctx)`` and may give ``choose(pool, k, ctx)``; it gets
``select``, the budget and ``downsample`` from :class:`Presampler`. A run checks a policy's class at
start-up (:func:`selection_problems`), before any data is loaded: a missing method, one named almost
like a declared one (``pools``, ``selct``) or one that cannot take the declared arguments is a one-line
error naming the class and the method.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from ctsim.engine.base import BatchThenSample, EpochSubset, share
from ctsim.validation import ConfigError, Problem, check, contract_problems, is_int, is_number

if TYPE_CHECKING:
    from ctsim.stream import Stream


@dataclass(frozen=True)
class SelectionContext:
    """What a selection policy may look at when a trigger fires.

    ``since_trigger`` holds the keys that arrived since the previous trigger (this batch included);
    ``earlier`` the keys of each earlier trigger interval, oldest first. Together they make ``seen``,
    in arrival order. ``stream`` (None where a caller has keys only) gives each key's label
    (``stream.y``), time and slice.
    """

    seen: torch.Tensor
    since_trigger: torch.Tensor
    earlier: tuple[torch.Tensor, ...]
    generator: torch.Generator
    stream: Stream | None = None


@dataclass(frozen=True)
class Selection:
    """The training set of one generation: sample keys, and per-sample loss weights (None = equal).

    ``batch_then_sample`` and ``epoch_subset`` tell the engine to downsample while it trains (see
    :mod:`ctsim.selection.downsample`); ``scored`` counts the samples scored before training.
    """

    keys: torch.Tensor
    weights: torch.Tensor | None = None
    batch_then_sample: BatchThenSample | None = None
    epoch_subset: EpochSubset | None = None
    scored: int = 0


@runtime_checkable
class SelectionPolicy(Protocol):
    """Chooses the training set of the next model generation."""

    @abstractmethod
    def select(self, ctx: SelectionContext) -> Selection:
        """The training set of the next generation: keys, and optional weights."""
        ...


class _Pools(Protocol):
    @abstractmethod
    def pool(self, ctx: SelectionContext) -> torch.Tensor:
        """The keys to choose from: the policy's pool, before its budget."""
        ...


class _Chooses(Protocol):
    @abstractmethod
    def choose(self, pool: torch.Tensor, k: int, ctx: SelectionContext) -> torch.Tensor:
        """k keys of the pool, where the budget is not a uniform draw."""
        ...


def selection_problems(cls: type, key: str = "selection._target_") -> list[Problem]:
    """What keeps the class ``cls`` from serving as a selection policy (see the module docstring).

    >>> class Newest(Presampler):
    ...     def pools(self, ctx):
    ...         return ctx.since_trigger
    >>> print(selection_problems(Newest)[0].text)  # doctest: +ELLIPSIS
    ctsim.selection.base.Newest has no method pool(ctx) but has pools: rename pools to pool (...)
    """
    if issubclass(cls, Presampler):
        bases = (Presampler, SelectionPolicy)
        return contract_problems(cls, key, "presampler", [SelectionPolicy, _Pools], [_Chooses], bases)
    return contract_problems(cls, key, "selection policy", [SelectionPolicy], [], (SelectionPolicy,))


def fraction_problem(fraction: object, optional: bool = False) -> Problem | None:
    """A share of samples is a number in (0, 1] (or null, where ``optional``)."""
    ok = (optional and fraction is None) or (is_number(fraction) and 0 < fraction <= 1)
    return check("fraction", fraction, ok, ("null or " if optional else "") + "a number in (0, 1]")


def budget_problems(limit: object, fraction: object) -> list[Problem | None]:
    """A budget is a sample ``limit`` (an integer ≥ 1) or a ``fraction`` in (0, 1], not both."""
    return [
        check("limit", limit, limit is None or (is_int(limit) and limit >= 1), "null or an integer ≥ 1"),
        fraction_problem(fraction, optional=True),
        check("limit", limit, limit is None or fraction is None, "not both a limit and a fraction"),
    ]


def budget(n: int, limit: int | None, fraction: float | None) -> int:
    """How many of a pool of ``n`` samples a budget keeps: ``limit``, or ``fraction × n`` rounded up.

    >>> budget(10, None, None), budget(10, 4, None), budget(10, 40, None), budget(10, None, 0.25)
    (10, 4, 10, 3)
    """
    if limit is not None:
        return min(n, limit)
    if fraction is not None:
        return share(n, fraction)
    return n


def uniform(pool: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` keys of ``pool`` drawn uniformly without replacement, in pool order.

    >>> uniform(torch.arange(10, 20), 3, torch.Generator().manual_seed(0)).tolist()
    [11, 14, 17]
    """
    if k >= len(pool):
        return pool.clone()
    chosen = torch.randperm(len(pool), generator=generator)[:k]
    return pool[chosen.sort().values]


class Presampler:
    """A presampling policy: a pool of keys, cut to a budget, then an optional downsampler.

    Subclasses give :meth:`pool`; they override :meth:`choose` where the budget is not a uniform draw
    (balanced and freshness policies). That is the whole contract of a subclass, checked at start-up
    (:func:`selection_problems`).

    Args:
        limit: keep at most this many samples of the pool.
        fraction: keep this fraction of the pool, rounded up.
        downsample: a score-based downsampler or RS2 (:mod:`ctsim.selection.downsample`), or None.
    """

    def __init__(self, limit: int | None = None, fraction: float | None = None, downsample=None):
        ConfigError.raise_all(budget_problems(limit, fraction))
        self.limit, self.fraction, self.downsample = limit, fraction, downsample

    @abstractmethod
    def pool(self, ctx: SelectionContext) -> torch.Tensor:
        """The keys to choose from: every subclass gives its own."""
        raise NotImplementedError

    def choose(self, pool: torch.Tensor, k: int, ctx: SelectionContext) -> torch.Tensor:
        """``k`` keys of ``pool`` (``k < len(pool)``): a uniform draw unless a policy says otherwise."""
        return uniform(pool, k, ctx.generator)

    def select(self, ctx: SelectionContext) -> Selection:
        pool = self.pool(ctx)
        k = budget(len(pool), self.limit, self.fraction)
        return Selection(keys=pool.clone() if k >= len(pool) else self.choose(pool, k, ctx))


def context_from_intervals(intervals: list[list[int]], seed: int = 0, stream=None) -> SelectionContext:
    """A context whose trigger intervals hold the given keys (the last is the current one).

    >>> ctx = context_from_intervals([[0, 1], [2], [3, 4]])
    >>> ctx.seen.tolist(), ctx.since_trigger.tolist(), [e.tolist() for e in ctx.earlier]
    ([0, 1, 2, 3, 4], [3, 4], [[0, 1], [2]])
    """
    tensors = [torch.tensor(i, dtype=torch.long) for i in intervals]
    return SelectionContext(
        seen=torch.cat(tensors),
        since_trigger=tensors[-1],
        earlier=tuple(tensors[:-1]),
        generator=torch.Generator().manual_seed(seed),
        stream=stream,
    )
