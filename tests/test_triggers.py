import pytest

from ctsim.stream import toy_stream
from ctsim.triggers import AlwaysTrigger, AmountTrigger, NeverTrigger, TimeTrigger, replay
from ctsim.validation import ConfigError


def test_time_fires_on_the_batch_that_completes_every_kth_slice():
    stream = toy_stream([3] * 10)  # one batch per slice
    assert replay(TimeTrigger(every=1), stream) == list(range(10))
    assert replay(TimeTrigger(every=3), stream) == [2, 5, 8]
    assert replay(TimeTrigger(every=20), stream) == []


def test_time_with_sub_slice_batches_waits_for_the_end_of_the_slice():
    stream = toy_stream([3, 3, 3, 3], arrival_batch=2)  # batches: (0,0) (0,1) (1,2) (1,3) ...
    assert [b.slice for b in stream.batches] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert replay(TimeTrigger(every=2), stream) == [3, 7]


def test_amount_fires_when_enough_new_samples_arrived_then_restarts():
    stream = toy_stream([7, 7, 7], arrival_batch=3)  # batch sizes 3,3,1,3,3,1,3,3,1
    assert [len(b) for b in stream.batches] == [3, 3, 1, 3, 3, 1, 3, 3, 1]
    # counts since the last trigger: 3, 6≥5 fire | 1, 4, 7≥5 fire | 1, 4, 7≥5 fire | 1
    assert replay(AmountTrigger(every=5), stream) == [1, 4, 7]
    assert replay(AmountTrigger(every=1), stream) == list(range(9))
    assert replay(AmountTrigger(every=100), stream) == []


def test_amount_on_whole_slices_fires_at_most_once_per_batch():
    stream = toy_stream([10, 2, 2, 30])
    assert replay(AmountTrigger(every=4), stream) == [0, 2, 3]


def test_always_and_never():
    stream = toy_stream([2, 2, 2], arrival_batch=1)
    assert replay(AlwaysTrigger(), stream) == [0, 1, 2, 3, 4, 5]
    assert replay(NeverTrigger(), stream) == [1]  # the batch that completes the first slice


@pytest.mark.parametrize("cls", [TimeTrigger, AmountTrigger])
@pytest.mark.parametrize("bad", [0, -3, 2.5, "5", True])
def test_every_must_be_a_positive_integer(cls, bad):
    with pytest.raises(ConfigError, match=r"every=.*: expected an integer ≥ 1"):
        cls(every=bad)
