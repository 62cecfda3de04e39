"""The README and docs/ as a reader uses them: every ```python block runs, every ctsim command line composes
and builds, every table example builds, every link resolves, and each example of docs/extending.md runs.

A block that needs context says so on the line before its fence:

* ``<!-- docs-test: runs -->``: a Python block that reads a finished run. It runs in a folder that holds
  a small finished quickstart run at ``results/runs/quickstart/<date>_<time>`` (the text's placeholder
  is replaced by that run's folder name);
* ``<!-- docs-test: cwd=docs/examples -->``: a shell block whose commands run in that folder;
* ``<!-- docs-test: skip REASON -->``: not run (say why).

Other blocks run as they are, in an empty folder. Features that other work of issue 25 is still adding
are listed in one place, ``PENDING``; blocks and commands that need them are skipped until they land.
"""

from __future__ import annotations

import doctest
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

import ctsim
from ctsim.app.compose import complete
from ctsim.validation import ConfigError

from .conftest import REPO, build, cli, run, small

DOCS = REPO / "docs"
EXAMPLES = DOCS / "examples"
PAGES = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]
MARK = re.compile(r"^<!-- docs-test: (?P<what>.*?) -->$")


def _console_script() -> bool:
    return re.search(r"^\[project\.scripts\]", (REPO / "pyproject.toml").read_text(), re.M) is not None


# Features other work of this wave is adding (issue 25; the GPU check's wheels), which the docs already
# show in their target form, each with how to tell that it landed.
PENDING = {
    "the Python API (ctsim.run, ctsim.load)": lambda: hasattr(ctsim, "run") and hasattr(ctsim, "load"),
    "the ctsim console script and its subcommands": _console_script,
    "the GPU check's wheels (experiments/gpu_wheels.sh)": lambda: (
        REPO / "experiments/gpu_wheels.sh"
    ).is_file(),
}
_landed: dict[str, bool] = {}


def landed(feature: str) -> bool:
    if feature not in _landed:
        _landed[feature] = PENDING[feature]()
    return _landed[feature]


def skip_unless_landed(feature: str) -> None:
    if not landed(feature):
        pytest.skip(f"pending: {feature}")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    mark: str  # the docs-test marker before it, or ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(lang: str) -> list[Block]:
    """Every fenced block of ``lang`` in the README and docs/, with the marker on the line before it."""
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            fence = re.match(r"^(```+)\s*(\w*)", lines[i])
            if not fence:
                i += 1
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(fence[1]))
            mark = MARK.match(lines[i - 1]) if i else None
            if fence[2] == lang:
                text = "\n".join(lines[i + 1 : end]) + "\n"
                found.append(Block(page, i + 1, lang, text, mark["what"] if mark else ""))
            i = end + 1
    return found


PYTHON = [b for b in blocks("python") if "--8<--" not in b.text]  # included files: see the examples below
BASH = blocks("bash")


def test_the_docs_hold_what_the_tests_check():
    assert len(PYTHON) >= 5 and len(BASH) >= 20
    included = [b for b in blocks("python") + blocks("yaml") if "--8<--" in b.text]
    names = {re.search(r'--8<-- "(.+)"', b.text)[1] for b in included}
    assert names == {
        *(f"my_{k}.py" for k in ("trigger", "selection", "model", "dataset")),
        *(f"conf/{k}/my_{k}.yaml" for k in ("trigger", "selection", "model", "dataset")),
    }
    assert all((EXAMPLES / name).is_file() for name in names)


# --- a small finished run, for the blocks that read one ---------------------------------------------------

RUN_NAME = "2026-01-01_00-00-00"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A folder holding ``results/runs/quickstart/<RUN_NAME>/``: the quickstart's three pipelines on a small
    SEA stream of 84 slices, as many as the quickstart's portraits (the docs' examples read that run)."""
    root = tmp_path_factory.mktemp("docs_run")
    overrides = small(root, "dataset=sea", "dataset.slices=84", "dataset.size=0.05", "train.epochs=1")
    run(overrides, root / "results" / "runs" / "quickstart" / RUN_NAME)
    return root


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.where)
def test_python_block_runs(block, tmp_path, monkeypatch, request):
    if block.mark.startswith("skip"):
        pytest.skip(block.mark)
    if "ctsim.run(" in block.text or "ctsim.load(" in block.text:
        skip_unless_landed("the Python API (ctsim.run, ctsim.load)")
    text = block.text
    if block.mark == "runs":
        monkeypatch.chdir(request.getfixturevalue("finished_run"))
        text = text.replace("<date>_<time>", RUN_NAME)
    else:
        assert block.mark == "", f"{block.where}: unknown marker {block.mark!r}"
        monkeypatch.chdir(tmp_path)
    exec(compile(text, block.where, "exec"), {"__name__": "__docs__"})


def test_the_accuracy_matrix_example_gives_a_matrix(finished_run, monkeypatch):
    """The pivot of `evals` in docs/outputs.md: generations down, slice labels across."""
    block = next(b for b in PYTHON if "pivot(" in b.text and b.page.name == "outputs.md")
    monkeypatch.chdir(finished_run)
    scope: dict = {}
    exec(compile(block.text.replace("<date>_<time>", RUN_NAME), block.where, "exec"), scope)
    gens = pl.read_parquet(finished_run / "results/runs/quickstart" / RUN_NAME / "generations.parquet")
    assert scope["matrix"].height == gens.filter(pl.col("pipeline") == "yearly").height > 1
    assert scope["matrix"].width == 1 + 84  # the generation column, then one per slice


# --- shell commands -----------------------------------------------------------------------------------------

SUBCOMMANDS = {"resume", "reproduce", "compare", "query", "oracle", "export", "datasets", "bench"}
OTHER_TOOLS = {"pip", "pytest", "ruff", "mkdocs", "cd", "tensorboard", "mlflow", "apt"}


@dataclass(frozen=True)
class Command:
    block: Block
    argv: list[str]

    @property
    def where(self) -> str:
        return f"{self.block.where}: {shlex.join(self.argv)[:80]}"


def commands() -> list[Command]:
    """Every command line of the bash blocks: continuations joined (and quoted text over several lines,
    as SQL is), comments and ``VAR=value`` prefixes dropped, ``a && b`` split."""
    found = []
    for block in BASH:
        pending = ""
        for line in block.text.replace("\\\n", " ").splitlines():
            pending += line + "\n"
            try:
                tokens = shlex.split(pending, comments=True)
            except ValueError:  # a quote still open: the command goes on
                continue
            pending = ""
            while tokens:
                argv = tokens[: tokens.index("&&")] if "&&" in tokens else tokens
                tokens = tokens[len(argv) + 1 :]
                while argv and re.match(r"^[A-Z_]+=", argv[0]):
                    argv = argv[1:]
                if argv:
                    found.append(Command(block, argv))
        assert not pending, f"{block.where}: a quote is never closed"
    return found


def inline_commands() -> list[Command]:
    """Every ``python -m ctsim ...`` or ``ctsim ...`` quoted as code in the text (outside fenced blocks)."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for fence in re.finditer(r"^```.*?^```", text, re.S | re.M):  # blank the blocks, keep the lines
            text = text.replace(fence[0], re.sub(r"[^\n]", " ", fence[0]))
        for match in re.finditer(r"`((?:python -m ctsim|ctsim)(?: [^`]+)?)`", text):
            line = text.count("\n", 0, match.start()) + 1
            block = Block(page, line, "inline", match[1], "")
            found.append(Command(block, shlex.split(match[1].replace("\\|", "|").replace("\n", " "))))
    return found


COMMANDS = commands() + inline_commands()
RUNS = [c for c in COMMANDS if c.argv[:3] == ["python", "-m", "ctsim"] or c.argv[0] == "ctsim"]
UNIQUE_RUNS = list({(tuple(c.argv), c.block.mark): c for c in reversed(RUNS)}.values())[::-1]  # each once


def ctsim_args(argv: list[str]) -> list[str]:
    return argv[3:] if argv[0] == "python" else argv[1:]


def test_every_command_is_a_known_one():
    for command in COMMANDS:
        argv = command.argv
        if command in RUNS or argv[0] in OTHER_TOOLS:
            continue
        if argv[0] in ("python", "bash") and argv[1].startswith("experiments/"):
            wheels = argv[1] == "experiments/gpu_wheels.sh"
            if wheels and not landed("the GPU check's wheels (experiments/gpu_wheels.sh)"):
                continue
            assert (REPO / argv[1]).is_file(), command.where
        elif argv[0].startswith(("experiments/", ".ci/")):
            assert (REPO / argv[0]).is_file(), command.where
        else:
            assert argv[:2] == ["python", "-c"], f"{command.where}: a command the docs test does not know"


def run_overrides(args: list[str]) -> tuple[list[str], str | None] | None:
    """The overrides a run command line composes (the first job of a sweep), and its ``--config-dir``;
    None where it holds a placeholder (``RUN_DIR``, ``<name>``, ``...``) for the reader to fill in."""
    if any("<" in a or a in ("...", "RUN_DIR") for a in args):
        return None
    overrides, config_dir, sweep, i = [], None, False, 0
    while i < len(args):
        a = args[i]
        if a in ("-m", "--multirun"):
            sweep = True
        elif a in ("--cfg", "-c", "-p", "--package"):
            i += 1
        elif a in ("--config-dir", "-cd"):
            config_dir, i = args[i + 1], i + 1
        elif a.startswith("-"):
            assert a in ("--help", "--hydra-help", "--info"), a
        else:
            overrides.append(a)
        i += 1
    if sweep:  # the first value of every swept key: the jobs differ only in values
        parsed = OverridesParser.create().parse_overrides(overrides)
        overrides = [
            f"{o.get_key_element()}={next(o.sweep_string_iterator())}"
            if o.is_sweep_override()
            else o.input_line
            for o in parsed
        ]
    return overrides, config_dir


# a command's problems that name the reader's own files, which the docs take as given
READERS_FILES = ("dataset.path", "dataset.root", "dataset: no prepared cache")


@pytest.mark.parametrize("command", UNIQUE_RUNS, ids=lambda c: c.where)
def test_every_run_command_composes_and_builds(command, tmp_path, monkeypatch):
    args = ctsim_args(command.argv)
    if args[:1] == ["run"]:
        args = args[1:]
    if args and args[0] in SUBCOMMANDS:
        pytest.skip("a subcommand: see test_every_subcommand_has_help")
    if command.argv[0] == "ctsim":
        skip_unless_landed("the ctsim console script and its subcommands")
    found = run_overrides(args)
    if found is None:
        pytest.skip("holds a placeholder for the reader to fill in")
    overrides, config_dir = found
    if config_dir is None:
        overrides = small(tmp_path, *overrides)
    else:  # the reader's own datasets may have no dataset.root
        where = REPO / command.block.mark.removeprefix("cwd=") if command.block.mark else REPO
        overrides.append(f"hydra.searchpath=[file://{(where / config_dir).resolve()}]")
        monkeypatch.syspath_prepend(str(where))  # python -m puts the working folder on the import path
    try:
        build(complete(overrides))  # what the command line runs: the one-pipeline rule applied
    except ConfigError as e:
        others = [str(p) for p in e.problems if not str(p).startswith(READERS_FILES)]
        assert not others, f"{command.where}: {others}"


@pytest.mark.parametrize("sub", sorted(SUBCOMMANDS))
def test_every_subcommand_the_docs_use_has_help(sub, tmp_path):
    used = {
        ctsim_args(c.argv)[0] for c in RUNS if ctsim_args(c.argv)[:1] and ctsim_args(c.argv)[0] in SUBCOMMANDS
    }
    assert sub in used, f"the docs show no `ctsim {sub}`"
    skip_unless_landed("the ctsim console script and its subcommands")
    result = cli([sub, "--help"], cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and "usage" in result.stdout.lower(), result.stderr


def quoted_errors() -> list[tuple[Block, list[str], list[str]]]:
    """Plain blocks that quote a ``$ python -m ctsim ...`` line and the ``ctsim: invalid config:`` it
    prints: (block, arguments, expected lines; ``...`` stands for any text)."""
    found = []
    for block in blocks(""):
        lines = block.text.splitlines()
        if (
            len(lines) > 2
            and lines[0].startswith("$ python -m ctsim ")
            and lines[1] == "ctsim: invalid config:"
        ):
            found.append((block, shlex.split(lines[0])[4:], lines[1:]))
    return found


@pytest.mark.parametrize("quoted", quoted_errors(), ids=lambda q: q[0].where)
def test_a_quoted_error_is_what_ctsim_prints(quoted, tmp_path):
    _, args, expected = quoted
    result = cli(args, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr
    printed = result.stderr.strip().splitlines()
    assert len(printed) == len(expected), printed
    for line, want in zip(printed, expected):
        assert re.fullmatch(re.escape(want).replace(re.escape("..."), ".*"), line), (line, want)
    assert not (tmp_path / "results").exists()


def test_the_docs_show_queries():
    assert len(queries()) >= 4


def test_the_docs_quote_errors():
    assert len(quoted_errors()) >= 2  # the README's bad input, and configuration.md's variant override


def queries() -> list[tuple[Command, str]]:
    """Every ``ctsim query "SELECT ..." ...`` of the docs, with its SQL."""
    found = [(c, ctsim_args(c.argv)[1]) for c in RUNS if ctsim_args(c.argv)[:1] == ["query"] and c.argv[2:]]
    return [(c, sql) for c, sql in found if sql.lstrip().upper().startswith("SELECT")]


@pytest.fixture(scope="module")
def runs_of_two_lengths(finished_run) -> Path:
    """The finished run's folder, plus a second run over 20 slices instead of 40."""
    root = finished_run / "results" / "runs"
    overrides = small(finished_run, "dataset=sea", "dataset.size=0.05", "dataset.slices=20", "train.epochs=1")
    run([*overrides, "population.only=[yearly]", "dataset.change_points=[10]"], root / "short" / RUN_NAME)
    return root


@pytest.mark.parametrize("found", queries(), ids=lambda q: q[0].where)
def test_every_query_runs(found, runs_of_two_lengths):
    from ctsim.registry import load_many, query

    command, sql = found
    result = query(sql, load_many(runs_of_two_lengths, unfinished=True))
    assert result.width > 0, command.where  # the portraits' years: no rows on SEA's slice labels


def test_the_last_slices_query_takes_each_runs_own_last_slices(runs_of_two_lengths):
    from ctsim.registry import load_many, query

    [(_, sql)] = [q for q in queries() if "last 10" in q[0].block.text or "m.last - 9" in q[1]]
    result = query(sql, load_many(runs_of_two_lengths, unfinished=True))
    for row in result.iter_rows(named=True):
        evals = pl.read_parquet(Path(row["run"]) / "evals.parquet")
        last = evals["slice"].max()
        expected = (
            evals.filter(
                (pl.col("pipeline") == row["pipeline"]) & (pl.col("metric") == "accuracy") & pl.col("active")
            )
            .filter(pl.col("slice") >= last - 9)["value"]
            .mean()
        )
        assert row["accuracy"] == pytest.approx(expected)
    assert result["run"].n_unique() == 2


# --- the trigger and selection tables' examples -----------------------------------------------------------


def table_examples() -> list[str]:
    """The last cell of every table row whose example is a set of overrides (trigger, selection, detector,
    rule, encoder, downsampling ...): what a reader copies first."""
    found = []
    for page in PAGES:
        for line in page.read_text(encoding="utf-8").splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("|") and len(cells) >= 2:
                last = cells[-1]
                if last.startswith("`") and last.endswith("`") and "=" in last:
                    text = last.strip("`")
                    if re.match(r"^(trigger|selection)[=/.]", text):
                        found.append(text)
    return sorted(set(found))


TABLE_EXAMPLES = table_examples()


def test_the_tables_hold_examples():
    assert len(TABLE_EXAMPLES) >= 15, TABLE_EXAMPLES  # the trigger and selection tables


@pytest.mark.parametrize("example", TABLE_EXAMPLES)
def test_every_table_example_builds(tmp_path, example):
    """A table example that stops with an error (as ``selection=freshness ... selection.limit=2000`` did,
    its config's default fraction clashing with the limit) fails here."""
    plan = build(small(tmp_path, "population.variants={}", *example.split()))
    assert len(plan.pipelines) == 1


# --- links and the README's shape ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)", text):
        if "://" not in target:
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)}: {target}"


def test_the_readme_is_a_guide():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 500
    first_screen = "\n".join(lines[:25])
    for command in ('pip install -e ".[dev]"', "python -m ctsim", "pytest"):
        assert command in first_screen, command
    assert "## Contents" in text
    for heading in re.findall(r"^#{2,3} (.+)$", text, re.M):  # the contents' anchors, as GitHub makes them
        anchor = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        assert f"](#{anchor})" in text or heading == "Contents", f"not in the contents: {heading}"


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ErrorRateTrigger" in (tmp_path / "site" / "extending" / "index.html").read_text()


# --- the examples of docs/extending.md ----------------------------------------------------------------------

EXAMPLE_MODULES = ["my_trigger", "my_selection", "my_model", "my_dataset"]


@pytest.fixture
def examples_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield
    for name in EXAMPLE_MODULES:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("name", EXAMPLE_MODULES)
def test_an_example_runs_its_docstring_examples(name, examples_importable):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2 and result.failed == 0


def compose_example(group: str, *overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from ctsim.app.cli import CONF_DIR

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="test"):
        cfg = compose(
            "config",
            overrides=[f"hydra.searchpath=[file://{EXAMPLES / 'conf'}]", f"{group}=my_{group}", *overrides],
        )
    return instantiate(cfg[group], _convert_="all")


def test_the_example_trigger_passes_the_conformance_checks(examples_importable):
    from ctsim.stream import toy_stream

    from .test_policy_conformance import _trigger_decisions

    stream = toy_stream([25, 30, 28, 21, 36, 24] * 3, arrival_batch=10, test_fraction=0.2)
    first, shown = _trigger_decisions(compose_example("trigger"), stream)
    second, _ = _trigger_decisions(compose_example("trigger"), stream)
    assert first == second and first[0] == "error rate: the first model"
    assert all(a is None or (isinstance(a, str) and a) for a in first)
    for ctx, (seen, since, keys, x) in shown:
        assert torch.equal(ctx.seen, seen) and torch.equal(ctx.since_trigger, since)
        assert torch.equal(ctx.batch.keys, keys) and torch.equal(ctx.x, x)


def test_the_example_selection_passes_the_conformance_checks(examples_importable):
    from ctsim.selection.base import Selection, context_from_intervals
    from ctsim.stream import toy_stream

    intervals = [list(range(0, 4)), list(range(4, 6)), list(range(6, 11))]
    stream = toy_stream([3, 3, 5])
    shown = context_from_intervals(intervals, stream=stream)
    kept = (shown.seen.clone(), shown.since_trigger.clone(), [e.clone() for e in shown.earlier])
    a = compose_example("selection", "selection.stride=2").select(shown)
    b = compose_example("selection", "selection.stride=2").select(
        context_from_intervals(intervals, stream=stream)
    )
    assert isinstance(a, Selection) and torch.equal(a.keys, b.keys)
    assert a.keys.tolist() == [0, 2, 4, 6, 7, 8, 9, 10]
    a.keys.add_(100)  # its keys are its own, not a view of the context's
    assert torch.equal(shown.seen, kept[0]) and torch.equal(shown.since_trigger, kept[1])
    assert all(torch.equal(x, y) for x, y in zip(shown.earlier, kept[2]))
    budget = compose_example("selection", "selection.limit=3", "selection/downsample=entropy")
    assert budget.limit == 3 and budget.downsample is not None


def extending_commands() -> list[list[str]]:
    block = next(b for b in BASH if b.page.name == "extending.md" and b.mark == "cwd=docs/examples")
    return [c.argv for c in COMMANDS if c.block == block and c.argv[0] != "cd"]


def test_a_simulation_runs_with_all_four_examples(tmp_path):
    """The command line of docs/extending.md, as a reader runs it in a copy of docs/examples."""
    here = shutil.copytree(EXAMPLES, tmp_path / "examples")
    make_data, simulate = extending_commands()
    assert make_data[:2] == ["python", "-c"] and simulate[:3] == ["python", "-m", "ctsim"]
    subprocess.run([sys.executable, *make_data[1:]], cwd=here, check=True, timeout=120)
    quick = ["progress=false", "output.plots=false", "train.epochs=1"]
    result = cli([*simulate[3:], *quick], cwd=here)
    assert result.returncode == 0, result.stderr[-3000:]
    [run_dir] = (here / "results" / "runs").glob("*/*")
    gens = pl.read_parquet(run_dir / "generations.parquet")
    cost = pl.read_parquet(run_dir / "cost.parquet")
    assert cost.height == 1 and cost["model"][0] == "ResidualMLP"
    assert gens["trigger_reason"][0] == "error rate: the first model"
    assert gens.height >= 2 and gens["trigger_reason"][1:].str.starts_with("error rate: ").all()
    # the selection: generation 1 trains on its new data and every 4th sample of generation 0's
    lineage = pl.read_parquet(run_dir / "lineage.parquet").sort("generation")
    first, second = (set(keys) for keys in lineage["keys"][:2])
    assert first & second == set(lineage["keys"][0].to_list()[::4]) and len(second - first) > 0
    evals = pl.read_parquet(run_dir / "evals.parquet")
    assert evals["slice"].n_unique() == 8  # eight years of my_data.npz, one slice each


def test_the_example_dataset_names_a_missing_file_before_any_work(tmp_path):
    here = shutil.copytree(EXAMPLES, tmp_path / "examples")
    _, simulate = extending_commands()
    args = [a if not a.startswith("dataset.path=") else "dataset.path=missing.npz" for a in simulate[3:]]
    result = cli([*args, "population.variants={}"], cwd=here, timeout=300)
    assert result.returncode == 2
    assert "dataset.path='missing.npz': expected an .npz file with arrays x" in result.stderr
    assert "Traceback" not in result.stderr and not (here / "results").exists()
