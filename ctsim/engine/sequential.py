"""The sequential engine: the reference. One job after another, plain ``nn.Module`` and ``torch.optim``.

It is written to be obviously right; the batched engine must match it (see the README's numerics
contract). Image models run in ``channels_last`` memory format, which makes convolutions 1.5× (training)
to 2.4× (evaluation) faster on CPU; it changes only the layout, never the arithmetic's meaning.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ctsim.config import ConfigError, one_of, positive_int
from ctsim.engine.base import DTYPES, State, Trained, TrainJob, memory_format, resolve_device, set_tf32
from ctsim.models.base import ModelSpec


class SequentialEngine:
    """Trains each job alone, then predicts with each state alone.

    Args:
        device: ``auto``, ``cpu`` or ``cuda``.
        dtype: ``float32`` or ``float64`` (the equivalence tests use float64).
        eval_batch_size: samples per forward pass when predicting.
        tf32: allow TF32 matrix products on NVIDIA GPUs (faster, less exact).
    """

    name = "sequential"

    def __init__(
        self, device: str = "auto", dtype: str = "float32", eval_batch_size: int = 256, tf32: bool = False
    ):
        ConfigError.raise_all(
            [one_of("dtype", dtype, list(DTYPES)), positive_int("eval_batch_size", eval_batch_size)]
        )
        self.device = resolve_device(device)
        self.dtype = DTYPES[dtype]
        self.eval_batch_size = eval_batch_size
        set_tf32(tf32)

    def train(self, jobs: Sequence[TrainJob], x: torch.Tensor, y: torch.Tensor) -> list[Trained]:
        return [self._train_one(job, x, y) for job in jobs]

    def _train_one(self, job: TrainJob, x: torch.Tensor, y: torch.Tensor) -> Trained:
        start = time.perf_counter()
        model = job.model.build(seed=job.seed, dtype=self.dtype)
        if job.parent is not None:
            model.load_state_dict(job.parent)
        fmt = memory_format(x)
        model = model.to(self.device, memory_format=fmt)
        model.train()
        optimizer = job.optimizer.torch(model.parameters())
        order = torch.Generator().manual_seed(job.seed)
        weights = None if job.weights is None else job.weights.to(self.device, self.dtype)
        n, batch_size = len(job.keys), job.train.batch_size
        steps, epoch_loss = 0, float("nan")
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(job.seed)  # dropout masks, if any, come from the job's seed
            for _ in range(job.train.epochs):
                perm = torch.randperm(n, generator=order)
                total = 0.0
                for lo in range(0, n, batch_size):
                    idx = perm[lo : lo + batch_size]
                    keys = job.keys[idx].to(self.device)
                    inputs = x[keys].to(self.dtype).contiguous(memory_format=fmt)
                    losses = F.cross_entropy(model(inputs), y[keys], reduction="none")
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
                    steps += 1
                    total += loss.item() * len(idx)  # note: a device sync point, once per step
                epoch_loss = total / n if n else float("nan")
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
        return Trained(state, steps, n * job.train.epochs, time.perf_counter() - start, epoch_loss)

    @torch.no_grad()
    def predict(
        self, model: ModelSpec, states: Sequence[State], x: torch.Tensor
    ) -> tuple[torch.Tensor, list[float]]:
        fmt = memory_format(x)
        net = model.build(dtype=self.dtype).to(self.device, memory_format=fmt).eval()
        preds, seconds = [], []
        for state in states:
            start = time.perf_counter()
            net.load_state_dict(state)
            out = [
                net(
                    x[lo : lo + self.eval_batch_size]
                    .to(self.device, self.dtype)
                    .contiguous(memory_format=fmt)
                ).argmax(1)
                for lo in range(0, len(x), self.eval_batch_size)
            ]
            preds.append(torch.cat(out).cpu() if out else torch.empty(0, dtype=torch.long))
            seconds.append(time.perf_counter() - start)
        return torch.stack(preds), seconds
