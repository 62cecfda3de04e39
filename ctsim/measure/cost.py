"""FLOPs per sample, measured with ``torch.utils.flop_counter`` (not counted by hand).

``FlopCounterMode`` counts the matrix products and convolutions that dominate these models (forward,
and for training the backward pass too); element-wise ops are not counted. FLOPs of these models are
linear in the batch size, so one measured batch gives the per-sample figure, and a generation's
training FLOPs are ``train_per_sample × samples_trained``.

>>> from functools import partial
>>> from ctsim.models import MLP
>>> f = flops_per_sample(ModelSpec(partial(MLP, hidden=[8]), (1, 4, 4), 2))
>>> f.eval, f.train  # forward 2·(16·8 + 8·2); backward: both weight gradients and one input gradient
(288, 608)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ctsim.models.base import ModelSpec

_BATCH = 4
_cache: dict[str, FlopsPerSample] = {}


@dataclass(frozen=True)
class FlopsPerSample:
    train: int  # forward + backward of one training sample
    eval: int  # forward of one evaluation sample


def flops_per_sample(spec: ModelSpec) -> FlopsPerSample:
    """Measure (once per architecture) the FLOPs of training on and predicting one sample."""
    if spec.key not in _cache:
        model = spec.build(seed=0)
        x = torch.zeros(_BATCH, *spec.input_shape)
        y = torch.zeros(_BATCH, dtype=torch.long)
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        eval_flops = counter.get_total_flops()
        model.train()
        with FlopCounterMode(display=False) as counter:
            F.cross_entropy(model(x), y).backward()
        _cache[spec.key] = FlopsPerSample(
            train=counter.get_total_flops() // _BATCH, eval=eval_flops // _BATCH
        )
    return _cache[spec.key]
