"""The declared policy contracts (ctsim.triggers.base, ctsim.selection.base), checked at start-up.

A user's trigger or selection policy with a missing, misnamed or mis-declared method stops the run with
one line naming the class and the method, before the data is loaded and before any folder is written.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch

from ctsim.selection.base import Presampler, selection_problems
from ctsim.triggers import EnsembleTrigger, TimeTrigger
from ctsim.triggers.base import trigger_problems
from ctsim.validation import ConfigError

from .conftest import REPO, build, cli

USER_MODULE = '''
from ctsim.selection import Presampler, Selection


class LateTrigger:
    """Fires every other batch, but its decision method is misspelt."""

    def __init__(self, every: int = 2):
        self.every = every

    def observ(self, ctx):
        return "late" if ctx.batch.index % self.every == 0 else None


class Newest(Presampler):
    """The data since the last trigger, but its pool method is misspelt."""

    def pools(self, ctx):
        return ctx.since_trigger


class Everything:
    """A selection policy whose select forgets its argument."""

    def select(self):
        return Selection(keys=None)


class NamedDownsampler:
    """A selection policy of its own whose downsampler is a name, not a downsampler."""

    downsample = "loss"

    def __init__(self, tail=0, limit=None, fraction=None):  # selection=new's keys, which it is given
        pass

    def select(self, ctx):
        return Selection(keys=ctx.seen.clone())
'''


def _user_run(tmp_path: Path, *overrides: str, module: str = USER_MODULE):
    """``python -m ctsim`` with the user's module importable, on a small SEA stream that caches its data
    under ``tmp_path/data`` when it loads (so a load leaves a file), writing the run into ``tmp_path/run``."""
    (tmp_path / "mymod.py").write_text(module)
    args = [
        "population.variants={}",
        "dataset=sea",
        "model=mlp",
        "dataset.size=0.02",
        "dataset.slices=4",
        "dataset.change_points=[2]",
        "dataset.cache=true",
        f"dataset.root={tmp_path / 'data'}",
        "train.epochs=1",
        "output.plots=false",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        *overrides,
    ]
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    return cli(args, tmp_path, timeout=600, env=env)


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "trigger._target_=mymod.LateTrigger",
            "trigger._target_: mymod.LateTrigger has no method observe(ctx) but has observ: rename observ "
            "to observe (ctsim calls observe: The reason to train now, or None to wait)",
        ),
        (
            "selection._target_=mymod.Newest",
            "selection._target_: mymod.Newest has no method pool(ctx) but has pools: rename pools to pool",
        ),
        (
            "selection._target_=mymod.Everything",
            "selection._target_: mymod.Everything.select takes (self): it must take self, ctx",
        ),
    ],
    ids=["trigger", "presampler", "selection"],
)
def test_a_users_policy_with_a_misnamed_method_stops_at_start_up(tmp_path, override, line):
    done = _user_run(tmp_path, override)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "ctsim: invalid config:"
    assert len(lines) == 2 and lines[1].strip().startswith(line), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # no run folder
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "data").exists()  # the data was not loaded (it would have been cached here)


def test_the_same_run_with_the_method_named_right_runs(tmp_path):
    """The control of the test above: with ``observe`` spelt right, the data loads and the run ends."""
    module = USER_MODULE.replace("def observ(", "def observe(")
    done = _user_run(tmp_path, "trigger._target_=mymod.LateTrigger", module=module)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "generations.parquet").exists()
    assert any((tmp_path / "data").rglob("*.pt"))  # the data loaded, and was cached


# -- the checks themselves ----------------------------------------------------------------------------


def _classes(source: str) -> dict[str, type]:
    space: dict = {}
    exec(textwrap.dedent(source), space)
    return {k: v for k, v in space.items() if isinstance(v, type)}


def _texts(problems) -> list[str]:
    return [p.text for p in problems]


def test_a_trigger_without_observe_is_named_with_what_it_is_for():
    (bare,) = _classes("class Bare:\n    def decide(self, ctx):\n        return None\n").values()
    assert _texts(trigger_problems(bare)) == [
        f"{bare.__module__}.Bare has no method observe(ctx), which every trigger needs "
        "(The reason to train now, or None to wait)"
    ]


def test_a_misnamed_optional_hook_is_named_too():
    """``want`` would never be called: the trigger would decide without the signals it needs."""
    found = _classes(
        """
        class Greedy:
            def want(self, ctx):
                return {}

            def observe(self, ctx):
                return None
        """
    )["Greedy"]
    (text,) = _texts(trigger_problems(found))
    assert "has no method wants(ctx) but has want: rename want to wants" in text


def test_hooks_must_take_the_declared_arguments():
    classes = _classes(
        """
        class NoContext:
            def observe(self):
                return None

        class NotStatic:
            def observe(self, ctx):
                return None

            def observe_many(self, triggers, contexts):
                return [None] * len(triggers)

        from ctsim.triggers.base import Trigger

        class Subclassed(Trigger):  # a protocol's stub is no method: observ is still a misspelling
            def observ(self, ctx):
                return None

        class Fine:
            def observe(self, ctx, extra=None):
                return None

            def problems(self, stream):
                return []

            def helper(self):  # a method of its own, named like no hook
                return 1
        """
    )
    assert _texts(trigger_problems(classes["NoContext"])) == [
        f"{classes['NoContext'].__module__}.NoContext.observe takes (self): it must take self, ctx "
        "(ctsim calls observe(ctx))"
    ]
    assert "observe_many must be a @staticmethod" in _texts(trigger_problems(classes["NotStatic"]))[0]
    assert "has no method observe(ctx) but has observ" in _texts(trigger_problems(classes["Subclassed"]))[0]
    assert trigger_problems(classes["Fine"]) == []


def test_a_presampler_must_give_its_pool_and_may_give_choose():
    classes = _classes(
        """
        from ctsim.selection import Presampler

        class NoPool(Presampler):
            pass

        class Chooser(Presampler):
            def pool(self, ctx):
                return ctx.seen

            def chose(self, pool, k, ctx):
                return pool[:k]
        """
    )
    assert _texts(selection_problems(classes["NoPool"])) == [
        f"{classes['NoPool'].__module__}.NoPool has no method pool(ctx), which every presampler needs "
        "(The keys to choose from: the policy's pool, before its budget)"
    ]
    (text,) = _texts(selection_problems(classes["Chooser"]))  # it inherits a choose, but meant its own
    assert "has no method choose(pool, k, ctx) but has chose: rename chose to choose" in text
    assert selection_problems(Presampler) != []  # the base itself gives no pool


def test_an_ensemble_names_a_member_that_is_no_trigger():
    (late,) = _classes("class Late:\n    def observ(self, ctx):\n        return None\n").values()
    with pytest.raises(ConfigError, match=r"members\.slow: \S+Late has no method observe\(ctx\) but has"):
        EnsembleTrigger({"fast": TimeTrigger(every=1), "slow": late()})


def test_a_misnamed_trigger_in_an_ensemble_stops_at_start_up(tmp_path):
    done = _user_run(
        tmp_path,
        "trigger=ensemble",
        "~trigger.members.performance",
        "+trigger.members.late._target_=mymod.LateTrigger",
    )
    assert done.returncode == 2, done.stderr
    assert "trigger.members.late: mymod.LateTrigger has no method observe(ctx) but has observ" in done.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_downsampler_of_reads_the_declared_attribute():
    from ctsim.selection import NewData
    from ctsim.selection.downsample import RS2, downsampler_of

    assert downsampler_of(NewData()) is None
    rs2 = RS2(fraction=0.5)
    assert downsampler_of(NewData(downsample=rs2)) is rs2
    assert downsampler_of(object()) is None  # a policy of its own, with no downsample attribute
    assert torch.equal(NewData().select(_context()).keys, torch.tensor([2, 3]))


def _context():
    from ctsim.selection.base import context_from_intervals

    return context_from_intervals([[0, 1], [2, 3]])


def test_a_downsample_attribute_must_be_a_downsampler(tmp_path, monkeypatch):
    (tmp_path / "mymod.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    own = ["selection._target_=mymod.NamedDownsampler"]
    expected = r"selection\.downsample='str': expected null, a ScoreDownsampler or RS2"
    with pytest.raises(ConfigError, match=expected):
        build(["population.variants={}", "dataset=sea", "model=mlp", *own])
