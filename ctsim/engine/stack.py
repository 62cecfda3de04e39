"""M models of one architecture held as stacked tensors, and their per-model losses in one call.

:class:`Stack` keeps what the batched engine trains:

* the **trainable parameters** as one flat ``(M, P)`` tensor (row m is model m's parameters,
  flattened and concatenated), so that the optimizer, gradient clipping and the non-finite check are
  a few tensor ops whatever the number of parameter tensors;
* **frozen parameters** (``requires_grad=False``) and **buffers** stacked per name, ``(M, *shape)``.
  Frozen parameters are inputs to the forward pass and nothing else: never differentiated, never
  updated.
  A tensor held under two names (weight tying) is stacked once, under its first name, and given back
  under both.

:class:`Losses` computes every model's own mean loss on its own batch, either stacked with
``vmap`` over ``functional_call`` (``vmapped=True``) or, for a single model, as a plain call of the
module with torch's own kernels. The gradient of the *sum* of those losses with respect to each
model's parameters is that model's own gradient (never the mean, which would divide every learning
rate by M).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn
from torch.func import functional_call, vmap

from ctsim.engine.base import State, logits_of

Tensors = dict[str, torch.Tensor]


class Stack:
    """The state of M models of one architecture on ``device`` (see the module docstring)."""

    def __init__(self, models: list[nn.Module], device: torch.device):
        first = models[0]
        self.persistent = list(first.state_dict())
        self.aliases = aliases(first)  # a tied parameter's or buffer's other names → the one stacked
        self.trainable = [(k, p.shape) for k, p in first.named_parameters() if p.requires_grad]
        frozen = [k for k, p in first.named_parameters() if not p.requires_grad]
        self.sizes = [shape.numel() for _, shape in self.trainable]
        with torch.no_grad():
            rows = [
                torch.cat([p.reshape(-1) for p in m.parameters() if p.requires_grad] or [torch.zeros(0)])
                for m in models
            ]
            self.flat = torch.stack(rows).to(device)
            parts = [dict(m.named_parameters()) for m in models]
            self.frozen = {k: torch.stack([p[k].detach() for p in parts]).to(device) for k in frozen}
            buffers = [dict(m.named_buffers()) for m in models]
            self.buffers = {k: torch.stack([b[k] for b in buffers]).to(device) for k in buffers[0]}
        self._columns: dict[frozenset[str], torch.Tensor] = {}
        self.graded: set[str] = set()  # the trainable parameters that got a gradient in training ...
        self.ungraded: set[str] = set()  # ... and those that got none in some step

    def __len__(self) -> int:
        return len(self.flat)

    def views(self, flat: torch.Tensor) -> Tensors:
        """Each trainable parameter of ``flat`` ``(r, P)`` as an ``(r, *shape)`` view."""
        out, start = {}, 0
        for (name, shape), size in zip(self.trainable, self.sizes):
            out[name] = flat[:, start : start + size].view(len(flat), *shape)
            start += size
        return out

    def columns(self, names: frozenset[str]) -> torch.Tensor:
        """``(P,)`` bool on the device: the flat columns of the trainable parameters in ``names``."""
        if names not in self._columns:
            mask, start = torch.zeros(self.flat.shape[1], dtype=torch.bool), 0
            for (name, _), size in zip(self.trainable, self.sizes):
                mask[start : start + size] = name in names
                start += size
            self._columns[names] = mask.to(self.flat.device)
        return self._columns[names]

    def states(self) -> list[State]:
        """Every model's state dict (persistent entries only), on the CPU, copied with one transfer
        per stacked tensor."""
        flat = self.flat.cpu()
        stacked = {**self.views(flat), **{k: v.cpu() for k, v in {**self.frozen, **self.buffers}.items()}}
        names = {k: self.aliases.get(k, k) for k in self.persistent}
        return [{k: stacked[names[k]][m].clone() for k in self.persistent} for m in range(len(flat))]

    def per_name(self, flat_row: torch.Tensor) -> Tensors:
        """One model's flat row ``(P,)`` split into its named parameters."""
        return {k: v[0] for k, v in self.views(flat_row.unsqueeze(0)).items()}


def vmap_problems(model: nn.Module) -> list[str]:
    """The layers of ``model`` that ``vmap`` cannot stack, each with why; the ``loop`` route runs them.

    >>> vmap_problems(nn.Sequential(nn.Linear(2, 4), nn.LSTM(4, 4)))
    ["1 (LSTM): torch's fused recurrent kernels have no vmap rule (ctsim.models.LSTM and GRU stack)"]
    """
    found = []
    for name, module in model.named_modules():
        why = _why_not_stacked(module)
        if why is not None:
            found.append(f"{name or type(model).__name__} ({type(module).__name__}): {why}")
    return found


def _why_not_stacked(module: nn.Module) -> str | None:
    if isinstance(module, nn.RNNBase):
        return "torch's fused recurrent kernels have no vmap rule (ctsim.models.LSTM and GRU stack)"
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is None:
        return "momentum=None (a cumulative average) reads its step count as a Python number"
    if isinstance(module, nn.Embedding) and module.max_norm is not None:
        return "max_norm renormalises the weight in place in the forward pass"
    if type(module).__name__ == "_SpectralNorm":
        return "spectral_norm updates its power-iteration vectors in place"
    return None


def pad_rows_get_no_gradient(model: nn.Module) -> None:
    """Keep the gradient off every ``nn.Embedding``'s ``padding_idx`` row under ``vmap``.

    vmap's rule for the embedding's backward pass flattens the stacked tables into one and skips the
    padding row of the first model only: the others' padding rows got gradients (torch 2.x). The
    lookups of padding positions are cut from the graph instead (same values; no gradient reaches that
    row, as in ``torch.nn.Embedding`` alone).
    """

    def cut(module: nn.Embedding, args: tuple, out: torch.Tensor) -> torch.Tensor:
        pad = (args[0] == module.padding_idx).unsqueeze(-1)
        return torch.where(pad, out.detach(), out)

    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.register_forward_hook(cut)


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device (no storage), for ``functional_call``, with its tied
    parameters and buffers still tied: ``Module.to`` replaces each module's parameters one by one and
    would untie them, and ``functional_call`` would then leave the other name unfilled."""
    base = copy.deepcopy(model)
    tied = aliases(base)
    base.to("meta")
    for alias, name in tied.items():
        owner, _, attr = alias.rpartition(".")
        holder = base.get_submodule(owner)
        setattr(
            holder, attr, base.get_parameter(name) if attr in holder._parameters else base.get_buffer(name)
        )
    return base


def aliases(model: nn.Module) -> dict[str, str]:
    """The other names of tensors a model holds under several names (weight tying: one Parameter in two
    modules), each mapped to the name ``named_parameters``/``named_buffers`` give it (its first).

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    >>> net[1].weight = net[0].weight
    >>> aliases(net)
    {'1.weight': '0.weight'}
    """
    found: dict[str, str] = {}
    for named in (model.named_parameters, model.named_buffers):
        first: dict[int, str] = {}
        for name, tensor in named(remove_duplicate=False):
            if id(tensor) in first:
                found[name] = first[id(tensor)]
            else:
                first[id(tensor)] = name
    return found


class Losses:
    """Every model's mean (weighted) cross-entropy on its batch, stacked or alone.

    ``__call__(params, buffers, x, y, w)`` takes stacked ``(r, ...)`` tensors and returns ``(r,)``
    losses. BatchNorm statistics in ``buffers`` are updated in place, as a module's are.
    """

    def __init__(
        self,
        model: nn.Module,
        dtype: torch.dtype,
        autocast: Callable[[], AbstractContextManager],
        vmapped: bool,
        compile: bool = False,
    ):
        base = meta_copy(model).train()
        batchnorm_in_float32(base)
        if vmapped:
            pad_rows_get_no_gradient(base)

        def one(params: Tensors, buffers: Tensors, x, y, w) -> torch.Tensor:
            with autocast():
                logits = logits_of(functional_call(base, (params, buffers), (x,)), model)
            return model_loss(logits, y, w, dtype)

        self.vmapped = vmapped
        if vmapped:  # weights may be None (no sample weights): not mapped then
            weighted, unweighted = vmap(one), vmap(one, in_dims=(0, 0, 0, 0, None))
        else:
            weighted = unweighted = one
        if compile:
            weighted, unweighted = torch.compile(weighted), torch.compile(unweighted)
        self._weighted, self._unweighted = weighted, unweighted

    def fn(self, params: Tensors, buffers: Tensors, x, y, w) -> torch.Tensor:
        return (self._unweighted if w is None else self._weighted)(params, buffers, x, y, w)

    def __call__(self, params: Tensors, buffers: Tensors, x, y, w) -> torch.Tensor:
        if not self.vmapped:
            first = {k: v[0] for k, v in buffers.items()}  # views: in-place updates reach the stack
            loss = self.fn(
                {k: v[0] for k, v in params.items()}, first, x[0], y[0], None if w is None else w[0]
            )
            return loss.unsqueeze(0)
        if len(x) > 1:
            return self.fn(params, buffers, x, y, w)
        # A lone model in a vmap call would take other kernels (a plain instead of a grouped
        # convolution) than beside others: pair it with a copy of itself, so that which models share
        # a call never changes a model's arithmetic.
        twin = {k: torch.cat([v, v]) for k, v in buffers.items()}
        pair = {k: torch.cat([v, v]) for k, v in params.items()}
        losses = self.fn(pair, twin, *(None if v is None else torch.cat([v, v]) for v in (x, y, w)))
        with torch.no_grad():
            for k, v in buffers.items():
                v.copy_(twin[k][:1])
        return losses[:1]


def model_loss(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, dtype: torch.dtype):
    """One model's mean (weighted) cross-entropy, with the values the sequential engine's
    ``F.cross_entropy(reduction="none")`` gives: ``-log_softmax(logits)[i, y_i]``. (Written out, since
    under vmap ``cross_entropy`` runs a slow Python decomposition of ``nll_loss``.)"""
    losses = -logits.to(dtype).log_softmax(-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return (losses * w).mean() if w is not None else losses.mean()


def batchnorm_in_float32(model: nn.Module) -> None:
    """Feed BatchNorm its input in its own dtype: under bf16 autocast, vmap's BatchNorm rule rejects a
    bfloat16 input with float32 statistics (a plain module accepts it). A no-op without autocast."""

    def cast(module: nn.Module, args: tuple) -> tuple:
        return (args[0].to(module.running_mean.dtype), *args[1:])

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.register_forward_pre_hook(cast)
