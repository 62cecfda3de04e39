"""The step plan: every model's batches and learning rates, worked out on the host before training.

A job's batches depend on nothing the training computes: model ``m`` trains ``epochs × ceil(n / batch)``
steps; in epoch ``e`` it walks through the ``e``-th order its own generator draws
(:meth:`~ctsim.engine.base.TrainJob.epoch_orders`, which the sequential engine reads too), ``batch``
keys a step, fewer at the end of an epoch (a model that cannot train on one sample merges a
one-sample rest into the batch before: :func:`~ctsim.engine.base.batch_sizes`). So the batched engine
plans every step at the start and uploads the plan to the device once: during training it only slices
the plan, and never waits for the device to decide what comes next. (With batch-then-sample, which
of a step's keys are trained on depends on the model: the device decides that within the step.)

Models whose data differ (other sizes, batch sizes or epochs) are *ragged*: at step ``t`` their batches
differ in size, and some have finished. Two layouts:

* padded (``width`` given; the batched engine's default for ragged groups): **one call per step**.
  Each model's batch is padded to ``width`` (the group's largest batch size) with key 0, and ``valid``
  marks its real samples. The loss is the mean over valid samples, BatchNorm takes its statistics over
  valid samples only (:func:`~ctsim.engine.stack.masked_batchnorm`), and a model without a batch at
  the step has no valid sample and sits the update out. The call holds the first models of the
  group, up to the last one that steps: a slice of the stacked state, so no gather nor scatter (the
  batched engine orders a group's models by their number of steps, longest first, so that the models
  that step are always the first ones). The width is the same at every step and in every chunk of a
  group, so which models share a call never changes a model's arithmetic, and a compiled loss sees
  one batch shape.
* split (no ``width``): one call per distinct batch size, no padding (one call per step for a group
  that is not ragged).

>>> from ctsim.engine.base import TrainConfig, TrainJob
>>> from ctsim.engine.optim import SGD
>>> job = lambda n, b: TrainJob(0, 0, None, SGD(), TrainConfig(epochs=1, batch_size=b), torch.arange(n), 0)
>>> plan = StepPlan([job(5, 2), job(4, 2)], torch.device("cpu"), torch.float32)
>>> [[(c.rows.tolist(), c.size) for c in calls] for calls in plan.calls]
[[([0, 1], 2)], [([0, 1], 2)], [([0], 1)]]
>>> plan.samples.tolist()  # samples each model trains at each step
[[2, 2], [2, 2], [1, 0]]
>>> plan = StepPlan([job(5, 2), job(4, 2)], torch.device("cpu"), torch.float32, width=2)
>>> [[(c.rows.tolist(), c.valid.tolist(), c.keys.shape) for c in calls] for calls in plan.calls][2]
[([0], [[True, False]], torch.Size([1, 2]))]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ctsim.engine.base import TrainJob
from ctsim.engine.schedules import Constant


@dataclass(frozen=True)
class Call:
    """The models that take one step together: ``keys`` and ``weights`` are ``(len(rows), size)``
    (weights None when no job has sample weights).

    In a padded call ``valid`` ``(len(rows), size)`` marks each model's real samples, ``count``
    ``(len(rows),)`` is how many it trains on (at least 1: a model without a batch has none valid), and
    ``scale`` ``(len(rows), size)`` (the engine's dtype) each sample's share of its model's loss: its
    weight over ``count``, 0 for padding. All three are None in a call without padding.
    """

    rows: torch.Tensor
    keys: torch.Tensor
    weights: torch.Tensor | None
    size: int
    whole: bool  # every model of the group is in this call, in order
    valid: torch.Tensor | None = None
    count: torch.Tensor | None = None
    scale: torch.Tensor | None = None


class StepPlan:
    """Every step of a group of jobs (see the module docstring).

    Args:
        width: pad every step's batches to this width (see the module docstring); None: no padding.

    Attributes:
        calls: ``calls[t]`` are step ``t``'s calls.
        padded: the calls are padded (``width`` was given).
        idle: some padded call holds a model without a batch (never when the models are ordered
            longest first, as the batched engine orders them).
        active: ``(T, M)`` bool, model m takes step t.
        lr: ``(T, M)`` float64, model m's learning rate at step t (``lr × schedule factor``, computed
            with Python floats as the sequential engine computes it).
        samples: ``(T, M)`` int64, the samples model m trains on at step t (0 when it does not step):
            its batch size, or the part batch-then-sample keeps.
        scored: ``(T, M)`` int64, the samples batch-then-sample scores at step t (0 without it).
        last_epoch: ``(T, M)`` bool, step t is in model m's last epoch.
    """

    def __init__(
        self, jobs: Sequence[TrainJob], device: torch.device, dtype: torch.dtype, width: int | None = None
    ):
        t, sizes, starts, epochs, per_epoch, total = _steps(jobs)
        kept, scored = sizes.copy(), np.zeros_like(sizes)
        for m, job in enumerate(jobs):  # batch-then-sample trains on part of each scored batch
            if job.batch_then_sample is not None:
                kept[:, m] = [job.batch_then_sample.keep(int(s)) for s in sizes[:, m]]
                scored[:, m] = sizes[:, m]
        self.padded = width is not None
        self.idle = False
        order, weights = _orders(jobs)
        if width is not None:
            parts = _padded(sizes, kept, starts, order, weights, width)
            self.idle = any((sizes[step, rows] == 0).any() for step, ((rows, *_),) in enumerate(parts[0]))
        else:
            parts = _split(sizes, starts, order, weights)
        self.calls = _upload(*parts, len(jobs), device, dtype)
        self.active = torch.from_numpy(sizes > 0).to(device)
        self.samples = torch.from_numpy(kept).to(device)
        self.scored = torch.from_numpy(scored).to(device)
        self.last_epoch = torch.from_numpy(t >= (epochs - 1) * per_epoch).to(device)
        self.lr = torch.tensor(_learning_rates(jobs, total, per_epoch, len(sizes)), device=device)


def bucket(n: int) -> int:
    """The size a compiled loss pads ``n`` models or samples to: the next of 1, 2, 3, 4, 6, 8, 12, 16,
    24, ... (the powers of two and 1.5 times them), so at most a third of a call is padding, and
    population sizes up to 256 fall into 15 buckets.

    >>> [bucket(n) for n in (1, 2, 3, 5, 7, 9, 13, 17, 50, 64, 100, 129)]
    [1, 2, 3, 6, 8, 12, 16, 24, 64, 64, 128, 192]
    """
    if n <= 2:
        return n
    power = 1 << (n - 1).bit_length()  # the next power of two
    return power * 3 // 4 if power * 3 // 4 >= n else power


def floor_bucket(n: int) -> int:
    """The largest bucket (:func:`bucket`) that is at most ``n``, for ``n ≥ 1``.

    >>> [floor_bucket(n) for n in (1, 5, 7, 100, 256)]
    [1, 4, 6, 96, 256]
    """
    b = n
    while bucket(b) != b:
        b -= 1
    return b


def is_ragged(jobs: Sequence[TrainJob]) -> bool:
    """Do the jobs' batch sizes differ at some step (other data sizes, batch sizes or epochs)?

    >>> from ctsim.engine.base import TrainConfig, TrainJob
    >>> job = lambda n, e: TrainJob(0, 0, None, None, TrainConfig(epochs=e, batch_size=4), torch.arange(n), 0)
    >>> is_ragged([job(10, 2), job(10, 2)]), is_ragged([job(10, 2), job(10, 3)])
    (False, True)
    >>> is_ragged([job(10, 2), job(9, 2)])  # the last batches differ
    True
    """
    sizes = _steps(jobs)[1]
    return bool((sizes != sizes[:, :1]).any())


def split_calls(jobs: Sequence[TrainJob]) -> float:
    """Calls per step, on average, that splitting by batch size would make (distinct batch sizes).

    >>> from ctsim.engine.base import TrainConfig, TrainJob
    >>> job = lambda n: TrainJob(0, 0, None, None, TrainConfig(epochs=1, batch_size=4), torch.arange(n), 0)
    >>> split_calls([job(8), job(8)]), split_calls([job(8), job(6)]), split_calls([job(9), job(8)])
    (1.0, 1.5, 1.0)
    """
    sizes = np.sort(_steps(jobs)[1], axis=1)
    if not sizes.size:
        return 0.0
    new = np.concatenate([sizes[:, :1] > 0, (np.diff(sizes, axis=1) != 0) & (sizes[:, 1:] > 0)], axis=1)
    return float(new.sum(1).mean())


def _steps(jobs: Sequence[TrainJob]):
    """Step indices ``(T, 1)``, each model's batch size ``(T, M)`` at each step (0: no step), where the
    batch starts in its order, its epochs, steps per epoch and steps (batches as
    :meth:`~ctsim.engine.base.TrainJob.epoch_batches` cuts them)."""
    batches = [j.epoch_batches() for j in jobs]
    epochs = np.array([j.train.epochs for j in jobs], dtype=np.int64)
    per_epoch = np.array([max(len(b), 1) for b in batches], dtype=np.int64)
    total = np.array([len(b) * j.train.epochs for b, j in zip(batches, jobs)], dtype=np.int64)
    t = np.arange(int(total.max(initial=0)))[:, None]
    sizes = np.zeros((len(t), len(jobs)), dtype=np.int64)
    starts = np.zeros_like(sizes)  # position in the model's flat order (its epochs' orders, concatenated)
    for m, (b, job) in enumerate(zip(batches, jobs)):
        if b:
            steps = np.tile(np.asarray(b, dtype=np.int64), job.train.epochs)
            sizes[: len(steps), m] = steps
            starts[: len(steps), m] = np.cumsum(steps) - steps
    return t, sizes, starts, epochs, per_epoch, total


def _split(sizes, starts, order, weights):
    """One call per step and distinct batch size: each model's keys (and weights), unpadded."""
    calls, keys, sample_weights = [], [], []
    for step in range(len(sizes)):
        step_calls = []
        for size in np.unique(sizes[step][sizes[step] > 0]):
            rows = np.flatnonzero(sizes[step] == size)
            cols = starts[step, rows, None] + np.arange(size)
            keys.append(order[rows[:, None], cols].reshape(-1))
            if weights is not None:
                sample_weights.append(weights[rows[:, None], cols].reshape(-1))
            step_calls.append((rows, int(size), None, None, None))
        calls.append(step_calls)
    return calls, keys, sample_weights


def _padded(sizes, kept, starts, order, weights, width: int):
    """One call per step: every model's batch padded to ``width``, with a validity mask; the call
    holds the models up to the last one that steps (a prefix of the stack)."""
    calls, keys, sample_weights = [], [], []
    for step in range(len(sizes)):
        rows = np.arange(np.flatnonzero(sizes[step] > 0).max() + 1)
        size = width
        valid = np.arange(size) < sizes[step, rows, None]
        cols = np.minimum(starts[step, rows, None] + np.arange(size), order.shape[1] - 1)
        keys.append(np.where(valid, order[rows[:, None], cols], 0).reshape(-1))
        if weights is not None:
            sample_weights.append(np.where(valid, weights[rows[:, None], cols], 0.0).reshape(-1))
        count = np.maximum(kept[step, rows], 1)
        w = weights[rows[:, None], cols] if weights is not None else 1.0
        scale = np.where(valid, w, 0.0) / count[:, None]
        calls.append([(rows, size, valid, count, scale)])
    return calls, keys, sample_weights


def _upload(calls, keys, sample_weights, num, device, dtype) -> list[list[Call]]:
    """Copy every call's keys, rows, weights and masks to the device in one transfer each; slice views."""

    def flat(parts: list, to_dtype=None) -> torch.Tensor | None:
        if not parts:
            return None
        return torch.from_numpy(np.concatenate(parts)).to(device, to_dtype)

    every = [c for step in calls for c in step]
    flat_keys = flat(keys)
    flat_rows = flat([rows for rows, *_ in every])
    flat_scale = flat([c[4].reshape(-1) for c in every], dtype) if every and every[0][4] is not None else None
    flat_weights = flat(sample_weights, dtype)
    padded = bool(every) and every[0][2] is not None
    flat_valid = flat([c[2].reshape(-1) for c in every]) if padded else None
    flat_count = flat([c[3] for c in every]) if padded else None
    out, k, r = [], 0, 0
    for step_calls in calls:
        step = []
        for rows, size, *_ in step_calls:
            width = len(rows) * size
            step.append(
                Call(
                    rows=flat_rows[r : r + len(rows)],
                    keys=flat_keys[k : k + width].view(len(rows), size),
                    weights=None if flat_weights is None else flat_weights[k : k + width].view(-1, size),
                    size=size,
                    whole=len(rows) == num,
                    valid=None if flat_valid is None else flat_valid[k : k + width].view(-1, size),
                    count=None if flat_count is None else flat_count[r : r + len(rows)],
                    scale=None if flat_scale is None else flat_scale[k : k + width].view(-1, size),
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
