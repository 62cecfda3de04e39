"""BagOfWords: a hashed bag-of-words text classifier (fastText's model: mean word embedding, linear head).

Its input is a row of token ids (``(batch, max tokens)``, 0 = padding), as ``dataset=huffpost`` and
``dataset=arxiv`` prepare them. Each id is hashed into one of ``buckets`` embedding rows (the hashing
trick: no vocabulary to build or store, unseen words share rows with others), the rows of the real
tokens are averaged, and optional hidden ``Linear → ReLU`` layers and a linear head classify the mean.

The engines cast inputs to their float dtype; ids below 2**24 are exact in float32, and the model casts
them back. The lookup is ``torch.nn.functional.embedding`` on plain tensors (not ``nn.EmbeddingBag``), so
``torch.func.vmap`` batches it, forward and backward, and the batched engine equals training alone.

Joulin et al., "Bag of Tricks for Efficient Text Classification" (fastText), 2017.

>>> net = BagOfWords((6,), num_classes=3, buckets=16, dim=4, hidden=[5])
>>> ids = torch.tensor([[7.0, 3.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 6])
>>> tuple(net.embed(ids).shape), tuple(net(ids).shape)
((2, 5), (2, 3))
>>> sum(p.numel() for p in net.parameters())
107
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from ctsim.validation import ConfigError, check, is_int


class BagOfWords(nn.Module):
    """Hash every token id into ``buckets`` rows of width ``dim``, average the non-padding ones, then
    ``Linear → ReLU`` per entry of ``hidden`` and a linear head.

    Args:
        input_shape: ``(max tokens,)``: one row of token ids per sample, 0 for padding.
        num_classes: outputs of the head.
        buckets: embedding rows; row 0 is padding's, ids ≥ 1 share the other ``buckets - 1`` by
            ``1 + (id - 1) mod (buckets - 1)``. More rows, fewer collisions, ``buckets × dim`` parameters.
        dim: width of the embedding.
        hidden: one entry per hidden layer after the mean: its width; ``[]`` is a linear model on it.
    """

    input_kind = "tokens"  # what its rows must hold (ctsim.app.build checks it against the dataset)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        buckets: int = 2**16,
        dim: int = 64,
        hidden: list[int] | tuple[int, ...] = (),
    ):
        super().__init__()
        ConfigError.raise_all(
            [
                check(
                    "input_shape",
                    tuple(input_shape),
                    len(input_shape) == 1 and is_int(input_shape[0]) and input_shape[0] >= 1,
                    "(max tokens,): rows of token ids, as a text dataset such as dataset=huffpost gives",
                ),
                check("buckets", buckets, is_int(buckets) and buckets >= 2, "an integer ≥ 2, e.g. 65536"),
                check("dim", dim, is_int(dim) and dim >= 1, "an integer ≥ 1, e.g. 64"),
                check(
                    "hidden",
                    hidden,
                    isinstance(hidden, (list, tuple)) and all(is_int(h) and h >= 1 for h in hidden),
                    "a list of integers ≥ 1, e.g. [] (a linear head) or [64]",
                ),
            ]
        )
        self.buckets = buckets
        self.embedding = nn.Embedding(buckets, dim, padding_idx=0)  # N(0, 1) rows; padding's row is 0
        widths = [dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The mean embedding of each row's tokens, through the hidden layers: ``(batch, width)``.

        A row of padding alone gives the zero vector.
        """
        ids = x.long()
        real = ids > 0
        bucket = torch.where(real, 1 + (ids - 1) % (self.buckets - 1), 0)
        mask = real.unsqueeze(-1).to(self.embedding.weight.dtype)
        total = (F.embedding(bucket, self.embedding.weight) * mask).sum(dim=1)
        return self.features(total / mask.sum(dim=1).clamp(min=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
