import pytest
import torch

from ctsim.selection import AllData, NewData
from ctsim.selection.base import context_from_intervals
from ctsim.validation import ConfigError


@pytest.fixture
def ctx():
    return context_from_intervals([[0, 1, 2], [3, 4], [5], [6, 7, 8, 9]])


def test_new_selects_the_data_since_the_last_trigger(ctx):
    assert NewData().select(ctx).keys.tolist() == [6, 7, 8, 9]
    assert NewData().select(ctx).weights is None


@pytest.mark.parametrize(
    "tail,expected",
    [(1, [5, 6, 7, 8, 9]), (2, [3, 4, 5, 6, 7, 8, 9]), (3, list(range(10))), (10, list(range(10)))],
)
def test_new_with_tail_adds_earlier_triggers_data(ctx, tail, expected):
    assert NewData(tail=tail).select(ctx).keys.tolist() == expected


def test_all_selects_everything_seen(ctx):
    assert AllData().select(ctx).keys.tolist() == list(range(10))
    first = context_from_intervals([[4, 2]])
    assert AllData().select(first).keys.tolist() == [4, 2]
    assert NewData(tail=2).select(first).keys.tolist() == [4, 2]


def test_selections_do_not_alias_the_context(ctx):
    keys = AllData().select(ctx).keys
    keys[0] = 99
    assert ctx.seen[0] == 0
    assert torch.equal(ctx.since_trigger, torch.tensor([6, 7, 8, 9]))


@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_tail_must_be_a_non_negative_integer(bad):
    with pytest.raises(ConfigError, match=r"tail=.*: expected an integer ≥ 0"):
        NewData(tail=bad)
