"""From a composed Hydra config to ready objects: the only place that calls ``instantiate``.

Everything the config names is built and validated here, before any data is generated or model
trained; every problem found is reported together in one :class:`~ctsim.validation.ConfigError`, the
config-level ones (:mod:`ctsim.app.compose`: unknown keys, variants, run folder) with the rest.

**Population.** A run holds ``population.variants × population.seeds`` pipelines. A variant is a
name and a list of Hydra overrides, applied on top of the run's own config::

    population:
      seeds: [0, 1, 2]
      variants:
        yearly: [trigger=time, trigger.every=1]
        amount_500: [trigger=amount, trigger.every=500]
        never: [trigger=never]

Variants change only the pipeline groups (trigger, selection, model, optimizer, schedule, train):
the dataset, stream, engine and device are shared by the run. With no variants, the run is one
pipeline, named after the run (``name``). How run overrides and variants combine is in
:mod:`ctsim.app.compose`. A problem with a value a variant sets is named after the variant
(``never:train.epochs``); a problem with a run-level value is named once.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from ctsim.app.compose import (
    PIPELINE_GROUPS,
    Variant,
    override_keys,
    pipeline_differences,
    run_problems,
    unknown_key,
    unknown_root_keys,
    variants,
)
from ctsim.app.hydra_internals import locate
from ctsim.datasets.base import Dataset
from ctsim.engine.base import Engine, TrainConfig, names_parameter
from ctsim.engine.signals import EMBEDS, embeds
from ctsim.models.base import ModelSpec, least_batch, output_problem, unsaved_seeded_buffers
from ctsim.selection.base import selection_problems
from ctsim.selection.downsample import RS2, ScoreDownsampler, downsampler_of
from ctsim.simulation import Pipeline
from ctsim.stream import StreamSpec
from ctsim.triggers.base import signal_needs_of, trigger_problems
from ctsim.validation import ConfigError, Problem, check, first_line

# Each policy group's contract (ctsim.triggers.base, ctsim.selection.base): its class is checked
# against it before it is built, so a misnamed method stops the run at start-up, not mid-replay.
CONTRACTS = {"trigger": trigger_problems, "selection": selection_problems}


@dataclass(frozen=True)
class Named:
    """A variant as a built run knows it: its name and overrides (its composed config stays behind)."""

    name: str
    overrides: list[str]


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, built and validated."""

    name: str
    dataset: Dataset
    stream: StreamSpec
    engine: Engine
    pipelines: list[Pipeline]
    variants: list[Named]
    checkpoints: str
    plots: bool
    progress: bool
    settings: dict[str, dict]  # the run's pipeline groups, and each variant's changes to them
    eval_chunk: int = 32
    config: dict = field(default_factory=dict)  # the resolved config and each variant's changes: provenance
    overrides: list[str] = field(default_factory=list)  # the run's own overrides (the command line)
    config_name: str = "config"


def build_run(cfg: DictConfig, overrides: list[str], config_name: str = "config") -> RunPlan:
    """Build every object ``cfg`` names; raise one ConfigError listing every problem.

    ``overrides`` are the run's own overrides (the command line); variants are composed on top of
    them with Hydra's compose API, which needs Hydra to be initialised (it is, inside the app).
    """
    ConfigError.raise_all(unknown_root_keys(cfg, config_name))  # nothing else can be read from it
    problems = [p for p in run_problems(cfg) if p is not None]
    dataset = _instantiate(cfg.dataset, "dataset", problems)
    if dataset is not None:
        found = dataset.path_problems()
        problems += found
        if found:  # its shapes may be unknown (a cache not prepared): no model can be checked against it
            dataset = None
    stream = _instantiate(cfg.stream, "stream", problems)
    engine_problems: list[Problem] = []
    engine = _instantiate(cfg.engine, "engine", engine_problems, device=cfg.device)
    # the engine checks the run's top-level ``device``: name the key the user sets
    problems += [replace(p, key="device") if p.key == "engine.device" else p for p in engine_problems]
    found, problems_of_variants = variants(cfg, overrides, config_name)
    problems += [p for p in problems_of_variants if p is not None]
    seeds = list(cfg.population.seeds) if OmegaConf.is_list(cfg.population.seeds) else []
    pipelines = []
    for variant in found:
        variant_problems: list[Problem] = []
        parts = _parts(variant.config, dataset, variant_problems)  # checked once, whatever the seeds
        spec = parts["model"]
        if isinstance(spec, ModelSpec) and not any(p.key.startswith("model") for p in variant_problems):
            variant_problems += _model_problems(variant.config, spec, engine)
        _attribute(variant, variant_problems, problems)
        if not variant_problems and dataset is not None:
            # fresh objects per seed: a policy may keep state, and pipelines never share it
            pipelines += [
                Pipeline(variant.name, seed, **_parts(variant.config, dataset, [])) for seed in seeds
            ]
    ConfigError.raise_all(problems)
    out = cfg.output
    settings = {
        "run": {g: OmegaConf.to_container(cfg[g], resolve=True) for g in PIPELINE_GROUPS},
        "variants": pipeline_differences(found, cfg),
    }
    return RunPlan(
        str(cfg.name),
        dataset,
        stream,
        engine,
        pipelines,
        [Named(v.name, [str(o) for o in v.overrides]) for v in found],
        str(out.checkpoints),
        bool(out.plots),
        bool(cfg.progress),
        settings,
        int(out.eval_chunk),
        {"run": _resolved(cfg), "pipelines": settings["variants"]},
        list(overrides),
        config_name,
    )


def _resolved(cfg: DictConfig) -> dict:
    """The config as plain data, resolved, without Hydra's own node (it names the run folder)."""
    return {
        str(k): OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
        for k in cfg
        if k != "hydra"
    }


def _instantiate(node: Any, key: str, problems: list[Problem], **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, after checking the node's keys against its target's arguments.

    A constructor's ConfigError is re-keyed under ``key``, or under the nested node it came from
    (``trigger.rule.alpha``), which Hydra names in its message as ``full_key``.
    """
    unknown = _unknown_arguments(node, key, kwargs)
    if unknown:
        problems.extend(unknown)
        return None
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ConfigError):
            nested = re.search(r"^full_key: (\S+)$", str(e), re.MULTILINE)
            problems.extend(cause.prefixed(nested.group(1) if nested else key).problems)
        else:
            target = OmegaConf.select(node, "_target_") if isinstance(node, DictConfig) else None
            detail = first_line(cause or e)
            problems.append(Problem(key, target, f"arguments that {target} accepts ({detail})"))
        return None


def _unknown_arguments(node: Any, key: str, given: dict[str, Any]) -> list[Problem]:
    """Keys of a ``_target_`` node that its target does not take (``trigger.evry``), nearest named.

    Nested ``_target_`` nodes (a drift trigger's ``detector``, an ensemble's members) are checked too.
    """
    if isinstance(node, ListConfig):
        return [p for i, child in enumerate(node) for p in _unknown_arguments(child, f"{key}.{i}", {})]
    if not isinstance(node, DictConfig):
        return []
    nested = [
        p
        for k, child in node.items_ex(resolve=False)
        if not str(k).startswith("_")
        for p in _unknown_arguments(child, f"{key}.{k}", {})
    ]
    if "_target_" not in node:
        return nested
    try:
        target = locate(str(node._target_))
    except Exception as e:  # Hydra's own message names the module or attribute it could not find
        return [
            Problem(
                f"{key}._target_",
                str(node._target_),
                f"a class or function ctsim can import ({' '.join(str(e).split())})",
            )
        ]
    try:
        params = inspect.signature(target).parameters
    except (ValueError, TypeError):
        return nested  # no signature to check against: instantiate reports what it cannot take
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return nested
    known = [f"{key}.{name}" for name in params if name not in given]
    return nested + [
        unknown_key(f"{key}.{k}", known)
        for k in node
        if not str(k).startswith("_") and k not in params and k not in given
    ]


def _parts(cfg: DictConfig, dataset: Dataset | None, problems: list[Problem]) -> dict[str, Any]:
    """A pipeline's trigger, selection, model, optimizer, train and schedule, built and checked."""
    parts: dict[str, Any] = {}
    for group in PIPELINE_GROUPS:
        broken = _contract_problems(cfg[group], group)
        problems += broken
        parts[group] = None if broken else _instantiate(cfg[group], group, problems)
        if group in CONTRACTS and parts[group] is not None:
            problems += _built_policy_problems(parts[group], group)
    if parts["model"] is not None and dataset is not None:
        parts["model"] = ModelSpec(parts["model"], tuple(dataset.input_shape), dataset.num_classes)
        try:
            built = parts["model"].build()  # validates the model's own arguments against the dataset's shapes
        except ConfigError as e:
            problems += [_fitting_model(p, dataset) for p in e.prefixed("model").problems]
        except Exception as e:  # a model that does not check its own arguments (a user's model)
            target = OmegaConf.select(cfg.model, "_target_")
            detail = f"{type(e).__name__}: {first_line(e)}"
            problems.append(Problem("model", target, f"arguments that {target} accepts ({detail})"))
        else:
            problems += _input_kind_problems(built, dataset, OmegaConf.select(cfg.model, "_target_"))
            if parts["train"] is not None:
                problems += _freeze_problems(parts["train"], built)
            problems += _downsample_problems(parts["selection"], parts["train"], built)
            problems += _signal_problems(parts["trigger"], built, OmegaConf.select(cfg.model, "_target_"))
    return parts


def _contract_problems(node: Any, group: str) -> list[Problem]:
    """A policy group's ``_target_`` class against the group's contract, before anything is built."""
    if group not in CONTRACTS or not isinstance(node, DictConfig):
        return []
    if "_target_" not in node:  # selection=_base, say: a block the options share, not an option
        expected = f"the class of the {group} policy: this node names none (pick an option of --help)"
        return [Problem(f"{group}._target_", None, expected)]
    try:
        target = locate(str(node._target_))
    except Exception:
        return []  # a target that cannot be imported: _unknown_arguments names it
    return CONTRACTS[group](target, f"{group}._target_") if inspect.isclass(target) else []


def _built_policy_problems(policy: Any, group: str) -> list[Problem]:
    """A built policy against its group's contract: what a factory ``_target_`` returned, and (for a
    selection policy) its downsampler."""
    found = CONTRACTS[group](type(policy), f"{group}._target_")
    down = downsampler_of(policy) if group == "selection" else None
    if down is not None and not isinstance(down, (ScoreDownsampler, RS2)):
        found.append(
            Problem(
                "selection.downsample",
                type(down).__name__,
                "null, a ScoreDownsampler or RS2 (selection/downsample=loss, rs2, ...)",
            )
        )
    return found


def _model_problems(cfg: DictConfig, spec: ModelSpec, engine: Engine | None) -> list[Problem]:
    """What only a built model shows, checked once per variant (not per seed): a forward that does not
    give logits (batch, classes) on the dataset's inputs, buffers its seed decides that its state dict
    does not hold, and layers the engine's route cannot run."""
    problems = [] if engine is None else getattr(engine, "route_problems", lambda spec: [])(spec)
    wrong = output_problem(spec)
    if wrong is not None:
        expected = f"a model whose forward gives logits (batch, classes): it {wrong}"
        problems.append(Problem("model", OmegaConf.select(cfg.model, "_target_"), expected))
    if least_batch(spec) > 1 and OmegaConf.select(cfg, "train.batch_size") == 1:
        expected = (
            f"at least 2 for model {OmegaConf.select(cfg.model, '_target_')}: its training forward cannot "
            "take a batch of one sample (batch statistics over (batch, features), e.g. BatchNorm1d)"
        )
        problems.append(Problem("train.batch_size", 1, expected))
    unsaved = unsaved_seeded_buffers(spec)
    if unsaved:
        expected = (
            f"a model whose state dict holds what its seed decides; the buffers {', '.join(unsaved)} "
            "differ from seed to seed but are not saved (persistent=False), so evaluation would "
            "rebuild them with other values: register them with persistent=True"
        )
        problems.append(Problem("model", OmegaConf.select(cfg.model, "_target_"), expected))
    return problems


def _fitting_model(problem: Problem, dataset: Dataset) -> Problem:
    """A model that does not take the dataset's inputs: say which model option does."""
    fits = getattr(dataset, "model", None)
    if problem.key != "model.input_shape" or not fits or problem.text is not None:
        return problem
    return replace(problem, expected=f"{problem.expected}; dataset {dataset.name} fits model={fits}")


# What a dataset's rows hold (its class attribute ``input_kind``; "values" if it names none) and what a
# model takes (the model class's ``input_kind``; a model that names none is not checked): token ids are
# not values.
INPUT_KINDS = {"values": "numbers to compute on (features, pixels)", "tokens": "rows of token ids"}


def _input_kind_problems(model: torch.nn.Module, dataset: Dataset, target: str) -> list[Problem]:
    """A model that takes token ids on numbers, or numbers on token ids: shapes alone would let it run."""
    takes, gives = getattr(model, "input_kind", None), getattr(dataset, "input_kind", "values")
    if takes is None or takes == gives:
        return []
    fits = getattr(dataset, "model", None)
    expected = (
        f"a model that takes {INPUT_KINDS.get(gives, gives)}, as dataset {dataset.name} gives "
        f"({type(model).__name__} takes {INPUT_KINDS.get(takes, takes)})"
    )
    fitting = f"; dataset {dataset.name} fits model={fits}" if fits else ""
    return [Problem("model", target, expected + fitting)]


def _downsample_problems(selection: Any, train: TrainConfig | None, model: torch.nn.Module) -> list[Problem]:
    """``grad_norm`` needs a model with ``embed`` and a linear ``head`` (its closed form is the last
    layer's gradient); the other scores read the logits alone. Batch-then-sample must keep at least one
    sample of a full batch."""
    down = downsampler_of(selection) if selection is not None else None
    if not isinstance(down, ScoreDownsampler):
        return []
    head = getattr(model, "head", None)
    found = [
        check(
            "selection.downsample.score",
            down.score,
            down.score != "grad_norm"
            or (callable(getattr(model, "embed", None)) and isinstance(head, torch.nn.Linear)),
            f"a model with embed(x) and a torch.nn.Linear head for grad_norm ({type(model).__name__} has "
            "not; loss, least_confidence, entropy and margin need only its logits)",
        )
    ]
    if down.form == "bts" and train is not None:
        keeps = down.fraction * train.batch_size
        found.append(
            check(
                "selection.downsample.fraction",
                down.fraction,
                keeps >= 1,
                f"a fraction that keeps at least one sample of a batch of train.batch_size="
                f"{train.batch_size} with form=bts (it keeps {keeps:g})",
            )
        )
    return [p for p in found if p is not None]


def _signal_problems(trigger: Any, model: torch.nn.Module, target: str) -> list[Problem]:
    """The trigger's settings that ask for embeddings (as it declares them, ``signal_needs``), where
    the model has no ``embed`` and ``head`` to give them: refused now rather than at the first request,
    mid-run. Logits, predictions and losses every model gives. (A downsampler's scores are checked by
    :func:`_downsample_problems`.)"""
    if trigger is None or embeds(model):
        return []
    text = f"asks for the active model's embeddings, which model {target} cannot give: expected {EMBEDS}"
    return [
        Problem(f"trigger.{key}", None, "", text=text)
        for key, needs in signal_needs_of(trigger).items()
        if "embeddings" in needs
    ]


def _attribute(variant: Variant, found: list[Problem], problems: list[Problem]) -> None:
    """Add ``found`` to ``problems``: named after the variant where it sets the key, else once."""
    sets = override_keys(variant.overrides)
    for p in found:
        if variant.declared and any(
            p.key == k or p.key.startswith(k + ".") or k.startswith(p.key + ".") for k in sets
        ):
            p = Problem(f"{variant.name}:{p.key}", p.value, p.expected, p.text)
        if p not in problems:
            problems.append(p)


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
