"""The command line as a user meets it: every bad input is one clear line and exit code 2, before any
work, with no run folder left behind and no earlier file touched; Ctrl-C is one line and a marked run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from ctsim.app import cli
from ctsim.app.compose import complete, compose_run, variants
from ctsim.registry import load_many, read_status

from .conftest import REPO, build, run, small
from .conftest import cli as run_cli

NOT_WRITABLE = "/proc/ctsim-test/run"  # /proc refuses new folders, even to root


def user_folder(root: Path) -> Path:
    """Fill ``root`` as a user's working folder: an earlier, finished run, a file, two experiment files."""
    old = root / "old_run"
    (old / ".hydra").mkdir(parents=True)
    (old / ".hydra" / "config.yaml").write_text("name: old\n")
    (old / "evals.parquet").write_bytes(b"PAR1 earlier results")
    (old / "status.json").write_text('{"status": "finished"}\n')
    (root / "a_file").write_text("not a folder\n")
    mine = root / "my_conf" / "experiment"
    mine.mkdir(parents=True)
    (mine / "typo.yaml").write_text("# @package _global_\nname: typo\ntrian:\n  epochs: 3\n")
    (mine / "broken.yaml").write_text("# @package _global_\nname: broken\ntrain:\n  epochs: [1,\n  oops: 3\n")
    return root


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A user's working folder (:func:`user_folder`), the current directory for the test."""
    monkeypatch.chdir(tmp_path)
    return user_folder(tmp_path)


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a digest of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def main_exits(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """``python -m ctsim ARGV`` in this process: its exit code and stderr."""
    monkeypatch.setattr(sys, "argv", ["ctsim", *argv])
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code, capsys.readouterr().err


SEARCH = "hydra.searchpath=[file://{ws}/my_conf]"

# (overrides, text the message must hold): ids say what class of bad input each is
BAD_INPUTS = {
    "override dropped by variants": (
        ["experiment=quickstart", "trigger=amount", "trigger.every=500", "selection=all"],
        "trigger, trigger.every: the variants of quickstart set these too",
    ),
    "key inside a variant's group": (
        ["experiment=quickstart", "trigger.every=3"],
        "trigger.every: the variants of quickstart",
    ),
    "added key inside a variant's group": (
        ["experiment=quickstart", "+trigger.extra=1"],
        "trigger.extra: the variants",
    ),
    "sweep over a variant's key": (
        ["-m", "experiment=quickstart", "trigger.every=1,5"],
        "population.variants={}",
    ),
    "misspelled key": (["trigger.evry=3"], "trigger.evry: unknown key; did you mean trigger.every?"),
    "misspelled key while printing the config": (
        ["--cfg", "job", "trigger.evry=3"],
        "did you mean trigger.every?",
    ),
    "misspelled added group": (["+trian.epochs=3"], "trian: unknown key; did you mean train?"),
    "misspelled added key": (["+train.epoch=3"], "train.epoch: unknown key; did you mean train.epochs?"),
    "misspelled key in an experiment file": (
        ["experiment=typo", SEARCH],
        "trian: unknown key; did you mean train?",
    ),
    "YAML syntax error": (
        ["experiment=broken", SEARCH],
        "my_conf/experiment/broken.yaml, line 4: invalid YAML",
    ),
    "unknown option": (["model=resnet"], "model='resnet': expected one of the options ['bow', 'cnn', 'gru'"),
    "key of another option": (
        ["engine=batched", "engine.channels_last=true"],
        "; it is a key of engine=sequential",  # not: to add a new key (+engine.channels_last fails too)
    ),
    "bf16 on float64": (
        ["engine.dtype=float64", "engine.precision=bf16"],
        "engine.precision='bf16': expected fp32 with dtype=float64: bfloat16 autocast leaves float64",
    ),
    "option typo": (
        ["selection=al"],
        "selection='al': expected one of the options ['all', 'class_balanced', 'freshness', 'new', "
        "'reservoir', 'trigger_balanced', 'uniform', 'window'] (did you mean selection=all?)",  # no _base
    ),
    "nested group the option lacks": (
        ["trigger=performance", "trigger/detector=ks"],
        "trigger/detector=ks: the chosen trigger has no detector to choose: trigger/detector applies only to "
        "trigger=drift",
    ),
    "unknown dataset": (["dataset=imagenet"], "dataset='imagenet': expected one of the options"),
    "unknown experiment": (["experiment=nope"], "experiment='nope': expected one of the options"),
    "override syntax": (["trigger.every=[1,"], "not an override in Hydra's syntax"),
    "a value for a section": (["stream=5"], "stream=5: expected a section of keys"),
    "a key below a list": (
        ["population.seeds.x=1"],
        "population.seeds.x=1: Hydra cannot apply this override",
    ),
    "a list for a group": (["trigger=[1,2]"], "trigger=[1,2]: Hydra cannot apply this override"),
    "a list for the variants": (
        ["population.variants=[a,b]"],
        "Hydra cannot apply this override (ConfigTypeError",
    ),
    "a new variant without +": (
        ["population.variants.x=abc"],
        "to add a new key: +population.variants.x=abc",
    ),
    "a word for the chosen variants": (
        ["population.only=yearly"],
        "population.only='yearly': expected a list",
    ),
    "a target that cannot be imported": (
        ["model._target_=nope.Nope"],
        "model._target_='nope.Nope': expected a class or function ctsim can import",
    ),
    "a sweep with one bad job": (
        ["-m", "train.epochs=1,0"],
        "train.epochs=0: expected an integer ≥ 1  [sweep job #1",
    ),
    "infinite lr": (["optimizer.lr=inf"], "optimizer.lr=inf: expected a finite number > 0"),
    "nan lr": (["optimizer.lr=nan"], "optimizer.lr=nan: expected a finite number > 0"),
    "negative lr": (["optimizer.lr=-1"], "optimizer.lr=-1: expected a number > 0"),
    "momentum": (["optimizer.momentum=1.5"], "optimizer.momentum=1.5: expected a number in [0, 1)"),
    "infinite weight decay": (
        ["optimizer.weight_decay=inf"],
        "optimizer.weight_decay=inf: expected a finite",
    ),
    "epochs": (["train.epochs=0"], "train.epochs=0: expected an integer ≥ 1"),
    "batch size": (["train.batch_size=-5"], "train.batch_size=-5: expected an integer ≥ 1"),
    "init": (["train.init=warm"], "train.init='warm': expected one of ['finetune', 'scratch']"),
    "infinite clip": (["train.clip_grad_norm=inf"], "train.clip_grad_norm=inf"),
    "freeze unknown": (["train.freeze=[backbone]"], "train.freeze=['backbone']: expected names or prefixes"),
    "dataset size": (["dataset.size=0"], "dataset.size=0: expected a number in (0, 1]"),
    "infinite dataset size": (["dataset.size=inf"], "dataset.size=inf: expected a finite number in (0, 1]"),
    "dataset cache flag": (["dataset.cache=maybe"], "dataset.cache='maybe': expected true or false"),
    "test fraction nan": (["stream.test_fraction=nan"], "stream.test_fraction=nan"),
    "arrival batch": (["stream.arrival_batch=0"], "stream.arrival_batch=0"),
    "mlp width": (["model=mlp", "model.hidden=0"], "model.hidden=0: expected a list of integers ≥ 1"),
    "token model on numbers": (  # shapes fit: it trained on features as token ids
        ["dataset=sea", "model=bow"],
        "model='ctsim.models.BagOfWords': expected a model that takes numbers",
    ),
    "embeddings of a model without embed": (  # once refused mid-run, in the run folder
        ["dataset=sea", "model._target_=tests.test_signal_needs.Plain", "~model.hidden", "trigger=drift"],
        "trigger.encoder: asks for the active model's embeddings, which model tests.test_signal_needs.Plain",
    ),
    "+ on a key the config has": (
        ["+trigger.every=5"],
        "+trigger.every=5: trigger.every is in the config already: + adds a new key; set it without the +: "
        "trigger.every=5",
    ),
    "cnn channels": (["model.channels=0"], "model.channels=0: expected an integer ≥ 1"),
    "device": (["device=gpu"], "device='gpu': expected one of ['auto', 'cpu', 'cuda']"),
    "no seeds": (["population.seeds=[]"], "population.seeds=[]: expected a non-empty list"),
    "repeated seeds": (["population.seeds=[0,0]"], "population.seeds=[0, 0]: expected a non-empty list"),
    "seed beyond 64 bits": (  # once a traceback midway, from the tables' 64-bit seed column
        ["population.seeds=[3,18446744073709551616]"],
        "population.seeds=[3, 18446744073709551616]: expected a non-empty list of distinct integers in "
        "[0, 2**63 - 1]",
    ),
    "data seed beyond 64 bits": (  # once a traceback midway, from torch.manual_seed
        ["dataset.seed=9223372036854775808", "stream.split_seed=18446744073709551616"],
        "dataset.seed=9223372036854775808: expected an integer in [0, 2**63 - 1]",
    ),
    "sweep price below zero": (  # once refused only when the sweep ended, after every job ran
        ["-m", "train.epochs=1,2", "hydra.callbacks.compare.price_per_hour=-3"],
        "hydra.callbacks.compare.price_per_hour=-3: expected a number ≥ 0",
    ),
    "sweep comparison switch": (  # once taken as true
        ["-m", "train.epochs=1,2", "hydra.callbacks.compare.enabled=nope"],
        "hydra.callbacks.compare.enabled='nope': expected true or false",
    ),
    "misspelled Hydra key": (
        ["-m", "train.epochs=1,2", "hydra.callbacks.compare.price_per_hr=3"],
        "compare.price_per_hr: unknown key; did you mean hydra.callbacks.compare.price_per_hour?",
    ),
    "sweep jobs sharing a folder": (  # once the second job wrote over the first one's run
        ["-m", "train.epochs=1,2", "hydra.sweep.subdir=fixed"],
        "hydra.sweep.subdir='fixed': expected a folder per job",
    ),
    "several values without -m": (
        ["train.epochs=1,2"],
        "train.epochs=1,2: several values are a sweep: add -m (--multirun)",
    ),
    "unknown variant chosen": (["population.only=[yearly,nope]"], "population.only=['yearly', 'nope']"),
    "variant chosen in a run without variants": (
        ["population.variants={}", "population.only=[yearly]"],
        "population.only=['yearly']: expected null: this run has no variants",
    ),
    "variant of a shared group": (
        ['+population.variants.data=["dataset.size=0.5"]'],
        "population.variants.data=['dataset.size=0.5']: expected overrides of",
    ),
    "variant with a bad option": (
        ['+population.variants.odd=["trigger=sometimes"]'],
        "odd:trigger='sometimes': expected one of the options ['always', 'amount'",
    ),
    "checkpoints": (["output.checkpoints=some"], "output.checkpoints='some'"),
    "eval chunk": (["output.eval_chunk=0"], "output.eval_chunk=0: expected an integer ≥ 1"),
    "plots flag": (["output.plots=maybe"], "output.plots='maybe': expected true or false"),
    "progress flag": (["progress=maybe"], "progress='maybe': expected true or false"),
    "name escaping results": (["name=../../escape"], "name='../../escape': expected letters"),
    "name with a letter Hydra reads only quoted": (  # once a lexer error
        ["name=wetter_ä"],
        "name=wetter_ä: Hydra reads only ASCII characters in a value that is not quoted: quote it, "
        "name='wetter_ä'",
    ),
    "name starting with a dot": (["name=.hidden"], "name='.hidden': expected letters (any alphabet)"),
    "name with a space": (["name=a b"], "name='a b'"),
    "precision": (["engine.precision=fp16"], "engine.precision='fp16'"),
    "route": (["engine.route=gpu"], "engine.route='gpu'"),
    "memory budget": (["engine.memory_budget=0"], "engine.memory_budget=0"),
    "eval batch": (["engine.eval_batch_size=0"], "engine.eval_batch_size=0"),
    "compile flag": (["engine.compile=yes"], "engine.compile='yes'"),
    "run folder is a file": (["hydra.run.dir={ws}/a_file"], "hydra.run.dir='{ws}/a_file': expected a folder"),
    "run folder holds a run": (["hydra.run.dir={ws}/old_run"], "it already holds files"),
    "run folder not writable": ([f"hydra.run.dir={NOT_WRITABLE}"], "is not writable"),
    "data root not writable": ([f"dataset.root={NOT_WRITABLE}"], "dataset.root='/proc/ctsim-test/run'"),
    "data root is a file": (["dataset.root={ws}/a_file"], "is a file"),
}


@pytest.mark.parametrize("argv,message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_clear_error_before_any_work(workspace, monkeypatch, capsys, argv, message):
    before = tree(workspace)
    ws = str(workspace)
    code, err = main_exits([a.replace("{ws}", ws) for a in argv], monkeypatch, capsys)
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("ctsim: invalid config:\n")
    assert message.replace("{ws}", ws) in err
    assert tree(workspace) == before  # no run folder made, no earlier file touched
    assert not Path("/proc/ctsim-test").exists()
    assert not (workspace / "../../escape").resolve().exists()  # where name=../../escape once made folders


def test_all_problems_are_reported_together_and_once(workspace, monkeypatch, capsys):
    argv = ["population.seeds=[]", "+train.epoch=3", "optimizer.lr=-1", "model.channels=0"]
    code, err = main_exits(argv, monkeypatch, capsys)
    assert code == 2
    lines = sorted(line.strip() for line in err.splitlines()[1:])
    assert len(lines) == 4, err  # a run-level value is named once, not once per variant
    assert lines[0].startswith("model.channels=0") and lines[1].startswith("optimizer.lr=-1")
    assert lines[2].startswith("population.seeds=[]") and lines[3].startswith("train.epoch: unknown key")


def test_what_hydra_cannot_apply_is_reported_together_before_torch_is_imported(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "ctsim",
            "model=resnet",
            "trigger.evry=3",
            "optimizer.lr=-1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert problems == [
        "  model='resnet': expected one of the options ['bow', 'cnn', 'gru', 'lstm', 'mlp', 'yearbooknet']",
        "  trigger.evry: unknown key; did you mean trigger.every?",
    ]  # the value optimizer.lr is checked once the command line composes
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "ctsim.app.compose" in imported and "torch" not in imported
    assert not (tmp_path / "results").exists()


def test_a_bad_device_names_the_key_the_user_sets(workspace, monkeypatch, capsys):
    code, err = main_exits(["device=gpu"], monkeypatch, capsys)
    assert code == 2 and err.splitlines()[1:] == ["  device='gpu': expected one of ['auto', 'cpu', 'cuda']"]


def test_a_problem_with_a_variants_own_value_is_named_after_it(workspace, monkeypatch, capsys):
    code, err = main_exits(['+population.variants.bad=["trigger.every=0"]'], monkeypatch, capsys)
    assert code == 2 and "bad:trigger.every=0: expected an integer ≥ 1" in err


# From a real command line (a subprocess), the cases the issue names one by one.


def test_the_readme_single_pipeline_example_runs_one_pipeline(tmp_path):
    args = [
        "population.variants={}",
        "trigger=amount",
        "trigger.every=500",
        "selection=all",
        *small(tmp_path, "dataset.size=0.02", "model=mlp", "train.epochs=1", "output.checkpoints=none"),
    ]
    result = run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cost = pl.read_parquet(tmp_path / "run" / "cost.parquet")
    assert cost["pipeline"].to_list() == ["quickstart"]
    gens = pl.read_parquet(tmp_path / "run" / "generations.parquet")
    assert all(r.startswith("amount:") and r.endswith("≥ 500") for r in gens["trigger_reason"].to_list())
    summary = (tmp_path / "run" / "summary.md").read_text()
    settings = yaml.safe_load(summary.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert settings["run"]["trigger"] == {"_target_": "ctsim.triggers.AmountTrigger", "every": 500}
    assert settings["run"]["selection"]["_target_"] == "ctsim.selection.AllData"
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "finished"


def test_the_obvious_command_runs_one_pipeline_named_after_its_trigger(tmp_path):
    args = ["dataset=sea", "trigger=drift", "dataset.size=0.05", "train.epochs=1", "progress=false"]
    result = run_cli([*args, "output.plots=false"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "results" / "runs" / "drift").iterdir()
    assert pl.read_parquet(run_dir / "cost.parquet")["pipeline"].to_list() == ["drift"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["overrides"][:2] == ["dataset=sea", "trigger=drift"]  # what it added is recorded after
    assert result.stdout.startswith("ctsim · drift · 1 pipeline(s)")


def test_which_pipelines_a_command_line_runs(workspace):
    """The rule of ctsim.app.compose.complete, composed as the run composes it."""
    cases = {
        (): ("quickstart", ["yearly", "every_5y", "never"]),
        ("train.epochs=1", "progress=false", "dataset.size=0.5"): (
            "quickstart",
            ["yearly", "every_5y", "never"],
        ),
        ("dataset=sea",): ("time", ["time"]),
        ("trigger.every=5",): ("time", ["time"]),
        ("trigger=amount", "selection=reservoir"): ("amount_reservoir", ["amount_reservoir"]),
        ("model=mlp", "trigger/detector=ks", "trigger=drift"): ("drift_mlp", ["drift_mlp"]),
        ("trigger=drift", "name=mine"): ("mine", ["mine"]),
        ("experiment=null",): ("time", ["time"]),
        ("experiment=null", "trigger=never"): ("never", ["never"]),
        ("~experiment",): ("time", ["time"]),
        ("population.variants={}", "trigger=amount"): ("quickstart", ["quickstart"]),  # as before
        ("experiment=portraits_yearly",): ("portraits_yearly", ["portraits_yearly"]),  # no variants
    }
    with cli._initialized():
        for given, (name, pipelines) in cases.items():
            overrides = complete(list(given))
            cfg, problems = compose_run("config", overrides)
            assert not problems, (given, problems)
            task = [str(o) for o in cfg.hydra.overrides.task]
            found, problems = variants(cfg, task, "config")
            assert not [p for p in problems if p is not None], (given, problems)
            assert (cfg.name, [v.name for v in found]) == (name, pipelines), given
        single = complete(["dataset=sea", "trigger=drift"])
        assert single == ["dataset=sea", "trigger=drift", "population.variants={}", "name=drift"]
        assert complete(["-m", "trigger=time,amount"])[-1] == "name=trigger_sweep"


def test_an_experiments_variants_take_a_run_override_they_do_not_set(workspace):
    with cli._initialized():
        overrides = complete(["experiment=quickstart", "selection=reservoir", "selection.size=300"])
        cfg, _ = compose_run("config", overrides)
        found, problems = variants(cfg, [str(o) for o in cfg.hydra.overrides.task], "config")
    assert not [p for p in problems if p is not None]
    assert [v.name for v in found] == ["yearly", "every_5y", "never"]
    assert {(v.config.selection._target_, v.config.selection.size) for v in found} == {
        ("ctsim.selection.Reservoir", 300)
    }


def test_a_run_that_cannot_measure_accuracy_is_refused_or_fails_with_the_reason(tmp_path):
    tiny = ["dataset=sea", "dataset.size=0.1", "train.epochs=1", "progress=false", "output.plots=false"]
    held_out = run_cli([*tiny, "stream.test_fraction=0"], cwd=tmp_path)
    assert held_out.returncode == 2 and "Traceback" not in held_out.stderr
    assert "stream.test_fraction=0.0: expected a fraction in (0, 1): no sample is held out" in held_out.stderr
    assert not list(tmp_path.iterdir())  # refused before training: no run folder, nor results/runs/time/
    two = ["dataset.slices=2", "dataset.change_points=[1]", "trigger.every=5"]
    late = run_cli([*tiny, *two, f"hydra.run.dir={tmp_path / 'two'}"], cwd=tmp_path)
    assert late.returncode == 1 and "Traceback" not in late.stderr
    assert late.stderr.strip().endswith(
        "no pipeline has an accuracy: time trained no model in the 2 slices (its trigger never fired): "
        "choose a trigger that fires sooner"
    )
    assert (tmp_path / "two" / "cost.parquet").is_file()  # what it did is kept, to look at


def test_a_users_own_experiment_with_variants_runs_from_their_config_dir(tmp_path):
    mine = tmp_path / "my_conf" / "experiment"
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /model: mlp\n"
        "name: mine\n"
        "population:\n  variants:\n    rare: [trigger=time, trigger.every=20]\n    once: [trigger=never]\n"
    )
    args = ["--config-dir", str(tmp_path / "my_conf"), "experiment=mine", f"hydra.run.dir={tmp_path / 'run'}"]
    args += small(tmp_path, "dataset.size=0.02", "train.epochs=1", "output.checkpoints=none")
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    gens = pl.read_parquet(tmp_path / "run" / "generations.parquet")
    assert gens.group_by("pipeline").len().sort("pipeline").rows() == [
        ("once", 1),
        ("rare", 4),
    ]  # 84 years: every 20th


def test_a_sweep_of_one_pipeline_runs_jobs_that_differ(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "population.variants={}", "trigger.every=10,20", f"hydra.sweep.dir={sweep}"]
    args += small(tmp_path, "dataset.size=0.02", "model=mlp", "train.epochs=1", "output.checkpoints=none")
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    triggers = [pl.read_parquet(sweep / job / "cost.parquet")["triggers"].item() for job in ("0", "1")]
    assert triggers == [8, 4]  # 84 yearly slices: every 10th, every 20th


def test_the_dropped_override_is_refused_from_the_command_line(tmp_path):
    result = run_cli(
        ["experiment=quickstart", "trigger=amount", "trigger.every=500", "selection=all"], cwd=tmp_path
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "yearly: trigger, trigger.every" in result.stderr and "population.variants={}" in result.stderr
    assert not (tmp_path / "results").exists()


ONCE_TRACEBACKS = {  # each gave a Python traceback (or made folders) before
    "YAML syntax error": (["experiment=broken", SEARCH], "broken.yaml, line 4: invalid YAML"),
    "model width": (["model=mlp", "model.hidden=0"], "model.hidden=0: expected a list of integers"),
    "run folder is a file": (
        ["hydra.run.dir={ws}/a_file"],
        "expected a folder for the run, but it is a file",
    ),
    "run folder not writable": ([f"hydra.run.dir={NOT_WRITABLE}"], "is not writable"),
    "data root not writable": ([f"dataset.root={NOT_WRITABLE}"], "is not writable"),
    "name outside results": (["name=../../escape"], "name='../../escape': expected letters"),
}


@pytest.mark.parametrize("argv,message", ONCE_TRACEBACKS.values(), ids=ONCE_TRACEBACKS.keys())
def test_from_the_command_line_a_bad_input_is_one_line_and_exit_code_2(workspace, argv, message):
    before = tree(workspace)
    ws = str(workspace)
    result = run_cli([a.replace("{ws}", ws) for a in argv], cwd=workspace)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "ctsim: invalid config:"
    assert "Traceback" not in result.stderr and message.replace("{ws}", ws) in result.stderr
    assert tree(workspace) == before and not (workspace / "../../escape").resolve().exists()


def test_cfg_job_shows_what_each_pipeline_runs(tmp_path):
    result = run_cli(["--cfg", "job", "train.epochs=2"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_part, pipelines_part = result.stdout.split("# Pipelines:", 1)
    assert yaml.safe_load(run_part)["train"]["epochs"] == 2
    pipelines = yaml.safe_load(pipelines_part.split("\n", 1)[1])["pipelines"]
    assert pipelines["every_5y"] == {"trigger": {"every": 5}}
    assert pipelines["never"]["trigger"]["_target_"] == "ctsim.triggers.NeverTrigger"
    assert pipelines["yearly"] == {}
    assert not (tmp_path / "results").exists()


def test_help_answers_without_importing_torch(tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ctsim", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "Configuration groups" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "ctsim.app.cli" in imported and "torch" not in imported


def test_a_finished_run_folder_is_never_touched(tmp_path):
    old = tmp_path / "old_run"
    (old / ".hydra").mkdir(parents=True)
    files = {".hydra/config.yaml": "name: old\n", ".hydra/overrides.yaml": "[]\n", "evals.parquet": "x"}
    for rel, text in files.items():
        (old / rel).write_text(text)
    stamps = {rel: (old / rel).stat().st_mtime_ns for rel in files}
    result = run_cli([f"hydra.run.dir={old}", "population.only=[never]"], cwd=tmp_path)
    assert result.returncode == 2
    assert "it already holds files" in result.stderr and "Traceback" not in result.stderr
    assert {rel: (old / rel).read_text() for rel in files} == files
    assert {rel: (old / rel).stat().st_mtime_ns for rel in files} == stamps
    assert sorted(p.name for p in old.iterdir()) == [".hydra", "evals.parquet"]


def test_ctrl_c_is_one_line_and_marks_the_run_interrupted(tmp_path):
    out = tmp_path / "run"
    args = small(tmp_path, "dataset.size=0.05", "train.epochs=3", f"hydra.run.dir={out}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctsim", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    header = proc.stdout.readline()  # printed when the run starts, before the data is loaded
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert (
        header.startswith("ctsim · quickstart · 3 pipeline(s)") and "run folder run/" in header
    )  # under cwd
    assert proc.returncode == 130
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.startswith("ctsim:")]
    assert message == [
        "ctsim: interrupted; the partial run is in run/ (status.json: interrupted); "
        "finish it with: python -m ctsim resume run"
    ]
    assert read_status(out)["status"] == "interrupted"
    assert not (out / "evals.parquet").exists()


def test_a_ctrl_c_the_moment_the_first_line_shows_marks_the_run_interrupted(tmp_path, monkeypatch):
    """The user sees the run's first line and presses Ctrl-C at once: the status must say interrupted,
    as the message does (it once stayed ``running``, the interrupt landing before the run's handler)."""
    from ctsim.app.execute import execute

    class PressedAfterTheHeader:
        def write(self, text):
            if text.startswith("ctsim ·"):
                raise KeyboardInterrupt
            return len(text)

        def flush(self):
            pass

    plan = build(small(tmp_path, "dataset.size=0.05", "population.only=[never]"))
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "stdout", PressedAfterTheHeader())
    with pytest.raises(KeyboardInterrupt):
        execute(plan, out, echo=True)
    assert read_status(out)["status"] == "interrupted"


def test_load_many_leaves_out_unfinished_runs_and_says_so(tmp_path):
    done = run(
        small(tmp_path, "dataset.size=0.02", "model=mlp", "train.epochs=1", "population.only=[never]"),
        tmp_path / "runs" / "done",
    )
    assert read_status(done.out_dir)["status"] == "finished"
    interrupted = tmp_path / "runs" / "interrupted"
    interrupted.mkdir()
    (interrupted / "status.json").write_text('{"status": "interrupted"}')
    half = tmp_path / "runs" / "half"
    half.mkdir()
    (half / "evals.parquet").write_bytes((done.out_dir / "evals.parquet").read_bytes())
    with pytest.warns(UserWarning, match=r"left out 2 unfinished run\(s\)") as record:
        tables = load_many(tmp_path / "runs")
    text = str(record[0].message)
    assert (
        "interrupted (interrupted, no evals" in text
        and "half (finished, no generations, cost, lineage, quality)" in text
    )
    assert tables["cost"].collect()["run"].unique().to_list() == [str(done.out_dir)]


def test_a_pipeline_whose_every_generation_diverged_shows_no_accuracy(tmp_path):
    outcome = run(
        small(
            tmp_path,
            "dataset.size=0.02",
            "model=mlp",
            "optimizer.lr=1e30",
            "train.epochs=3",  # the first step is finite; the next ones are not
            "population.only=[never,every_5y]",
        ),
        tmp_path / "run",
    )
    cost = outcome.tables["cost"]
    assert (cost["nonfinite_generations"] == cost["triggers"]).all()
    assert cost["composite_accuracy"].is_null().all()
    rows = [line for line in outcome.summary.splitlines() if line.startswith(("never", "every_5y"))]
    assert len(rows) == 2 and all("non-finite" in row for row in rows)
    assert "all of them did, so it has no accuracy" in (tmp_path / "run" / "summary.md").read_text()


def test_the_wall_time_includes_loading_the_data(tmp_path, monkeypatch):
    from ctsim.datasets import Portraits

    load = Portraits.load

    def slow_load(self):
        import time

        time.sleep(1.5)
        return load(self)

    monkeypatch.setattr(Portraits, "load", slow_load)
    outcome = run(
        small(tmp_path, "dataset.size=0.02", "model=mlp", "train.epochs=1", "population.only=[never]"),
        tmp_path / "run",
    )
    wall = float(outcome.summary.split("wall time ", 1)[1].split(" s", 1)[0])
    assert wall >= 1.5 + outcome.result.wall_seconds - 0.1


@pytest.mark.parametrize("group", ["trigger", "trigger/detector"])
def test_help_on_a_group_names_its_options_and_how_to_see_one(monkeypatch, capsys, group):
    """``--help trigger`` once failed in Hydra's override parser ("Error parsing override")."""
    code, err = main_exits(["--help", group], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err and "Error parsing" not in err
    options = sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml") if not p.stem.startswith("_"))
    assert err.strip() == (
        f"ctsim: {group} is a group: --help lists its options; --help {group}={options[0]} shows the keys "
        f"of one (options: {', '.join(options)})"
    )
