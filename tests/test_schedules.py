from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ctsim.engine.schedules import Constant, Cosine, StepDecay
from ctsim.validation import ConfigError

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
        (lambda: Cosine(min_factor=True), r"min_factor=true: expected a number in \[0, 1\]"),
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
