"""``ctsim ...`` and ``python -m ctsim ...``: the subcommands are declared in :mod:`ctsim.app.commands`."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The ``ctsim`` console script: ``ctsim [SUBCOMMAND] ARGS`` (``run`` when no subcommand is named)."""
    from ctsim.app.commands import COMMANDS, implementation, parser

    if not {"", os.getcwd()} & set(sys.path):  # the console script: import a user's modules
        sys.path.insert(0, os.getcwd())  # (_target_: my_nets.Net) from here, as python -m ctsim does
    argv = list(sys.argv[1:] if argv is None else argv)
    name = argv[0] if argv and argv[0] in COMMANDS else "run"
    rest = argv[1:] if argv and argv[0] == name else argv
    if name == "run":
        from ctsim.app.cli import main as run

        run(rest)
        return 0
    if not (name == "datasets" and rest[:1] == ["prepare"]):  # prepare's help lists what it can prepare
        parser(name).parse_args(rest)  # --help and usage errors, before anything heavy loads
    given = [name, *rest] if name in ("resume", "reproduce") else rest
    code = implementation(name)(given)
    return code if isinstance(code, int) else 0  # bench returns its tables


if __name__ == "__main__":
    raise SystemExit(main())
