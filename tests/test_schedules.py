import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ctsim.config import ConfigError
from ctsim.schedules import Constant, Cosine, ScheduleTable, StepDecay

CONF = Path(__file__).resolve().parents[1] / "conf" / "schedule"


def test_constant_is_one_everywhere():
    assert {Constant().factor(e, s, 10) for e in range(3) for s in range(10)} == {1.0}


def test_step_decay_multiplies_by_gamma_every_k_epochs():
    schedule = StepDecay(every_epochs=2, gamma=0.5)
    assert [schedule.factor(epoch, 0, 1) for epoch in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert [StepDecay().factor(epoch, 7, 9) for epoch in range(3)] == [1, 0.1, 0.1**2]


def test_cosine_starts_at_one_and_halves_the_way_to_min_factor_midway():
    schedule = Cosine(min_factor=0.1)
    assert schedule.factor(0, 0, 10) == 1.0
    assert schedule.factor(1, 5, 10) == pytest.approx(0.55, abs=1e-15)
    assert schedule.factor(2, 10, 10) == pytest.approx(0.1, abs=1e-15)
    steps = [Cosine().factor(0, s, 10) for s in range(10)]
    assert steps == sorted(steps, reverse=True) and steps[-1] > 0  # falls, never reaches 0 in training


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: StepDecay(gamma=0), r"gamma=0: expected a number > 0"),
        (lambda: StepDecay(gamma="0.5"), r"gamma='0.5': expected a number > 0"),
        (lambda: StepDecay(every_epochs=0), r"every_epochs=0: expected an integer ≥ 1"),
        (lambda: StepDecay(every_epochs=1.5), r"every_epochs=1.5: expected an integer ≥ 1"),
        (lambda: Cosine(min_factor=1.5), r"min_factor=1.5: expected a number in \[0, 1\]"),
        (lambda: Cosine(min_factor=-0.1), r"min_factor=-0.1: expected a number in \[0, 1\]"),
        (lambda: Cosine(min_factor=True), r"min_factor=True: expected a number in \[0, 1\]"),
    ],
)
def test_bad_values_name_the_key(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError, match=r"(?s)every_epochs=0.*gamma=-1"):
        StepDecay(every_epochs=0, gamma=-1)


@pytest.mark.parametrize(
    ("name", "expected"), [("constant", Constant()), ("step", StepDecay()), ("cosine", Cosine())]
)
def test_yaml_instantiates_the_class_with_its_defaults(name, expected):
    assert instantiate(OmegaConf.load(CONF / f"{name}.yaml")) == expected


def _mixed_schedules():
    """Every kind, with several settings, in a table long enough for torch's vectorized kernels."""
    kinds = [
        Constant(),
        StepDecay(),
        StepDecay(every_epochs=2, gamma=0.5),
        StepDecay(every_epochs=3, gamma=0.9),
        StepDecay(gamma=1.5),
        Cosine(),
        Cosine(min_factor=0.1),
        Cosine(min_factor=1.0),
    ]
    return kinds * 5


def test_vectorized_factors_equal_the_scalar_factors():
    schedules = _mixed_schedules()
    table = ScheduleTable.from_schedules(schedules, "cpu", torch.float64)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        total = torch.randint(1, 1000, (len(schedules),), generator=g)
        step = (torch.rand(len(schedules), generator=g, dtype=torch.float64) * total).long()
        epoch = torch.randint(0, 30, (len(schedules),), generator=g)
        got = table.factors(epoch, step, total).tolist()
        want = [
            s.factor(e, t, n) for s, e, t, n in zip(schedules, epoch.tolist(), step.tolist(), total.tolist())
        ]
        # torch's SIMD pow and cos may round differently from libm's by 1 ulp: the only difference.
        assert got == pytest.approx(want, rel=2**-52, abs=2**-53)


def test_vectorized_factors_at_known_points():
    table = ScheduleTable.from_schedules(
        [Constant(), StepDecay(every_epochs=2, gamma=0.5), Cosine(min_factor=0.1)], "cpu", torch.float64
    )
    for epoch, want in enumerate([1, 1, 0.5, 0.5, 0.25, 0.25]):
        e = torch.tensor([epoch] * 3)
        assert table.factors(e, torch.tensor([0] * 3), torch.tensor([10] * 3)).tolist() == [1, want, 1]
    midway = table.factors(torch.tensor([0, 0, 0]), torch.tensor([5, 5, 5]), torch.tensor([10, 10, 10]))
    assert midway.tolist() == pytest.approx([1, 1, 0.55], abs=1e-15)
    assert midway.dtype == torch.float64


def test_table_of_one_kind_and_of_float32():
    table = ScheduleTable.from_schedules([Cosine()] * 3, "cpu", torch.float32)
    got = table.factors(torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 2]), torch.tensor([4, 4, 4]))
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(3)], rel=1e-7)
