"""The step plan: every model's batches and learning rates, worked out on the host before training.

A job's batches depend on nothing the training computes: model ``m`` trains ``epochs × ceil(n / batch)``
steps; in epoch ``e`` it walks through the ``e``-th order its own generator draws
(:meth:`~ctsim.engine.base.TrainJob.epoch_orders`, which the sequential engine reads too), ``batch``
keys a step, fewer at the end of an epoch. So the batched engine plans every step at the start and
uploads the plan to the device once: during training it only slices the plan, and never waits for the
device to decide what comes next. (With batch-then-sample, which of a step's keys are trained on
depends on the model: the device decides that within the step.)

At step ``t`` the models that still train are split into one :class:`Call` per distinct batch size,
so that no model ever sees padding (BatchNorm statistics stay exact).

>>> from ctsim.engine.base import TrainConfig, TrainJob
>>> from ctsim.optim import SGD
>>> job = lambda n, b: TrainJob(0, 0, None, SGD(), TrainConfig(epochs=1, batch_size=b), torch.arange(n), 0)
>>> plan = StepPlan([job(5, 2), job(4, 2)], torch.device("cpu"), torch.float32)
>>> [[(c.rows.tolist(), c.size) for c in calls] for calls in plan.calls]
[[([0, 1], 2)], [([0, 1], 2)], [([0], 1)]]
>>> plan.samples.tolist()  # samples each model trains at each step
[[2, 2], [2, 2], [1, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ctsim.engine.base import TrainJob
from ctsim.schedules import Constant


@dataclass(frozen=True)
class Call:
    """The models that take one step together with one batch size: ``keys`` and ``weights`` are
    ``(len(rows), size)`` (weights None when no job has sample weights)."""

    rows: torch.Tensor
    keys: torch.Tensor
    weights: torch.Tensor | None
    size: int
    whole: bool  # every model of the group is in this call, in order


class StepPlan:
    """Every step of a group of jobs (see the module docstring).

    Attributes:
        calls: ``calls[t]`` are step ``t``'s calls.
        active: ``(T, M)`` bool, model m takes step t.
        lr: ``(T, M)`` float64, model m's learning rate at step t (``lr × schedule factor``, computed
            with Python floats as the sequential engine computes it).
        samples: ``(T, M)`` int64, the samples model m trains on at step t (0 when it does not step):
            its batch size, or the part batch-then-sample keeps.
        scored: ``(T, M)`` int64, the samples batch-then-sample scores at step t (0 without it).
        last_epoch: ``(T, M)`` bool, step t is in model m's last epoch.
    """

    def __init__(self, jobs: Sequence[TrainJob], device: torch.device, dtype: torch.dtype):
        num = len(jobs)
        n = np.array([j.epoch_size() for j in jobs], dtype=np.int64)
        batch = np.array([j.train.batch_size for j in jobs], dtype=np.int64)
        epochs = np.array([j.train.epochs for j in jobs], dtype=np.int64)
        per_epoch = np.maximum(-(-n // batch), 1)
        total = np.where(n > 0, per_epoch * epochs, 0)
        t = np.arange(int(total.max(initial=0)))[:, None]
        within = t % per_epoch
        sizes = np.where(t < total, np.minimum(batch, n - within * batch), 0)  # (T, M)
        starts = (t // per_epoch) * n + within * batch  # position in the model's flat order
        order, weights = _orders(jobs)

        calls: list[list[tuple[np.ndarray, int]]] = []
        keys, row_ids, sample_weights = [], [], []
        for step in range(len(sizes)):
            step_calls = []
            for size in np.unique(sizes[step][sizes[step] > 0]):
                rows = np.flatnonzero(sizes[step] == size)
                cols = starts[step, rows, None] + np.arange(size)
                keys.append(order[rows[:, None], cols].reshape(-1))
                if weights is not None:
                    sample_weights.append(weights[rows[:, None], cols].reshape(-1))
                row_ids.append(rows)
                step_calls.append((rows, int(size)))
            calls.append(step_calls)
        self.calls = self._upload(calls, keys, row_ids, sample_weights, num, device, dtype)
        self.active = torch.from_numpy(sizes > 0).to(device)
        kept, scored = sizes.copy(), np.zeros_like(sizes)
        for m, job in enumerate(jobs):  # batch-then-sample trains on part of each scored batch
            if job.batch_then_sample is not None:
                kept[:, m] = [job.batch_then_sample.keep(int(s)) for s in sizes[:, m]]
                scored[:, m] = sizes[:, m]
        self.samples = torch.from_numpy(kept).to(device)
        self.scored = torch.from_numpy(scored).to(device)
        self.last_epoch = torch.from_numpy(t >= (epochs - 1) * per_epoch).to(device)
        self.lr = torch.tensor(_learning_rates(jobs, total, per_epoch, len(sizes)), device=device)

    @staticmethod
    def _upload(calls, keys, row_ids, sample_weights, num, device, dtype) -> list[list[Call]]:
        """Copy every call's keys, rows and weights to the device in one transfer each; slice views."""
        flat_keys = torch.from_numpy(np.concatenate(keys) if keys else np.zeros(0, np.int64)).to(device)
        flat_rows = torch.from_numpy(np.concatenate(row_ids) if row_ids else np.zeros(0, np.int64))
        flat_rows = flat_rows.to(device)
        flat_weights = None
        if sample_weights:
            flat_weights = torch.from_numpy(np.concatenate(sample_weights)).to(device, dtype)
        out, k, r = [], 0, 0
        for step_calls in calls:
            step = []
            for rows, size in step_calls:
                width = len(rows) * size
                step.append(
                    Call(
                        rows=flat_rows[r : r + len(rows)],
                        keys=flat_keys[k : k + width].view(len(rows), size),
                        weights=None if flat_weights is None else flat_weights[k : k + width].view(-1, size),
                        size=size,
                        whole=len(rows) == num,
                    )
                )
                k, r = k + width, r + len(rows)
            out.append(step)
        return out


def _orders(jobs: Sequence[TrainJob]) -> tuple[np.ndarray, np.ndarray | None]:
    """Each model's keys (and sample weights) in training order: its epochs' permutations, concatenated."""
    width = max([j.epoch_size() * j.train.epochs for j in jobs], default=0)
    order = np.zeros((len(jobs), max(width, 1)), dtype=np.int64)
    any_weights = any(j.weights is not None for j in jobs)
    weights = np.ones((len(jobs), max(width, 1)), dtype=np.float64) if any_weights else None
    for m, job in enumerate(jobs):
        perms = job.epoch_orders()
        if len(job.keys):
            flat = torch.cat(perms)
            order[m, : len(flat)] = job.keys.cpu()[flat].numpy()
            if weights is not None and job.weights is not None:
                weights[m, : len(flat)] = job.weights.cpu()[flat].double().numpy()
    return order, weights


def _learning_rates(jobs, total, per_epoch, steps: int) -> np.ndarray:
    """``(T, M)`` float64: ``lr × schedule.factor(epoch, step, total)``, as the sequential engine sets it."""
    lr = np.zeros((steps, len(jobs)), dtype=np.float64)
    for m, job in enumerate(jobs):
        base, count = job.optimizer.lr, int(total[m])
        if isinstance(job.schedule, Constant):
            lr[:count, m] = base * 1.0
        else:
            f = job.schedule.factor
            lr[:count, m] = [base * f(s // int(per_epoch[m]), s, count) for s in range(count)]
    return lr
