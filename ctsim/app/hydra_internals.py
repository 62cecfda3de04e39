"""The private parts of Hydra that ctsim relies on, in one place.

Hydra has no public API for three things ctsim's start-up needs: its command-line parser (to read
``-m``, ``--cfg`` and the overrides as Hydra will), its basic sweeper's expansion of a sweep into jobs
(to check every job before the first one runs), and a way to keep parsed config files between
composes. They live in ``hydra._internal`` and Hydra's objects, which may change in any release;
``tests/test_hydra_internals.py`` fails loudly when they do. ``hydra-core`` is pinned to ``>=1.3,<1.4``
in ``pyproject.toml``.
"""

from __future__ import annotations

import argparse
import copy

from hydra.core.override_parser.types import Override


def locate(path: str) -> object:
    """The object a ``_target_`` names (``hydra._internal.utils._locate``: what
    ``hydra.utils.get_object`` does, without logging the error it then raises)."""
    from hydra._internal.utils import _locate

    return _locate(path)


def args_parser() -> argparse.ArgumentParser:
    """Hydra's own command-line parser (``hydra._internal.utils.get_args_parser``), as ``@hydra.main``
    uses it: ``--help``, ``-m``, ``--cfg``, ``--config-dir``, ... and the overrides."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def sweep_jobs(parsed: list[Override]) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper expands a sweep (``BasicSweeper.split_arguments``):
    the cartesian product of the swept values, in Hydra's order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def reuse_parsed_configs() -> bool:
    """Let Hydra read and parse each config file once per initialisation, not once per compose; whether
    the cache is in place.

    A run composes its config once per variant, twice at start-up (``experiment=portraits_selection``:
    24 composes). Measured under load (2 cores, load average 23): composing it and its 23 variants took
    9.1-11.2 s with the cache and 13.2-15.9 s without. The config repository Hydra made at its
    initialisation gets a subclass whose ``load_config`` keeps what it loaded, keyed by the search path
    and the file; every caller gets its own deep copy, so nothing Hydra does to a result reaches the
    cache. A new initialisation makes a new repository, so a cache never outlives the files it was read
    from. Where Hydra's objects are not as expected, nothing changes (and the test fails).
    """
    from hydra.core.global_hydra import GlobalHydra

    try:
        repo = GlobalHydra.instance().hydra.config_loader.repository  # type: ignore[union-attr]
        base = type(repo)
        load = base.load_config
    except AttributeError:
        return False
    if getattr(base, "reuses_parsed_configs", False):
        return True
    cache: dict[tuple, object] = {}

    def load_config(self, config_path: str):
        key = (tuple((s.provider, s.path) for s in self.get_sources()), config_path)
        if key not in cache:
            cache[key] = load(self, config_path)
        return copy.deepcopy(cache[key])  # shared, Hydra would merge one compose into the next

    repo.__class__ = type(base.__name__, (base,), {"load_config": load_config, "reuses_parsed_configs": True})
    return True
