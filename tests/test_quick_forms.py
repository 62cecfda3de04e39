"""The case studies' quick forms (conf/experiment/<study>_quick.yaml) and experiments/validate_quick.py."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from scipy import stats

from ctsim.app.cli import CONF_DIR
from ctsim.registry import load
from ctsim.reports import significance

from .conftest import REPO, run, small

sys.path.insert(0, str(REPO / "experiments"))
import validate_quick
from study import quick_knobs, variant_groups
from validate_quick import Accuracy, checks, from_report

STUDIES = ("portraits_triggers", "portraits_drift", "portraits_selection", "portraits_yearly")


def composed(experiment: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="test"):
        return compose("config", overrides=[f"experiment={experiment}"])


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python experiments/<name> ARGS`` from the repository, as a user runs it."""
    command = [sys.executable, str(REPO / "experiments" / name), *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("study", STUDIES)
def test_a_quick_form_changes_only_its_documented_knobs(study):
    full, quick = composed(study), composed(f"{study}_quick")
    assert (full.dataset.size, full.model.channels, full.optimizer.lr) == (1.0, 32, 0.001)
    if (
        study == "portraits_selection"
    ):  # a year as many batches as at full size, and Modyn's lr (see the file)
        assert (quick.dataset.size, quick.model.channels, quick.optimizer.lr) == (0.2, 16, 0.001)
        assert quick.train.batch_size == 16  # 64 × 0.2 = 12.8, up to a power of two
        assert {**quick.train, "batch_size": 64} == {**full.train}
    else:
        assert (quick.dataset.size, quick.model.channels, quick.optimizer.lr) == (0.2, 16, 0.005)
        assert quick.train == full.train
    assert quick.train.epochs == 5 and quick.train.init == full.train.init  # epochs and init as Modyn's
    assert list(quick.population.variants) == list(full.population.variants)


@pytest.mark.parametrize("study", STUDIES)
def test_a_quick_forms_description_names_every_knob_it_changes(study):
    """The scripts' --help and report titles say what the quick form changes, read from the configs."""
    full, quick = composed(study), composed(f"{study}_quick")
    text = quick_knobs(study)
    for key in ("dataset.size", "model.channels", "optimizer.lr", "train.batch_size", "stream.arrival_batch"):
        value = OmegaConf.select(quick, key)
        assert (f"{key}=" in text) == (value != OmegaConf.select(full, key)), key
        if value != OmegaConf.select(full, key):
            assert f"{key}={value}" in text
    seeds, changed = list(quick.population.seeds), quick.population.seeds != full.population.seeds
    assert (f"population.seeds=[{','.join(map(str, seeds))}]" in text) == changed
    assert ("without scratch_yearly" in text) == (study == "portraits_drift")
    amounts = "variants changed: amount_500, amount_1000, amount_5000"
    assert (amounts in text) == (study == "portraits_triggers")
    assert "name=" not in text


def test_the_quick_trigger_study_fires_amount_triggers_where_the_full_one_does():
    full, quick = composed("portraits_triggers"), composed("portraits_triggers_quick")
    size = quick.dataset.size
    for name, overrides in full.population.variants.items():
        if "trigger=amount" in overrides:
            every = {o.split("=")[0]: o.split("=")[1] for o in overrides}["trigger.every"]
            quick_every = {o.split("=")[0]: o.split("=")[1] for o in quick.population.variants[name]}
            assert int(quick_every["trigger.every"]) == round(int(every) * size), name
    assert quick.stream.arrival_batch == round(full.stream.arrival_batch * size)


def test_the_quick_drift_study_leaves_out_only_the_costly_exact_candidates():
    full, quick = composed("portraits_drift"), composed("portraits_drift_quick")
    assert "scratch_yearly" in full.population.variants and full.population.only is None
    assert set(quick.population.only) == set(full.population.variants) - {"scratch_yearly"}


def test_the_committed_full_trigger_report_is_read_per_pipeline():
    full = from_report(REPO / "results" / "reference" / "portraits_triggers" / "report.md")
    assert len(full) == 9 and full["time_1"].mean == pytest.approx(0.800) and full["never"].seeds == 3
    low, high = full["never"].interval
    assert low < 0.497 < high


def test_the_checks_pass_a_faithful_quick_form_and_fail_a_misleading_one():
    full = {f"p{i}": Accuracy(0.8 - 0.03 * i, 0.005, 3) for i in range(6)}
    full |= {"time_1": Accuracy(0.80, 0.004, 3), "never": Accuracy(0.50, 0.01, 3)}
    faithful = {p: Accuracy(a.mean - 0.02, a.sd, 3) for p, a in full.items()}
    assert all(c.passed for c in checks(faithful, full, "time_1", "never"))
    # near chance, as the old reduced forms: the ranking and the gap to never are gone
    misleading = {p: Accuracy(0.55 - 0.01 * (i % 2), 0.03, 3) for i, p in enumerate(full)}
    failed = [c.name for c in checks(misleading, full, "time_1", "never") if not c.passed]
    assert len(failed) == 3
    # one seed: no interval, so the gap check cannot pass however large the gap
    one_seed = {p: Accuracy(a.mean, None, 1) for p, a in faithful.items()}
    assert [c.passed for c in checks(one_seed, full, "time_1", "never")] == [True, True, False]


def test_the_selection_study_is_checked_on_its_ranking_and_full_without_a_never():
    full = {"full": Accuracy(0.80, 0.004, 3)} | {
        f"p{i}": Accuracy(0.78 - 0.03 * i, 0.005, 3) for i in range(5)
    }
    yearly, never = validate_quick.STUDIES["portraits_selection"]
    assert (yearly, never) == ("full", None)
    faithful = {p: Accuracy(a.mean - 0.03, None, 1) for p, a in full.items()}  # one seed is enough here
    assert [c.passed for c in checks(faithful, full, yearly, never)] == [True, True]
    reversed_ = {p: Accuracy(1.3 - a.mean, None, 1) for p, a in full.items()}
    assert [c.passed for c in checks(reversed_, full, yearly, never)] == [False, False]
    text, passed = validate_quick.report("portraits_selection", faithful, full, ("q", "f"), None)
    assert passed and "never" not in text


def test_validate_quick_from_the_command_line_reports_a_failing_quick_run(tmp_path):
    """A tiny run that lacks the yearly pipeline: the script writes its report and exits 1."""
    overrides = small(
        tmp_path,
        "experiment=portraits_triggers_quick",
        "dataset.size=0.02",
        "population.only=[time_20,never]",
        "population.seeds=[0,1]",
        "output.checkpoints=none",
    )
    run(overrides, tmp_path / "run")
    out = tmp_path / "validation.md"
    done = script("validate_quick.py", "--quick-run", str(tmp_path / "run"), "--out", str(out))
    assert done.returncode == 1, done.stderr
    text = out.read_text()
    assert "| `time_1` within 5 points of full | **fail** | missing |" in text
    assert "| time_20 | 8 | 1 |" in text and "| never | 9 | 2 |" in text
    assert validate_quick.STUDIES["portraits_triggers"] == ("time_1", "never")
    assert "test portraits" not in text  # no time_1 in the run: nothing to say about its test draw
    assert f"`python experiments/validate_quick.py --quick-run {tmp_path / 'run'} --out {out}`" in text
    # the test draw behind a composite: the test portraits of the slices where the pipeline has a model
    draw = validate_quick.test_draw([tmp_path / "run"], "time_20")
    cells = (
        load(tmp_path / "run")["evals"]
        .collect()
        .filter((pl.col("pipeline") == "time_20") & (pl.col("metric") == "accuracy") & pl.col("active"))
    )
    per_slice = cells.group_by("slice").agg(pl.col("n").first(), pl.col("value").mean())
    assert (draw.total, draw.fewest, draw.most) == (
        per_slice["n"].sum(),
        per_slice["n"].min(),
        per_slice["n"].max(),
    )
    # at most the sd of one slice's accuracy, at least zero: a mean over slices of binomial errors
    assert 0 <= draw.sd <= 0.5 / per_slice["n"].min() ** 0.5
    assert validate_quick.test_draw([tmp_path / "run"], "absent") is None


def test_a_study_split_into_runs_without_a_folder_named_gets_one_under_results_runs(tmp_path, monkeypatch):
    """What ``python experiments/portraits_triggers.py`` does on a machine with two cores or more: no
    ``--into``, so the runs go into a fresh folder under results/runs/ (this used to stop at once:
    the folder claimed for the study was then made a second time)."""
    import study

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(study, "REPO", tmp_path)
    overrides = small(
        tmp_path, "dataset.size=0.03", "population.only=[time_20,never]", "population.seeds=[0]",
        "output.checkpoints=none", "train.epochs=1",
    )  # fmt: skip
    parts, _ = study.run_study("portraits_triggers_quick", overrides, "t", None, jobs=2)
    (folder,) = (tmp_path / "results" / "runs" / "portraits_triggers_quick").iterdir()
    assert folder.name.endswith("_t") and parts == [folder / "part1", folder / "part2"]
    assert [set(load(p)["cost"].collect()["pipeline"]) for p in parts] == [{"time_20"}, {"never"}]


def test_a_study_split_into_runs_side_by_side_gives_the_cells_of_one_run(tmp_path, monkeypatch):
    """``--jobs 2``: the variants dealt into two run folders, run at once, one thread each; read
    together they hold exactly the evaluations of the study run in one process."""
    from study import Timing, run_study

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    overrides = small(
        tmp_path,
        "dataset.size=0.03",
        "population.only=[time_20,never,amount_1000]",
        "population.seeds=[0]",
        "output.checkpoints=none",
    )
    parts, timing = run_study("portraits_triggers_quick", overrides, "t", tmp_path / "two", jobs=2)
    (one,), _ = run_study("portraits_triggers_quick", overrides, "t", tmp_path / "one", jobs=1)
    assert parts == [tmp_path / "two" / "part1", tmp_path / "two" / "part2"]
    assert isinstance(timing, Timing) and timing.processes == 2 and "2 processes side by side" in str(timing)
    pipelines = [set(load(p)["cost"].collect()["pipeline"]) for p in parts]
    assert pipelines == [{"time_20"}, {"amount_1000", "never"}]  # dealt back and forth, in config order
    keys = ["pipeline", "seed", "generation", "slice", "metric"]
    split = pl.concat([load(p)["evals"].collect() for p in parts]).sort(keys)
    whole = load(one)["evals"].collect().sort(keys)
    assert split.select(keys).equals(whole.select(keys)) and split["value"].eq_missing(whole["value"]).all()
    # more jobs than variants: one run per variant at most; a folder that exists is refused
    assert len(variant_groups("portraits_triggers_quick", overrides, 8)) == 3
    assert variant_groups("portraits_selection_quick", [], 2)[0][:4] == [
        "full",
        "rs2",
        "rs2_replace",
        "grad_norm_stb",
    ]
    with pytest.raises(SystemExit, match="the folder exists"):
        run_study("portraits_triggers_quick", overrides, "t", tmp_path / "two", jobs=2)
    # the trigger study's report on the two runs: every pipeline, sorted by accuracy, with its group
    import portraits_triggers

    monkeypatch.setattr(portraits_triggers, "OUT", tmp_path / "out")
    monkeypatch.setattr(portraits_triggers, "write_comparison", lambda *a, **k: tmp_path / "out" / "c")
    monkeypatch.setattr(sys, "argv", ["portraits_triggers.py", "--run-dir", *map(str, parts)])
    portraits_triggers.main()
    text = (tmp_path / "out" / "report_quick.md").read_text()
    assert "3 pipelines in 2 runs side by side" in text and "1 CPU thread(s) per run" in text
    rows = [
        line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ") and "---" not in line
    ]
    header, body = [c.strip() for c in rows[0]], [[c.strip() for c in r] for r in rows[1:]]
    accuracy = [float(r[header.index("accuracy")]) for r in body]
    assert sorted(r[0] for r in body) == ["amount_1000", "never", "time_20"]
    assert accuracy == sorted(accuracy, reverse=True)
    cost = pl.concat([load(p)["cost"].collect() for p in parts])
    expected = significance.groups(split, dict(zip(cost["pipeline"], cost["composite_accuracy"])))
    assert {r[0]: int(r[header.index("group")]) for r in body} == dict(
        zip(expected["pipeline"], expected["group"])
    )


def test_the_full_studys_agreement_with_itself_is_high_when_resolved_and_low_when_not():
    resolved = {f"p{i}": Accuracy(0.8 - 0.05 * i, 0.005, 3) for i in range(6)}
    median, share = validate_quick.replicate_rho(resolved)
    assert median == pytest.approx(1.0) and share > 0.99
    # six pipelines within one standard error of each other: a second study would rank them anew
    noise = {f"p{i}": Accuracy(0.8 + 0.0005 * i, 0.01, 3) for i in range(6)}
    median, share = validate_quick.replicate_rho(noise)
    assert abs(median) < 0.3 and share < 0.2
    assert validate_quick.replicate_rho({**resolved, "one": Accuracy(0.7, None, 1)}) is None
    # in the report: only over the pipelines both sides have, naming those with one seed
    full = {**resolved, "one": Accuracy(0.7, None, 1)}
    text, _ = validate_quick.report("portraits_selection", full, full, ("q", "f"), None)
    assert "over the 6 pipelines both sides have, less `one` with one seed) the median ρ is 1.00" in text


def test_validate_quick_reads_the_committed_comparisons_of_both_sides(tmp_path):
    """The full and the quick side as ``ctsim compare`` wrote them (compare.parquet): no run folder needed."""
    ref = REPO / "results" / "reference" / "portraits_selection"
    full = validate_quick.from_comparison(ref / "comparison" / "compare.parquet")
    assert len(full) == 23 and {a.seeds for a in full.values()} == {3}
    out = tmp_path / "validation.md"
    command = [
        sys.executable, str(REPO / "experiments" / "validate_quick.py"), "--study", "portraits_selection",
        "--full-run", str(ref / "comparison" / "compare.parquet"),
        "--quick-run", str(ref / "comparison_quick" / "compare.parquet"), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    text = out.read_text()
    rho = stats.spearmanr(
        [a.mean for p, a in full.items()],
        [validate_quick.from_comparison(ref / "comparison_quick" / "compare.parquet")[p].mean for p in full],
    ).statistic
    assert f"ρ = {rho:.2f} over 23 pipelines" in text
    assert done.returncode == (0 if rho >= 0.8 else 1), done.stderr
    assert "the median ρ is" in text and "test portraits" not in text  # no run folder: no test draw
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"pipeline": ["a"], "acc": [0.5]}).write_parquet(bad)
    command = [*command[:2], "--full-run", str(bad), "--quick-run", str(bad)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "bad.parquet: no column(s) ['accuracy', 'accuracy_sd', 'seeds']" in done.stderr
    # a path that is not there, or a folder that is not a run: named at once, before any quick run starts
    for flag, path, said in [
        ("--full-run", tmp_path / "absent", "no such run folder or compare.parquet"),
        ("--quick-run", tmp_path, "not a ctsim run folder (no cost.parquet in it)"),
    ]:
        done = subprocess.run([*command[:2], flag, str(path)], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 2 and f"{flag} {path}: {said}" in done.stderr, done.stderr


def test_quick_agreement_reads_one_run_per_seed_and_ranks_each_against_the_full_study(tmp_path):
    """Seed folders already made are read, not run again; each seed's ρ, the ρ between seeds and the
    reference pipeline's points are those of the runs."""
    tiny = [
        "dataset.size=0.02",
        "population.only=[time_1,time_20,amount_500,never]",
        "output.checkpoints=none",
    ]
    base = small(tmp_path, "experiment=portraits_triggers_quick", *tiny)
    for seed in (0, 1):
        run([*base, f"population.seeds=[{seed}]"], tmp_path / "quick" / f"seed{seed}")
    run([*base, "population.seeds=[0,1]", "model.channels=8"], tmp_path / "full")
    out = tmp_path / "agreement.md"
    done = script(
        "quick_agreement.py",
        *("--study", "portraits_triggers", "--seeds", "0", "1", "--into", str(tmp_path / "quick")),
        *("--full-run", str(tmp_path / "full"), "--out", str(out)),
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    full = validate_quick.from_runs([tmp_path / "full"])
    quick = {s: validate_quick.from_runs([tmp_path / "quick" / f"seed{s}"]) for s in (0, 1)}

    def rho(a, b):
        names = sorted(set(a) & set(b))
        return stats.spearmanr([a[p].mean for p in names], [b[p].mean for p in names]).statistic

    for seed, q in quick.items():
        ours, theirs = q["time_1"].mean, full["time_1"].mean
        row = f"| {seed} | {rho(q, full):.2f} | {ours:.3f} | {theirs:.3f} | {100 * (ours - theirs):+.1f} |"
        assert row in text
    assert f"ρ between seeds: 0-1 {rho(quick[0], quick[1]):.2f}" in text
    assert not (tmp_path / "quick" / "seed0" / "part1").exists()  # read, not run again
    # a reference pipeline the full side lacks: its columns say so, the ranking still stands
    import quick_agreement

    without = {p: a for p, a in full.items() if p != "time_1"}
    lines, _ = quick_agreement.agreement({0: [tmp_path / "quick" / "seed0"]}, without, "time_1")
    assert f"| 0 | {rho(quick[0], without):.2f} | – | – | – |" in lines
