import pytest
import torch

from ctsim.datasets.portraits import Portraits
from ctsim.stream import Stream, StreamSpec, toy_stream
from ctsim.validation import ConfigError


@pytest.fixture(scope="module")
def samples():
    return Portraits(size=0.1, seed=0, cache=False).load()


def test_split_is_90_10_per_slice_and_fixed_by_its_seed(samples):
    stream = Stream(samples, test_fraction=0.1, split_seed=0)
    sizes = torch.bincount(samples.slice, minlength=84)
    tests = torch.bincount(samples.slice[stream.is_test], minlength=84)
    expected = torch.tensor([max(1, round(0.1 * n)) for n in sizes.tolist()])
    assert torch.equal(tests, expected)
    assert stream.train_sizes == (sizes - tests).tolist()
    assert [len(k) for k in stream.test_keys] == expected.tolist()
    assert torch.equal(stream.is_test, Stream(samples, split_seed=0).is_test)
    assert not torch.equal(stream.is_test, Stream(samples, split_seed=1).is_test)


def test_train_pool_arrives_in_time_order_once(samples):
    stream = Stream(samples, arrival_batch=50)
    order = stream.arrival_order
    assert torch.equal(order.sort().values, (~stream.is_test).nonzero().squeeze(1))
    assert (samples.time[order].diff() >= 0).all()
    covered = torch.cat([b.keys for b in stream.batches])
    assert torch.equal(covered, order)


def test_batches_of_n_samples_never_straddle_slices():
    stream = toy_stream([5, 3, 4], arrival_batch=2)
    got = [(b.index, b.slice, len(b), b.end_of_slice) for b in stream.batches]
    assert got == [
        (0, 0, 2, False),
        (1, 0, 2, False),
        (2, 0, 1, True),
        (3, 1, 2, False),
        (4, 1, 1, True),
        (5, 2, 2, False),
        (6, 2, 2, True),
    ]
    assert [b.start for b in stream.batches] == [0, 2, 4, 5, 7, 8, 10]


def test_default_arrival_batch_is_the_whole_slice(samples):
    stream = Stream(samples)
    assert len(stream.batches) == 84
    assert [len(b) for b in stream.batches] == stream.train_sizes
    assert all(b.end_of_slice for b in stream.batches)


def test_slices_without_train_data_have_no_batch():
    stream = toy_stream([2, 0, 2], test_fraction=0.0)
    assert [b.slice for b in stream.batches] == [0, 2]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"arrival_batch": 0}, r"arrival_batch=0: expected 'slice' or an integer ≥ 1"),
        ({"arrival_batch": "year"}, r"arrival_batch='year'"),
        ({"test_fraction": 1.0}, r"test_fraction=1.0: expected a number in \[0, 1\)"),
        ({"split_seed": -1}, r"split_seed=-1"),
    ],
)
def test_bad_stream_settings_name_key_and_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        StreamSpec(**kwargs)
