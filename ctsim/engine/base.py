"""The seam between the simulation loop and the engines: jobs in, trained generations out.

The loop never trains a model itself. At each decision point it hands the engine every
:class:`TrainJob` that is due and records the :class:`Trained` results; after the replay it asks the
engine for every generation's predictions on every slice. Two engines sit behind this seam: the
sequential reference (:mod:`ctsim.engine.sequential`) and the batched product
(:mod:`ctsim.engine.batched`). Both follow :class:`Engine`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple, Protocol

import numpy as np
import torch

from ctsim.engine.inference import for_inference
from ctsim.engine.optim import SGD, Adam
from ctsim.engine.schedules import Constant, Schedule
from ctsim.models.base import ModelSpec, least_batch
from ctsim.validation import ConfigError, Problem, check, is_number, one_of, positive_int

State = dict[str, torch.Tensor]
DTYPES = {"float32": torch.float32, "float64": torch.float64}
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """How each generation is trained (the ``train`` config group).

    Args:
        epochs: passes over the selected data per trigger.
        batch_size: samples per optimizer step (the last batch of an epoch may be smaller).
        init: ``finetune`` starts from the pipeline's previous generation (fresh optimizer state),
            ``scratch`` from a new initialisation every time. Generation 0 always starts from scratch.
        clip_grad_norm: clip each model's gradient to this global L2 norm; null for no clipping.
        freeze: parameter names (or name prefixes, e.g. ``features``) that are not trained: they keep
            their initial or inherited values bit for bit (a frozen backbone, a fine-tuned head).
    """

    epochs: int = 5
    batch_size: int = 64
    init: Literal["finetune", "scratch"] = "finetune"
    clip_grad_norm: float | None = None
    freeze: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "freeze", tuple(self.freeze) if isinstance(self.freeze, list) else self.freeze
        )
        ConfigError.raise_all(
            [
                positive_int("epochs", self.epochs),
                positive_int("batch_size", self.batch_size),
                one_of("init", self.init, ["finetune", "scratch"]),
                check(
                    "clip_grad_norm",
                    self.clip_grad_norm,
                    self.clip_grad_norm is None
                    or (is_number(self.clip_grad_norm) and self.clip_grad_norm > 0),
                    "null or a number > 0",
                ),
                check(
                    "freeze",
                    self.freeze,
                    isinstance(self.freeze, tuple) and all(isinstance(f, str) and f for f in self.freeze),
                    "a list of parameter names or name prefixes, e.g. [features]",
                ),
            ]
        )

    def frozen(self, name: str) -> bool:
        """Is parameter ``name`` frozen? ``features`` freezes ``features.0.weight``, not ``features2.w``.

        >>> TrainConfig(freeze=["features"]).frozen("features.0.weight"), TrainConfig().frozen("head.bias")
        (True, False)
        """
        return any(names_parameter(f, name) for f in self.freeze)


def names_parameter(prefix: str, name: str) -> bool:
    """Does ``prefix`` name parameter ``name``: itself, or a module above it?"""
    return name == prefix or name.startswith(prefix + ".")


SCORES = ("loss", "grad_norm", "least_confidence", "entropy", "margin")


def share(n: int, fraction: float) -> int:
    """``fraction`` of ``n`` samples, rounded up (a float's last bit never adds a sample), at most ``n``.

    >>> share(64, 0.25), share(3, 0.25), share(10, 0.3), share(0, 0.5)
    (16, 1, 3, 0)
    """
    return min(n, math.ceil(fraction * n - 1e-9))


@dataclass(frozen=True)
class BatchThenSample:
    """Batch-then-sample downsampling: at every step, score the step's batch with the model as it is
    (in evaluation mode, :mod:`ctsim.engine.scores`) and train on the ``ceil(fraction × batch)``
    highest-scoring samples."""

    score: str
    fraction: float
    least: int = field(default=1, repr=False)  # the model's least_batch: keep at least this many

    def keep(self, size: int) -> int:
        """Samples kept of a scored batch of ``size`` (at least ``least`` of them, where it has them).

        >>> BatchThenSample("loss", 0.25).keep(64), BatchThenSample("loss", 0.25).keep(3)
        (16, 1)
        >>> BatchThenSample("loss", 0.25, least=2).keep(3)
        2
        """
        return max(share(size, self.fraction), min(self.least, size))


def batch_sizes(n: int, batch: int, least: int = 1) -> list[int]:
    """One epoch's batch sizes over ``n`` samples: full batches of ``batch``, then the rest. A rest of
    fewer than ``least`` samples joins the batch before it (a model with batch statistics cannot train
    on one sample, :func:`~ctsim.models.base.least_batch`); an epoch of fewer than ``least`` samples
    has no batch. Both engines cut their epochs so.

    >>> batch_sizes(10, 4), batch_sizes(9, 4), batch_sizes(9, 4, least=2), batch_sizes(1, 4, least=2)
    ([4, 4, 2], [4, 4, 1], [4, 5], [])
    """
    sizes = [min(batch, n - lo) for lo in range(0, n, batch)]
    if sizes and sizes[-1] < least:
        rest = sizes.pop()
        if sizes:
            sizes[-1] += rest
    return sizes


@dataclass(frozen=True)
class EpochSubset:
    """RS2 (repeated sampling of random subsets): every epoch trains on ``ceil(fraction × n)`` keys
    drawn afresh. Without replacement, epochs walk through one permutation before any key repeats;
    with replacement, each epoch draws its subset independently."""

    fraction: float
    replacement: bool = False

    def size(self, n: int) -> int:
        return share(n, self.fraction)


@dataclass(frozen=True)
class TrainJob:
    """One generation to train: which model, from which state, on which samples, how, with which seed.

    ``parent`` is the state to fine-tune from (None: a fresh initialisation from ``seed``).
    ``weights`` are per-sample loss weights aligned with ``keys`` (None: all 1). ``schedule`` scales the
    optimizer's learning rate at every step. ``batch_then_sample`` and ``epoch_subset`` downsample
    while training (both engines read the epochs' orders from :meth:`epoch_orders`).
    """

    pipeline: int
    generation: int
    model: ModelSpec
    optimizer: SGD | Adam
    train: TrainConfig
    keys: torch.Tensor
    seed: int
    parent: State | None = None
    weights: torch.Tensor | None = None
    schedule: Schedule = field(default_factory=Constant)
    batch_then_sample: BatchThenSample | None = None
    epoch_subset: EpochSubset | None = None

    def __post_init__(self) -> None:
        bts = self.batch_then_sample
        if bts is not None and bts.least != self.least:  # keep a batch the model can train on
            object.__setattr__(self, "batch_then_sample", replace(bts, least=self.least))

    @property
    def least(self) -> int:
        """The fewest samples the model trains on in one step (:func:`~ctsim.models.base.least_batch`)."""
        return 1 if self.model is None else least_batch(self.model)

    def epoch_size(self) -> int:
        """Samples drawn per epoch: every key, or RS2's subset."""
        n = len(self.keys)
        return n if self.epoch_subset is None else self.epoch_subset.size(n)

    def epoch_batches(self) -> list[int]:
        """Each epoch's batch sizes (:func:`batch_sizes`): ``batch_size`` samples, fewer at the end."""
        return batch_sizes(self.epoch_size(), self.train.batch_size, self.least)

    def steps(self) -> int:
        """Optimizer steps this job takes: ``epochs × ceil(epoch_size / batch_size)`` (one fewer per
        epoch where a one-sample last batch joins the one before)."""
        return self.train.epochs * len(self.epoch_batches())

    def widest_batch(self) -> int:
        """The most samples one step draws: ``batch_size``, or a merged last batch above it."""
        return max([self.train.batch_size, *self.epoch_batches()])

    def epoch_orders(self) -> list[torch.Tensor]:
        """Each epoch's positions in ``keys``, drawn from the job's own generator (seeded by ``seed``).

        A plain job walks through one fresh permutation per epoch. With ``epoch_subset`` (RS2) each epoch
        takes ``epoch_size()`` positions: with replacement, the head of a fresh permutation; without,
        the next unused positions of a permutation, and a new permutation (of the positions not used
        in this epoch) once it runs out.

        >>> job = TrainJob(0, 0, None, None, TrainConfig(epochs=3), torch.arange(4), 0,
        ...                epoch_subset=EpochSubset(0.5))
        >>> [len(o) for o in job.epoch_orders()]
        [2, 2, 2]
        >>> sorted(torch.cat(job.epoch_orders()[:2]).tolist())  # two epochs cover every key once
        [0, 1, 2, 3]
        """
        g = torch.Generator().manual_seed(self.seed)
        n, epochs = len(self.keys), self.train.epochs
        if self.epoch_subset is None:
            return [torch.randperm(n, generator=g) for _ in range(epochs)]
        m = self.epoch_size()
        if self.epoch_subset.replacement:
            return [torch.randperm(n, generator=g)[:m] for _ in range(epochs)]
        orders, pending = [], torch.empty(0, dtype=torch.long)
        for _ in range(epochs):
            take = pending[:m]
            if len(take) < m:  # the permutation is used up: continue with a fresh one of the others
                rest = torch.ones(n, dtype=torch.bool)
                rest[take] = False
                fresh = rest.nonzero().squeeze(1)[torch.randperm(n - len(take), generator=g)]
                pending = torch.cat([take, fresh])
                take = pending[:m]
            orders.append(take)
            pending = pending[m:]
        return orders

    def last_epoch_samples(self) -> int:
        """Samples trained in the last epoch (the reported loss is their mean)."""
        per_epoch = len(self.epoch_batches())
        return sum(self.step_sizes()[-per_epoch:]) if per_epoch else 0

    def step_sizes(self) -> list[int]:
        """Samples trained at each step (after batch-then-sample's cut), in order."""
        batches = self.epoch_batches() * self.train.epochs
        keep = self.batch_then_sample.keep if self.batch_then_sample is not None else (lambda s: s)
        return [keep(s) for s in batches]


@dataclass(frozen=True)
class Trained:
    """What an engine returns for one job. ``state`` lives on the CPU.

    ``status`` is ``nonfinite`` when training diverged: ``state`` is then the last finite one, and
    ``steps``/``samples`` count the steps taken before. ``loss`` is the mean training loss of the last
    epoch. ``optimizer_state`` (per parameter name, as
    ``torch.optim`` keeps it) is filled only when the engine's ``record_optimizer_state`` is set.
    """

    state: State
    steps: int
    samples: int
    seconds: float
    loss: float
    status: Literal["ok", "nonfinite"] = "ok"
    optimizer_state: dict[str, dict[str, torch.Tensor]] | None = None
    scored: int = 0  # samples batch-then-sample scored during training


SIGNALS = ("embeddings", "logits", "predictions", "loss")


@dataclass(frozen=True)
class SignalRequest:
    """One model (an architecture and a trained state), the signals wanted from it, and on which rows.

    ``keys`` are rows of the ``x`` (and ``y``) given to :meth:`Engine.signals`; None means all of ``x``.
    Requests of one architecture that share the same ``keys`` object share one pass (one ``vmap``
    call on the batched engine): at a decision point, every pipeline's request for the arrival batch
    carries the batch's own ``keys`` tensor.
    """

    model: ModelSpec
    state: State
    needs: frozenset[str]
    keys: torch.Tensor | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.needs) - set(SIGNALS))
        if unknown:
            raise ConfigError([Problem("signals", unknown, f"names from {list(SIGNALS)}")])


class Predictions(NamedTuple):
    """What :meth:`Engine.predict` returns for ``M`` states on ``n`` inputs of ``C`` classes.

    ``classes`` is the argmax of ``logits``, taken on the device that computed them; ``logits`` are on
    the CPU, in the dtype the model computed them in (bfloat16 under ``bf16``).
    """

    classes: torch.Tensor  # (M, n) long
    logits: torch.Tensor  # (M, n, C)
    seconds: list[float]  # (M,)


class Engine(Protocol):
    """Trains jobs and predicts with trained states. ``name`` is recorded in the outputs."""

    name: str
    device: torch.device
    dtype: torch.dtype

    def train(self, jobs: Sequence[TrainJob], x: torch.Tensor, y: torch.Tensor) -> list[Trained]:
        """Train every job (``x``, ``y``: the whole stream, indexed by the jobs' keys)."""
        ...

    def predict(self, model: ModelSpec, states: Sequence[State], x: torch.Tensor) -> Predictions:
        """Each state's class predictions and logits on ``x``, and seconds per state."""
        ...

    def signals(
        self, requests: Sequence[SignalRequest], x: torch.Tensor, y: torch.Tensor | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Each request's signals on its rows of ``x`` (labels ``y`` for the loss), in one call for all
        (:mod:`ctsim.engine.signals`)."""
        ...


@dataclass(eq=False)
class EngineSettings:
    """What both engines share, as the ``engine`` config keys they have in common.

    Args:
        device: ``auto``, ``cpu`` or ``cuda``.
        dtype: ``float32`` or ``float64`` (the equivalence tests use float64).
        precision: ``fp32`` (exact), or ``bf16``: forward passes under bfloat16 autocast (faster on GPUs,
            not equal to the float32 reference).
        eval_batch_size: test samples per forward pass when evaluating.
        tf32: allow TF32 matrix products on NVIDIA GPUs (faster, less exact).
        cudnn_benchmark: let cuDNN time its convolution algorithms and keep the fastest. Which one wins
            can change from run to run, and with it the rounding, so ``auto`` turns it on only under
            ``precision=bf16`` (which gives up exactness anyway) and keeps fp32 runs reproducible.

    An engine is a dataclass that adds its own settings as fields and its checks in :meth:`problems`;
    all are checked when it is built, and reported together in one :class:`ConfigError`. Once built,
    ``device`` and ``dtype`` hold the torch objects the names resolve to.
    """

    record_optimizer_state = False  # set True to return each job's final optimizer state (for comparisons)

    device: str | torch.device = "auto"
    dtype: str | torch.dtype = "float32"
    precision: str = "fp32"
    eval_batch_size: int = 64
    tf32: bool = False
    cudnn_benchmark: bool | str = "auto"

    def __post_init__(self) -> None:
        ConfigError.raise_all(
            [
                one_of("dtype", self.dtype, list(DTYPES)),
                one_of("precision", self.precision, list(PRECISIONS)),
                check(
                    "precision",
                    self.precision,
                    not (self.precision == "bf16" and self.dtype == "float64"),
                    "fp32 with dtype=float64: bfloat16 autocast leaves float64 operations as they are",
                ),
                positive_int("eval_batch_size", self.eval_batch_size),
                check("tf32", self.tf32, isinstance(self.tf32, bool), "true or false"),
                check(
                    "cudnn_benchmark",
                    self.cudnn_benchmark,
                    isinstance(self.cudnn_benchmark, bool) or self.cudnn_benchmark == "auto",
                    "auto, true or false",
                ),
                *self.problems(),
            ]
        )
        self.device = resolve_device(self.device)
        self.dtype = DTYPES[self.dtype]
        if self.cudnn_benchmark == "auto":
            self.cudnn_benchmark = self.precision == "bf16"
        set_tf32(self.tf32)
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        self._signal_nets: dict[str, torch.nn.Module] = {}

    def signal_net(self, spec: ModelSpec) -> torch.nn.Module:
        """The module that signal passes run a state in: built once per architecture, in evaluation mode,
        with the exact, faster substitutes of :mod:`ctsim.engine.inference` (the same values). A pass
        puts its state in with ``functional_call`` or ``load_state_dict``, so one module serves all."""
        net = self._signal_nets.get(spec.key)
        if net is None:
            net = for_inference(spec.build(dtype=self.dtype).to(self.device).eval())
            self._signal_nets[spec.key] = net
        return net

    def problems(self) -> list[Problem | None]:
        """The engine's own settings that are not allowed (None for each that is)."""
        return []

    def _autocast(self) -> AbstractContextManager:
        """bfloat16 autocast under ``precision=bf16``; nothing under ``fp32``."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()


def logits_of(out: object, model: torch.nn.Module) -> torch.Tensor:
    """A model's output, which must be one tensor of logits ``(batch, classes)``; a clear error otherwise.

    >>> logits_of((torch.zeros(2, 3), torch.zeros(2)), torch.nn.Identity())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: Identity's forward returned a tuple; the engines need one tensor of logits (batch, classes)...
    """
    if isinstance(out, torch.Tensor):
        return out
    raise TypeError(
        f"{type(model).__name__}'s forward returned a {type(out).__name__}; the engines need one tensor of "
        "logits (batch, classes). Return extra outputs from another method (as embed gives the embeddings)"
    )


def build_model(job: TrainJob, dtype: torch.dtype) -> torch.nn.Module:
    """The model a job starts from: seeded initialisation, the parent's state, frozen parameters."""
    model = job.model.build(seed=job.seed, dtype=dtype)
    if job.parent is not None:
        check_state(model, job.parent, f"the parent of pipeline {job.pipeline}'s generation {job.generation}")
        model.load_state_dict(job.parent)
    for name, param in model.named_parameters():
        if job.train.frozen(name):
            param.requires_grad_(False)
    return model


class StateError(ValueError):
    """A state dict that does not fit its model: names the missing, unexpected and misshapen entries."""


def check_state(model: torch.nn.Module, state: State, what: str) -> None:
    """Raise :class:`StateError` unless ``state`` has exactly ``model``'s persistent entries and shapes.

    >>> check_state(torch.nn.Linear(2, 1), {"weight": torch.zeros(1, 2)}, "state 0")
    Traceback (most recent call last):
    ...
    ctsim.engine.base.StateError: state 0 does not fit Linear: missing keys ['bias']
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = [
        f"{label} {items}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", misshapen),
        )
        if items
    ]
    if parts:
        raise StateError(f"{what} does not fit {type(model).__name__}: " + "; ".join(parts))


@contextmanager
def global_rng(seed: int | None, device: torch.device) -> Iterator[None]:
    """Torch's global random stream seeded with ``seed`` for the block, then restored (nothing for None).

    For a model that draws random numbers in its own forward pass: both engines train such a model with
    the stream seeded by its job's seed. Seeds the CPU generator (and CUDA's where training runs on it)
    without ``torch.manual_seed``, which would also queue a seed call for every CUDA device.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        yield


def job_seed(pipeline_seed: int, generation: int) -> int:
    """The seed of one generation's initialisation, data order and dropout masks.

    Derived with NumPy's ``SeedSequence`` so that nearby seeds give unrelated streams.

    >>> job_seed(0, 1) == job_seed(0, 1) != job_seed(1, 0)
    True
    """
    return int(np.random.SeedSequence([pipeline_seed, generation]).generate_state(1, dtype=np.uint32)[0])


def digest(*tensors: torch.Tensor | None, head: str = "") -> str:
    """A digest of ``head`` and each tensor's dtype, shape and bytes (None counts as itself): equal for
    equal inputs, wherever the tensors live. What identifies a run's data, a training job and a set of
    rows.

    >>> digest(torch.arange(3)) == digest(torch.arange(3)) != digest(torch.arange(3.0))
    True
    """
    h = hashlib.blake2b(digest_size=16)
    if head:
        h.update(head.encode())
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def resolve_device(device: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; a clear error for a CUDA device that is absent."""
    ConfigError.raise_all([one_of("device", device, ["auto", "cpu", "cuda"])])
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            [check("device", device, False, "'auto' or 'cpu': this machine has no CUDA device")]
        )
    return torch.device(device)


def set_tf32(enabled: bool) -> None:
    """TF32 trades float32 precision for speed on NVIDIA GPUs; ctsim keeps it off unless asked."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` for image batches (N, C, H, W): faster convolutions on CPU and GPU."""
    return torch.channels_last if x.dim() == 4 else torch.contiguous_format


def predict_each(
    net: torch.nn.Module,
    states: Sequence[State],
    x: torch.Tensor,
    batch_size: int,
    autocast: Callable[[], AbstractContextManager],
    fmt: torch.memory_format = torch.contiguous_format,
) -> Predictions:
    """Predictions and logits of one module loaded with each state in turn, and seconds each.

    The module runs with exact, faster substitutes for some layers (:mod:`ctsim.engine.inference`).
    """
    device, dtype = next(net.parameters()).device, next(net.parameters()).dtype
    net = for_inference(net)
    classes, logits, seconds = [], [], []
    for i, state in enumerate(states):
        check_state(net, state, f"state {i}")
    for state in states:
        start = time.perf_counter()
        net.load_state_dict(state)
        with torch.inference_mode(), autocast():
            out = [
                logits_of(net(x[i : i + batch_size].to(device, dtype).contiguous(memory_format=fmt)), net)
                for i in range(0, len(x), batch_size)
            ]
            z = torch.cat(out) if out else torch.empty(0, 0, dtype=dtype, device=device)
            classes.append(z.argmax(1).cpu() if out else torch.empty(0, dtype=torch.long))
        logits.append(z.cpu())
        seconds.append(time.perf_counter() - start)
    return Predictions(torch.stack(classes), torch.stack(logits), seconds)
