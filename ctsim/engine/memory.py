"""Memory planning: how many models one stacked call may take within the memory budget.

A model's footprint is measured, not guessed: one forward pass in training mode with
``torch.autograd.graph.saved_tensors_hooks`` records every tensor autograd keeps for the backward
pass, including those of a recurrent loop's steps (which module hooks never see). Two batch sizes
give the bytes per sample. A training call then holds, per model: the saved activations of its
batch, about as much again in gradients during the backward pass, its inputs, and its parameters
about eight times over (parameters, gradients, optimizer state, and the proposed update of each).
An evaluation call holds a few of its largest activations per sample.

The budget (``engine.memory_budget``) is a number of bytes (> 1) or a fraction (0 < f ≤ 1) of the
memory free when a call starts: on CUDA the device's free memory plus what PyTorch's allocator has
cached but does not use (``torch.cuda.mem_get_info`` alone misses that); on CPU the system's
available memory. Null means 0.6.

>>> from functools import partial
>>> from ctsim.models import MLP, ModelSpec
>>> f = footprint(ModelSpec(partial(MLP, hidden=[8]), (1, 4, 4), 2), torch.float32)
>>> f.parameters, f.saved_per_sample > 0
(154, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ctsim.engine.base import logits_of
from ctsim.models.base import ModelSpec
from ctsim.validation import Problem, check, is_number

DEFAULT_FRACTION = 0.6


def budget_problem(budget: object) -> Problem | None:
    """``engine.memory_budget``: null, a fraction in (0, 1], or a whole number of bytes above 1. A
    fractional number above 1 (``1.5``) is neither: it would mean 1 byte, not 150% of the memory.

    >>> budget_problem(0.6), budget_problem(2e9)
    (None, None)
    >>> print(budget_problem(1.5))  # doctest: +ELLIPSIS
    memory_budget=1.5: expected null, ... (bytes are whole: 1.5 would mean 1 byte, not 150%)
    """
    expected = "null, a number of bytes > 1, or a fraction 0 < f ≤ 1 of the free device memory"
    if budget is None or not (is_number(budget) and budget > 0):
        return check("memory_budget", budget, budget is None, expected)
    whole = budget <= 1 or float(budget).is_integer()
    return check(
        "memory_budget",
        budget,
        whole,
        f"{expected} (bytes are whole: {budget} would mean {int(budget)} "
        f"byte{'s' if int(budget) > 1 else ''}, not {budget:.0%})",
    )


@dataclass(frozen=True)
class Footprint:
    """Bytes of one model: saved activations and the largest saved tensor per sample; parameter and
    buffer element counts; input bytes per sample."""

    saved_per_sample: int
    largest_per_sample: int
    input_per_sample: int
    parameters: int
    buffers: int


_footprints: dict[tuple[str, torch.dtype], Footprint] = {}


def footprint(spec: ModelSpec, dtype: torch.dtype) -> Footprint:
    """Measure (once per architecture and dtype) what one model of ``spec`` keeps per sample."""
    key = (spec.key, dtype)
    if key not in _footprints:
        model = spec.build(seed=0, dtype=dtype).train()
        small, large = _saved_bytes(model, spec, dtype, 2), _saved_bytes(model, spec, dtype, 6)
        _footprints[key] = Footprint(
            saved_per_sample=max(1, (large[0] - small[0]) // 4),
            largest_per_sample=max(1, large[1] // 6),
            input_per_sample=torch.Size(spec.input_shape).numel() * dtype.itemsize,
            parameters=sum(p.numel() for p in model.parameters()),
            buffers=sum(b.numel() for b in model.buffers()),
        )
    return _footprints[key]


def _saved_bytes(model, spec: ModelSpec, dtype: torch.dtype, batch: int) -> tuple[int, int]:
    """Total bytes autograd saves for one training batch (each storage once), and the largest tensor."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    x = torch.zeros(batch, *spec.input_shape, dtype=dtype)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(logits_of(model(x), model), torch.zeros(batch, dtype=torch.long))
    del loss
    return sum(seen.values()), max(seen.values(), default=0)


class MemoryPlanner:
    """Sizes stacked calls to the memory budget of one device."""

    def __init__(self, device: torch.device, budget: float | None):
        self.device = device
        self.budget = DEFAULT_FRACTION if budget is None else budget

    def available(self) -> int:
        """Bytes free now: CUDA free memory plus the allocator's unused cache; or the system's."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
            return free + cached
        return _system_available()

    def bytes(self) -> int:
        return int(self.budget) if self.budget > 1 else int(self.budget * self.available())

    def models_per_call(self, spec: ModelSpec, dtype: torch.dtype, batch: int, training: bool) -> int:
        """How many models of ``spec`` one call takes within the budget (at least 1)."""
        return max(1, self.bytes() // max(1, per_model_bytes(spec, dtype, batch, training)))


def per_model_bytes(spec: ModelSpec, dtype: torch.dtype, batch: int, training: bool) -> int:
    """Estimated bytes one model adds to a stacked call with ``batch`` samples (see the module docstring)."""
    f = footprint(spec, dtype)
    if training:
        per_sample = 2 * f.saved_per_sample + f.input_per_sample
        return batch * per_sample + (8 * f.parameters + 2 * f.buffers) * dtype.itemsize
    return batch * 3 * f.largest_per_sample + (f.parameters + f.buffers) * dtype.itemsize


def _system_available() -> int:
    """Available system memory (Linux: MemAvailable), else all physical memory."""
    try:
        with open("/proc/meminfo") as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
