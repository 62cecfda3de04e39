import pytest
import torch

from ctsim.datasets.portraits import (
    CHANGE_POINTS,
    YEARS,
    Portraits,
    render,
    scaled_counts,
    yearbook_counts,
)
from ctsim.validation import ConfigError


def test_counts_are_shaped_like_yearbook():
    counts = yearbook_counts()
    assert len(counts) == 84 == len(YEARS)
    assert (min(counts), max(counts), sum(counts)) == (70, 1197, 37_189)
    by_decade = [sum(counts[i : i + 10]) for i in range(0, 80, 10)]
    assert by_decade[0] == min(by_decade)  # few in the 1930s
    assert by_decade.index(max(by_decade)) in (3, 4, 5)  # most in the 1960s-80s


def test_size_scales_counts_and_keeps_a_minimum():
    assert scaled_counts(1.0) == yearbook_counts()
    half = scaled_counts(0.5)
    assert abs(sum(half) - 37_189 / 2) < 84
    assert min(scaled_counts(0.001)) == 10


def test_same_seed_gives_identical_samples_and_other_seeds_differ():
    a = Portraits(size=0.03, seed=3, cache=False).load()
    b = Portraits(size=0.03, seed=3, cache=False).load()
    c = Portraits(size=0.03, seed=4, cache=False).load()
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.time, b.time)
    assert not torch.equal(a.x, c.x)
    assert a.x.shape == (sum(scaled_counts(0.03)), 1, 32, 32)
    assert a.x.min() >= 0 and a.x.max() <= 1
    assert torch.equal(torch.bincount(a.slice, minlength=84), torch.tensor(scaled_counts(0.03)))
    assert ((a.time >= 1930) & (a.time < 2014)).all()
    assert torch.equal(a.time.floor().long() - 1930, a.slice)


def test_cache_round_trip(tmp_path):
    first = Portraits(size=0.02, seed=1, root=str(tmp_path)).load()
    ds = Portraits(size=0.02, seed=1, root=str(tmp_path))
    assert ds.cache_path.exists() and ds.cache_path.parent == tmp_path / "portraits"
    ds.cache_path.write_bytes(ds.cache_path.read_bytes())  # readable as written
    again = ds.load()
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    assert not list((tmp_path / "portraits").glob("*.tmp*"))  # no temp files left behind


def test_a_corrupt_cache_is_regenerated_and_replaced(tmp_path, caplog):
    ds = Portraits(size=0.02, seed=1, root=str(tmp_path))
    first = ds.load()
    good = ds.cache_path.read_bytes()
    ds.cache_path.write_bytes(good[: len(good) // 2])  # a truncated file, as from a killed writer
    with caplog.at_level("WARNING"):
        again = ds.load()
    assert torch.equal(first.x, again.x) and torch.equal(first.time, again.time)
    assert "cannot read the cache" in caplog.text and str(ds.cache_path) in caplog.text
    assert ds.cache_path.read_bytes() == good


def test_labels_are_balanced_and_change_points_are_ground_truth():
    s = Portraits(size=0.2, seed=0, cache=False).load()
    assert 0.45 < s.y.float().mean() < 0.55
    abrupt = [cp for cp in CHANGE_POINTS if cp.kind == "abrupt"]
    assert [YEARS[cp.slice] for cp in abrupt] == [1970]
    for cp in CHANGE_POINTS:
        assert 0 <= cp.slice < 84 and cp.what
        if cp.kind == "gradual":
            assert cp.end_slice is not None and cp.slice < cp.end_slice < 84
    assert s.change_points == list(CHANGE_POINTS)


def _long_hair_rate(year: int, label: int) -> float:
    """Share of portraits with dark-or-light hair pixels beside the chin (long hair), from pixels alone."""
    n = 2000
    g = torch.Generator().manual_seed(year)
    img = render(torch.full((n,), year), torch.full((n,), label), g).float() / 255
    background = img[:, 2:6, 1:4].mean(dim=(1, 2))  # the top-left corner is background
    # Long hair hangs beside the lower face (rows 17-20); compare with the background far left.
    beside = torch.cat([img[:, 17:20, 7:9], img[:, 17:20, 23:25]], dim=2).mean(dim=(1, 2))
    return float(((beside - background).abs() > 0.15).float().mean())


def test_hair_length_marks_the_class_before_1970_only():
    before = _long_hair_rate(1965, 1) - _long_hair_rate(1965, 0)
    after = _long_hair_rate(1975, 1) - _long_hair_rate(1975, 0)
    assert before > 0.4  # long hair: class 1 far more often
    assert abs(after) < 0.1  # no longer informative


@pytest.mark.parametrize(
    "kwargs,key",
    [({"size": 0}, "size"), ({"size": -1.0}, "size"), ({"size": 1.5}, "size"), ({"seed": -2}, "seed")],
)
def test_bad_arguments_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=rf"{key}=-?\d"):
        Portraits(**kwargs)
