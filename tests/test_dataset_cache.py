"""The dataset cache holds what its name says, or it is rebuilt; the data root is checked before any work."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import pytest
import torch

from ctsim.datasets import Portraits, Sensors
from ctsim.datasets.base import Samples
from ctsim.datasets.portraits import scaled_counts

SIZE = 0.02  # generated in well under a second
COUNT = sum(scaled_counts(SIZE))

not_as_root = pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions"
)


def assert_same(a: Samples, b: Samples) -> None:
    for field in ("x", "y", "time", "slice"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def on_disk(ds: Portraits | Sensors) -> dict:
    return torch.load(ds.cache_path, weights_only=True)


def refuse_to_generate(monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
    def fail(self):
        raise AssertionError("regenerated a valid cache")

    monkeypatch.setattr(cls, "_generate", fail)


def test_a_cache_of_another_size_under_this_name_is_detected_and_replaced(tmp_path, caplog, monkeypatch):
    ds = Portraits(size=SIZE, root=str(tmp_path))
    other = Portraits(size=0.05, root=str(tmp_path))
    other.load()
    shutil.copy(other.cache_path, ds.cache_path)  # what the reviewer did
    with caplog.at_level(logging.WARNING):
        loaded = ds.load()
    fresh = Portraits(size=SIZE, cache=False).load()
    assert_same(loaded, fresh)
    assert len(loaded.y) != len(other.load().y)
    [warning] = warnings(caplog)
    assert str(ds.cache_path) in warning and "size=0.05, not 0.02" in warning
    assert "generating it again" in warning
    data = on_disk(ds)
    assert data["meta"]["size"] == SIZE and data["meta"]["samples"] == len(fresh.y)
    assert torch.equal(data["y"], fresh.y)
    refuse_to_generate(monkeypatch, Portraits)
    caplog.clear()
    assert_same(Portraits(size=SIZE, root=str(tmp_path)).load(), fresh)  # the replacement is read
    assert not warnings(caplog)


def test_a_cache_of_another_dataset_or_seed_is_detected(tmp_path, caplog):
    sensors = Sensors(size=0.2, seed=1, root=str(tmp_path), cache=True)
    sensors.load()
    portraits = Portraits(size=SIZE, seed=1, root=str(tmp_path))
    portraits.cache_path.parent.mkdir()
    shutil.copy(sensors.cache_path, portraits.cache_path)
    other_seed = Sensors(size=0.2, seed=2, root=str(tmp_path), cache=True)
    shutil.copy(sensors.cache_path, other_seed.cache_path)
    with caplog.at_level(logging.WARNING):
        assert_same(portraits.load(), Portraits(size=SIZE, seed=1, cache=False).load())
        assert_same(other_seed.load(), Sensors(size=0.2, seed=2).load())
    first, second = warnings(caplog)
    assert "dataset='sensors', not 'portraits'" in first and str(portraits.cache_path) in first
    assert "seed=1, not 2" in second and str(other_seed.cache_path) in second


def drop_time(data: dict) -> None:
    del data["time"]


def drop_meta(data: dict) -> None:
    del data["meta"]


def shorten_y(data: dict) -> None:
    data["y"] = data["y"][:-3]


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (drop_time, "has no per-sample tensor time"),
        (drop_meta, "does not record what it was made with (an older ctsim wrote it)"),
        (shorten_y, f"records {COUNT} samples, but y has {COUNT - 3}"),
    ],
    ids=["missing key", "old cache without meta", "wrong length"],
)
def test_an_incomplete_or_old_cache_is_rebuilt_with_one_warning(tmp_path, caplog, damage, why):
    ds = Portraits(size=SIZE, root=str(tmp_path))
    good = ds.load()
    data = on_disk(ds)
    damage(data)
    torch.save(data, ds.cache_path)
    with caplog.at_level(logging.WARNING):
        again = ds.load()
    assert_same(again, good)
    [warning] = warnings(caplog)
    assert why in warning and str(ds.cache_path) in warning
    assert set(on_disk(ds)) == {"x", "y", "time", "slice", "meta"}


@pytest.mark.parametrize("content", ["half", "empty", "garbage"])
def test_a_truncated_or_corrupt_cache_is_rebuilt(tmp_path, caplog, content):
    ds = Portraits(size=SIZE, root=str(tmp_path))
    good = ds.load()
    whole = ds.cache_path.read_bytes()
    damaged = {"half": whole[: len(whole) // 2], "empty": b"", "garbage": b"not a tensor file\n" * 50}
    ds.cache_path.write_bytes(damaged[content])
    with caplog.at_level(logging.WARNING):
        assert_same(ds.load(), good)
    [warning] = warnings(caplog)
    assert f"cannot read the cache {ds.cache_path}" in warning and "generating it again" in warning
    assert ds.cache_path.read_bytes() == whole
    assert not list(ds.cache_path.parent.glob("*.tmp*"))


@pytest.mark.parametrize("cls", [Portraits, Sensors])
def test_a_valid_cache_is_read_without_generating(tmp_path, caplog, monkeypatch, cls):
    first = cls(size=SIZE, root=str(tmp_path), cache=True).load()
    refuse_to_generate(monkeypatch, cls)
    with caplog.at_level(logging.WARNING):
        assert_same(cls(size=SIZE, root=str(tmp_path), cache=True).load(), first)
    assert not warnings(caplog)


def test_cache_off_reads_and_writes_nothing(tmp_path, caplog):
    ds = Portraits(size=SIZE, root=str(tmp_path), cache=False)
    Portraits(size=0.05, root=str(tmp_path)).load()
    shutil.copy(Portraits(size=0.05, root=str(tmp_path)).cache_path, ds.cache_path)
    before = ds.cache_path.read_bytes()
    with caplog.at_level(logging.WARNING):
        assert len(ds.load().y) == len(Portraits(size=SIZE, cache=False).load().y)
    assert not warnings(caplog) and ds.cache_path.read_bytes() == before
    Sensors(size=0.2, root=str(tmp_path)).load()  # cache off by default
    assert not (tmp_path / "sensors").exists()


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody may write into; made writable again so that pytest can remove it."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    yield folder
    folder.chmod(0o700)


@not_as_root
@pytest.mark.parametrize("cls", [Portraits, Sensors])
def test_a_read_only_root_is_a_problem_before_any_work(read_only, cls):
    [problem] = cls(root=str(read_only), cache=True).path_problems()
    assert problem.key == "dataset.root" and problem.value == str(read_only)
    assert problem.expected.startswith(
        f"a folder ctsim can write the generated cache into ({read_only} is not writable"
    )
    [problem] = cls(root=str(read_only / "new" / "data"), cache=True).path_problems()
    assert f"({read_only} is not writable" in problem.expected  # the nearest folder that exists


def test_a_root_that_is_not_writable_is_a_problem(tmp_path, monkeypatch):
    """The same check where the tests run as root, which may write anywhere."""

    def refuse(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    [problem] = Portraits(root=str(tmp_path)).path_problems()
    assert f"({tmp_path} is not writable (Permission denied))" in problem.expected


def test_a_root_that_is_a_file_is_a_problem(tmp_path):
    file = tmp_path / "data.txt"
    file.write_text("not a folder")
    for root in (file, file / "below"):
        [problem] = Portraits(root=str(root)).path_problems()
        assert problem.key == "dataset.root" and problem.value == str(root)
        assert problem.expected == f"a folder ctsim can write the generated cache into ({file} is a file)"


@not_as_root
def test_a_read_only_root_with_a_valid_cache_is_fine(read_only, caplog, monkeypatch):
    read_only.chmod(0o700)
    ds = Portraits(size=SIZE, root=str(read_only))
    first = ds.load()
    ds.cache_path.parent.chmod(0o500)
    read_only.chmod(0o500)
    assert ds.path_problems() == []
    refuse_to_generate(monkeypatch, Portraits)
    with caplog.at_level(logging.WARNING):
        assert_same(Portraits(size=SIZE, root=str(read_only)).load(), first)
    assert not warnings(caplog)
    ds.cache_path.parent.chmod(0o700)


@not_as_root
def test_a_stale_cache_in_a_read_only_root_is_regenerated_without_a_traceback(read_only, caplog):
    read_only.chmod(0o700)
    ds = Portraits(size=SIZE, root=str(read_only))
    Portraits(size=0.05, root=str(read_only)).load()
    shutil.copy(Portraits(size=0.05, root=str(read_only)).cache_path, ds.cache_path)
    ds.cache_path.parent.chmod(0o500)
    try:
        with caplog.at_level(logging.WARNING):
            assert_same(ds.load(), Portraits(size=SIZE, cache=False).load())
    finally:
        ds.cache_path.parent.chmod(0o700)
    made_with, not_written = warnings(caplog)
    assert "size=0.05, not 0.02" in made_with and f"cannot write the cache {ds.cache_path}" in not_written


def test_no_problem_with_cache_off_or_a_fresh_writable_root(tmp_path):
    file = tmp_path / "data.txt"
    file.write_text("not a folder")
    assert Portraits(root=str(file), cache=False).path_problems() == []
    assert Sensors(root=str(file)).path_problems() == []  # cache off by default
    assert Portraits(root=str(tmp_path / "not" / "yet")).path_problems() == []
    assert Sensors(root=str(tmp_path), cache=True).path_problems() == []
