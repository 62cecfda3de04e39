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


def test_the_at_chance_rule_judges_a_reference_against_its_most_frequent_label():
    """A model that scores only what always answering the most frequent label scores is retrained; one
    clearly above it is kept; a reference of one label cannot tell, so the rule stands aside."""
    import torch

    from ctsim.triggers import PerformanceTrigger

    half = PerformanceTrigger(min_samples=20)  # 12 of 20 right where 12 carry the most frequent label
    reason = half._score([torch.tensor([1.0] * 12 + [0.0] * 8)], [torch.tensor([0] * 12 + [1] * 8)])
    assert reason is not None and "at chance" in reason and "0.6 for always answering" in reason
    learned = PerformanceTrigger(min_samples=20)  # 19 of 20 right on a 50/50 split
    assert learned._score([torch.tensor([1.0] * 19 + [0.0])], [torch.tensor([0, 1] * 10)]) is None
    one_label = PerformanceTrigger(min_samples=20)
    assert one_label._score([torch.ones(20)], [torch.zeros(20, dtype=torch.long)]) is None
    off = PerformanceTrigger(min_samples=20, at_chance=False)
    assert off._score([torch.tensor([1.0] * 12 + [0.0] * 8)], [torch.tensor([0] * 12 + [1] * 8)]) is None
