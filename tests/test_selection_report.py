"""The selection study's report (experiments/portraits_selection.py) ranks only what the data tell apart."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytest

from ctsim.reports import significance

from .conftest import run, small

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("selection")
    overrides = small(
        tmp,
        "experiment=portraits_selection",
        "dataset.size=0.05",
        "model=mlp",
        "train.epochs=1",
        "optimizer.lr=0.05",
        "population.seeds=[0]",
        "population.only=[full,uniform,rs2,loss_stb,loss_bts,entropy_bts,uniform_12]",
        "output.checkpoints=none",
    )
    run(overrides, tmp / "run")
    return tmp / "run"


def test_variants_sorted_by_accuracy_with_the_significance_groups_of_their_evaluations(
    study, tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    import portraits_selection

    monkeypatch.setattr(portraits_selection, "OUT", tmp_path)
    monkeypatch.setattr(portraits_selection, "write_comparison", lambda *a, **k: tmp_path / "comparison")
    text = portraits_selection.report([study], None, quick=True).read_text()
    del sys.modules["portraits_selection"]

    # the settings the run was made with, read from it (not the quick form's, restated)
    assert "SGD with momentum 0.9; here 0.05 of every year, MLP, batch 64, 1 epoch, lr 0.05 (Modyn:" in text
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| variant |")))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append([c.strip() for c in line.strip("|").split("|")])
    accuracy = [float(r[header.index("accuracy %")].split(" ")[0]) for r in body]
    assert len(body) == 7 and accuracy == sorted(accuracy, reverse=True)

    from ctsim.registry import load

    tables = load(study)
    cost, evals = tables["cost"].collect(), tables["evals"].collect()
    means = cost.group_by("pipeline").agg((100 * pl.col("composite_accuracy").mean()).alias("a"))
    expected = significance.groups(evals, dict(zip(means["pipeline"], means["a"])))
    shown = {r[0]: int(r[header.index("group")]) for r in body}
    assert shown == dict(zip(expected["pipeline"], expected["group"]))
    # the ranking against Modyn says so when the data cannot rank the strategies at all
    acc = dict(zip(means["pipeline"], means["a"]))
    loss = max(["loss_stb", "loss_bts"], key=acc.get)  # the report takes a strategy's better form
    at_half = expected.filter(pl.col("pipeline").is_in(["full", "uniform", "rs2", loss, "entropy_bts"]))
    assert ("in one significance group" in text) == (at_half["group"].n_unique() == 1)
    # ρ with each form alone: StB only ranks full, uniform, rs2 and loss_stb (entropy ran only as bts)
    from scipy.stats import spearmanr

    modyn = portraits_selection.MODYN
    stb = {"full": acc["full"], "uniform": acc["uniform"], "rs2": acc["rs2"], "loss": acc["loss_stb"]}
    rho = spearmanr(list(stb.values()), [modyn[s] for s in stb]).statistic
    assert f"STB only ρ = {rho:.2f}" in text
