"""Image streams: MNIST, Fashion-MNIST or CIFAR-10 cut into time slices, with a drift schedule whose change
points are known.

``dataset=vision_stream`` replays a cache that ``prepare`` writes from the torchvision folder a user
already has: ``--from`` is the folder passed to torchvision as ``root=``. Nothing is downloaded.

* **MNIST**: ``ROOT/MNIST/raw/`` with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each may be ``.gz``).
* **Fashion-MNIST**: the same four files in ``ROOT/FashionMNIST/raw/``.
* **CIFAR-10**: ``ROOT/cifar-10-batches-py/`` with ``data_batch_1`` … ``data_batch_5``, ``test_batch`` and
  ``batches.meta``. These are pickles, and reading a pickle can run any code it holds, so ``prepare``
  reads them only with ``--trust-pickle``, and then with an unpickler that builds numpy arrays and
  nothing else.

The idx files are read by a small reader of their documented format (a big-endian magic number, 2051 for
images and 2049 for labels, then the sizes, then the bytes), which names the file and what was wrong.
The cache keeps every image as uint8 ``(C, H, W)``, its class and the source's own train/test part.

**The stream is cut at load time**, so one prepared cache serves every schedule. ``slices`` equal slices
are dealt from the samples with ``seed``: each class's samples are shuffled and shared out so that every
slice holds the class mix its class prior asks for (the source's balance unless a ``class_prior`` event
changes it). The source's test part is dealt the same way and stays the test part of each slice, so
``stream.test_fraction`` is not used. A sample's time is its slice plus its place in the slice, as a
fraction. Then, per slice, the events of ``drift`` change the images or the labels:

* ``{kind: rotation, at: 10, degrees: 45}``: images turn counter-clockwise (bilinear; corners black);
* ``{kind: brightness, at: 10, delta: 0.3}``: added to every pixel in [0, 1], then clamped;
* ``{kind: blur, at: 10, sigma: 1.5}``: Gaussian blur of that many pixels;
* ``{kind: class_prior, at: 10, weights: [...]}``: one weight ≥ 0 per class multiplies the class's share;
* ``{kind: label_swap, at: 10, classes: [3, 5]}``: the two classes swap labels.

An event starts at slice ``at``. With ``width: 0`` (the default) or 1 it is abrupt; with ``width: n ≥ 2``
it grows linearly over ``n`` slices (``at`` has 1/n of it, ``at + n - 1`` all of it): angles, deltas and
sigmas scale, class weights move from the earlier ones, and a share of each swapped class is swapped.
Events of one kind add up (blurs as independent Gaussians). Each event is one
:class:`~ctsim.datasets.base.ChangePoint`, the ground truth of trigger scoring.

Example:
    >>> ds = VisionStream(name="mnist", slices=4, drift=[{"kind": "rotation", "at": 2, "degrees": 90}])
    >>> ds.input_shape, ds.num_classes, ds.slice_labels
    ((1, 28, 28), 10, ['s0', 's1', 's2', 's3'])
    >>> ds.change_points[0].slice, ds.change_points[0].kind, ds.change_points[0].what
    (2, 'abrupt', 'rotation: images turn by 90° counter-clockwise')
    >>> print(ds.prepare_command())
    ctsim datasets prepare vision_stream --from ROOT --dataset mnist
"""

from __future__ import annotations

import argparse
import gzip
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ctsim.datasets.base import ChangePoint, Samples
from ctsim.datasets.prepared import (
    ArraysOnly,
    DataError,
    Prepared,
    PreparedDataset,
    Preparer,
    read_cache,
    reading,
    subset,
)
from ctsim.validation import ConfigError, Problem, check, is_int, is_number, one_of


@dataclass(frozen=True)
class Source:
    """One torchvision dataset: its folder under the root, image shape and class names."""

    title: str
    folder: str
    shape: tuple[int, int, int]
    classes: tuple[str, ...]


SOURCES = {
    "mnist": Source("MNIST", "MNIST", (1, 28, 28), tuple(str(d) for d in range(10))),
    "fashion_mnist": Source(
        "Fashion-MNIST",
        "FashionMNIST",
        (1, 28, 28),
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "cifar10": Source(
        "CIFAR-10",
        "cifar-10-batches-py",
        (3, 32, 32),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
}
NUM_CLASSES = 10  # all three have ten

IDX_FILES = {  # (part, what): file name, magic number
    ("train", "images"): ("train-images-idx3-ubyte", 2051),
    ("train", "labels"): ("train-labels-idx1-ubyte", 2049),
    ("test", "images"): ("t10k-images-idx3-ubyte", 2051),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", 2049),
}
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)
CIFAR_META = "batches.meta"


# --- prepare: reading torchvision's folders ------------------------------------------------------------


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=list(SOURCES), required=True, help="which torchvision dataset")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read CIFAR-10's batches: pickles can run code when read, so only with this flag",
    )


def convert(source: Path, args: argparse.Namespace) -> Prepared:
    """Read the train and test parts of ``args.dataset`` under the torchvision root ``source``."""
    if args.dataset == "cifar10":
        x, y, is_test, classes = read_cifar10(source, args.trust_pickle)
        fmt = "torchvision CIFAR-10 (python pickles)"
    else:
        x, y, is_test = read_idx_dataset(source, SOURCES[args.dataset])
        classes = list(SOURCES[args.dataset].classes)
        fmt = f"torchvision {SOURCES[args.dataset].title} (idx files)"
    n = len(y)
    return Prepared(
        x=x,
        y=y,
        time=torch.arange(n, dtype=torch.float64),  # the source's order; slices are cut at load time
        slice=torch.zeros(n, dtype=torch.long),
        slice_labels=["all"],
        classes=classes,
        source_format=fmt,
        is_test=is_test,
        info={"dataset": args.dataset},
    )


def find_file(folders: Sequence[Path], name: str) -> Path | None:
    """``name`` or ``name.gz`` in the first of ``folders`` that has it."""
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx_dataset(root: Path, source: Source) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST or Fashion-MNIST's four idx files under ``root`` (or ``root`` being the dataset's folder)."""
    folders = [root / source.folder / "raw", root / "raw", root]
    # MNIST and Fashion-MNIST name their files alike: --from MNIST/ must not pass for Fashion-MNIST
    named = root.parent.name if root.name == "raw" else root.name
    other = next((s for s in SOURCES.values() if s.folder == named and s != source), None)
    if other is not None and find_file(folders[:1], IDX_FILES["train", "images"][0]) is None:
        raise DataError(
            root,
            f"{source.title}'s files: --from is the root you give torchvision, holding {source.folder}/raw/",
            f"{other.title}'s folder {named}/",
        )
    files = {key: find_file(folders, name) for key, (name, _) in IDX_FILES.items()}
    missing = [IDX_FILES[key][0] for key, f in files.items() if f is None]
    if missing:
        expected = ", ".join(name for name, _ in IDX_FILES.values())
        raise DataError(
            root,
            f"torchvision's {source.title} files in {root / source.folder / 'raw'}/: {expected} (each may "
            "be .gz). ctsim never downloads them: copy them there, or run "
            f"torchvision.datasets.{source.folder}(ROOT, download=True) on a machine with network access",
            f"no {', '.join(missing)}",
        )
    xs, ys, tests = [], [], []
    for part in ("train", "test"):
        images_file, labels_file = files[part, "images"], files[part, "labels"]
        images = read_idx(images_file, IDX_FILES[part, "images"][1], source.shape[1:])
        labels = read_idx(labels_file, IDX_FILES[part, "labels"][1], ())
        if len(images) != len(labels):
            expected = f"one label per image of {images_file.name} ({len(images):,})"
            raise DataError(labels_file, expected, f"{len(labels):,} labels")
        xs.append(torch.from_numpy(images).unsqueeze(1))
        ys.append(_labels(labels, labels_file))
        tests.append(torch.full((len(labels),), part == "test"))
    return torch.cat(xs), torch.cat(ys), torch.cat(tests)


def read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """An idx file of unsigned bytes: ``magic`` (2051: images, 2049: labels), the sizes, the data."""
    with reading(path):
        raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(path, "a gzip-compressed idx file", f"{type(e).__name__}: {e}") from e
    ndim = 1 + len(item_shape)
    header = 4 + 4 * ndim
    what = f"an idx file of {'images' if ndim > 1 else 'labels'} (magic number {magic}, big-endian)"
    if len(raw) < header:
        raise DataError(path, what, f"{len(raw)} bytes" if raw else "an empty file")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(path, what, f"magic number {found}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != item_shape:
        shape = "×".join(map(str, item_shape))
        raise DataError(path, f"{shape} images", "×".join(map(str, dims[1:])))
    size = header + math.prod(dims)
    if len(raw) != size:
        kind = "truncated" if len(raw) < size else "longer than its header says"
        raise DataError(
            path,
            f"{size:,} bytes ({dims[0]:,} records after a {header}-byte header)",
            f"{len(raw):,} bytes: {kind}",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _labels(labels: np.ndarray | list, where: str | Path) -> torch.Tensor:
    try:
        y = torch.from_numpy(np.asarray(labels).astype(np.int64))
    except (TypeError, ValueError) as e:
        raise DataError(where, f"integer labels in [0, {NUM_CLASSES - 1}]", f"{type(e).__name__}: {e}") from e
    bad = ((y < 0) | (y >= NUM_CLASSES)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{where}: record {i}", f"a label in [0, {NUM_CLASSES - 1}]", f"label {int(y[i])}")
    return y


def read_cifar10(root: Path, trust: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """CIFAR-10's python batches under ``root/cifar-10-batches-py`` (or ``root`` being that folder)."""
    folder = root / SOURCES["cifar10"].folder
    if not folder.is_dir() and (root / CIFAR_META).is_file():
        folder = root
    names = (*CIFAR_TRAIN, *CIFAR_TEST, CIFAR_META)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(
            root,
            f"torchvision's CIFAR-10 files in {root / SOURCES['cifar10'].folder}/: {', '.join(names)} (the "
            "python version, cifar-10-python.tar.gz, unpacked). ctsim never downloads them: copy them there, "
            "or run torchvision.datasets.CIFAR10(ROOT, download=True) on a machine with network access",
            f"no {', '.join(missing)}",
        )
    if not trust:
        raise DataError(
            folder,
            "--trust-pickle to read CIFAR-10's batches: they are pickles, and reading a pickle can run any "
            "code it holds, so ctsim reads them only when you say you trust where they came from (even then "
            "it accepts numpy arrays and nothing else). MNIST and Fashion-MNIST need no trust",
            "pickles and no --trust-pickle",
        )
    classes = _unpickle(folder / CIFAR_META).get("label_names")
    classes = [c.decode("latin1") if isinstance(c, bytes) else c for c in classes or []]
    if len(classes) != NUM_CLASSES or not all(isinstance(c, str) for c in classes):
        raise DataError(folder / CIFAR_META, f"label_names: {NUM_CLASSES} class names", repr(classes)[:80])
    images, labels, tests = [], [], []
    for name in names[:-1]:
        x, y = _cifar_batch(folder / name)
        images.append(x)
        labels.append(y)
        tests.append(torch.full((len(y),), name in CIFAR_TEST))
    return torch.cat(images), torch.cat(labels), torch.cat(tests), classes


def _unpickle(path: Path) -> dict:
    with reading(path), open(path, "rb") as f:
        if f.read(1) == b"":
            raise DataError(path, "a CIFAR-10 pickle", "an empty file")
        f.seek(0)
        try:
            data = ArraysOnly(f, path, "CIFAR-10's batches", encoding="latin1").load()
        except DataError:
            raise
        except Exception as e:  # a truncated or foreign file: any unpickling error
            raise DataError(path, "a CIFAR-10 pickle", f"an unreadable one ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise DataError(path, "a pickled dict", type(data).__name__)
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}


def _cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _unpickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    shape = SOURCES["cifar10"].shape
    row = math.prod(shape)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (row,):
        found = f"{type(data).__name__} {getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}"
        raise DataError(path, f'"data": uint8 of shape (n, {row}), a 3×32×32 image a row', found.strip())
    if not isinstance(labels, list) or len(labels) != len(data):
        expected = f'"labels": a list of one label per row of "data" ({len(data):,})'
        raise DataError(path, expected, repr(labels)[:80])
    x = torch.from_numpy(data.reshape(-1, *shape).copy())  # a row: the R, G, B planes, as torchvision reads
    return x, _labels(labels, path)


VISION = Preparer(
    name="vision_stream",
    help="MNIST, Fashion-MNIST or CIFAR-10 from torchvision's folders, replayed as a drifting stream",
    where=(
        "ctsim never downloads it: --from is the folder you give torchvision as root=, holding MNIST/raw/, "
        "FashionMNIST/raw/ (the idx files) or cifar-10-batches-py/ (the python batches)."
    ),
    convert=convert,
    arguments=_arguments,
    cache_name=lambda args: args.dataset,
    example="ROOT",
)


# --- replay: the drifting stream -----------------------------------------------------------------------

KINDS = {  # an event's own key, and what it must be
    "rotation": ("degrees", "a number of degrees (counter-clockwise)"),
    "brightness": ("delta", "a number in [-1, 1], added to pixels in [0, 1]"),
    "blur": ("sigma", "a number > 0 (pixels)"),
    "class_prior": ("weights", f"{NUM_CLASSES} numbers ≥ 0, not all 0: each class's weight"),
    "label_swap": ("classes", f"two different classes in [0, {NUM_CLASSES - 1}]"),
}
DEFAULT_DRIFT = (
    {"kind": "rotation", "at": 10, "degrees": 45},
    {"kind": "label_swap", "at": 15, "classes": [1, 7]},
)


@dataclass(frozen=True)
class Event:
    """One drift event of the schedule: from slice ``at``, over ``width`` slices (0: at once)."""

    kind: str
    at: int
    width: int
    value: float | tuple[float, ...] | tuple[int, int]

    def share(self, s: int) -> float:
        """How much of the event slice ``s`` has: 0 before ``at``, then rising to 1 over ``width``."""
        return 0.0 if s < self.at else min(1.0, (s - self.at + 1) / max(self.width, 1))

    @property
    def end(self) -> int:
        return self.at + max(self.width, 1) - 1

    def change_point(self, classes: Sequence[str]) -> ChangePoint:
        """The ground truth of this event, with ``what`` in words."""
        v = self.value
        if self.kind == "rotation":
            what = f"rotation: images turn by {v:g}° counter-clockwise"
        elif self.kind == "brightness":
            what = f"brightness: {v:+g} added to every pixel (clamped to [0, 1])"
        elif self.kind == "blur":
            what = f"blur: Gaussian blur of σ = {v:g} pixels"
        elif self.kind == "class_prior":
            what = "class prior: classes weighted " + ", ".join(f"{c} ×{w:g}" for c, w in zip(classes, v))
        else:
            a, b = (str(c) if classes[c] == str(c) else f"{c} ({classes[c]})" for c in v)
            what = f"label swap: classes {a} and {b} swap labels"
        if self.width > 1:
            what += f", growing over {self.width} slices"
            return ChangePoint(self.at, "gradual", what, end_slice=self.end)
        return ChangePoint(self.at, "abrupt", what)


def drift_events(drift: object, slices: int) -> tuple[list[Event], list[Problem]]:
    """The events of ``drift`` (a list of dicts), and a problem for every bad key or value."""
    if not isinstance(drift, Sequence) or isinstance(drift, str):
        return [], [Problem("drift", drift, "a list of events such as {kind: rotation, at: 10, degrees: 45}")]
    events, problems = [], []
    for i, item in enumerate(drift):
        event, found = _event(item, f"drift.{i}", slices)
        problems += found
        if event is not None:
            events.append(event)
    return events, problems


def _event(item: object, key: str, slices: int) -> tuple[Event | None, list[Problem]]:
    if not isinstance(item, Mapping):
        return None, [Problem(key, item, "an event such as {kind: rotation, at: 10, degrees: 45}")]
    kind = item.get("kind")
    if kind not in KINDS:
        return None, [Problem(f"{key}.kind", kind, f"one of {list(KINDS)}")]
    own, expected = KINDS[kind]
    at, width, value = item.get("at"), item.get("width", 0), item.get(own)
    allowed = ["kind", "at", "width", own]
    problems = [
        Problem(f"{key}.{k}", item[k], f"only the keys of a {kind} event: {allowed}")
        for k in item
        if k not in allowed
    ]
    problems += [
        check(f"{key}.at", at, is_int(at) and 1 <= at < slices, f"a slice in [1, {slices - 1}]"),
        check(f"{key}.width", width, is_int(width) and width >= 0, "an integer ≥ 0 (0: abrupt)"),
        check(f"{key}.{own}", value, _valid(kind, value), expected),
    ]
    problems = [p for p in problems if p is not None]
    if not problems and at + max(width, 1) - 1 >= slices:
        problems.append(
            Problem(f"{key}.width", width, f"at most {slices - at}: the last slice is {slices - 1}")
        )
    if problems:
        return None, problems
    if kind == "class_prior":
        value = tuple(float(w) for w in value)
    elif kind == "label_swap":
        value = (int(value[0]), int(value[1]))
    else:
        value = float(value)
    return Event(kind, at, width, value), []


def _valid(kind: str, value: object) -> bool:
    if kind == "rotation":
        return is_number(value)
    if kind == "brightness":
        return is_number(value) and -1 <= value <= 1
    if kind == "blur":
        return is_number(value) and value > 0
    if kind == "class_prior":
        ok = isinstance(value, Sequence) and len(value) == NUM_CLASSES
        return ok and all(is_number(w) and w >= 0 for w in value) and sum(value) > 0
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    return ok and all(is_int(c) and 0 <= c < NUM_CLASSES for c in value) and value[0] != value[1]


class VisionStream(PreparedDataset):
    """MNIST, Fashion-MNIST or CIFAR-10 as a stream of ``slices`` slices with a drift schedule.

    Replays the cache ``prepare vision_stream --dataset NAME`` writes (see the module docstring).

    Args:
        name: ``mnist``, ``fashion_mnist`` or ``cifar10``: the cache ``<root>/<name>/`` to replay.
        root: the data root holding the prepared cache.
        size: the share of the samples to replay, in (0, 1], drawn with ``seed``.
        seed: draws that share, which samples go into which slice, and gradual label swaps.
        slices: how many equal time slices the samples are dealt into (≥ 2).
        drift: the events, each a dict with ``kind``, ``at``, optional ``width`` and its own key; ``[]``
            for a stream without drift.
    """

    name = "vision_stream"
    preparer = VISION
    model = "cnn"

    def __init__(
        self,
        name: str = "mnist",
        root: str = "datasets",
        size: float = 1.0,
        seed: int = 0,
        slices: int = 20,
        drift: Sequence[Mapping[str, object]] = DEFAULT_DRIFT,
    ):
        enough = is_int(slices) and slices >= 2
        events, found = drift_events(drift, slices) if enough else ([], [])
        ConfigError.raise_all(
            [one_of("name", name, SOURCES), check("slices", slices, enough, "an integer ≥ 2"), *found]
        )
        super().__init__(root, size, seed)
        self.source, self.slices, self.events = SOURCES[name], slices, events
        self.source_name = name
        self.change_points = tuple(e.change_point(self.source.classes) for e in events)

    @property
    def cache_name(self) -> str:
        return self.source_name

    def prepare_command(self) -> str:
        trust = " --trust-pickle" if self.source_name == "cifar10" else ""
        return self.preparer.command(self.root, f" --dataset {self.source_name}{trust}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.source.shape

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    @property
    def slice_labels(self) -> list[str]:
        digits = len(str(self.slices - 1))
        return [f"s{s:0{digits}d}" for s in range(self.slices)]

    def load(self) -> Samples:
        ConfigError.raise_all(self.path_problems())
        data, _ = read_cache(self.folder)
        keep = subset(data["slice"], self.size, self.seed)
        if keep is not None:
            data = {k: v[keep] for k, v in data.items()}
        x, y = data["x"], data["y"].long()
        is_test = data.get("is_test", torch.zeros(len(y), dtype=torch.bool)).to(torch.bool)
        rows, slices, tests = self.deal(y, is_test)
        y = self.swap_labels(y[rows], slices)
        fraction = _place_in_slice(slices) if len(slices) else torch.zeros(0, dtype=torch.float64)
        return Samples(
            x=self.images(x[rows], slices),
            y=y,
            time=slices.to(torch.float64) + fraction,
            slice=slices,
            slice_labels=self.slice_labels,
            num_classes=NUM_CLASSES,
            change_points=list(self.change_points),
            is_test=tests,
        )

    def class_weights(self) -> torch.Tensor:
        """Per slice, each class's weight (``(slices, classes)``): 1 until ``class_prior`` events move it."""
        weights = torch.ones(self.slices, NUM_CLASSES, dtype=torch.float64)
        for e in sorted((e for e in self.events if e.kind == "class_prior"), key=lambda e: e.at):
            share = torch.tensor([e.share(s) for s in range(self.slices)], dtype=torch.float64)[:, None]
            weights = weights + share * (torch.tensor(e.value, dtype=torch.float64) - weights)
        return weights

    def deal(self, y: torch.Tensor, is_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows dealt into slices (ordered by slice, shuffled within), their slices and test flags.

        The train and test parts are dealt separately, with the same class mix per slice.
        """
        g = torch.Generator().manual_seed(self.seed)
        weights = self.class_weights()
        rows, slices = [], []
        for part in (~is_test, is_test):
            pool = part.nonzero().squeeze(1)
            if len(pool) == 0:
                continue
            counts = slice_counts(torch.bincount(y[pool], minlength=NUM_CLASSES), weights)
            self._check_counts(counts, test=bool(is_test[pool[0]]))
            for c in range(NUM_CLASSES):
                members = pool[y[pool] == c]
                members = members[torch.randperm(len(members), generator=g)]
                rows.append(members[: int(counts[:, c].sum())])
                slices.append(torch.repeat_interleave(torch.arange(self.slices), counts[:, c]))
        rows, slices = torch.cat(rows), torch.cat(slices)
        order = torch.randperm(len(rows), generator=g)  # classes mixed within a slice
        order = order[torch.argsort(slices[order], stable=True)]
        return rows[order], slices[order], is_test[rows[order]]

    def _check_counts(self, counts: torch.Tensor, test: bool) -> None:
        empty = (counts.sum(1) == 0).nonzero()
        if len(empty):
            part = "test" if test else "train"
            expected = (
                f"fewer slices or a larger dataset.size (now {self.size:g}): slice {int(empty[0])} would "
                f"hold none of the {int(counts.sum()):,} samples dealt from the source's {part} part"
            )
            raise ConfigError([Problem("dataset.slices", self.slices, expected)])

    def swap_labels(self, y: torch.Tensor, slices: torch.Tensor) -> torch.Tensor:
        """``y`` with every ``label_swap`` event applied, in order (a share of each class while gradual)."""
        g = torch.Generator().manual_seed(self.seed + 1)
        for e in self.events:
            if e.kind != "label_swap":
                continue
            share = torch.tensor([e.share(s) for s in range(self.slices)], dtype=torch.float64)[slices]
            picked = torch.rand(len(y), generator=g, dtype=torch.float64) < share
            a, b = e.value
            y = torch.where(picked & (y == a), b, torch.where(picked & (y == b), a, y))
        return y

    def images(self, x: torch.Tensor, slices: torch.Tensor) -> torch.Tensor:
        """uint8 images, slice by slice (``slices`` sorted), as floats in [0, 1], transformed per slice."""
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        out = torch.empty(x.shape, dtype=torch.float32)
        bounds = torch.searchsorted(slices, torch.arange(self.slices + 1))
        for s in range(self.slices):
            lo, hi = int(bounds[s]), int(bounds[s + 1])
            img = x[lo:hi].to(torch.float32) / 255.0
            degrees = sum(e.value * e.share(s) for e in self.events if e.kind == "rotation")
            if degrees and hi > lo:
                img = F.rotate(img, degrees, interpolation=InterpolationMode.BILINEAR)
            sigma = math.sqrt(sum((e.value * e.share(s)) ** 2 for e in self.events if e.kind == "blur"))
            if sigma > 0 and hi > lo:
                img = F.gaussian_blur(img, kernel_size=_kernel(sigma, min(img.shape[-2:])), sigma=sigma)
            delta = sum(e.value * e.share(s) for e in self.events if e.kind == "brightness")
            if delta:
                img = (img + delta).clamp(0, 1)
            out[lo:hi] = img
        return out


def slice_counts(class_counts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """How many samples of each class go into each slice (``(slices, classes)``, integers).

    Slice ``s`` gets the mix ``weights[s] × class_counts`` (normalised); every slice holds the same
    number of samples, as many as the classes allow without reusing any sample.

    >>> slice_counts(torch.tensor([6, 6]), torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])).tolist()
    [[2, 2], [2, 2], [2, 2]]
    >>> slice_counts(torch.tensor([6, 6]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])).tolist()
    [[2, 2], [4, 0]]
    """
    n = class_counts.to(torch.float64)
    mix = weights * n
    mix = mix / mix.sum(1, keepdim=True).clamp_min(1e-300)  # a slice whose classes are all absent: none
    need = mix.sum(0)  # per class, in units of one slice's size
    per_slice = min(
        [float(n.sum()) / len(weights)] + [float(n[c] / need[c]) for c in range(len(n)) if need[c] > 0]
    )
    exact = per_slice * mix
    counts = exact.floor().long()
    for c in range(len(n)):  # hand out what rounding left: largest remainders, then the smallest slices
        extra = min(int(class_counts[c]), round(float(exact[:, c].sum()))) - int(counts[:, c].sum())
        if extra > 0:
            order = torch.argsort(counts.sum(1), stable=True)
            order = order[torch.argsort(counts[order, c] - exact[order, c], stable=True)]
            counts[order[:extra], c] += 1
    return counts


def _place_in_slice(slices: torch.Tensor) -> torch.Tensor:
    """Each row's place within its slice (rows sorted by slice), as a fraction in [0, 1)."""
    counts = torch.bincount(slices)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(slices)) - starts[slices]
    return rank.to(torch.float64) / counts[slices].to(torch.float64)


def _kernel(sigma: float, side: int) -> int:
    """An odd Gaussian kernel covering ±3σ, no larger than the image allows (reflect padding)."""
    k = 2 * math.ceil(3 * sigma) + 1
    largest = side if side % 2 else side - 1
    return min(k, largest)
