"""Trigger quality against a dataset's known change points, and how long samples wait to be trained on.

A pipeline's triggers are its generations, each at its ``trigger_slice``. Per pipeline:

* **Scored change points** are those of ``kinds``, by default ``("abrupt",)``. Portraits and sensors
  both have gradual changes that cover the whole stream; scoring them would leave no stable slice, so
  by default gradual changes are background drift, neither detected nor counted against a trigger.
* **Detection delay** of a change at slice ``c``: ``t - c`` for the first trigger at a slice ``t ≥ c``.
  A trigger *on* slice ``c`` has delay 0: it fires on an arrival batch of slice ``c`` and trains on
  that batch, so it has seen changed data (with one batch per slice, the whole of slice ``c``).
  The first generation counts too: a model first trained after the change has seen it.
* **Horizon** (default 5 slices): a trigger detects the change only if its delay is at most
  ``horizon``, and only before the next scored change point starts; ``horizon=None`` waits until then
  (or the end of the stream). No trigger in that window is a **miss** (delay None).
* **Span** of a scored change: an abrupt change at ``c`` spans ``[c, c + tolerance]`` (``tolerance``
  defaults to ``horizon``, may be smaller, and is cut at the next scored change point and at the
  stream's end, as the horizon is); a gradual one spans ``[slice, end_slice]`` (without an
  ``end_slice``, as an abrupt one).
* **Stable slices** are those outside every span. A trigger on a stable slice is a **false alarm**,
  unless it is the first generation (the initial model, whenever it is trained) or detected a change.
  The rate is ``false_alarms × 50 / stable_slices`` (NaN without stable slices).
* **Extra triggers** are triggers inside a span that are neither the first generation nor the
  detection. So ``triggers = [first generation detected nothing] + detections + extra + false alarms``
  (each trigger detecting at most one change).
* **Incorporation latency** of a training sample: from its arrival (``stream.time``) to the
  ``trigger_time`` of the first generation that trained on it, in the stream's time unit (years for
  portraits and sensors). Its mean is over incorporated samples; ``never_incorporated`` is the share of
  the train pool no generation trained on (with ``selection=new``, all samples after the last trigger).

>>> cp = [ChangePoint(slice=10, kind="abrupt", what="a new sensor")]
>>> q = trigger_quality([0, 4, 12, 13, 25], num_slices=30, change_points=cp)
>>> q.delays, q.false_alarms, q.extra_triggers, q.stable_slices, round(q.false_alarms_per_50, 2)
([2], 2, 1, 24, 4.17)
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import torch

from ctsim.datasets.base import ChangePoint
from ctsim.stream import Stream
from ctsim.validation import ConfigError, Problem, check, is_int

KINDS = ("abrupt", "gradual")
_SLICES = "None or an integer ≥ 0 (slices)"
PER_SLICES = 50  # false alarms are counted per this many stable slices


@dataclass(frozen=True)
class TriggerQuality:
    """One pipeline's triggers scored against the change points (see the module docstring).

    ``delays`` has one entry per scored change point, in slice order: slices to detection, or None
    for a miss. ``mean_delay`` is over the detected ones (NaN if none), ``max_delay`` too (None).
    """

    delays: list[int | None]
    mean_delay: float
    max_delay: int | None
    misses: int
    false_alarms: int
    extra_triggers: int
    stable_slices: int
    false_alarms_per_50: float
    triggers: int

    @property
    def detected(self) -> int:
        return len(self.delays) - self.misses


def trigger_quality(
    trigger_slices: Sequence[int],
    num_slices: int,
    change_points: Sequence[ChangePoint],
    kinds: Sequence[str] = ("abrupt",),
    horizon: int | None = 5,
    tolerance: int | None = None,
) -> TriggerQuality:
    """Detection delays, misses, false alarms and extra triggers of one pipeline.

    Args:
        trigger_slices: each generation's ``trigger_slice``, in generation order (non-decreasing).
        num_slices: slices in the stream.
        change_points: the dataset's change points; only those of ``kinds`` are scored.
        kinds: which kinds of change point to score (``"abrupt"``, ``"gradual"``).
        horizon: the largest delay, in slices, that still counts as a detection; None: any delay
            before the next scored change point or the stream's end.
        tolerance: slices after an abrupt change that are not stable; None: ``horizon``.
    """
    _raise_problems(kinds, horizon, tolerance)
    slices = list(trigger_slices)
    if any(b < a for a, b in itertools.pairwise(slices)) or any(not 0 <= s < num_slices for s in slices):
        raise ValueError(f"trigger_slices={slices}: expected non-decreasing slices in [0, {num_slices})")
    scored = sorted((c for c in change_points if c.kind in kinds), key=lambda c: c.slice)
    delays, detecting = _detections(slices, scored, num_slices, horizon)
    in_span = _spans(scored, num_slices, horizon if tolerance is None else tolerance)
    later = [i for i in range(1, len(slices)) if i not in detecting]
    false_alarms = sum(not in_span[slices[i]] for i in later)
    stable = num_slices - sum(in_span)
    found = [d for d in delays if d is not None]
    return TriggerQuality(
        delays=delays,
        mean_delay=sum(found) / len(found) if found else math.nan,
        max_delay=max(found, default=None),
        misses=len(delays) - len(found),
        false_alarms=false_alarms,
        extra_triggers=len(later) - false_alarms,
        stable_slices=stable,
        false_alarms_per_50=false_alarms * PER_SLICES / stable if stable else math.nan,
        triggers=len(slices),
    )


def _raise_problems(kinds: Sequence[str], horizon: int | None, tolerance: int | None) -> None:
    problems: list[Problem | None] = [
        check("kinds", kinds, all(k in KINDS for k in kinds), f"a list of kinds out of {list(KINDS)}"),
        check("horizon", horizon, horizon is None or (is_int(horizon) and horizon >= 0), _SLICES),
        check("tolerance", tolerance, tolerance is None or (is_int(tolerance) and tolerance >= 0), _SLICES),
    ]
    if is_int(horizon) and is_int(tolerance) and tolerance > horizon:
        problems.append(check("tolerance", tolerance, False, f"at most the horizon ({horizon})"))
    ConfigError.raise_all(problems)


def _last_slice(scored: list[ChangePoint], i: int, num_slices: int, reach: int | None) -> int:
    """The last slice within ``reach`` of change ``i``, before the next change starts, in the stream."""
    start = scored[i].slice
    last = num_slices - 1 if reach is None else min(num_slices - 1, start + reach)
    later = [c.slice for c in scored[i + 1 :] if c.slice > start]
    return min(last, later[0] - 1) if later else last


def _detections(
    slices: list[int], scored: list[ChangePoint], num_slices: int, horizon: int | None
) -> tuple[list[int | None], set[int]]:
    """Each scored change's delay (None: missed), and the generations that detected one."""
    delays: list[int | None] = []
    detecting: set[int] = set()
    for i, change in enumerate(scored):
        first = bisect.bisect_left(slices, change.slice)  # the first trigger at or after the change
        if first < len(slices) and slices[first] <= _last_slice(scored, i, num_slices, horizon):
            delays.append(slices[first] - change.slice)
            detecting.add(first)
        else:
            delays.append(None)
    return delays, detecting


def _spans(scored: list[ChangePoint], num_slices: int, tolerance: int | None) -> list[bool]:
    """Per slice: whether it lies in some scored change's span (is not stable)."""
    in_span = [False] * num_slices
    for i, change in enumerate(scored):
        if change.kind == "gradual" and change.end_slice is not None:
            last = min(change.end_slice, num_slices - 1)
        else:
            last = _last_slice(scored, i, num_slices, tolerance)
        for s in range(max(change.slice, 0), last + 1):
            in_span[s] = True
    return in_span


@dataclass(frozen=True)
class Incorporation:
    """Mean wait from arrival to the first generation trained on a sample (NaN if none was), and the
    share of the train pool never trained on."""

    mean_latency: float
    never_fraction: float


def incorporation(
    trigger_times: Sequence[float],
    keys: Sequence[torch.Tensor],
    time: torch.Tensor,
    arrival_order: torch.Tensor,
) -> Incorporation:
    """Incorporation latency of one pipeline, given each generation's ``trigger_time`` and training keys.

    ``time`` is every sample's timestamp (``stream.time``), ``arrival_order`` the train pool's keys.
    """
    first = torch.full((len(time),), math.inf, dtype=torch.float64)
    if len(keys):
        sizes = torch.tensor([len(k) for k in keys])
        when = torch.repeat_interleave(torch.tensor(trigger_times, dtype=torch.float64), sizes)
        first.scatter_reduce_(0, torch.cat([k.long() for k in keys]), when, "amin")
    done = first[arrival_order]
    trained = torch.isfinite(done)
    waits = done[trained] - time[arrival_order][trained].to(torch.float64)
    return Incorporation(
        mean_latency=waits.mean().item() if len(waits) else math.nan,
        never_fraction=1 - trained.double().mean().item() if len(done) else math.nan,
    )


@dataclass(frozen=True)
class PipelineTriggers:
    """One pipeline's generations, in order: trigger slices and times, and the keys each trained on."""

    pipeline: str
    seed: int
    slices: list[int]
    times: list[float]
    keys: list[torch.Tensor]

    def __post_init__(self) -> None:
        if not len(self.slices) == len(self.times) == len(self.keys):
            raise ValueError(
                f"{self.pipeline} seed {self.seed}: {len(self.slices)} slices, {len(self.times)} times "
                f"and {len(self.keys)} key sets: expected one of each per generation"
            )


QUALITY_SCHEMA = {
    "pipeline": pl.String,
    "seed": pl.Int64,
    "triggers": pl.Int64,
    "change_points": pl.Int64,
    "detected": pl.Int64,
    "misses": pl.Int64,
    "mean_delay_slices": pl.Float64,
    "max_delay_slices": pl.Int64,
    "false_alarms": pl.Int64,
    "stable_slices": pl.Int64,
    "false_alarms_per_50": pl.Float64,
    "extra_triggers": pl.Int64,
    "incorporation_latency": pl.Float64,
    "never_incorporated": pl.Float64,
}


def quality_table(
    rows: Sequence[PipelineTriggers],
    num_slices: int,
    change_points: Sequence[ChangePoint],
    time: torch.Tensor,
    arrival_order: torch.Tensor,
    kinds: Sequence[str] = ("abrupt",),
    horizon: int | None = 5,
    tolerance: int | None = None,
) -> pl.DataFrame:
    """One row per pipeline and seed: :func:`trigger_quality` and :func:`incorporation` side by side.

    Undefined values (no detection, no stable slice, nothing incorporated) are null.
    """
    records = []
    for row in rows:
        q = trigger_quality(row.slices, num_slices, change_points, kinds, horizon, tolerance)
        inc = incorporation(row.times, row.keys, time, arrival_order)
        records.append(
            {
                "pipeline": row.pipeline,
                "seed": row.seed,
                "triggers": q.triggers,
                "change_points": len(q.delays),
                "detected": q.detected,
                "misses": q.misses,
                "mean_delay_slices": q.mean_delay,
                "max_delay_slices": q.max_delay,
                "false_alarms": q.false_alarms,
                "stable_slices": q.stable_slices,
                "false_alarms_per_50": q.false_alarms_per_50,
                "extra_triggers": q.extra_triggers,
                "incorporation_latency": inc.mean_latency,
                "never_incorporated": inc.never_fraction,
            }
        )
    return pl.DataFrame(records, schema=QUALITY_SCHEMA).with_columns(pl.col(pl.Float64).fill_nan(None))


def pipeline_triggers(
    generations: pl.DataFrame | pl.LazyFrame, lineage: pl.DataFrame | pl.LazyFrame
) -> list[PipelineTriggers]:
    """Each pipeline's generations from a run's ``generations`` and ``lineage`` tables.

    Pipelines come in the order they first appear in ``generations``; a pipeline without generations
    is not in these tables, so it has no row.
    """
    on = ["pipeline", "seed", "generation"]
    frame = (
        generations.lazy()
        .select(*on, "trigger_slice", "trigger_time")
        .with_row_index("row")
        .join(lineage.lazy().select(*on, "keys"), on=on, how="left")
        .sort("row")  # a join need not keep the left order
        .collect()
    )
    missing = frame.filter(pl.col("keys").is_null())
    if len(missing):
        raise ValueError(f"lineage has no keys for the generations {missing.select(on).rows()}")
    rows = []
    for (pipeline, seed), own in frame.group_by("pipeline", "seed", maintain_order=True):
        own = own.sort("generation")
        sizes = own["keys"].list.len().to_list()
        flat = torch.from_numpy(own["keys"].explode().drop_nulls().to_numpy().astype("int64"))
        keys = list(torch.split(flat, sizes))
        rows.append(
            PipelineTriggers(
                pipeline, seed, own["trigger_slice"].to_list(), own["trigger_time"].to_list(), keys
            )
        )
    return rows


def quality_from_tables(
    generations: pl.DataFrame | pl.LazyFrame,
    lineage: pl.DataFrame | pl.LazyFrame,
    stream: Stream,
    kinds: Sequence[str] = ("abrupt",),
    horizon: int | None = 5,
    tolerance: int | None = None,
) -> pl.DataFrame:
    """:func:`quality_table` of a run, from its ``generations`` and ``lineage`` tables and its stream."""
    return quality_table(
        pipeline_triggers(generations, lineage),
        stream.num_slices,
        stream.change_points,
        stream.time,
        stream.arrival_order,
        kinds,
        horizon,
        tolerance,
    )


def quality_markdown(table: pl.DataFrame) -> str:
    """A markdown table of :func:`quality_table`'s columns, means over seeds per pipeline."""
    columns = [c for c in QUALITY_SCHEMA if c not in ("pipeline", "seed")]
    means = table.group_by("pipeline", maintain_order=True).agg(
        pl.len().alias("seeds"), *(pl.col(c).cast(pl.Float64).mean() for c in columns)
    )
    header = ["pipeline", "seeds", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in means.iter_rows(named=True):
        lines.append("| " + " | ".join(_fmt(row[c]) for c in header) + " |")
    lines += [
        "",
        f"Delays in slices; false alarms per {PER_SLICES} stable slices; incorporation latency in the "
        "stream's time unit, never_incorporated a share of the train pool; means over seeds (– : none).",
    ]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)
