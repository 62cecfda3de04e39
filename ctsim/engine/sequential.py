"""The sequential engine: the reference. One job after another, plain ``nn.Module`` and ``torch.optim``.

It is written to be obviously right; the batched engine must match it (see the README's numerics
contract). ``channels_last=true`` runs image models in that memory format: convolutions 1.5× (training)
to 2.4× (evaluation) faster on CPU, but through other float32 kernels whose rounding drifts further
from float64 (3.5e-2 relative after 100 steps of one measured job, against 8e-7 without), so the
reference keeps it off.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ctsim.engine.base import (
    EngineSettings,
    Predictions,
    SignalRequest,
    State,
    Trained,
    TrainJob,
    build_model,
    global_rng,
    logits_of,
    memory_format,
    predict_each,
)
from ctsim.engine.scores import head_bias, score, top
from ctsim.engine.signals import Outputs, one_by_one
from ctsim.engine.signals import groups as signal_groups
from ctsim.models.base import ModelSpec
from ctsim.validation import Problem, check


@dataclass(eq=False)
class SequentialEngine(EngineSettings):
    """Trains each job alone, then predicts with each state alone.

    Args:
        channels_last: run image models in channels_last memory format (faster on CPU, less exact).
        The others: :class:`~ctsim.engine.base.EngineSettings`.
    """

    name = "sequential"

    channels_last: bool = False

    def problems(self) -> list[Problem | None]:
        channels_last = self.channels_last
        return [check("channels_last", channels_last, isinstance(channels_last, bool), "true or false")]

    def train(self, jobs: Sequence[TrainJob], x: torch.Tensor, y: torch.Tensor) -> list[Trained]:
        return [self._train_one(job, x, y) for job in jobs]

    def _train_one(self, job: TrainJob, x: torch.Tensor, y: torch.Tensor) -> Trained:
        start = time.perf_counter()
        model = build_model(job, self.dtype)
        fmt = memory_format(x) if self.channels_last else torch.contiguous_format
        model = model.to(self.device, memory_format=fmt).train()
        optimizer = job.optimizer.torch(p for p in model.parameters() if p.requires_grad)
        weights = None if job.weights is None else job.weights.to(self.device, self.dtype)
        batches, epochs, total = job.epoch_batches(), job.train.epochs, job.steps()
        steps = samples = scored = 0
        last_epoch_loss, status = 0.0, "ok"
        with global_rng(job.seed, self.device):  # for a model that draws random numbers in its forward
            for epoch, perm in enumerate(job.epoch_orders()):
                for lo, size in zip(itertools.accumulate(batches, initial=0), batches):
                    for group in optimizer.param_groups:
                        group["lr"] = job.optimizer.lr * job.schedule.factor(epoch, steps, total)
                    saved = {k: v.clone() for k, v in model.state_dict().items()}  # the last finite state
                    idx = perm[lo : lo + size]
                    drawn = len(idx)
                    if job.batch_then_sample is not None:
                        idx = idx[self._kept(model, job, idx, x, y, fmt)]
                    keys = job.keys[idx].to(self.device)
                    inputs = x[keys].to(self.dtype).contiguous(memory_format=fmt)
                    with self._autocast():
                        logits = logits_of(model(inputs), model)
                    losses = F.cross_entropy(logits.to(self.dtype), y[keys], reduction="none")
                    loss = (
                        (losses * weights[idx.to(self.device)]).mean()
                        if weights is not None
                        else losses.mean()
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if job.train.clip_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), job.train.clip_grad_norm)
                    optimizer.step()
                    value = loss.item()  # note: a device sync point, once per step
                    if not (math.isfinite(value) and _finite(model)):
                        model.load_state_dict(saved)  # frozen at its last finite state
                        status = "nonfinite"
                        break
                    steps += 1
                    samples += len(idx)
                    scored += drawn if job.batch_then_sample is not None else 0
                    if epoch == epochs - 1:
                        last_epoch_loss += value * len(idx)
                if status != "ok":
                    break
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
        last = job.last_epoch_samples()
        loss_value = last_epoch_loss / last if last and status == "ok" else float("nan")
        opt_state = None
        if self.record_optimizer_state:
            names = {id(p): name for name, p in model.named_parameters()}
            opt_state = {
                names[id(p)]: {
                    k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else torch.tensor(v)
                    for k, v in st.items()
                }
                for p, st in optimizer.state.items()
            }
        seconds = time.perf_counter() - start
        return Trained(state, steps, samples, seconds, loss_value, status, opt_state, scored)

    def _kept(self, model: torch.nn.Module, job: TrainJob, idx: torch.Tensor, x, y, fmt) -> torch.Tensor:
        """Batch-then-sample: the positions in ``idx`` of the samples to train on, scored by the model as
        it is, in evaluation mode (no BatchNorm update, no dropout)."""
        bts = job.batch_then_sample
        keys = job.keys[idx].to(self.device)
        model.eval()
        with torch.no_grad(), self._autocast():
            emb, logits = Outputs(model)(x[keys].to(self.dtype).contiguous(memory_format=fmt))
        model.train()
        scores = score(bts.score, emb, logits, y[keys], bias=head_bias(model))
        return top(scores, bts.keep(len(idx))).cpu()

    def predict(self, model: ModelSpec, states: Sequence[State], x: torch.Tensor) -> Predictions:
        fmt = memory_format(x) if self.channels_last else torch.contiguous_format
        net = model.build(dtype=self.dtype).to(self.device, memory_format=fmt).eval()
        return predict_each(net, states, x, self.eval_batch_size, self._autocast, fmt)

    @torch.no_grad()
    def signals(
        self, requests: Sequence[SignalRequest], x: torch.Tensor, y: torch.Tensor | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Each request's signals on ``x``: its model loaded with its state, one after another."""
        found: list[dict[str, torch.Tensor]] = [{} for _ in requests]
        for rows, xs, ys in signal_groups(requests, x, y):
            net = self.signal_net(requests[rows[0]].model)
            chunk = [requests[r] for r in rows]
            for r, out in zip(rows, one_by_one(net, chunk, xs, ys, self.eval_batch_size, self._autocast)):
                found[r] = out
        return found


def _finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point())
