"""``ctsim --help`` (``python -m ctsim --help``), as a user runs it: every group, option and key, each with
its line; the keys of what the command line picks; the subcommands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parent.parent / "conf"
OPTION = re.compile(r"^  (?P<mark>[* ]) (?P<name>\S+)(?: +(?P<text>\S.*))?$")


def run_help(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-X", "importtime", "-m", "ctsim", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def sections(text: str) -> dict[str, list[str]]:
    """The help's ``== Title: ... ==`` sections by title (up to its colon), each as its lines."""
    found: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("== ") and line.endswith(" =="):
            lines = found.setdefault(line[3:-3].split(":")[0], [])
        else:
            lines.append(line)
    return found


def listed_options(lines: list[str]) -> dict[str, dict[str, tuple[str, bool]]]:
    """group → option → (description, picked by the command line), from the groups section."""
    groups: dict[str, dict[str, tuple[str, bool]]] = {}
    for line in filter(str.strip, lines):
        if not line.startswith(" "):
            group = groups.setdefault(line.split()[0], {})
            continue
        match = OPTION.match(line)
        assert match, f"not an option line: {line!r}"
        group[match["name"]] = (match["text"] or "", match["mark"] == "*")
    return groups


def option_files() -> dict[str, dict[str, Path]]:
    """group → option → file, found by scanning conf/ (top-level files are primary configs; ``_*.yaml``
    are blocks that options share, such as selection/_base.yaml)."""
    found: dict[str, dict[str, Path]] = {}
    for path in CONF.rglob("*.yaml"):
        group = path.parent.relative_to(CONF).as_posix()
        if group != "." and not path.stem.startswith("_"):
            found.setdefault(group, {})[path.stem] = path
    return found


def leaf_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        if key in ("defaults", "hydra") or key.startswith("_"):
            continue
        if isinstance(value, dict) and value:
            keys += leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def test_help_lists_every_group_and_option_of_conf_with_its_description(tmp_path):
    result = run_help("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "ctsim.app.help" in imported and "torch" not in imported  # answers before torch would load

    listed = listed_options(sections(result.stdout)["Configuration groups"])
    files = option_files()
    fits = files.pop("model/fits")  # picked by the root config (fits/${dataset}): one line, not 11
    assert set(listed) == set(files)
    nested = {"trigger/detector", "trigger/rule", "trigger/encoder", "selection/downsample"}
    assert nested <= set(listed)
    assert set(listed["model"]) == set(files["model"]) | {"fits/portraits_small"}
    assert listed["model"]["fits/portraits_small"] == (
        "yearbooknet: the model of dataset=portraits_small when none is named "
        "(config.yaml picks fits/${dataset}).",
        True,
    )
    assert len(fits) == 11
    listed["model"].pop("fits/portraits_small")
    missing = [f"{g}/{o}" for g in files for o in files[g] if o not in listed[g]]
    assert not missing, f"options not listed by --help: {missing}"
    undescribed = [str(files[g][o].relative_to(CONF)) for g in files for o in files[g] if not listed[g][o][0]]
    assert not undescribed, f"option files without a first comment line saying what they are: {undescribed}"
    for group, found in files.items():
        for option, path in found.items():
            lines = path.read_text().splitlines()
            comments = [line.lstrip("#").strip() for line in lines if line.startswith("#")]
            assert listed[group][option][0] in comments, f"{path}: the description is not its own comment"
    assert listed["dataset"]["sea"][0].startswith("SEA concepts (Street & Kim 2001)")
    assert listed["experiment"]["quickstart"][1] and listed["dataset"]["portraits_small"][1]  # the defaults


def test_help_lists_the_top_level_keys_commands_and_usage(tmp_path):
    result = run_help("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    parts = sections(result.stdout)

    rows = [[*line.split(None, 1), ""] for line in filter(str.strip, parts["Top-level keys"])]
    described = {row[0]: row[1] for row in rows}
    expected = leaf_keys(yaml.safe_load((CONF / "config.yaml").read_text()))
    assert {"name", "device", "progress", "stream.arrival_batch", "population.seeds", "output.plots"} <= set(
        expected
    )
    assert set(described) == set(expected)
    assert all(text.strip() for text in described.values())
    assert described["device"].startswith("auto | cpu | cuda")

    commands = "\n".join(parts["Subcommands"])
    for command in ("resume", "reproduce", "query", "oracle", "compare", "datasets", "export", "bench"):
        assert re.search(rf"^  ctsim {command}\b.*?  +\S", commands, re.M), command
    assert "ctsim.compare" not in result.stdout and "95% CIs" in commands
    usage = result.stdout.split("== ", 1)[0]
    for example in (
        "experiment=",
        "trigger=drift",
        "train.epochs=2",
        " -m ",
        "--cfg job",
        "--config-dir",
        "--help trig",
    ):
        assert example in usage
    assert "--config-dir,-cd" in "\n".join(parts["Flags"])  # Hydra's own flags, from $FLAGS_HELP


def test_help_lists_the_options_of_a_users_config_dir(tmp_path):
    mine = tmp_path / "my_conf"
    (mine / "experiment").mkdir(parents=True)
    (mine / "experiment" / "mine.yaml").write_text(
        "# @package _global_\n# python -m ctsim --config-dir my_conf experiment=mine\n"
        "# My study: costs $5 a run.\nname: mine\n"
    )
    (mine / "trigger" / "rule").mkdir(parents=True)
    (mine / "trigger" / "rule" / "bare.yaml").write_text("value: 1\n")
    (mine / "trigger" / "time.yaml").write_text("# Mine, hidden: conf/ comes first on the search path.\n")

    result = run_help("--config-dir", "my_conf", "experiment=mine", "trigger=drift", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = listed_options(sections(result.stdout)["Configuration groups"])
    assert listed["experiment"]["mine"] == ("My study: costs $5 a run.  [my_conf]", True)
    assert listed["trigger/rule"]["bare"] == ("[my_conf]", False)  # listed, with no description to show
    assert listed["trigger"]["time"][0].startswith("Train every `every` slices")
    picked = {(g, o) for g, found in listed.items() for o, (_, chosen) in found.items() if chosen}
    assert {("trigger", "drift"), ("trigger/detector", "mmd"), ("trigger/rule", "pvalue")} <= picked


def test_hydra_help_is_still_hydras(tmp_path):
    result = run_help("--hydra-help", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("Hydra (")
    assert "Top-level keys" not in result.stdout and "ctsim.compare" not in result.stdout


def test_help_with_an_override_it_cannot_apply_is_one_line_and_exit_code_2(tmp_path):
    cases = {  # each printed Hydra's traceback
        ("trigger=sometimes", "--help"): "  trigger='sometimes': expected one of the options ['always',",
        ("trigger.evry=3", "--help"): "  trigger.evry: unknown key; did you mean trigger.every?",
        (
            "-m",
            "population.variants={}",
            "trigger=time,amount",
            "--help",
        ): "ctsim: --help shows what one run picks",
    }
    for args, message in cases.items():
        result = run_help(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and message in result.stderr, (args, result.stderr)
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
        assert "torch" not in imported
    picked = run_help("-m", "population.variants={}", "trigger=drift", "--help", cwd=tmp_path)
    assert picked.returncode == 0 and "  * drift " in picked.stdout  # one value per key: help as usual
    assert not (tmp_path / "results").exists()


def test_help_lists_the_keys_of_what_the_command_line_picks(tmp_path):
    result = run_help(
        "--help", "trigger=drift", "trigger/detector=ks", "model=mlp", "dataset=sea", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    picked = "\n".join(sections(result.stdout)["Keys of what this command line picks"])
    blocks = {b.splitlines()[0]: b.splitlines()[1:] for b in picked.strip().split("\n\n")}
    assert {"trigger=drift", "trigger/detector=ks", "model=mlp", "dataset=sea", "train=default"} <= set(
        blocks
    )
    assert "experiment=quickstart" not in blocks  # an experiment's keys are its overrides, shown by --cfg job
    drift = {line.split()[0]: line.split(None, 1)[1] for line in blocks["trigger=drift"]}
    assert drift["trigger.interval=null"].startswith("samples between detections")
    assert "trigger.min_samples=20" in drift
    assert [line.split()[0] for line in blocks["model=mlp"]] == ["model.hidden=[128]"]
    assert "dataset.change_points=[10, 20, 30]" in "\n".join(blocks["dataset=sea"])
    keys = {k for lines in blocks.values() for k in (line.split("=")[0].strip() for line in lines)}
    assert "trigger.every" not in keys  # the time trigger's keys, not picked


def test_help_follows_an_option_that_includes_another(tmp_path):
    result = run_help("--help", cwd=tmp_path)  # the quickstart: dataset portraits_small, the portraits' model
    picked = "\n".join(sections(result.stdout)["Keys of what this command line picks"])
    blocks = {b.splitlines()[0]: b.splitlines()[1:] for b in picked.strip().split("\n\n")}
    dataset = [line.split()[0] for line in blocks["dataset=portraits_small"]]
    assert "dataset.size=0.2" in dataset and any(k.startswith("dataset.root=") for k in dataset)
    assert [line.split()[0] for line in blocks["model/fits=portraits_small"]] == [
        "model.channels=32",
        "model.blocks=4",
    ]
