"""The registry: every generation of a run recorded as it is trained, in parquet tables with SQL.

* :mod:`~ctsim.registry.layout`: what a run folder holds, and the columns of its tables;
* :mod:`~ctsim.registry.tables`: the tables, built from a simulation's result;
* :mod:`~ctsim.registry.store`: the run folder, written as the run goes (journal, checkpoints, status);
* :mod:`~ctsim.registry.provenance`: what a run was made from (config, code, versions, device, data);
* :mod:`~ctsim.registry.read`: reading runs back, and ``ctsim query``.

Names are imported on first use, so reading runs back does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "load": "read",
    "load_many": "read",
    "query": "read",
    "read_status": "layout",
    "STATUS": "layout",
    "TABLES": "layout",
    "RunStore": "store",
    "write_new": "store",
    "write_status": "store",
    "write_tables": "store",
    "build_tables": "tables",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'ctsim.registry' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ctsim.registry.{_WHERE[name]}"), name)
