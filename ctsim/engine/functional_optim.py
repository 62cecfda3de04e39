"""SGD, Adam and AdamW applied to M models' stacked parameters at once, with per-model hyperparameters.

The batched engine holds each parameter as one tensor whose leading dimension is the model index,
shape ``(M, *param_shape)``. :class:`StackedOptimizer` updates all M models with a fixed number of
tensor ops per parameter name, whatever M is: hyperparameters are ``(M,)`` tensors broadcast over
the leading dimension, and models that sit a step out are masked with ``torch.where``.

The update rules copy ``torch.optim``'s single-tensor path (torch 2.15, ``maximize=False``,
``amsgrad=False``, ``dampening=0``) operation for operation, so that on the CPU float64 results agree
with plain ``torch.optim`` to the last bit or so per step. Per-model scalars (learning rates, bias
corrections) are computed in float64, as ``torch.optim`` computes them in Python floats, and rounded
to the parameters' dtype only where they meet the parameters. On CUDA ``torch.optim`` defaults to its
``foreach`` kernels, which round a little differently (far below the engines' 1e-9 float64 tolerance).

>>> params = {"w": torch.zeros(2, 3, dtype=torch.float64)}
>>> opt = StackedOptimizer([SGD(lr=0.1), SGD(lr=0.5)], params)
>>> grads = {"w": torch.ones(2, 3, dtype=torch.float64)}
>>> opt.step(params, grads, lr_factor=torch.tensor([1.0, 1.0]), active=torch.tensor([True, False]))
>>> params["w"][:, 0].tolist()  # model 1 sat this step out
[-0.1, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ctsim.optim import SGD, Adam, AdamW

# Per-model scalars are kept in float64: torch.optim computes them as Python floats.
_SCALAR = torch.float64


class StackedOptimizer:
    """One optimizer kind (SGD, Adam or AdamW) applied to M models' stacked parameters at once.

    Args:
        specs: model m's optimizer settings at ``specs[m]``; all of one class (SGD, Adam or AdamW).
        params: the stacked parameters, ``name -> (M, *shape)``, all on one device and of one dtype.

    Attributes:
        state: per parameter name, the stacked optimizer state (``momentum_buffer`` for SGD,
            ``exp_avg`` and ``exp_avg_sq`` for Adam and AdamW), each shaped like the parameter.
        steps: ``(M,)`` float64, how many steps each model has taken.
    """

    def __init__(self, specs: Sequence[SGD | Adam | AdamW], params: Mapping[str, torch.Tensor]):
        kinds = sorted({type(s).__name__ for s in specs})
        if len(kinds) != 1 or type(specs[0]) not in (SGD, Adam, AdamW):
            raise ValueError(f"all models need one optimizer class (SGD, Adam or AdamW), got {kinds}")
        first = next(iter(params.values()), None)
        if first is None or any(
            (p.device, p.dtype, len(p)) != (first.device, first.dtype, len(specs)) for p in params.values()
        ):
            raise ValueError(
                f"params must be non-empty, on one device, of one dtype, with {len(specs)} models"
            )
        self.kind = type(specs[0])
        self.dtype = first.dtype

        def column(key: str, dtype: torch.dtype = _SCALAR) -> torch.Tensor:
            return torch.tensor([getattr(s, key) for s in specs], dtype=dtype, device=first.device)

        self.lr = column("lr")
        self.weight_decay = column("weight_decay")
        # Skip whole terms that no model uses: fewer kernels, and the same arithmetic as torch.optim.
        self._any_weight_decay = bool((self.weight_decay != 0).any())
        self.steps = torch.zeros(len(specs), dtype=_SCALAR, device=first.device)
        if self.kind is SGD:
            self.momentum = column("momentum")
            self.nesterov = column("nesterov", torch.bool)
            self._any_momentum = bool((self.momentum != 0).any())
            self._any_nesterov = bool(self.nesterov.any())
            names = ["momentum_buffer"] if self._any_momentum else []
        else:
            self.beta1 = torch.tensor([s.betas[0] for s in specs], dtype=_SCALAR, device=first.device)
            self.beta2 = torch.tensor([s.betas[1] for s in specs], dtype=_SCALAR, device=first.device)
            self.eps = column("eps")
            names = ["exp_avg", "exp_avg_sq"]
        self.state = {name: {k: torch.zeros_like(p) for k in names} for name, p in params.items()}

    @torch.no_grad()
    def step(
        self,
        params: dict[str, torch.Tensor],
        grads: Mapping[str, torch.Tensor],
        lr_factor: torch.Tensor,
        active: torch.Tensor,
    ) -> None:
        """Update ``params`` and the state in place; model m uses ``specs[m].lr * lr_factor[m]``.

        Models with ``active[m] == False`` keep their parameters, state and step count bit for bit.
        ``grads`` are left unchanged.
        """
        lr = self.lr * lr_factor.to(_SCALAR)
        torch.where(active, self.steps + 1, self.steps, out=self.steps)
        if self.kind is SGD:
            self._sgd(params, grads, lr, active)
        else:
            self._adam(params, grads, lr, active, decoupled=self.kind is AdamW)

    def _sgd(self, params, grads, lr, active) -> None:
        # torch.optim keeps no buffer when momentum == 0, and starts it as a copy of the gradient.
        restart = (self.steps == 1) | (self.momentum == 0)
        k = self._in_param_dtype(weight_decay=self.weight_decay, momentum=self.momentum, neg_lr=-lr)
        for name, param in params.items():
            grad = grads[name]
            if self._any_weight_decay:  # grad + wd·param
                grad = torch.addcmul(grad, param, _per_model(k["weight_decay"], param))
            direction = grad
            if self._any_momentum:
                buf = self.state[name]["momentum_buffer"]
                momentum = _per_model(k["momentum"], param)
                buf_new = torch.where(_per_model(restart, param), grad, buf * momentum + grad)
                _commit(buf, buf_new, active)
                direction = buf_new
                if self._any_nesterov:  # grad + momentum·buf
                    nesterov = torch.addcmul(grad, buf_new, momentum)
                    direction = torch.where(_per_model(self.nesterov, param), nesterov, buf_new)
            _commit(param, torch.addcmul(param, direction, _per_model(k["neg_lr"], param)), active)

    def _adam(self, params, grads, lr, active, decoupled: bool) -> None:
        # Inactive models may divide by a zero bias correction here; torch.where discards their values.
        bias_correction1 = 1 - self.beta1**self.steps
        bias_correction2 = 1 - self.beta2**self.steps
        k = self._in_param_dtype(
            weight_decay=self.weight_decay,
            decay=1 - lr * self.weight_decay,
            one_minus_beta1=1 - self.beta1,
            beta2=self.beta2,
            one_minus_beta2=1 - self.beta2,
            bias_correction2_sqrt=bias_correction2**0.5,
            eps=self.eps,
            neg_step_size=-(lr / bias_correction1),
        )
        for name, param in params.items():
            grad, state = grads[name], self.state[name]
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            new_param = param
            if self._any_weight_decay and decoupled:
                new_param = param * _per_model(k["decay"], param)
            elif self._any_weight_decay:  # grad + wd·param
                grad = torch.addcmul(grad, param, _per_model(k["weight_decay"], param))
            exp_avg_new = torch.lerp(exp_avg, grad, _per_model(k["one_minus_beta1"], param))
            exp_avg_sq_new = torch.addcmul(
                exp_avg_sq * _per_model(k["beta2"], param),
                grad * _per_model(k["one_minus_beta2"], param),
                grad,
            )
            denom = exp_avg_sq_new.sqrt() / _per_model(k["bias_correction2_sqrt"], param)
            denom.add_(_per_model(k["eps"], param))
            new_param = torch.addcdiv(new_param, exp_avg_new * _per_model(k["neg_step_size"], param), denom)
            _commit(exp_avg, exp_avg_new, active)
            _commit(exp_avg_sq, exp_avg_sq_new, active)
            _commit(param, new_param, active)

    def _in_param_dtype(self, **scalars: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-model float64 scalars rounded to the parameters' dtype, as torch.optim's Python floats are."""
        return {key: value.to(self.dtype) for key, value in scalars.items()}

    def model_state(self, m: int) -> dict[str, dict[str, torch.Tensor]]:
        """Model m's state, shaped like ``torch.optim``'s per-parameter state (for tests)."""
        if self.steps[m] == 0 or (self.kind is SGD and self.momentum[m] == 0):
            return {name: {} for name in self.state}  # torch.optim has no state here either
        step = {} if self.kind is SGD else {"step": self.steps[m].clone()}
        return {name: {**step, **{k: v[m].clone() for k, v in s.items()}} for name, s in self.state.items()}


@torch.no_grad()
def clip_grad_norm_(grads: Mapping[str, torch.Tensor], max_norm: torch.Tensor) -> torch.Tensor:
    """Clip each model's gradients to a global 2-norm of ``max_norm[m]``, in place, as
    ``torch.nn.utils.clip_grad_norm_`` does for one model; return the ``(M,)`` norms before clipping.

    Models with ``max_norm[m] == inf`` are left untouched.

    >>> grads = {"w": torch.tensor([[3.0, 4.0], [3.0, 4.0]])}
    >>> clip_grad_norm_(grads, torch.tensor([1.0, float("inf")])).tolist()
    [5.0, 5.0]
    >>> [round(v, 4) for v in grads["w"][:, 0].tolist()]
    [0.6, 3.0]
    """
    per_param = [torch.linalg.vector_norm(g.reshape(len(g), -1), dim=1) for g in grads.values()]
    total_norm = torch.linalg.vector_norm(torch.stack(per_param, dim=1), dim=1)
    max_norm = max_norm.to(total_norm)
    # torch computes `max_norm / (total_norm + 1e-6)` with a Python float, i.e. as reciprocal() * max_norm.
    clip_coef = ((total_norm + 1e-6).reciprocal() * max_norm).clamp(max=1.0)
    clip_coef = torch.where(max_norm.isinf(), 1.0, clip_coef)
    for g in grads.values():
        g.mul_(_per_model(clip_coef, g))
    return total_norm


def _per_model(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """An ``(M,)`` tensor viewed as ``(M, 1, ..., 1)`` to broadcast over ``like``'s leading dimension."""
    return x.view(-1, *([1] * (like.dim() - 1)))


def _commit(old: torch.Tensor, new: torch.Tensor, active: torch.Tensor) -> None:
    """Write ``new`` into ``old`` for active models; inactive ones keep their old values bit for bit."""
    torch.where(_per_model(active, old), new, old, out=old)
