"""The command line: ``python -m ctsim [experiment=NAME] [group=option ...] [key=value ...]``."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ctsim.build import build_run
from ctsim.config import ConfigError
from ctsim.run import execute

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"  # the repository's conf/ (editable install)
_claimed: dict[str, str] = {}


def unique_dir(path: str) -> str:
    """Claim a fresh directory for a run: ``path``, else ``path_2``, ``path_3``, …

    ``mkdir`` is atomic, so two runs started in the same second never share (or overwrite) a
    directory. The answer is remembered, so Hydra may resolve the setting more than once.
    """
    if path not in _claimed:
        candidate, n = Path(path), 1
        candidate.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                candidate.mkdir()
                break
            except FileExistsError:
                n += 1
                candidate = Path(f"{path}_{n}")
        _claimed[path] = str(candidate)
    return _claimed[path]


OmegaConf.register_new_resolver("unique_dir", unique_dir, replace=True)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    overrides = list(HydraConfig.get().overrides.task)
    try:
        plan = build_run(cfg, overrides)
    except ConfigError as e:
        print(f"ctsim: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    command = " ".join(["python -m ctsim", *overrides])
    execute(plan, HydraConfig.get().runtime.output_dir, command=command)
