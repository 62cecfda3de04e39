"""ctsim: a continual-training simulator and benchmark suite.

From Python (:mod:`ctsim.app.api`)::

    import ctsim
    result = ctsim.run(["dataset=sea", "trigger=drift"])   # the command line's overrides
    result.cost                                            # polars DataFrames: evals, generations, cost, ...
    again = ctsim.load(result.run_dir)
    model = again.model()                                  # its last generation's torch model (checkpoint)

``import ctsim`` is cheap: torch, polars and Hydra load when a function is first called.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Result", "load", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ctsim.app import api

        return getattr(api, name)
    raise AttributeError(f"module 'ctsim' has no attribute {name!r}")
