"""What the package promises of its own shape: no Hydra config objects past ``build``, and every declared
dependency in use."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import tomllib
import torch
from omegaconf import DictConfig, ListConfig

from .conftest import REPO, build


def reachable(root: object) -> list[tuple[str, object]]:
    """Every object reachable from ``root`` through attributes, containers and partials (tensors are
    leaves), with the path that reaches it."""
    seen, found, todo = set(), [], [("plan", root)]
    while todo:
        path, obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None), torch.Tensor)):
            continue
        seen.add(id(obj))
        found.append((path, obj))
        if isinstance(obj, (DictConfig, ListConfig)):
            continue
        if isinstance(obj, dict):
            todo += [(f"{path}[{k!r}]", v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo += [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
        elif isinstance(obj, functools.partial):
            todo += [(f"{path}.args", obj.args), (f"{path}.keywords", obj.keywords)]
        elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in ("ctsim", "torch"):
            todo += [(f"{path}.{k}", v) for k, v in vars(obj).items()]
    return found


def test_nothing_past_build_carries_hydra_config_objects(tmp_path):
    """Plans of pipelines with nested configs (drift detectors and rules, an ensemble's members, a
    downsampler, a schedule) hold plain data only: a DictConfig reachable from a plan would tie the run
    to Hydra's live config."""
    only = "population.only=[ks_i250,mmd_quantile_i250,ensemble,cost]"
    drift = build(["experiment=portraits_drift", only, "population.seeds=[0]", f"dataset.root={tmp_path}"])
    only = "population.only=[loss_bts,rs2,class_balanced]"
    selection = build(
        ["experiment=portraits_selection_reduced", only, "schedule=cosine", f"dataset.root={tmp_path}"]
    )
    plan = (drift, selection)
    assert len(drift.pipelines) == 4 and len(selection.pipelines) == 9
    found = reachable(plan)
    assert len(found) > 100  # the walk did reach into pipelines, policies and models
    leaked = [path for path, obj in found if isinstance(obj, (DictConfig, ListConfig))]
    assert leaked == []


IMPORT_NAMES = {"hydra-core": "hydra", "pyyaml": "yaml"}


def test_every_declared_dependency_is_imported_by_the_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~\[ ]", d)[0].lower() for d in project["dependencies"]]
    source = "\n".join(p.read_text() for p in Path(REPO / "ctsim").rglob("*.py"))
    for name in names:
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", source, re.MULTILINE), (
            f"{name} is declared, unused"
        )
