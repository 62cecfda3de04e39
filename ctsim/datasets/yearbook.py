"""Yearbook (Ginosar et al., 2015): 37,189 frontal portraits from US high-school yearbooks, 1930–2013.

``dataset=yearbook`` replays the real dataset from a prepared cache (one slice per year present,
classes M=0 and F=1, as Wild-Time and Modyn). ``prepare`` reads any of its three published formats;
the same content gives the same cache, whatever the format:

1. **Wild-Time's pickle** (``yearbook.pkl``): ``{year: {0: train, 1: test, 2: all}}``, each
   ``{"images": float (n, 32, 32, 3) in [0, 1], "labels": int (n,)}``. Reading a pickle can run code,
   so ``prepare`` reads it only with ``--trust-pickle``, and then with an unpickler that accepts numpy
   arrays and nothing else. Wild-Time's own train/test split (0 and 1) is kept: the stream evaluates on
   its test part and ``stream.test_fraction`` is not used.
2. **The original aligned portraits folder** (``faces_aligned_small_mirrored_co_aligned_cropped_cleaned``):
   ``F/`` and ``M/`` with files named from the year (``1934_Ohio_...png``). Every image must have the size
   of the first one read; each is converted to grey and resized to 32×32 (Pillow, bicubic).
3. **Modyn's per-year binary files**: ``<year>.bin`` in one folder, or in ``train/`` and ``test/``
   folders (a split, kept as Wild-Time's). Each record is a 4-byte big-endian label then 3×32×32
   little-endian float32 (12,292 bytes).

Images are stored as uint8 (round(x × 255): exact for the 8-bit originals), 3 channels; a grey image is
repeated over the channels, as in the published copies. Within a year the samples are ordered by a hash of
their content (:func:`~ctsim.datasets.prepared.content_order`); a sample's time is its year.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch

from ctsim.datasets.prepared import (
    ArraysOnly,
    DataError,
    Prepared,
    PreparedDataset,
    Preparer,
    content_order,
    quantize,
    reading,
)
from ctsim.validation import ConfigError, check

FIRST_YEAR, LAST_YEAR = 1930, 2013
SIDE = 32
CLASSES = ["M", "F"]  # label 0 = M, 1 = F
RECORD = 4 + 3 * SIDE * SIDE * 4  # Modyn's record: label + 3×32×32 float32 = 12,292 bytes
OLD_RECORD = 4 + SIDE * SIDE * 4  # Modyn's earlier one-channel record
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}
FORMATS = ("auto", "wildtime", "folder", "modyn")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="auto", help="the source format (default: auto)")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read Wild-Time's yearbook.pkl: a pickle can run code when read, so only with this flag",
    )
    parser.add_argument(
        "--years",
        default=f"{FIRST_YEAR}-{LAST_YEAR}",
        help=f"the years to keep, FIRST-LAST (default {FIRST_YEAR}-{LAST_YEAR}, as Wild-Time and Modyn)",
    )


def convert(source: Path, args: argparse.Namespace) -> Prepared:
    """Read ``source`` in its format into uint8 images, labels and years (see the module docstring)."""
    first, last = _years(args.years)
    fmt = detect(source) if args.format == "auto" else args.format
    if fmt == "wildtime":
        images, labels, years, is_test = read_wildtime(source, args.trust_pickle)
    elif fmt == "folder":
        images, labels, years, is_test = read_folder(source)
    else:
        images, labels, years, is_test = read_modyn(source)
    notes = []
    keep = (years >= first) & (years <= last)
    if not bool(keep.all()):
        dropped = sorted(set(years[~keep].tolist()))
        notes.append(f"left out {int((~keep).sum())} samples of years outside {first}-{last}: {dropped}")
        images, labels, years = images[keep], labels[keep], years[keep]
        is_test = is_test[keep] if is_test is not None else None
    if len(labels) == 0:
        raise DataError(source, f"portraits of the years {first}-{last}", "none")
    present = sorted(set(years.tolist()))
    slices = torch.bucketize(years, torch.tensor(present))
    order = content_order(images, labels, slices)
    return Prepared(
        x=images[order],
        y=labels[order],
        time=years[order].to(torch.float64),
        slice=slices[order],
        slice_labels=[str(y) for y in present],
        classes=list(CLASSES),
        source_format=fmt,
        is_test=is_test[order] if is_test is not None else None,
        notes=notes,
    )


def _years(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d{4})\s*-\s*(\d{4})\s*", str(text))
    if not m or int(m.group(1)) > int(m.group(2)):
        raise DataError("--years", "FIRST-LAST, e.g. 1930-2013", repr(text))
    return int(m.group(1)), int(m.group(2))


SOURCES = (
    "Wild-Time's yearbook.pkl (a pickle), the portraits folder with F/ and M/ subfolders, or a folder of "
    "Modyn's <year>.bin files"
)


def detect(source: Path) -> str:
    """The format of ``source``: a pickle file is Wild-Time's, a folder with F/ or M/ the portraits
    folder, a folder with ``<year>.bin`` files (or train/ and test/ ones) Modyn's. Any other file (a
    CSV, an image) is named as what it seems to be."""
    if source.is_file() and source.suffix.lower() == ".bin":
        raise DataError(
            source, "the folder that holds Modyn's <year>.bin files, not one of them", source.name
        )
    if source.is_file():
        if not _looks_like_pickle(source):
            raise DataError(source, SOURCES, _what_file(source))
        return "wildtime"
    if (source / "F").is_dir() or (source / "M").is_dir():
        return "folder"
    if any(source.glob("*.bin")) or any(source.glob("*/*.bin")):
        return "modyn"
    raise DataError(source, SOURCES, "none of these")


def _looks_like_pickle(path: Path) -> bool:
    """A pickle (protocol 2 or later starts with the PROTO opcode, 0x80), or an empty file or one named
    ``.pkl`` / ``.pickle`` (older protocols have no magic bytes): the pickle reader says what is wrong."""
    with reading(path), open(path, "rb") as f:
        head = f.read(1)
    return head in (b"", b"\x80") or path.suffix.lower() in (".pkl", ".pickle")


def _what_file(path: Path) -> str:
    """What a file that is not a pickle seems to be, for the error: its first line if it is text."""
    with reading(path), open(path, "rb") as f:
        head = f.read(200)
    try:
        line = head.decode("utf-8").splitlines()[0]
    except (UnicodeDecodeError, IndexError):
        return f"a file that is not a pickle ({path.suffix or 'no suffix'}, binary)"
    found = f"not a pickle (its first line: {line[:60]!r})"
    if "," in line or "\t" in line:
        return f"a CSV or other text file, {found}; a table of yours needs no prepare: dataset=table"
    return f"a text file, {found}"


# --- Wild-Time's pickle -------------------------------------------------------------------------------


def read_wildtime(
    path: Path, trust: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if not _looks_like_pickle(path):
        raise DataError(path, "Wild-Time's yearbook.pkl (a pickle)", _what_file(path))
    if not trust:
        raise DataError(
            path,
            "--trust-pickle to read a pickle: reading a pickle can run any code it holds, so ctsim reads "
            "one only when you say you trust where it came from (Wild-Time's yearbook.pkl). The portraits "
            "folder and Modyn's .bin files need no trust",
            "a pickle and no --trust-pickle",
        )
    with reading(path), open(path, "rb") as f:
        if f.read(1) == b"":
            raise DataError(path, "Wild-Time's pickle", "an empty file")
        f.seek(0)
        try:
            data = ArraysOnly(f, path, "Wild-Time's yearbook.pkl").load()
        except DataError:
            raise
        except Exception as e:  # a truncated or foreign file: any unpickling error
            raise DataError(
                path, "Wild-Time's pickle", f"an unreadable pickle ({type(e).__name__}: {e})"
            ) from e
    if not isinstance(data, dict) or not data:
        raise DataError(path, "a dict {year: {0: train, 1: test, 2: all}}", type(data).__name__)
    split = all(isinstance(v, dict) and 0 in v and 1 in v for v in data.values())
    parts = (0, 1) if split else (2,)
    images, labels, years, tests = [], [], [], []
    for year, entry in sorted(data.items(), key=lambda kv: str(kv[0])):
        if not isinstance(year, (int, np.integer)):
            raise DataError(path, "integer years as keys", repr(year))
        for part in parts:
            where = f"{path}: year {year}, part {part}"
            if not isinstance(entry, dict) or part not in entry:
                raise DataError(where, "parts 0 and 1 (train, test) or 2 (all)", "it is missing")
            x, y = _images_and_labels(entry[part], where)
            images.append(x)
            labels.append(y)
            years.append(torch.full((len(y),), int(year)))
            tests.append(torch.full((len(y),), part == 1))
    return torch.cat(images), torch.cat(labels), torch.cat(years), torch.cat(tests) if split else None


def _images_and_labels(part: object, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(part, dict) or "images" not in part or "labels" not in part:
        raise DataError(where, 'a dict with "images" and "labels"', type(part).__name__)
    images, labels = np.asarray(part["images"]), np.asarray(part["labels"])
    if images.ndim != 4 or images.shape[1:] != (SIDE, SIDE, 3):
        raise DataError(where, f"images of shape (n, {SIDE}, {SIDE}, 3)", f"shape {images.shape}")
    if labels.shape != (len(images),):
        raise DataError(where, f"one label per image ({len(images)})", f"labels of shape {labels.shape}")
    x, _ = quantize(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2), where)
    return x.contiguous(), _labels(torch.from_numpy(labels.astype(np.int64)), where)


def _labels(labels: torch.Tensor, where: str) -> torch.Tensor:
    bad = ((labels != 0) & (labels != 1)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{where}, sample {i}", "label 0 (M) or 1 (F)", f"label {int(labels[i])}")
    return labels.long()


# --- the portraits folder ------------------------------------------------------------------------------


def read_folder(root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
    from PIL import Image, UnidentifiedImageError

    files = [
        (label, f)
        for label, sub in enumerate(CLASSES)
        if (root / sub).is_dir()
        for f in sorted((root / sub).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
    ]
    if not files:
        raise DataError(root, "image files (.png, .jpg) in F/ and M/", "none")
    size: tuple[int, int] | None = None
    images, labels, years = [], [], []
    for label, f in files:
        m = re.match(r"(\d{4})", f.name)
        if not m:
            raise DataError(f, "a file name that starts with the year, e.g. 1934_Ohio_...png", f.name)
        try:
            with Image.open(f) as img:
                img.load()
                if size is None:
                    size = img.size
                elif img.size != size:
                    raise DataError(
                        f,
                        f"an image of {size[0]}×{size[1]} pixels, as the first one",
                        f"{img.size[0]}×{img.size[1]}",
                    )
                if img.mode in ("I", "F") or img.mode.startswith("I;"):  # convert("L") clips, not scales
                    raise DataError(f, "an image of 8 bits per channel, as Yearbook's", f"mode {img.mode}")
                grey = img.convert("L").resize((SIDE, SIDE), Image.Resampling.BICUBIC)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f, "an image file Pillow can read", type(e).__name__) from e
        images.append(torch.from_numpy(np.asarray(grey, dtype=np.uint8).copy()))
        labels.append(label)
        years.append(int(m.group(1)))
    x = torch.stack(images).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    return x, torch.tensor(labels), torch.tensor(years), None


# --- Modyn's binary files ------------------------------------------------------------------------------


def read_modyn(root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    split = (root / "train").is_dir() and (root / "test").is_dir()
    half = [name for name in ("train", "test") if any((root / name).glob("*.bin"))]
    if not split and half and not any(root.glob("*.bin")):
        raise DataError(
            root,
            "<year>.bin files in it, or both train/ and test/ folders of them (Modyn's split)",
            f"{half[0]}/ only: put its files directly in {root}, or add the missing folder",
        )
    folders = [(root / "train", False), (root / "test", True)] if split else [(root, False)]
    images, labels, years, tests = [], [], [], []
    for folder, is_test in folders:
        files = sorted(folder.glob("*.bin"))
        if not files:
            raise DataError(folder, "<year>.bin files", "none")
        for f in files:
            if not re.fullmatch(r"\d{4}", f.stem):
                raise DataError(f, "a file named <year>.bin, e.g. 1930.bin", f.name)
            x, y = read_bin(f)
            images.append(x)
            labels.append(y)
            years.append(torch.full((len(y),), int(f.stem)))
            tests.append(torch.full((len(y),), is_test))
    return torch.cat(images), torch.cat(labels), torch.cat(years), torch.cat(tests) if split else None


def read_bin(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``<year>.bin`` file: uint8 images (n, 3, 32, 32) and labels."""
    with reading(path):
        raw = path.read_bytes()
    if not raw:
        raise DataError(path, f"records of {RECORD:,} bytes", "an empty file")
    if len(raw) % RECORD:
        n, rest = divmod(len(raw), RECORD)
        hint = (
            f"; the file is a whole number of {OLD_RECORD:,}-byte records: Modyn's older one-channel layout"
            if len(raw) % OLD_RECORD == 0
            else ""
        )
        raise DataError(
            f"{path}: record {n}",
            f"a whole number of {RECORD:,}-byte records (4-byte big-endian label, 3×32×32 float32)",
            f"{len(raw):,} bytes: the last record is truncated ({rest:,} bytes){hint}",
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    labels = torch.from_numpy(records[:, :4].copy().view(">i4").reshape(-1).astype(np.int64))
    floats = records[:, 4:].copy().view("<f4").reshape(-1, 3, SIDE, SIDE)
    x, _ = quantize(torch.from_numpy(floats), path)
    return x, _labels(labels, str(path))


YEARBOOK = Preparer(
    name="yearbook",
    help="Yearbook portraits, 1930-2013, from Wild-Time's pickle, the portraits folder or Modyn's .bin files",
    where=(
        "Yearbook is not downloaded by ctsim: get Wild-Time's yearbook.pkl (github.com/huaxiuyao/Wild-Time), "
        "the original portraits folder (Ginosar et al., faces_aligned_small_mirrored_co_aligned_cropped_"
        "cleaned, with F/ and M/) or Modyn's <year>.bin files."
    ),
    convert=convert,
    arguments=_arguments,
    example="PATH (yearbook.pkl with --trust-pickle, the portraits folder, or a folder of <year>.bin)",
)


class Yearbook(PreparedDataset):
    """The real Yearbook portraits, replayed from the cache ``prepare yearbook`` writes.

    Args:
        root: the data root holding ``yearbook/``.
        size: the share of every year to replay, in (0, 1] (at least 10 portraits a year).
        seed: the seed of that subset.
        channels: 3 (as prepared, as Wild-Time's and Modyn's models take) or 1 (the portraits are grey:
            the same information in a third of the memory).
    """

    name = "yearbook"
    preparer = YEARBOOK
    model = "yearbooknet"

    def __init__(self, root: str = "datasets", size: float = 1.0, seed: int = 0, channels: int = 3):
        ConfigError.raise_all([check("channels", channels, channels in (1, 3), "1 or 3")])
        super().__init__(root, size, seed)
        self.channels = channels

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.channels, SIDE, SIDE)

    @property
    def num_classes(self) -> int:
        return len(CLASSES)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32) / 255.0
        return x if self.channels == 3 else x.mean(dim=1, keepdim=True)
