"""Dropout whose masks come from the model's own seed, so batched training equals training alone.

Under ``torch.func.vmap`` every model of a batch would draw dropout masks from torch's one global
random stream (the bug behind ModelBatch's CNN-with-dropout failures), and the sequential engine
could never reproduce them. :class:`SeededDropout` instead derives each mask from a counter-based hash
of three integers: the model's ``seed`` (drawn from the seeded global RNG when the model is built), a
``calls`` counter (one per training forward pass) and each element's index. Both are buffers, so
``stack_module_state`` stacks them per model and ``functional_call`` gives every model its own: the
same model draws the same masks whichever engine trains it, with a constant number of kernels per
step whatever the number of models.

The hash is ``lowbias32`` (C. Wellons' integer hash, an avalanche mixer) in 32-bit arithmetic held in
int64 tensors; an element is kept when its hash is at least ``p · 2³²``.

>>> torch.manual_seed(0) and None
>>> drop = SeededDropout(p=0.5)
>>> a = drop(torch.ones(2, 8))
>>> b = drop(torch.ones(2, 8))  # the counter moved: a new mask
>>> sorted(set(a.flatten().tolist())), torch.equal(a, b), int(drop.calls)
([0.0, 2.0], False, 2)
"""

from __future__ import annotations

import torch
from torch import nn

from ctsim.validation import ConfigError, check, is_number

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x · c) mod 2³²`` for x in [0, 2³²) without overflowing int64: multiply 16-bit halves."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32: a 32-bit integer hash with good avalanche (values in [0, 2³²), int64 tensors)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform_bits(seed: torch.Tensor, counter: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Hash bits in [0, 2³²) for every element of ``shape``, a function of (seed, counter, index) only."""
    key = mix32(mix32(seed) ^ mix32(counter + 0x9E3779B9))
    index = torch.arange(shape.numel(), dtype=torch.int64, device=seed.device).view(shape)
    return mix32(mix32(index ^ key) + key)


class SeededDropout(nn.Module):
    """Dropout (zero each element with probability ``p``, scale the rest by ``1/(1-p)``) with per-model masks.

    Same distribution as ``torch.nn.Dropout``; the masks come from the module's ``seed`` and ``calls``
    buffers instead of the global RNG (see the module docstring). Both buffers are non-persistent:
    a fine-tuned generation draws from its own seed, not its parent's.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        ConfigError.raise_all([check("dropout", p, is_number(p) and 0 <= p < 1, "a probability in [0, 1)")])
        self.p = float(p)
        self.threshold = int(self.p * 2**32)
        seed = torch.randint(0, 2**31 - 1, (), dtype=torch.int64)  # from the seeded global RNG at build time
        self.register_buffer("seed", seed, persistent=False)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = uniform_bits(self.seed, self.calls, x.shape) >= self.threshold
        self.calls.add_(1)
        return x * keep.to(x.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
