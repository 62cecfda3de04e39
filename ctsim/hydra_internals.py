"""The private parts of Hydra that ctsim relies on, in one place.

Hydra has no public API for two things ctsim's start-up needs: its command-line parser (to read
``-m``, ``--cfg`` and the overrides as Hydra will) and its basic sweeper's expansion of a sweep into
jobs (to check every job before the first one runs). Both live in ``hydra._internal``, which may
change in any release; ``tests/test_hydra_internals.py`` fails loudly when it does. ``hydra-core`` is
pinned to ``>=1.3,<1.4`` in ``pyproject.toml``.
"""

from __future__ import annotations

import argparse

from hydra.core.override_parser.types import Override


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
