"""``python -m ctsim --help``: every config group and option, with a line each, through Hydra's help.

Hydra prints ``hydra.help.template`` (``conf/config.yaml``) for ``--help``, and resolves it first, so the
template's ``${ctsim_help:SECTION}`` calls :func:`section`. The listing is read from the config files at
that moment, from every folder on the config search path (``conf/``, a ``--config-dir``, a
``hydra.searchpath``): a new option file shows up without touching this module.

An option's description is its file's first comment line, after ``# @package`` and any command lines
(``# python -m ...``): so every option file starts with one line that says what it is. A top-level key's
description is its inline comment in the primary config. Only the standard library and OmegaConf are
imported: ``--help`` answers before torch would load.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

USAGE = """\
ctsim: a continual-training simulator. It replays a time-ordered dataset through trigger and selection
policies, trains every model generation, and evaluates every generation on every time slice.

  python -m ctsim [experiment=NAME] [group=option ...] [key=value ...]

  python -m ctsim                                       the quickstart (experiment=quickstart), about a minute
  python -m ctsim experiment=portraits_yearly           an experiment: a whole study (conf/experiment/)
  python -m ctsim trigger=drift trigger/detector=ks     pick an option of a group, nested groups included
  python -m ctsim train.epochs=2 optimizer.lr=0.01      set any key of the composed config
  python -m ctsim -m experiment=portraits_yearly trigger=time,amount
                                                        a sweep (multirun): one run per value,
                                                        compared at the end (ctsim.compare)
  python -m ctsim --cfg job                             print the run config and each pipeline's changes
  python -m ctsim --config-dir my_conf experiment=NAME  your own config files, beside conf/"""

COMMANDS = (
    ("python -m ctsim resume RUN_DIR", "finish an interrupted or killed run"),
    ("python -m ctsim reproduce RUN_DIR", "train one generation again and check it equals its checkpoint"),
    ("python -m ctsim.query SQL [RUN_DIR ...]", "SQL over the tables of runs (default: all under results/)"),
    ("python -m ctsim.oracle RUN_DIR", "the hindsight-optimal trigger schedule and each pipeline's regret"),
    (
        "python -m ctsim.compare RUN_OR_SWEEP_DIR ... [--out DIR]",
        "compare runs: a table with 95% CIs, plots, report.html (a sweep does it at its end)",
    ),
    ("python -m ctsim.datasets", "prepare a dataset from your files (yearbook, huffpost, ...); list, info"),
    ("python -m ctsim.export tensorboard|mlflow RUN_DIR", "a finished run, in TensorBoard or MLflow"),
    ("python -m ctsim.bench", "benchmark the batched engine's routes against the sequential engine"),
)

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):(?P<rest>.*)$")
_COMMENT = re.compile(r"(^|\s)#\s?(?P<text>.*)$")


def description(path: Path) -> str:
    """An option file's one-line description: the first comment line of its header that says what it is.

    ``# @package`` lines, command lines (``# python ...``) and empty comments are skipped; the header ends
    at the first line that is not a comment. "" if it has none.
    """
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            return ""
        text = stripped.lstrip("#").strip()
        if text and not text.startswith(("@package", "python ")):
            return text
    return ""


def config_dirs() -> list[tuple[Path, str]]:
    """The folders on the config search path, in Hydra's order, each with its provider's name.

    Read from the config Hydra is printing help for; ``conf/`` alone outside a Hydra run.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [(CONF_DIR, "main")]
    sources = HydraConfig.get().runtime.config_sources
    return [(Path(s.path), s.provider) for s in sources if s.schema == "file" and Path(s.path).is_dir()]


def options() -> dict[str, dict[str, tuple[str, str]]]:
    """Every group (nested ones as ``trigger/detector``) → option → (description, where it comes from).

    Where two folders hold the same option, the first on the search path wins, as when Hydra composes.
    ``where`` is "" for ctsim's own ``conf/``, else the folder. Top-level files are primary configs, not
    options, and files named ``_*.yaml`` are blocks that options share; Hydra's own groups (``hydra/``)
    are left to ``--hydra-help``.
    """
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for folder, provider in config_dirs():
        where = "" if provider == "main" else _shown(folder)
        for path in sorted(folder.rglob("*.yaml")):
            group = path.parent.relative_to(folder).as_posix()
            if group == "." or group.split("/")[0] == "hydra" or path.stem.startswith("_"):
                continue  # top-level files are primary configs; _base.yaml and the like are shared blocks
            found.setdefault(group, {}).setdefault(path.stem, (description(path), where))
    return {group: dict(sorted(found[group].items())) for group in sorted(found)}


def chosen() -> set[tuple[str, str]]:
    """The (group, option) pairs the command line being helped picks (``model=fits/sea``: model/fits, sea)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    picked = set()
    for group, option in HydraConfig.get().runtime.choices.items():
        if option is None or group.startswith("hydra"):
            continue
        folder, _, name = f"{group}/{option}".rpartition("/")
        picked.add((folder, name))
    return picked


def groups_text() -> str:
    """One block per group: its name, then a line per option (``*``: what this command line picks)."""
    picked = chosen()
    blocks = []
    for group, found in options().items():
        width = max(len(name) for name in found)
        lines = [group]
        for name, (text, where) in found.items():
            mark = "*" if (group, name) in picked else " "
            suffix = f"  [{where}]" if where else ""
            lines.append(f"  {mark} {name:<{width}}  {text}{suffix}".rstrip())
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def top_level_keys(path: Path) -> list[tuple[str, str]]:
    """The leaf keys of a primary config (dotted, as ``stream.split_seed``) and their inline comments.

    ``defaults``, ``hydra`` and keys starting with ``_`` are left out: they are not settings to change.
    """
    keys: list[tuple[str, str]] = []
    parents: list[tuple[int, str]] = []  # (indent, key) of the mappings the current line is inside
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _KEY.match(line)
        if not match:
            continue
        indent, key, rest = len(match["indent"]), match["key"], match["rest"]
        parents = [(i, k) for i, k in parents if i < indent]
        dotted = ".".join([k for _, k in parents] + [key])
        comment = _COMMENT.search(rest)
        value = rest[: comment.start()].strip() if comment else rest.strip()
        skipped = dotted.split(".")[0] in ("defaults", "hydra") or any(
            part.startswith("_") for part in dotted.split(".")
        )
        if not value:
            parents.append((indent, key))
        elif not skipped:
            keys.append((dotted, comment["text"].strip() if comment else ""))
    return keys


def keys_text() -> str:
    """A line per top-level key of the primary config, with its inline comment."""
    keys = top_level_keys(_primary_config())
    width = max(len(k) for k, _ in keys)
    return "\n".join(f"  {k:<{width}}  {text}".rstrip() for k, text in keys)


def _primary_config() -> Path:
    """The primary config file of the command line: ``config.yaml`` unless ``--config-name`` says another."""
    from hydra.core.hydra_config import HydraConfig

    name = HydraConfig.get().job.config_name if HydraConfig.initialized() else "config"
    for folder, _ in config_dirs():
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    return CONF_DIR / "config.yaml"


def commands_text() -> str:
    """A line per companion command."""
    width = max(len(c) for c, _ in COMMANDS)
    return "\n".join(f"  {c:<{width}}  {text}" for c, text in COMMANDS)


SECTIONS = {"usage": lambda: USAGE, "groups": groups_text, "keys": keys_text, "commands": commands_text}


def section(name: str) -> str:
    """The text of one section of ``--help``, with ``$`` escaped for Hydra's ``string.Template``."""
    if name not in SECTIONS:
        raise ValueError(f"ctsim_help: unknown section {name!r}; expected one of {sorted(SECTIONS)}")
    return SECTIONS[name]().replace("$", "$$")


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it, else as it is."""
    cwd = Path.cwd()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)


OmegaConf.register_new_resolver("ctsim_help", section, replace=True)
