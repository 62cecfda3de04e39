"""The registry from the user's side: a run recorded as it goes, killed and resumed to the same tables,
a generation reproduced bitwise, and SQL over many runs (``ctsim query``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

from ctsim.app.resume import reproduce, resume
from ctsim.registry import load, load_many, query, read_status
from ctsim.registry.layout import JOURNAL, METRICS, TABLES
from ctsim.registry.store import ResumeError, RunStore, file_sha256

from .conftest import cli, own_experiment, run
from .test_cli import tree

# Three kinds of pipeline, two seeds: a time trigger; a trigger that reads the active model's accuracy
# (model signals, recomputed from loaded states on resume); uniform presampling (the pipeline's random
# generator) then loss downsampling (scores from the model about to be trained).
EXPERIMENT = """\
# @package _global_
defaults:
  - override /dataset: sea
  - override /model: mlp
name: resumable
dataset:
  size: 0.2
optimizer:
  lr: 0.05
train:
  epochs: 2
progress: false
output:
  plots: false
  eval_chunk: 2
population:
  seeds: [0, 1]
  variants:
    yearly: [trigger=time, trigger.every=1]
    accuracy: [trigger=performance, trigger.min_accuracy=0.8]
    uniform_loss: [trigger=time, trigger.every=3, selection=uniform, selection.fraction=0.5,
                   selection/downsample=loss, selection.downsample.fraction=0.5]
"""
TIMING = ("train_s", "trigger_s", "selection_s", "eval_s", "total_s")  # seconds differ between any two runs


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> Path:
    """A user's folder with their own experiment (--config-dir) and a data root."""
    return own_experiment(tmp_path_factory.mktemp("user"), "resumable", EXPERIMENT)


def overrides(user: Path) -> list[str]:
    return ["experiment=resumable", f"dataset.root={user / 'datasets'}"]


@pytest.fixture(scope="module")
def uninterrupted(user) -> Path:
    """The run never interrupted, in this process."""
    out = user / "runs" / "uninterrupted"
    run([*overrides(user), f"hydra.searchpath=[file://{user / 'configs'}]"], out)
    return out


def assert_same_tables(a: Path, b: Path) -> None:
    """Every table of two runs equal, but for the seconds things took."""
    for t in TABLES:
        x, y = pl.read_parquet(a / f"{t}.parquet"), pl.read_parquet(b / f"{t}.parquet")
        assert_frame_equal(x.drop(TIMING, strict=False), y.drop(TIMING, strict=False), check_exact=True)


def start(user: Path, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "ctsim", *args]
    return subprocess.Popen(cmd, cwd=user, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_when(proc: subprocess.Popen, ready, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` as soon as ``ready()`` holds (polled every few milliseconds)."""
    deadline = time.monotonic() + 300
    while not ready():
        assert proc.poll() is None, f"the run ended before it could be stopped: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.003)
    proc.send_signal(sig)
    proc.communicate(timeout=120)


def parts(run_dir: Path, kind: str) -> list[Path]:
    return sorted((run_dir / JOURNAL).glob(f"{kind}-*.parquet"))


def test_a_killed_run_resumes_to_the_tables_of_an_uninterrupted_run(user, uninterrupted):
    out = user / "runs" / "killed"
    args = ["--config-dir", "configs", *overrides(user), f"hydra.run.dir={out}"]

    # 1. SIGKILL while it trains: three decision points saved
    stop_when(start(user, args), lambda: len(parts(out, "point")) >= 3)
    assert read_status(out)["status"] == "running"  # killed outright: it could not say
    # what was saved is readable at once, and is what the uninterrupted run has for those generations
    partial = load(out)["generations"].collect()
    assert len(partial) >= 3
    key = ["pipeline", "seed", "generation"]
    done = pl.read_parquet(uninterrupted / "generations.parquet").join(partial.select(key), on=key)
    drop = ["train_s"]
    assert_frame_equal(partial.drop(drop).sort(key), done.drop(drop).sort(key), check_exact=True)
    saved = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (out / "checkpoints").rglob("*.pt")}
    committed = set(partial.select(key).rows())

    # 2. resume, SIGTERM while it trains (a cluster pre-empting it): interrupted, said in one line
    proc = start(user, ["resume", str(out)])
    stop_when(proc, lambda: len(parts(out, "point")) >= len(committed) + 3, signal.SIGTERM)
    assert proc.returncode == 130
    assert read_status(out)["status"] == "interrupted"

    # 3. resume, SIGKILL while it evaluates: two chunks of evaluations written
    stop_when(start(user, ["resume", str(out)]), lambda: len(parts(out, "eval")) >= 2)
    evaluated = load(out)["evals"].collect()
    assert evaluated.height > 0 and evaluated["active"].null_count() == evaluated.height  # known at the end

    # 4. resume to the end
    finished = cli(["resume", str(out)], cwd=user)
    assert finished.returncode == 0, finished.stderr
    assert_same_tables(out, uninterrupted)
    record = read_status(out)
    assert record["status"] == "finished" and record["attempts"] == 4
    assert not (out / JOURNAL).exists()
    # no generation saved before the first kill was trained (or written) again
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in saved} == saved
    gens = pl.read_parquet(out / "generations.parquet")
    assert committed <= set(gens.select(key).rows())
    for row in gens.iter_rows(named=True):
        assert file_sha256(out / row["checkpoint"]) == row["checkpoint_sha256"]


@pytest.fixture(scope="module")
def interrupted(user, uninterrupted, tmp_path_factory) -> Path:
    """The run interrupted (Ctrl-C) after its fifth decision point that trained, in this process."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    record, calls = RunStore.record, []

    def record_then_stop(self, gens):
        record(self, gens)
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as m:
        m.setattr(RunStore, "record", record_then_stop)
        with pytest.raises(KeyboardInterrupt):
            run([*overrides(user), f"hydra.searchpath=[file://{user / 'configs'}]"], out)
    assert read_status(out)["status"] == "interrupted"
    return out


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def test_a_corrupt_checkpoint_is_found_by_its_checksum_and_trained_again(
    interrupted, uninterrupted, tmp_path, capsys
):
    out = copy_of(interrupted, tmp_path)
    victim = sorted((out / "checkpoints").rglob("*.pt"))[1]
    victim.write_bytes(victim.read_bytes()[:-7] + b"corrupt")
    status = json.loads((out / "status.json").read_text())
    assert status["cpu_threads"] == torch.get_num_threads()  # recorded: CPU rounding depends on it
    status["cpu_threads"] += 1  # as if the run had had another thread count
    (out / "status.json").write_text(json.dumps(status))
    with pytest.warns(UserWarning, match=f"checkpoint {victim} does not match its SHA-256.*trained again"):
        outcome = resume(out, echo=True)
    err = capsys.readouterr().err
    assert f"the run used {torch.get_num_threads() + 1} CPU thread(s)" in err and "OMP_NUM_THREADS" in err
    assert outcome.store.retrained == [str(victim)]
    assert_same_tables(out, uninterrupted)


def test_what_a_resume_refuses_leaves_the_folder_as_it_was(interrupted, uninterrupted, user, tmp_path):
    out = copy_of(interrupted, tmp_path)
    status = json.loads((out / "status.json").read_text())

    def refused(match: str, folder: Path = out) -> None:
        before = tree(folder)
        with pytest.raises(ResumeError, match=match):
            resume(folder, echo=False)
        assert tree(folder) == before

    status["config"]["run"]["optimizer"]["lr"] = 0.5  # as if conf/ had changed since
    (out / "status.json").write_text(json.dumps(status))
    refused(r"other code or config.*\n  config run\.optimizer\.lr: 0\.5 then, 0\.05 now")
    status["config"]["run"]["optimizer"]["lr"] = 0.05
    status["code_files"]["ctsim/simulation.py"] = "0" * 16
    (out / "status.json").write_text(json.dumps(status))
    refused(r"other code or config.*\n  code ctsim/simulation\.py: changed")
    status["code_files"] = json.loads((interrupted / "status.json").read_text())["code_files"]
    status["data_hash"] = "0" * 32  # as if the dataset had been prepared again from other files
    (out / "status.json").write_text(json.dumps(status))
    refused("the dataset is not the one the run was made with")
    status["data_hash"] = json.loads((interrupted / "status.json").read_text())["data_hash"]
    sleeper = subprocess.Popen(["sleep", "60"])  # a live process, as if the run were still going
    try:
        (out / "status.json").write_text(json.dumps({**status, "status": "running", "pid": sleeper.pid}))
        refused(f"the run is still running \\(process {sleeper.pid}\\); stop it first")
    finally:
        sleeper.kill()
    refused("the run has finished; there is nothing to resume", uninterrupted)
    refused("is not a ctsim run folder: it has no readable status.json", user / "configs")
    # from the command line: one line, exit code 2
    result = cli(["resume", str(uninterrupted)], cwd=user)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("ctsim resume: ") and "nothing to resume" in result.stderr


def test_a_read_only_run_folder_is_refused_before_training(interrupted, tmp_path):
    out = copy_of(interrupted, tmp_path)
    os.chmod(out, 0o555)
    try:
        probe = out / "probe"
        try:
            probe.mkdir()
        except OSError:
            pass
        else:
            probe.rmdir()
            pytest.skip("this user can write into a read-only folder (root)")
        with pytest.raises(ResumeError, match=r"a resume writes into the run folder, but .* is not writable"):
            resume(out, echo=False)
    finally:
        os.chmod(out, 0o755)


def test_reproduce_trains_a_generation_again_and_compares_it_bitwise(uninterrupted, user, tmp_path):
    gens = pl.read_parquet(uninterrupted / "generations.parquet")
    # a generation trained in a decision point with other jobs, fine-tuned from a parent
    shared = gens.group_by("trigger_batch").len().filter(pl.col("len") > 2)["trigger_batch"]
    row = gens.filter(pl.col("trigger_batch").is_in(shared.implode()), pl.col("parent").is_not_null()).row(
        -1, named=True
    )
    args = ["--pipeline", row["pipeline"], "--seed", str(row["seed"]), "--generation", str(row["generation"])]
    same = cli(["reproduce", str(uninterrupted), *args], cwd=user)
    assert same.returncode == 0, same.stderr
    assert "parameters equal the saved checkpoint bitwise" in same.stdout
    before = tree(uninterrupted)
    # a checkpoint that is not what training gives: the parameters differ, exit code 1
    copy = copy_of(uninterrupted, tmp_path)
    path = copy / row["checkpoint"]
    state = torch.load(path, weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 1e-6
    torch.save(state, path)
    same, report = reproduce(copy, row["pipeline"], row["seed"], row["generation"])
    assert not same and "parameters differ from the saved checkpoint in 1 of" in report
    assert tree(uninterrupted) == before  # reproduce writes nothing


def test_checkpoints_hold_plain_tensors_with_their_checksums(uninterrupted):
    gens = pl.read_parquet(uninterrupted / "generations.parquet")
    assert gens["checkpoint_sha256"].null_count() == 0
    for row in gens.head(5).iter_rows(named=True):
        path = uninterrupted / row["checkpoint"]
        assert file_sha256(path) == row["checkpoint_sha256"]
        assert all(isinstance(v, torch.Tensor) for v in torch.load(path, weights_only=True).values())


def test_the_runs_table_says_what_each_run_was_made_from(uninterrupted, interrupted):
    runs = load_many([uninterrupted, interrupted], unfinished=True)["runs"].collect().sort("status")
    assert runs["status"].to_list() == ["finished", "interrupted"]
    row = runs.row(0, named=True)
    assert row["seeds"] == [0, 1] and row["device"] == "cpu" and row["torch"] == torch.__version__
    assert row["config_hash"] == runs["config_hash"][1]  # the same config
    assert json.loads(row["config"])["run"]["name"] == "resumable"
    assert row["git_commit"] is None or len(row["git_commit"]) == 40
    assert row["started"] <= row["ended"]


def test_query_from_the_command_line_over_several_runs(uninterrupted, interrupted, user, tmp_path):
    best = (
        "SELECT run, seed, pipeline, composite_accuracy FROM cost c WHERE composite_accuracy = "
        "(SELECT MAX(composite_accuracy) FROM cost d WHERE d.seed = c.seed AND d.run = c.run) ORDER BY seed"
    )
    runs = [str(uninterrupted), str(interrupted)]
    shown = subprocess.run(
        [sys.executable, "-m", "ctsim", "query", best, *runs, "--csv"],
        capture_output=True,
        text=True,
        cwd=user,
    )
    assert shown.returncode == 0, shown.stderr
    got = pl.read_csv(shown.stdout.encode())
    cost = pl.read_parquet(uninterrupted / "cost.parquet")
    for seed in (0, 1):  # the interrupted run has no cost table yet: only the finished one answers
        mine = cost.filter(pl.col("seed") == seed)
        assert got.filter(pl.col("seed") == seed)["pipeline"].to_list() == [
            mine.sort("composite_accuracy")["pipeline"][-1]
        ]
    assert set(got["run"]) == {str(uninterrupted)}
    # to parquet, and a markdown table
    target = tmp_path / "best.parquet"
    assert (
        subprocess.run(
            [sys.executable, "-m", "ctsim", "query", best, *runs, "--parquet", str(target)], cwd=user
        ).returncode
        == 0
    )
    assert_frame_equal(pl.read_parquet(target), got, check_dtypes=False)
    # a bad query names what there is
    bad = subprocess.run(
        [sys.executable, "-m", "ctsim", "query", "SELECT * FROM costs", *runs], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "costs" in bad.stderr and "  cost: pipeline, seed, triggers" in bad.stderr
    assert "  runs: run, status" in bad.stderr


def test_the_readme_queries_answer_from_the_tables(uninterrupted, interrupted):
    tables = load_many([uninterrupted, interrupted], unfinished=True)
    # every generation trained on data of slices t10 to t20 only (the README's 1950 to 1960, on SEA)
    window = query(
        "SELECT run, pipeline, seed, generation FROM generations "
        "WHERE first_label >= 't10' AND last_label <= 't20'",
        tables,
    )
    gens = pl.concat(
        [pl.read_parquet(uninterrupted / "generations.parquet"), load(interrupted)["generations"].collect()]
    )
    years = pl.col("first_slice").is_between(10, 20) & pl.col("last_slice").is_between(10, 20)
    expected = gens.filter(years)
    assert len(window) == len(expected) > 0
    # accuracy of the active model on the last 10 slices, per finished run and pipeline
    last = query(
        "SELECT e.run, e.pipeline, AVG(e.value) AS accuracy FROM evals e JOIN runs r ON e.run = r.run "
        "WHERE r.status = 'finished' AND e.metric = 'accuracy' AND e.active "
        "AND e.slice >= (SELECT MAX(slice) - 9 FROM evals) GROUP BY e.run, e.pipeline ORDER BY e.pipeline",
        tables,
    )
    evals = pl.read_parquet(uninterrupted / "evals.parquet")
    top = evals["slice"].max()
    mine = (
        evals.filter(pl.col("metric") == "accuracy", pl.col("active"), pl.col("slice") >= top - 9)
        .group_by("pipeline")
        .agg(pl.col("value").mean())
        .sort("pipeline")
    )
    assert last["pipeline"].to_list() == mine["pipeline"].to_list()
    assert last["accuracy"].to_list() == pytest.approx(mine["value"].to_list())


def test_a_finished_run_leaves_no_journal_and_prunes_checkpoints_at_the_end(user, tmp_path):
    out = tmp_path / "run"
    outcome = run(
        [
            *overrides(user),
            f"hydra.searchpath=[file://{user / 'configs'}]",
            "output.checkpoints=none",
            "population.only=[yearly]",
            "population.seeds=[0]",
        ],
        out,
    )
    assert not (out / JOURNAL).exists() and not (out / "checkpoints").exists()
    gens = outcome.tables["generations"]
    assert gens["checkpoint"].null_count() == len(gens)
    assert gens["checkpoint_sha256"].null_count() == 0  # the state's checksum stays on record


MY_NET = """\
from torch import nn
class Net(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(input_shape[0], num_classes)
    def forward(self, x):
        return self.head(x)
"""


def test_a_killed_run_of_a_users_own_model_resumes_from_another_folder(tmp_path):
    """``python -m ctsim`` imports ``_target_: my_net.Net`` from the folder it starts in; a resume from
    another folder (or by the ``ctsim`` script, whose import path never holds it) imports it from there.
    It once stopped with ModuleNotFoundError."""
    user, elsewhere = tmp_path / "user", tmp_path / "elsewhere"
    user.mkdir(), elsewhere.mkdir()
    (user / "my_net.py").write_text(MY_NET)
    out = user / "run"
    model = ["model=mlp", "model._target_=my_net.Net", "~model.hidden"]
    args = [*model, "dataset=sea", "dataset.size=0.2", "train.epochs=10", "train.batch_size=8"]
    proc = start(user, [*args, "progress=false", f"hydra.run.dir={out}"])
    stop_when(proc, lambda: len(parts(out, "point")) >= 2)
    done = cli(["resume", str(out)], cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert read_status(out)["status"] == "finished" and read_status(out)["attempts"] == 2


def test_a_replay_that_chooses_other_samples_stops_rather_than_mix_two_runs(interrupted, tmp_path):
    out = copy_of(interrupted, tmp_path)
    part = sorted((out / JOURNAL).glob("point-*.parquet"))[-1]
    rows = pl.read_parquet(part)
    rows.with_columns(pl.col("keys").list.slice(1)).write_parquet(part)  # one sample fewer on record
    with pytest.raises(ResumeError, match="the replay chose other training samples than the saved run"):
        resume(out, echo=False)
    assert read_status(out)["status"] == "failed"


def _store(folder: Path) -> RunStore:
    """A journal for one pipeline over three slices (what the evaluation parts read of a run)."""
    stream = SimpleNamespace(num_slices=3, slice_labels=["a", "b", "c"])
    return RunStore(folder, stream, [SimpleNamespace(name="p", seed=0)])


def test_an_evaluation_chunk_reads_back_every_metric_as_written(tmp_path):
    gens = [SimpleNamespace(pipeline=0, index=g) for g in (0, 1)]
    metrics = {m: torch.rand(2, 3, dtype=torch.float64) for m in METRICS}
    metrics["auroc"][:, 2] = float("nan")  # a slice of one class
    writer = _store(tmp_path)
    assert writer.saved_evaluation(gens) is None
    writer.record_evaluation(gens, metrics, torch.tensor([4, 4, 1]), torch.tensor([0.5, 0.25]))
    found, seconds = _store(tmp_path).saved_evaluation(gens)
    assert list(found) == list(METRICS) and seconds.tolist() == [0.5, 0.25]
    for m in METRICS:
        assert torch.equal(found[m].nan_to_num(-1.0), metrics[m].nan_to_num(-1.0)), m


def test_an_evaluation_journal_without_auroc_is_refused_by_name(tmp_path):
    old = {"pipeline": "p", "seed": 0, "generation": 0, "slice_label": "a", "n": 4, "eval_s": 0.5}
    rows = [
        {**old, "slice": s, "metric": m, "value": 1.0} for m in ("accuracy", "macro_f1") for s in range(3)
    ]
    (tmp_path / JOURNAL).mkdir()
    pl.DataFrame(rows).write_parquet(tmp_path / JOURNAL / "eval-00000.parquet")
    with pytest.raises(ResumeError, match=r"eval-00000\.parquet has no auroc rows: an older ctsim wrote it"):
        _store(tmp_path).saved_evaluation([SimpleNamespace(pipeline=0, index=0)])


def test_the_readme_query_of_the_last_week_compares_started_with_now(tmp_path):
    from datetime import datetime, timedelta, timezone

    for name, age in (("recent", timedelta(hours=1)), ("old", timedelta(days=30))):
        (tmp_path / name).mkdir()
        started = (datetime.now(timezone.utc) - age).isoformat(timespec="seconds")
        (tmp_path / name / "status.json").write_text(json.dumps({"status": "finished", "started": started}))
    tables = load_many([tmp_path / "recent", tmp_path / "old"], unfinished=True)
    readme = (  # the README's query, word for word: it once failed on a zoned `started`
        "SELECT e.run, e.pipeline, AVG(e.value) AS accuracy FROM evals e JOIN runs r ON e.run = r.run "
        "WHERE r.status = 'finished' AND r.started >= NOW() - INTERVAL '7 days' "
        "AND e.metric = 'accuracy' AND e.active AND e.slice >= (SELECT MAX(slice) - 9 FROM evals) "
        "GROUP BY e.run, e.pipeline ORDER BY accuracy DESC"
    )
    assert query(readme, tables).columns == ["run", "pipeline", "accuracy"]
    week = query("SELECT run FROM runs WHERE started >= NOW() - INTERVAL '7 days'", tables)
    assert week["run"].to_list() == [str(tmp_path / "recent")]


def test_query_never_overwrites_a_file_with_parquet(tmp_path, capsys):
    from ctsim.registry.read import main as query_main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "status.json").write_text(json.dumps({"status": "running"}))
    table = tmp_path / "run" / "cost.parquet"  # a run's own table, named by mistake
    table.write_bytes(b"PAR1 the run's table")
    assert query_main(["SELECT run FROM runs", str(tmp_path / "run"), "--parquet", str(table)]) == 2
    assert "--parquet" in capsys.readouterr().err and table.read_bytes() == b"PAR1 the run's table"
    fresh = tmp_path / "out" / "runs.parquet"
    assert query_main(["SELECT run FROM runs", str(tmp_path / "run"), "--parquet", str(fresh)]) == 0
    assert pl.read_parquet(fresh)["run"].to_list() == [str(tmp_path / "run")]
