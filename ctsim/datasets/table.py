"""Time-stamped tables: a user's CSV or parquet file, one row per sample, read with polars.

``dataset=table dataset.path=sales.csv dataset.time_column=ts dataset.label_column=churned model=mlp``

* **Time.** ``time_column`` holds dates or datetimes (parsed from text that starts with the year, as
  ISO 8601 does: in ``03/05/2021`` the order of day and month is a guess; for other text give
  ``time_format``, a strftime format such as ``%m/%d/%Y``; a month without a day, ``2021-01``, is refused
  with the format that reads it, ``%Y-%m``), or finite numbers (``inf`` is refused with its row). Rows are
  sorted by it, stably (rows with equal times keep their order); a log line says so if the file was not
  sorted. A sample's time is in fractional years for dates (2021.5 is mid-2021), else the number itself.
* **Slices.** ``slice_by`` is a calendar period (``1d``, ``1w``, ``1mo``, ``1q``, ``1y``, or a multiple
  such as ``2w``; dates only) with one slice per period that has rows, ``value`` (one slice per distinct
  time, such as a ``year`` column of integers), or a number of rows per slice. The default, ``auto``,
  is ``1mo`` for dates and ``value`` for numbers (a ``year`` column slices by year); numbers with more
  than 1,000 distinct values (timestamps, fractional years) are refused with a hint to give a number of
  rows per slice or ``value``.
* **Labels.** ``label_column``; the classes are ``classes`` if given (any other value is an error that
  names its row), else the sorted distinct values (sorted by value also where a parquet column is an
  enum declared in another order). Without ``classes``, a value that only one row holds
  while another class has at least 10 rows is taken for a typo (one stray ``maybe`` in a yes/no column
  would otherwise make a third class) and refused with its row; to keep it as a class, list the classes
  (``dataset.classes=[maybe,no,yes]``).
* **Features.** ``feature_columns`` (default: every other column). Numbers (and booleans) are
  standardised; text columns are categories, one-hot encoded with the ``max_categories`` most frequent
  values plus one slot for every other value. Other types (lists, dates) are an error that says to
  leave the column out.
* **No future data.** The means, standard deviations and category vocabularies are computed from the
  *training* rows of the *first slice* only: what exists before the first model is trained. The stream
  applies them once it has split the test rows off (:attr:`~ctsim.datasets.base.Samples.fit`), so
  neither test rows nor any later row changes how a sample is encoded.
* **Missing values** (null or NaN) in features: ``missing=error`` (default) names the column and the
  row; ``drop`` leaves those rows out; ``fill`` encodes a missing number as the first slice's mean (0 once
  standardised) and a missing category as "other". A missing time or label is always an error, and so
  is ``inf`` in a number feature or the label (not missing: it would scale the column to NaN).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import polars as pl
import torch

from ctsim.datasets.base import Samples, size_problem
from ctsim.datasets.prepared import subset, years_of
from ctsim.validation import ConfigError, Problem, check, first_line, is_int, override_text, seed_problem

log = logging.getLogger(__name__)

PERIOD = re.compile(r"^[1-9]\d*(d|w|mo|q|y)$")
MAX_AUTO_SLICES = 1000  # slice_by=auto on numbers: one slice per value up to this many values
STRAY_AMONG = 10  # without classes, a label of one row is a typo where another class has this many rows
LABEL_FORMAT = {"d": "%Y-%m-%d", "w": "%Y-%m-%d", "mo": "%Y-%m", "q": "%Y-%m", "y": "%Y"}
MISSING = ("error", "drop", "fill")
# a month without a day, year first (2021-01) or last (01/2021), and its strftime format given the separator
MONTH_ONLY = ((re.compile(r"\d{4}([-/.])\d{2}"), "%Y{}%m"), (re.compile(r"\d{2}([-/.])\d{4}"), "%m{}%Y"))
FIT_ROWS = 10  # fewer first-slice training rows than this: too few to scale the numbers by (a warning)


@dataclass(frozen=True)
class _Table:
    """The read, checked and sorted table: raw numeric features, category values, labels, slices."""

    numeric: torch.Tensor  # (n, numeric columns) float64, NaN where missing
    categories: list[list[str | None]]  # per categorical column, its value per row
    y: torch.Tensor
    time: torch.Tensor
    slice: torch.Tensor
    slice_labels: list[str]
    classes: list[str]


class Table:
    """A time-stamped table (see the module docstring).

    Args:
        path: the CSV or parquet file (``.csv``, ``.tsv``, ``.parquet``); relative to the working
            directory, or else to ``root``.
        time_column, label_column: the columns of the time and the class.
        feature_columns: the input columns; None takes every other column.
        slice_by: a calendar period (``1mo``), ``value``, a number of rows per slice, or ``auto``: ``1mo``
            for dates, ``value`` for numbers.
        classes: the class values, in label order; None takes the sorted distinct values in the file
            (whatever the order of an enum column's categories).
        missing: what to do with missing feature values: ``error``, ``drop`` or ``fill``.
        max_categories: one-hot slots per text column (the most frequent values of the first slice's
            training rows), plus one for every other value.
        size: the share of every slice to replay, in (0, 1] (at least 10 rows, or all it has).
        seed: the seed of that subset.
        root: the data root (where a relative ``path`` is looked for second).
    """

    name = "table"
    model = "mlp"
    change_points: tuple = ()

    def __init__(
        self,
        path: str | None = None,
        time_column: str | None = None,
        label_column: str | None = None,
        feature_columns: list[str] | None = None,
        slice_by: str | int = "auto",
        time_format: str | None = None,
        classes: list | None = None,
        missing: str = "error",
        max_categories: int = 20,
        size: float = 1.0,
        seed: int = 0,
        root: str = "datasets",
    ):
        text = "a column name (text)"
        ConfigError.raise_all(
            [
                check("path", path, isinstance(path, str) and path != "", "the CSV or parquet file to read"),
                check("time_column", time_column, isinstance(time_column, str), text),
                check(
                    "label_column",
                    label_column,
                    isinstance(label_column, str) and label_column != time_column,
                    f"{text} other than time_column" if label_column == time_column else text,
                ),
                check(
                    "feature_columns",
                    feature_columns,
                    feature_columns is None
                    or (
                        isinstance(feature_columns, list)
                        and all(isinstance(c, str) for c in feature_columns)
                        and len(set(feature_columns)) == len(feature_columns)
                    ),
                    "null (every other column) or a list of different column names",
                ),
                check(
                    "slice_by",
                    slice_by,
                    (is_int(slice_by) and slice_by >= 1)
                    or (isinstance(slice_by, str) and bool(PERIOD.match(slice_by)))
                    or slice_by in ("value", "auto"),
                    "auto (1mo for dates, value for numbers), a calendar period (1d, 1w, 1mo, 1q, 1y, or a "
                    "multiple: 2w), value (one slice per distinct time) or a number of rows ≥ 1",
                ),
                check(
                    "time_format",
                    time_format,
                    time_format is None or (isinstance(time_format, str) and "%" in time_format),
                    "null (year-first dates such as 2021-03-01) or a strftime format such as %m/%d/%Y",
                ),
                check(
                    "classes",
                    classes,
                    classes is None
                    or (
                        isinstance(classes, list)
                        and len(classes) >= 2
                        and len({str(c) for c in classes}) == len(classes)
                    ),
                    "null or a list of ≥ 2 different class values",
                ),
                check("missing", missing, missing in MISSING, f"one of {list(MISSING)}"),
                check(
                    "max_categories",
                    max_categories,
                    is_int(max_categories) and max_categories >= 1,
                    "an integer ≥ 1",
                ),
                size_problem(size),
                seed_problem("seed", seed),
            ]
        )
        self.path_text, self.root = path, Path(root)
        self.time_column, self.label_column = time_column, label_column
        self.feature_columns = feature_columns
        self.slice_by, self.classes, self.missing = slice_by, classes, missing
        self.time_format = time_format
        self.max_categories, self.size, self.seed = max_categories, float(size), seed

    @property
    def path(self) -> Path:
        given = Path(self.path_text)
        if given.is_absolute() or given.exists() or not (self.root / given).exists():
            return given
        return self.root / given

    # --- reading and checking ------------------------------------------------------------------------

    @cached_property
    def _frame(self) -> pl.DataFrame | Problem:
        path = self.path
        if not path.is_file():
            return Problem("dataset.path", str(path), "an existing CSV or parquet file")
        try:
            if path.suffix.lower() == ".parquet" or _is_parquet(path):
                frame = pl.read_parquet(path)
            else:
                sep = "\t" if path.suffix.lower() == ".tsv" else ","
                frame = pl.read_csv(path, separator=sep, infer_schema_length=None)
        except pl.exceptions.NoDataError:
            return Problem("dataset.path", str(path), "", text=f"{path} is empty: expected a header and rows")
        except (pl.exceptions.PolarsError, OSError) as e:
            first = first_line(e)
            text = f"polars cannot read {path} as {'parquet' if _is_parquet(path) else 'CSV'}: {first}"
            return Problem("dataset.path", str(path), "", text=text)
        if frame.height == 0:
            return Problem("dataset.path", str(path), "", text=f"{path} has a header but no rows")
        return frame

    @cached_property
    def _columns(self) -> tuple[list[str], list[str]] | list[Problem]:
        """The numeric and the categorical feature columns, or the problems with the columns named."""
        frame = self._frame
        if isinstance(frame, Problem):
            return [frame]
        names = frame.columns
        problems = []
        for key in ("time_column", "label_column"):
            col = getattr(self, key)
            if col not in names:
                problems.append(Problem(f"dataset.{key}", col, f"a column of {self.path}: one of {names}"))
        features = self.feature_columns
        if features is None:
            features = [c for c in names if c not in (self.time_column, self.label_column)]
        unknown = [c for c in features if c not in names]
        if unknown:
            problems.append(Problem("dataset.feature_columns", unknown, f"columns of {self.path}: {names}"))
        if not features:
            problems.append(Problem("dataset.feature_columns", features, "at least one input column"))
        if self.label_column in features:
            problems.append(
                Problem(
                    "dataset.feature_columns",
                    features,
                    f"input columns without the label column {self.label_column!r}: a model that is given "
                    "the label learns nothing",
                )
            )
        numeric, categorical = [], []
        for c in [c for c in features if c in names]:
            dtype = frame.schema[c]
            if dtype.is_numeric() or dtype == pl.Boolean:
                numeric.append(c)
            elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
                categorical.append(c)
            else:
                problems.append(
                    Problem(
                        "dataset.feature_columns",
                        c,
                        "",
                        text=f"column {c!r} of {self.path} holds {dtype}: expected numbers or text "
                        "categories; leave it out with dataset.feature_columns=[...]",
                    )
                )
        return problems or (numeric, categorical)

    def path_problems(self) -> list[Problem]:
        """Everything wrong with the file, its columns and values, found by reading it (before training)."""
        columns = self._columns
        if isinstance(columns, list):
            return columns
        table = self._table
        return table if isinstance(table, list) else []

    @property
    def input_shape(self) -> tuple[int, ...]:
        columns = self._columns
        if isinstance(columns, list):
            return (1,)
        numeric, categorical = columns
        return (len(numeric) + len(categorical) * (self.max_categories + 1),)

    @property
    def class_names(self) -> list[str]:
        table = self._table
        return table.classes if isinstance(table, _Table) else []

    @property
    def num_classes(self) -> int:
        table = self._table
        return len(table.classes) if isinstance(table, _Table) else 2

    @cached_property
    def _table(self) -> _Table | list[Problem]:
        columns = self._columns
        if isinstance(columns, list):
            return columns
        numeric, categorical = columns
        frame = self._frame.with_row_index("_row")
        time, problems = self._times(frame)
        if problems:
            return problems
        frame = frame.with_columns(_time=time)
        frame, problems = self._missing(frame, numeric + categorical)
        if problems:
            return problems
        infinite = self._infinite(frame, [*numeric, self.label_column])
        if infinite:
            return infinite
        if frame.height == 0:  # with dataset.classes too: the checks below would pass an empty table
            text = f"{self.path}: expected rows with every feature value, no rows are left (missing=drop)"
            return [Problem("dataset.missing", self.missing, "", text=text)]
        labels = frame[self.label_column]
        missing = _is_missing(labels)
        if bool(missing.any()):
            row = int(frame.filter(missing)["_row"][0])
            return [self._row_problem(row, f"a value in label column {self.label_column!r}", "none")]
        if self.classes is not None:
            classes = list(self.classes)
            known = labels.is_in(pl.Series(classes).cast(labels.dtype, strict=False).implode())
            if not bool(known.all()):
                i = int(known.not_().arg_max())
                return [
                    self._row_problem(
                        int(frame["_row"][i]), f"a label among dataset.classes {classes}", repr(labels[i])
                    )
                ]
        else:
            classes = sorted(labels.unique().to_list())  # by value: an enum's own order is not sorted
            if len(classes) < 2:
                text = (
                    f"column {self.label_column!r} of {self.path}: expected at least 2 classes, "
                    f"found only {classes}"
                )
                return [Problem("dataset.label_column", self.label_column, "", text=text)]
            stray = self._stray_label(frame, classes)
            if stray is not None:
                return [stray]
        if not frame["_time"].is_sorted():
            log.warning("%s is not sorted by %s: ctsim sorted its rows (stable)", self.path, self.time_column)
            frame = frame.sort("_time", maintain_order=True)  # stable: equal times keep the file's order
        slices, labels_of_slices = self._slices(frame, self._slice_by(frame["_time"]))
        codes = pl.Series(classes).cast(frame.schema[self.label_column], strict=False)
        label = pl.col(self.label_column).replace_strict(codes, pl.int_range(0, len(classes), eager=True))
        y = frame.select(label).to_series().to_torch().long()
        values = (
            frame.select([pl.col(c).cast(pl.Float64) for c in numeric])
            .fill_null(float("nan"))
            .to_torch(dtype=pl.Float64)
            if numeric
            else torch.zeros(frame.height, 0, dtype=torch.float64)
        )
        cats = [frame[c].cast(pl.String).to_list() for c in categorical]
        when = frame["_time"]
        t = (
            years_of(when)
            if when.dtype.is_temporal()
            else torch.from_numpy(when.cast(pl.Float64).to_numpy().copy())
        )
        return _Table(values, cats, y, t, slices, labels_of_slices, [str(c) for c in classes])

    def _stray_label(self, frame: pl.DataFrame, classes: list) -> Problem | None:
        """A label value only one row holds, where another class holds ≥ STRAY_AMONG rows: a typo."""
        counts = frame[self.label_column].value_counts()
        count = dict(zip(counts[self.label_column].to_list(), counts["count"].to_list()))
        once = [c for c in classes if count[c] == 1]
        if not once or max(count.values()) < STRAY_AMONG:
            return None
        labels = frame[self.label_column]
        i = int(labels.is_in(pl.Series(once, dtype=labels.dtype).implode()).arg_max())
        others = ", ".join(f"{c!r} ({count[c]:,} rows)" for c in classes if count[c] > 1)
        numbers = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in classes)
        listed = f"dataset.classes=[{','.join(map(str, classes))}]" if numbers else None
        listed = listed or override_text("dataset.classes", [str(c) for c in classes])
        more = f" ({len(once) - 1} more values are in one row only)" if len(once) > 1 else ""
        return self._row_problem(
            int(frame["_row"][i]),
            f"a label of column {self.label_column!r} that other rows have too: {others}",
            f"{labels[i]!r}, which no other row has{more}: a typo? Correct or drop the row, or, if it is a "
            f"class, list the classes: {listed}",
        )

    def _row_problem(self, row: int, expected: str, found: str) -> Problem:
        line = f" (line {row + 2} of the CSV)" if self.path.suffix.lower() != ".parquet" else ""
        return Problem(
            "dataset.path",
            str(self.path),
            "",
            text=f"{self.path}: row {row}{line}: expected {expected}, found {found}",
        )

    def _times(self, frame: pl.DataFrame) -> tuple[pl.Series, list[Problem]]:
        col = frame[self.time_column]
        missing = _is_missing(col)
        if col.dtype.is_float():  # inf would be a slice of its own, and a fractional year of inf
            missing = missing | col.is_infinite()
        if bool(missing.any()):
            i = int(missing.arg_max())
            found = "none" if col[i] is None else str(col[i])  # inf, -inf or nan
            expected = f"a time in column {self.time_column!r}: a date or a finite number"
            return col, [self._row_problem(int(frame["_row"][i]), expected, found)]
        if col.dtype == pl.String:
            col = col.str.strip_chars()
            expected = (
                "a date or datetime with the year first, such as 2021-03-01 or 2021-03-01 12:00 (ISO 8601; "
                "in 03/05/2021 the order of day and month is a guess: give dataset.time_format=%m/%d/%Y "
                "or %d/%m/%Y)"
            )
            if self.time_format is not None:
                expected = f"a time in dataset.time_format {self.time_format!r}"
            else:  # polars would read 03/05/2021 as 3 May without a word: year-first text is unambiguous
                year_first = col.str.contains(r"^\s*\d{4}[-/.]")
                if not bool(year_first.all()):
                    i = int(year_first.not_().arg_max())
                    return col, [self._unparsed(frame, col, i, expected)]
            try:
                parsed = col.str.to_datetime(self.time_format, strict=False)
            except pl.exceptions.PolarsError as e:  # no format polars knows fits, or a bad time_format
                if self.time_format is not None:
                    first = first_line(e)
                    return col, [
                        Problem(
                            "dataset.time_format",
                            self.time_format,
                            f"a strftime format polars reads ({first})",
                        )
                    ]
                return col, [self._unparsed(frame, col, 0, expected)]
            bad = parsed.is_null()
            if bool(bad.any()):
                return col, [self._unparsed(frame, col, int(bad.arg_max()), expected)]
            col = parsed
        elif self.time_format is not None:
            return col, [
                check(
                    "dataset.time_format",
                    self.time_format,
                    False,
                    f"null: the time column {self.time_column!r} holds {col.dtype}, not text",
                )
            ]
        elif col.dtype == pl.Date:
            col = col.cast(pl.Datetime("us"))
        elif not (isinstance(col.dtype, pl.Datetime) or col.dtype.is_numeric()):
            return col, [
                Problem(
                    "dataset.time_column",
                    self.time_column,
                    f"dates, datetimes or numbers (it holds {col.dtype})",
                )
            ]
        if isinstance(self.slice_by, str) and PERIOD.match(self.slice_by) and not col.dtype.is_temporal():
            return col, [
                check(
                    "dataset.slice_by",
                    self.slice_by,
                    False,
                    f"auto, value or a number of rows: the time column {self.time_column!r} holds numbers, "
                    "not dates",
                )
            ]
        if self.slice_by == "auto" and not col.dtype.is_temporal():
            distinct = col.n_unique()
            if distinct > MAX_AUTO_SLICES:
                text = (
                    f"the time column {self.time_column!r} of {self.path} holds {distinct:,} distinct "
                    f"numbers: slice_by=auto makes one slice per value only up to {MAX_AUTO_SLICES:,}; give "
                    "dataset.slice_by=<rows per slice> (e.g. 1000), or dataset.slice_by=value for one each"
                )
                return col, [Problem("dataset.slice_by", self.slice_by, "", text=text)]
        return col, []

    def _unparsed(self, frame: pl.DataFrame, col: pl.Series, i: int, expected: str) -> Problem:
        """The problem of the text time in row ``i`` that does not parse; where the column holds months
        without a day (``2021-01``), it names the ``time_format`` that reads them (``%Y-%m``)."""
        month = _month_format(col, col[i])
        if month is None:
            return self._row_problem(int(frame["_row"][i]), expected, repr(col[i]))
        if self.time_format is None:
            expected = "a date or datetime with its day, such as 2021-03-01"
        found = f"{col[i]!r}, a month without a day: give {override_text('dataset.time_format', month)}"
        return self._row_problem(int(frame["_row"][i]), expected, found)

    def _slice_by(self, time: pl.Series) -> str | int:
        """``slice_by``, with ``auto`` made ``1mo`` for dates and ``value`` for numbers."""
        if self.slice_by != "auto":
            return self.slice_by
        return "1mo" if time.dtype.is_temporal() else "value"

    def _missing(self, frame: pl.DataFrame, features: list[str]) -> tuple[pl.DataFrame, list[Problem]]:
        def missing(c: str) -> pl.Expr:
            expr = pl.col(c).is_null()
            return expr | pl.col(c).is_nan() if frame.schema[c].is_float() else expr

        if not features:
            return frame, []
        any_missing = pl.any_horizontal([missing(c) for c in features])
        rows = frame.filter(any_missing)
        if rows.height == 0 or self.missing == "fill":
            return frame, []
        if self.missing == "drop":
            log.warning(
                "%s: left out %d rows with missing feature values (missing=drop)", self.path, rows.height
            )
            return frame.filter(~any_missing), []
        first = rows.row(0, named=True)
        column = next(
            c for c in features if first[c] is None or (isinstance(first[c], float) and first[c] != first[c])
        )
        problem = self._row_problem(
            int(first["_row"]),
            f"a value in feature column {column!r} (or dataset.missing=drop or fill)",
            f"a missing value ({rows.height} rows have one)",
        )
        return frame, [problem]

    def _infinite(self, frame: pl.DataFrame, columns: list[str]) -> list[Problem]:
        """An infinite number in a number feature or the label: not missing (``missing`` does not drop
        or fill it), and it would make the first slice's scaling, or a class, of ``inf``."""
        for c in columns:
            if frame.schema[c].is_float():
                bad = frame[c].is_infinite()
                if bool(bad.any()):
                    i = int(bad.arg_max())
                    what = "label" if c == self.label_column else "feature"
                    return [
                        self._row_problem(
                            int(frame["_row"][i]),
                            f"a finite number in {what} column {c!r}",
                            repr(frame[c][i]),
                        )
                    ]
        return []

    def _slices(self, frame: pl.DataFrame, slice_by: str | int) -> tuple[torch.Tensor, list[str]]:
        n = frame.height
        if is_int(slice_by):
            index = torch.arange(n) // int(slice_by)
            return index, [
                f"rows {i * slice_by}-{min(n, (i + 1) * slice_by) - 1}" for i in range(int(index[-1]) + 1)
            ]
        if slice_by == "value":
            when = frame["_time"]
            index = torch.from_numpy(when.rank("dense").cast(pl.Int64).to_numpy().copy()) - 1
            return index, [_label(v) for v in when.unique(maintain_order=True).to_list()]
        unit = PERIOD.match(slice_by).group(1)
        period = frame["_time"].dt.truncate(slice_by)
        starts = period.unique(maintain_order=True)
        index = torch.from_numpy(period.rank("dense").cast(pl.Int64).to_numpy().copy()) - 1
        return index, starts.dt.strftime(LABEL_FORMAT[unit]).to_list()

    # --- samples ---------------------------------------------------------------------------------------

    def load(self) -> Samples:
        ConfigError.raise_all(self.path_problems())
        table = self._table
        keep = subset(table.slice, self.size, self.seed)
        rows = keep if keep is not None else torch.arange(len(table.y))
        numeric = table.numeric[rows]
        cats = [[values[i] for i in rows.tolist()] for values in table.categories]
        slices = table.slice[rows]
        return Samples(
            x=torch.zeros(len(rows), *self.input_shape),  # replaced by fit() once the stream has split
            y=table.y[rows],
            time=table.time[rows],
            slice=slices,
            slice_labels=table.slice_labels,
            num_classes=len(table.classes),
            change_points=[],
            fit=lambda train: self._encode(numeric, cats, train & (slices == 0)),
        )

    def _encode(self, numeric: torch.Tensor, cats: list[list[str | None]], fit_rows: torch.Tensor):
        """:func:`encode`, with a warning where the first slice's training rows cannot scale the numbers:
        fewer than ``FIT_ROWS`` of them, or a number column (not a yes/no one) that takes one value there
        and so stays unscaled. Later values far from 0 can make training diverge."""
        fit = numeric[fit_rows]
        flat = [
            name
            for name, column in zip(self._columns[0], fit.T, strict=True)
            if column[~column.isnan()].unique().numel() < 2 and self._frame.schema[name] != pl.Boolean
        ]
        if flat or (len(fit) < FIT_ROWS and numeric.shape[1]):
            what = f"number column(s) {', '.join(map(repr, flat))} take one value" if flat else "too few"
            log.warning(
                "%s: standardising fits the first slice's %d training rows only, %s there, so later "
                "values can lie far from 0 and make training diverge; a longer first slice "
                "(dataset.slice_by) fixes it",
                self.path,
                len(fit),
                what,
            )
        return encode(numeric, cats, fit_rows, self.max_categories)


def _label(value) -> str:
    """A slice's name for one time value: 1930 for the number 1930.0, 2021-03-01 for a midnight."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "hour") and (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0):
        return str(value.date())
    return str(value)


def _month_format(values: pl.Series, value: str) -> str | None:
    """The strftime format of ``value`` if it is a month without a day and that format reads every value.

    >>> _month_format(pl.Series(["2021-01", "2021-02"]), "2021-01")
    '%Y-%m'
    >>> _month_format(pl.Series(["01/2021"]), "01/2021")
    '%m/%Y'
    >>> print(_month_format(pl.Series(["2021-01", "2021-03-01"]), "2021-01"))  # not every value is a month
    None
    """
    for pattern, form in MONTH_ONLY:
        match = pattern.fullmatch(value)
        if match is not None:
            fmt = form.format(match.group(1))
            return fmt if values.str.to_datetime(fmt, strict=False).null_count() == 0 else None
    return None


def _is_parquet(path: Path) -> bool:
    """Whether ``path`` starts with parquet's magic bytes (a parquet file named ``.pq`` or ``.parq``)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False


def _is_missing(values: pl.Series) -> pl.Series:
    """Null, or NaN in a float column (pandas writes a missing number as NaN)."""
    return values.is_null() | values.is_nan() if values.dtype.is_float() else values.is_null()


def encode(
    numeric: torch.Tensor, categories: list[list[str | None]], fit_rows: torch.Tensor, max_categories: int
) -> torch.Tensor:
    """Features as float32: numbers standardised with the mean and standard deviation of ``fit_rows``
    (missing: the mean, i.e. 0), each text column one-hot over its ``max_categories`` most frequent values
    among ``fit_rows`` (ties: alphabetical) plus a slot for any other value or a missing one.

    >>> fit_rows = torch.tensor([True, True, False])
    >>> x = encode(torch.tensor([[1.0], [3.0], [100.0]]), [["a", "b", "c"]], fit_rows, 2)
    >>> x.tolist()
    [[-1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0], [98.0, 0.0, 0.0, 1.0]]
    """
    fit = numeric[fit_rows]
    mean = torch.nanmean(fit, dim=0) if len(fit) else torch.zeros(numeric.shape[1], dtype=numeric.dtype)
    centred = torch.nan_to_num(fit - mean, nan=0.0)
    count = (~fit.isnan()).sum(dim=0).clamp(min=1)
    std = (centred.pow(2).sum(dim=0) / count).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    mean = torch.nan_to_num(mean, nan=0.0)
    parts = [torch.nan_to_num((numeric - mean) / std, nan=0.0)]
    rows = fit_rows.nonzero().squeeze(1).tolist()
    for values in categories:
        counts: dict[str, int] = {}
        for i in rows:
            if values[i] is not None:
                counts[values[i]] = counts.get(values[i], 0) + 1
        vocab = sorted(counts, key=lambda v: (-counts[v], v))[:max_categories]
        slot = {v: i for i, v in enumerate(vocab)}
        index = (
            torch.tensor([slot.get(v, max_categories) for v in values])
            if values
            else torch.zeros(0, dtype=torch.long)
        )
        parts.append(torch.nn.functional.one_hot(index, max_categories + 1).to(torch.float64))
    return torch.cat(parts, dim=1).to(torch.float32)
