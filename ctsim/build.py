"""From a composed Hydra config to ready objects: the only place that calls ``instantiate``.

Everything the config names is built and validated here, before any data is generated or model
trained; every problem found is reported together in one :class:`~ctsim.config.ConfigError`.

**Population.** A run holds ``population.variants × population.seeds`` pipelines. A variant is a
name and a list of Hydra overrides, applied on top of the run's own config::

    population:
      seeds: [0, 1, 2]
      variants:
        yearly: [trigger=time, trigger.every=1]
        amount_500: [trigger=amount, trigger.every=500]
        never: [trigger=never]

Each variant is composed like a command line of its own: the run's overrides first, then the
variant's. Where a variant picks another option of a config group (``trigger=never``), the run's
overrides of keys in that group are dropped for that variant, since they were meant for another
option. Variants change only the pipeline groups (trigger, selection, model, optimizer, schedule,
train):
the dataset, stream, engine and device are shared by the run. With no variants, the run is one
pipeline, named after the run (``name``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ctsim.config import ConfigError, Problem, check, is_int
from ctsim.datasets.base import Dataset
from ctsim.engine.base import Engine, TrainConfig, names_parameter
from ctsim.models.base import ModelSpec
from ctsim.simulation import Pipeline
from ctsim.stream import StreamSpec

PIPELINE_GROUPS = ("trigger", "selection", "model", "optimizer", "schedule", "train")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Variant:
    """One named variant: its overrides and the composed config its pipelines are built from."""

    name: str
    overrides: list[str]
    config: DictConfig
    declared: bool = True


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, built and validated."""

    name: str
    dataset: Dataset
    stream: StreamSpec
    engine: Engine
    pipelines: list[Pipeline]
    variants: list[Variant]
    checkpoints: str
    plots: bool
    progress: bool


def build_run(cfg: DictConfig, overrides: list[str], config_name: str = "config") -> RunPlan:
    """Build every object ``cfg`` names; raise one ConfigError listing every problem.

    ``overrides`` are the run's own overrides (the command line); variants are composed on top of
    them with Hydra's compose API, which needs Hydra to be initialised (it is, inside the app).
    """
    problems: list[Problem] = []
    name = str(cfg.name)
    problems.append(check("name", name, bool(NAME.match(name)), "letters, digits, '_', '-' or '.'"))
    dataset = _instantiate(cfg.dataset, "dataset", problems)
    stream = _instantiate(cfg.stream, "stream", problems)
    engine = _instantiate(cfg.engine, "engine", problems, device=cfg.device)
    out = cfg.output
    problems += [
        check(
            "output.checkpoints",
            out.checkpoints,
            out.checkpoints in ("all", "last", "none"),
            "one of ['all', 'last', 'none']",
        ),
        check("output.plots", out.plots, isinstance(out.plots, bool), "true or false"),
    ]
    seeds = list(cfg.population.seeds)
    problems.append(
        check(
            "population.seeds",
            seeds,
            bool(seeds) and all(is_int(s) and s >= 0 for s in seeds) and len(set(seeds)) == len(seeds),
            "a non-empty list of distinct integers ≥ 0",
        )
    )
    variants = _variants(cfg, overrides, config_name, problems)
    pipelines = []
    for variant in variants:
        for seed in seeds:
            pipeline = _pipeline(variant, seed, dataset, problems)
            if pipeline is not None:
                pipelines.append(pipeline)
    ConfigError.raise_all(problems)
    return RunPlan(
        name, dataset, stream, engine, pipelines, variants, out.checkpoints, out.plots, bool(cfg.progress)
    )


def _instantiate(node: Any, key: str, problems: list[Problem], **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, with a constructor's ConfigError re-keyed under ``key``."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ConfigError):
            problems.extend(cause.prefixed(key).problems)
        else:
            target = OmegaConf.select(node, "_target_") if isinstance(node, DictConfig) else None
            detail = str(cause or e).splitlines()[0]
            problems.append(Problem(key, target, f"arguments that {target} accepts ({detail})"))
        return None


def _pipeline(
    variant: Variant, seed: int, dataset: Dataset | None, problems: list[Problem]
) -> Pipeline | None:
    found: list[Problem] = []
    cfg = variant.config
    parts = {group: _instantiate(cfg[group], group, found) for group in PIPELINE_GROUPS}
    model = None
    if parts["model"] is not None and dataset is not None:
        model = ModelSpec(parts["model"], tuple(dataset.input_shape), dataset.num_classes)
        try:
            built = model.build()  # validates the model's own arguments against the dataset's shapes
        except ConfigError as e:
            found += e.prefixed("model").problems
        else:
            if parts["train"] is not None:
                found += _freeze_problems(parts["train"], built)
    if variant.declared:
        found = [Problem(f"{variant.name}:{p.key}", p.value, p.expected) for p in found]
    if found or dataset is None:
        problems.extend(p for p in found if p not in problems)  # one report per problem, not per seed
        return None
    return Pipeline(
        variant.name,
        seed,
        parts["trigger"],
        parts["selection"],
        model,
        parts["optimizer"],
        parts["train"],
        parts["schedule"],
    )


def _freeze_problems(train: TrainConfig, model: torch.nn.Module) -> list[Problem]:
    """``train.freeze`` must name parameters the model has, and leave some to train."""
    names = [name for name, _ in model.named_parameters()]
    unknown = [f for f in train.freeze if not any(names_parameter(f, n) for n in names)]
    tops = sorted({n.rsplit(".", 1)[0] for n in names})
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and not train.frozen(n)]
    return [
        p
        for p in (
            check(
                "train.freeze",
                list(train.freeze),
                not unknown,
                f"names or prefixes of the model's parameters, e.g. {tops}",
            ),
            check(
                "train.freeze",
                list(train.freeze),
                bool(trainable) or not names,
                "to leave at least one parameter to train",
            ),
        )
        if p is not None
    ]


def _variants(
    cfg: DictConfig, overrides: list[str], config_name: str, problems: list[Problem]
) -> list[Variant]:
    declared = dict(cfg.population.variants or {})
    if not declared:
        return [Variant(str(cfg.name), [], cfg, declared=False)]
    only = cfg.population.only
    if only is not None:
        unknown = [v for v in only if v not in declared]
        problems.append(
            check(
                "population.only", list(only), not unknown, f"names of declared variants {sorted(declared)}"
            )
        )
        declared = {k: v for k, v in declared.items() if k in only}
    variants = []
    for name, variant_overrides in declared.items():
        key = f"population.variants.{name}"
        if not NAME.match(name):
            problems.append(Problem(key, name, "a name of letters, digits, '_', '-' or '.'"))
            continue
        if not OmegaConf.is_list(variant_overrides) or not all(isinstance(o, str) for o in variant_overrides):
            problems.append(
                Problem(key, variant_overrides, 'a list of override strings, e.g. ["trigger=never"]')
            )
            continue
        shared = [o for o in variant_overrides if _top_key(o) not in PIPELINE_GROUPS]
        if shared:
            problems.append(
                Problem(
                    key,
                    shared,
                    f"overrides of {list(PIPELINE_GROUPS)} only: the dataset, "
                    "stream, engine and device are shared by every pipeline of a run",
                )
            )
            continue
        combined = _combine(overrides, list(variant_overrides))
        try:
            composed = compose(config_name=config_name, overrides=combined)
        except HydraException as e:
            problems.append(
                Problem(key, list(variant_overrides), f"overrides Hydra can apply ({_first_line(e)})")
            )
            continue
        variants.append(Variant(name, list(variant_overrides), composed))
    return variants


def _combine(run_overrides: list[str], variant_overrides: list[str]) -> list[str]:
    """The run's overrides, minus those a variant replaces, then the variant's."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(variant_overrides)
    replaced_groups = {o.key_or_group for o in parsed if o.key_or_group in PIPELINE_GROUPS}
    replaced_keys = {o.key_or_group for o in parsed}
    kept = []
    for text, o in zip(run_overrides, parser.parse_overrides(run_overrides)):
        key = o.key_or_group
        top = _top_key(key)
        if key in replaced_keys or (top in replaced_groups and key != top) or key.startswith("population."):
            continue
        kept.append(text)
    return kept + variant_overrides


def _top_key(override: str) -> str:
    """``trigger`` for ``trigger=time``, ``trigger.every=2``, ``+trigger.x=1`` or ``train/optimizer=adam``."""
    return re.split(r"[.=/]", override.lstrip("+~"), maxsplit=1)[0]


def _first_line(e: Exception) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
