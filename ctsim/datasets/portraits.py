"""Portraits: a procedurally generated, Yearbook-shaped dataset with drift by design.

The real Yearbook dataset (Ginosar et al., 2015; used by Wild-Time and Modyn) holds 37,189 frontal
portraits from US high-school yearbooks, 1930-2013, labelled with a binary class. It cannot be
downloaded on every machine, so ctsim ships this stand-in: 32×32 grayscale "portraits" drawn by a
small vectorized renderer, one slice per year (84 slices), with per-year counts shaped like the real
one, and drift whose ground truth is known (:attr:`Portraits.change_points`).

What is drawn, and what drifts (full story in ``datasets/portraits.md``):

* **Hair length (label cue whose meaning shifts, abrupt, 1970).** Before 1970, long hair marks
  class 1 in 90% of portraits and short hair class 0. From 1970 on, 60% of *both* classes wear it
  long, so hair says nothing about the class. Models trained only before 1970 lean on it and lose
  well over 15 accuracy points after.
* **Hair shade (gradual concept drift, 1930-2013).** In 1930 light hair marks class 1 (85% of
  light-haired portraits); the link turns linearly until it marks class 0 as often in 2013. Each
  model is therefore most accurate near the years it was trained on: the bright diagonal of the
  accuracy matrix.
* **Collar mark (weaker, stable cue).** A bar below the chin, present in 80% of class-0 and 20% of
  class-1 portraits in every year, so a model that has seen every era can do well everywhere.
* **Covariate drift (gradual).** Contrast and brightness rise over 1945-1965 (film and lighting),
  film grain fades over 1930-1960, and glasses, unrelated to the class, spread over 1975-2000.

A model fine-tuned only on late slices has unlearned hair length, learned the reversed shade link
and never saw grainy low-contrast prints, so it forgets the 1930s (by far more than 5 points).

Example:
    >>> ds = Portraits(size=0.02, seed=0, cache=False)
    >>> samples = ds.load()
    >>> tuple(samples.x.shape[1:]), samples.num_classes, len(samples.slice_labels)
    ((1, 32, 32), 2, 84)
    >>> sum(yearbook_counts())
    37189
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from ctsim.datasets.base import (
    ChangePoint,
    Samples,
    cache_folder_problems,
    generator_problems,
    load_generated,
)
from ctsim.validation import ConfigError, Problem

FIRST_YEAR, LAST_YEAR = 1930, 2013
YEARS = tuple(range(FIRST_YEAR, LAST_YEAR + 1))
YEARBOOK_TOTAL, YEARBOOK_MIN, YEARBOOK_MAX = 37_189, 70, 1_197
PEAK_YEAR = 1974
MIN_PER_SLICE = 10  # keeps at least one test sample per slice at any size
SIDE = 32
VERSION = 1  # bump when the renderer changes: it invalidates caches

HAIR_CHANGE_YEAR = 1970
P_LONG_HAIR_BEFORE = (0.1, 0.9)  # P(long hair | class 0), P(long hair | class 1), before 1970
P_LONG_HAIR_AFTER = (0.6, 0.6)  # the same from 1970 on: the cue carries no label information
P_COLLAR = (0.8, 0.2)  # P(collar mark | class), every year
SHADE_BIAS = (0.35, -0.35)  # P(light | class 1) - 0.5 in 1930 and in 2013, linear in between


def yearbook_counts() -> list[int]:
    """Per-year sample counts shaped like the real Yearbook (full size).

    An asymmetric bump peaking in 1974 (Lorentzian sides: a gradual rise from 1930, a slow fall after),
    scaled so that the minimum is 70 (1930), the maximum 1,197 and the total 37,189, as in the real
    dataset.

    >>> c = yearbook_counts()
    >>> len(c), min(c), max(c), sum(c), c[0] < c[40]
    (84, 70, 1197, 37189, True)
    """
    years = torch.tensor(YEARS, dtype=torch.float64)

    def counts(width_left: float) -> torch.Tensor:
        width = torch.where(years < PEAK_YEAR, width_left, 1.5 * width_left)
        f = 1.0 / (1.0 + ((years - PEAK_YEAR) / width) ** 2)  # Lorentzian sides: a gradual rise
        f = (f - f.min()) / (f.max() - f.min())
        return YEARBOOK_MIN + (YEARBOOK_MAX - YEARBOOK_MIN) * f

    lo, hi = 1.0, 200.0  # the total grows with the width: bisect it
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if counts(mid).sum() < YEARBOOK_TOTAL else (lo, mid)
    exact = counts((lo + hi) / 2)
    rounded = exact.round().long()
    residual = YEARBOOK_TOTAL - int(rounded.sum())
    # Hand the rounding residual to the years whose rounding lost (or gained) the most,
    # leaving the minimum and maximum years alone.
    interior = (rounded > YEARBOOK_MIN) & (rounded < YEARBOOK_MAX)
    error = torch.where(interior, exact - rounded, torch.full_like(exact, -math.inf * (residual or 1)))
    order = torch.argsort(error, descending=residual > 0)
    rounded[order[: abs(residual)]] += 1 if residual > 0 else -1
    return rounded.tolist()


def scaled_counts(size: float) -> list[int]:
    """Per-year counts at a size factor: ``max(10, round(count × size))``.

    >>> scaled_counts(1.0) == yearbook_counts(), min(scaled_counts(0.01))
    (True, 10)
    """
    return [max(MIN_PER_SLICE, round(c * size)) for c in yearbook_counts()]


def _smoothstep(year: torch.Tensor, start: int, end: int) -> torch.Tensor:
    t = ((year - start) / (end - start)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def contrast(year: torch.Tensor) -> torch.Tensor:
    return 0.55 + 0.45 * _smoothstep(year, 1945, 1965)


def brightness(year: torch.Tensor) -> torch.Tensor:
    return -0.12 + 0.17 * _smoothstep(year, 1945, 1965)


def grain(year: torch.Tensor) -> torch.Tensor:
    return 0.12 - 0.08 * _smoothstep(year, 1930, 1960)


def glasses_rate(year: torch.Tensor) -> torch.Tensor:
    return 0.05 + 0.50 * _smoothstep(year, 1975, 2000)


def light_hair_bias(year: torch.Tensor) -> torch.Tensor:
    """P(light hair | class 1) - 0.5 = 0.5 - P(light hair | class 0): from 0.35 (1930) to -0.35 (2013)."""
    t = (year - FIRST_YEAR) / (LAST_YEAR - FIRST_YEAR)
    return SHADE_BIAS[0] + (SHADE_BIAS[1] - SHADE_BIAS[0]) * t


CHANGE_POINTS = (
    ChangePoint(
        slice=YEARS.index(HAIR_CHANGE_YEAR),
        kind="abrupt",
        what="hair length: long hair marks class 1 (90%) before 1970; from 1970 60% of both classes "
        "wear it long, so it carries no label information",
    ),
    ChangePoint(
        slice=YEARS.index(1930),
        end_slice=YEARS.index(2013),
        kind="gradual",
        what="hair shade: light hair marks class 1 in 85% of light-haired portraits in 1930, "
        "then the link turns linearly until it marks class 0 as often in 2013",
    ),
    ChangePoint(
        slice=YEARS.index(1930),
        end_slice=YEARS.index(1960),
        kind="gradual",
        what="film grain: pixel noise std falls from 0.12 to 0.04 over 1930-1960",
    ),
    ChangePoint(
        slice=YEARS.index(1945),
        end_slice=YEARS.index(1965),
        kind="gradual",
        what="contrast rises from 0.55 to 1.0 and brightness by 0.17 over 1945-1965",
    ),
    ChangePoint(
        slice=YEARS.index(1975),
        end_slice=YEARS.index(2000),
        kind="gradual",
        what="glasses (unrelated to the class) spread from 5% to 55% of portraits over 1975-2000",
    ),
)


def render(year: torch.Tensor, label: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw one portrait per (year, label) pair as a ``(n, 32, 32)`` uint8 tensor."""
    n = len(year)
    yf = year.to(torch.float32)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, generator=generator)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(n, *shape, generator=generator)

    grid = torch.arange(SIDE, dtype=torch.float32)
    ys, xs = grid.view(1, SIDE, 1), grid.view(1, 1, SIDE)

    def col(v: torch.Tensor) -> torch.Tensor:
        return v.view(n, 1, 1)

    cx, cy = col(15.5 + 0.8 * normal()), col(13.5 + 0.8 * normal())
    rx, ry = col(6.0 + 0.4 * normal()), col(7.5 + 0.4 * normal())
    face = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0

    before = yf < HAIR_CHANGE_YEAR
    p_long = torch.where(
        before,
        torch.where(label == 1, P_LONG_HAIR_BEFORE[1], P_LONG_HAIR_BEFORE[0]),
        torch.where(label == 1, P_LONG_HAIR_AFTER[1], P_LONG_HAIR_AFTER[0]),
    )
    long_hair = uniform() < p_long
    hair_end = torch.where(long_hair, 1.1 + 0.15 * normal(), -0.1 + 0.1 * normal())  # in units of ry
    crown = (((xs - cx) / (rx + 1.8)) ** 2 + ((ys - cy + 0.8) / (ry + 1.5)) ** 2 <= 1.0) & (
        ys < cy - 0.35 * ry
    )
    dx = (xs - cx).abs()
    sides = (dx >= rx - 1.0) & (dx <= rx + 3.0) & (ys >= cy - 0.6 * ry) & (ys <= cy + col(hair_end) * ry)
    hair = (crown | sides) & ~face
    bias = light_hair_bias(yf)
    light_hair = uniform() < 0.5 + torch.where(label == 1, bias, -bias)
    hair_shade = torch.where(light_hair, 0.75, 0.1) + 0.04 * normal()

    body = (ys >= cy + ry + 0.5) & (dx <= 4.0 + (ys - cy - ry) * 1.3)
    collar = (uniform() < torch.where(label == 0, P_COLLAR[0], P_COLLAR[1])).view(n, 1, 1)
    mark = body & collar & (dx <= 1.2) & (ys <= cy + ry + 7.0)

    eyes = ((ys - (cy - 1.5)) ** 2 + (dx - 2.5) ** 2 <= 1.0) & face
    mouth = ((ys - (cy + 3.5)).abs() <= 0.5) & (dx <= 2.0) & face
    glasses_on = (uniform() < glasses_rate(yf)).view(n, 1, 1)
    ring = ((ys - (cy - 1.5)) ** 2 + (dx - 2.5) ** 2).sqrt()
    glasses = glasses_on & (ring >= 1.6) & (ring <= 2.4)

    img = col(0.45 + 0.08 * normal()).expand(n, SIDE, SIDE).clone()  # background
    shirt = col(torch.where(uniform() < 0.5, 0.2, 0.7) + 0.05 * normal())
    img = torch.where(body, shirt, img)
    img = torch.where(mark, 1.0 - shirt, img)
    img = torch.where(face, col(0.75 + 0.05 * normal()), img)
    img = torch.where(hair, col(hair_shade), img)
    img = torch.where(eyes | mouth, 0.25, img)
    img = torch.where(glasses, 0.05, img)

    img = 0.5 + (img - 0.5) * col(contrast(yf)) + col(brightness(yf))
    img = img + col(grain(yf)) * normal(SIDE, SIDE)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


class Portraits:
    """The built-in drifting dataset (``dataset=portraits``).

    Args:
        size: the share of every year's count, in (0, 1] (1.0 = 37,189 portraits, as Yearbook); each
            year keeps ≥10.
        seed: the generator's seed. The same seed gives bit-identical tensors.
        root: the data root; the generated tensors are cached in ``<root>/portraits/``.
        cache: read and write that cache.
    """

    name = "portraits"
    model = "yearbooknet"  # the model option that fits it
    input_shape = (1, SIDE, SIDE)
    num_classes = 2
    change_points = CHANGE_POINTS

    def __init__(self, size: float = 1.0, seed: int = 0, root: str = "datasets", cache: bool = True):
        ConfigError.raise_all(generator_problems(size, seed, cache))
        self.size, self.seed, self.root, self.cache = float(size), seed, Path(root), cache

    @property
    def slice_labels(self) -> list[str]:
        return [str(y) for y in YEARS]

    @property
    def cache_path(self) -> Path:
        return self.root / "portraits" / f"portraits-v{VERSION}-size{self.size:g}-seed{self.seed}.pt"

    def path_problems(self) -> list[Problem]:
        """Why ``root`` cannot hold the cache, found before any work: [] if cache is off or readable."""
        return cache_folder_problems(self.root, self.cache_path, self.cache)

    def load(self) -> Samples:
        """Generate (or read from the cache) every sample, with its year as slice."""
        samples = load_generated(self, VERSION, self._generate)  # generated and cached as uint8 pixels
        return dataclasses.replace(samples, x=samples.x.unsqueeze(1).to(torch.float32) / 255.0)

    def _generate(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        counts = torch.tensor(scaled_counts(self.size))
        slice_idx = torch.repeat_interleave(torch.arange(len(YEARS)), counts)
        year = slice_idx + FIRST_YEAR
        label = (torch.rand(len(year), generator=g) < 0.5).long()
        time = year.to(torch.float64) + torch.rand(len(year), generator=g, dtype=torch.float64)
        chunks = [render(year[i : i + 4096], label[i : i + 4096], g) for i in range(0, len(year), 4096)]
        return {"x": torch.cat(chunks), "y": label, "time": time, "slice": slice_idx}
