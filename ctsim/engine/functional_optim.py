"""SGD, Adam and AdamW applied to M models' flat parameters at once, with per-model hyperparameters.

The batched engine holds the trainable parameters of M models as one ``(M, P)`` tensor: row m is
model m's parameters, flattened and concatenated. :class:`StackedOptimizer` updates all of them in
place with a fixed number of tensor ops, whatever M and however many parameter tensors a model has:
hyperparameters are ``(M, 1)`` columns broadcast over the rows.

Which models step when is known before training (the engine's step plan), so :meth:`plan` works out
every step's per-model scalars (learning rates, Adam's bias corrections, ...) in one go, and a step
only indexes them. A model that sits a step out has a zero gradient and gets neutral scalars for that step
(no learning rate, no weight decay, momentum and betas of 1): its parameters and optimizer state stay
bit for bit as they were (provided they are finite).

The update rules copy ``torch.optim``'s single-tensor path (``maximize=False``, ``amsgrad=False``,
``dampening=0``) operation for operation, so that on the CPU float64 results agree with plain
``torch.optim`` to the last bit or so per step. Per-model scalars (learning rates, bias corrections)
are computed in float64, as ``torch.optim`` computes them in Python floats, and rounded to the
parameters' dtype only where they meet the parameters. On CUDA ``torch.optim`` defaults to its
``foreach`` kernels, which round a little differently (far below the engines' tolerances).

>>> params = torch.zeros(2, 3, dtype=torch.float64)
>>> opt = StackedOptimizer([SGD(lr=0.1), SGD(lr=0.5)], params)
>>> active = torch.tensor([[True, False]])  # one step; model 1 sits it out
>>> opt.plan(active, lr=torch.tensor([[0.1, 0.5]], dtype=torch.float64))
>>> opt.step(params, torch.ones(2, 3, dtype=torch.float64), 0, active[0])
>>> params[:, 0].tolist(), opt.steps.tolist()
([-0.1, 0.0], [1.0, 0.0])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ctsim.engine.optim import SGD, Adam, AdamW

# Per-model scalars are kept in float64: torch.optim computes them as Python floats.
_SCALAR = torch.float64


class StackedOptimizer:
    """One optimizer kind (SGD, Adam or AdamW) applied to M models' flat parameters ``(M, P)`` at once.

    Args:
        specs: model m's optimizer settings at ``specs[m]``; all of one class (SGD, Adam or AdamW).
        params: the flat parameters, ``(M, P)``.

    Attributes:
        state: the flat optimizer state, each ``(M, P)``: ``momentum_buffer`` for SGD with momentum,
            ``exp_avg`` and ``exp_avg_sq`` for Adam and AdamW.
        steps: ``(M,)`` float64, how many steps each model has taken.
    """

    def __init__(self, specs: Sequence[SGD | Adam | AdamW], params: torch.Tensor):
        kinds = sorted({type(s).__name__ for s in specs})
        if len(kinds) != 1 or type(specs[0]) not in (SGD, Adam, AdamW):
            raise ValueError(f"all models need one optimizer class (SGD, Adam or AdamW), got {kinds}")
        if params.dim() != 2 or len(params) != len(specs):
            raise ValueError(f"params must be (models, parameters) with {len(specs)} rows")
        self.kind = type(specs[0])
        self.dtype = params.dtype
        device = params.device

        def column(values: list, dtype: torch.dtype = _SCALAR) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device).unsqueeze(1)

        self.weight_decay = column([s.weight_decay for s in specs])
        # Skip whole terms that no model uses: fewer kernels, and the same arithmetic as torch.optim.
        self._any_weight_decay = any(s.weight_decay != 0 for s in specs)
        self.steps = torch.zeros(len(specs), dtype=_SCALAR, device=device)
        if self.kind is SGD:
            self.momentum = column([s.momentum for s in specs])
            self.nesterov = column([s.nesterov for s in specs], torch.bool)
            self._any_momentum = any(s.momentum != 0 for s in specs)
            self._any_nesterov = any(s.nesterov for s in specs)
            self._momentum = self.momentum.to(self.dtype)
            names = ["momentum_buffer"] if self._any_momentum else []
        else:
            self.beta1 = column([s.betas[0] for s in specs])
            self.beta2 = column([s.betas[1] for s in specs])
            self.eps = column([s.eps for s in specs]).to(self.dtype)
            names = ["exp_avg", "exp_avg_sq"]
        self.state = {name: torch.zeros_like(params) for name in names}

    @torch.no_grad()
    def plan(self, active: torch.Tensor, lr: torch.Tensor) -> None:
        """Work out every step's per-model scalars at once, before training.

        ``active`` ``(T, M)``: model m steps at step t; ``lr`` ``(T, M)`` float64: its learning rate
        then. A model's step count at each step, and so Adam's bias corrections, follow from
        ``active``: every scalar of every step is a row of a table, and a step only indexes it.
        """
        on = active.unsqueeze(2)
        steps = active.to(_SCALAR).cumsum(0).unsqueeze(2).clamp(min=1)  # no 0/0 before a first step
        lr = lr.to(_SCALAR).unsqueeze(2)
        table = {"neg_lr": torch.where(on, -lr, 0.0)}
        if self._any_weight_decay:
            table["weight_decay"] = torch.where(on, self.weight_decay, 0.0)
        if self.kind is SGD and self._any_momentum:
            # torch.optim keeps no buffer when momentum == 0 and starts it as a copy of the gradient: a
            # momentum of 0 on the (zero) buffer does both. A model sitting out keeps its buffer (× 1 + 0).
            restart = (steps == 1) | (self.momentum == 0)
            table["momentum"] = torch.where(on, torch.where(restart, 0.0, self.momentum), 1.0)
        elif self.kind is not SGD:
            table["decay"] = torch.where(on, 1 - lr * self.weight_decay, 1.0)
            table["one_minus_beta1"] = torch.where(on, 1 - self.beta1, 0.0)
            table["beta2"] = torch.where(on, self.beta2, 1.0)
            table["one_minus_beta2"] = torch.where(on, 1 - self.beta2, 0.0)
            table["bias_correction2_sqrt"] = (1 - self.beta2**steps) ** 0.5
            table["step_size"] = torch.where(on, -(lr / (1 - self.beta1**steps)), 0.0)
        # Rounded to the parameters' dtype where they meet the parameters, as torch.optim's Python floats.
        self._table = {k: v.to(self.dtype) for k, v in table.items()}

    @torch.no_grad()
    def step(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        t: int,
        active: torch.Tensor,
        skip: torch.Tensor | None = None,
    ) -> None:
        """Update the ``active`` models in place with step ``t`` of the :meth:`plan`.

        ``grads`` is used as scratch space; its rows of the models that sit the step out must be zero
        (the engine's are). Those models keep their parameters, state and step count bit for bit.
        ``skip`` ``(M, P)`` marks entries that got no gradient at all (a parameter the forward pass did
        not use): they keep their values and state bit for bit, as ``torch.optim`` skips a parameter
        whose ``grad`` is None (no weight decay, no momentum). Adam's step count stays per model.
        """
        kept = None if skip is None else [v.clone() for v in (params, *self.state.values())]
        self.steps += active
        k = {name: value[t] for name, value in self._table.items()}
        if self.kind is SGD:
            self._sgd(params, grads, k)
        else:
            self._adam(params, grads, k)
        if kept is not None:
            for now, was in zip((params, *self.state.values()), kept):
                torch.where(skip, was, now, out=now)

    def _sgd(self, param, grad, k) -> None:
        if self._any_weight_decay:  # grad + wd·param
            grad.addcmul_(param, k["weight_decay"])
        direction = grad
        if self._any_momentum:
            buf = self.state["momentum_buffer"].mul_(k["momentum"]).add_(grad)
            direction = buf
            if self._any_nesterov:  # grad + momentum·buf
                nesterov = torch.addcmul(grad, buf, self._momentum)
                direction = torch.where(self.nesterov, nesterov, buf)
        param.addcmul_(direction, k["neg_lr"])

    def _adam(self, param, grad, k) -> None:
        if self._any_weight_decay and self.kind is AdamW:
            param.mul_(k["decay"])
        elif self._any_weight_decay:  # grad + wd·param
            grad.addcmul_(param, k["weight_decay"])
        exp_avg, exp_avg_sq = self.state["exp_avg"], self.state["exp_avg_sq"]
        exp_avg.lerp_(grad, k["one_minus_beta1"])
        exp_avg_sq.mul_(k["beta2"]).addcmul_(grad * k["one_minus_beta2"], grad)
        denom = (exp_avg_sq.sqrt() / k["bias_correction2_sqrt"]).add_(self.eps)
        param.addcdiv_(exp_avg * k["step_size"], denom)

    def model_state(self, m: int) -> dict[str, torch.Tensor]:
        """Model m's flat state, with ``step`` for Adam(W) (empty where ``torch.optim`` keeps none)."""
        return self.model_states()[m]

    def model_states(self) -> list[dict[str, torch.Tensor]]:
        """Every model's :meth:`model_state`, on the CPU: one transfer per state tensor, not per model."""
        steps = self.steps.cpu()
        state = {k: v.cpu() for k, v in self.state.items()}
        keeps = steps != 0  # on the CPU: reading it waits for nothing
        if self.kind is SGD:
            keeps &= self.momentum[:, 0].cpu() != 0
        found = []
        for m, keep in enumerate(keeps.tolist()):
            if not keep:
                found.append({})
                continue
            step = {} if self.kind is SGD else {"step": steps[m].clone()}
            found.append({**step, **{k: v[m].clone() for k, v in state.items()}})
        return found


@torch.no_grad()
def clip_grad_norm_(grads: torch.Tensor, max_norm: torch.Tensor) -> torch.Tensor:
    """Clip each row of the flat gradients ``(M, P)`` to a 2-norm of ``max_norm[m]``, in place, as
    ``torch.nn.utils.clip_grad_norm_`` does for one model; return the ``(M,)`` norms before clipping.

    Rows with ``max_norm[m] == inf`` are left untouched.

    >>> grads = torch.tensor([[3.0, 4.0], [3.0, 4.0]])
    >>> clip_grad_norm_(grads, torch.tensor([1.0, float("inf")])).tolist()
    [5.0, 5.0]
    >>> [round(v, 4) for v in grads[:, 0].tolist()]
    [0.6, 3.0]
    """
    total_norm = torch.linalg.vector_norm(grads, dim=1)
    max_norm = max_norm.to(total_norm)
    # torch computes `max_norm / (total_norm + 1e-6)` with a Python float, i.e. as reciprocal() * max_norm.
    clip_coef = ((total_norm + 1e-6).reciprocal() * max_norm).clamp(max=1.0)
    clip_coef = torch.where(max_norm.isinf(), 1.0, clip_coef)
    grads.mul_(clip_coef.unsqueeze(1))
    return total_norm
