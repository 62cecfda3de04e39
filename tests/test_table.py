"""Time-stamped tables (``dataset=table``): CSV and parquet read with polars, sorted by time, sliced by a
calendar period or a row count, encoded with statistics of the first slice's training rows only, and every
bad input named with its file, row and what was expected, before any training."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from ctsim.datasets import Table
from ctsim.stream import StreamSpec
from ctsim.validation import ConfigError

from .conftest import build, cli, run, small

MONTHS = ["2021-01", "2021-02", "2021-03", "2021-04", "2021-05", "2021-06"]


def frame(n: int = 360, seed: int = 0) -> pl.DataFrame:
    """Rows over six months, NOT in time order: two numbers, a text column and a yes/no label that the
    numbers and the region predict."""
    g = np.random.default_rng(seed)
    days = g.integers(0, 181, n)
    f1, f2 = g.normal(size=n), g.normal(size=n)
    region = g.choice(["north", "south", "east"], n)
    label = np.where(f1 - 0.5 * f2 + 1.5 * (region == "north") > 0.5, "yes", "no")
    return pl.DataFrame(
        {
            "ts": [str(np.datetime64("2021-01-01") + int(d)) for d in days],
            "f1": f1 * 10 + 100,  # far from zero: standardising matters
            "f2": f2,
            "region": region,
            "churn": label,
        }
    )


def write(df: pl.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        df.write_parquet(path)
    else:
        df.write_csv(path)
    return path


def table(path: Path, **kw) -> Table:
    columns = {"time_column": kw.pop("time_column", "ts"), "label_column": kw.pop("label_column", "churn")}
    return Table(path=str(path), **columns, **kw)


def stream_of(t: Table, **kw):
    return StreamSpec(**kw).build(t.load())


def test_rows_are_sorted_stably_sliced_by_month_and_the_user_is_told(tmp_path, caplog):
    df = frame()
    path = write(df, tmp_path / "t.csv")
    with caplog.at_level(logging.WARNING):
        samples = table(path).load()
    assert "not sorted by ts" in caplog.text
    assert samples.slice_labels == MONTHS and samples.num_classes == 2
    order = df.with_row_index().sort("ts", maintain_order=True)  # the expected stable order
    assert torch.equal(samples.y, torch.tensor((order["churn"] == "yes").cast(pl.Int64).to_list()))
    months = order["ts"].str.slice(0, 7).to_list()
    assert [samples.slice_labels[s] for s in samples.slice.tolist()] == months
    assert bool((samples.time[1:] >= samples.time[:-1]).all()) and 2021.0 <= float(samples.time[0]) < 2021.1
    # a file already in time order is not reported
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        table(write(order.drop("index"), tmp_path / "sorted.csv")).load()
    assert "not sorted" not in caplog.text


def test_a_number_column_the_first_slice_cannot_scale_is_named(tmp_path, caplog):
    """A first month of 3 rows where income takes one value: it stays in dollars, unscaled. The user is
    told which column and why; a yes/no column constant there is fine as it is, and is not named."""
    df = frame().with_columns(income=pl.col("f1") * 1000, member=pl.col("f2") > 0)
    first = df.sort("ts").head(3)["ts"].str.slice(0, 7)[0]
    in_first = pl.col("ts").str.starts_with(first)
    df = pl.concat(
        [
            df.filter(in_first).head(3).with_columns(income=pl.lit(50_000.0), member=pl.lit(True)),
            df.filter(~in_first),
        ]
    )
    with caplog.at_level(logging.WARNING):
        stream_of(table(write(df, tmp_path / "t.csv"), slice_by="1mo"), test_fraction=0.0)
    assert "the first slice's 3 training rows only, number column(s) 'income' take one value" in caplog.text
    assert "'member'" not in caplog.text and "'f1'" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        stream_of(table(write(frame(), tmp_path / "fine.csv")))
    assert "standardising fits" not in caplog.text
    # two rows in the first month: income varies, but by too little to scale by
    df = df.with_columns(income=pl.when(in_first).then(pl.col("f1")).otherwise(pl.col("income")))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        two = df.filter(~in_first | (pl.int_range(pl.len()) < 2))
        stream_of(table(write(two, tmp_path / "t2.csv"), slice_by="1mo"), test_fraction=0.0)
    assert "the first slice's 2 training rows only, too few there" in caplog.text


def test_parquet_gives_the_same_samples_as_csv(tmp_path):
    df = frame().with_columns(pl.col("ts").str.to_date())  # a real Date column in parquet
    a = stream_of(table(write(df, tmp_path / "t.parquet")))
    b = stream_of(table(write(frame(), tmp_path / "t.csv")))
    for key in ("x", "y", "time", "slice"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key


@pytest.mark.parametrize(
    ("slice_by", "labels"),
    [
        ("1y", ["2021"]),
        ("1q", ["2021-01", "2021-04"]),
        ("2mo", ["2021-01", "2021-03", "2021-05"]),
        (100, ["rows 0-99", "rows 100-199", "rows 200-299", "rows 300-359"]),
    ],
)
def test_slice_by_a_period_or_a_row_count(tmp_path, slice_by, labels):
    samples = table(write(frame(), tmp_path / "t.csv"), slice_by=slice_by).load()
    assert samples.slice_labels == labels
    if isinstance(slice_by, int):
        assert torch.bincount(samples.slice).tolist() == [100, 100, 100, 60]


def test_encoding_never_uses_test_rows_or_later_slices(tmp_path):
    """Changing every test row and every row after the first slice leaves each unchanged row's encoding
    exactly as it was: the means, deviations and vocabularies come from the first slice's training rows."""
    df = frame()
    base = stream_of(table(write(df, tmp_path / "a.csv")))
    first_train = (base.slice == 0) & ~base.is_test
    # the row order after sorting, to find the same rows in the raw frame
    order = torch.tensor(df.with_row_index().sort("ts", maintain_order=True)["index"].to_list())
    changed = torch.zeros(len(df), dtype=torch.bool)
    changed[order] = ~first_train  # in file order
    mask = pl.Series(changed.numpy())
    other = df.with_columns(
        f1=pl.when(mask).then(pl.col("f1") * 50 + 1000).otherwise(pl.col("f1")),
        f2=pl.when(mask).then(pl.col("f2") - 7).otherwise(pl.col("f2")),
        region=pl.when(mask).then(pl.lit("west")).otherwise(pl.col("region")),
    )
    moved = stream_of(table(write(other, tmp_path / "b.csv")))
    assert torch.equal(moved.is_test, base.is_test)  # the same split
    assert torch.equal(moved.x[first_train], base.x[first_train])
    # the statistics are the first slice's training rows': mean 0 and std 1 there
    x = base.x[first_train][:, :2].double()
    assert torch.allclose(x.mean(0), torch.zeros(2, dtype=x.dtype), atol=1e-6)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(2, dtype=x.dtype), atol=1e-5)
    # "west" never occurs in the first slice's training rows: every changed row is "other"
    other_slot = 2 + 20  # after f1, f2 and the 20 category slots
    assert bool(moved.x[~first_train][:, other_slot].eq(1).all())
    assert not bool(base.x[first_train][:, other_slot].any())


def test_a_category_first_seen_later_or_only_in_test_rows_is_other(tmp_path):
    df = frame()
    dates = df["ts"].to_list()
    late = [i for i, d in enumerate(dates) if d >= "2021-03"]
    regions = df["region"].to_list()
    for i in late[:5]:
        regions[i] = "moon"
    samples_stream = stream_of(table(write(df.with_columns(region=pl.Series(regions)), tmp_path / "t.csv")))
    moon = torch.zeros(len(df), dtype=torch.bool)
    order = df.with_row_index().sort("ts", maintain_order=True)["index"].to_list()
    for pos, row in enumerate(order):
        moon[pos] = regions[row] == "moon"
    assert int(moon.sum()) == 5
    assert bool(samples_stream.x[moon][:, 22].eq(1).all())  # the "other" slot
    assert samples_stream.x.shape[1] == 2 + 21


def test_missing_values_error_drop_or_fill(tmp_path):
    df = frame()
    f2 = df["f2"].to_list()
    f2[7] = None
    f2[20] = float("nan")
    path = write(df.with_columns(f2=pl.Series(f2)), tmp_path / "t.csv")
    with pytest.raises(ConfigError) as e:
        table(path).load()
    assert (
        "row 7 (line 9 of the CSV)" in str(e.value)
        and "'f2'" in str(e.value)
        and "missing=drop" in str(e.value)
    )
    assert len(table(path, missing="drop").load().y) == len(df) - 2
    filled = stream_of(table(path, missing="fill"))
    assert len(filled.y) == len(df) and bool(filled.x.isfinite().all())


@pytest.mark.parametrize(
    ("make", "kw", "fragments"),
    [
        (lambda p: p / "absent.csv", {}, ["dataset.path", "absent.csv", "an existing CSV or parquet file"]),
        (lambda p: _text(p / "empty.csv", ""), {}, ["empty.csv is empty"]),
        (lambda p: _text(p / "header.csv", "ts,f1,churn\n"), {}, ["header.csv has a header but no rows"]),
        (
            lambda p: write(frame().drop("ts"), p / "t.csv"),
            {},
            ["dataset.time_column='ts'", "a column of", "['f1', 'f2', 'region', 'churn']"],
        ),
        (
            lambda p: write(
                frame().with_columns(ts=pl.Series(["2021-01-05"] * 5 + ["5th of May"] * 355)), p / "t.csv"
            ),
            {},
            ["row 5 (line 7 of the CSV)", "a date or datetime", "'5th of May'"],
        ),
        (
            lambda p: write(frame(), p / "t.csv"),
            {"classes": ["no", "maybe"]},
            ["a label among dataset.classes ['no', 'maybe']", "'yes'"],
        ),
        (
            lambda p: write(frame().with_columns(tags=pl.lit([1, 2])), p / "t.parquet"),
            {},
            ["column 'tags'", "List(Int64)", "dataset.feature_columns"],
        ),
        (
            lambda p: write(frame().with_columns(pl.col("ts").str.slice(0, 4).cast(pl.Int64)), p / "t.csv"),
            {"slice_by": "1mo"},
            ["dataset.slice_by='1mo'", "auto, value or a number of rows", "holds numbers, not dates"],
        ),
        (
            lambda p: write(
                frame(1200).with_columns(ts=pl.int_range(0, 1200) * 60 + 1_600_000_000), p / "t.csv"
            ),
            {},
            ["dataset.slice_by: the time column 'ts'", "1,200 distinct numbers", "dataset.slice_by=value"],
        ),
        (
            lambda p: write(
                frame().with_columns(churn=_stray(["no", "yes"] * 180, 17, "maybe")), p / "t.csv"
            ),
            {},
            [
                "t.csv: row 17 (line 19 of the CSV): expected a label of column 'churn' that other rows have "
                "too: 'no' (180 rows), 'yes' (179 rows), found 'maybe', which no other row has: a typo?",
                "dataset.classes=[maybe,no,yes]",
            ],
        ),
        (  # the hint is an override the shell and Hydra read back as these classes
            lambda p: write(
                frame().with_columns(churn=_stray(["no", "yes"] * 180, 17, "Kündigung")), p / "t.csv"
            ),
            {},
            ["found 'Kündigung'", '''list the classes: "dataset.classes=['Kündigung','no','yes']"'''],
        ),
        (
            lambda p: write(frame().with_columns(churn=_stray([0, 1] * 180, 17, 2)), p / "t.csv"),
            {},
            ["found 2, which no other row has", "list the classes: dataset.classes=[0,1,2]"],
        ),
        (
            lambda p: write(
                frame().with_columns(pl.col("ts").str.to_date().dt.strftime("%m/%d/%Y")), p / "t.csv"
            ),
            {},
            ["row 0 (line 2 of the CSV)", "year first", "found '"],
        ),
        (
            lambda p: write(
                frame().with_columns(ts=pl.Series([float(i) for i in range(359)] + [float("nan")])),
                p / "t.csv",
            ),
            {"slice_by": 60},
            ["row 359 (line 361 of the CSV)", "a time in column 'ts'"],
        ),
        (
            lambda p: write(
                frame().with_columns(churn=pl.Series([1.0, 0.0, float("nan")] * 120)), p / "t.parquet"
            ),
            {},
            ["t.parquet: row 2:", "a value in label column 'churn'"],
        ),
        (
            lambda p: write(
                frame().with_columns(ts=pl.duration(hours=pl.int_range(0, 360))), p / "t.parquet"
            ),
            {},
            ["dataset.time_column='ts'", "dates, datetimes or numbers", "Duration"],
        ),
        (lambda p: write(frame(), p / "t.csv"), {"classes": ["no", "yes", "no"]}, ["different class values"]),
        (
            lambda p: write(frame(), p / "t.csv"),
            {"feature_columns": ["f1", "churn"]},
            ["dataset.feature_columns", "without the label column 'churn'"],
        ),
        (
            lambda p: write(frame().with_columns(churn=pl.lit("yes")), p / "t.csv"),
            {},
            ["column 'churn' of", "t.csv", "at least 2 classes, found only ['yes']"],
        ),
        (
            lambda p: write(
                frame().with_columns(pl.col("ts").str.to_date().dt.strftime("%m/%d/%Y")), p / "t.csv"
            ),
            {"time_format": "%d.%m.%Y"},
            ["row 0 (line 2 of the CSV)", "a time in dataset.time_format '%d.%m.%Y'"],
        ),
        (
            lambda p: write(frame().with_columns(pl.col("ts").str.to_date()), p / "t.parquet"),
            {"time_format": "%m/%d/%Y"},
            ["dataset.time_format='%m/%d/%Y'", "holds Date, not text"],
        ),
        (
            lambda p: write(frame(), p / "t.csv"),
            {"feature_columns": ["f1", "region", "f1"]},
            ["feature_columns=['f1', 'region', 'f1']", "different column names"],
        ),
        (
            lambda p: write(frame().with_columns(f2=pl.lit(None, pl.Float64)), p / "t.csv"),
            {"missing": "drop", "classes": ["no", "yes"], "slice_by": 60},
            ["t.csv: expected rows with every feature value, no rows are left (missing=drop)"],
        ),
        (
            lambda p: write(frame(), p / "t.csv"),
            {"label_column": "ts"},
            ["label_column='ts': expected a column name (text) other than time_column"],
        ),
        (  # once a slice named inf
            lambda p: write(
                frame().with_columns(ts=pl.Series([float(i) for i in range(359)] + [float("inf")])),
                p / "t.csv",
            ),
            {"slice_by": 60},
            [
                "t.csv: row 359 (line 361 of the CSV): expected a time in column 'ts': a date or a finite "
                "number, found inf"
            ],
        ),
        (
            lambda p: write(
                frame().with_columns(ts=pl.Series([float(i) for i in range(360)]).scatter(4, float("-inf"))),
                p / "t.parquet",
            ),
            {"slice_by": "value"},
            ["t.parquet: row 4: expected a time in column 'ts': a date or a finite number, found -inf"],
        ),
        (  # once told the order of day and month is a guess, with formats that do not read it
            lambda p: write(frame().with_columns(pl.col("ts").str.slice(0, 7)), p / "t.csv"),
            {},
            [
                "row 0 (line 2 of the CSV)",
                "found '2021-",
                "a month without a day: give dataset.time_format=%Y-%m",
            ],
        ),
        (
            lambda p: write(
                frame().with_columns(pl.col("ts").str.to_date().dt.strftime("%m/%Y")), p / "t.csv"
            ),
            {},
            ["row 0 (line 2 of the CSV)", "a month without a day: give dataset.time_format=%m/%Y"],
        ),
    ],
    ids=[
        "missing path",
        "empty file",
        "no rows",
        "no time column",
        "bad timestamp",
        "unknown label",
        "list feature",
        "numeric time with a calendar period",
        "timestamps by default",
        "a stray label",
        "a stray label, quoted in the hint",
        "a stray number label",
        "month-first dates",
        "NaN time",
        "NaN label",
        "duration time",
        "repeated classes",
        "label among the features",
        "one class",
        "a time_format the rows do not fit",
        "a time_format for dates",
        "repeated feature columns",
        "every row dropped, classes given",
        "the time column as the label",
        "infinite time",
        "-inf time in parquet",
        "year-month times",
        "month-year times",
    ],
)
def test_bad_input_is_a_clear_error_before_training(tmp_path, make, kw, fragments):
    path = make(tmp_path)
    with pytest.raises(ConfigError) as e:
        t = table(path, **kw)
        ConfigError.raise_all(t.path_problems())
    for fragment in fragments:
        assert fragment in str(e.value), (fragment, str(e.value))


def _stray(values: list, row: int, value) -> pl.Series:
    return pl.Series(values).scatter(row, value)


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def table_run(tmp_path: Path, path: Path, *extra: str) -> list[str]:
    """The overrides of a run on the table at ``path``, as a user types them."""
    columns = ["dataset.time_column=ts", "dataset.label_column=churn"]
    return small(tmp_path, "dataset=table", f"dataset.path={path}", *columns, *extra)


def test_a_run_trains_an_mlp_on_a_table(tmp_path):
    path = write(frame(n=600), tmp_path / "t.csv")
    overrides = table_run(tmp_path, path, "population.variants={}", "train.epochs=5", "optimizer.lr=0.1")
    outcome = run(overrides, tmp_path / "out")
    evals = outcome.tables["evals"].filter(pl.col("metric") == "accuracy")
    assert sorted(set(evals["slice_label"].to_list())) == MONTHS
    evals = evals.filter(pl.col("active"))
    late = evals.filter(pl.col("slice") >= 2)["value"].mean()
    assert late > 0.75  # the label is learnable from the encoded features: far above chance (≈ 0.5)


def test_the_command_line_names_a_missing_time_column(tmp_path):
    path = write(frame().drop("ts"), tmp_path / "t.csv")
    args = ["dataset=table", f"dataset.path={path}", "dataset.time_column=ts", "dataset.label_column=churn"]
    done = cli([*args, "model=mlp"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "dataset.time_column='ts'" in done.stderr and "t.csv" in done.stderr
    assert not (tmp_path / "results").exists()


def test_the_default_experiment_does_not_shrink_a_table(tmp_path):
    """The quickstart's small portraits must not turn into a fifth of the user's table."""
    path = write(frame(), tmp_path / "t.csv")
    plan = build(table_run(tmp_path, path))  # and no model named: the table's default, mlp
    assert plan.dataset.size == 1.0 and len(plan.dataset.load().y) == 360


def test_a_parquet_file_by_another_name_and_padded_dates_read_as_the_plain_csv(tmp_path):
    """Exports differ: parquet saved as ``.pq``, dates padded with spaces by a spreadsheet."""
    df = frame()
    plain = stream_of(table(write(df, tmp_path / "t.csv")))
    df.write_parquet(tmp_path / "t.pq")
    padded = write(df.with_columns(ts=" " + pl.col("ts") + " "), tmp_path / "padded.csv")
    for path in (tmp_path / "t.pq", padded):
        other = stream_of(table(path))
        assert torch.equal(other.x, plain.x) and torch.equal(other.y, plain.y), path
        assert torch.equal(other.time, plain.time), path


def test_month_first_dates_read_with_a_time_format_as_the_iso_file(tmp_path):
    df = frame()
    iso = stream_of(table(write(df, tmp_path / "t.csv")))
    us = df.with_columns(pl.col("ts").str.to_date().dt.strftime("%m/%d/%Y"))
    other = stream_of(table(write(us, tmp_path / "us.csv"), time_format="%m/%d/%Y"))
    for key in ("x", "y", "time", "slice"):
        assert torch.equal(getattr(other, key), getattr(iso, key)), key


def test_a_year_column_of_integers_gives_one_slice_per_year_from_the_command_line(tmp_path):
    """A table with a plain ``year`` column, as Yearbook-like data comes: one slice per year by default
    (``slice_by=auto`` is ``value`` for numbers)."""
    g = np.random.default_rng(3)
    years = g.choice([1931, 1930, 1935, 1942], 400)  # unsorted, with gaps between the years
    f1 = g.normal(size=400)
    df = pl.DataFrame({"year": years, "f1": f1, "churn": np.where(f1 > 0, "yes", "no")})
    path = write(df, tmp_path / "years.csv")
    samples = table(path, time_column="year").load()
    assert samples.slice_labels == table(path, time_column="year", slice_by="value").load().slice_labels
    assert samples.slice_labels == ["1930", "1931", "1935", "1942"]
    assert [samples.slice_labels[s] for s in samples.slice.tolist()] == [str(y) for y in sorted(years)]
    assert samples.time.tolist() == sorted(float(y) for y in years)
    overrides = small(
        tmp_path,
        "dataset=table",
        f"dataset.path={path}",
        "dataset.time_column=year",
        "dataset.label_column=churn",
        "population.variants={}",
    )
    outcome = run(overrides, tmp_path / "out")
    labels = outcome.tables["evals"]["slice_label"].unique().sort().to_list()
    assert labels == ["1930", "1931", "1935", "1942"]


def test_prepare_table_prints_a_command_that_runs_with_odd_column_names(tmp_path, capsys):
    """Column names as spreadsheets export them (spaces, umlauts, a word Hydra reads as a boolean), in a
    folder with a space: the command ``prepare table`` prints builds the run it describes."""
    import shlex

    from ctsim.datasets.prepare import main as prepare

    names = {"ts": "Datum der Messung", "f1": "größe (cm)", "f2": "it's", "region": "true", "churn": "Klasse"}
    (tmp_path / "my data").mkdir()
    path = write(frame().rename(names), tmp_path / "my data" / "t.csv")
    argv = ["--time-column", names["ts"], "--label-column", "Klasse", "--time-format", "%Y-%m-%d"]
    features = ",".join([names["f1"], names["f2"], "true"])
    assert prepare(["prepare", "table", "--from", str(path), *argv, "--feature-columns", features]) == 0
    command = capsys.readouterr().out.splitlines()[-1]
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "ctsim"], command
    dataset = build(small(tmp_path, *words[3:])).dataset
    assert (dataset.path, dataset.time_column, dataset.label_column) == (path, names["ts"], "Klasse")
    assert dataset.feature_columns == [names["f1"], names["f2"], "true"]
    assert dataset.time_format == "%Y-%m-%d"
