"""``python -m ctsim.query "SQL" [RUN_DIR or glob ...]``: see :mod:`ctsim.registry.read`."""

from ctsim.registry.read import main

if __name__ == "__main__":
    raise SystemExit(main())
