"""Reservoir selection: a fixed-size uniform sample of the whole stream, kept with Algorithm R."""

from __future__ import annotations

import torch

from ctsim.selection.base import Presampler, SelectionContext
from ctsim.validation import ConfigError, positive_int


class Reservoir(Presampler):
    """A memory of ``size`` keys that is, at every trigger, a uniform sample of all the keys seen.

    Vitter's Algorithm R (1985), the replay buffer of reservoir-sampling rehearsal (Chaudhry et al.,
    "On Tiny Episodic Memories in Continual Learning", 2019). At each :meth:`select`, the keys that
    arrived since the last call go through the reservoir in arrival order: the first ``size`` fill it;
    the ``i``-th key (counting from 0) then replaces a random slot with probability ``size / (i + 1)``.
    The pool is the reservoir, in arrival order. Random draws come from the pipeline's generator.

    The memory lives in the policy: use one instance per replay (a resumed run replays the stream
    from the start, so its reservoir is rebuilt as it was).

    Args:
        size: how many keys the reservoir holds.
        limit, fraction, downsample: the budget and downsampler (see
            :class:`~ctsim.selection.base.Presampler`).

    >>> from ctsim.selection.base import context_from_intervals
    >>> reservoir = Reservoir(size=3)
    >>> reservoir.select(context_from_intervals([[0, 1], [2, 3, 4, 5]])).keys.tolist()
    [0, 1, 5]
    >>> reservoir.count  # keys offered so far
    6
    """

    def __init__(
        self, size: int = 1000, limit: int | None = None, fraction: float | None = None, downsample=None
    ):
        ConfigError.raise_all([positive_int("size", size)])
        super().__init__(limit, fraction, downsample)
        self.size = size
        self.keys = torch.empty(0, dtype=torch.long)
        self.count = 0  # keys of ctx.seen already offered to the reservoir

    def pool(self, ctx: SelectionContext) -> torch.Tensor:
        if len(ctx.seen) < self.count:
            raise ValueError(
                f"Reservoir has processed {self.count} keys but the context has seen {len(ctx.seen)}: "
                "use a fresh Reservoir for each replay"
            )
        self._offer(ctx.seen[self.count :], ctx.generator)
        return ctx.seen[torch.isin(ctx.seen, self.keys)]

    def _offer(self, new: torch.Tensor, generator: torch.Generator) -> None:
        fill = max(0, min(len(new), self.size - len(self.keys)))
        keys = torch.cat([self.keys, new[:fill]])
        rest = new[fill:]
        index = torch.arange(self.count + fill, self.count + len(new), dtype=torch.float64)
        slot = (torch.rand(len(rest), generator=generator, dtype=torch.float64) * (index + 1)).long()
        kept = slot < self.size
        for s, key in zip(slot[kept].tolist(), rest[kept].tolist()):  # in order: a later key may evict
            keys[s] = key
        self.keys, self.count = keys, self.count + len(new)
