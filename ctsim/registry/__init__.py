"""The registry: every generation of a run recorded as it is trained, in parquet tables with SQL.

* :mod:`~ctsim.registry.tables`: the tables and their schemas;
* :mod:`~ctsim.registry.store`: the run folder, written as the run goes (journal, checkpoints, status);
* :mod:`~ctsim.registry.provenance`: what a run was made from (config, code, versions, device, data);
* :mod:`~ctsim.registry.query`: reading runs back, and ``python -m ctsim.query``.
"""

from ctsim.registry.query import load, load_many, query
from ctsim.registry.store import STATUS, RunStore, read_status, write_new, write_status, write_tables
from ctsim.registry.tables import TABLES, build_tables

__all__ = [
    "STATUS",
    "TABLES",
    "RunStore",
    "build_tables",
    "load",
    "load_many",
    "query",
    "read_status",
    "write_new",
    "write_status",
    "write_tables",
]
