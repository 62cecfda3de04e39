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
error naming the class and the method. What ``select`` returns is checked at every call
(:func:`select`): a :class:`Selection` whose keys are a ``torch.long`` tensor of its own, each a key
seen so far and each once, and whose weights are None or one finite number ≥ 0 per key. Once the data
is loaded, before any training, a copy of the policy selects from the first arrival batch
(:func:`first_selection_problems`), so most mistakes stop the run before its folder holds anything.
"""

from __future__ import annotations

import copy
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


def select(policy: SelectionPolicy, ctx: SelectionContext) -> Selection:
    """``policy.select(ctx)``, checked against the contract: a ConfigError names the class otherwise.

    >>> class Twice:
    ...     def select(self, ctx):
    ...         return Selection(keys=torch.cat([ctx.seen, ctx.seen]))
    >>> select(Twice(), context_from_intervals([[0, 1], [2]]))
    Traceback (most recent call last):
    ...
    ctsim.validation.ConfigError: invalid config:
      selection._target_: ctsim.selection.base.Twice.select returned keys with 0 twice: expected each key once
    """
    chosen = policy.select(ctx)
    ConfigError.raise_all([returned_problem(policy, chosen, ctx)])
    return chosen


def returned_problem(policy: object, chosen: object, ctx: SelectionContext) -> Problem | None:
    """What in ``chosen``, the policy's answer at ``ctx``, breaks the contract (the module docstring)."""
    why = _wrong_selection(chosen, ctx)
    if why is None:
        return None
    name = f"{type(policy).__module__}.{type(policy).__qualname__}"
    return Problem("selection._target_", name, "", text=f"{name}.select returned {why}")


def _wrong_selection(chosen: object, ctx: SelectionContext) -> str | None:
    if not isinstance(chosen, Selection):
        return (
            f"a {type(chosen).__name__}: expected a ctsim.selection.Selection(keys, weights), e.g. "
            "Selection(keys=ctx.since_trigger.clone())"
        )
    keys, weights = chosen.keys, chosen.weights
    if not isinstance(keys, torch.Tensor) or keys.dtype != torch.long or keys.dim() != 1:
        return f"keys as {_shown(keys)}: expected a 1-d torch.long tensor (the keys of ctx.seen are one)"
    context = [ctx.seen, ctx.since_trigger, *ctx.earlier]
    context += [ctx.stream.arrival_order] if ctx.stream is not None else []
    storages = {t.untyped_storage().data_ptr() for t in context if t.numel()}
    if keys.numel() and keys.untyped_storage().data_ptr() in storages:
        return "keys that share memory with the context's (a view): expected a tensor of its own (.clone())"
    unseen = keys[~torch.isin(keys, ctx.seen)]
    if len(unseen):
        return f"keys not seen yet, e.g. {unseen[:3].tolist()}: expected keys of ctx.seen (the data arrived)"
    ordered = keys.sort().values
    twice = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(twice):
        return f"keys with {twice[0].item()} twice: expected each key once"
    if weights is not None and (
        not isinstance(weights, torch.Tensor)
        or not weights.is_floating_point()
        or weights.shape != keys.shape
        or not bool(torch.isfinite(weights).all() and (weights >= 0).all())
    ):
        return (
            f"weights as {_shown(weights)} for {len(keys)} keys: expected None or a float tensor of one "
            "finite weight ≥ 0 per key"
        )
    return None


def _shown(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def first_selection_problems(policy: SelectionPolicy, stream: Stream, seed: int = 0) -> list[Problem]:
    """What a copy of ``policy`` returns, had a trigger fired on the stream's first arrival batch, that
    breaks the contract (:func:`select`): checked before any training, so a mistake stops the run
    before its folder holds anything. The policy itself, and torch's random stream, are left as they
    were; a copy that cannot be made, or a ``select`` that raises, is left to the run.

    >>> from ctsim.stream import toy_stream
    >>> class Floats:
    ...     def select(self, ctx):
    ...         return Selection(keys=ctx.seen.float())
    >>> print(first_selection_problems(Floats(), toy_stream([2, 2]))[0])  # doctest: +ELLIPSIS
    selection._target_: ctsim.selection.base.Floats.select returned keys as a torch.float32 tensor ...
    """
    seen = stream.arrival_order[: stream.batches[0].stop]
    ctx = SelectionContext(seen, seen, (), torch.Generator().manual_seed(seed), stream)
    with torch.random.fork_rng(devices=[]):
        try:
            probe = copy.deepcopy(policy)
            chosen = probe.select(ctx)
        except Exception:  # the run calls select and shows the error in full
            return []
    problem = returned_problem(policy, chosen, ctx)
    return [] if problem is None else [problem]


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
