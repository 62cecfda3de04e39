"""The ``ctsim`` console script and its subcommands, from the user's side: the entry point function (what
``[project.scripts]`` installs) and ``python -m ctsim SUB``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ctsim.__main__ import main
from ctsim.app.commands import COMMANDS, USAGE, implementation, parser

REPO = Path(__file__).resolve().parent.parent
SUBCOMMANDS = [name for name in COMMANDS if name != "run"]
HEAVY = ("torch", "polars", "hydra", "omegaconf", "seaborn", "matplotlib")


def test_the_console_script_is_declared_and_points_at_the_entry_function():
    text = (REPO / "pyproject.toml").read_text()  # tomllib is 3.11+: the section read as text
    section = text.split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    assert re.findall(r'^(\w+) = "([\w.:]+)"', section, re.M) == [("ctsim", "ctsim.__main__:main")]
    assert set(USAGE) == set(SUBCOMMANDS)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help_that_loads_nothing_heavy(name):
    """Their help once took 3.5-7.8 s (torch loaded first); now only the standard library answers it."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ctsim", name, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: ctsim {name} ")
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY), imported & set(HEAVY)
    assert "%%" not in done.stdout  # once "95%% CI" in compare's help


def test_reproduce_and_compare_help_describe_their_options(capsys):
    for name in ("reproduce", "compare"):
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--pipeline", "--seed", "--generation"):
        line = next(line for line in text.splitlines() if line.strip().startswith(option))
        assert len(line.split(None, 2)) == 3 or "generation to train" in text, line  # a description follows
    assert "the pipeline's name" in text and "the generation to train again" in text
    assert "95% CIs" in text and "95%% CI" not in text


def option_strings(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][\w-]*", help_text))


@pytest.mark.parametrize("name", ["compare", "query", "oracle", "bench", "resume", "reproduce"])
def test_each_declaration_has_the_implementations_options(name, capsys):
    """The options declared for a fast --help are those the implementation parses."""
    run = implementation(name)
    with pytest.raises(SystemExit):
        run([name, "--help"] if name in ("resume", "reproduce") else ["--help"])
    theirs = option_strings(capsys.readouterr().out)
    ours = option_strings(parser(name).format_help())
    assert ours == theirs


def test_export_and_datasets_declare_the_implementations_subcommands(capsys):
    for name, tools in (("export", ["tensorboard", "mlflow"]), ("datasets", ["prepare", "list", "info"])):
        with pytest.raises(SystemExit):
            implementation(name)(["--help"])
        theirs = capsys.readouterr().out
        ours = parser(name).format_help()
        assert all(t in theirs and t in ours for t in tools)
    for tool in ("tensorboard", "mlflow"):
        with pytest.raises(SystemExit):
            implementation("export")([tool, "--help"])
        theirs = option_strings(capsys.readouterr().out)
        with pytest.raises(SystemExit):
            main(["export", tool, "--help"])
        assert option_strings(capsys.readouterr().out) == theirs


def test_a_subcommand_dispatches_to_its_implementation(tmp_path, capsys):
    assert main(["query", "SELECT 1 AS one", str(tmp_path)]) == 2  # no runs there: the query's own error
    assert "ctsim.query" in capsys.readouterr().err
    assert main(["datasets", "list", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("no prepared datasets under")
    assert main(["resume", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_a_bad_subcommand_argument_is_a_usage_error_before_anything_loads(capsys):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "run", "--seed", "x"])
    assert info.value.code == 2 and "argument --seed: invalid int value: 'x'" in capsys.readouterr().err


def test_run_is_the_default_subcommand(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for argv in (["trigger.evry=3"], ["run", "trigger.evry=3"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "trigger.evry: unknown key; did you mean trigger.every?" in capsys.readouterr().err
    done = subprocess.run(
        [sys.executable, "-m", "ctsim", "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0 and "== Subcommands: ctsim SUBCOMMAND --help ==" in done.stdout
    assert all(f"  ctsim {name} " in done.stdout for name in SUBCOMMANDS)
