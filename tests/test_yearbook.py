"""Yearbook from its three published formats: one small dataset written as Wild-Time's pickle, as the
portraits folder and as Modyn's .bin files, prepared through the real command, gives one cache; bad input
of every kind stops ``prepare`` with the file and what was expected, and writes nothing."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ctsim.datasets import Yearbook
from ctsim.datasets.prepare import main as prepare
from ctsim.datasets.prepared import read_cache
from ctsim.stream import StreamSpec
from ctsim.validation import ConfigError

from .conftest import REPO, build, run, small

YEARS = (1925, 1930, 1931, 1950, 2013)  # 1925 is outside Yearbook's 1930-2013: left out


def make_content(seed: int = 0) -> list[dict]:
    """Per year: grey 32×32 uint8 portraits, labels (M=0, F=1) and Wild-Time's train/test parts."""
    g = np.random.default_rng(seed)
    content = []
    for year in YEARS:
        n = int(g.integers(8, 14))
        images = g.integers(0, 256, size=(n, 32, 32), dtype=np.uint8)
        labels = g.integers(0, 2, size=n)
        labels[:2] = [0, 1]  # both classes every year
        test = np.zeros(n, dtype=bool)
        test[g.choice(n, size=2, replace=False)] = True
        content.append({"year": year, "images": images, "labels": labels, "test": test})
    return content


def to_float(images: np.ndarray) -> np.ndarray:
    """Grey uint8 (n, 32, 32) as Wild-Time's float (n, 32, 32, 3) in [0, 1]."""
    return np.repeat((images.astype(np.float32) / 255)[..., None], 3, axis=3)


def write_pickle(content: list[dict], path: Path) -> Path:
    data = {}
    for c in content:
        x, y, t = to_float(c["images"]), c["labels"], c["test"]
        data[c["year"]] = {
            0: {"images": x[~t], "labels": y[~t]},
            1: {"images": x[t], "labels": y[t]},
            2: {"images": x, "labels": y},
        }
    path.write_bytes(pickle.dumps(data))
    return path


def write_folder(content: list[dict], root: Path) -> Path:
    for sub in ("F", "M"):
        (root / sub).mkdir(parents=True)
    for c in content:
        for i, (img, label) in enumerate(zip(c["images"], c["labels"])):
            name = f"{c['year']}_Ohio_Cleveland_{i:03d}.png"
            Image.fromarray(img, mode="L").save(root / ("F" if label == 1 else "M") / name)
    (root / "F" / ".DS_Store").write_bytes(b"junk")  # hidden files are not portraits
    return root


def record(image: np.ndarray, label: int) -> bytes:
    return (
        int(label).to_bytes(4, "big")
        + np.ascontiguousarray(to_float(image[None])[0].transpose(2, 0, 1)).astype("<f4").tobytes()
    )


def write_modyn(content: list[dict], root: Path, split: bool = True) -> Path:
    for c in content:
        parts = [("train", ~c["test"]), ("test", c["test"])] if split else [(".", np.ones_like(c["test"]))]
        for folder, rows in parts:
            (root / folder).mkdir(parents=True, exist_ok=True)
            data = b"".join(record(img, lab) for img, lab in zip(c["images"][rows], c["labels"][rows]))
            (root / folder / f"{c['year']}.bin").write_bytes(data)
    return root


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("yearbook-sources")
    content = make_content()
    return {
        "wildtime": write_pickle(content, base / "yearbook.pkl"),
        "folder": write_folder(content, base / "faces"),
        "modyn": write_modyn(content, base / "bins"),
        "modyn_nosplit": write_modyn(content, base / "bins_nosplit", split=False),
    }


@pytest.fixture(scope="module")
def caches(sources, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for fmt, path in sources.items():
        root = tmp_path_factory.mktemp(f"root-{fmt}")
        args = ["prepare", "yearbook", "--from", str(path), "--root", str(root)]
        assert prepare(args + (["--trust-pickle"] if fmt == "wildtime" else [])) == 0
        out[fmt] = root
    return out


def test_three_formats_give_the_same_cache(caches):
    content = make_content()
    data = {fmt: read_cache(root / "yearbook") for fmt, root in caches.items()}
    ref, manifest = data["wildtime"]
    kept = [c for c in content if c["year"] >= 1930]
    assert len(ref["y"]) == sum(len(c["labels"]) for c in kept)
    assert manifest["slice_labels"] == ["1930", "1931", "1950", "2013"]
    assert manifest["counts_per_slice"] == {str(c["year"]): len(c["labels"]) for c in kept}
    assert manifest["class_balance"] == {
        "M": sum(int((c["labels"] == 0).sum()) for c in kept),
        "F": sum(int((c["labels"] == 1).sum()) for c in kept),
    }
    assert ref["x"].dtype == torch.uint8 and tuple(ref["x"].shape[1:]) == (3, 32, 32)
    for fmt, (other, m) in data.items():
        for key in ("x", "y", "time", "slice"):
            assert torch.equal(other[key], ref[key]), (fmt, key)
        assert m["sha256"] != "" and m["source_format"] == ("modyn" if fmt.startswith("modyn") else fmt)
    # Wild-Time's split, and Modyn's train/ and test/ folders, are the same split; the others have none
    assert torch.equal(data["modyn"][0]["is_test"], ref["is_test"])
    assert manifest["split"] == {"train": len(ref["y"]) - 2 * len(kept), "test": 2 * len(kept)}
    assert "is_test" not in data["folder"][0] and data["folder"][1]["split"] is None
    assert "is_test" not in data["modyn_nosplit"][0]
    assert any("1925" in note for note in manifest["notes"])  # the year outside 1930-2013, said


def test_cache_holds_the_source_pixels_and_labels(caches):
    """Every source portrait is in the cache, pixel for pixel, with its label and year."""
    data, _ = read_cache(caches["folder"] / "yearbook")
    cached = {
        (int(t), bytes(x[0].numpy().tobytes()), int(y)) for x, y, t in zip(data["x"], data["y"], data["time"])
    }
    source = {
        (c["year"], img.tobytes(), int(lab))
        for c in make_content()
        if c["year"] >= 1930
        for img, lab in zip(c["images"], c["labels"])
    }
    assert cached == source
    assert torch.equal(data["x"][:, 0], data["x"][:, 2])  # grey, repeated over the channels


def test_replay_uses_wildtimes_split_and_says_a_drawn_split_setting_is_unused(caches, caplog):
    samples = Yearbook(root=str(caches["wildtime"])).load()
    with caplog.at_level(logging.WARNING):
        stream = StreamSpec(test_fraction=0.3).build(samples)
    assert torch.equal(stream.is_test, samples.is_test)
    assert "own train/test split: stream.test_fraction=0.3" in caplog.text


def test_replay_uses_wildtimes_split_and_size_keeps_a_share(caches):
    full = Yearbook(root=str(caches["wildtime"])).load()
    assert full.slice_labels == ["1930", "1931", "1950", "2013"] and full.num_classes == 2
    assert full.x.dtype == torch.float32 and float(full.x.max()) <= 1.0 and full.x.shape[1:] == (3, 32, 32)
    assert full.is_test is not None and int(full.is_test.sum()) == 8
    grey = Yearbook(root=str(caches["wildtime"]), channels=1).load()
    assert grey.x.shape[1:] == (1, 32, 32) and torch.allclose(grey.x[:, 0], full.x[:, 0])
    # with size, every year keeps max(10, share) of its portraits, or all it has
    half = Yearbook(root=str(caches["folder"]), size=0.5).load()
    counts = torch.bincount(half.slice).tolist()
    assert counts == [min(n, 10) for n in torch.bincount(full.slice).tolist()]


def test_a_run_replays_yearbook_with_wildtimes_test_split(caches, tmp_path):
    root = caches["wildtime"]
    overrides = small(tmp_path, "dataset=yearbook", f"dataset.root={root}", "train.epochs=1")
    overrides += ["population.variants={}", "model.channels=8", "model.blocks=2"]
    outcome = run(overrides, tmp_path / "out")
    evals = outcome.tables["evals"]
    assert sorted(set(evals["slice_label"].to_list())) == ["1930", "1931", "1950", "2013"]
    # every slice is evaluated on Wild-Time's two test portraits of its year, not a drawn 10%
    assert set(evals["n"].to_list()) == {2}


def test_missing_cache_names_the_source_and_the_prepare_command(tmp_path):
    with pytest.raises(ConfigError) as e:
        build(small(tmp_path, "dataset=yearbook", f"dataset.root={tmp_path / 'empty'}"))
    text = str(e.value)
    assert f"no prepared cache at {tmp_path / 'empty' / 'yearbook'}" in text
    assert "ctsim datasets prepare yearbook --from" in text and "Wild-Time" in text
    assert f"--root {tmp_path / 'empty'}" in text


def test_prepare_from_the_command_line_prints_a_summary(sources, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "ctsim.datasets", "prepare", "yearbook", "--from", str(sources["modyn"])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "yearbook:" in done.stdout and "4 slices (1930 … 2013)" in done.stdout
    assert "the source's own" in done.stdout and "M " in done.stdout
    manifest = json.loads((tmp_path / "datasets" / "yearbook" / "manifest.json").read_text())
    assert manifest["source_format"] == "modyn" and manifest["input_shape"] == [3, 32, 32]


# --- bad input -----------------------------------------------------------------------------------------


def _bad_pickle(path: Path, change) -> Path:
    data = pickle.loads(write_pickle(make_content(), path).read_bytes())
    change(data)
    path.write_bytes(pickle.dumps(data))
    return path


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _bad_sources(base: Path) -> dict[str, tuple[Path, list[str], list[str]]]:
    """name: (source, extra prepare arguments, fragments the error must contain)."""
    content = make_content()
    empty_pkl = base / "empty.pkl"
    empty_pkl.write_bytes(b"")
    truncated = write_modyn(content, base / "truncated")
    f = truncated / "train" / "1931.bin"
    f.write_bytes(f.read_bytes()[:-100])
    empty_bin = write_modyn(content, base / "empty_bin")
    (empty_bin / "test" / "1950.bin").write_bytes(b"")
    train_only = write_modyn(content, base / "train_only")
    shutil.rmtree(train_only / "test")
    label = write_modyn(content, base / "label")
    raw = bytearray((label / "train" / "1930.bin").read_bytes())
    raw[12292 * 2 : 12292 * 2 + 4] = (2).to_bytes(4, "big")
    (label / "train" / "1930.bin").write_bytes(bytes(raw))
    size_folder = write_folder(content, base / "size_folder")
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8), mode="L").save(size_folder / "M" / "1999_x.png")
    deep_folder = write_folder(content, base / "deep_folder")  # 16-bit grey: Pillow's "L" would clip it
    Image.fromarray(np.full((32, 32), 30000, dtype=np.uint16)).save(deep_folder / "M" / "1999_x.png")
    name_folder = write_folder(content, base / "name_folder")
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8), mode="L").save(name_folder / "F" / "portrait.png")
    evil = base / "evil.pkl"
    evil.write_bytes(pickle.dumps({1930: {2: {"images": Evil(), "labels": [0]}}}))

    def small_images(d):
        d[1931][0]["images"] = d[1931][0]["images"][:, :28, :28]

    def bad_label(d):
        d[1950][1]["labels"] = np.array([0, 3])

    def out_of_range(d):
        d[1930][0]["images"] = d[1930][0]["images"] * 255

    table = base / "data.csv"
    table.write_text("year,label,pixel0\n1930,M,0.5\n")
    t = ["--trust-pickle"]
    return {
        "a CSV, not a pickle": (
            table,
            [],
            ["data.csv: expected Wild-Time's yearbook.pkl (a pickle)", "found a CSV", "dataset=table"],
        ),
        "a CSV given as Wild-Time's format": (
            table,
            ["--format", "wildtime", *t],
            ["data.csv: expected Wild-Time's yearbook.pkl (a pickle), found a CSV", "'year,label,pixel0'"],
        ),
        "missing path": (base / "nowhere.pkl", t, ["nowhere.pkl", "no such file"]),
        "empty pickle": (empty_pkl, t, ["empty.pkl", "an empty file"]),
        "pickle without --trust-pickle": (
            write_pickle(content, base / "y.pkl"),
            [],
            ["--trust-pickle", "run"],
        ),
        "foreign global in a pickle": (
            evil,
            t,
            ["evil.pkl", "posix.system" if os.name == "posix" else "system"],
        ),
        "wrong image size in a pickle": (
            _bad_pickle(base / "small.pkl", small_images),
            t,
            ["year 1931, part 0", "(n, 32, 32, 3)", "(", "28, 28, 3)"],
        ),
        "unknown label in a pickle": (
            _bad_pickle(base / "label.pkl", bad_label),
            t,
            ["year 1950, part 1, sample 1", "label 0 (M) or 1 (F)", "label 3"],
        ),
        "pixels outside [0, 1]": (_bad_pickle(base / "range.pkl", out_of_range), t, ["year 1930", "[0, 1]"]),
        "truncated binary record": (truncated, [], ["1931.bin: record", "12,292-byte records", "truncated"]),
        "empty binary file": (empty_bin, [], ["1950.bin", "an empty file"]),
        "unknown label in a binary record": (label, [], ["1930.bin, sample 2", "label 2"]),
        "wrong image size in the folder": (size_folder, [], ["1999_x.png", "28×28"]),
        "16-bit image in the folder": (deep_folder, [], ["1999_x.png", "8 bits per channel", "I;16"]),
        "file name without a year": (name_folder, [], ["portrait.png", "starts with the year"]),
        "not a yearbook source": (base / "label" / "train" / "..", ["--format", "folder"], ["F/ and M/"]),
        "binary train/ folder without test/": (train_only, [], ["train_only: expected", "train/ only"]),
    }


CASES = [
    "a CSV, not a pickle",
    "a CSV given as Wild-Time's format",
    "missing path",
    "empty pickle",
    "pickle without --trust-pickle",
    "foreign global in a pickle",
    "wrong image size in a pickle",
    "unknown label in a pickle",
    "pixels outside [0, 1]",
    "truncated binary record",
    "empty binary file",
    "unknown label in a binary record",
    "wrong image size in the folder",
    "16-bit image in the folder",
    "file name without a year",
    "not a yearbook source",
    "binary train/ folder without test/",
]


@pytest.fixture(scope="module")
def bad_sources(tmp_path_factory):
    return _bad_sources(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_stops_prepare_naming_the_file_and_writes_nothing(case, bad_sources, tmp_path, capsys):
    source, extra, fragments = bad_sources[case]
    root = tmp_path / "datasets"
    assert prepare(["prepare", "yearbook", "--from", str(source), "--root", str(root), *extra]) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert "found a pickle" not in err or source.suffix == ".pkl"
    assert not root.exists() or not any(root.iterdir())  # no cache, no temporary folder


def test_a_failed_prepare_leaves_the_earlier_cache_intact(sources, bad_sources, tmp_path, capsys):
    root = tmp_path / "datasets"
    assert prepare(["prepare", "yearbook", "--from", str(sources["folder"]), "--root", str(root)]) == 0
    before = {f.name: f.read_bytes() for f in (root / "yearbook").iterdir()}
    truncated, _, _ = bad_sources["truncated binary record"]
    assert prepare(["prepare", "yearbook", "--from", str(truncated), "--root", str(root)]) == 2
    assert {f.name: f.read_bytes() for f in (root / "yearbook").iterdir()} == before
    assert sorted(p.name for p in root.iterdir()) == ["yearbook"]
    assert len(Yearbook(root=str(root)).load().y) == sum(len(c["labels"]) for c in make_content()[1:])


def test_a_changed_cache_is_refused_on_load(sources, tmp_path):
    root = tmp_path / "datasets"
    assert prepare(["prepare", "yearbook", "--from", str(sources["folder"]), "--root", str(root)]) == 0
    data = root / "yearbook" / "data.pt"
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(ValueError, match="checksum"):
        Yearbook(root=str(root)).load()
    data.unlink()
    with pytest.raises(ConfigError, match=r"has no data\.pt\. Yearbook is not downloaded"):
        Yearbook(root=str(root)).load()


def test_one_binary_file_instead_of_its_folder_is_named(sources, tmp_path, capsys):
    one = sources["modyn"] / "train" / "1930.bin"
    assert prepare(["prepare", "yearbook", "--from", str(one), "--root", str(tmp_path)]) == 2
    assert "the folder that holds Modyn's <year>.bin files" in capsys.readouterr().err


def test_a_root_that_cannot_be_written_is_one_line(sources, tmp_path, capsys):
    root = tmp_path / "file-not-folder"
    root.write_text("")
    assert prepare(["prepare", "yearbook", "--from", str(sources["folder"]), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the cache") and "Traceback" not in err
