"""``ctsim datasets``: see :mod:`ctsim.datasets.prepare`."""

from ctsim.datasets.prepare import main

raise SystemExit(main())
