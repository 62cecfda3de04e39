"""``python -m ctsim.compare RUN_OR_SWEEP_DIR ... [--out DIR]``: see :mod:`ctsim.reports.compare`."""

from ctsim.reports.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
