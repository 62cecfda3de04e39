"""``python -m ctsim.query "SQL" [RUN_DIR or glob ...]``: see :mod:`ctsim.registry.query`."""

from ctsim.registry.query import main

if __name__ == "__main__":
    raise SystemExit(main())
