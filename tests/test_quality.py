import math
import random

import polars as pl
import pytest
import torch

from ctsim.datasets.base import ChangePoint
from ctsim.measure.quality import (
    PipelineTriggers,
    incorporation,
    pipeline_triggers,
    quality_from_tables,
    quality_markdown,
    quality_table,
    trigger_quality,
)
from ctsim.stream import toy_stream
from ctsim.validation import ConfigError

AT_10 = [ChangePoint(slice=10, kind="abrupt", what="x")]


def score(slices, change_points=AT_10, num_slices=30, **kw):
    return trigger_quality(slices, num_slices, change_points, **kw)


@pytest.mark.parametrize(("slices", "delay"), [([0, 10], 0), ([0, 12], 2), ([0, 15], 5), ([0, 16], None)])
def test_delay_counts_slices_from_the_change_to_the_first_trigger_within_the_horizon(slices, delay):
    q = score(slices, horizon=5)
    assert q.delays == [delay]
    assert q.misses == (delay is None)
    assert q.detected == (delay is not None)
    assert q.max_delay == delay


def test_a_trigger_past_the_horizon_is_a_miss_and_a_false_alarm():
    q = score([0, 25], horizon=5)
    assert q.delays == [None] and q.misses == 1
    assert math.isnan(q.mean_delay)
    assert q.false_alarms == 1 and q.extra_triggers == 0
    assert score([0, 25], horizon=None).delays == [15]  # no horizon: until the stream's end


def test_false_alarms_are_triggers_on_stable_slices_per_50_of_them():
    q = score([0, 3, 5, 11, 13, 20, 29], horizon=5)  # the change spans slices 10-15
    assert q.stable_slices == 24
    assert q.delays == [1]
    assert q.false_alarms == 4  # 3, 5, 20, 29
    assert q.extra_triggers == 1  # 13: in the span, after the detection
    assert q.false_alarms_per_50 == pytest.approx(4 * 50 / 24)
    assert q.triggers == 7


def test_the_first_generation_is_never_a_false_alarm():
    assert score([3]).false_alarms == 0
    assert score([3, 4]).false_alarms == 1
    assert score([20], horizon=5).false_alarms == 0
    q = score([12])  # a first model trained after the change has seen it
    assert q.delays == [2] and q.extra_triggers == 0 and q.false_alarms == 0


def test_several_triggers_on_one_slice_detect_once():
    q = score([0, 10, 10, 10], horizon=5)
    assert q.delays == [0] and q.extra_triggers == 2 and q.false_alarms == 0


def test_two_abrupt_changes_each_get_their_own_window():
    cps = [ChangePoint(20, "abrupt", "b"), ChangePoint(10, "abrupt", "a")]  # any order
    q = score([0, 18, 25], cps, num_slices=40, horizon=None)
    assert q.delays == [8, 5]  # the first window ends where the second change starts
    q = score([0, 18, 25], cps, num_slices=40, horizon=5)
    assert q.delays == [None, 5]
    assert q.stable_slices == 40 - 12
    assert q.false_alarms == 1  # 18 lies after the first span, before the second
    assert q.mean_delay == 5


def test_a_trigger_after_the_next_change_does_not_detect_the_one_before():
    cps = [ChangePoint(10, "abrupt", "a"), ChangePoint(12, "abrupt", "b")]
    q = score([0, 13], cps, horizon=5)
    assert q.delays == [None, 1]
    assert q.stable_slices == 30 - 8  # spans 10-11 and 12-17


def test_gradual_changes_are_background_drift_unless_scored():
    cps = [*AT_10, ChangePoint(0, "gradual", "all along", end_slice=29)]
    q = score([0, 12], cps, horizon=5)
    assert q.delays == [2] and q.stable_slices == 24
    q = score([0, 12], cps, kinds=("abrupt", "gradual"), horizon=5)
    assert len(q.delays) == 2
    assert q.stable_slices == 0
    assert math.isnan(q.false_alarms_per_50)


def test_a_scored_gradual_change_spans_its_start_to_its_end():
    cps = [*AT_10, ChangePoint(15, "gradual", "slow", end_slice=22)]
    q = score([0, 16, 18, 25], cps, kinds=("gradual",), horizon=5)
    assert q.delays == [1]
    assert q.stable_slices == 30 - 8
    assert q.extra_triggers == 1  # 18
    assert q.false_alarms == 1  # 25


def test_a_smaller_tolerance_shrinks_the_span_but_not_the_horizon():
    q = score([0, 14, 15], horizon=5, tolerance=2)
    assert q.stable_slices == 27  # span 10-12
    assert q.delays == [4]  # 14 still detects, and is not an alarm
    assert q.false_alarms == 1  # 15


def test_no_triggers_miss_everything():
    q = score([])
    assert q.delays == [None] and q.triggers == 0 and q.false_alarms == 0 and q.false_alarms_per_50 == 0


def test_every_trigger_is_the_first_model_a_detection_an_extra_or_an_alarm():
    rng = random.Random(0)
    for _ in range(300):
        num_slices = rng.randint(1, 40)
        starts = rng.sample(range(num_slices), rng.randint(0, min(3, num_slices)))
        cps = [ChangePoint(s, "abrupt", "x") for s in starts]
        slices = sorted(rng.choices(range(num_slices), k=rng.randint(0, 12)))
        horizon = rng.choice([None, 0, 2, 5])
        q = score(slices, cps, num_slices=num_slices, horizon=horizon)
        initial_only = int(
            bool(slices)
            and not any(d is not None and s + d == slices[0] for s, d in zip(sorted(starts), q.delays))
        )
        assert q.triggers == initial_only + q.detected + q.extra_triggers + q.false_alarms
        assert all(d is None or 0 <= d <= (horizon if horizon is not None else num_slices) for d in q.delays)


def test_bad_settings_name_the_key_and_what_is_allowed():
    with pytest.raises(ConfigError, match=r"kinds=\('sudden',\): expected a list of kinds out of"):
        score([0], kinds=("sudden",))
    with pytest.raises(ConfigError, match=r"horizon=-1: expected None or an integer ≥ 0"):
        score([0], horizon=-1)
    with pytest.raises(ConfigError, match=r"tolerance=6: expected at most the horizon \(5\)"):
        score([0], horizon=5, tolerance=6)
    with pytest.raises(ValueError, match="non-decreasing"):
        score([5, 3])


# Incorporation latency. toy_stream([3, 3]) has timestamps 0, d, 2d, 1 + 3d, 1 + 4d, 1 + 5d (d = 0.999 / 5).
D = 0.999 / 5


def per_slice(stream, keys_of):
    """Generations triggered at the end of every slice, training on ``keys_of(batch index)``."""
    times = [float(stream.time[b.keys[-1]]) for b in stream.batches]
    return times, [keys_of(b.index) for b in stream.batches]


def test_each_sample_waits_for_the_end_of_its_slice():
    stream = toy_stream([3, 3])
    new = per_slice(stream, lambda i: stream.batches[i].keys)
    everything = per_slice(stream, lambda i: stream.arrival_order[: stream.batches[i].stop])
    for times, keys in (new, everything):
        inc = incorporation(times, keys, stream.time, stream.arrival_order)
        assert inc.mean_latency == pytest.approx((2 * D + D + 0) / 3)
        assert inc.never_fraction == 0


def test_samples_no_generation_trained_on_are_never_incorporated():
    stream = toy_stream([3, 3])
    times, keys = per_slice(stream, lambda i: stream.batches[i].keys)
    inc = incorporation(times[:1], keys[:1], stream.time, stream.arrival_order)  # `never`: one model
    assert inc.mean_latency == pytest.approx(D)
    assert inc.never_fraction == pytest.approx(0.5)
    inc = incorporation([], [], stream.time, stream.arrival_order)
    assert math.isnan(inc.mean_latency) and inc.never_fraction == 1


def test_a_sample_left_out_counts_from_the_generation_that_first_trains_on_it():
    stream = toy_stream([3, 3])
    keys = [torch.tensor([0, 1]), torch.tensor([2, 3, 4, 5])]
    times = [float(stream.time[2]), float(stream.time[5])]
    waits = [2 * D, D, (1 + 5 * D) - 2 * D, 2 * D, D, 0]
    inc = incorporation(times, keys, stream.time, stream.arrival_order)
    assert inc.mean_latency == pytest.approx(sum(waits) / 6)


def brute_force(times, keys, time, arrival_order):
    waits, never = [], 0
    for key in arrival_order.tolist():
        first = next((t for t, k in zip(times, keys) if key in k.tolist()), None)
        if first is None:
            never += 1
        else:
            waits.append(first - float(time[key]))
    return (sum(waits) / len(waits) if waits else math.nan), never / len(arrival_order)


def test_incorporation_equals_a_loop_over_samples_and_generations():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        sizes = torch.randint(0, 12, (6,), generator=g).tolist()
        stream = toy_stream(
            sizes, arrival_batch=int(torch.randint(1, 5, (1,), generator=g)), test_fraction=0.2, seed=trial
        )
        fired = sorted(
            torch.randperm(len(stream.batches), generator=g)[
                : int(torch.randint(0, 5, (1,), generator=g))
            ].tolist()
        )
        times, keys = [], []
        for b in fired:
            batch = stream.batches[b]
            seen = stream.arrival_order[: batch.stop]
            keys.append(seen[torch.rand(len(seen), generator=g) < 0.5])
            times.append(float(stream.time[batch.keys[-1]]))
        inc = incorporation(times, keys, stream.time, stream.arrival_order)
        mean, never = brute_force(times, keys, stream.time, stream.arrival_order)
        assert inc.never_fraction == pytest.approx(never)
        assert (math.isnan(inc.mean_latency) and math.isnan(mean)) or inc.mean_latency == pytest.approx(mean)


# The table, from the registry's tables, and its markdown.


def two_seeds():
    stream = toy_stream([3, 3, 3, 3])
    ends = [b.keys for b in stream.batches]
    times = [float(stream.time[k[-1]]) for k in ends]
    rows = [
        PipelineTriggers("yearly", 0, [0, 1, 2, 3], times, ends),
        PipelineTriggers("yearly", 1, [0, 2], [times[0], times[2]], [ends[0], torch.cat(ends[1:3])]),
        PipelineTriggers("never", 0, [0], times[:1], ends[:1]),
    ]
    return stream, rows, [ChangePoint(2, "abrupt", "x")]


def test_quality_table_has_one_row_per_pipeline_and_seed():
    stream, rows, cps = two_seeds()
    table = quality_table(rows, 4, cps, stream.time, stream.arrival_order, horizon=1)
    assert table.columns == [
        "pipeline", "seed", "triggers", "change_points", "detected", "misses", "mean_delay_slices",
        "max_delay_slices", "false_alarms", "stable_slices", "false_alarms_per_50", "extra_triggers",
        "incorporation_latency", "never_incorporated",
    ]  # fmt: skip
    by = {(r["pipeline"], r["seed"]): r for r in table.iter_rows(named=True)}
    assert by["yearly", 0]["false_alarms"] == 1  # slice 1; 3 is in the span 2-3 (extra)
    assert by["yearly", 0]["extra_triggers"] == 1
    assert by["yearly", 0]["stable_slices"] == 2
    assert by["yearly", 0]["false_alarms_per_50"] == 25
    assert by["yearly", 1]["mean_delay_slices"] == 0
    assert by["never", 0]["mean_delay_slices"] is None  # NaN becomes null, as in the cost table
    assert by["never", 0]["misses"] == 1
    assert by["never", 0]["never_incorporated"] == pytest.approx(0.75)
    assert by["yearly", 0]["incorporation_latency"] == pytest.approx(by["never", 0]["incorporation_latency"])


def test_the_registry_tables_give_the_same_table(tmp_path):
    stream, rows, cps = two_seeds()
    rows.append(PipelineTriggers("empty-keys", 0, [1], [1.5], [torch.tensor([], dtype=torch.long)]))
    generations = pl.DataFrame(
        [
            {"pipeline": r.pipeline, "seed": r.seed, "generation": i, "trigger_slice": s, "trigger_time": t}
            for r in rows
            for i, (s, t) in enumerate(zip(r.slices, r.times))
        ]
    )
    lineage = pl.DataFrame(
        {
            "pipeline": [r.pipeline for r in rows for _ in r.keys],
            "seed": [r.seed for r in rows for _ in r.keys],
            "generation": [i for r in rows for i in range(len(r.keys))],
            "keys": [k.tolist() for r in rows for k in r.keys],
        },
        schema={"pipeline": pl.String, "seed": pl.Int64, "generation": pl.Int64, "keys": pl.List(pl.UInt32)},
    )
    lineage.reverse().write_parquet(tmp_path / "lineage.parquet")  # row order must not matter
    back = pipeline_triggers(generations, pl.scan_parquet(tmp_path / "lineage.parquet"))
    assert [(r.pipeline, r.seed, r.slices, r.times) for r in back] == [
        (r.pipeline, r.seed, r.slices, r.times) for r in rows
    ]
    assert all(torch.equal(a, b) for r, s in zip(back, rows) for a, b in zip(r.keys, s.keys))
    stream.change_points = cps
    from_tables = quality_from_tables(generations, lineage, stream, horizon=1)
    assert from_tables.equals(quality_table(rows, 4, cps, stream.time, stream.arrival_order, horizon=1))
    with pytest.raises(ValueError, match=r"lineage has no keys for the generations \[\('never', 0, 0\)\]"):
        pipeline_triggers(generations, lineage.filter(pl.col("pipeline") != "never"))


def test_markdown_shows_means_over_seeds_and_a_dash_for_none():
    stream, rows, cps = two_seeds()
    text = quality_markdown(quality_table(rows, 4, cps, stream.time, stream.arrival_order, horizon=1))
    lines = text.splitlines()
    assert lines[0].startswith("| pipeline | seeds | triggers | change_points | detected |")
    yearly = lines[2].split(" | ")
    assert yearly[:3] == ["| yearly", "2", "3"]  # 4 and 2 triggers
    never = lines[3].split(" | ")
    assert never[:3] == ["| never", "1", "1"]
    assert never[6] == "–"  # no delay: nothing detected


def test_pipelines_come_in_the_generations_table_order_whatever_the_lineage_order():
    names = [f"p{i:02d}" for i in range(40)][::-1]
    generations = pl.DataFrame(
        {
            "pipeline": [p for p in names for _ in range(5)],
            "seed": [0] * 200,
            "generation": list(range(5)) * 40,
            "trigger_slice": list(range(5)) * 40,
            "trigger_time": [float(g) for g in range(5)] * 40,
        }
    )
    lineage = generations.select(
        "pipeline", "seed", "generation", pl.col("generation").cast(pl.UInt32).repeat_by(2).alias("keys")
    ).sample(fraction=1.0, shuffle=True, seed=0)
    back = pipeline_triggers(generations, lineage)
    assert [r.pipeline for r in back] == names
    assert all(r.slices == [0, 1, 2, 3, 4] and r.keys[3].tolist() == [3, 3] for r in back)
