"""A user's own policies that return the wrong thing (docs/extending.md), as a user meets them.

``observe`` must return None or a non-empty reason, ``wants`` a ``{name: Want}`` of known signals, and
``select`` a ``Selection`` whose keys are a ``torch.long`` tensor of its own, each a key seen so far and
each once. Before these checks a ``True`` trained on every batch, a ``[0]`` failed after all the training
inside polars, keys of data not yet arrived (the future, or test rows) trained silently, and duplicate
keys weighted samples twice. Now each mistake is one line naming the class, the method and what was
expected: on the first arrival batch, before any training and without a run folder; later, as a failed
run that says why.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from ctsim.selection.base import Selection, context_from_intervals, select
from ctsim.stream import toy_stream
from ctsim.triggers.base import TriggerContext, decide
from ctsim.validation import ConfigError

from .conftest import REPO, cli

USER_MODULE = '''
import torch

from ctsim.selection import Selection
from ctsim.triggers import Want


class Truthy:
    """Returns whether to train, not why."""

    def observe(self, ctx):
        return ctx.batch.index % 2 == 0


class Listing:
    def observe(self, ctx):
        return [ctx.batch.index]


class LateFalse:
    """Right on the first batch, a bool from the fourth on: found mid-run."""

    def observe(self, ctx):
        return "first" if ctx.batch.index < 3 else False


class TypoWant:
    def wants(self, ctx):
        return {"batch": Want(ctx.batch.keys, frozenset({"prediction"}))}

    def observe(self, ctx):
        return "first" if ctx.active is None else None


class Future:
    """Keys of rows that have not arrived yet."""

    def select(self, ctx):
        return Selection(keys=torch.arange(len(ctx.seen) + 5))


class Twice:
    def select(self, ctx):
        return Selection(keys=torch.cat([ctx.seen, ctx.since_trigger]))


class Nothing:
    """Right by the contract, but it never keeps a sample."""

    def select(self, ctx):
        return Selection(keys=torch.empty(0, dtype=torch.long))
'''


def _user_run(tmp_path: Path, *overrides: str):
    """``python -m ctsim --config-dir conf`` from the user's folder (docs/extending.md): ``mymod.py`` and
    a YAML per class in ``conf/trigger/`` and ``conf/selection/``; a small SEA stream, into
    ``tmp_path/run``."""
    (tmp_path / "mymod.py").write_text(USER_MODULE)
    for group, names in {
        "trigger": ["Truthy", "Listing", "LateFalse", "TypoWant"],
        "selection": ["Future", "Twice", "Nothing"],
    }.items():
        (tmp_path / "conf" / group).mkdir(parents=True, exist_ok=True)
        for name in names:
            text = f"# {name}, a mistake of mine\n_target_: mymod.{name}\n"
            (tmp_path / "conf" / group / f"{name.lower()}.yaml").write_text(text)
    args = [
        "--config-dir",
        "conf",
        "dataset=sea",
        "model=mlp",
        "dataset.size=0.02",
        "dataset.slices=6",
        "dataset.change_points=[3]",
        "train.epochs=1",
        "output.plots=false",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        *overrides,
    ]
    return cli(args, tmp_path, timeout=600, env={"PYTHONPATH": str(REPO)})


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "trigger=truthy",
            "mymod.Truthy.observe returned True (a bool): expected a non-empty str, the reason to train",
        ),
        ("trigger=listing", "mymod.Listing.observe returned [0] (a list): expected a non-empty str"),
        (
            "trigger=typowant",
            "mymod.TypoWant.wants returned {'batch': frozenset({'prediction'})} (a dict): expected a dict "
            "{name: Want(keys, needs)}",
        ),
        ("selection=future", "mymod.Future.select returned keys not seen yet, e.g. ["),
        ("selection=twice", "mymod.Twice.select returned keys with "),
    ],
    ids=["trigger-bool", "trigger-list", "wants-typo", "selection-future", "selection-twice"],
)
def test_a_wrong_return_stops_the_run_before_training_without_a_folder(tmp_path, override, line):
    group = override.split("=")[0]
    done = _user_run(tmp_path, override)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "ctsim: invalid config:", done.stderr
    assert len(lines) == 2 and f"{group}._target_: {line}" in lines[1], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # found on the first batch, before the run wrote anything


def test_a_wrong_return_found_mid_run_fails_the_run_and_says_why(tmp_path):
    done = _user_run(tmp_path, "trigger=latefalse")
    assert done.returncode == 2, done.stderr
    expected = "mymod.LateFalse.observe returned False (a bool): expected a non-empty str"
    assert expected in done.stderr and "Traceback" not in done.stderr
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and expected in status["error"]
    assert not (tmp_path / "run" / "generations.parquet").exists()  # no tables of a broken run


# -- the checks themselves, on the contexts the loop builds -------------------------------------------


def _bad(body: str) -> object:
    space: dict = {"torch": torch, "Selection": Selection}
    exec(textwrap.dedent(f"class Policy:\n    def select(self, ctx):\n        {body}\n"), space)
    return space["Policy"]()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("return ctx.seen.clone()", "returned a Tensor: expected a ctsim.selection.Selection(keys, weights)"),
        ("return Selection(keys=ctx.seen.float())", "keys as a torch.float32 tensor of shape (5,): expected"),
        ("return Selection(keys=ctx.seen.tolist())", "keys as a list: expected a 1-d torch.long tensor"),
        ("return Selection(keys=ctx.since_trigger)", "share memory with the context's (a view)"),
        ("return Selection(keys=ctx.seen - 1)", "keys not seen yet, e.g. [-1]"),
        ("return Selection(keys=ctx.seen.clone(), weights=torch.ones(2))", "weights as a torch.float32"),
        ("return Selection(keys=ctx.seen.clone(), weights=-torch.ones(5))", "one finite weight ≥ 0 per key"),
    ],
    ids=["tensor", "float", "list", "view", "unseen", "weights-length", "weights-negative"],
)
def test_select_names_what_is_wrong_with_a_selection(body, expected):
    ctx = context_from_intervals([[0, 1], [2, 3, 4]])
    with pytest.raises(ConfigError, match=r"selection\._target_: .*Policy\.select returned") as e:
        select(_bad(body), ctx)
    assert expected in str(e.value)


def test_select_passes_a_right_selection_through():
    ctx = context_from_intervals([[0, 1], [2, 3, 4]])
    chosen = select(_bad("return Selection(keys=ctx.since_trigger.clone(), weights=torch.ones(3))"), ctx)
    assert chosen.keys.tolist() == [2, 3, 4] and chosen.weights.tolist() == [1.0, 1.0, 1.0]
    assert select(_bad("return Selection(keys=ctx.seen[:0].clone())"), ctx).keys.tolist() == []  # skipped


def test_decide_refuses_an_empty_reason_and_a_short_observe_many():
    stream = toy_stream([2, 2])
    seen = stream.arrival_order[:2]
    ctx = TriggerContext(stream.batches[0], seen, seen, 0, stream)

    class Blank:
        def observe(self, ctx):
            return ""

    class Together:
        @staticmethod
        def observe_many(triggers, contexts):
            return ["one reason for all"]

        def observe(self, ctx):
            return "one"

    with pytest.raises(ConfigError, match=r"Blank.observe returned '' \(a str\): expected a non-empty str"):
        decide([Blank()], [ctx])
    with pytest.raises(
        ConfigError, match=r"Together.observe_many returned .*one reason \(or None\) per trigger, 2"
    ):
        decide([Together(), Together()], [ctx, ctx])
    assert decide([Together()], [ctx])[0] == ["one reason for all"]


def test_a_selection_that_keeps_nothing_is_named_as_the_reason_no_model_trained(tmp_path):
    """Its trigger fired at every batch: "its trigger never fired" used to send the user to the wrong
    policy."""
    done = _user_run(tmp_path, "selection=nothing", "trigger=always", "population.variants={}")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "its trigger never fired" not in done.stderr
    assert done.stderr.strip().endswith(
        "trigger fired 6 times, but its selection chose no samples (skipped.parquet): "
        "a selection that keeps the data it is given"
    ), done.stderr
