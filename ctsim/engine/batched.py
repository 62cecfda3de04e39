"""The batched engine: every due job of one architecture trained together, one stacked call per step.

Jobs with the same architecture, optimizer kind and frozen parameters form a group. A group trains
step by step: at each step one ``vmap`` call over ``functional_call`` computes every model's own mean
loss on its own batch, ``torch.autograd`` differentiates their sum (each model's gradient is that of
its own loss), and one stacked optimizer update (:mod:`ctsim.engine.functional_optim`) applies every
model's own hyperparameters. The result is training each model alone (the sequential engine), which
the equivalence tests check:

* **Per-model state.** Each model keeps its own data order (its own ``torch.Generator``, drawn exactly
  as the sequential engine draws it), batch size, learning rate and schedule, momentum, weight decay,
  Adam betas, epochs, optimizer state, step count, gradient clipping and BatchNorm statistics; dropout
  masks come from each model's own seed (:class:`~ctsim.models.dropout.SeededDropout`), and
  downsampling while training is its own: RS2 epoch subsets come from its generator, and
  batch-then-sample scores each model's batch with that model (a group shares one downsampling
  setting; :class:`_Kept`). Frozen
  parameters (``requires_grad=False``, or ``train.freeze``) are never differentiated nor updated, and
  a parameter the forward pass leaves unused in a step is not updated in that step (``torch.optim``
  skips a parameter without a gradient; Adam's step count is per model here, so the engine warns when
  a parameter is used in some steps only).
* **Unequal data.** Every step is planned before training (:mod:`ctsim.engine.plan`). When the
  models' batch sizes differ (other data sizes, batch sizes or epochs), ``ragged=pad`` (and ``auto``
  where splitting would make more than ``SPLIT_CALLS`` calls per step) still makes one call per
  step: batches padded to the group's largest batch size with a validity mask, each model's loss
  the mean over its valid samples, BatchNorm statistics over valid samples only
  (:func:`~ctsim.engine.stack.masked_batchnorm`). A group's models are ordered longest first, so the
  models that step are a slice of the stack. ``ragged=split`` makes one unpadded call per distinct
  batch size instead. Models that have finished are left out of the update, bit for bit.
* **Non-finite members.** Every update is checked on the device and kept or undone per model: a model
  whose loss, parameters or buffers became non-finite goes back to its state from before that step
  and is frozen (``status = "nonfinite"``), masked out of every later step. The host looks at the
  verdict only every ``SYNC_EVERY`` steps (to stop when every member has diverged), so no step waits
  for the device.
* **Routes.** ``route=vmap`` stacks the models of a group into one call; ``route=loop`` trains them one
  at a time through the plain module (torch's own kernels). ``auto`` takes ``vmap`` on GPUs, and on
  CPUs ``vmap`` for models without convolutions and ``loop`` for convolutional ones: on 2 CPU cores,
  grouped convolutions run slower than one model at a time (``ctsim bench --cases routes``).
  A model with layers vmap cannot stack (torch's ``nn.LSTM``/``GRU``/``RNN``, BatchNorm with
  ``momentum=None``, ``nn.Embedding`` with ``max_norm``, ``spectral_norm``) takes ``loop`` under
  ``auto``; ``vmap`` refuses it, naming the layers (:func:`~ctsim.engine.stack.vmap_problems`).
* **Memory.** A group larger than ``memory_budget`` trains in chunks of models, and evaluation runs in
  chunks of models × samples (:mod:`ctsim.engine.memory`); a CUDA out-of-memory error halves the chunk
  and tries again.

With ``precision=bf16`` the forward passes run under ``torch.autocast`` in bfloat16: faster on GPUs,
but no longer equal to the float32 reference. ``compile=true`` compiles the stacked loss with
``torch.compile`` (fused kernels: faster on GPUs after a compilation of tens of seconds per graph;
not bit-identical to the eager kernels). A graph holds one input shape, so sizes go into buckets
(:func:`~ctsim.engine.plan.bucket`: 1, 2, 3, 4, 6, 8, 12, 16, ...). Every step's batches are padded
to the bucket of the group's largest ``batch_size`` with the validity mask (partial last batches,
equal data and data smaller than one batch included), and each call's models to the bucket of their
number with dummy members (copies of the first model, their losses weighted 0 and dropped; vmap
keeps each member's arithmetic apart, so they change no real model). Chunks of models are cut at a
bucket. A whole run then compiles at most one graph per population bucket and batch bucket for each
architecture, each architecture in its own ``torch.compile`` region with its own budget of
``GRAPH_BUDGET`` graphs (:class:`~ctsim.engine.stack.Compiled`); a shape beyond it stops the run
with a one-line :class:`~ctsim.engine.stack.CompileBudgetError` instead of falling back to eager
kernels. Without ``compile`` nothing is bucketed: eager calls keep their exact sizes.
:attr:`BatchedEngine.graphs` lists the graphs compiled.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from ctsim.engine.base import (
    EngineSettings,
    Predictions,
    SignalRequest,
    State,
    Trained,
    TrainJob,
    build_model,
    check_state,
    global_rng,
    logits_of,
    predict_each,
)
from ctsim.engine.functional_optim import StackedOptimizer, clip_grad_norm_
from ctsim.engine.inference import for_inference
from ctsim.engine.memory import MemoryPlanner, budget_problem
from ctsim.engine.optim import SGD
from ctsim.engine.plan import Call, StepPlan, bucket, floor_bucket, is_ragged, split_calls
from ctsim.engine.scores import head_bias, score, top
from ctsim.engine.signals import Outputs, finish_stacked, no_embeddings, one_by_one
from ctsim.engine.signals import groups as signal_groups
from ctsim.engine.stack import (
    Losses,
    Stack,
    aliases,
    batchnorm_in_float32,
    compile_bounded,
    meta_copy,
    vmap_problems,
)
from ctsim.models.base import ModelSpec
from ctsim.validation import ConfigError, Problem, check, first_line, one_of, positive_int

SYNC_EVERY = 32  # steps between the lazy checks whether every model of a group has gone non-finite
ROUTES = ("auto", "vmap", "loop")
RAGGED = ("auto", "pad", "split")
# Under ragged=auto a group is split by batch size when that makes at most this many calls per step on
# average. Measured on CPU (ctsim bench --cases ragged): at 1.03 calls per step (the sea
# quickstart's mixed decision point) splitting was 3-8% faster; at 1.44 (the trigger study's sizes)
# padding was as fast or faster, at 8 to 256 models.
SPLIT_CALLS = 1.1
# What torch.func.vmap says when it cannot batch an operation (torch 2.x)
VMAP_REFUSALS = ("vmap:", "Batching rule not implemented", "batching rule")


@dataclass(eq=False)
class BatchedEngine(EngineSettings):
    """Trains and evaluates many models of one architecture at once (see the module docstring).

    Args:
        route: ``auto``, ``vmap`` (stack the models of a group) or ``loop`` (one model at a time).
        max_models: at most this many models per call; null: as many as the memory budget holds.
        memory_budget: bytes (a number > 1) or a fraction (0 < f ≤ 1) of the device memory free when a
            call starts; null: 0.6 of it. On CUDA, memory PyTorch has cached but not in use counts as free.
        compile: ``torch.compile`` the stacked loss (faster on GPUs, not bit-identical; sizes padded to
            buckets, a budget of graphs per architecture: see the module docstring).
        The others: :class:`~ctsim.engine.base.EngineSettings`.
    """

    name = "batched"

    route: str = "auto"
    max_models: int | None = None
    memory_budget: float | None = None
    compile: bool = False
    ragged: str = "auto"

    def problems(self) -> list[Problem | None]:
        return [
            one_of("route", self.route, list(ROUTES)),
            None if self.max_models is None else positive_int("max_models", self.max_models),
            budget_problem(self.memory_budget),
            check("compile", self.compile, isinstance(self.compile, bool), "true or false"),
            check(
                "compile",
                self.compile,
                self.compile is not True or compile_bounded(),
                f"false with torch {torch.__version__}: bounded compilation needs a torch whose "
                "torch.compile takes recompile_limit and isolate_recompiles (torch 2.14 has them)",
            ),
            one_of("ragged", self.ragged, list(RAGGED)),
        ]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.memory = MemoryPlanner(self.device, self.memory_budget)
        self._losses: dict[tuple, Losses] = {}
        self._kept: dict[tuple, _Kept] = {}
        self._kinds: dict[str, tuple[bool, list[str]]] = {}  # per architecture: convolutions, vmap_problems

    # ----------------------------------------------------------------------------------------- training

    def train(self, jobs: Sequence[TrainJob], x: torch.Tensor, y: torch.Tensor) -> list[Trained]:
        results: list[Trained | None] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            key = (job.model.key, type(job.optimizer).__name__, job.train.freeze, job.batch_then_sample)
            groups.setdefault(key, []).append(i)
        for rows in groups.values():
            group = [jobs[r] for r in rows]
            for r, trained in zip(rows, self._train_group(group, x, y)):
                results[r] = trained
        return results  # type: ignore[return-value]

    def vmapped(self, spec: ModelSpec) -> bool:
        """Does this engine stack models of this architecture (``route``, see the module docstring)?

        ``auto`` runs a model with layers vmap cannot stack (:func:`~ctsim.engine.stack.vmap_problems`)
        on the ``loop`` route; ``vmap`` refuses it, naming the layers.
        """
        if self.route == "loop":
            return False
        convolutional, problems = self._kind(spec)
        if self.route == "vmap":
            ConfigError.raise_all(self.route_problems(spec))
            return True
        return not problems and (self.device.type == "cuda" or not convolutional)

    def route_problems(self, spec: ModelSpec) -> list[Problem]:
        """``engine.route=vmap`` with a model that has layers vmap cannot stack: checked at start-up."""
        problems = self._kind(spec)[1] if self.route == "vmap" else []
        if not problems:
            return []
        expected = (
            f"a model vmap can stack; {spec.name} has layers it cannot: {'; '.join(problems)}. "
            "Use engine.route=loop (or auto, which picks it)"
        )
        return [Problem("engine.route", "vmap", expected)]

    def _kind(self, spec: ModelSpec) -> tuple[bool, list[str]]:
        """Whether the architecture has convolutions, and its layers vmap cannot stack."""
        if spec.key not in self._kinds:
            model = spec.build()
            convolutional = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
            self._kinds[spec.key] = (convolutional, vmap_problems(model))
        return self._kinds[spec.key]

    def _train_group(self, jobs: list[TrainJob], x: torch.Tensor, y: torch.Tensor) -> list[Trained]:
        """Train one group (one architecture, optimizer kind and set of frozen parameters)."""
        vmapped = self.vmapped(jobs[0].model)
        per_call, width = 1, None
        batch = max(job.widest_batch() for job in jobs)
        if self.compile:  # buckets: a few graphs per architecture, whatever the sizes (module docstring)
            batch = bucket(batch)
        if vmapped:
            per_call = self._models_per_call(jobs[0].model, batch, training=True)
            width = batch if self._pads(jobs) else None
        if self.compile:
            per_call, width = floor_bucket(per_call), batch
        if width is None:
            return self._train_in_chunks(jobs, x, y, per_call, vmapped, width)
        # Longest first: the models that step at any step are the first ones of their chunk (plan).
        order = sorted(range(len(jobs)), key=lambda m: -jobs[m].steps())
        trained = self._train_in_chunks([jobs[m] for m in order], x, y, per_call, vmapped, width)
        results: list[Trained] = [None] * len(jobs)  # type: ignore[list-item]
        for m, result in zip(order, trained):
            results[m] = result
        return results

    def _pads(self, jobs: list[TrainJob]) -> bool:
        """Pad this stacked group's batches (one call per step), or split them by size? ``auto`` pads
        where splitting would make more than ``SPLIT_CALLS`` calls per step on average: a padded call
        costs a few more ops than an unpadded one (its mask), an extra call a whole forward and backward."""
        if self.ragged == "split" or not is_ragged(jobs):
            return False
        return self.ragged == "pad" or split_calls(jobs) > SPLIT_CALLS

    def _train_in_chunks(self, jobs, x, y, per_call: int, vmapped: bool, width: int | None) -> list[Trained]:
        """Chunks of ``per_call`` models, one after another; a chunk that runs out of memory is halved."""
        out: list[Trained] = []
        for rows in _chunks(list(range(len(jobs))), per_call):
            chunk = [jobs[r] for r in rows]
            try:
                out += self._train_chunk(chunk, x, y, vmapped, width, len(jobs) == 1)
            except torch.OutOfMemoryError:
                if len(chunk) == 1:
                    raise
                torch.cuda.empty_cache()
                out += self._train_in_chunks(chunk, x, y, max(1, len(chunk) // 2), vmapped, width)
        return out

    def _models_per_call(self, spec: ModelSpec, batch: int, training: bool) -> int:
        fit = self.memory.models_per_call(spec, self.dtype, batch, training)
        return min(fit, self.max_models or fit)

    def _train_chunk(
        self,
        jobs: list[TrainJob],
        x: torch.Tensor,
        y: torch.Tensor,
        vmapped: bool,
        width: int | None = None,
        alone: bool = False,
    ) -> list[Trained]:
        """Train ``jobs`` together, step by step (:meth:`_step`); ``width``: batches padded to it;
        ``alone``: the group is this one model (a plain module call, no vmap)."""
        start = time.perf_counter()
        stack = Stack([build_model(job, self.dtype) for job in jobs], self.device)
        stack.alone = alone
        plan = StepPlan(jobs, self.device, self.dtype, width)
        optimizer = StackedOptimizer([job.optimizer for job in jobs], stack.flat)
        optimizer.plan(plan.active, plan.lr)
        run = _Run(
            stack,
            plan,
            optimizer,
            _clip_norms(jobs, self.device, self.dtype),
            self._losses_for(jobs[0], vmapped),
            self._kept_for(jobs[0], vmapped) if jobs[0].batch_then_sample is not None else None,
            _Tally(len(jobs), self.device),
        )
        with global_rng(jobs[0].seed if len(jobs) == 1 else None, self.device):
            for t in range(len(plan.calls)):
                if self._step(run, t, x, y):
                    break
        return self._results(jobs, stack, optimizer, run.tally, time.perf_counter() - start)

    def _step(self, run: _Run, t: int, x: torch.Tensor, y: torch.Tensor) -> bool:
        """Optimizer step ``t`` of every model of the chunk; True once every model has gone non-finite
        (checked every ``SYNC_EVERY`` steps: the one host sync)."""
        stack, plan, tally = run.stack, run.plan, run.tally
        work = stack.buffers.clone()  # the forward pass updates BatchNorm statistics and dropout counters
        grads, losses, skip = self._gradients(stack, work, plan.calls[t], run.losses, x, y, run.kept)
        active = plan.active[t] & ~tally.frozen
        if plan.idle:  # a padded call holds models without a batch: no gradient, no loss
            grads = torch.where(plan.active[t].unsqueeze(1), grads, 0.0)
            losses = torch.where(plan.active[t], losses, 0.0)
        if run.max_norm is not None:
            clip_grad_norm_(grads, run.max_norm)
        before = stack.flat.clone()  # the last finite state, kept by models that go non-finite
        run.optimizer.step(stack.flat, grads, t, active, skip)
        ok = _finite(losses, stack.flat, stack, work)
        _keep(stack, before, work, active & ok)
        tally.record(active, ok, losses, plan.samples[t], plan.scored[t], plan.last_epoch[t])
        return t % SYNC_EVERY == SYNC_EVERY - 1 and bool(tally.frozen.all())  # the lazy host sync

    def _gradients(
        self,
        stack: Stack,
        work: dict[torch.dtype, torch.Tensor],
        calls: list[Call],
        losses_of: Losses,
        x: torch.Tensor,
        y: torch.Tensor,
        kept: _Kept | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Gather each call's batches, run forward and loss, and backward: flat gradients ``(M, P)``,
        losses ``(M,)`` (zero for the models that do not step), and the ``(M, P)`` entries that got no
        gradient (parameters the forward pass did not use; None when every one was used). ``work``
        holds the buffers (flat per dtype, updated in place). ``kept`` cuts each batch first
        (batch-then-sample)."""
        if len(calls) == 1 and calls[0].whole:
            buffers = stack.buffers.views(work)
            frozen = stack.frozen.views()
            grads, losses, unused = self._call(
                stack, stack.flat, frozen, buffers, calls[0], losses_of, x, y, kept
            )
            skip = stack.columns(unused).expand_as(grads) if unused else None
            return grads, losses, skip
        if calls[0].valid is not None:  # padded: one call of the first r models, slices of the stack
            call, r, rest = calls[0], len(calls[0].rows), len(stack) - len(calls[0].rows)
            buffers = stack.buffers.views(work, rows=r)
            frozen = stack.frozen.views(rows=r)
            g, loss, unused = self._call(stack, stack.flat[:r], frozen, buffers, call, losses_of, x, y, kept)
            grads, losses = (F.pad(g, (0, 0, 0, rest)), F.pad(loss, (0, rest))) if rest else (g, loss)
            skip = stack.columns(unused).expand_as(grads) if unused else None
            return grads, losses, skip
        grads = torch.zeros_like(stack.flat)
        losses = torch.zeros(len(stack), dtype=self.dtype, device=self.device)
        skip = None
        for call in calls:
            rows = call.rows
            whole = stack.buffers.views(work)
            sub = {k: v.index_select(0, rows) for k, v in whole.items()}
            frozen = {k: v.index_select(0, rows) for k, v in stack.frozen.views().items()}
            flat = stack.flat.index_select(0, rows)
            g, loss, unused = self._call(stack, flat, frozen, sub, call, losses_of, x, y, kept)
            for k, v in whole.items():
                v.index_copy_(0, rows, sub[k])
            grads.index_copy_(0, rows, g)
            losses.index_copy_(0, rows, loss.to(self.dtype))
            if unused:
                skip = torch.zeros_like(grads, dtype=torch.bool) if skip is None else skip
                skip.index_copy_(0, rows, stack.columns(unused).expand(len(g), -1))
        return grads, losses, skip

    def _call(self, stack, flat, frozen, buffers, call: Call, losses_of: Losses, x, y, kept=None):
        """One stacked forward and backward pass: ``(r, P)`` gradients, ``(r,)`` losses, and the names
        of the trainable parameters that got no gradient."""
        if kept is not None:
            call = kept(stack.views(flat), frozen, buffers, call, x, y)
        leaves = {k: v.detach().requires_grad_() for k, v in stack.views(flat).items()}
        keys = call.keys.reshape(-1)
        xb = x.index_select(0, keys).view(*call.keys.shape, *x.shape[1:]).to(self.dtype)
        yb = y.index_select(0, keys).view(call.keys.shape)
        try:
            if call.scale is None:
                losses = losses_of({**leaves, **frozen}, buffers, xb, yb, call.weights, alone=stack.alone)
            else:  # padded: each sample's share of its model's mean; masks for BatchNorm only
                valid = call.valid if losses_of.norms else None
                losses = losses_of(
                    {**leaves, **frozen}, buffers, xb, yb, call.scale, valid, True, stack.alone
                )
        except RuntimeError as e:
            if "randomness" in str(e):
                raise RuntimeError(
                    "the model draws random numbers in its forward pass (e.g. F.dropout or torch.rand); "
                    "the batched engine needs per-model seeded randomness: use "
                    "ctsim.models.SeededDropout (or nn.Dropout, made seeded automatically), or "
                    "engine.route=loop"
                ) from e
            if losses_of.vmapped and any(phrase in str(e) for phrase in VMAP_REFUSALS):
                raise RuntimeError(
                    f"vmap cannot stack this model's forward pass ({first_line(e)}): it needs plain tensor "
                    "ops without data-dependent control flow, .item() or fused kernels (README: Adding a "
                    "policy or a model). Use engine.route=loop, which trains it one model at a time"
                ) from e
            raise
        grads = torch.autograd.grad(losses.sum(), list(leaves.values()), allow_unused=True)
        unused = frozenset(k for k, g in zip(leaves, grads) if g is None)
        stack.graded.update(k for k in leaves if k not in unused)
        stack.ungraded.update(unused)
        grads = [torch.zeros_like(v) if g is None else g for g, v in zip(grads, leaves.values())]
        flat_grads = torch.cat([g.reshape(len(flat), -1) for g in grads], dim=1) if grads else flat * 0
        return flat_grads, losses.detach(), unused

    def _losses_for(self, job: TrainJob, vmapped: bool) -> Losses:
        """The loss function of one architecture, kept for the whole run (compiled once with ``compile``)."""
        key = (job.model.key, job.train.freeze, vmapped)
        if key not in self._losses:
            model = build_model(job, self.dtype)
            self._losses[key] = Losses(
                model, self.dtype, self._autocast, vmapped, self.compile, job.model.name
            )
        return self._losses[key]

    @property
    def graphs(self) -> list[tuple[str, tuple[int, ...]]]:
        """With ``compile``: every graph compiled so far, as (architecture, input shape: models × batch
        × features, or batch × features for a model trained alone); each architecture's loss variant
        holds at most ``GRAPH_BUDGET`` (:class:`~ctsim.engine.stack.Compiled`)."""
        return [
            (losses.name, shape)
            for losses in self._losses.values()
            for shapes in losses.graphs.values()
            for shape in shapes
        ]

    def _kept_for(self, job: TrainJob, vmapped: bool) -> _Kept:
        key = (job.model.key, job.train.freeze, vmapped, job.batch_then_sample)
        if key not in self._kept:
            self._kept[key] = _Kept(build_model(job, self.dtype), job, self.dtype, self._autocast, vmapped)
        return self._kept[key]

    def _results(self, jobs, stack: Stack, optimizer, tally: _Tally, seconds: float) -> list[Trained]:
        sometimes = [k for k, _ in stack.trainable if k in stack.graded and k in stack.ungraded]
        if sometimes and optimizer.kind is not SGD:
            warnings.warn(
                f"{jobs[0].model.name}: the parameters {', '.join(sometimes)} got a gradient in some "
                "training steps only. Adam counts its steps per model here and per parameter in "
                "torch.optim, so these parameters differ from training each model alone; SGD is exact.",
                stacklevel=2,
            )
        states = stack.states()
        tallies = (tally.steps, tally.samples, tally.frozen, tally.scored)
        steps, samples, frozen, scored = (v.cpu().tolist() for v in tallies)
        loss_sums = tally.last_epoch_loss.cpu().tolist()
        opt_states = optimizer.model_states() if self.record_optimizer_state else [None] * len(jobs)
        results = []
        for m, job in enumerate(jobs):
            n = job.last_epoch_samples()
            loss = loss_sums[m] / n if n and not frozen[m] else float("nan")
            opt_state = None if opt_states[m] is None else self._optimizer_state(stack, opt_states[m])
            status = "nonfinite" if frozen[m] else "ok"
            results.append(
                Trained(
                    states[m], steps[m], samples[m], seconds / len(jobs), loss, status, opt_state, scored[m]
                )
            )
        return results

    @staticmethod
    def _optimizer_state(stack: Stack, state: dict[str, torch.Tensor]) -> dict:
        """One model's optimizer state (flat, on the CPU) per parameter name, as ``torch.optim`` keeps it."""
        if not state:  # torch.optim keeps none (no step taken, or SGD without momentum)
            return {}
        per_key = {k: stack.per_name(v) for k, v in state.items() if k != "step"}
        return {
            name: {
                **({"step": state["step"]} if "step" in state else {}),
                **{k: v[name] for k, v in per_key.items()},
            }
            for name, _ in stack.trainable
            if name in stack.graded  # torch.optim keeps no state for a parameter that never got a gradient
        }

    # --------------------------------------------------------------------------------------- evaluation

    @torch.no_grad()
    def predict(self, model: ModelSpec, states: Sequence[State], x: torch.Tensor) -> Predictions:
        """Predictions and logits of every state on ``x``: models in chunks, the inputs shared by a chunk."""
        if not states:
            return Predictions(torch.empty(0, len(x), dtype=torch.long), torch.empty(0, len(x), 0), [])
        net = model.build(dtype=self.dtype).to(self.device).eval()
        if not self.vmapped(model):  # one model at a time: a plain module, torch's own kernels
            return predict_each(net, states, x, self.eval_batch_size, self._autocast)
        for i, state in enumerate(states):
            check_state(net, state, f"state {i}")
        per_chunk = self._models_per_call(model, self.eval_batch_size, training=False)
        net = for_inference(net)
        batchnorm_in_float32(net)
        persistent = set(net.state_dict())
        shared = {k: v for k, v in net.named_buffers() if k not in persistent}  # e.g. dropout counters
        tied = aliases(net)  # functional_call takes one value per tied tensor

        def forward(state, xb):
            with self._autocast():
                return logits_of(functional_call(net, (state, shared), (xb,)), net)

        many = vmap(forward, in_dims=(0, None))
        classes, logits, seconds = [], [], []
        for rows in _chunks(list(range(len(states))), per_chunk):
            start = time.perf_counter()
            chunk = [states[r] for r in rows]
            stacked = _stacked_states(chunk, self.device, skip=tied)
            out = [
                many(stacked, x[i : i + self.eval_batch_size].to(self.device, self.dtype))[: len(chunk)]
                for i in range(0, len(x), self.eval_batch_size)
            ]
            z = torch.cat(out, dim=1)
            classes.append(z.argmax(-1).cpu())
            logits.append(z.cpu())
            seconds += [(time.perf_counter() - start) / len(chunk)] * len(chunk)
        return Predictions(torch.cat(classes), torch.cat(logits), seconds)

    @torch.no_grad()
    def signals(
        self, requests: Sequence[SignalRequest], x: torch.Tensor, y: torch.Tensor | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Each request's signals on ``x``: the models of one architecture stacked in one vmap call,
        the inputs shared (models in chunks as memory allows; the ``loop`` route one at a time)."""
        found: list[dict[str, torch.Tensor]] = [{} for _ in requests]
        for rows, xs, ys in signal_groups(requests, x, y):
            spec = requests[rows[0]].model
            net = self.signal_net(spec)
            chunks = (
                [rows]
                if not self.vmapped(spec)
                else _chunks(rows, self._models_per_call(spec, self.eval_batch_size, training=False))
            )
            for chunk in chunks:
                chunk_requests = [requests[r] for r in chunk]
                if self.vmapped(spec):
                    outs = self._stacked_signals(net, chunk_requests, xs, ys)
                else:
                    outs = one_by_one(net, chunk_requests, xs, ys, self.eval_batch_size, self._autocast)
                for r, out in zip(chunk, outs):
                    found[r] = out
        return found

    def _stacked_signals(self, net: nn.Module, requests: list[SignalRequest], x, y) -> list[dict]:
        for i, r in enumerate(requests):
            check_state(net, r.state, f"the state of signal request {i}")
        outputs = Outputs(net)
        if not outputs.embeds and any("embeddings" in r.needs for r in requests):
            raise no_embeddings(type(net).__name__)
        persistent = set(net.state_dict())
        shared = {f"net.{k}": v for k, v in net.named_buffers() if k not in persistent}

        def forward(state, xb):
            with self._autocast():
                return functional_call(outputs, (state, shared), (xb,))

        many = vmap(forward, in_dims=(0, None))
        tied = aliases(net)  # functional_call takes one value per tied tensor
        stacked = _stacked_states([r.state for r in requests], self.device, prefix="net.", skip=tied)
        parts = [
            many(stacked, x[i : i + self.eval_batch_size].to(self.device, self.dtype))
            for i in range(0, len(x), self.eval_batch_size)
        ]
        emb, logits = (torch.cat(p, dim=1) for p in zip(*parts))
        return finish_stacked(emb[: len(requests)], logits[: len(requests)], y, [r.needs for r in requests])


@dataclass
class _Run:
    """What the steps of one chunk share."""

    stack: Stack
    plan: StepPlan
    optimizer: StackedOptimizer
    max_norm: torch.Tensor | None
    losses: Losses
    kept: _Kept | None
    tally: _Tally


class _Tally:
    """Per model, on the device: steps and samples taken, last-epoch loss, and whether it is frozen."""

    def __init__(self, num: int, device: torch.device):
        self.steps = torch.zeros(num, dtype=torch.long, device=device)
        self.samples = torch.zeros(num, dtype=torch.long, device=device)
        self.last_epoch_loss = torch.zeros(num, dtype=torch.float64, device=device)
        self.frozen = torch.zeros(num, dtype=torch.bool, device=device)
        self.scored = torch.zeros(num, dtype=torch.long, device=device)

    def record(self, active, ok, losses, samples, scored, last_epoch) -> None:
        done = active & ok
        self.steps += done
        self.samples += torch.where(done, samples, 0)
        self.scored += torch.where(done, scored, 0)
        # As the sequential engine: the sum of (loss as a Python float) × batch size, in float64.
        self.last_epoch_loss += torch.where(done & last_epoch, losses.double() * samples, 0.0)
        self.frozen |= active & ~ok


class _Kept:
    """Batch-then-sample for one group: score each model's batch with the model as it is (evaluation
    mode: running BatchNorm statistics, no dropout, buffers untouched) and cut the call to each model's
    highest-scoring samples (:func:`~ctsim.engine.scores.top`, as the sequential engine cuts them)."""

    def __init__(self, model: nn.Module, job: TrainJob, dtype: torch.dtype, autocast, vmapped: bool):
        self.bts = job.batch_then_sample
        self.bias = head_bias(model)
        self.dtype = dtype
        base = Outputs(meta_copy(model).eval())
        batchnorm_in_float32(base)

        def one(state, x):
            with autocast():
                return functional_call(base, state, (x,))

        self.vmapped = vmapped
        self.fn = vmap(one) if vmapped else one

    @torch.no_grad()
    def __call__(self, params: dict, frozen: dict, buffers: dict, call: Call, x, y) -> Call:
        keys = call.keys.reshape(-1)
        xb = x.index_select(0, keys).view(*call.keys.shape, *x.shape[1:]).to(self.dtype)
        yb = y.index_select(0, keys).view(call.keys.shape)
        state = {f"net.{k}": v for k, v in {**params, **frozen, **buffers}.items()}
        if not self.vmapped:
            emb, logits = (v.unsqueeze(0) for v in self.fn({k: v[0] for k, v in state.items()}, xb[0]))
        elif len(xb) == 1:  # a lone model is paired with itself, as in Losses
            pair = self.fn({k: torch.cat([v, v]) for k, v in state.items()}, torch.cat([xb, xb]))
            emb, logits = (v[:1] for v in pair)
        else:
            emb, logits = self.fn(state, xb)
        scores = score(self.bts.score, emb, logits, yb, self.bias)
        if call.valid is None:
            pos = top(scores, self.bts.keep(call.size))
            weights = None if call.weights is None else call.weights.gather(1, pos)
            return Call(call.rows, call.keys.gather(1, pos), weights, pos.shape[1], call.whole)
        # Padding ranks last; each model keeps its own share of its valid samples, highest first.
        pos = top(scores.masked_fill(~call.valid, -math.inf), self.bts.keep(call.size))
        valid = torch.arange(pos.shape[1], device=pos.device) < call.count.unsqueeze(1)
        valid &= call.valid.any(1, keepdim=True)  # a model without a batch keeps none
        weights = None if call.weights is None else call.weights.gather(1, pos)
        share = valid / call.count.unsqueeze(1).to(call.scale.dtype)
        scale = share if weights is None else share * weights
        keys = call.keys.gather(1, pos)
        return Call(call.rows, keys, weights, pos.shape[1], call.whole, valid, call.count, scale)


def _finite(losses: torch.Tensor, params: torch.Tensor, stack: Stack, work: dict) -> torch.Tensor:
    """Per model: are its loss, its parameters and its floating-point buffers all finite?

    ``(x * 0).sum()`` is 0 for finite values and NaN as soon as one is infinite or NaN, and cannot
    overflow: one cheap reduction for the parameters, and one per dtype of the buffers.
    """
    return torch.isfinite(losses) & torch.isfinite((params * 0).sum(1)) & stack.buffers.finite(work)


def _keep(stack: Stack, before: torch.Tensor, work: dict, mask: torch.Tensor) -> None:
    """Keep the step's parameters and buffers (BatchNorm statistics, dropout counters) of the models in
    ``mask``; the others go back to their state before the step."""
    torch.where(mask.unsqueeze(1), stack.flat, before, out=stack.flat)
    stack.buffers.restore(mask, work)


def _clip_norms(jobs: Sequence[TrainJob], device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
    clips = [math.inf if job.train.clip_grad_norm is None else job.train.clip_grad_norm for job in jobs]
    return torch.tensor(clips, device=device, dtype=dtype) if any(map(math.isfinite, clips)) else None


def _stacked_states(
    states: list[State], device: torch.device, prefix: str = "", skip=()
) -> dict[str, torch.Tensor]:
    """The states stacked entry by entry (names under ``prefix``; not those in ``skip``: the other names
    of tied tensors), for a vmap call over models.

    A lone model is paired with itself: never a lone model in a vmap call (see Losses).
    """
    stacked = {
        prefix + k: torch.stack([s[k] for s in states]).to(device, non_blocking=True)
        for k in states[0]
        if k not in skip
    }
    return {k: torch.cat([v, v]) for k, v in stacked.items()} if len(states) == 1 else stacked


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
