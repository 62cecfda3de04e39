"""``python -m ctsim.oracle RUN_DIR [--candidates NAME] [--out DIR]``: see :mod:`ctsim.reports.oracle`."""

import sys

from ctsim.reports.oracle import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
