"""From a command line to composed configs: the run's own and each variant's, checked as configs.

This is the first half of start-up checking; :mod:`ctsim.app.build` (which imports torch) is the second.
Nothing here imports torch. Everything here runs before a run folder exists.

**Which pipelines a command line runs** (:func:`complete`). ``python -m ctsim`` alone runs the default
experiment, ``quickstart`` (three pipelines). A command line that names no experiment but picks a
pipeline component (an option of ``dataset``, ``model``, ``trigger`` or ``selection``, or a ``trigger.``
or ``selection.`` key) runs one pipeline: the quickstart's settings with those choices, named after
what it runs (``drift``, ``amount_reservoir``)::

    python -m ctsim dataset=sea trigger=drift          # one pipeline, named drift

``experiment=null`` runs the root config alone, as one pipeline named the same way.

**Override precedence.** A run holds ``population.variants × population.seeds`` pipelines. Each
variant is composed like a command line of its own: the run's overrides, then the variant's. A run
override of a key that a variant also sets (``trigger.every`` where a variant says
``trigger.every=5``), or of a key inside a group a variant picks (``trigger.every`` where a variant
says ``trigger=never``), would be replaced or dropped for that variant, so it is an error that names
the variants; nothing is dropped silently. ``population.variants={}`` (or ``null``) still runs one
pipeline from any experiment's config, named after the run.

**Unknown keys.** A key that the root config does not have (``trian:`` in an experiment file) is an
error naming the nearest known key. Keys inside a component's config are checked against the
arguments of its ``_target_`` when it is built (:mod:`ctsim.app.build`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from hydra import compose as hydra_compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError
from yaml import MarkedYAMLError

from ctsim.app.hydra_internals import reuse_parsed_configs
from ctsim.validation import MAX_SEED, Problem, check, first_line, is_int, is_number, positive_int, unwritable

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the repository's conf/ (editable install)
PIPELINE_GROUPS = ("trigger", "selection", "model", "optimizer", "schedule", "train")
NAME = re.compile(r"^[^\W_][\w.-]*$")  # letters of any script (wetter_ä), digits, '_', '-', '.'
NAME_RULE = "letters (any alphabet), digits, '_', '-' or '.', starting with a letter or digit"
ONE_PIPELINE = "population.variants={}"  # one pipeline from an experiment's config, its variants left out
CHOICES = ("dataset", "model", "trigger", "selection")  # picking one leaves out the quickstart's variants
KEYED = ("trigger", "selection")  # so does setting a key of these: the quickstart's variants set them


# What a sweep given without -m is told (ctsim.run, which has no -m, recognises and rewords it).
SWEEP = (
    "several values are a sweep: add -m (--multirun) to run one job per value, or write a list as key=[a,b]"
)


def complete(overrides: list[str], config_name: str = "config") -> list[str]:
    """The command line as it runs: ``overrides`` with what the rule in the module docstring adds.

    Without an ``experiment=``, a pick of a pipeline component adds ``population.variants={}`` and a
    ``name=`` (unless given); ``experiment=null`` becomes ``~experiment`` (Hydra refuses the former),
    with a ``name=``. Nothing changes for another primary config, or where ``population.variants`` is set.

    >>> complete(["dataset=sea", "trigger=drift"])
    ['dataset=sea', 'trigger=drift', 'population.variants={}', 'name=drift']
    >>> complete(["train.epochs=1"])
    ['train.epochs=1']
    """
    parsed = [(text, o) for text, o in _parse_each(overrides) if o is not None]
    keys = [_key(o) for _, o in parsed]
    if config_name != "config" or any(k.startswith("population.variants") for k in keys):
        return list(overrides)
    none = {"experiment=null", "~experiment", "experiment=~", "~experiment=null"}
    dropped = any(text.replace(" ", "") in none for text, _ in parsed)
    if dropped:
        out = ["~experiment" if o.replace(" ", "") in none else o for o in overrides]
    elif "experiment" in keys:
        return list(overrides)
    else:
        picks = any(k in CHOICES or k.split(".")[0] in KEYED for k in keys)
        if not picks:
            return list(overrides)
        out = [*overrides, ONE_PIPELINE]
    return out if "name" in keys else [*out, f"name={_named_after(parsed)}"]


def _named_after(parsed: list[tuple[str, Override]]) -> str:
    """A run's name from its picks: the trigger (the default one if none is picked), then the selection
    and model picked; a swept group gives ``<group>_sweep``."""
    picked: dict[str, str] = {}
    for _, o in parsed:
        group = _key(o)
        if group in ("trigger", "selection", "model") and o.value() is not None:
            value = "sweep" if o.is_sweep_override() else str(o.value()).rsplit("/", 1)[-1]
            picked[group] = f"{group}_sweep" if value == "sweep" else value
    parts = [picked.get("trigger") or _default_option("trigger")]
    parts += [picked[g] for g in ("selection", "model") if g in picked]
    return "_".join(parts)


def _default_option(group: str) -> str:
    """The option the root config picks for ``group`` (its defaults list)."""
    defaults = OmegaConf.load(CONF_DIR / "config.yaml").get("defaults", [])
    found = [str(d[group]) for d in defaults if isinstance(d, DictConfig) and group in d]
    return found[0].rsplit("/", 1)[-1] if found else group


def compose(
    config_name: str, overrides: list[str] | None = None, return_hydra_config: bool = False
) -> DictConfig:
    """Hydra's ``compose``, with each config file parsed once per initialisation
    (:func:`ctsim.app.hydra_internals.reuse_parsed_configs`)."""
    reuse_parsed_configs()
    return hydra_compose(config_name, overrides=overrides or [], return_hydra_config=return_hydra_config)


@dataclass(frozen=True)
class Variant:
    """One named variant: its overrides and the composed config its pipelines are built from."""

    name: str
    overrides: list[str]
    config: DictConfig
    declared: bool = True


def compose_run(config_name: str, overrides: list[str]) -> tuple[DictConfig | None, list[Problem]]:
    """The run's config (with its ``hydra`` node), and a problem for every override Hydra refused.

    An override Hydra cannot apply (an unknown key or option) is reported and left out, and the rest
    composed again, so every bad override is named at once. A broken config file stops composition:
    then the config is None.
    """
    problems: list[Problem] = []
    overrides = list(overrides)
    while True:
        try:
            return compose(config_name, overrides=overrides, return_hydra_config=True), problems
        except HydraException as e:
            problem, culprit = _composition_problem(e, config_name, overrides)
        except MarkedYAMLError as e:
            problem, culprit = _yaml_problem(e), None
        except Exception as e:  # Hydra or OmegaConf failing inside on an override it did not refuse
            culprit = _culprit(config_name, overrides)
            text = f"Hydra cannot apply this override ({type(e).__name__}: {first_line(e)})"
            problem = Problem(culprit or "config", None, "", text=text)
        problems.append(problem)
        if culprit is None:
            return None, problems
        overrides.remove(culprit)


def _composition_problem(
    e: HydraException, config_name: str, overrides: list[str]
) -> tuple[Problem, str | None]:
    """What Hydra refused, in one line, and the override that caused it (None if no single one)."""
    parsed = _parse_each(overrides)
    if isinstance(e, MissingConfigException) and (e.missing_cfg_file or "").startswith("model/fits/"):
        dataset = e.missing_cfg_file.rsplit("/", 1)[-1]
        text = (
            f"no model is named, and dataset {dataset} has no default model "
            f"(conf/model/fits/{dataset}.yaml): name one, e.g. model=mlp"
        )
        return Problem("model", None, "", text=text), None
    if isinstance(e, MissingConfigException) and e.missing_cfg_file:
        group = e.missing_cfg_file.rsplit("/", 1)[0].replace("/", ".")
        culprit = next((text for text, o in parsed if o is not None and _key(o) == group), None)
        option = e.missing_cfg_file.rsplit("/", 1)[-1]
        if e.options:
            options = sorted(o for o in e.options if not o.startswith("_"))  # _base: shared, no option
            near = difflib.get_close_matches(option, options, n=1, cutoff=0.6)
            hint = f" (did you mean {group.replace('.', '/')}={near[0]}?)" if near else ""
            return Problem(group, option, f"one of the options {options}{hint}"), culprit
        return Problem("config", e.missing_cfg_file, "a config file that exists"), culprit
    cause = e.__cause__
    full_key = getattr(cause, "full_key", None)
    if isinstance(e, ConfigCompositionException) and full_key:
        culprit = next((text for text, o in parsed if o is not None and _key(o) == full_key), None)
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):  # not in the config
            rest = [o for o in overrides if o != culprit]
            problem = unknown_key(full_key, _keys_beside(full_key, config_name, rest))
            group, _, leaf = full_key.rpartition(".")
            owners = _options_with_key(group.replace(".", "/"), leaf) if group else []
            if owners and "did you mean" not in problem.text:  # engine.channels_last with engine=batched
                owned = " or ".join(f"{group.replace('.', '/')}={o}" for o in owners)
                problem = replace(problem, text=f"{problem.text}; it is a key of {owned}")
            elif "did you mean" not in problem.text:  # no typo in sight: perhaps a key to add
                problem = replace(problem, text=f"{problem.text}; to add a new key: +{culprit or full_key}")
            return problem, culprit
        text = f"Hydra cannot apply this override ({type(cause).__name__}: {first_line(cause)})"
        return Problem(culprit or full_key, None, "", text=text), culprit
    unused = re.search(r"Could not override '([^']+)'. No match in the defaults list", str(e))
    if unused:  # trigger/detector=ks with trigger=performance: that option has no detector to choose
        group = unused[1]
        culprit = next((t for t, o in parsed if o is not None and o.key_or_group == group), None)
        parent, _, child = group.rpartition("/")
        takers = _options_choosing(parent, child) if parent else []
        text = f"the chosen {parent or 'config'} has no {child} to choose"
        if takers:
            text += f": {group} applies only to {' or '.join(f'{parent}={t}' for t in takers)}"
        return Problem(culprit or group, None, "", text=text), culprit
    there = re.search(r"An item is already at '([^']+)'", str(e))
    if there:  # +key=value (add) on a key the config has
        added = next((t for t, o in parsed if o is not None and o.is_add() and _key(o) == there[1]), None)
        plain = (added or there[1]).lstrip("+")
        text = f"{there[1]} is in the config already: + adds a new key; set it without the +: {plain}"
        return Problem(added or there[1], None, "", text=text), added
    bad = next((text for text, o in parsed if o is None), None)
    sweep = next((text for text, o in parsed if o is not None and o.is_sweep_override()), None)
    if bad is None and sweep is not None and "Ambiguous value" in str(e):
        return Problem(sweep, None, "", text=SWEEP), sweep
    if bad is not None and not bad.isascii():
        key, _, value = bad.partition("=")
        text = (
            "Hydra reads only ASCII characters in a value that is not quoted: quote it, "
            f"{key}='{value}' (in a shell: \"{key}='{value}'\")"
        )
        return Problem(bad, None, "", text=text), bad
    if bad is not None:
        text = f"not an override in Hydra's syntax (key=value, e.g. trigger.every=5): {first_line(e)}"
        return Problem(bad, None, "", text=text), bad
    return Problem("config", None, f"a config Hydra can compose ({first_line(e)})"), None


def _culprit(config_name: str, overrides: list[str]) -> str | None:
    """The first override without which the config composes."""
    for o in overrides:
        try:
            compose(config_name, overrides=[x for x in overrides if x != o], return_hydra_config=True)
        except Exception:  # any failure: this one is not (alone) the cause
            continue
        return o
    return None


def _keys_beside(full_key: str, config_name: str, overrides: list[str]) -> list[str]:
    """The keys next to ``full_key`` in the config composed without it: what a typo might have meant."""
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    try:
        node = compose(config_name, overrides=overrides, return_hydra_config=full_key.startswith("hydra."))
    except (HydraException, MarkedYAMLError):
        node = _base(config_name)
    node = OmegaConf.select(node, parent) if parent else node
    if not isinstance(node, DictConfig):
        return []
    return [f"{parent}.{k}" if parent else str(k) for k in node]


def _yaml_problem(e: MarkedYAMLError) -> Problem:
    """A YAML syntax error, with the file and the line where it starts."""
    mark = e.context_mark or e.problem_mark
    if mark is None:
        return Problem("config", None, "", text=f"invalid YAML: {e}")
    what = ", ".join(str(part) for part in (e.context, e.problem) if part)
    return Problem(f"{mark.name}, line {mark.line + 1}", None, "", text=f"invalid YAML: {what}")


def unknown_key(key: str, known: list[str]) -> Problem:
    """An unknown key, with the nearest known one beside it (the last parts compared) when one is close.

    >>> str(unknown_key("train.epoch", ["train.epochs", "train.init"]))
    'train.epoch: unknown key; did you mean train.epochs?'
    """
    by_name = {k.rsplit(".", 1)[-1]: k for k in known}
    nearest = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_name), n=1, cutoff=0.6)
    hint = f"did you mean {by_name[nearest[0]]}?" if nearest else f"known keys here: {sorted(known)}"
    return Problem(key, None, "", text=f"unknown key; {hint}")


@cache
def option_files(group: str) -> list[Path]:
    """ctsim's own option files of ``group`` (``conf/<group>/*.yaml``), sorted; ``_*.yaml`` are blocks
    the options share, not options."""
    folder = CONF_DIR / group
    return sorted(p for p in folder.glob("*.yaml") if not p.stem.startswith("_")) if folder.is_dir() else []


def _options_with_key(group: str, key: str) -> list[str]:
    """The options of ``group`` that set ``key`` themselves (``engine``, ``channels_last``:
    ``["sequential"]``).

    >>> _options_with_key("engine", "channels_last"), _options_with_key("engine", "nope")
    (['sequential'], [])
    """
    return [p.stem for p in option_files(group) if key in (OmegaConf.load(p) or {})]


def _options_choosing(group: str, child: str) -> list[str]:
    """The options of ``group`` whose defaults list chooses a ``child`` (``trigger``, ``detector``:
    ``["drift"]``).

    >>> _options_choosing("trigger", "detector")
    ['drift']
    """
    return [
        p.stem
        for p in option_files(group)
        if any(isinstance(d, DictConfig) and child in d for d in OmegaConf.load(p).get("defaults") or [])
    ]


def _base(config_name: str = "config") -> DictConfig:
    """The root config without an experiment: the keys a run may have."""
    try:
        return compose(config_name, overrides=["~experiment"])
    except HydraException:
        return compose(config_name)


def config_problems(cfg: DictConfig, run_overrides: list[str], config_name: str) -> list[Problem]:
    """What is wrong with the config as a config, found without building anything: unknown keys at
    its root, and variants that are malformed or would replace a run override.
    """
    root = unknown_root_keys(cfg, config_name)
    if root:
        return root  # the variants cannot be read from a config of the wrong shape
    return [p for p in variants(cfg, run_overrides, config_name)[1] if p is not None]


def unknown_root_keys(cfg: DictConfig, config_name: str = "config") -> list[Problem]:
    """Keys at the root, or in a plain section of it (``population``, ``output``), that it does not have.

    Sections with a ``_target_`` are checked against their component's arguments when built.
    """
    base = _base(config_name)
    problems = []
    for key in cfg:
        if key == "hydra":
            continue
        if key not in base:
            problems.append(unknown_key(str(key), [str(k) for k in base]))
            continue
        node, known = cfg[key], base[key]
        if isinstance(known, DictConfig) and not isinstance(node, DictConfig):
            problems.append(Problem(str(key), node, "a section of keys, as in conf/config.yaml"))
            continue
        if isinstance(node, DictConfig) and isinstance(known, DictConfig) and "_target_" not in known:
            problems += [
                unknown_key(f"{key}.{k}", [f"{key}.{j}" for j in known]) for k in node if k not in known
            ]
    return problems


def run_problems(cfg: DictConfig) -> list[Problem]:
    """The run-level values: ``name``, ``progress``, ``population.seeds`` and ``output``."""
    name, seeds, out = cfg.get("name"), cfg.population.get("seeds"), cfg.get("output", {})
    seed_list = list(seeds) if OmegaConf.is_list(seeds) else seeds
    return [
        check("name", name, isinstance(name, str) and bool(NAME.match(name)), NAME_RULE),
        check("progress", cfg.get("progress"), isinstance(cfg.get("progress"), bool), "true or false"),
        check(
            "population.seeds",
            seed_list,
            isinstance(seed_list, list)
            and bool(seed_list)
            and all(is_int(s) and 0 <= s <= MAX_SEED for s in seed_list)
            and len(set(seed_list)) == len(seed_list),
            "a non-empty list of distinct integers in [0, 2**63 - 1]",
        ),
        check(
            "output.checkpoints",
            out.get("checkpoints"),
            out.get("checkpoints") in ("all", "last", "none"),
            "one of ['all', 'last', 'none']",
        ),
        check("output.plots", out.get("plots"), isinstance(out.get("plots"), bool), "true or false"),
        positive_int("output.eval_chunk", out.get("eval_chunk")),
    ]


def callback_problems(cfg: DictConfig) -> list[Problem]:
    """The settings of the sweep's comparison (``hydra.callbacks.compare``), checked before the first job
    rather than when the sweep ends."""
    key = "hydra.callbacks.compare"
    node = OmegaConf.select(cfg, key)
    if not isinstance(node, DictConfig):
        return []
    known = ("_target_", "enabled", "price_per_hour")
    problems = [unknown_key(f"{key}.{k}", [f"{key}.{j}" for j in known[1:]]) for k in node if k not in known]
    enabled, price = node.get("enabled", True), node.get("price_per_hour", 0.0)
    problems += [
        check(f"{key}.enabled", enabled, isinstance(enabled, bool), "true or false"),
        check(
            f"{key}.price_per_hour", price, is_number(price) and price >= 0, "a number ≥ 0 (dollars per hour)"
        ),
    ]
    return [p for p in problems if p is not None]


def subdir_problems(cfg: DictConfig, jobs: int) -> list[Problem]:
    """A sweep's jobs need a folder each: ``hydra.sweep.subdir`` must differ from job to job."""
    text = str(OmegaConf.to_container(cfg.hydra.sweep, resolve=False).get("subdir"))
    per_job = ("hydra.job.num", "hydra.job.id", "hydra.job.override_dirname")
    if jobs < 2 or any(k in text for k in per_job):
        return []
    expected = "a folder per job, e.g. ${hydra.job.num}: every job would write its run into one folder"
    return [Problem("hydra.sweep.subdir", text, expected)]


def output_dir_problems(cfg: DictConfig, multirun: bool) -> list[Problem]:
    """The run (or sweep) folder must be new or empty, and writable: ctsim never touches another run's files.

    The default folder is claimed fresh by the ``unique_dir`` resolver, so only its parent is checked;
    a folder the user names (``hydra.run.dir=...``) is resolved and checked as it is.
    """
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    text = str(OmegaConf.to_container(cfg.hydra.sweep if multirun else cfg.hydra.run, resolve=False)["dir"])
    if text.startswith("${unique_dir:"):
        # Resolving it claims (creates) the folder: check the fixed part of the path it is made under.
        fixed = text.removeprefix("${unique_dir:").split("${", 1)[0]
        return writable_problems(key, Path(fixed or "."))
    path = Path(str(OmegaConf.select(cfg, key)))
    if path.is_file():
        return [Problem(key, str(path), "a folder for the run, but it is a file")]
    if path.is_dir() and any(path.iterdir()):
        return [
            Problem(
                key,
                str(path),
                "a new or empty folder: it already holds files (another run?), and ctsim never "
                "overwrites a run; choose another folder",
            )
        ]
    return writable_problems(key, path)


def writable_problems(key: str, path: Path) -> list[Problem]:
    """``path`` is, or can be made, a folder ctsim can write."""
    why = unwritable(path)
    return [] if why is None else [Problem(key, str(path), f"a folder ctsim can write the run into ({why})")]


def variants(
    cfg: DictConfig, run_overrides: list[str], config_name: str
) -> tuple[list[Variant], list[Problem]]:
    """The run's variants, each composed over the run's overrides (see the module docstring).

    With no variants (or ``population.variants={}`` / ``null`` on the command line), the run is one
    pipeline named after the run.
    """
    declared = dict(cfg.population.get("variants") or {})
    only = cfg.population.get("only")
    if not declared or _asks_single(run_overrides):
        single = [Variant(str(cfg.name), [], cfg, declared=False)]
        chosen = list(only) if OmegaConf.is_list(only) else only
        return single, [check("population.only", chosen, only is None, "null: this run has no variants")]
    problems: list[Problem] = []
    if only is not None and not OmegaConf.is_list(only):
        return [], [Problem("population.only", only, "a list of variant names, e.g. [yearly, never]")]
    if only is not None:
        unknown = [v for v in only if v not in declared]
        expected = f"names of declared variants {sorted(declared)}"
        problems.append(check("population.only", list(only), not unknown, expected))
        declared = {k: v for k, v in declared.items() if k in only}
    checked = {name: _variant_overrides(name, ovs, problems) for name, ovs in declared.items()}
    checked = {name: ovs for name, ovs in checked.items() if ovs is not None}
    problems += _conflicts(run_overrides, checked, str(cfg.name))
    if any(p is not None for p in problems):
        return [], problems
    run = [o for o in run_overrides if _top_key(o) != "population" and _carried_to_variants(o)]
    out = []
    for name, ovs in checked.items():
        try:
            composed = compose(config_name, overrides=run + ovs)
        except (HydraException, MarkedYAMLError) as e:
            problems.append(_variant_problem(e, name, ovs, config_name, run))
            continue
        out.append(Variant(name, ovs, composed))
    return out, problems


def _variant_problem(
    e: Exception, name: str, overrides: list[str], config_name: str, run: list[str]
) -> Problem:
    """A variant's override that Hydra refused, named after the variant as the run's own would be
    (``every3:trigger.kk: unknown key; did you mean trigger.k?``), or the variant's whole list."""
    if isinstance(e, HydraException):
        found, culprit = _composition_problem(e, config_name, run + overrides)
        if culprit in overrides:
            return replace(found, key=f"{name}:{found.key}")
    key = f"population.variants.{name}"
    return Problem(key, overrides, f"overrides Hydra can apply ({first_line(e)})")


def pipeline_differences(found: list[Variant], cfg: DictConfig) -> dict[str, dict]:
    """Each variant's pipeline groups where they differ from ``cfg`` (the run's config), as plain data.

    A group whose ``_target_`` differs is given whole; otherwise only its changed keys.
    """
    run = {g: OmegaConf.to_container(cfg[g], resolve=True) for g in PIPELINE_GROUPS}
    out: dict[str, dict] = {}
    for v in found:
        own = {g: OmegaConf.to_container(v.config[g], resolve=True) for g in PIPELINE_GROUPS}
        out[v.name] = {
            g: own[g]
            if own[g].get("_target_") != run[g].get("_target_")
            else {k: x for k, x in own[g].items() if run[g].get(k) != x}
            for g in PIPELINE_GROUPS
            if own[g] != run[g]
        }
    return out


def _variant_overrides(name: str, overrides: object, problems: list[Problem]) -> list[str] | None:
    key = f"population.variants.{name}"
    if not NAME.match(name):
        problems.append(Problem(key, name, f"a name of {NAME_RULE}"))
        return None
    if not OmegaConf.is_list(overrides) or not all(isinstance(o, str) for o in overrides):
        problems.append(Problem(key, overrides, 'a list of override strings, e.g. ["trigger=never"]'))
        return None
    shared = [o for o in overrides if _top_key(o) not in PIPELINE_GROUPS]
    if shared:
        problems.append(
            Problem(
                key,
                shared,
                f"overrides of {list(PIPELINE_GROUPS)} only: the dataset, stream, engine and device "
                "are shared by every pipeline of a run",
            )
        )
        return None
    if any(o is None for _, o in _parse_each(list(overrides))):
        problems.append(Problem(key, list(overrides), "overrides in Hydra's syntax, e.g. trigger.every=5"))
        return None
    return list(overrides)


def _conflicts(run_overrides: list[str], declared: dict[str, list[str]], run_name: str) -> list[Problem]:
    """One problem naming the run overrides that variants would replace: never dropped silently."""
    sets = {name: override_keys(ovs) for name, ovs in declared.items()}
    keys, by = [], {}
    for text, o in _parse_each(run_overrides):
        if o is None or _top_key(text) in ("population", "hydra"):
            continue
        key = _key(o)
        for name, theirs in sets.items():
            hit = sorted({k for k in theirs if key == k or key.startswith(k + ".")})
            if hit:
                keys.append(key) if key not in keys else None
                by.setdefault(name, set()).update(hit)
    if not keys:
        return []
    setters = "; ".join(f"{name}: {', '.join(sorted(hit))}" for name, hit in by.items())
    text = (
        f"the variants of {run_name} set these too ({setters}), so your value would not apply to them. "
        f"To run one pipeline with your settings, add {ONE_PIPELINE}; to change a variant, set "
        f"population.variants.{next(iter(by))}=[...]; to run some variants, population.only=[...]"
    )
    return [Problem(", ".join(keys), None, "", text=text)]


def _carried_to_variants(override: str) -> bool:
    """Hydra's own settings stay with the run, except where to find configs (a user's experiments)."""
    return _top_key(override) != "hydra" or override.startswith("hydra.searchpath")


def _asks_single(run_overrides: list[str]) -> bool:
    """Does the command line set ``population.variants`` to ``{}`` or ``null`` (last, if more than once)?"""
    values = [
        o.value()
        for _, o in _parse_each(run_overrides)
        if o is not None and _key(o) == "population.variants" and not o.is_sweep_override()
    ]
    return bool(values) and values[-1] in ({}, None)


def override_keys(overrides: list[str]) -> list[str]:
    """The keys (or groups) ``overrides`` set, dotted: ``["trigger", "trigger.every"]``."""
    return [_key(o) for _, o in _parse_each(overrides) if o is not None]


def _parse_each(overrides: list[str]) -> list[tuple[str, Override | None]]:
    """Each override with its parse, or None where it is not valid Hydra syntax."""
    parser = OverridesParser.create()
    out = []
    for text in overrides:
        try:
            (o,) = parser.parse_overrides([text])
        except HydraException:
            o = None
        out.append((text, o))
    return out


def _key(o: Override) -> str:
    """``trigger.every`` for ``trigger.every=2`` or ``+trigger.every=2``; ``train.x`` for ``train/x=y``."""
    return o.key_or_group.replace("/", ".")


def _top_key(override: str) -> str:
    """``trigger`` for ``trigger=time``, ``trigger.every=2``, ``+trigger.x=1`` or ``train/optimizer=adam``."""
    return re.split(r"[.=/]", override.lstrip("+~"), maxsplit=1)[0]
