"""A resume refuses a run whose user's own model module changed, as it refuses one whose ctsim code
changed: ``model._target_=my_net.Net`` with ``my_net.py`` in the folder the run started in. The run is
tiny (SEA at a tenth, one epoch) and stopped after its first decision point, in this process, with the
working folder on the import path as ``python -m ctsim`` has it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from ctsim.app.resume import resume
from ctsim.registry import read_status
from ctsim.registry.store import ResumeError, RunStore

from .conftest import run, small
from .test_cli import tree
from .test_registry import MY_NET

MODULE = "ctsim_test_user_net"  # a name no other test imports: sys.modules keeps what it imported
NET = MY_NET  # the user's model of tests/test_registry.py, under a module name of its own


@pytest.fixture
def interrupted(tmp_path, monkeypatch) -> Path:
    """A run of the user's own ``Net``, interrupted (Ctrl-C) after its first decision point."""
    user = tmp_path / "user"
    user.mkdir()
    (user / f"{MODULE}.py").write_text(NET)
    monkeypatch.chdir(user)
    monkeypatch.syspath_prepend(str(user))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    record = RunStore.record

    def record_then_stop(self, gens):
        record(self, gens)
        raise KeyboardInterrupt

    model = ["model=mlp", f"model._target_={MODULE}.Net", "~model.hidden"]
    args = small(
        tmp_path,
        *model,
        "dataset=sea",
        "dataset.size=0.1",
        "train.epochs=1",
        "trigger=time",
        "population.variants={}",
        "population.seeds=[0]",
    )
    out = user / "run"
    with monkeypatch.context() as m:
        m.setattr(RunStore, "record", record_then_stop)
        with pytest.raises(KeyboardInterrupt):
            run(args, out)
    assert read_status(out)["status"] == "interrupted"
    yield out
    sys.modules.pop(MODULE, None)


def test_an_edited_user_module_is_refused_by_name_and_an_unchanged_one_resumes(interrupted, tmp_path):
    module = interrupted.parent / f"{MODULE}.py"
    module.write_text(NET.replace("return self.head(x)", "return self.head(x) * 2"))
    before = tree(interrupted)
    with pytest.raises(
        ResumeError, match=rf"other code or config.*\n  code {re.escape(str(module))}: changed"
    ):
        resume(interrupted, echo=False)
    assert tree(interrupted) == before  # refused before anything changed on disk

    module.write_text(NET)  # as it was when the run started
    outcome = resume(interrupted, echo=False)
    assert read_status(interrupted)["status"] == "finished" and read_status(interrupted)["attempts"] == 2
    assert outcome.tables["cost"]["triggers"].min() > 1  # it trained past the point it stopped at


def test_a_run_recorded_before_user_modules_were_hashed_resumes_as_before(interrupted):
    status = json.loads((interrupted / "status.json").read_text())
    assert list(status["user_files"]) == [f"{MODULE}.py"]  # recorded by path in the working folder
    del status["user_files"]  # a status.json written by a ctsim that did not record them
    (interrupted / "status.json").write_text(json.dumps(status))
    (interrupted.parent / f"{MODULE}.py").write_text(NET + "\n# an edit it has no record to tell from\n")
    resume(interrupted, echo=False)
    assert read_status(interrupted)["status"] == "finished"
