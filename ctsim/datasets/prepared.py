"""Prepared datasets: a user's files, converted once into a compact cache, then replayed from it.

``ctsim datasets prepare NAME --from PATH`` reads the files a user already has (Yearbook's
pickle, a folder of images, JSON lines, ...) and writes ``<root>/<name>/``:

* ``data.pt``: the samples as plain tensors (uint8 images, int32 token ids, float32 features), read
  back with ``torch.load(weights_only=True)``, which never runs code;
* ``manifest.json``: what was prepared from where, counts per slice, class balance, the source's own
  train/test split if it has one, and the SHA-256 checksum of ``data.pt``, checked on every load.

The folder is written beside its final place and renamed into it, so a failed ``prepare`` leaves no
half-written cache and an older cache of the same name intact. ``dataset=NAME`` then replays from the
cache; a missing cache is an error, before any work, that says where the data comes from and gives the
exact command that prepares it.

Each source format has a :class:`Preparer` (its options and its converter); :class:`PreparedDataset`
is the base of the datasets that replay a cache.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import torch

from ctsim.datasets.base import ChangePoint, Samples, size_problem
from ctsim.validation import ConfigError, Problem, seed_problem

FORMAT = 1  # bump when the cache layout changes: older caches are then refused with the prepare command
DATA, MANIFEST = "data.pt", "manifest.json"


class DataError(ValueError):
    """A source file that cannot be prepared: names the file (and record or row) and what was expected."""

    def __init__(self, where: str | Path, expected: str, found: str | None = None):
        self.where, self.expected, self.found = str(where), expected, found
        super().__init__(f"{where}: expected {expected}" + (f", found {found}" if found else ""))


@dataclass
class Prepared:
    """What a converter returns: every sample as tensors, in any order (a sample's key is its row).

    ``x`` is compact (uint8 images in [0, 255], int32 token ids, float32 features); the dataset that
    replays the cache turns it into model inputs. ``time`` is float64 and orders arrival; ``slice``
    indexes ``slice_labels``; ``y`` indexes ``classes``. ``is_test`` is the source's own train/test
    split, if it has one. ``notes`` are lines for the summary (e.g. "the input was not sorted").
    """

    x: torch.Tensor
    y: torch.Tensor
    time: torch.Tensor
    slice: torch.Tensor
    slice_labels: list[str]
    classes: list[str]
    source_format: str
    is_test: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)
    info: dict[str, object] = field(default_factory=dict)  # anything else the dataset needs (JSON)

    def tensors(self) -> dict[str, torch.Tensor]:
        data = {"x": self.x, "y": self.y, "time": self.time, "slice": self.slice}
        if self.is_test is not None:
            data["is_test"] = self.is_test
        return data


@dataclass(frozen=True)
class Preparer:
    """How ``prepare NAME`` reads one dataset's source files.

    ``where`` says where a user gets the files (for the missing-cache error and the summary);
    ``arguments`` adds the dataset's own options to the ``prepare NAME`` parser; ``convert`` reads
    ``--from`` PATH into a :class:`Prepared`, raising :class:`DataError` on bad input; ``cache_name``
    is the folder under the data root (default: NAME).
    """

    name: str
    help: str
    where: str
    convert: Callable[[Path, argparse.Namespace], Prepared]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    cache_name: Callable[[argparse.Namespace], str] | None = None
    example: str = "PATH"

    def folder_name(self, args: argparse.Namespace) -> str:
        return self.cache_name(args) if self.cache_name else self.name

    def command(self, root: str | Path = "datasets", extra: str = "") -> str:
        """The command that prepares this dataset (with ``--root`` only if it is not the default)."""
        at = "" if str(root) == "datasets" else f" --root {root}"
        return f"ctsim datasets prepare {self.name} --from {self.example}{extra}{at}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_cache(folder: Path, prepared: Prepared, source: Path, options: dict[str, object]) -> dict:
    """Write ``prepared`` as the cache ``folder`` (data and manifest), atomically; return the manifest.

    Everything is written into a temporary folder beside ``folder`` and renamed into place; an older
    cache there is replaced only once the new one is complete.
    """
    _check_consistent(prepared)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        torch.save(prepared.tensors(), tmp / DATA)
        manifest = _manifest(prepared, source, options, sha256(tmp / DATA))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():
            old.rename(folder)  # put the older cache back
        raise
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def _check_consistent(p: Prepared) -> None:
    n = len(p.y)
    if n == 0:
        raise DataError(p.source_format, "at least one sample", "none")
    lengths = {k: len(v) for k, v in p.tensors().items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"a converter returned tensors of different lengths: {lengths}")
    if int(p.slice.min()) < 0 or int(p.slice.max()) >= len(p.slice_labels):
        raise ValueError("a converter returned a slice index outside slice_labels")
    if int(p.y.min()) < 0 or int(p.y.max()) >= len(p.classes):
        raise ValueError("a converter returned a label outside classes")


def _manifest(p: Prepared, source: Path, options: dict[str, object], checksum: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        made_by = version("ctsim")
    except PackageNotFoundError:  # run from a source tree that was never installed
        made_by = "unknown"
    per_slice = torch.bincount(p.slice, minlength=len(p.slice_labels)).tolist()
    per_class = torch.bincount(p.y, minlength=len(p.classes)).tolist()
    split = None
    if p.is_test is not None:
        split = {"train": int((~p.is_test).sum()), "test": int(p.is_test.sum())}
    return {
        "format": FORMAT,
        "ctsim": made_by,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": str(source.resolve()),
        "source_format": p.source_format,
        "options": options,
        "samples": len(p.y),
        "input_shape": list(p.x.shape[1:]),
        "x_dtype": str(p.x.dtype).removeprefix("torch."),
        "slice_labels": p.slice_labels,
        "counts_per_slice": dict(zip(p.slice_labels, per_slice)),
        "classes": p.classes,
        "class_balance": dict(zip(p.classes, per_class)),
        "split": split,
        "notes": p.notes,
        "info": p.info,
        "sha256": checksum,
    }


def read_manifest(folder: Path) -> dict | None:
    """The cache's manifest, or None if there is no readable one (cheap: one small JSON file)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def read_cache(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The cached tensors and the manifest; the data's checksum must match the manifest's."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise DataError(folder / MANIFEST, "a prepared cache's manifest", "none")
    checksum = sha256(folder / DATA)
    if checksum != manifest.get("sha256"):
        raise DataError(
            folder / DATA,
            f"data with the manifest's checksum {manifest.get('sha256')}",
            f"{checksum}: the cache is damaged or was changed; prepare it again",
        )
    data = torch.load(folder / DATA, weights_only=True)  # plain tensors only: never runs code
    return data, manifest


def summary(name: str, folder: Path, manifest: dict) -> str:
    """What ``prepare`` prints: where the cache is, what it holds, per-slice counts and class balance."""
    counts = manifest["counts_per_slice"]
    labels = list(counts)
    balance = manifest["class_balance"]
    total = manifest["samples"]
    lines = [
        f"{name}: {total:,} samples, {len(labels)} slices ({labels[0]} … {labels[-1]}), "
        f"input {tuple(manifest['input_shape'])} {manifest['x_dtype']}",
        f"  cache:   {folder}  ({_size(folder / DATA)}, sha256 {manifest['sha256'][:16]}…)",
        f"  source:  {manifest['source']} ({manifest['source_format']})",
        f"  per slice: min {min(counts.values()):,}, max {max(counts.values()):,}",
        f"  classes: {class_balance(balance)}",
    ]
    split = manifest.get("split")
    lines.append(
        f"  split:   the source's own: {split['train']:,} train, {split['test']:,} test"
        if split
        else "  split:   none in the source: stream.test_fraction holds out part of every slice"
    )
    lines += [f"  note:    {note}" for note in manifest.get("notes", [])]
    return "\n".join(lines)


def class_balance(counts: dict[str, int]) -> str:
    """``M 10 (45.5%), F 12 (54.5%)``: each class's count and share."""
    total = sum(counts.values()) or 1
    return ", ".join(f"{c} {n:,} ({100 * n / total:.1f}%)" for c, n in counts.items())


def _size(path: Path) -> str:
    size = path.stat().st_size
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


class PreparedDataset:
    """A dataset replayed from a prepared cache ``<root>/<cache_name>/``.

    Subclasses set ``name``, ``preparer``, ``model`` (the model option that fits it) and turn the
    cached ``x`` into model inputs in :meth:`inputs`. ``size`` keeps a share of every slice (at least
    10 samples, or all it has), drawn with ``seed``; the source's own split is kept for the samples
    that remain.

    Args:
        root: the data root holding the prepared cache.
        size: the share of every slice to replay, in (0, 1].
        seed: the seed of the subset that ``size`` draws.
    """

    name: str
    preparer: Preparer
    model: str = "mlp"
    change_points: tuple[ChangePoint, ...] = ()

    def __init__(self, root: str = "datasets", size: float = 1.0, seed: int = 0):
        ConfigError.raise_all(
            [
                size_problem(size),
                seed_problem("seed", seed),
            ]
        )
        self.root, self.size, self.seed = Path(root), float(size), seed

    @property
    def cache_name(self) -> str:
        return self.name

    @property
    def folder(self) -> Path:
        return self.root / self.cache_name

    @cached_property
    def manifest(self) -> dict | None:
        return read_manifest(self.folder)

    def prepare_command(self) -> str:
        return self.preparer.command(self.root)

    def path_problems(self) -> list[Problem]:
        """A missing, unreadable or outdated cache: where the data comes from and how to prepare it."""
        m = self.manifest
        if m is not None and m.get("format") == FORMAT and (self.folder / DATA).is_file():
            return []
        if m is None:
            why = f"no prepared cache at {self.folder}"
        elif m.get("format") != FORMAT:
            why = f"the cache at {self.folder} was prepared by another ctsim (format {m.get('format')})"
        else:
            why = f"the cache at {self.folder} has no {DATA}"
        text = (
            f"{why}. {self.preparer.where} Prepare it once with:\n      {self.prepare_command()}\n"
            "    (see datasets/README.md)"
        )
        return [Problem("dataset", self.cache_name, "", text=text)]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["input_shape"]) if self.manifest else (1,)

    @property
    def num_classes(self) -> int:
        return len(self.manifest["classes"]) if self.manifest else 2

    @property
    def slice_labels(self) -> list[str]:
        return list(self.manifest["slice_labels"]) if self.manifest else []

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The cached ``x`` as model inputs (float32). Images divide by 255; others override."""
        return x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)

    def load(self) -> Samples:
        ConfigError.raise_all(self.path_problems())
        data, manifest = read_cache(self.folder)
        keep = subset(data["slice"], self.size, self.seed)
        data = {k: v[keep] for k, v in data.items()} if keep is not None else data
        return Samples(
            x=self.inputs(data["x"]),
            y=data["y"].long(),
            time=data["time"].to(torch.float64),
            slice=data["slice"].long(),
            slice_labels=list(manifest["slice_labels"]),
            num_classes=len(manifest["classes"]),
            change_points=list(self.change_points),
            is_test=data.get("is_test"),
        )


MIN_PER_SLICE = 10


def subset(slices: torch.Tensor, size: float, seed: int) -> torch.Tensor | None:
    """Rows keeping ``size`` of every slice (``max(10, round(n × size))``, at most ``n``), in row order,
    drawn with ``seed``; None for ``size=1``.

    >>> rows = subset(torch.tensor([0] * 40 + [1] * 5), 0.5, seed=0)
    >>> len(rows), int((rows < 40).sum())
    (25, 20)
    """
    if size >= 1:
        return None
    g = torch.Generator().manual_seed(seed)
    keep = []
    for s in torch.unique(slices).tolist():
        rows = (slices == s).nonzero().squeeze(1)
        k = min(len(rows), max(MIN_PER_SLICE, round(len(rows) * size)))
        keep.append(rows[torch.randperm(len(rows), generator=g)[:k]])
    return torch.sort(torch.cat(keep)).values


def fractional_year(seconds: torch.Tensor) -> torch.Tensor:
    """Seconds since 1970-01-01 UTC as fractional years (2021.5 is mid-2021), exact per calendar year.

    The time unit of every dataset with calendar dates, as portraits and sensors.

    >>> fractional_year(torch.tensor([0.0, 86400.0 * 365])).tolist()
    [1970.0, 1971.0]
    """
    micros = pl.Series("t", (seconds.to(torch.float64) * 1e6).round().to(torch.int64).numpy())
    return years_of(micros.cast(pl.Datetime("us")))


def years_of(when: pl.Series) -> torch.Tensor:
    """Datetimes (a polars Series) as fractional years, float64."""
    t = pl.col("t")
    year = t.dt.year()
    start, end = pl.datetime(year, 1, 1), pl.datetime(year + 1, 1, 1)
    frac = (t - start).dt.total_microseconds() / (end - start).dt.total_microseconds()
    out = pl.DataFrame({"t": when.cast(pl.Datetime("us"))}).select(year.cast(pl.Float64) + frac)
    return torch.from_numpy(out.to_series().to_numpy().astype(np.float64).copy())


def quantize(images: torch.Tensor, where: str | Path) -> tuple[torch.Tensor, float]:
    """Float images in [0, 1] as uint8 (round(x × 255)), and the largest rounding error, in [0, 1] units.

    Yearbook's portraits are 8-bit PNGs: every published float copy holds multiples of 1/255 (up to
    float rounding), which uint8 stores exactly.
    """
    if not images.is_floating_point():
        raise DataError(where, "float pixel values in [0, 1]", f"dtype {images.dtype}")
    if images.numel() and not bool(torch.isfinite(images).all()):
        raise DataError(where, "finite pixel values in [0, 1]", "NaN or infinite values")
    lo, hi = (float(images.min()), float(images.max())) if images.numel() else (0.0, 0.0)
    if lo < 0 or hi > 1:
        raise DataError(where, "pixel values in [0, 1]", f"values from {lo:g} to {hi:g}")
    scaled = images.to(torch.float64) * 255
    rounded = scaled.round()
    error = float((scaled - rounded).abs().max()) / 255 if images.numel() else 0.0
    return rounded.to(torch.uint8), error


def content_order(x: torch.Tensor, y: torch.Tensor, slices: torch.Tensor) -> torch.Tensor:
    """A row order that depends on the samples' content alone: by slice, then a hash of each sample.

    Sources list the same samples in different orders (a pickle's order, files sorted by name per class
    folder, binary records); sorting by content makes the same content give the same cache, and mixes
    the classes within a slice as a shuffle would (arrival batches smaller than a slice see both).
    """
    flat = x.reshape(len(x), -1).contiguous().numpy()
    labels = y.tolist()
    keys = [
        hashlib.blake2b(row.tobytes() + labels[i].to_bytes(8, "little"), digest_size=8).digest()
        for i, row in enumerate(flat)
    ]
    h = torch.tensor([int.from_bytes(k, "little") >> 1 for k in keys], dtype=torch.int64)
    order = torch.argsort(h, stable=True)
    return order[torch.argsort(slices[order], stable=True)]


class ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays; refuses any other global a pickle asks for.

    For ``prepare --trust-pickle`` only (Wild-Time's yearbook.pkl, CIFAR-10's batches), on top of the
    flag: a pickle that asks for ``os.system`` or any other callable is refused before it is called.
    ``encoding="latin1"`` reads Python 2 pickles as torchvision does.
    """

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol 2
        ("collections", "OrderedDict"),
    }

    def __init__(self, file, path: Path, what: str, encoding: str = "ASCII"):
        super().__init__(file, encoding=encoding)
        self.path, self.what = path, what

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(
                self.path,
                f"a pickle of dicts, lists and numpy arrays only (as {self.what})",
                f"a request for {module}.{name}, which ctsim refuses to load",
            )
        return super().find_class(module, name)


@contextlib.contextmanager
def reading(path: Path):
    """Turn an OS error while reading ``path`` into a DataError that names it."""
    try:
        yield
    except OSError as e:
        raise DataError(path, "a readable file", e.strerror or type(e).__name__) from e
