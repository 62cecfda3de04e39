"""The data rules a user meets from the command line: ``dataset.size`` is a share in (0, 1]; a label value
that only one row of a table holds is named with its row; a numeric year column slices by year."""

from __future__ import annotations

import numpy as np
import polars as pl

from .conftest import cli


def test_a_dataset_size_above_one_is_refused_before_any_work(tmp_path):
    """``dataset.size=1.5`` made a 1.5× dataset; it is a share of the dataset."""
    done = cli(["dataset.size=1.5", "progress=false"], tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "ctsim: invalid config:",
        "  dataset.size=1.5: expected a number in (0, 1]: the share of the dataset to use (1 is all of it)",
    ]
    assert not (tmp_path / "results").exists()


def _table(tmp_path, labels):
    g = np.random.default_rng(0)
    n = len(labels)
    years = np.repeat([2001, 2002, 2003, 2004], n // 4)
    df = pl.DataFrame({"year": years, "f1": g.normal(size=n), "y": labels})
    df.write_csv(tmp_path / "data.csv")
    return [
        "population.variants={}",
        "dataset=table",
        "dataset.path=data.csv",
        "dataset.time_column=year",
        "dataset.label_column=y",
        "model=mlp",
        "train.epochs=1",
        "progress=false",
        "output.plots=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]


def test_a_stray_label_is_named_with_its_row_and_a_year_column_slices_by_year(tmp_path):
    labels = ["no", "yes"] * 40
    labels[33] = "maybe"
    done = cli(_table(tmp_path, labels), tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0] == "ctsim: invalid config:"
    for part in (
        "data.csv: row 33 (line 35 of the CSV): expected a label of column 'y' that other rows have too",
        "found 'maybe', which no other row has",
        "dataset.classes=[maybe,no,yes]",
    ):
        assert part in lines[1], (part, lines[1])
    assert not (tmp_path / "run").exists()
    # listed as a class, it is one; and the year column gives one slice per year without slice_by
    done = cli([*_table(tmp_path, labels), "dataset.classes=[maybe,no,yes]"], tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    evals = pl.read_parquet(tmp_path / "run" / "evals.parquet")
    assert sorted(evals["slice_label"].unique().to_list()) == ["2001", "2002", "2003", "2004"]
