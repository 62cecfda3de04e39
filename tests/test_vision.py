"""Image streams from torchvision's folders: fixtures written in torchvision's own on-disk formats (MNIST's
idx files, CIFAR-10's Python 2 pickles), prepared through the real command, replayed with a drift schedule
whose change points are checked against the images and labels themselves."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from ctsim.datasets import VisionStream
from ctsim.datasets.prepare import main as prepare
from ctsim.datasets.prepared import read_cache
from ctsim.validation import ConfigError

from .conftest import REPO, build, cli, run, small

SIDE = 28


def digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` tiny 28×28 uint8 "digits" and their classes, easy to learn: class c is a patch of stripes,
    horizontal for c < 5 and vertical from 5 on (so a quarter turn makes c look like c ± 5), as bright
    as c % 5 says, at a random place over faint noise."""
    g = np.random.default_rng(seed)
    y = np.arange(n) % 10
    g.shuffle(y)
    x = g.integers(0, 30, size=(n, SIDE, SIDE)).astype(np.uint8)
    for i, c in enumerate(y):
        top, left = g.integers(2, 9, size=2)
        patch = np.zeros((16, 16), dtype=bool)
        patch[::3] = True
        if c >= 5:
            patch = patch.T
        x[i, top : top + 16, left : left + 16][patch] = 60 + 45 * (c % 5) + g.integers(0, 10)
    return x, y


def idx(data: np.ndarray, magic: int) -> bytes:
    """``data`` as an idx file of unsigned bytes: big-endian magic number, sizes, then the bytes."""
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    return header + data.astype(np.uint8).tobytes()


def write_mnist(root: Path, folder: str, train_x, train_y, test_x, test_y, gz: bool = False) -> Path:
    """torchvision's ``<root>/<folder>/raw/`` with its four idx files (``.gz`` if ``gz``)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for name, data, magic in (
        ("train-images-idx3-ubyte", train_x, 2051),
        ("train-labels-idx1-ubyte", train_y, 2049),
        ("t10k-images-idx3-ubyte", test_x, 2051),
        ("t10k-labels-idx1-ubyte", test_y, 2049),
    ):
        content = idx(np.asarray(data), magic)
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (raw / name).write_bytes(content)
    return root


def py2_pickle(obj: object) -> bytes:
    """``obj`` pickled as CIFAR-10's batches are: Python 2's cPickle, protocol 2. Byte strings are Python 2
    ``str`` (SHORT_BINSTRING / BINSTRING) and numpy arrays go through ``numpy.core.multiarray._reconstruct``,
    opcode for opcode, so the reader meets what the real files hold (Python 3's pickle cannot write it)."""
    out = bytearray(b"\x80\x02")

    def put(o: object) -> None:
        if isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                put(k)
                put(v)
            out.extend(b"u")
        elif isinstance(o, (list, tuple)):
            out.extend(b"](" if isinstance(o, list) else b"(")
            for v in o:
                put(v)
            out.extend(b"e" if isinstance(o, list) else b"t")
        elif isinstance(o, bytes):
            out.extend((b"U" + bytes([len(o)]) if len(o) < 256 else b"T" + len(o).to_bytes(4, "little")) + o)
        elif o is None:
            out.extend(b"N")
        elif isinstance(o, int):
            out.extend(
                b"M" + o.to_bytes(2, "little")
                if 0 <= o < 65536
                else b"J" + o.to_bytes(4, "little", signed=True)
            )
        elif isinstance(o, np.ndarray):
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            out.extend(b"(K\x00tU\x01b\x87R")  # _reconstruct(ndarray, (0,), b"b")
            out.extend(b"(K\x01")  # the array's state: version, shape, dtype, fortran order, bytes
            put(tuple(int(d) for d in o.shape))
            out.extend(b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R")  # dtype("u1", 0, 1)
            out.extend(b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")  # its state
            out.extend(b"\x89")
            put(np.ascontiguousarray(o).tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(o))

    put(obj)
    return bytes(out + b".")


CIFAR_NAMES = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]


def write_cifar10(root: Path, x: np.ndarray, y: np.ndarray, test: int) -> Path:
    """torchvision's ``<root>/cifar-10-batches-py/``: five training batches, ``test_batch`` (the last
    ``test`` images) and ``batches.meta``, each a Python 2 pickle of a dict with byte-string keys."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows = x.reshape(len(x), -1)  # a row is the R, G, B planes, 32×32 each
    train = np.array_split(np.arange(len(x) - test), 5)
    batches = [(f"data_batch_{i + 1}", part) for i, part in enumerate(train)]
    for name, part in [*batches, ("test_batch", np.arange(len(x) - test, len(x)))]:
        batch = {
            b"batch_label": f"{name} of the fixture".encode(),
            b"labels": [int(v) for v in y[part]],
            b"data": rows[part],
            b"filenames": [f"img_{i}.png".encode() for i in part],
        }
        (folder / name).write_bytes(py2_pickle(batch))
    meta = {b"num_cases_per_batch": len(train[0]), b"label_names": CIFAR_NAMES, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return root


# --- fixtures: torchvision folders, and caches prepared from them ----------------------------------------

TRAIN, TEST = 480, 120  # MNIST fixture: 600 digits, the last 120 its test part


@pytest.fixture(scope="module")
def tv_root(tmp_path_factory) -> Path:
    """A torchvision root holding MNIST (plain idx files), Fashion-MNIST (.gz) and CIFAR-10 fixtures."""
    root = tmp_path_factory.mktemp("torchvision")
    x, y = digits(TRAIN + TEST, seed=0)
    write_mnist(root, "MNIST", x[:TRAIN], y[:TRAIN], x[TRAIN:], y[TRAIN:])
    write_mnist(root, "FashionMNIST", x[:TRAIN], y[:TRAIN], x[TRAIN:], y[TRAIN:], gz=True)
    g = np.random.default_rng(1)
    write_cifar10(root, g.integers(0, 256, (70, 3, 32, 32), dtype=np.uint8), g.integers(0, 10, 70), test=20)
    return root


@pytest.fixture(scope="module")
def data_root(tv_root, tmp_path_factory) -> Path:
    """A data root with MNIST prepared in-process (the subprocess test prepares its own)."""
    root = tmp_path_factory.mktemp("datasets")
    assert (
        prepare(
            ["prepare", "vision_stream", "--from", str(tv_root), "--dataset", "mnist", "--root", str(root)]
        )
        == 0
    )
    return root


def prepare_args(tv_root: Path, root: Path, name: str, *extra: str) -> list[str]:
    return [
        "prepare",
        "vision_stream",
        "--from",
        str(tv_root),
        "--dataset",
        name,
        "--root",
        str(root),
        *extra,
    ]


def stream(root: Path, drift: list[dict], slices: int = 4, **kwargs) -> object:
    return VisionStream(name="mnist", root=str(root), slices=slices, drift=drift, **kwargs).load()


# --- prepare: torchvision's formats ----------------------------------------------------------------------


def test_prepare_mnist_through_the_command_line_reads_what_torchvision_reads(tv_root, tmp_path):
    import torchvision

    command = ["prepare", "vision_stream", "--from", str(tv_root), "--dataset", "mnist"]  # default --root
    done = subprocess.run(
        [sys.executable, "-m", "ctsim.datasets", *command],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "mnist: 600 samples" in done.stdout and "480 train, 120 test" in done.stdout
    data, manifest = read_cache(tmp_path / "datasets" / "mnist")  # the default root, under the cwd
    assert manifest["input_shape"] == [1, 28, 28] and manifest["x_dtype"] == "uint8"
    assert manifest["classes"] == [str(d) for d in range(10)] and manifest["info"] == {"dataset": "mnist"}
    # torchvision's own reader, offline, on the same folder: the same pixels, labels and split
    tv_train = torchvision.datasets.MNIST(str(tv_root), train=True, download=False)
    tv_test = torchvision.datasets.MNIST(str(tv_root), train=False, download=False)
    assert torch.equal(data["x"][:, 0], torch.cat([tv_train.data, tv_test.data]))
    assert torch.equal(data["y"], torch.cat([tv_train.targets, tv_test.targets]))
    assert data["is_test"].tolist() == [False] * TRAIN + [True] * TEST


def test_fashion_mnist_reads_gz_files_and_names_its_classes(tv_root, data_root, tmp_path, capsys):
    assert prepare(prepare_args(tv_root, tmp_path, "fashion_mnist")) == 0
    fashion, manifest = read_cache(tmp_path / "fashion_mnist")
    mnist, _ = read_cache(data_root / "mnist")
    assert torch.equal(fashion["x"], mnist["x"]) and torch.equal(fashion["y"], mnist["y"])  # same content
    assert manifest["classes"][0] == "T-shirt/top" and manifest["classes"][9] == "Ankle boot"


def test_cifar10_needs_trust_pickle_and_then_reads_what_torchvision_reads(
    tv_root, tmp_path, capsys, monkeypatch
):
    import torchvision
    import torchvision.datasets.cifar as tv_cifar

    assert prepare(prepare_args(tv_root, tmp_path, "cifar10")) == 2
    err = capsys.readouterr().err
    assert (
        "--trust-pickle" in err
        and "can run any code" in err
        and "MNIST and Fashion-MNIST need no trust" in err
    )
    assert not (tmp_path / "cifar10").exists()

    assert prepare(prepare_args(tv_root, tmp_path, "cifar10", "--trust-pickle")) == 0
    data, manifest = read_cache(tmp_path / "cifar10")
    assert manifest["input_shape"] == [3, 32, 32] and manifest["split"] == {"train": 50, "test": 20}
    assert manifest["classes"] == [n.decode() for n in CIFAR_NAMES]
    # torchvision's reader on the same folder (its md5 checks are for the real files, not the fixture)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    parts = [torchvision.datasets.CIFAR10(str(tv_root), train=t, download=False) for t in (True, False)]
    assert torch.equal(
        data["x"], torch.from_numpy(np.concatenate([p.data for p in parts])).permute(0, 3, 1, 2)
    )
    assert data["y"].tolist() == parts[0].targets + parts[1].targets
    assert parts[0].classes == manifest["classes"]


def test_a_pickle_asking_for_any_other_global_is_refused_even_with_trust(tv_root, tmp_path, capsys):
    source = tmp_path / "tv"
    write_cifar10(source, np.zeros((10, 3, 32, 32), dtype=np.uint8), np.zeros(10, dtype=int), test=5)
    marker = tmp_path / "pwned"
    # what a malicious "batch" holds: os.system("touch <marker>") when unpickled
    evil = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    (source / "cifar-10-batches-py" / "data_batch_3").write_bytes(evil)
    assert prepare(prepare_args(source, tmp_path / "d", "cifar10", "--trust-pickle")) == 2
    err = capsys.readouterr().err
    assert "data_batch_3" in err and "os.system" in err and "refuses" in err
    assert not marker.exists() and not (tmp_path / "d" / "cifar10").exists()


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_files_say_what_is_expected_where_offline(name, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare(prepare_args(empty, tmp_path / "d", name, "--trust-pickle")) == 2
    err = capsys.readouterr().err
    folder = {"mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw", "cifar10": "cifar-10-batches-py"}[
        name
    ]
    first = {"mnist": "train-images-idx3-ubyte", "fashion_mnist": "train-images-idx3-ubyte"}.get(
        name, "data_batch_1"
    )
    assert f"{empty / folder}/" in err and first in err and "never downloads" in err
    assert "nothing was written" in err and not (tmp_path / "d").exists()


@pytest.mark.parametrize("under", ["MNIST", "MNIST/raw"])
def test_the_mnist_folder_is_not_read_as_fashion_mnist(under, tv_root, tmp_path, capsys):
    """Both name their files train-images-idx3-ubyte...: pointing at MNIST's folder must not give digits
    labelled as clothes."""
    assert prepare(prepare_args(tv_root / under, tmp_path / "d", "fashion_mnist")) == 2
    err = capsys.readouterr().err
    assert "Fashion-MNIST's files" in err and "FashionMNIST/raw/" in err and "MNIST's folder MNIST/" in err
    assert not (tmp_path / "d").exists()
    assert prepare(prepare_args(tv_root / under, tmp_path / "d", "mnist")) == 0  # its own folder is fine


def bad_mnist(tmp_path: Path, case: str) -> tuple[Path, str]:
    """An MNIST folder with one bad file; what the error must say."""
    x, y = digits(40, seed=2)
    raw_y = y.copy()
    if case == "label":
        raw_y[7] = 11
    root = write_mnist(tmp_path / "tv", "MNIST", x[:30], raw_y[:30], x[30:], y[30:])
    raw = root / "MNIST" / "raw"
    images = raw / "train-images-idx3-ubyte"
    if case == "truncated":
        images.write_bytes(images.read_bytes()[:-100])
        return root, "truncated"
    if case == "magic":
        (raw / "t10k-labels-idx1-ubyte").write_bytes(idx(y[30:], 2051))
        return root, "magic number 2049"
    if case == "size":
        images.write_bytes(idx(np.zeros((30, 32, 32), dtype=np.uint8), 2051))
        return root, "28×28 images"
    if case == "empty":
        images.write_bytes(b"")
        return root, "an empty file"
    if case == "count":
        (raw / "train-labels-idx1-ubyte").write_bytes(idx(y[:29], 2049))
        return root, "one label per image"
    if case == "gz":
        (raw / "t10k-images-idx3-ubyte").unlink()
        (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
        return root, "gzip"
    return root, "record 7"


@pytest.mark.parametrize("case", ["truncated", "magic", "size", "empty", "count", "gz", "label"])
def test_bad_idx_files_stop_prepare_naming_the_file(case, tmp_path, capsys):
    root, expected = bad_mnist(tmp_path, case)
    assert prepare(prepare_args(root, tmp_path / "d", "mnist")) == 2
    err = capsys.readouterr().err
    assert expected in err and str(root / "MNIST" / "raw") in err, err
    assert not (tmp_path / "d" / "mnist").exists()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("label", "data_batch_2: record 3: expected a label in [0, 9], found label 10"),
        ("shape", 'data_batch_2: expected "data": uint8 of shape (n, 3072)'),
        ("truncated", "data_batch_2: expected a CIFAR-10 pickle, found an unreadable one"),
    ],
)
def test_bad_cifar_batches_stop_prepare_naming_the_file(case, expected, tmp_path, capsys):
    x, y = np.zeros((10, 3, 32, 32), dtype=np.uint8), np.arange(10) % 10
    root = write_cifar10(tmp_path / "tv", x, y, test=5)
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    if case == "truncated":
        batch.write_bytes(batch.read_bytes()[:-40])
    else:
        data = np.zeros((4, 3072 if case == "label" else 1024), dtype=np.uint8)
        batch.write_bytes(py2_pickle({b"data": data, b"labels": [1, 2, 3, 10 if case == "label" else 4]}))
    assert prepare(prepare_args(root, tmp_path / "d", "cifar10", "--trust-pickle")) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not (tmp_path / "d" / "cifar10").exists()


# --- replay: the drift schedule -------------------------------------------------------------------------


def test_config_names_every_bad_event_key():
    bad = [
        {"kind": "rotation", "at": 9, "degrees": "a lot"},
        {"kind": "spin", "at": 1},
        {"kind": "label_swap", "at": 2, "classes": [3, 3], "colour": "red"},
        {"kind": "blur", "at": 3, "sigma": 1.0, "width": 3},
        {"kind": "class_prior", "at": 1, "weights": [1, 2]},
    ]
    with pytest.raises(ConfigError) as e:
        VisionStream(slices=5, drift=bad)
    keys = {p.key for p in e.value.problems}
    assert keys == {
        "drift.0.at",
        "drift.0.degrees",
        "drift.1.kind",
        "drift.2.classes",
        "drift.2.colour",
        "drift.3.width",
        "drift.4.weights",
    }
    assert "a slice in [1, 4]" in str(e.value) and "one of ['rotation'" in str(e.value)
    with pytest.raises(
        ConfigError, match=re.escape("name='svhn': expected one of ['mnist', 'fashion_mnist', 'cifar10']")
    ):
        VisionStream(name="svhn")
    with pytest.raises(ConfigError, match="slices=1: expected an integer ≥ 2"):
        VisionStream(slices=1, drift=[])


def test_the_yaml_instantiates_with_its_documented_schedule(tmp_path):
    with pytest.raises(ConfigError) as e:  # no cache yet: the error says how to prepare it
        build(small(tmp_path, "dataset=vision_stream", "dataset.name=cifar10", "model=cnn"))
    text = str(e.value)
    assert f"no prepared cache at {tmp_path / 'datasets' / 'cifar10'}" in text
    command = "ctsim datasets prepare vision_stream --from ROOT --dataset cifar10 --trust-pickle"
    assert f"{command} --root {tmp_path / 'datasets'}" in text and "cifar-10-batches-py/" in text
    with pytest.raises(ConfigError, match=re.escape("dataset.drift.0.at=10: expected a slice in [1, 3]")):
        build(small(tmp_path, "dataset=vision_stream", "dataset.slices=4", "model=cnn"))
    settings = yaml.safe_load((REPO / "conf" / "dataset" / "vision_stream.yaml").read_text())
    ds = VisionStream(**{k: v for k, v in settings.items() if k != "_target_"})
    assert ds.slice_labels[0] == "s00" and len(ds.slice_labels) == 20 and ds.input_shape == (1, 28, 28)
    assert [(c.slice, c.kind) for c in ds.change_points] == [(10, "abrupt"), (15, "abrupt")]
    assert "45°" in ds.change_points[0].what and "classes 1 and 7 swap labels" in ds.change_points[1].what


def test_slices_are_equal_use_every_sample_once_and_keep_the_source_split(data_root):
    s = stream(data_root, drift=[])
    assert s.slice_labels == ["s0", "s1", "s2", "s3"] and s.num_classes == 10 and s.change_points == []
    assert len(s.y) == TRAIN + TEST and s.x.dtype == torch.float32 and s.x.shape[1:] == (1, 28, 28)
    assert torch.bincount(s.slice[~s.is_test]).tolist() == [TRAIN // 4] * 4
    assert torch.bincount(s.slice[s.is_test]).tolist() == [TEST // 4] * 4
    # every source digit once, its label kept, its test part still test
    data, _ = read_cache(data_root / "mnist")
    source = {
        (img.numpy().tobytes(), int(y), bool(t)) for img, y, t in zip(data["x"], data["y"], data["is_test"])
    }
    replayed = {
        ((x * 255).round().to(torch.uint8).numpy().tobytes(), int(y), bool(t))
        for x, y, t in zip(s.x, s.y, s.is_test)
    }
    assert replayed == source
    # time is the slice plus the place within it: in order, within [slice, slice + 1)
    assert torch.equal(s.time.floor().long(), s.slice) and bool((s.time.diff() > 0).all())
    assert len(set(s.y[~s.is_test & (s.slice == 0)][:20].tolist())) >= 6  # classes mixed within a slice
    again = stream(data_root, drift=[])
    assert torch.equal(again.x, s.x) and torch.equal(again.y, s.y)
    other = stream(data_root, drift=[], seed=1)
    assert not torch.equal(other.y, s.y)


def test_rotation_turns_the_images_from_the_change_point_on(data_root):
    plain = stream(data_root, drift=[])
    # abrupt: a quarter turn from slice 1; gradual: half a turn over slices 2-3 (90° at 2, 180° at 3)
    turned = stream(data_root, drift=[{"kind": "rotation", "at": 1, "degrees": 90}])
    ramp = stream(data_root, drift=[{"kind": "rotation", "at": 2, "degrees": 180, "width": 2}])
    assert torch.equal(turned.y, plain.y) and torch.equal(turned.slice, plain.slice)
    before = plain.slice < 1
    assert torch.equal(turned.x[before], plain.x[before])
    assert torch.allclose(turned.x[~before], torch.rot90(plain.x[~before], 1, dims=(2, 3)), atol=1e-6)
    assert not torch.allclose(turned.x[~before], plain.x[~before])
    for s, quarter_turns in ((0, 0), (1, 0), (2, 1), (3, 2)):
        rows = ramp.slice == s
        assert torch.allclose(ramp.x[rows], torch.rot90(plain.x[rows], quarter_turns, dims=(2, 3)), atol=1e-5)
    assert ramp.change_points[0].kind == "gradual" and ramp.change_points[0].end_slice == 3
    assert turned.change_points[0].slice == 1 and turned.change_points[0].kind == "abrupt"


def test_brightness_and_blur_change_the_pixels_as_documented(data_root):
    plain = stream(data_root, drift=[])
    bright = stream(data_root, drift=[{"kind": "brightness", "at": 2, "delta": 0.5}])
    blurred = stream(data_root, drift=[{"kind": "blur", "at": 3, "sigma": 1.5}])
    after = plain.slice >= 2
    assert torch.equal(bright.x[~after], plain.x[~after])
    assert torch.allclose(bright.x[after], (plain.x[after] + 0.5).clamp(0, 1))

    def roughness(x: torch.Tensor) -> float:  # mean absolute difference between neighbouring pixels
        return float((x[..., 1:] - x[..., :-1]).abs().mean())

    last = plain.slice == 3
    assert torch.equal(blurred.x[~last], plain.x[~last])
    assert roughness(blurred.x[last]) < 0.5 * roughness(plain.x[last])
    assert abs(float(blurred.x[last].mean() - plain.x[last].mean())) < 0.01  # blurring keeps the light
    assert blurred.change_points[0].what == "blur: Gaussian blur of σ = 1.5 pixels"


def test_label_swap_swaps_exactly_the_named_classes_from_the_change_point(data_root):
    plain = stream(data_root, drift=[])
    swapped = stream(data_root, drift=[{"kind": "label_swap", "at": 2, "classes": [3, 5]}])
    assert torch.equal(swapped.x, plain.x)
    after = plain.slice >= 2
    expected = torch.where(plain.y == 3, 5, torch.where(plain.y == 5, 3, plain.y))
    assert torch.equal(swapped.y[after], expected[after]) and torch.equal(swapped.y[~after], plain.y[~after])
    assert int(((plain.y == 3) & after).sum()) > 0
    # gradual over 2 slices: half of each class swapped in slice 2, all of them in slice 3
    ramp = stream(data_root, drift=[{"kind": "label_swap", "at": 2, "classes": [3, 5], "width": 2}])
    changed = ramp.y != plain.y
    assert not bool(changed[plain.slice < 2].any()) and torch.equal(
        ramp.y[plain.slice == 3], expected[plain.slice == 3]
    )
    in_two = (plain.slice == 2) & ((plain.y == 3) | (plain.y == 5))
    assert 0.2 < float(changed[in_two].float().mean()) < 0.8
    assert not bool(changed[~((plain.y == 3) | (plain.y == 5))].any())


def test_class_prior_moves_the_class_balance_between_slices(data_root):
    weights = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    s = stream(data_root, drift=[{"kind": "class_prior", "at": 2, "weights": weights}])
    for part in (~s.is_test, s.is_test):
        early, late = part & (s.slice < 2), part & (s.slice >= 2)
        assert set(s.y[early].tolist()) == set(range(10))
        assert set(s.y[late].tolist()) == {5, 6, 7, 8, 9}
        sizes = torch.bincount(s.slice[part]).tolist()
        assert (
            max(sizes) - min(sizes) <= 1 and len(sizes) == 4
        )  # equal slices, smaller than without the shift
    assert len(s.y) < TRAIN + TEST
    images = {x.numpy().tobytes() for x in s.x}
    assert len(images) == len(s.x)  # no digit dealt twice
    assert s.change_points[0].what.startswith("class prior: classes weighted 0 ×0, 1 ×0")


def test_size_keeps_a_share_before_slicing(data_root):
    half = stream(data_root, drift=[], size=0.5)
    assert len(half.y) == (TRAIN + TEST) // 2 and int(half.is_test.sum()) > 0
    with pytest.raises(
        ConfigError, match=re.escape("dataset.slices=40: expected fewer slices or a larger dataset.size")
    ):
        stream(data_root, drift=[], size=0.1, slices=40)


def test_a_run_replays_the_stream_and_scores_triggers_against_its_change_points(data_root, tmp_path):
    overrides = small(
        tmp_path,
        "dataset=vision_stream",
        f"dataset.root={data_root}",
        "dataset.slices=4",
        "dataset.drift=[{kind: rotation, at: 2, degrees: 90}]",
        "model=cnn",
        "model.channels=8",
        "model.hidden=32",
        "optimizer=adam",
        "optimizer.lr=0.01",
        "train.epochs=5",
        "train.batch_size=16",
        "population.variants={}",
    )
    outcome = run(overrides, tmp_path / "out")
    acc = outcome.tables["evals"].filter(pl.col("metric") == "accuracy")
    assert sorted(set(acc["slice_label"].to_list())) == ["s0", "s1", "s2", "s3"]
    assert set(acc["n"].to_list()) == {TEST // 4}  # the source's test digits, not a drawn 10%
    quality = outcome.tables["quality"].row(0, named=True)
    assert quality["change_points"] == 1 and quality["detected"] == 1 and quality["mean_delay_slices"] == 0

    def mean(generation: int, slices: list[int]) -> float:
        rows = acc.filter((pl.col("generation") == generation) & pl.col("slice").is_in(slices))
        return float(rows["value"].mean())

    # a quarter turn makes horizontal stripes (classes 0-4) vertical (5-9): the model trained before the
    # change fails after it, and the one trained after it does better there
    assert mean(1, [0, 1]) > mean(1, [2, 3]) + 0.15
    assert mean(3, [2, 3]) > mean(1, [2, 3]) + 0.15
    assert "rotation: images turn by 90°" in (tmp_path / "out" / "summary.md").read_text()


def test_the_ctsim_command_says_how_to_prepare_a_missing_cache(tmp_path):
    done = cli(
        ["dataset=vision_stream", "model=cnn", f"dataset.root={tmp_path}", "dataset.name=fashion_mnist"],
        tmp_path,
    )
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "ctsim datasets prepare vision_stream --from ROOT --dataset fashion_mnist" in text
    assert "--trust-pickle" not in text.split("--dataset fashion_mnist")[1].splitlines()[0]
