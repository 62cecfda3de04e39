"""Synthetic drift streams: SEA, rotating hyperplane and random RBF, with drift where you put it.

Three classic generators of the stream-learning literature (as in MOA and river), as ctsim datasets for
``model=mlp``. Each concept is one setting of the generator:

* ``dataset=sea`` (:class:`SEA`, Street & Kim 2001): 3 features uniform in [0, 10]; the label is 1 where
  ``x1 + x2 ≤ θ``, else 0 (the third feature is irrelevant). A concept is a threshold θ, by default
  8, 9, 7, 9.5 in turn.
* ``dataset=hyperplane`` (:class:`Hyperplane`, Hulten et al. 2001): ``features`` uniform in [0, 1]; the
  label is 1 where ``Σ wᵢxᵢ ≥ ½ Σ wᵢ``. A concept is a weight vector, drawn uniform in [0, 1] from the seed.
* ``dataset=rbf`` (:class:`RandomRBF`, MOA's RandomRBFGenerator): ``centroids`` clusters, each with a
  random centre in [0, 1]^features, class, weight and spread ``std`` (uniform in [0, 1]). A sample picks a
  centroid by weight and lies in a random direction from its centre, at a distance N(0, std²). A concept
  is one set of centre positions; classes, weights and spreads stay.

The stream has ``slices`` slices of ``per_slice × size`` samples each (at least 10). Time is counted in
slices: a sample's ``time`` is its slice plus a uniform fraction, so incorporation latency and detection
delay are both in slices. ``noise`` is the share of labels replaced by another class, in every slice.

Drift happens at each slice of ``change_points``, as ``drift`` says:

* ``abrupt``: the next concept (A → B → C ...) holds from the change point's slice on.
* ``gradual``: the new concept takes over linearly in time over ``width`` slices from the change point:
  SEA draws each sample from the new concept with a probability rising from 0 to 1; hyperplane's
  weights and RBF's centres move from the old to the new ones. From slice ``change + width`` on, only
  the new concept is left.
* ``recurring``: abrupt changes that alternate between two concepts, A, B, A, B ...

Every change is recorded as ground truth (``Samples.change_points``): kind ``abrupt`` at its slice
(also for recurring drift), or ``gradual`` from its slice to ``end_slice = change + width - 1``, its last
mixed slice. Trigger quality (:mod:`ctsim.measure.quality`) scores the abrupt ones by default.

Example:
    >>> ds = SEA(slices=8, change_points=[4], size=0.1, seed=0)
    >>> samples = ds.load()
    >>> tuple(samples.x.shape), samples.num_classes, samples.slice_labels[:3], int(samples.time.max())
    ((400, 3), 2, ['t0', 't1', 't2'], 7)
    >>> [(cp.slice, cp.kind, cp.what) for cp in samples.change_points]
    [(4, 'abrupt', 'SEA threshold 8 → 9')]
    >>> Hyperplane(drift="recurring").change_points[1].what
    'hyperplane weights, concept B → A (the boundary turns 21°); recurring: back to concept A'
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ctsim.datasets.base import ChangePoint, Samples, cache_folder_problems, cached_tensors, size_problem
from ctsim.validation import ConfigError, Problem, check, is_int, is_number, one_of, seed_problem

DRIFTS = ("abrupt", "gradual", "recurring")
MIN_PER_SLICE = 10  # keeps at least one test sample per slice at any size
VERSION = 1  # bump when a generator changes: it invalidates caches
SEA_THRESHOLDS = (8.0, 9.0, 7.0, 9.5)  # Street & Kim's four concepts
SEA_RANGE = 10.0  # SEA features are uniform in [0, 10]


def concept_name(concept: int) -> str:
    """A, B, C ... for the first 26 concepts, then #27, #28 ..."""
    return string.ascii_uppercase[concept] if concept < 26 else f"#{concept + 1}"


@dataclass(frozen=True)
class Schedule:
    """Where and how concepts change: shared by every generator of this module.

    Segment ``k`` is the run of slices after the ``k``-th change point (segment 0 before the first).
    """

    slices: int
    change_points: tuple[int, ...]
    drift: str
    width: int

    def concept(self, segment: int) -> int:
        """The concept that segment ``segment`` ends up in: a new one each time, or A, B, A, B ..."""
        return segment % 2 if self.drift == "recurring" else segment

    @property
    def num_concepts(self) -> int:
        return len({self.concept(k) for k in range(len(self.change_points) + 1)})

    @property
    def slice_labels(self) -> list[str]:
        digits = len(str(self.slices - 1))
        return [f"t{s:0{digits}d}" for s in range(self.slices)]

    def mixing(
        self, slice: torch.Tensor, time: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sample: the concept before and after the latest change point, and the new one's share.

        The share is 1 except in a gradual change, where it rises linearly in time from 0 at the
        change point to 1 ``width`` slices later.
        """
        points = torch.tensor(self.change_points, dtype=torch.long)
        segment = torch.searchsorted(points, slice, right=True)
        concepts = torch.tensor([self.concept(k) for k in range(len(points) + 1)])
        previous = (segment - 1).clamp(min=0)
        share = torch.ones_like(time)
        if self.drift == "gradual" and len(points):
            since = time - points[previous].to(time.dtype)
            share = torch.where(segment > 0, (since / self.width).clamp(0, 1), share)
        return concepts[previous], concepts[segment], share

    def ground_truth(self, describe: Callable[[int, int], str]) -> list[ChangePoint]:
        """One :class:`ChangePoint` per change point; ``describe(old, new)`` says what changed."""
        points = []
        for k, at in enumerate(self.change_points, start=1):
            old, new = self.concept(k - 1), self.concept(k)
            what = describe(old, new)
            if self.drift == "gradual":
                end = at + self.width - 1
                points.append(
                    ChangePoint(at, "gradual", f"{what}, blended over {self.width} slices", end_slice=end)
                )
                continue
            if self.drift == "recurring" and k >= 2:
                what += f"; recurring: back to concept {concept_name(new)}"
            points.append(ChangePoint(at, "abrupt", what))
        return points


def common_problems(
    slices: object,
    per_slice: object,
    size: object,
    noise: object,
    drift: object,
    change_points: object,
    width: object,
    seed: object,
    cache: object,
) -> list[Problem | None]:
    """Problems with the arguments every generator of this module takes."""
    return [
        check("slices", slices, is_int(slices) and slices >= 2, "an integer ≥ 2"),
        check(
            "per_slice",
            per_slice,
            is_int(per_slice) and per_slice >= MIN_PER_SLICE,
            f"an integer ≥ {MIN_PER_SLICE} (samples per slice at size 1)",
        ),
        size_problem(size),
        check("noise", noise, is_number(noise) and 0 <= noise < 0.5, "a label-noise probability in [0, 0.5)"),
        one_of("drift", drift, DRIFTS),
        check("width", width, is_int(width) and width >= 1, "an integer ≥ 1 (slices)"),
        _change_points_problem(change_points, slices, drift, width),
        seed_problem("seed", seed),
        check("cache", cache, isinstance(cache, bool), "true or false"),
    ]


def _change_points_problem(
    change_points: object, slices: object, drift: object, width: object
) -> Problem | None:
    top = slices - 1 if is_int(slices) else None  # a bad slices is reported on its own
    ok = (
        isinstance(change_points, (list, tuple))
        and all(is_int(c) and c >= 1 and (top is None or c <= top) for c in change_points)
        and all(a < b for a, b in itertools.pairwise(change_points))
    )
    where = f"in [1, {top}] (slices={slices})" if top is not None else "≥ 1"
    if not ok:
        return Problem("change_points", change_points, f"a strictly increasing list of slice indices {where}")
    if drift == "gradual" and is_int(width) and top is not None:
        ends = [*change_points[1:], slices]
        return check(
            "change_points",
            change_points,
            all(end - at >= width for at, end in zip(change_points, ends)),
            f"with drift=gradual, change points at least width={width} slices apart, the last at most "
            f"at slice {slices - width} (a gradual change blends over width slices)",
        )
    return None


def scaled_count(per_slice: int, size: float) -> int:
    """Samples per slice at a size factor: ``max(10, round(per_slice × size))``.

    >>> scaled_count(500, 1.0), scaled_count(500, 0.25), scaled_count(500, 0.001)
    (500, 125, 10)
    """
    return max(MIN_PER_SLICE, round(per_slice * size))


def arrival(schedule: Schedule, per_slice: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample's slice and time (its slice plus a uniform fraction, float64), in slice order."""
    slice = torch.arange(schedule.slices).repeat_interleave(per_slice)
    return slice, slice.to(torch.float64) + torch.rand(len(slice), generator=g, dtype=torch.float64)


def with_label_noise(y: torch.Tensor, num_classes: int, noise: float, g: torch.Generator) -> torch.Tensor:
    """``y`` with a share ``noise`` of labels replaced by another class, drawn uniformly.

    Both draws happen at any noise, so streams that differ only in noise share their inputs.
    """
    flip = torch.rand(len(y), generator=g) < noise
    other = (y + torch.randint(1, num_classes, (len(y),), generator=g)) % num_classes
    return torch.where(flip, other, y)


def cache_file(root: Path, name: str, params: dict[str, str | int | float]) -> Path:
    """``<root>/<name>/<name>-v<version>-<digest of params>.pt``: one file per setting."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return root / name / f"{name}-v{VERSION}-{digest}.pt"


def listed(values: Sequence[float]) -> str:
    """A list as one cache parameter: ``[10, 20]`` → ``"10,20"``."""
    return ",".join(f"{v:g}" for v in values)


def common_params(
    schedule: Schedule, per_slice: int, size: float, noise: float, seed: int
) -> dict[str, str | int | float]:
    """The shared arguments, as cache parameters (every one changes what is generated)."""
    return {
        "slices": schedule.slices,
        "per_slice": per_slice,
        "size": size,
        "noise": noise,
        "drift": schedule.drift,
        "change_points": listed(schedule.change_points),
        "width": schedule.width,
        "seed": seed,
    }


class _DriftStream:
    """What the three streams share: the schedule, the cache, and :meth:`load`.

    A subclass sets ``name`` and ``num_classes`` and gives ``change_points``, ``_own_params()`` and
    ``_generate()``; its constructor lists every argument (Hydra checks config keys against it), checks
    them and calls :meth:`_common`.
    """

    name: str
    num_classes: int

    def _common(self, slices, per_slice, size, noise, drift, change_points, width, seed, root, cache) -> None:
        self.schedule = Schedule(slices, tuple(change_points), drift, width)
        self.per_slice, self.size, self.noise = per_slice, float(size), float(noise)
        self.seed, self.root, self.cache = seed, Path(root), cache

    @property
    def slice_labels(self) -> list[str]:
        return self.schedule.slice_labels

    @property
    def change_points(self) -> list[ChangePoint]:
        raise NotImplementedError

    @property
    def cache_path(self) -> Path:
        return cache_file(self.root, self.name, self._params())

    def path_problems(self) -> list[Problem]:
        """Why ``root`` cannot hold the cache, found before any work: [] if cache is off or readable."""
        return cache_folder_problems(self.root, self.cache_path, self.cache)

    def load(self) -> Samples:
        """Generate (or read from the cache) every sample."""
        data = cached_tensors(self.cache_path, self._generate, self.cache, self._params())
        return Samples(
            **data,
            slice_labels=self.slice_labels,
            num_classes=self.num_classes,
            change_points=self.change_points,
        )

    def _params(self) -> dict[str, str | int | float]:
        own = {"dataset": self.name, "version": VERSION, **self._own_params()}
        return {**own, **common_params(self.schedule, self.per_slice, self.size, self.noise, self.seed)}

    def _own_params(self) -> dict[str, str | int | float]:
        raise NotImplementedError

    def _generate(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class SEA(_DriftStream):
    """SEA concepts (Street & Kim 2001): label 1 where ``x1 + x2 ≤ θ`` (``dataset=sea``).

    Args:
        thresholds: θ of each concept in turn (cycled when there are more concepts); recurring drift
            alternates between the first two.
        slices: slices in the stream.
        per_slice: samples per slice at size 1.
        size: the share of every slice's ``per_slice`` samples, in (0, 1]; each keeps ≥ 10.
        noise: share of labels flipped, in [0, 0.5).
        drift: ``abrupt``, ``gradual`` or ``recurring`` (see the module docstring).
        change_points: the slices where a new concept starts, strictly increasing, in [1, slices - 1].
        width: slices a gradual change takes.
        seed: the generator's seed. The same seed gives bit-identical tensors.
        root: the data root; with ``cache``, the generated tensors are kept in ``<root>/sea/``.
        cache: read and write that cache (off by default: generating takes milliseconds).
    """

    name = "sea"
    input_shape = (3,)
    num_classes = 2
    model = "mlp"

    def __init__(
        self,
        thresholds: Sequence[float] = SEA_THRESHOLDS,
        slices: int = 40,
        per_slice: int = 500,
        size: float = 1.0,
        noise: float = 0.1,
        drift: str = "abrupt",
        change_points: Sequence[int] = (10, 20, 30),
        width: int = 4,
        seed: int = 0,
        root: str = "datasets",
        cache: bool = False,
    ):
        ConfigError.raise_all(
            [
                check(
                    "thresholds",
                    thresholds,
                    isinstance(thresholds, (list, tuple))
                    and len(thresholds) >= 2
                    and all(is_number(t) and 0 < t < 2 * SEA_RANGE for t in thresholds)
                    and len(set(thresholds)) == len(thresholds),
                    f"a list of ≥ 2 distinct numbers in (0, {2 * SEA_RANGE:g}), e.g. [8, 9, 7, 9.5]",
                ),
                *common_problems(slices, per_slice, size, noise, drift, change_points, width, seed, cache),
            ]
        )
        self.thresholds = tuple(float(t) for t in thresholds)
        self._common(slices, per_slice, size, noise, drift, change_points, width, seed, root, cache)

    @property
    def change_points(self) -> list[ChangePoint]:
        return self.schedule.ground_truth(
            lambda old, new: f"SEA threshold {self.threshold(old):g} → {self.threshold(new):g}"
        )

    def threshold(self, concept: int) -> float:
        """θ of concept ``concept`` (0 is A)."""
        return self.thresholds[concept % len(self.thresholds)]

    def _own_params(self) -> dict[str, str | int | float]:
        return {"thresholds": listed(self.thresholds)}

    def _generate(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        slice, time = arrival(self.schedule, scaled_count(self.per_slice, self.size), g)
        x = SEA_RANGE * torch.rand(len(slice), 3, generator=g)
        old, new, share = self.schedule.mixing(slice, time)
        concept = torch.where(torch.rand(len(slice), generator=g, dtype=torch.float64) < share, new, old)
        theta = torch.tensor([self.threshold(c) for c in range(self.schedule.num_concepts)])[concept]
        y = (x[:, 0] + x[:, 1] <= theta).long()
        return {"x": x, "y": with_label_noise(y, 2, self.noise, g), "time": time, "slice": slice}


class Hyperplane(_DriftStream):
    """Rotating hyperplane (Hulten et al. 2001): label 1 where ``Σ wᵢxᵢ ≥ ½ Σ wᵢ`` (``dataset=hyperplane``).

    Args:
        features: input features, each uniform in [0, 1].
        slices, per_slice, size, noise, drift, change_points, width, seed, root, cache: as :class:`SEA`.
            A gradual change moves the weights linearly from the old concept's to the new one's.
    """

    name = "hyperplane"
    num_classes = 2
    model = "mlp"

    def __init__(
        self,
        features: int = 10,
        slices: int = 40,
        per_slice: int = 500,
        size: float = 1.0,
        noise: float = 0.1,
        drift: str = "abrupt",
        change_points: Sequence[int] = (10, 20, 30),
        width: int = 4,
        seed: int = 0,
        root: str = "datasets",
        cache: bool = False,
    ):
        ConfigError.raise_all(
            [
                check("features", features, is_int(features) and features >= 2, "an integer ≥ 2"),
                *common_problems(slices, per_slice, size, noise, drift, change_points, width, seed, cache),
            ]
        )
        self.features, self.input_shape = features, (features,)
        self._common(slices, per_slice, size, noise, drift, change_points, width, seed, root, cache)

    @property
    def change_points(self) -> list[ChangePoint]:
        w = self.concept_weights()
        return self.schedule.ground_truth(
            lambda old, new: (
                f"hyperplane weights, concept {concept_name(old)} → {concept_name(new)} "
                f"(the boundary turns {_degrees(w[old], w[new]):.0f}°)"
            )
        )

    def concept_weights(self) -> torch.Tensor:
        """Each concept's weight vector, A first: ``(concepts, features)`` float32."""
        return self._weights(torch.Generator().manual_seed(self.seed))

    def _weights(self, g: torch.Generator) -> torch.Tensor:
        return torch.rand(self.schedule.num_concepts, self.features, generator=g)

    def _own_params(self) -> dict[str, str | int | float]:
        return {"features": self.features}

    def _generate(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        weights = self._weights(g)  # first, so concept_weights() draws the same
        slice, time = arrival(self.schedule, scaled_count(self.per_slice, self.size), g)
        x = torch.rand(len(slice), self.features, generator=g)
        old, new, share = self.schedule.mixing(slice, time)
        w = torch.lerp(weights[old], weights[new], share.to(torch.float32).unsqueeze(1))
        y = ((x * w).sum(1) >= 0.5 * w.sum(1)).long()
        return {"x": x, "y": with_label_noise(y, 2, self.noise, g), "time": time, "slice": slice}


def _degrees(a: torch.Tensor, b: torch.Tensor) -> float:
    """The angle between two hyperplanes through the cube's centre, given their weight vectors."""
    cos = float(torch.dot(a, b) / (a.norm() * b.norm()))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


@dataclass(frozen=True)
class Centroids:
    """Random RBF clusters: ``centres`` ``(concepts, centroids, features)``; the rest per centroid."""

    centres: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    std: torch.Tensor


class RandomRBF(_DriftStream):
    """Random radial basis functions (MOA's RandomRBFGenerator), with moving centres (``dataset=rbf``).

    Args:
        features: input features; centres are uniform in [0, 1]^features.
        classes: classes, spread evenly over the centroids (each has ≥ 1).
        centroids: clusters, each with a class, a weight (how often it is picked) and a spread.
        slices, per_slice, size, noise, drift, change_points, width, seed, root, cache: as :class:`SEA`.
            An abrupt change redraws every centre; a gradual one moves each to its new position.
    """

    name = "rbf"
    model = "mlp"

    def __init__(
        self,
        features: int = 10,
        classes: int = 2,
        centroids: int = 20,
        slices: int = 40,
        per_slice: int = 500,
        size: float = 1.0,
        noise: float = 0.1,
        drift: str = "abrupt",
        change_points: Sequence[int] = (10, 20, 30),
        width: int = 4,
        seed: int = 0,
        root: str = "datasets",
        cache: bool = False,
    ):
        ConfigError.raise_all(
            [
                check("features", features, is_int(features) and features >= 1, "an integer ≥ 1"),
                check("classes", classes, is_int(classes) and classes >= 2, "an integer ≥ 2"),
                check(
                    "centroids",
                    centroids,
                    is_int(centroids) and centroids >= (classes if is_int(classes) else 2),
                    f"an integer ≥ classes ({classes}): every class needs a centroid",
                ),
                *common_problems(slices, per_slice, size, noise, drift, change_points, width, seed, cache),
            ]
        )
        self.features, self.input_shape = features, (features,)
        self.classes, self.num_classes, self.centroids = classes, classes, centroids
        self._common(slices, per_slice, size, noise, drift, change_points, width, seed, root, cache)

    @property
    def change_points(self) -> list[ChangePoint]:
        how = "move" if self.schedule.drift == "gradual" else "jump"
        return self.schedule.ground_truth(
            lambda old, new: (
                f"RBF centroids, concept {concept_name(old)} → {concept_name(new)} "
                f"(all {self.centroids} centres {how} to new random positions; classes stay)"
            )
        )

    def concept_centroids(self) -> Centroids:
        """Every concept's centres (A first), and each centroid's class, weight and spread."""
        return self._centroids(torch.Generator().manual_seed(self.seed))

    def _centroids(self, g: torch.Generator) -> Centroids:
        labels = torch.randperm(self.centroids, generator=g) % self.classes
        weights = torch.rand(self.centroids, generator=g)
        std = torch.rand(self.centroids, generator=g)
        centres = torch.rand(self.schedule.num_concepts, self.centroids, self.features, generator=g)
        return Centroids(centres, labels, weights, std)

    def _own_params(self) -> dict[str, str | int | float]:
        return {"features": self.features, "classes": self.classes, "centroids": self.centroids}

    def _generate(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        c = self._centroids(g)  # first, so concept_centroids() draws the same
        slice, time = arrival(self.schedule, scaled_count(self.per_slice, self.size), g)
        n = len(slice)
        pick = torch.multinomial(c.weights, n, replacement=True, generator=g)
        old, new, share = self.schedule.mixing(slice, time)
        centre = torch.lerp(c.centres[old, pick], c.centres[new, pick], share.to(torch.float32).unsqueeze(1))
        direction = torch.nn.functional.normalize(torch.randn(n, self.features, generator=g), dim=1)
        x = centre + direction * (torch.randn(n, 1, generator=g) * c.std[pick].unsqueeze(1))
        y = with_label_noise(c.labels[pick], self.classes, self.noise, g)
        return {"x": x, "y": y, "time": time, "slice": slice}
