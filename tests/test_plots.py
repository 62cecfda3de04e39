"""Comparison plots a person can read: labels made of what tells pipelines apart (never ``progress``,
``name`` or ``population.*``), shortened with a table of full names when long, and one colour per
pipeline in every plot. The runs are written with the registry's writers; the comparison is made with
``ctsim compare`` (its ``main``)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from matplotlib.colors import to_rgb

from ctsim.reports import plots
from ctsim.reports.compare import main

from .test_significance import accuracies, write_run

SETTINGS = [  # what each run changes; long, as a real sweep's overrides are
    "trigger=time trigger.every=1 selection=all train.init=scratch",
    "trigger=time trigger.every=1 selection=new train.init=finetune",
    "trigger=time trigger.every=5 selection=window selection.size=2000 optimizer.lr=0.05",
    "trigger=amount trigger.every=1000 selection=reservoir selection.size=500",
    "trigger=never train.epochs=5",
]


@pytest.fixture
def five(tmp_path):
    """Five runs of one pipeline each, named after the run, with the overrides a user types around the
    settings that matter (``progress``, ``name``, ``population.seeds``, ``output.*``)."""
    g = torch.Generator().manual_seed(0)
    for i, settings in enumerate(SETTINGS):
        name = f"long_name_run_{i}"
        noise = ["progress=false", f"name={name}", "population.seeds=[0,1]", "output.plots=false"]
        write_run(
            tmp_path / "runs" / name,
            {name: accuracies(g, 0.6 + 0.05 * i, 2, 0.0, 0.05)},
            name=name,
            overrides=[*settings.split(), *noise],
        )
    return tmp_path


def _rgb(colour) -> tuple[float, float, float]:
    """A colour as matplotlib gives it (a name, a tuple, or one row of an array per point) as RGB."""
    if isinstance(colour, str):
        return to_rgb(colour)
    values = np.asarray(colour, dtype=float)
    return to_rgb(tuple(values.reshape(-1, values.shape[-1])[0][:3]))


def drawn(monkeypatch) -> list[dict[str, tuple]]:
    """Every figure the comparison saves, as {text shown for a pipeline: its colour} (legend entries,
    coloured tick labels and panel titles)."""
    seen: list[dict[str, tuple]] = []
    save = plots._save

    def spy(fig, path):
        found = {}
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None:
                for handle, text in zip(legend.legend_handles, legend.get_texts()):
                    colour = handle.get_color() if hasattr(handle, "get_color") else handle.get_facecolor()
                    found[text.get_text()] = _rgb(colour)
            for text in [*ax.get_yticklabels(), ax.title]:
                if text.get_text():
                    found[text.get_text().split(" (seed")[0]] = to_rgb(text.get_color())
        seen.append(found)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return seen


def test_labels_are_the_settings_that_differ_and_each_pipeline_keeps_its_colour(five, monkeypatch, capsys):
    seen = drawn(monkeypatch)
    assert main([str(five / "runs"), "--out", str(five / "c")]) == 0
    table = pl.read_parquet(five / "c" / "compare.parquet")
    assert sorted(table["pipeline"]) == sorted(SETTINGS)  # nothing of progress, name, population, output
    style = plots.Style.of(SETTINGS)
    assert all(len(label) <= plots.SHORT_WIDTH for label in style.label.values())
    assert style.label[SETTINGS[2]] == "E  time every=5 window size=2000 lr=0.05"
    md = (five / "c" / "compare.md").read_text()
    page = (five / "c" / "report.html").read_text()
    for short, full in style.legend_table():  # every shortened label is listed with its full name
        assert f"| {short} | {full} |" in md
        assert f"<td>{short}</td><td>{full}</td>" in page
    assert len(seen) == 4  # accuracy_triggers, pareto, composite, matrices (no cl_metrics: no metrics table)
    colours = {}
    for figure in seen:
        for text, colour in figure.items():
            name = next((n for n, label in style.label.items() if label == text), None)
            if name is not None:
                colours.setdefault(name, set()).add(colour)
    assert set(colours) == set(SETTINGS)  # every pipeline appears, in one colour, the palette's
    assert {name: c for name, (c,) in colours.items()} == {n: to_rgb(style.colour[n]) for n in SETTINGS}
    # the same names keep their colours in any other drawing (the palette is keyed by name)
    assert plots.Style.of(list(reversed(SETTINGS))).colour == style.colour
