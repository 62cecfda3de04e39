"""Drift trigger: train when the incoming data's distribution moved away from a reference.

Modyn's ``DataDriftTrigger`` (MMD on the current model's embeddings), with ctsim's windows, detectors
and decision rules. Every ``interval`` samples (default: every arrival batch) it compares a
*current* window with a *reference* window:

* **features** come from the encoder (:mod:`ctsim.triggers.encoders`): the active model's embeddings
  (default), a random projection or the raw inputs, or a user's module; the label-shift detector
  compares labels instead.
* **current window:** the samples since the last detection (``window: null``, no overlap), or the
  last ``window`` samples (or slices, ``unit: slices``; overlapping when larger than the interval).
* **reference window:** ``window`` (default): the ``reference_size`` samples (slices) that arrived
  just before the current window (default: as many as the current window holds); or ``trained``:
  the active model's training set, subsampled (seeded) to ``reference_size`` samples when larger.
* **detector** (:mod:`ctsim.triggers.detectors`) gives a distance and a p-value; the **rule**
  (:mod:`ctsim.triggers.rules`) turns them into a decision (p-value, static threshold, dynamic
  quantile or rolling average, each with a warm-up).

**After a drift** the ``window`` reference starts where the drift was found: both windows hold only
data that arrived since (the reference, until it can be full, what has arrived, at least
``min_samples``). Windows that reach back across a change would otherwise keep finding it, once per
decision, for as long as they straddle it (a 2-slice window fired on 3 consecutive decisions).
The ``trained`` reference is the new model's training set: when that is mostly data from before the
change, the trigger fires again, as it should, since the model has not learned the new data.
**Rules that ignore p-values** (``threshold``, ``quantile``, ``rolling``) decide on the distance
alone: the detector's permutations (most of MMD's cost) run only when such a rule fires, for the
p-value the reason reports.

Embeddings of the active model are cached per generation: each sample is embedded at most once per
model, and the arrival batch of every pipeline is embedded in the loop's one shared engine pass.
Pipelines that hold the same model (the simulation trains identical jobs once) share its passes, and
equal MMD tests (same features, same permutation seed) are computed once for all of them. Against
the ``trained`` reference, which stays the same until the next model, an MMD test without
permutations (the distance rules' first pass) summarises the reference's own pairwise distances
once per model and computes only the current window's share
(:class:`~ctsim.triggers.detectors.FixedReference`).

**Small windows.** A window with fewer than ``min_samples`` samples is not tested: with ``window:
null`` its samples carry over to the next detection; until the data before the current window can
fill the reference window, the current window's data becomes the next reference. **The first model**
is trained at the end of the first slice by which ``min_samples`` samples have arrived: there is
nothing to compare before, and a smaller training set could not serve as a reference.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ctsim.engine.base import digest
from ctsim.stream import Stream
from ctsim.triggers.base import TriggerContext, Want
from ctsim.triggers.detectors import MMD, Detector, FixedReference, Result, mmd_many
from ctsim.triggers.encoders import Encoder, ModelEmbeddings, ModuleEncoder, as_encoder
from ctsim.triggers.rules import PValue, Rule
from ctsim.validation import ConfigError, Problem, check, is_int, one_of, positive_int

EMBEDDINGS = frozenset({"embeddings"})


# Fixed references by their features' digest, while a trigger holds them: pipelines that share a model
# share its reference's share of MMD².
_FIXED: weakref.WeakValueDictionary[str, FixedReference] = weakref.WeakValueDictionary()


def _generator(seed: int, salt: int) -> torch.Generator:
    """A CPU generator for the pipeline ``seed`` and a batch or generation ``salt``. Taken modulo 2**64,
    the most ``manual_seed`` takes: any valid seed (up to 2**63 - 1) works, and small ones are unchanged."""
    return torch.Generator().manual_seed((seed * 1_000_003 + salt) % 2**64)


@dataclass(frozen=True)
class _Test:
    """A detection due now: the two windows' features, and the seed of its permutations."""

    reference: torch.Tensor
    current: torch.Tensor
    seed: int
    salt: int
    fixed: FixedReference | None = None  # the reference's share of MMD², kept while it stays the same

    def generator(self) -> torch.Generator:
        """A fresh generator: a test run again (for a fired reason's p-value) draws the same splits."""
        return _generator(self.seed, self.salt)


def _compare_all(tests: Sequence[tuple[Detector, _Test]]) -> list[Result]:
    """Each detector's result on its test; MMD tests of equal permutations in one batched call.

    Equal MMD tests (the same windows' features and permutation seed: pipelines that share a model
    and their windows) are computed once. MMD tests without permutations against a reference that
    stays the same (``reference: trained``) compute only the current window's share
    (:class:`~ctsim.triggers.detectors.FixedReference`).
    """
    results: dict[int, Result] = {}
    batched: dict[int, list[int]] = {}  # distinct MMD tests by their number of permutations
    same: dict[int, int] = {}  # an MMD test -> the equal test computed for it
    for i, (detector, test) in enumerate(tests):
        if isinstance(detector, MMD):
            fixed = detector.permutations == 0 and test.fixed is not None
            rows = batched.setdefault(-1 if fixed else detector.permutations, [])
            twin = next((j for j in rows if _equal(tests[j][1], test)), None)
            if twin is None:
                rows.append(i)
            else:
                same[i] = twin
        else:
            results[i] = detector.compare(test.reference, test.current, test.generator())
    for i in batched.pop(-1, []):  # against a fixed reference: only the current window's share
        results[i] = Result(tests[i][1].fixed.distance(tests[i][1].current), None)
    for permutations, rows in batched.items():
        pairs = [(tests[i][1].reference, tests[i][1].current) for i in rows]
        found = mmd_many(pairs, permutations, [tests[i][1].generator() for i in rows])
        results.update(zip(rows, found))
    results.update({i: results[twin] for i, twin in same.items()})
    return [results[i] for i in range(len(tests))]


def _equal(a: _Test, b: _Test) -> bool:
    """The same test: equal features and the same permutation draws."""
    return (
        (a.seed, a.salt) == (b.seed, b.salt)
        and a.reference.shape == b.reference.shape
        and a.current.shape == b.current.shape
        and torch.equal(a.reference, b.reference)
        and torch.equal(a.current, b.current)
    )


class DriftTrigger:
    """Fires when a detector finds the current window's distribution changed against the reference.

    Args:
        detector: the two-sample test (default MMD with 200 seeded permutations).
        rule: when a distance or p-value means drift (default: p < 0.01).
        encoder: the features compared (default: the active model's embeddings).
        window: the current window in ``unit`` s; null: the samples since the last detection.
        reference: ``window`` (the data just before the current window) or ``trained`` (the active
            model's training set).
        reference_size: the reference window in ``unit`` s (``trained``: samples); null: as large as
            the current window (``trained``: the whole training set).
        unit: ``samples`` or ``slices`` (time), for both windows.
        interval: samples between detections; null: every arrival batch.
        min_samples: the smallest window a detector is run on.

    >>> from ctsim.stream import toy_stream
    >>> from ctsim.triggers import replay
    >>> from ctsim.triggers.encoders import RawFeatures
    >>> stream = toy_stream([40, 40, 40], arrival_batch=20)
    >>> stream.x[80:] += 1.0  # the third slice's inputs shift
    >>> replay(DriftTrigger(encoder=RawFeatures(), min_samples=10), stream)  # initial model, then the shift
    [1, 4]
    """

    def __init__(
        self,
        detector: Detector | None = None,
        rule: Rule | None = None,
        encoder: object = None,
        window: int | None = None,
        reference: Literal["window", "trained"] = "window",
        reference_size: int | None = None,
        unit: Literal["samples", "slices"] = "samples",
        interval: int | None = None,
        min_samples: int = 20,
    ):
        def optional_positive(key: str, value: object) -> Problem | None:
            return None if value is None else positive_int(key, value)

        ConfigError.raise_all(
            [
                optional_positive("window", window),
                one_of("reference", reference, ["window", "trained"]),
                optional_positive("reference_size", reference_size),
                one_of("unit", unit, ["samples", "slices"]),
                optional_positive("interval", interval),
                check("min_samples", min_samples, is_int(min_samples) and min_samples >= 2, "an integer ≥ 2"),
            ]
        )
        self.detector = detector if detector is not None else MMD()
        self.rule = rule if rule is not None else PValue(alpha=0.01)
        permutations = getattr(self.detector, "permutations", None)
        if isinstance(self.rule, PValue) and permutations is not None:
            smallest = 1 / (permutations + 1)  # a permutation p-value is never below this
            ConfigError.raise_all(
                [
                    check(
                        "detector.permutations",
                        permutations,
                        smallest < self.rule.alpha,
                        f"more than {int(1 / self.rule.alpha) - 1} for rule.alpha={self.rule.alpha:g}: "
                        f"with {permutations} the smallest p-value is {smallest:.3g}, so it could never fire",
                    )
                ]
            )
        # A rule that ignores p-values decides on the distance alone: no permutations (the costly part
        # of MMD), until it fires; then the full test gives the reason its p-value.
        quick = permutations and not getattr(self.rule, "uses_p_value", True)
        self._quick: Detector | None = copy.copy(self.detector) if quick else None
        if self._quick is not None:
            self._quick.permutations = 0
        self.encoder: Encoder = as_encoder(encoder if encoder is not None else ModelEmbeddings())
        self.window, self.reference, self.reference_size = window, reference, reference_size
        self.unit, self.interval, self.min_samples = unit, interval, min_samples
        self.on_labels = bool(getattr(self.detector, "on_labels", False))
        self._last = 0  # position in the arrival order of the last detection's end
        self._drifted = 0  # position in the arrival order where the last drift was found: windows start there
        self._generation: int | None = None  # the generation the cached embeddings are of
        self._cache: torch.Tensor | None = None  # (num samples, d) features, rows valid where _have
        self._have: torch.Tensor | None = None
        self._asked: tuple[int, dict[str, torch.Tensor]] = (-1, {})  # the batch and rows of the last wants
        self._fixed: tuple[int, FixedReference] | None = None  # the generation whose reference it holds
        self.distances: list[tuple[int, float, float | None, bool]] = []  # batch, distance, p, fired

    # -- what the engine should compute -------------------------------------------------------------
    def signal_needs(self) -> dict[str, frozenset[str]]:
        return {"encoder": EMBEDDINGS} if self._uses_model else {}

    def wants(self, ctx: TriggerContext) -> dict[str, Want]:
        if not self._uses_model or ctx.active is None:
            return {}
        self._reset_cache_for(ctx)
        wants = {"batch": Want(ctx.batch.keys, EMBEDDINGS)}  # shared by every pipeline: one pass
        windows = self._windows(ctx)
        if isinstance(windows, tuple):
            keys = torch.cat(windows)
            keys = keys[~self._have[keys]]
            keys = keys[~torch.isin(keys, ctx.batch.keys)]
            if len(keys):
                wants["missing"] = Want(keys, EMBEDDINGS)  # the reference, once per generation
        self._asked = (ctx.batch.index, {name: w.keys for name, w in wants.items()})
        return wants

    # -- the decision -------------------------------------------------------------------------------
    def observe(self, ctx: TriggerContext) -> str | None:
        test = self._prepare(ctx)
        if not isinstance(test, _Test):
            return test
        if test.fixed is not None:  # only set for a first pass of MMD without permutations
            result = Result(test.fixed.distance(test.current), None)
        else:
            result = (self._quick or self.detector).compare(test.reference, test.current, test.generator())
        fire = self._decide(ctx, result)
        if fire and self._quick is not None:
            result = self.detector.compare(test.reference, test.current, test.generator())
        return self._record(ctx, result, fire)

    @staticmethod
    def observe_many(
        triggers: Sequence[DriftTrigger], contexts: Sequence[TriggerContext]
    ) -> list[str | None]:
        """Each trigger's ``observe``, with the MMD tests due at this decision point in one batched call.

        The loop calls this once per decision point for all its drift triggers: on a GPU, one kernel
        matrix pass (:func:`~ctsim.triggers.detectors.mmd_many`) instead of one per pipeline. Each
        test draws its permutations from its own trigger's generator, as ``observe`` does; tests whose
        rule ignores p-values run without permutations, and again with them only when they fire.
        """
        tests = [t._prepare(ctx) for t, ctx in zip(triggers, contexts)]
        due = [i for i, test in enumerate(tests) if isinstance(test, _Test)]
        first = [(triggers[i]._quick or triggers[i].detector, tests[i]) for i in due]
        results = dict(zip(due, _compare_all(first)))
        fires = {i: triggers[i]._decide(contexts[i], results[i]) for i in due}
        again = [i for i in due if fires[i] and triggers[i]._quick is not None]
        results.update(zip(again, _compare_all([(triggers[i].detector, tests[i]) for i in again])))
        return [
            t._record(ctx, results[i], fires[i]) if i in fires else test
            for i, (t, ctx, test) in enumerate(zip(triggers, contexts, tests))
        ]

    def _prepare(self, ctx: TriggerContext) -> _Test | str | None:
        """The test due now (the windows' features and its generator), or the decision without one."""
        if ctx.active is None:
            if not ctx.batch.end_of_slice or len(ctx.since_trigger) < self.min_samples:
                return None  # a first model on fewer samples could not serve as a reference
            self._last = ctx.batch.stop  # the first current window starts after the first model's data
            return "drift: initial model"
        if self._uses_model:
            self._reset_cache_for(ctx)
            index, asked = self._asked
            for name, out in ctx.signals.items():
                if index == ctx.batch.index:
                    self._store(ctx, asked[name], out["embeddings"])
        windows = self._windows(ctx)
        if windows == "no reference":
            self._last = ctx.batch.stop  # this data becomes the reference of the next detection
        if not isinstance(windows, tuple):
            return None
        ref, cur = (self._features(ctx, keys) for keys in windows)
        return _Test(ref, cur, ctx.seed, ctx.batch.index, self._fixed_reference(ctx, ref))

    def _fixed_reference(self, ctx: TriggerContext, ref: torch.Tensor) -> FixedReference | None:
        """For MMD against the active model's training set (the same until the next model): its
        share of the statistic, built once per generation and shared by the triggers that hold the
        same reference features."""
        first = self._quick or self.detector
        if self.reference != "trained" or not isinstance(first, MMD) or first.permutations:
            return None
        if self._fixed is None or self._fixed[0] != ctx.active.generation:
            key = digest(ref)
            fixed = _FIXED.get(key)
            if fixed is None:
                fixed = FixedReference(ref)
                _FIXED[key] = fixed
            self._fixed = (ctx.active.generation, fixed)
        return self._fixed[1]

    def _decide(self, ctx: TriggerContext, result: Result) -> bool:
        self._last = ctx.batch.stop
        return self.rule.decide(result)

    def _record(self, ctx: TriggerContext, result: Result, fire: bool) -> str | None:
        self.distances.append((ctx.batch.index, result.distance, result.p_value, fire))
        if not fire:
            return None
        self._drifted = ctx.batch.stop
        p = "" if result.p_value is None else f", p {result.p_value:.3g}"
        return f"drift: {self.detector.name} distance {result.distance:.4g}{p}"

    # -- windows and features -----------------------------------------------------------------------
    @property
    def _uses_model(self) -> bool:
        return self.encoder.needs_model and not self.on_labels

    def _due(self, ctx: TriggerContext) -> bool:
        return self.interval is None or ctx.batch.stop - self._last >= self.interval

    def _windows(self, ctx: TriggerContext) -> tuple[torch.Tensor, torch.Tensor] | str:
        """The (reference, current) keys of a detection due now, or why there is none."""
        if ctx.active is None or not self._due(ctx):
            return "not due"
        seen = ctx.seen
        if self.unit == "samples":
            start = self._last if self.window is None else max(0, len(seen) - self.window)
            start = min(start, len(seen))
            cur = seen[start:]
        else:
            slices = ctx.stream.slice[seen]
            first = (
                ctx.batch.slice - (self.window - 1)
                if self.window
                else int(slices[min(self._last, len(seen) - 1)])
            )
            start = int(torch.searchsorted(slices, torch.tensor(first)))
            cur = seen[start:]
        if self.reference == "trained":
            ref = self._subsample(ctx.active.keys, ctx)
        elif start < self._drifted:
            return "no reference"  # the current window still holds data from before the last drift
        elif self.unit == "samples":
            size = self.reference_size or len(cur)
            ref = seen[max(0, self._drifted, start - size) : start]
            cut = self._drifted > 0 and start - size < self._drifted  # after a drift: only what came since
            if len(ref) < size and not cut:
                return "no reference"  # not enough data before the current window yet
        else:
            slices = ctx.stream.slice[seen[:start]]
            if len(slices) == 0:
                return "no reference"
            size = self.reference_size or max(1, ctx.batch.slice - int(ctx.stream.slice[cur[0]]) + 1)
            first = int(slices[-1]) - size + 1
            if first < 0 and self._drifted == 0:
                return "no reference"
            first_key = int(torch.searchsorted(slices, torch.tensor(max(first, 0))))
            ref = seen[max(first_key, self._drifted) : start]
        if len(cur) < self.min_samples:
            return "small"  # with window: null, its samples carry over to the next detection
        if len(ref) < self.min_samples:
            return "no reference"
        return ref, cur

    def _subsample(self, keys: torch.Tensor, ctx: TriggerContext) -> torch.Tensor:
        if self.reference_size is None or len(keys) <= self.reference_size:
            return keys
        g = _generator(ctx.seed, ctx.active.generation)
        return keys[torch.randperm(len(keys), generator=g)[: self.reference_size]].sort().values

    def _features(self, ctx: TriggerContext, keys: torch.Tensor) -> torch.Tensor:
        if self.on_labels:
            return ctx.y[keys.to(ctx.y.device)]
        if not self._uses_model:
            return self.encoder.encode(ctx.x[keys.to(ctx.x.device)])
        return self._cache[keys.to(self._cache.device)]

    def _reset_cache_for(self, ctx: TriggerContext) -> None:
        if self._generation != ctx.active.generation:
            self._generation, self._cache, self._have = ctx.active.generation, None, None
        if self._have is None:
            self._have = torch.zeros(len(ctx.stream.time), dtype=torch.bool)

    def _store(self, ctx: TriggerContext, keys: torch.Tensor, emb: torch.Tensor) -> None:
        if self._cache is None:
            self._cache = torch.zeros(len(ctx.stream.time), emb.shape[1], dtype=emb.dtype, device=emb.device)
        self._cache[keys.to(emb.device)] = emb
        self._have[keys] = True

    # -- checks -------------------------------------------------------------------------------------
    def problems(self, stream: Stream) -> list[Problem]:
        found = []
        if self.unit == "samples":
            n = len(stream.arrival_order)
            for key, size in (("window", self.window), ("reference_size", self.reference_size)):
                if size is not None and size > n:
                    found.append(Problem(key, size, f"at most the stream's {n} training samples"))
        else:
            for key, size in (("window", self.window), ("reference_size", self.reference_size)):
                if size is not None and size > stream.num_slices:
                    found.append(Problem(key, size, f"at most the stream's {stream.num_slices} slices"))
        if isinstance(self.encoder, ModuleEncoder):
            found += self.encoder.problems(stream.input_shape)
        return found
