"""The batched engine: every due job of one architecture trained in one ``torch.func`` pass per step.

Jobs with the same architecture and optimizer kind are stacked (``stack_module_state``) and trained
together: one ``vmap(grad_and_value(...))`` call per step computes every model's gradient of its own
mean loss on its own batch, and one stacked optimizer update (:mod:`ctsim.engine.functional_optim`)
applies every model's own hyperparameters. The result is training each model alone (the sequential
engine), which the equivalence tests check:

* **Per-model state.** Each model keeps its own data order (its own ``torch.Generator``, drawn exactly
  as the sequential engine draws it), batch size, learning rate and schedule, momentum, weight decay,
  Adam betas, epochs, optimizer state, step count, gradient clipping and BatchNorm statistics; dropout
  masks come from each model's own seed (:class:`~ctsim.models.dropout.SeededDropout`).
* **Loss.** ``vmap(grad(...))`` differentiates each model's mean loss separately: the same as summing
  (never averaging) the models' losses into one population loss.
* **Unequal data.** A step trains the models that still have a batch. Models whose batches differ in
  size (the last batch of an epoch, different data sizes or batch sizes) are trained in one call per
  distinct size, so no model ever sees padding (BatchNorm statistics stay exact). Models that have
  finished their epochs are left out of the update: no step, no state change.
* **Non-finite members.** A model whose loss, parameters or buffers become non-finite is restored to
  its state before that step and frozen (``status = "nonfinite"``); the models share no arithmetic,
  so every other member's results are bit-identical to a run without it.
* **Memory.** Groups larger than the memory budget train in chunks of models, and evaluation runs in
  chunks of models × samples, so a population larger than the device's memory runs in parts.

With ``precision=bf16`` the forward passes run under ``torch.autocast`` in bfloat16: faster on GPUs,
but no longer equal to the float32 reference.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from ctsim.config import check, is_number, positive_int
from ctsim.engine.base import EngineSettings, State, Trained, TrainJob, predict_each
from ctsim.engine.functional_optim import StackedOptimizer, clip_grad_norm_
from ctsim.models.base import ModelSpec
from ctsim.schedules import ScheduleTable

CPU_BUDGET = 64 * 2**20  # bytes of activations per call on CPU (see BatchedEngine._budget)


class BatchedEngine(EngineSettings):
    """Trains and evaluates many models of one architecture at once (see the module docstring).

    Args:
        device: ``auto``, ``cpu`` or ``cuda``.
        dtype: ``float32`` or ``float64``.
        precision: ``fp32`` (exact) or ``bf16`` (autocast: faster on GPUs, not equal to the reference).
        eval_batch_size: test samples per forward pass when evaluating.
        max_models: at most this many models per vmap call; null sizes chunks to ``memory_gb``.
        memory_gb: the memory budget of one call (activations and parameters); null: 60% of the free
            GPU memory, or 64 MiB on CPU (cache-sized: see ``_budget``).
        tf32: allow TF32 matrix products on NVIDIA GPUs (faster, less exact).
    """

    name = "batched"
    record_optimizer_state = False  # set True to return each job's final optimizer state (for comparisons)

    def __init__(
        self,
        device: str = "auto",
        dtype: str = "float32",
        precision: str = "fp32",
        eval_batch_size: int = 256,
        max_models: int | None = None,
        memory_gb: float | None = None,
        tf32: bool = False,
    ):
        super().__init__(
            device,
            dtype,
            precision,
            eval_batch_size,
            tf32,
            [
                None if max_models is None else positive_int("max_models", max_models),
                check(
                    "memory_gb",
                    memory_gb,
                    memory_gb is None or (is_number(memory_gb) and memory_gb > 0),
                    "null or a number > 0",
                ),
            ],
        )
        self.max_models = max_models
        self.memory_bytes = None if memory_gb is None else int(memory_gb * 2**30)

    # ----------------------------------------------------------------------------------------- training

    def train(self, jobs: Sequence[TrainJob], x: torch.Tensor, y: torch.Tensor) -> list[Trained]:
        results: list[Trained | None] = [None] * len(jobs)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((job.model.key, type(job.optimizer).__name__), []).append(i)
        for rows in groups.values():
            spec = jobs[rows[0]].model
            batch = max(jobs[r].train.batch_size for r in rows)
            per_chunk = self._models_per_chunk(spec, batch, training=True)
            for chunk in _chunks(rows, per_chunk):
                group = [jobs[r] for r in chunk]
                for r, trained in zip(chunk, self._train_group(group, x, y, alone=per_chunk == 1)):
                    results[r] = trained
        return results  # type: ignore[return-value]

    def _train_group(
        self, jobs: list[TrainJob], x: torch.Tensor, y: torch.Tensor, alone: bool
    ) -> list[Trained]:
        """Train ``jobs`` together, step by step (``alone``: one job, without vmap)."""
        start = time.perf_counter()
        dev, dtype, num = self.device, self.dtype, len(jobs)
        models = []
        for job in jobs:
            model = job.model.build(seed=job.seed, dtype=dtype)
            if job.parent is not None:
                model.load_state_dict(job.parent)
            models.append(model)
        persistent = list(models[0].state_dict().keys())
        step = (_ModuleStep if alone else _VmapStep)(models, dev, dtype, self._autocast)
        params, buffers = step.params, step.buffers
        del models

        plan = _StepPlan(jobs, dev, dtype)
        optimizer = StackedOptimizer([job.optimizer for job in jobs], params)
        schedules = ScheduleTable.from_schedules([job.schedule for job in jobs], dev, torch.float64)
        clips = [math.inf if job.train.clip_grad_norm is None else job.train.clip_grad_norm for job in jobs]
        max_norm = torch.tensor(clips, device=dev, dtype=dtype) if any(map(math.isfinite, clips)) else None
        frozen = torch.zeros(num, dtype=torch.bool, device=dev)
        steps_done = torch.zeros(num, dtype=torch.long, device=dev)
        samples_done = torch.zeros(num, dtype=torch.long, device=dev)
        last_epoch_loss = torch.zeros(num, dtype=torch.float64, device=dev)

        for t in range(plan.max_steps):
            sizes = plan.batch_sizes(t).masked_fill(frozen, 0)
            if not bool((sizes > 0).any()):
                break
            # One call per distinct batch size: no model ever sees padding (see the module docstring).
            for b in sizes[sizes > 0].unique().tolist():
                rows = (sizes == b).nonzero().squeeze(1)
                whole = len(rows) == num
                keys, weights = plan.batch(rows, t, b)
                with torch.no_grad():
                    p = params if whole else {k: v[rows] for k, v in params.items()}
                    bu = buffers if whole else {k: v[rows] for k, v in buffers.items()}
                    saved_p = {k: v.clone() for k, v in p.items()}  # the last finite state, for NaN isolation
                    saved_b = {k: v.clone() for k, v in bu.items()}
                grads, losses = step(p, bu, x[keys].to(dtype), y[keys], weights)  # updates BatchNorm ``bu``
                with torch.no_grad():
                    if not whole:
                        for k, v in bu.items():
                            buffers[k][rows] = v
                        grads = {
                            k: torch.zeros_like(v).index_copy_(0, rows, grads[k]) for k, v in params.items()
                        }
                    if max_norm is not None:
                        clip_grad_norm_(grads, max_norm)
                    stepping = torch.zeros(num, dtype=torch.bool, device=dev).index_fill_(0, rows, True)
                    epoch = torch.div(t, plan.steps_per_epoch.clamp(min=1), rounding_mode="floor")
                    factors = schedules.factors(epoch, torch.full_like(epoch, t), plan.total_steps)
                    optimizer.step(params, grads, factors, stepping)

                    ok = torch.isfinite(losses)
                    ok &= _all_finite([params[k][rows] for k in params])
                    ok &= _all_finite([buffers[k][rows] for k in buffers if buffers[k].is_floating_point()])
                    if not bool(ok.all()):  # restore and freeze the members that went non-finite
                        bad = rows[~ok]
                        for k in params:
                            params[k][bad] = saved_p[k][~ok]
                        for k in buffers:
                            buffers[k][bad] = saved_b[k][~ok]
                        frozen[bad] = True
                    good = rows[ok]
                    steps_done[good] += 1
                    samples_done[good] += b
                    in_last = plan.in_last_epoch(t)[good]
                    last_epoch_loss[good] += torch.where(in_last, losses[ok].double() * b, 0.0)

        seconds = (time.perf_counter() - start) / num  # attributed equally to the group's models
        stacked = {**params, **buffers}
        results = []
        for m, job in enumerate(jobs):
            state = {k: stacked[k][m].detach().to("cpu", copy=True).contiguous() for k in persistent}
            n = len(job.keys)
            loss = float(last_epoch_loss[m]) / n if n and not frozen[m] else float("nan")
            status = "nonfinite" if bool(frozen[m]) else "ok"
            opt_state = None
            if self.record_optimizer_state:
                opt_state = {
                    name: {k: v.detach().to("cpu", copy=True) for k, v in st.items()}
                    for name, st in optimizer.model_state(m).items()
                }
            results.append(
                Trained(state, int(steps_done[m]), int(samples_done[m]), seconds, loss, status, opt_state)
            )
        return results

    # --------------------------------------------------------------------------------------- evaluation

    @torch.no_grad()
    def predict(
        self, model: ModelSpec, states: Sequence[State], x: torch.Tensor
    ) -> tuple[torch.Tensor, list[float]]:
        """Class predictions of every state on ``x``: models in chunks, the inputs shared by a chunk."""
        if not states:
            return torch.empty(0, len(x), dtype=torch.long), []
        per_chunk = self._models_per_chunk(model, self.eval_batch_size, training=False)
        net = model.build(dtype=self.dtype).to(self.device).eval()
        _batchnorm_in_float32(net)
        if per_chunk == 1:  # the budget takes one model at a time: a plain module, torch's own kernels
            return predict_each(net, states, x, self.eval_batch_size, self._autocast)

        def forward(state, xb):
            with self._autocast():
                return functional_call(net, state, (xb,), strict=False).argmax(-1)

        many = vmap(forward, in_dims=(0, None))
        preds, seconds = [], []
        for rows in _chunks(list(range(len(states))), per_chunk):
            start = time.perf_counter()
            chunk = [states[r] for r in rows]
            stacked = {k: torch.stack([s[k] for s in chunk]).to(self.device) for k in chunk[0]}
            if len(chunk) == 1:  # never a lone model in a vmap call (see _VmapStep): pair it with itself
                stacked = {k: torch.cat([v, v]) for k, v in stacked.items()}
            out = [
                many(stacked, x[i : i + self.eval_batch_size].to(self.device, self.dtype))[: len(chunk)]
                for i in range(0, len(x), self.eval_batch_size)
            ]
            preds.append(torch.cat(out, dim=1).cpu())
            seconds += [(time.perf_counter() - start) / len(chunk)] * len(chunk)
        return torch.cat(preds), seconds

    # ------------------------------------------------------------------------------------------- memory

    def _models_per_chunk(self, spec: ModelSpec, batch: int, training: bool) -> int:
        """How many models one call takes within the memory budget (``max_models`` caps it).

        Training keeps every layer's output for the backward pass (and makes gradients of them);
        evaluation holds about two layers' outputs at a time.
        """
        total, largest = activation_bytes(spec, self.dtype)
        per_sample = 3 * total if training else 2 * largest
        per_model = per_sample * batch + 4 * spec_parameters(spec) * self.dtype.itemsize
        fit = max(1, self._budget() // max(per_model, 1))
        return int(min(fit, self.max_models or fit))

    def _budget(self) -> int:
        """Bytes one call may use: ``memory_gb``; else 60% of the free GPU memory; on CPU, 64 MiB.

        On CPU the budget is cache-sized on purpose: stacking pays there only for small models (many
        small kernels become few); for convolutional nets, grouped convolutions and vmap's BatchNorm
        rules run slower on 2 cores than one model at a time, which this budget then chooses.
        """
        if self.memory_bytes is not None:
            return self.memory_bytes
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(0.6 * free)
        return CPU_BUDGET


def _loss(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One model's mean (weighted) cross-entropy, exactly as the sequential engine computes it."""
    return (F.cross_entropy(logits.to(dtype), y, reduction="none") * w).mean()


class _ModuleStep:
    """One model trained alone: an ordinary module and ``torch.autograd`` (torch's own kernels).

    ``params`` and ``buffers`` are views (with a leading model dimension of 1) of the module's own
    tensors, so the stacked optimizer and the NaN bookkeeping work on them as on a stack.
    """

    def __init__(self, models: list[nn.Module], device: torch.device, dtype: torch.dtype, autocast):
        (model,) = models
        self.model = model.to(device).train()
        self.params = {k: v.unsqueeze(0) for k, v in self.model.named_parameters()}
        self.buffers = {k: v.unsqueeze(0) for k, v in self.model.named_buffers()}
        self.dtype, self.autocast = dtype, autocast

    def __call__(self, p, bu, xb, yb, wb):
        with self.autocast():
            logits = self.model(xb[0])
        loss = _loss(logits, yb[0], wb[0], self.dtype)
        grads = torch.autograd.grad(loss, list(self.model.parameters()))
        return {k: g.unsqueeze(0) for k, g in zip(self.params, grads)}, loss.detach().unsqueeze(0)


class _VmapStep:
    """Several models per call: ``vmap(grad_and_value(...))`` over their stacked state.

    Each model differentiates its own mean loss (never a population mean, which would divide every
    learning rate by the number of models). A lone model in a vmap call would take other kernels
    (a plain instead of a grouped convolution) than it takes beside others, so it is paired with a
    copy of itself: which models share a step never changes a model's arithmetic.
    """

    def __init__(self, models: list[nn.Module], device: torch.device, dtype: torch.dtype, autocast):
        params, buffers = stack_module_state(models)
        self.params = {k: v.detach().to(device) for k, v in params.items()}
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        base = copy.deepcopy(models[0]).to("meta").train()
        _batchnorm_in_float32(base)

        def loss_fn(p, b, xb, yb, wb):
            with autocast():
                logits = functional_call(base, (p, b), (xb,))
            return _loss(logits, yb, wb, dtype)

        self.fn = vmap(grad_and_value(loss_fn))

    def __call__(self, p, bu, xb, yb, wb):
        if xb.shape[0] > 1:
            return self.fn(p, bu, xb, yb, wb)

        def twice(d):
            return {k: torch.cat([v, v]) for k, v in d.items()}

        twin = twice(bu)
        grads, loss = self.fn(twice(p), twin, torch.cat([xb, xb]), torch.cat([yb, yb]), torch.cat([wb, wb]))
        with torch.no_grad():
            for k, v in bu.items():
                v.copy_(twin[k][:1])
        return {k: g[:1] for k, g in grads.items()}, loss[:1]


class _StepPlan:
    """Every model's batches, drawn exactly as the sequential engine draws them.

    Model ``m`` trains ``epochs_m × ceil(n_m / batch_m)`` steps; at step ``t`` it is in epoch
    ``t // steps_per_epoch_m`` and takes the next ``batch_m`` keys (fewer at the end of an epoch) of
    that epoch's permutation, which its own generator draws (one ``randperm`` per epoch).
    """

    def __init__(self, jobs: Sequence[TrainJob], device: torch.device, dtype: torch.dtype):
        n = torch.tensor([len(j.keys) for j in jobs])
        batch = torch.tensor([j.train.batch_size for j in jobs])
        epochs = torch.tensor([j.train.epochs for j in jobs])
        self.steps_per_epoch = (-(-n // batch)).to(device)
        self.total_steps = (self.steps_per_epoch.cpu() * epochs).to(device)
        self.max_steps = int(self.total_steps.max()) if len(jobs) else 0
        width = max(1, int((n * epochs).max()))
        order = torch.zeros(len(jobs), width, dtype=torch.long)
        weights = torch.ones(len(jobs), width, dtype=dtype)
        for m, job in enumerate(jobs):
            g = torch.Generator().manual_seed(job.seed)
            perms = [torch.randperm(len(job.keys), generator=g) for _ in range(job.train.epochs)]
            if perms and len(job.keys):
                flat = torch.cat(perms)
                order[m, : len(flat)] = job.keys[flat]
                if job.weights is not None:
                    weights[m, : len(flat)] = job.weights[flat]
        self.order, self.weights = order.to(device), weights.to(device)
        self.n, self.batch_size = n.to(device), batch.to(device)
        self.epochs = epochs.to(device)

    def batch_sizes(self, t: int) -> torch.Tensor:
        """Each model's batch size at step ``t`` (0 once it has finished)."""
        j = t % self.steps_per_epoch.clamp(min=1)
        size = torch.minimum(self.batch_size, self.n - j * self.batch_size)
        return torch.where(t < self.total_steps, size, 0)

    def batch(self, rows: torch.Tensor, t: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and loss weights ``(len(rows), size)`` of those models' batches at step ``t``."""
        spe = self.steps_per_epoch[rows]
        epoch, j = t // spe, t % spe
        start = epoch * self.n[rows] + j * self.batch_size[rows]
        cols = start.unsqueeze(1) + torch.arange(size, device=rows.device)
        return self.order[rows.unsqueeze(1), cols], self.weights[rows.unsqueeze(1), cols]

    def in_last_epoch(self, t: int) -> torch.Tensor:
        return t >= (self.epochs - 1) * self.steps_per_epoch


def _batchnorm_in_float32(model: nn.Module) -> None:
    """Feed BatchNorm its input in its own dtype: under bf16 autocast, vmap's BatchNorm rule rejects a
    bfloat16 input with float32 statistics (a plain module accepts it). A no-op without autocast."""

    def cast(module: nn.Module, args: tuple) -> tuple:
        return (args[0].to(module.running_mean.dtype), *args[1:])

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.register_forward_pre_hook(cast)


def _chunks(rows: list[int], size: int) -> list[list[int]]:
    """``rows`` in chunks of ``size``; a lone model left over joins the chunk before it.

    A vmap call of one model takes other kernels than one of several, so (for ``size ≥ 2``) no chunk
    holds a lone model: which models share a chunk then never changes a model's arithmetic.

    >>> _chunks(list(range(7)), 3), _chunks(list(range(5)), 2), _chunks([0, 1], 1)
    ([[0, 1, 2], [3, 4, 5, 6]], [[0, 1], [2, 3, 4]], [[0], [1]])
    """
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
    if size > 1 and len(chunks) > 1 and len(chunks[-1]) == 1:
        last = chunks.pop()
        chunks[-1] += last
    return chunks


def _all_finite(tensors: list[torch.Tensor]) -> torch.Tensor | bool:
    """Per model (leading dimension): are all its values finite? (True when there are no tensors.)"""
    ok: torch.Tensor | bool = True
    for v in tensors:
        ok = ok & torch.isfinite(v.reshape(v.shape[0], -1)).all(1)
    return ok


_activation_cache: dict[tuple[str, torch.dtype], tuple[int, int]] = {}


def activation_bytes(spec: ModelSpec, dtype: torch.dtype) -> tuple[int, int]:
    """Bytes of one sample's layer outputs: all of them (kept for backward), and the largest one.

    Measured with forward hooks on the leaf modules; computation outside modules (a recurrent
    loop's steps) is not seen, so for such models this is a lower bound.
    """
    key = (spec.key, dtype)
    if key not in _activation_cache:
        model = spec.build(seed=0, dtype=dtype).eval()
        sizes = [spec_input_bytes(spec, dtype)]

        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                sizes.append(output.numel() * output.element_size())

        handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
        with torch.no_grad():
            model(torch.zeros(1, *spec.input_shape, dtype=dtype))
        for h in handles:
            h.remove()
        _activation_cache[key] = (sum(sizes), max(sizes))
    return _activation_cache[key]


def spec_input_bytes(spec: ModelSpec, dtype: torch.dtype) -> int:
    return math.prod(spec.input_shape) * dtype.itemsize


def spec_parameters(spec: ModelSpec) -> int:
    return sum(p.numel() for p in spec.build().parameters())
