"""The trigger contract: one decision per arrival batch.

A trigger sees a narrow context (the arrival batch, the keys seen so far, the keys since the last
trigger, the pipeline's generations so far, the stream's tensors) and answers with the reason to
train, or None.

**The contract.** :class:`Trigger` is the one required method, ``observe(ctx)``. Three optional
hooks are declared as protocols of their own; a trigger has one by defining the method (no base class
to inherit):

* :class:`WantsSignals`, ``wants(ctx)``: the model signals it needs before deciding (below);
* :class:`DeclaresSignals`, ``signal_needs()``: the signals its wants may ask for, by the setting that
  asks, checked against the model at start-up (below);
* :class:`ChecksStream`, ``problems(stream)``: what in its settings the stream cannot serve (a window
  larger than the stream), checked once the data is loaded, before any training;
* :class:`DecidesTogether`, a static ``observe_many(triggers, contexts)``: every trigger of the class
  decides in one call (the drift trigger batches its MMD tests across pipelines).

A run checks a trigger's class against the contract at start-up (:func:`trigger_problems`), before any
data is loaded: a missing ``observe``, a method named almost like a hook (``observ``, ``want``) or one
that cannot take the hook's arguments is a one-line error naming the class and the method. What the
methods return is checked at every call (:func:`wants_of`, :func:`decide`): a reason that is not None
or a non-empty string (``True``, ``[0]``, ``""``), or wants that are not ``{name: Want}`` of known
signals, stop the run naming the class and the method. Once the data is loaded, before any training,
a copy of the trigger is shown the first arrival batch (:func:`first_decision_problems`), so most such
mistakes stop the run before its folder holds anything.

**Signals.** A trigger that needs what the active model says about some rows (its embeddings,
logits, predictions or per-sample losses, :data:`~ctsim.engine.base.SIGNALS`) declares it before
it decides: ``wants(ctx)`` returns named :class:`Want` s. The loop gathers every pipeline's wants at a
decision point and asks the engine once (:func:`gather`); the batched engine runs all requests on
the same rows (the arrival batch) as one ``vmap`` pass. The answers come back in ``ctx.signals``
under the same names. Triggers that want nothing cost nothing: no forward pass at all. Before the
first generation there is no active model, and its wants are left out of ``ctx.signals``.

Every model gives logits, predictions and losses; only ``embeddings`` need a model with ``embed`` and
``head`` (:func:`~ctsim.engine.signals.embeds`). A trigger whose wants may ask for them declares so in
``signal_needs()`` (the drift trigger on the model's embeddings: ``{"encoder": {"embeddings"}}``), and a
run refuses a model without them at start-up, naming that setting, instead of at the first request.
"""

from __future__ import annotations

import copy
import time
from abc import abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Protocol, runtime_checkable

import torch

from ctsim.engine.base import SIGNALS, Engine, SignalRequest, State, digest
from ctsim.models.base import ModelSpec
from ctsim.stream import ArrivalBatch, Stream
from ctsim.validation import ConfigError, Problem, contract_problems

Signals = Mapping[str, Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class Want:
    """One pass of the active model a trigger wants before deciding: over which rows, which signals."""

    keys: torch.Tensor
    needs: frozenset[str]


@dataclass(frozen=True)
class Trained:
    """What a trigger may know of one of its pipeline's generations."""

    generation: int
    keys: torch.Tensor  # its training set
    new_samples: int  # samples that had arrived since the trigger before it
    samples_trained: int  # selected samples × epochs
    flops: int  # training FLOPs
    seconds: float  # training seconds (wall clock: not reproducible)


@dataclass(frozen=True)
class TriggerContext:
    """What a trigger may look at when ``batch`` arrives (``batch`` is already in ``seen``).

    ``stream`` gives each key's time and slice; ``x`` and ``y`` are the stream's inputs and labels on
    the engine's device (None where a caller replays keys only). ``generations`` are the pipeline's
    trained generations so far, the last one active. ``seed`` is the pipeline's seed.
    """

    batch: ArrivalBatch
    seen: torch.Tensor
    since_trigger: torch.Tensor
    triggers_so_far: int
    stream: Stream | None = None
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    generations: tuple[Trained, ...] = ()
    seed: int = 0
    signals: Signals = field(default_factory=dict)

    @property
    def active(self) -> Trained | None:
        return self.generations[-1] if self.generations else None


@runtime_checkable
class Trigger(Protocol):
    """Decides, once per arrival batch, whether to train a new model generation."""

    @abstractmethod
    def observe(self, ctx: TriggerContext) -> str | None:
        """The reason to train now, or None to wait."""
        ...


@runtime_checkable
class WantsSignals(Protocol):
    """Optional: a trigger that needs the active model's signals on some rows before it decides."""

    @abstractmethod
    def wants(self, ctx: TriggerContext) -> Mapping[str, Want]:
        """The model signals the trigger needs before it decides, answered in ctx.signals."""
        ...


@runtime_checkable
class DeclaresSignals(Protocol):
    """Optional: a trigger that says, before any run, which model signals its wants may ask for."""

    @abstractmethod
    def signal_needs(self) -> Mapping[str, frozenset[str]]:
        """The signals its wants may ask for, by the setting that asks (checked against the model)."""
        ...


@runtime_checkable
class ChecksStream(Protocol):
    """Optional: a trigger whose settings a stream may not serve (a window larger than the stream)."""

    @abstractmethod
    def problems(self, stream: Stream) -> list[Problem]:
        """What in the trigger's settings the stream cannot serve, checked before any training."""
        ...


@runtime_checkable
class DecidesTogether(Protocol):
    """Optional: triggers of one class that decide together, one answer per trigger, in order."""

    @staticmethod
    @abstractmethod
    def observe_many(triggers: Sequence[Trigger], contexts: Sequence[TriggerContext]) -> list[str | None]:
        """Every trigger of the class decides in one call, as each one's observe would."""
        ...


OPTIONAL_HOOKS = (WantsSignals, DeclaresSignals, ChecksStream, DecidesTogether)


def trigger_problems(cls: type, key: str = "trigger._target_") -> list[Problem]:
    """What keeps the class ``cls`` from serving as a trigger (see the module docstring), one line each.

    >>> class Late:
    ...     def observ(self, ctx):
    ...         return None
    >>> print(trigger_problems(Late)[0].text)  # doctest: +ELLIPSIS
    ctsim.triggers.base.Late has no method observe(ctx) but has observ: rename observ to observe (...)
    """
    return contract_problems(cls, key, "trigger", [Trigger], OPTIONAL_HOOKS, (Trigger, *OPTIONAL_HOOKS))


@cache
def _offers(cls: type, hook: type) -> bool:
    return issubclass(cls, hook)


def wants_of(trigger: Trigger, ctx: TriggerContext) -> dict[str, Want]:
    """The trigger's wants at ``ctx``: none if it does not declare :class:`WantsSignals`.

    Wants that are not ``{name: Want}`` of known signals raise a ConfigError naming the class.
    """
    if not _offers(type(trigger), WantsSignals):
        return {}
    wants = trigger.wants(ctx)
    ConfigError.raise_all([wants_problem(trigger, wants)])
    return dict(wants)


def _named(trigger: object) -> str:
    return f"{type(trigger).__module__}.{type(trigger).__qualname__}"


def _returned(trigger: object, method: str, value: object, expected: str) -> Problem:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    text = f"{_named(trigger)}.{method} returned {shown} (a {type(value).__name__}): expected {expected}"
    return Problem("trigger._target_", _named(trigger), "", text=text)


def reason_problem(trigger: Trigger, reason: object) -> Problem | None:
    """A decision that is neither None nor a non-empty string, named after the trigger's class.

    >>> class Yes:
    ...     def observe(self, ctx):
    ...         return True
    >>> print(reason_problem(Yes(), True).text)  # doctest: +ELLIPSIS
    ctsim.triggers.base.Yes.observe returned True (a bool): expected a non-empty str, ... or None to wait
    >>> reason_problem(Yes(), "drift") is None and reason_problem(Yes(), None) is None
    True
    """
    if reason is None or (isinstance(reason, str) and reason):
        return None
    method = "observe_many" if _offers(type(trigger), DecidesTogether) else "observe"
    expected = "a non-empty str, the reason to train (generations.trigger_reason), or None to wait"
    return _returned(trigger, method, reason, expected)


def wants_problem(trigger: Trigger, wants: object) -> Problem | None:
    """Wants that are not a mapping of names to :class:`Want` of known signals (``needs`` a set of
    names from ``SIGNALS``, ``keys`` a ``torch.long`` tensor of rows or None), named after the class.

    >>> class Typo:
    ...     def wants(self, ctx):
    ...         return {"batch": Want(None, frozenset({"prediction"}))}
    >>> print(wants_problem(Typo(), Typo().wants(None)).text)  # doctest: +ELLIPSIS
    ctsim.triggers.base.Typo.wants returned ... expected ... signals from ['embeddings', 'logits', ...
    """
    expected = (
        "a dict {name: Want(keys, needs)}: keys a torch.long tensor of rows (or None), needs a "
        f"frozenset of signals from {list(SIGNALS)}"
    )
    if not isinstance(wants, Mapping):
        return _returned(trigger, "wants", wants, expected)
    for name, want in wants.items():
        if not isinstance(name, str) or not isinstance(want, Want):
            return _returned(trigger, "wants", {name: want}, expected)
        needs, keys = want.needs, want.keys
        if not isinstance(needs, (set, frozenset)) or not set(needs) <= set(SIGNALS):
            return _returned(trigger, "wants", {name: needs}, expected)
        if keys is not None and not (isinstance(keys, torch.Tensor) and keys.dtype == torch.long):
            return _returned(trigger, "wants", {name: keys}, expected)
    return None


def first_decision_problems(trigger: Trigger, stream: Stream, seed: int = 0) -> list[Problem]:
    """What a copy of ``trigger`` returns at the stream's first arrival batch that breaks the contract.

    The loop's first step, before any training (no active model, so no signals): the copy's wants and
    decision are checked as the run checks them (:func:`wants_of`, :func:`decide`), so a mistake stops
    the run before its folder holds anything. The trigger itself, and torch's random stream, are left
    as they were. A copy that cannot be made, or a method that raises, is left to the run, which calls
    it on the same batch.

    >>> from ctsim.stream import toy_stream
    >>> class Listing:
    ...     def observe(self, ctx):
    ...         return [ctx.batch.index]
    >>> print(first_decision_problems(Listing(), toy_stream([2, 2]))[0])  # doctest: +ELLIPSIS
    trigger._target_: ctsim.triggers.base.Listing.observe returned [0] (a list): expected a non-empty str...
    """
    batch = stream.batches[0]
    seen = stream.arrival_order[: batch.stop]
    ctx = TriggerContext(batch, seen, seen, 0, stream, stream.x, stream.y, (), seed)
    with torch.random.fork_rng(devices=[]):
        try:
            probe = copy.deepcopy(trigger)
            wants_of(probe, ctx)
            decide([probe], [ctx])
        except ConfigError as e:
            return e.problems
        except Exception:  # the run calls the trigger on this batch and shows the error in full
            return []
    return []


def signal_needs_of(trigger: Trigger) -> dict[str, frozenset[str]]:
    """The signals the trigger's wants may ask for, by setting: none if it does not declare
    :class:`DeclaresSignals`.

    >>> from ctsim.triggers import DriftTrigger
    >>> from ctsim.triggers.encoders import RawFeatures
    >>> signal_needs_of(DriftTrigger()), signal_needs_of(DriftTrigger(encoder=RawFeatures()))
    ({'encoder': frozenset({'embeddings'})}, {})
    """
    return dict(trigger.signal_needs()) if _offers(type(trigger), DeclaresSignals) else {}


def gather(
    engine: Engine,
    asks: Sequence[tuple[ModelSpec, State | None, Mapping[str, Want]]],
    x: torch.Tensor,
    y: torch.Tensor | None,
    models: Sequence[Hashable | None] | None = None,
) -> list[dict[str, dict[str, torch.Tensor]]]:
    """Every pipeline's wants answered by one engine call (none when nothing is wanted).

    ``asks`` holds, per pipeline, its model, its active state (None: no model yet, so its wants are
    left unanswered) and its wants. Wants of equal rows (the arrival batch) share a keys object, so the
    engine serves them in one pass. ``models`` names each pipeline's active model (e.g. the
    fingerprint of the job that trained it; None: unnamed): wants of equally named models on rows of
    equal keys are one request, answered once for all of them.
    """
    requests: list[SignalRequest] = []
    owners: list[list[tuple[int, str, frozenset[str]]]] = []
    named: dict[tuple, int] = {}  # (model name, rows) -> its request
    for i, (model, state, wants) in enumerate(asks):
        if state is None:
            continue
        name = None if models is None else models[i]
        for want_name, want in wants.items():
            same = None if name is None else (name, model.key, _rows(want.keys))
            if same in named:
                r = named[same]
                requests[r] = replace(requests[r], needs=requests[r].needs | want.needs)
            else:
                if same is not None:
                    named[same] = len(requests)
                requests.append(SignalRequest(model, state, want.needs, want.keys))
                owners.append([])
            owners[named[same] if same is not None else -1].append((i, want_name, want.needs))
    found: list[dict[str, dict[str, torch.Tensor]]] = [{} for _ in asks]
    if not requests:
        return found
    for answers, out in zip(owners, engine.signals(requests, x, y)):
        for i, want_name, needs in answers:
            found[i][want_name] = {k: v for k, v in out.items() if k in needs}
    return found


def _rows(keys: torch.Tensor | None) -> Hashable:
    """A key for a set of rows: equal for equal keys."""
    return None if keys is None else digest(keys)


def replay(
    trigger: Trigger,
    stream: Stream,
    engine: Engine | None = None,
    model: ModelSpec | None = None,
    state: State | None = None,
    seed: int = 0,
    stop: int | None = None,
) -> list[int]:
    """Run one trigger alone over a stream; return the indices of the batches it fires on.

    Nothing is trained: each time the trigger fires, a generation is recorded as trained on the
    samples since the last trigger (at one FLOP a sample). With ``engine``, ``model`` and ``state``,
    that fixed model answers the trigger's wants for every generation, so triggers that want model
    signals can be replayed without training. ``stop`` ends the replay before that batch index.

    >>> from ctsim.stream import toy_stream
    >>> from ctsim.triggers import TimeTrigger
    >>> replay(TimeTrigger(every=2), toy_stream([1, 1, 1, 1, 1]))
    [1, 3]
    """
    fired: list[int] = []
    gens: list[Trained] = []
    last = 0
    x = stream.x if engine is None else stream.x.to(engine.device)
    y = stream.y if engine is None else stream.y.to(engine.device)
    for batch in stream.batches[:stop]:
        since = stream.arrival_order[last : batch.stop]
        ctx = TriggerContext(
            batch, stream.arrival_order[: batch.stop], since, len(gens), stream, x, y, tuple(gens), seed
        )
        wants = wants_of(trigger, ctx)
        if wants:
            if engine is None or model is None:
                raise ValueError("this trigger wants model signals: replay it with engine, model and state")
            ctx = replace(ctx, signals=gather(engine, [(model, state, wants)], x, y)[0])
        if trigger.observe(ctx) is not None:
            fired.append(batch.index)
            gens.append(Trained(len(gens), since, len(since), len(since), len(since), 0.0))  # 1 FLOP a sample
            last = batch.stop
    return fired


def decide(
    triggers: Sequence[Trigger], contexts: Sequence[TriggerContext]
) -> tuple[list[str | None], list[float]]:
    """Every trigger's decision at one decision point, and the seconds each took.

    Triggers of a class with :class:`DecidesTogether` decide together (the drift trigger batches its
    MMD tests across pipelines; their seconds are shared evenly); the others one by one.
    """
    reasons: list[str | None] = [None] * len(triggers)
    seconds = [0.0] * len(triggers)
    together: dict[type, list[int]] = {}
    for i, trigger in enumerate(triggers):
        if _offers(type(trigger), DecidesTogether):
            together.setdefault(type(trigger), []).append(i)
        else:
            tick = time.perf_counter()
            reasons[i] = trigger.observe(contexts[i])
            seconds[i] = time.perf_counter() - tick
    for kind, rows in together.items():
        tick = time.perf_counter()
        found = list(kind.observe_many([triggers[i] for i in rows], [contexts[i] for i in rows]))
        share = (time.perf_counter() - tick) / len(rows)
        if len(found) != len(rows):
            expected = f"one reason (or None) per trigger, {len(rows)} in all"
            ConfigError.raise_all([_returned(triggers[rows[0]], "observe_many", found, expected)])
        for i, reason in zip(rows, found):
            reasons[i], seconds[i] = reason, share
    # checked here, not later: a True or [0] would be taken as a reason to train, and "" recorded as one
    ConfigError.raise_all(dict.fromkeys(reason_problem(t, r) for t, r in zip(triggers, reasons)))
    return reasons, seconds


def problems_of(trigger: Trigger, stream: Stream) -> list[Problem]:
    """What in the trigger's settings ``stream`` cannot serve (none without :class:`ChecksStream`)."""
    return list(trigger.problems(stream)) if _offers(type(trigger), ChecksStream) else []
