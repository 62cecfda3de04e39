"""``ctsim ...`` and ``python -m ctsim ...``: see :mod:`ctsim.commands`."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The ``ctsim`` console script: ``ctsim [SUBCOMMAND] ARGS`` (``run`` when no subcommand is named)."""
    from ctsim.commands import main as dispatch

    return dispatch(argv)


if __name__ == "__main__":
    raise SystemExit(main())
