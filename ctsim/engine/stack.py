"""M models of one architecture held as stacked tensors, and their per-model losses in one call.

:class:`Stack` keeps what the batched engine trains:

* the **trainable parameters** as one flat ``(M, P)`` tensor (row m is model m's parameters,
  flattened and concatenated), so that the optimizer, gradient clipping and the non-finite check are
  a few tensor ops whatever the number of parameter tensors;
* **frozen parameters** (``requires_grad=False``) and **buffers** as one flat ``(M, Q)`` tensor per
  dtype each (:class:`Flat`), seen per name as ``(M, *shape)`` views: copying, restoring, gathering
  or checking all of them is one op per dtype, not one per tensor. Frozen parameters are inputs to
  the forward pass and nothing else: never differentiated, never updated.
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
import inspect
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial

import torch
from torch import nn
from torch.func import functional_call, vmap

from ctsim.engine.base import State, logits_of
from ctsim.engine.plan import bucket

Tensors = dict[str, torch.Tensor]
COMPILE_BACKEND = "inductor"  # torch.compile's backend (tests count graphs with a backend of their own)
# Graphs per compiled loss (one architecture, one loss variant): 15 population buckets up to 256 models
# per call (2, 3, 4, 6, ..., 192, 256), at 2 batch widths, with room to spare.
GRAPH_BUDGET = 32


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
            self.frozen = Flat(
                {k: torch.stack([p[k].detach() for p in parts]) for k in frozen}, device, len(models)
            )
            buffers = [dict(m.named_buffers()) for m in models]
            self.buffers = Flat(
                {k: torch.stack([b[k] for b in buffers]) for k in buffers[0]}, device, len(models)
            )
        self._columns: dict[frozenset[str], torch.Tensor] = {}
        self.alone = False  # the whole group is this one model: trained with the plain module
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
        held = {k: v.cpu() for k, v in {**self.frozen.views(), **self.buffers.views()}.items()}
        stacked = {**self.views(flat), **held}
        names = {k: self.aliases.get(k, k) for k in self.persistent}
        return [{k: stacked[names[k]][m].clone() for k in self.persistent} for m in range(len(flat))]

    def per_name(self, flat_row: torch.Tensor) -> Tensors:
        """One model's flat row ``(P,)`` split into its named parameters."""
        return {k: v[0] for k, v in self.views(flat_row.unsqueeze(0)).items()}


class Flat:
    """Named stacked tensors ``(M, *shape)`` held in one flat buffer per dtype, name after name.

    Each name's ``(M, *shape)`` block is contiguous, so a view of it takes in-place updates as the
    tensor would (vmap's BatchNorm rule writes its running statistics back only into a contiguous
    tensor). Copying, restoring or checking all of them is a few ops per dtype, not one per tensor:
    ``owner`` maps each element of a buffer to its model.

    >>> f = Flat({"a": torch.zeros(3, 2), "b": torch.ones(3), "n": torch.zeros(3).long()}, "cpu", 3)
    >>> {k: tuple(v.shape) for k, v in f.views().items()}, sorted(str(d) for d in f.flats)
    ({'a': (3, 2), 'b': (3,), 'n': (3,)}, ['torch.float32', 'torch.int64'])
    >>> f.owner[torch.float32].tolist()
    [0, 0, 1, 1, 2, 2, 0, 1, 2]
    """

    def __init__(self, stacked: Tensors, device: torch.device | str, models: int):
        self.models = models
        self.device = torch.device(device)
        self.layout: list[tuple[str, torch.dtype, int, tuple[int, ...]]] = []
        widths: dict[torch.dtype, int] = {}
        parts: dict[torch.dtype, list[torch.Tensor]] = {}
        owners: dict[torch.dtype, list[torch.Tensor]] = {}
        for name, v in stacked.items():
            start = widths.get(v.dtype, 0)
            self.layout.append((name, v.dtype, start, tuple(v.shape[1:])))
            widths[v.dtype] = start + v.numel()
            parts.setdefault(v.dtype, []).append(v.reshape(-1))
            owners.setdefault(v.dtype, []).append(torch.arange(len(v)).repeat_interleave(v[0].numel()))
        self.flats = {d: torch.cat(p).to(device) for d, p in parts.items()}
        self.owner = {d: torch.cat(o).to(device) for d, o in owners.items()}

    def views(self, flats: dict[torch.dtype, torch.Tensor] | None = None, rows: int | None = None) -> Tensors:
        """Each tensor as a view ``(M, *shape)`` of ``flats`` (default: the held ones), or of its first
        ``rows`` models."""
        flats = self.flats if flats is None else flats
        out = {}
        for name, dtype, start, shape in self.layout:
            block = flats[dtype][start : start + self.models * math.prod(shape)].view(self.models, *shape)
            out[name] = block if rows is None else block[:rows]
        return out

    def clone(self) -> dict[torch.dtype, torch.Tensor]:
        return {d: v.clone() for d, v in self.flats.items()}

    def restore(self, keep: torch.Tensor, new: dict[torch.dtype, torch.Tensor]) -> None:
        """Take ``new``'s values for the models in ``keep`` ``(M,)``; the others keep theirs."""
        for d, v in self.flats.items():
            torch.where(keep.index_select(0, self.owner[d]), new[d], v, out=v)

    def finite(self, flats: dict[torch.dtype, torch.Tensor]) -> torch.Tensor:
        """``(M,)``: are every model's floating-point values in ``flats`` finite? (``x * 0`` is 0 for
        finite values and NaN otherwise, summed per model.)"""
        ok = torch.ones(self.models, dtype=torch.bool, device=self.device)
        for d, v in flats.items():
            if d.is_floating_point:
                per_model = torch.zeros(self.models, dtype=d, device=v.device).index_add_(
                    0, self.owner[d], v * 0
                )
                ok &= torch.isfinite(per_model)
        return ok


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
    losses. BatchNorm statistics in ``buffers`` are updated in place, as a module's are. A padded
    batch comes with ``summed=True`` and ``w`` each sample's share of its model's loss (its weight over
    its model's number of valid samples, 0 for padding), so that the loss is ``sum(loss × w)``: the mean
    over valid samples. For a model with BatchNorm (``norms``) it also comes with ``valid`` ``(r, b)``,
    and BatchNorm takes its statistics over valid samples only.
    """

    def __init__(
        self,
        model: nn.Module,
        dtype: torch.dtype,
        autocast: Callable[[], AbstractContextManager],
        vmapped: bool,
        compile: bool = False,
        name: str = "the model",
    ):
        base = meta_copy(model).train()
        batchnorm_in_float32(base)
        if vmapped:
            pad_rows_get_no_gradient(base)
        masked = meta_copy(base)  # keeps the hooks
        self.norms = masked_batchnorm(masked)

        def one(params: Tensors, buffers: Tensors, x, y, w, valid=None, summed=False) -> torch.Tensor:
            with autocast():
                if valid is None:
                    out = functional_call(base, (params, buffers), (x,))
                else:
                    masks = {f"{name}.valid": valid for name in self.norms}
                    out = functional_call(masked, (params, buffers, masks), (x,))
                logits = logits_of(out, model)
            return model_loss(logits, y, w, dtype, summed)

        self.vmapped = vmapped
        self.compile = compile
        self.name = name
        self._one = one
        self._fns: dict[tuple, Callable] = {}

    def _fn(self, weighted: bool, masked: bool, summed: bool, vmapped: bool) -> Callable:
        key = (weighted, masked, summed, vmapped)
        if key not in self._fns:
            fn = partial(self._one, summed=summed)
            if vmapped:  # weights and masks may be None: not mapped then
                fn = vmap(fn, in_dims=(0, 0, 0, 0, 0 if weighted else None, 0 if masked else None))
            self._fns[key] = Compiled(fn, self.name, vmapped) if self.compile else fn
        return self._fns[key]

    @property
    def graphs(self) -> dict[str, list[tuple[int, ...]]]:
        """With ``compile``: the input shapes each compiled variant of the loss has a graph for."""
        return {str(k): sorted(f.shapes) for k, f in self._fns.items() if isinstance(f, Compiled)}

    def fn(self, params: Tensors, buffers: Tensors, x, y, w, valid=None, summed=False) -> torch.Tensor:
        """The loss function itself (stacked when ``vmapped``), on ``(r, ...)`` tensors."""
        fn = self._fn(w is not None, valid is not None, summed, self.vmapped)
        return fn(params, buffers, x, y, w, valid)

    def __call__(
        self, params: Tensors, buffers: Tensors, x, y, w, valid=None, summed=False, alone: bool = False
    ) -> torch.Tensor:
        """``alone``: these are all the models trained together (a population of one runs the plain
        module: no vmap, no twin)."""
        if not self.vmapped or alone:
            first = {k: v[0] for k, v in buffers.items()}  # views: in-place updates reach the stack
            rest = [None if v is None else v[0] for v in (w, valid)]
            fn = self._fn(w is not None, valid is not None, summed, vmapped=False)
            loss = fn({k: v[0] for k, v in params.items()}, first, x[0], y[0], *rest)
            return loss.unsqueeze(0)
        rows = len(x)
        # A lone model in a vmap call would take other kernels (a plain instead of a grouped
        # convolution) than beside others: it is paired with a copy of itself, so that which models
        # share a call never changes a model's arithmetic. A compiled loss pads every call to a
        # population bucket, so that a run compiles one graph per bucket, not one per size.
        size = max(2, bucket(rows)) if self.compile else max(2, rows)
        if size == rows and not self.compile:
            return self.fn(params, buffers, x, y, w, valid, summed)
        padded = {k: _pad(v, size) for k, v in buffers.items()}
        losses = self.fn(
            {k: _pad(v, size) for k, v in params.items()},
            padded,
            _pad(x, size),
            _pad(y, size),
            None if w is None else _pad(w, size, dummy=0.0),  # the dummies' loss counts for nothing
            None if valid is None else _pad(valid, size),
            summed,
        )
        with torch.no_grad():
            for k, v in buffers.items():
                v.copy_(padded[k][:rows])
        return losses[:rows]


def _pad(v: torch.Tensor, size: int, dummy: float | None = None) -> torch.Tensor:
    """``v`` ``(r, ...)`` with ``size - r`` dummy rows after it: copies of its first row (or ``dummy``),
    outside autograd's graph, always in a new contiguous tensor, so that a compiled loss sees the same
    strides whatever ``r``."""
    extra = v[:1].detach().expand(size - len(v), *v.shape[1:])
    return torch.cat([v, extra if dummy is None else torch.full_like(extra, dummy)])


def compile_bounded() -> bool:
    """Whether this torch's ``torch.compile`` takes a recompile limit per compiled region (what
    :class:`Compiled` needs to bound its graphs without sharing dynamo's global limit)."""
    params = inspect.signature(torch.compile).parameters
    return "recompile_limit" in params and "isolate_recompiles" in params


class CompileBudgetError(RuntimeError):
    """A compiled loss would need more graphs than its budget (``GRAPH_BUDGET``)."""


class Compiled:
    """One architecture's loss, compiled: one graph per input shape, at most ``GRAPH_BUDGET`` graphs.

    Each instance is its own ``torch.compile`` region (``isolate_recompiles``), with static shapes
    and dynamo's recompile limit set to the budget, so that architectures do not share dynamo's
    global limit. A shape beyond the budget stops the run with :class:`CompileBudgetError`, naming
    the architecture and the shapes, and never falls back to eager kernels silently (dynamo's own
    limit, a backstop, raises too: ``fail_on_recompile_limit_hit``).
    """

    regions = 0  # compiled regions in this process: dynamo's global cap is raised to fit them all

    def __init__(self, fn: Callable, name: str, stacked: bool):
        self.name = name
        self.stacked = stacked
        self.shapes: set[tuple[int, ...]] = set()
        self.fn = torch.compile(
            fn,
            backend=COMPILE_BACKEND,
            dynamic=False,
            recompile_limit=GRAPH_BUDGET,
            isolate_recompiles=True,
        )
        Compiled.regions += 1
        config = torch._dynamo.config
        config.accumulated_recompile_limit = max(
            config.accumulated_recompile_limit, GRAPH_BUDGET * self.regions
        )

    def __call__(self, params: Tensors, buffers: Tensors, x, y, w, valid) -> torch.Tensor:
        shape = tuple(x.shape)
        if shape not in self.shapes and len(self.shapes) >= GRAPH_BUDGET:
            raise CompileBudgetError(self._over(shape, f"beyond its budget of {GRAPH_BUDGET} graphs"))
        self.shapes.add(shape)
        try:
            with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
                return self.fn(params, buffers, x, y, w, valid)
        except torch._dynamo.exc.FailOnRecompileLimitHit as e:
            raise CompileBudgetError(self._over(shape, "and dynamo hit its recompile limit")) from e

    def _over(self, shape: tuple[int, ...], why: str) -> str:
        seen = ", ".join(self._shape(s) for s in sorted(self.shapes - {shape}))
        return (
            f"engine.compile=true: {self.name} would compile a graph for {self._shape(shape)} {why} "
            f"(compiled: {seen or 'none'}); use fewer batch sizes per architecture, engine.max_models "
            "to cap the models per call, or engine.compile=false"
        )

    def _shape(self, shape: tuple[int, ...]) -> str:
        """An input shape as a reader sees it: ``8 models × batch 64``, or ``batch 64`` for one model."""
        return f"{shape[0]} models × batch {shape[1]}" if self.stacked else f"batch {shape[0]}"


def model_loss(
    logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, dtype: torch.dtype, summed: bool = False
) -> torch.Tensor:
    """One model's mean (weighted) cross-entropy, with the values the sequential engine's
    ``F.cross_entropy(reduction="none")`` gives: ``-log_softmax(logits)[i, y_i]``. (Written out, since
    under vmap ``cross_entropy`` runs a slow Python decomposition of ``nll_loss``.) ``summed``: the sum
    of ``loss × w``, where ``w`` already holds each sample's share (a padded batch: 0 for padding).

    >>> z, y = torch.zeros(3, 2), torch.tensor([0, 1, 0])
    >>> model_loss(z, y, torch.tensor([0.5, 0.5, 0.0]), torch.float32, summed=True)
    tensor(0.6931)
    """
    losses = -logits.to(dtype).log_softmax(-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    if w is not None:
        losses = losses * w
    return losses.sum() if summed else losses.mean()


def masked_batchnorm(model: nn.Module) -> list[str]:
    """Make every BatchNorm of ``model`` take its batch statistics over valid samples only; return
    their names.

    Each gets a ``valid`` buffer ``(batch,)`` (bool), given to ``functional_call`` with the state:
    the mean and the (biased) variance that normalise, and the unbiased variance that updates the
    running statistics, are those of the valid samples, as ``torch.nn.BatchNorm`` computes them on
    those samples alone. Padded samples are normalised with the same statistics and never count.
    """
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_buffer("valid", torch.ones(0, dtype=torch.bool, device="meta"), persistent=False)
            module.forward = _masked_forward.__get__(module)
            names.append(name)
    return names


def _masked_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if not (self.training or self.running_mean is None):  # evaluation: running statistics
        return nn.functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )
    dims = [0, *range(2, x.dim())]
    channel = [1, -1, *[1] * (x.dim() - 2)]  # a per-channel value, broadcast over x
    keep = self.valid.view(-1, *[1] * (x.dim() - 1))
    n = (self.valid.sum() * x[0, 0].numel()).clamp(min=1)  # a model without a batch: no 0/0
    mean = torch.where(keep, x, 0.0).sum(dims) / n
    centred = x - mean.view(channel)
    var = torch.where(keep, centred, 0.0).pow(2).sum(dims) / n
    if self.training and self.running_mean is not None:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            unbiased = var * n / (n - 1).clamp(min=1)
            self.running_mean.mul_(1 - self.momentum).add_(mean * self.momentum)
            self.running_var.mul_(1 - self.momentum).add_(unbiased * self.momentum)
    out = centred * (var + self.eps).rsqrt().view(channel)
    if self.weight is not None:
        out = out * self.weight.view(channel) + self.bias.view(channel)
    return out


def batchnorm_in_float32(model: nn.Module) -> None:
    """Feed BatchNorm its input in its own dtype: under bf16 autocast, vmap's BatchNorm rule rejects a
    bfloat16 input with float32 statistics (a plain module accepts it). A no-op without autocast."""

    def cast(module: nn.Module, args: tuple) -> tuple:
        return (args[0].to(module.running_mean.dtype), *args[1:])

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.register_forward_pre_hook(cast)
