"""Class-balanced selection: equal shares of every class, and the water-filling draw it shares with
:mod:`ctsim.selection.trigger_balanced`."""

from __future__ import annotations

import torch

from ctsim.selection.base import Presampler, SelectionContext, uniform
from ctsim.validation import ConfigError, one_of

OF = ["seen", "interval"]


def water_fill(sizes: list[int], k: int, generator: torch.Generator) -> list[int]:
    """How many samples to take from groups of the given ``sizes``, ``k`` in all (``k ≤ sum(sizes)``).

    ``k`` is split equally; a group smaller than its share gives all it has and the rest goes to the
    others. The shares of the groups that are not exhausted differ by at most one: the odd samples go
    to groups drawn at random.

    >>> water_fill([10, 2, 10], 12, torch.Generator().manual_seed(0))
    [5, 2, 5]
    >>> sum(water_fill([10, 10, 10], 10, torch.Generator().manual_seed(0)))
    10
    """
    quota = [0] * len(sizes)
    open_ = [g for g, n in enumerate(sizes) if n > 0]
    left = k
    while left > 0 and open_:
        share = left // len(open_)
        if share == 0:  # fewer samples left than groups: one more each for `left` random groups
            for i in torch.randperm(len(open_), generator=generator)[:left].tolist():
                quota[open_[i]] += 1
            break
        for g in open_:
            take = min(share, sizes[g] - quota[g])
            quota[g] += take
            left -= take
        open_ = [g for g in open_ if quota[g] < sizes[g]]
    return quota


def draw_balanced(
    pool: torch.Tensor, groups: torch.Tensor, k: int | None, generator: torch.Generator
) -> torch.Tensor:
    """``k`` keys of ``pool`` water-filled over its groups (``groups[i]`` is the group of ``pool[i]``),
    drawn uniformly within each group, in pool order. ``k=None``: every group cut to the smallest.

    >>> g = torch.Generator().manual_seed(0)
    >>> draw_balanced(torch.arange(10, 16), torch.tensor([0, 0, 0, 0, 1, 1]), None, g).tolist()
    [10, 11, 14, 15]
    """
    if len(pool) == 0:
        return pool.clone()
    ids, counts = groups.unique(return_counts=True)
    if k is None:
        k = int(counts.min()) * len(ids)
    quotas = water_fill(counts.tolist(), k, generator)
    members = [(groups == g).nonzero().squeeze(1) for g in ids]
    chosen = torch.cat([uniform(m, q, generator) for m, q in zip(members, quotas)])
    return pool[chosen.sort().values]


class ClassBalanced(Presampler):
    """Equal shares of every class present in the pool, against the class imbalance of the stream.

    Modyn's ``LabelBalancedPresamplingStrategy``; class-balanced reservoir selection as in CBRS
    (Chrysakis & Moens, 2020) and GDumb (Prabhu et al., 2020). Labels come from ``ctx.stream.y``.

    With a budget of ``k`` samples, each class present gets ``k / classes``; a class with fewer
    samples gives all it has and the rest goes to the others (water-filling). Without a budget,
    every class is cut to the size of the smallest one (perfect balance). Balance is over the classes
    *present*: a pool of one class gives that class's samples (within the budget). Draws within a
    class are uniform.

    Args:
        of: the pool, ``"seen"`` (all data seen) or ``"interval"`` (data since the last trigger).
        limit, fraction, downsample: the budget and downsampler (see
            :class:`~ctsim.selection.base.Presampler`).

    >>> from ctsim.selection.base import context_from_intervals
    >>> from ctsim.stream import toy_stream
    >>> stream = toy_stream([12])
    >>> stream.y.tolist()
    [0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0]
    >>> ctx = context_from_intervals([list(range(12))], stream=stream)
    >>> keys = ClassBalanced(limit=4).select(ctx).keys
    >>> keys.tolist(), stream.y[keys].tolist()
    ([0, 6, 8, 10], [0, 0, 1, 1])
    >>> stream.y[ClassBalanced().select(ctx).keys].bincount().tolist()  # no budget: as many as the rarest
    [4, 4]
    """

    def __init__(
        self, of: str = "seen", limit: int | None = None, fraction: float | None = None, downsample=None
    ):
        ConfigError.raise_all([one_of("of", of, OF)])
        super().__init__(limit, fraction, downsample)
        self.of = of

    def pool(self, ctx: SelectionContext) -> torch.Tensor:
        pool = ctx.seen if self.of == "seen" else ctx.since_trigger
        if self.limit is None and self.fraction is None:
            return draw_balanced(pool, _labels(pool, ctx), None, ctx.generator)
        return pool

    def choose(self, pool: torch.Tensor, k: int, ctx: SelectionContext) -> torch.Tensor:
        return draw_balanced(pool, _labels(pool, ctx), k, ctx.generator)


def _labels(keys: torch.Tensor, ctx: SelectionContext) -> torch.Tensor:
    if ctx.stream is None:
        raise ValueError("ClassBalanced needs the labels of the stream: the SelectionContext has no stream")
    return ctx.stream.y[keys]
