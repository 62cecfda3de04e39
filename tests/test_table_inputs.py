"""Tables as users bring them: a parquet label column of enum type, months without a day, a time of inf,
and ``prepare table --classes``; each checked as a user meets it (a file in tmp_path, the command line)."""

from __future__ import annotations

import shlex
import subprocess
import sys

import polars as pl
import pytest
import torch

from ctsim.datasets.prepare import main as prepare
from ctsim.validation import ConfigError

from .conftest import build, cli, small
from .test_table import frame, table, write


def test_an_enum_label_column_takes_the_sorted_classes_present_not_the_enum_order(tmp_path):
    """An enum's categories come in the order its writer declared ("low", "mid", "high", and "none" that no
    row holds): the classes are still the sorted distinct values, as a CSV of the same rows gives."""
    df = frame()
    level = pl.Series(["low", "mid", "high"] * 120)
    order = pl.Enum(["low", "mid", "high", "none"])
    write(df.with_columns(churn=level.cast(order)), tmp_path / "enum.parquet")
    assert pl.read_parquet(tmp_path / "enum.parquet").schema["churn"] == order  # the file holds an enum
    t = table(tmp_path / "enum.parquet")
    samples = t.load()
    assert t.class_names == ["high", "low", "mid"] and samples.num_classes == 3
    sorted_levels = df.with_columns(churn=level).with_row_index().sort("ts", maintain_order=True)["churn"]
    expected = [["high", "low", "mid"].index(v) for v in sorted_levels.to_list()]
    assert samples.y.tolist() == expected
    csv = table(write(df.with_columns(churn=level), tmp_path / "t.csv"))
    assert csv.class_names == t.class_names and torch.equal(csv.load().y, samples.y)
    # dataset.classes still fixes the order, on an enum column too
    fixed = table(tmp_path / "enum.parquet", classes=["low", "mid", "high"])
    assert fixed.class_names == ["low", "mid", "high"]
    assert fixed.load().y.tolist() == [["low", "mid", "high"].index(v) for v in sorted_levels.to_list()]


@pytest.mark.parametrize(("form", "fmt"), [("%Y-%m", "%Y-%m"), ("%Y/%m", "%Y/%m"), ("%m/%Y", "%m/%Y")])
def test_months_without_a_day_are_refused_naming_the_time_format_that_reads_them(tmp_path, form, fmt):
    df = frame().with_columns(pl.col("ts").str.to_date().dt.strftime(form))
    path = write(df, tmp_path / "t.csv")
    with pytest.raises(ConfigError) as e:
        ConfigError.raise_all(table(path).path_problems())
    message = str(e.value)
    assert f"a month without a day: give dataset.time_format={fmt}" in message, message
    assert "%m/%d/%Y" not in message and "day and month" not in message  # the hint for full dates
    # the format named reads the file: one slice a month
    samples = table(path, time_format=fmt).load()
    assert samples.slice_labels == ["2021-01", "2021-02", "2021-03", "2021-04", "2021-05", "2021-06"]


def test_a_column_mixing_days_and_months_is_not_told_a_month_format_that_fails_its_other_rows(tmp_path):
    ts = frame()["ts"].scatter(9, "2021-02")
    with pytest.raises(ConfigError) as e:
        ConfigError.raise_all(table(write(frame().with_columns(ts=ts), tmp_path / "t.csv")).path_problems())
    assert "row 9 (line 11 of the CSV)" in str(e.value) and "found '2021-02'" in str(e.value)
    assert "time_format=%Y-%m" not in str(e.value)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
def test_a_time_that_is_not_finite_names_the_file_column_and_row(tmp_path, bad):
    times = pl.Series([2000.0 + i // 60 for i in range(360)]).scatter(123, bad)
    path = write(frame().with_columns(ts=times), tmp_path / "t.parquet")
    with pytest.raises(ConfigError) as e:
        table(path).load()
    assert (
        f"t.parquet: row 123: expected a time in column 'ts': a date or a finite number, found {bad}"
        in str(e.value)
    )


def test_a_run_on_a_table_with_an_infinite_time_stops_before_any_work(tmp_path):
    times = [str(2000 + i // 60) for i in range(360)]
    times[200] = "inf"
    path = write(frame().with_columns(ts=pl.Series(times).cast(pl.Float64)), tmp_path / "t.csv")
    assert "inf" in path.read_text().splitlines()[201]  # the CSV holds the text inf
    args = ["dataset=table", f"dataset.path={path}", "dataset.time_column=ts", "dataset.label_column=churn"]
    done = cli([*small(tmp_path, *args), "model=mlp"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "row 200 (line 202 of the CSV): expected a time in column 'ts'" in done.stderr, done.stderr
    assert "a date or a finite number, found inf" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("missing", ["error", "drop", "fill"])
def test_an_infinite_feature_is_refused_whatever_missing_says(tmp_path, missing):
    """inf is not a missing value: ``drop`` and ``fill`` used to keep it, and the first slice's scaling
    turned the whole column into NaN, which trained to a loss of NaN."""
    f1 = frame()["f1"].scatter(40, float("inf"))
    path = write(frame().with_columns(f1=f1), tmp_path / "t.csv")
    with pytest.raises(ConfigError) as e:
        table(path, missing=missing).load()
    assert "row 40 (line 42 of the CSV): expected a finite number in feature column 'f1', found inf" in str(
        e.value
    )


def test_an_infinite_number_label_is_refused_rather_than_made_a_class(tmp_path):
    labels = pl.Series([float(i % 2) for i in range(360)]).scatter(7, float("-inf"))
    path = write(frame().with_columns(churn=labels), tmp_path / "t.parquet")
    with pytest.raises(ConfigError) as e:
        table(path).load()
    assert "t.parquet: row 7: expected a finite number in label column 'churn', found -inf" in str(e.value)


def test_prepare_table_takes_classes_and_prints_them_in_the_command(tmp_path, capsys):
    """``--classes yes,no`` (not the sorted order) is checked and printed, and the printed command builds a
    dataset with these classes in this order."""
    path = write(frame(), tmp_path / "t.csv")
    argv = ["prepare", "table", "--from", str(path), "--time-column", "ts", "--label-column", "churn"]
    assert prepare([*argv, "--classes", "yes,no"]) == 0
    out = capsys.readouterr().out
    assert "classes: yes " in out  # the balance lists the classes in their given order
    command = out.splitlines()[-1]
    assert "dataset.classes=[yes,no]" in shlex.split(command)
    dataset = build(small(tmp_path, *shlex.split(command)[3:])).dataset
    assert dataset.class_names == ["yes", "no"]
    assert dataset.load().y.tolist() == [
        int(v == "no") for v in frame().sort("ts", maintain_order=True)["churn"].to_list()
    ]
    # a label the classes do not list is named, as a run would name it
    assert prepare([*argv, "--classes", "no,maybe"]) == 2
    assert "a label among dataset.classes ['no', 'maybe']" in capsys.readouterr().err


def test_prepare_table_classes_keep_a_rare_class_and_are_quoted_for_hydra(tmp_path):
    """The typo check's hint says to list the classes: ``--classes`` does it, and a class that Hydra reads
    only quoted (a letter outside ASCII) is quoted in the printed command, from a real command line."""
    churn = pl.Series(["no", "yes"] * 180).scatter(17, "Kündigung")
    path = write(frame().with_columns(churn=churn), tmp_path / "t.csv")
    argv = [sys.executable, "-m", "ctsim.datasets", "prepare", "table", "--from", str(path)]
    argv += ["--time-column", "ts", "--label-column", "churn"]
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "'Kündigung', which no other row has: a typo?" in refused.stderr
    done = subprocess.run(
        [*argv, "--classes", "Kündigung,no,yes"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    command = done.stdout.splitlines()[-1]
    assert """ "dataset.classes=['Kündigung','no','yes']" """ in command, command
    dataset = build(small(tmp_path, *shlex.split(command)[3:])).dataset
    assert dataset.class_names == ["Kündigung", "no", "yes"]
