"""Model signals: what the active models say about an arrival batch, for the policies that ask.

A policy (a drift or performance trigger, a score-based selection) declares the signals it needs; the
loop gathers every pipeline's needs at a decision point and asks the engine once
(:meth:`~ctsim.engine.base.Engine.signals`). The engine runs every requested model over the shared
batch: the batched engine stacks the models of one architecture in one ``vmap`` call, the sequential
one runs them one after another. Both give, per request, a dict of tensors on the engine's device:

* ``embeddings`` ``(n, d)``: the penultimate layer (the model's ``embed``);
* ``logits`` ``(n, classes)``;
* ``predictions`` ``(n,)``: the argmax of the logits;
* ``loss`` ``(n,)``: each sample's cross-entropy (needs the labels).

One forward pass gives all of them: ``embed``, then ``head`` on its output. A model without ``embed``
and ``head`` (a plain ``nn.Sequential``, say) gives the logits, predictions and losses from its
forward alone; only ``embeddings`` need the two (:func:`embeds`), and a run whose policies declare
that they ask for them refuses such a model at start-up (:mod:`ctsim.app.build`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call

from ctsim.engine.base import SignalRequest, check_state
from ctsim.engine.stack import aliases
from ctsim.validation import ConfigError, Problem

EMBEDS = 'a model with embed(x) and head(embedding) (see docs/extending.md, "A model")'


def embeds(net: nn.Module) -> bool:
    """Whether ``net`` gives embeddings: an ``embed(x)`` method and a ``head`` module that reads them.

    >>> from ctsim.models import MLP
    >>> embeds(MLP((2,), num_classes=3, hidden=[5])), embeds(nn.Sequential(nn.Linear(2, 3)))
    (True, False)
    """
    return callable(getattr(net, "embed", None)) and isinstance(getattr(net, "head", None), nn.Module)


def no_embeddings(model: str) -> ConfigError:
    """The error for an embeddings request to a model without ``embed`` and ``head``: a policy that does
    not declare its signals (:mod:`ctsim.app.build` refuses the ones that do at start-up)."""
    text = f"{model} has no embed(x) and head, and a policy asks for its embeddings: it needs {EMBEDS}"
    return ConfigError([Problem("model", model, "", text=text)])


class Outputs(nn.Module):
    """A model's embeddings and logits from one forward pass: ``embed``, then ``head``. A model without
    them gives its forward's logits and no embeddings (an ``(n, 0)`` tensor: a tensor, so that ``vmap``
    and ``torch.cat`` take it as they take real ones).

    >>> from ctsim.models import MLP
    >>> emb, logits = Outputs(MLP((1, 2, 2), num_classes=3, hidden=[5]))(torch.zeros(4, 1, 2, 2))
    >>> tuple(emb.shape), tuple(logits.shape)
    ((4, 5), (4, 3))
    >>> emb, logits = Outputs(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)))(torch.zeros(4, 1, 2, 2))
    >>> tuple(emb.shape), tuple(logits.shape)
    ((4, 0), (4, 3))
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.embeds = embeds(net)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.embeds:
            logits = self.net(x)
            return logits[..., :0], logits
        emb = self.net.embed(x)
        return emb, self.net.head(emb)


def finish(emb: torch.Tensor, logits: torch.Tensor, y: torch.Tensor | None, needs: frozenset[str]) -> dict:
    """The requested signals of one model, from its embeddings and logits on the batch."""
    return finish_stacked(emb.unsqueeze(0), logits.unsqueeze(0), y, [needs])[0]


def finish_stacked(
    emb: torch.Tensor, logits: torch.Tensor, y: torch.Tensor | None, needs: Sequence[frozenset[str]]
) -> list[dict]:
    """The requested signals of M models from their stacked embeddings ``(M, n, d)`` and logits
    ``(M, n, classes)``: predictions and losses computed once for all of them (a fixed number of ops
    whatever M), each model's signals views of those.

    >>> out = finish_stacked(torch.zeros(2, 3, 4), torch.zeros(2, 3, 2), torch.zeros(3, dtype=torch.long),
    ...                      [frozenset({"loss"}), frozenset({"predictions", "embeddings"})])
    >>> [sorted(o) for o in out], out[0]["loss"].shape
    ([['loss'], ['embeddings', 'predictions']], torch.Size([3]))
    """
    wanted = set().union(*needs) if needs else set()
    if "embeddings" in wanted and emb.shape[-1] == 0:  # Outputs of a model without embed and head
        raise no_embeddings("the model")
    predictions = logits.argmax(-1) if "predictions" in wanted else None
    losses = None
    if "loss" in wanted:
        if y is None:
            raise ValueError("the loss signal needs the batch's labels")
        wide = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()  # bf16 → fp32
        labels = y.to(logits.device).expand(len(logits), -1).unsqueeze(-1)
        losses = -wide.log_softmax(-1).gather(-1, labels).squeeze(-1)  # F.cross_entropy's values
    found = []
    for m, need in enumerate(needs):
        out = {}
        if "embeddings" in need:
            out["embeddings"] = emb[m]
        if "logits" in need:
            out["logits"] = logits[m]
        if "predictions" in need:
            out["predictions"] = predictions[m]
        if "loss" in need:
            out["loss"] = losses[m]
        found.append(out)
    return found


def groups(
    requests: Sequence[SignalRequest], x: torch.Tensor, y: torch.Tensor | None
) -> list[tuple[list[int], torch.Tensor, torch.Tensor | None]]:
    """Request indices by architecture and rows, with those rows of ``x`` and ``y``: one pass per group."""
    by: dict[tuple[str, int], list[int]] = {}
    for i, r in enumerate(requests):
        by.setdefault((r.model.key, id(r.keys)), []).append(i)
    found = []
    for rows in by.values():
        keys = requests[rows[0]].keys
        if keys is None:
            found.append((rows, x, y))
        else:
            keys = keys.to(x.device)
            found.append((rows, x[keys], None if y is None else y[keys]))
    return found


def one_by_one(
    net: nn.Module,
    requests: Sequence[SignalRequest],
    x: torch.Tensor,
    y: torch.Tensor | None,
    batch_size: int,
    autocast,
) -> list[dict]:
    """The signals of each request, with ``net`` run with one state after another.

    The states are used in place (``torch.func.functional_call``), not copied into ``net``: a copy
    per request cost a fifth of a drift study's signal passes. A model with tied weights is loaded
    (``load_state_dict``), as ``functional_call`` takes one value per tied tensor.
    """
    outputs = Outputs(net)
    if not outputs.embeds and any("embeddings" in r.needs for r in requests):
        raise no_embeddings(type(net).__name__)
    device, dtype = next(net.parameters()).device, next(net.parameters()).dtype
    own = net.state_dict()
    shapes = {k: v.shape for k, v in own.items()}
    tied = bool(aliases(net))
    found = []
    for i, r in enumerate(requests):
        if {k: v.shape for k, v in r.state.items()} != shapes:
            check_state(net, r.state, f"the state of signal request {i}")  # names what does not fit
        if tied:
            net.load_state_dict(r.state)
            run = outputs
        else:
            state = {f"net.{k}": v.to(own[k].device, own[k].dtype) for k, v in r.state.items()}
            run = functools.partial(functional_call, outputs, state)
        with torch.inference_mode(), autocast():
            parts = [run(x[i : i + batch_size].to(device, dtype)) for i in range(0, len(x), batch_size)]
        emb, logits = (torch.cat(p) for p in zip(*parts))
        found.append(finish(emb, logits, y, r.needs))
    return found
