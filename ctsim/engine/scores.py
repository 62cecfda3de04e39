"""Per-sample scores for score-based downsampling: higher means more worth training on.

All come from one forward pass of the model about to be trained (its embeddings ``h`` and logits
``z``, :class:`~ctsim.engine.signals.Outputs`), with ``p = softmax(z)``:

* ``loss``: the cross-entropy ``-log p_y``;
* ``grad_norm``: the norm of the loss's gradient with respect to the last layer's weight and bias, in
  closed form: the head is ``z = W h + b``, so ``∂L/∂W = (p − e_y) hᵀ`` and ``∂L/∂b = p − e_y``, whose
  joint norm is ``‖p − e_y‖ · sqrt(‖h‖² + 1)`` (without a bias: ``‖p − e_y‖ · ‖h‖``);
* ``least_confidence``: ``1 − max p``;
* ``entropy``: ``−Σ p log p``;
* ``margin``: ``1 − (p₁ − p₂)``, one minus the gap between the two most likely classes.

Every function works on any leading dimensions (a batch, or models × batch), so the batched engine
scores a stack of models in one call.
"""

from __future__ import annotations

import torch

from ctsim.engine.base import SCORES


def score(
    name: str, emb: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, bias: bool = True
) -> torch.Tensor:
    """Scores ``(..., n)`` of samples with embeddings ``emb (..., n, d)``, logits ``(..., n, c)`` and
    labels ``y (..., n)``.

    >>> z = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    >>> [round(v, 4) for v in score("margin", None, z, torch.tensor([0, 0])).tolist()]
    [0.2384, 1.0]
    """
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}: expected one of {list(SCORES)}")
    wide = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    logp = wide.log_softmax(-1)
    p = logp.exp()
    if name == "loss":
        return -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    if name == "grad_norm":
        residual = p - torch.nn.functional.one_hot(y, p.shape[-1]).to(p.dtype)
        h2 = emb.to(p.dtype).pow(2).sum(-1) + (1.0 if bias else 0.0)
        return residual.norm(dim=-1) * h2.sqrt()
    if name == "least_confidence":
        return 1 - p.max(-1).values
    if name == "entropy":
        return -(p * logp).sum(-1)
    top = p.topk(min(2, p.shape[-1]), dim=-1).values
    gap = top[..., 0] - top[..., 1] if top.shape[-1] > 1 else top[..., 0]
    return 1 - gap


def head_bias(model: torch.nn.Module) -> bool:
    """Does the model's ``head`` have a bias (for ``grad_norm``)? False for a model without a head, which
    only the other scores, reading the logits alone, may score."""
    return getattr(getattr(model, "head", None), "bias", None) is not None


def top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` highest scores along the last dimension, highest first; ties go to the
    earlier position (a stable sort, so both engines choose alike).

    >>> top(torch.tensor([0.1, 0.5, 0.5, 0.2]), 2).tolist()
    [1, 2]
    """
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
