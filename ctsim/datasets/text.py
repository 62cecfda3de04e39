"""Text streams: HuffPost news headlines and arXiv abstracts, classified by category, one slice per year.

``dataset=huffpost`` and ``dataset=arxiv`` replay a cache that ``prepare`` writes from the JSON-lines
file a user has (one JSON object per line; read line by line, so arXiv's 4 GB snapshot is never in
memory at once):

* **HuffPost** (Kaggle's "News Category Dataset", ``News_Category_Dataset_v3.json``): the label is
  ``category``, the text ``headline`` + ``short_description``, the time ``date`` (``"2018-05-26"``).
* **arXiv** (Kaggle's "arXiv Dataset", ``arxiv-metadata-oai-snapshot.json``): the label is the first of
  ``categories`` (``"cs.LG stat.ML"`` → ``cs.LG``), the text ``title`` + ``abstract``, the time the
  first version's ``created`` (``versions: [{"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42
  GMT"}, ...]``).

Tokens are tokenised once, at prepare time: the text is lower-cased and split into runs of letters and
digits; each token becomes a stable id in [1, 2**20) (BLAKE2b of its UTF-8 bytes, so the same word gets
the same id in every run and on every machine); a document keeps its first ``--max-tokens`` ids, padded
with 0. ``x`` is int32 ``(n, max tokens)``; ``model=bow`` hashes the ids into its embedding rows.

Times are fractional years (UTC); slices are the years (``--slice-by month``: the months) present, in
order. The samples are stably sorted by time (HuffPost's file is newest first: the summary says so).
Classes are the category names, sorted; ``--min-class-count K`` leaves out categories with fewer than K
records.

>>> tokens("Hello, hello WORLD_42! Ünïcode")
['hello', 'hello', 'world', '42', 'ünïcode']
>>> token_ids("Hello, hello", max_tokens=5) == [token_id("hello")] * 2 and 1 <= token_id("hello") < 2**20
True
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import re
from array import array
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

import numpy as np
import torch

from ctsim.datasets.prepared import DataError, Prepared, PreparedDataset, Preparer, fractional_year, reading

ID_SPACE = 2**20  # token ids are in [1, ID_SPACE); 0 is padding
WORD = re.compile(r"[^\W_]+")  # a run of letters and digits (any script); everything else separates
MAX_TOKENS = 64
SLICE_BY = ("year", "month")

# A record's (label, text, time), read from one JSON object; ``where`` names the file and line.
Record = tuple[str, str, datetime]
RecordReader = Callable[[dict, str], Record]


@functools.lru_cache(maxsize=1 << 20)
def token_id(token: str) -> int:
    """The stable id of a token, in [1, 2**20): BLAKE2b, not Python's ``hash`` (salted per process)."""
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "little") % (ID_SPACE - 1)


def tokens(text: str, limit: int | None = None) -> list[str]:
    """The lower-cased runs of letters and digits of ``text`` (the first ``limit`` of them)."""
    return [m.group() for m in itertools.islice(WORD.finditer(text.lower()), limit)]


def token_ids(text: str, max_tokens: int) -> list[int]:
    """The ids of the first ``max_tokens`` tokens of ``text`` (not padded)."""
    return [token_id(t) for t in tokens(text, max_tokens)]


# --- the two formats ------------------------------------------------------------------------------------


def _string(record: dict, key: str, where: str, what: str, nonempty: bool = False) -> str:
    value = record.get(key)
    if not isinstance(value, str) or (nonempty and not value.strip()):
        found = (
            f"no {key!r} (the record has {', '.join(map(repr, record)) or 'no fields'})"
            if key not in record
            else f"{key!r}: {json.dumps(value)[:80]}"
        )
        raise DataError(where, f'a field "{key}": {what}', found)
    return value


def huffpost_record(record: dict, where: str) -> Record:
    """A News Category record: ``category``, ``headline`` + ``short_description``, ``date``."""
    label = _string(record, "category", where, "the category, a non-empty string", nonempty=True)
    text = " ".join(_string(record, key, where, "a string") for key in ("headline", "short_description"))
    date = _string(record, "date", where, 'a date like "2018-05-26"')
    try:
        when = datetime.fromisoformat(date.strip())
    except ValueError as e:
        raise DataError(where, 'a field "date": a date like "2018-05-26"', repr(date)) from e
    return label.strip(), text, when


def arxiv_record(record: dict, where: str) -> Record:
    """An arXiv metadata record: the first of ``categories``, ``title`` + ``abstract``, the v1 date."""
    label = _string(
        record, "categories", where, 'space-separated categories, e.g. "cs.LG stat.ML"', nonempty=True
    ).split()[0]
    text = " ".join(_string(record, key, where, "a string") for key in ("title", "abstract"))
    expected = (
        'a field "versions": a list whose first version has "created", e.g. '
        '[{"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"}]'
    )
    versions = record.get("versions")
    if not isinstance(versions, list) or not versions:
        found = f"'versions': {json.dumps(versions)[:80]}" if "versions" in record else "no 'versions'"
        raise DataError(where, expected, found)
    first = next((v for v in versions if isinstance(v, dict) and v.get("version") == "v1"), versions[0])
    created = first.get("created") if isinstance(first, dict) else None
    if not isinstance(created, str):
        raise DataError(where, expected, f"the first version {json.dumps(first)[:80]}")
    try:
        when = parsedate_to_datetime(created)
    except (TypeError, ValueError) as e:  # TypeError: Python < 3.10's way of saying "unparseable"
        raise DataError(
            where, 'a "created" date like "Mon, 2 Apr 2007 19:18:42 GMT" (RFC 2822)', repr(created)
        ) from e
    return label, text, when


# --- reading a JSON-lines file --------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, found {text!r}")
    return value


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-tokens",
        type=_positive,
        default=MAX_TOKENS,
        metavar="N",
        help=f"tokens kept per document, the first ones (default {MAX_TOKENS}); the cache is n × N int32",
    )
    parser.add_argument(
        "--slice-by", choices=SLICE_BY, default="year", help="one slice per year (default) or per month"
    )
    parser.add_argument(
        "--limit",
        type=_positive,
        default=None,
        metavar="N",
        help="read only the first N records: a quick subset",
    )
    parser.add_argument(
        "--min-class-count",
        type=_positive,
        default=1,
        metavar="K",
        help="leave out the categories with fewer than K records (default 1: keep all)",
    )


class _Columns:
    """The samples read so far, in compact arrays (a few bytes per token, not a Python object each)."""

    def __init__(self, max_tokens: int, slice_by: str):
        self.max_tokens, self.slice_by = max_tokens, slice_by
        self.ids, self.seconds, self.periods, self.labels = array("i"), array("d"), array("i"), array("i")
        self.classes: dict[str, int] = {}
        self.truncated = self.no_tokens = 0

    def add(self, label: str, text: str, when: datetime) -> None:
        words = tokens(text, self.max_tokens + 1)  # one more than kept: says whether it was cut
        self.truncated += len(words) > self.max_tokens
        self.no_tokens += not words
        ids = [token_id(w) for w in words[: self.max_tokens]]
        self.ids.extend(ids + [0] * (self.max_tokens - len(ids)))
        when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
        self.seconds.append(when.timestamp())
        self.periods.append(when.year if self.slice_by == "year" else when.year * 12 + when.month - 1)
        self.labels.append(self.classes.setdefault(label, len(self.classes)))

    def __len__(self) -> int:
        return len(self.labels)


def read_jsonl(path: Path, args: argparse.Namespace, record: RecordReader, what: str) -> Prepared:
    """Every record of the JSON-lines file ``path`` (``record`` reads one) as a :class:`Prepared`."""
    if path.is_dir():
        raise DataError(path, f"a JSON-lines file of {what}", "a folder")
    columns = _Columns(args.max_tokens, args.slice_by)
    limited = False
    with reading(path), open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue  # a blank line (a trailing newline, say) holds no record
            if args.limit is not None and len(columns) >= args.limit:
                limited = True
                break
            where = f"{path}: line {number}"
            try:
                obj = json.loads(line)
            except ValueError as e:  # also a line that is not UTF-8
                raise DataError(where, f"one JSON object per line (JSON lines) of {what}", f"{e}") from e
            if not isinstance(obj, dict):
                raise DataError(where, f"one JSON object per line (JSON lines) of {what}", type(obj).__name__)
            columns.add(*record(obj, where))
    if not len(columns):
        found = "an empty file" if path.stat().st_size == 0 else "blank lines only"
        raise DataError(path, f"JSON lines: one object per line, of {what}", found)
    return _prepared(path, columns, args, limited)


def _prepared(path: Path, c: _Columns, args: argparse.Namespace, limited: bool) -> Prepared:
    n = len(c)
    x = torch.from_numpy(np.frombuffer(c.ids, dtype=np.int32).reshape(n, c.max_tokens))
    seconds = torch.from_numpy(np.frombuffer(c.seconds, dtype=np.float64))
    periods = torch.from_numpy(np.frombuffer(c.periods, dtype=np.int32)).long()
    labels = torch.from_numpy(np.frombuffer(c.labels, dtype=np.int32)).long()
    notes = []
    if limited:
        notes.append(f"read only the first {args.limit:,} records (--limit)")
    if c.truncated:
        notes.append(
            f"{c.truncated:,} of {n:,} documents ({100 * c.truncated / n:.1f}%) have more than "
            f"{c.max_tokens} tokens: each keeps its first {c.max_tokens} (--max-tokens)"
        )
    if c.no_tokens:
        notes.append(f"{c.no_tokens:,} documents have no words: their rows are padding only")

    names = list(c.classes)  # in order of first appearance
    counts = torch.bincount(labels, minlength=len(names))
    kept = sorted(name for name, k in zip(names, counts.tolist()) if k >= args.min_class_count)
    if not kept:
        raise DataError(
            path,
            f"a category with at least {args.min_class_count:,} records (--min-class-count)",
            f"at most {int(counts.max()):,}",
        )
    if len(kept) < len(names):
        keep = counts[labels] >= args.min_class_count
        notes.append(
            f"left out {int((~keep).sum()):,} records of {len(names) - len(kept)} categories with fewer than "
            f"{args.min_class_count:,} (--min-class-count)"
        )
        x, seconds, periods, labels = x[keep], seconds[keep], periods[keep], labels[keep]
    rank = {name: i for i, name in enumerate(kept)}
    relabel = torch.tensor([rank.get(name, -1) for name in names])

    order = torch.argsort(seconds, stable=True)  # ties keep the file's order
    if not bool((order == torch.arange(len(order))).all()):
        notes.append("the input was not in time order: sorted by date, stably (ties keep the file's order)")
    present = torch.unique(periods)  # sorted
    return Prepared(
        x=x[order].contiguous(),
        y=relabel[labels[order]],
        time=fractional_year(seconds[order]),
        slice=torch.searchsorted(present, periods[order]),
        slice_labels=[_period_label(int(p), c.slice_by) for p in present],
        classes=kept,
        source_format="JSON lines",
        notes=notes,
        info={"max_tokens": c.max_tokens, "slice_by": c.slice_by, "id_space": ID_SPACE, "word": WORD.pattern},
    )


def _period_label(period: int, slice_by: str) -> str:
    return str(period) if slice_by == "year" else f"{period // 12}-{period % 12 + 1:02d}"


def convert_huffpost(path: Path, args: argparse.Namespace) -> Prepared:
    return read_jsonl(path, args, huffpost_record, "News Category records (category, headline, date, ...)")


def convert_arxiv(path: Path, args: argparse.Namespace) -> Prepared:
    return read_jsonl(path, args, arxiv_record, "arXiv metadata records (categories, title, versions, ...)")


HUFFPOST = Preparer(
    name="huffpost",
    help="HuffPost news headlines by category (News Category Dataset, JSON lines)",
    where=(
        "HuffPost is not downloaded by ctsim: get News_Category_Dataset_v3.json from Kaggle's "
        '"News Category Dataset" (kaggle.com/datasets/rmisra/news-category-dataset).'
    ),
    convert=convert_huffpost,
    arguments=_arguments,
    example="News_Category_Dataset_v3.json",
)

ARXIV = Preparer(
    name="arxiv",
    help="arXiv titles and abstracts by primary category (arXiv metadata snapshot, JSON lines)",
    where=(
        "arXiv is not downloaded by ctsim: get arxiv-metadata-oai-snapshot.json (about 4 GB) from Kaggle's "
        '"arXiv Dataset" (kaggle.com/datasets/Cornell-University/arxiv).'
    ),
    convert=convert_arxiv,
    arguments=_arguments,
    example="arxiv-metadata-oai-snapshot.json",
)


class _TextStream(PreparedDataset):
    """Rows of token ids (see the module docstring), fed to the model as floats."""

    model = "bow"
    input_kind = "tokens"  # not numbers: a model that takes values (model=mlp) is refused on them

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32)  # token ids < 2**24 are exact in float32; model=bow casts them back


class HuffPost(_TextStream):
    """HuffPost headlines and short descriptions, labelled by category, replayed from ``prepare huffpost``.

    Args:
        root: the data root holding ``huffpost/``.
        size: the share of every slice to replay, in (0, 1] (at least 10 articles a slice).
        seed: the seed of that subset.
    """

    name = "huffpost"
    preparer = HUFFPOST


class Arxiv(_TextStream):
    """arXiv titles and abstracts, labelled by primary category, replayed from ``prepare arxiv``.

    Args:
        root: the data root holding ``arxiv/``.
        size: the share of every slice to replay, in (0, 1] (at least 10 papers a slice).
        seed: the seed of that subset.
    """

    name = "arxiv"
    preparer = ARXIV
