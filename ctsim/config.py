"""Config validation: errors that name the key, the value and what is allowed.

Components validate their own arguments in their constructors (Hydra runs them at start-up, before
any data is loaded or model trained) and report every problem at once::

    >>> ConfigError.raise_all([check("every", 0, False, "an integer ≥ 1")])
    Traceback (most recent call last):
    ...
    ctsim.config.ConfigError: invalid config:
      every=0: expected an integer ≥ 1

The entry point prefixes each problem with the config group it came from (``trigger.every``).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One bad config value (or, with ``text``, another problem with ``key``, said in full)."""

    key: str
    value: object
    expected: str
    text: str | None = None

    def __str__(self) -> str:
        if self.text is not None:
            return f"{self.key}: {self.text}"
        expected = self.expected
        if _non_finite(self.value) and expected.startswith("a number"):
            expected = "a finite number" + expected.removeprefix("a number")
        return f"{self.key}={self.value!r}: expected {expected}"


class ConfigError(ValueError):
    """One or more bad config values, all reported together."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__("invalid config:\n" + "\n".join(f"  {p}" for p in self.problems))

    def prefixed(self, prefix: str) -> ConfigError:
        """The same problems, with keys under ``prefix`` (e.g. ``every`` → ``trigger.every``)."""
        return ConfigError(replace(p, key=f"{prefix}.{p.key}") for p in self.problems)

    @staticmethod
    def raise_all(problems: Iterable[Problem | None]) -> None:
        """Raise one ConfigError for every problem that is not None; return if there is none."""
        found = [p for p in problems if p is not None]
        if found:
            raise ConfigError(found)


def check(key: str, value: object, ok: bool, expected: str) -> Problem | None:
    """A :class:`Problem` for ``key`` unless ``ok``."""
    return None if ok else Problem(key, value, expected)


def is_int(value: object) -> bool:
    """True for ints, but not bools (``True`` is an int to Python, never a count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """True for finite ints and floats: ``inf`` and ``nan`` are never a usable setting."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _non_finite(value: object) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def positive_int(key: str, value: object) -> Problem | None:
    return check(key, value, is_int(value) and value >= 1, "an integer ≥ 1")


MAX_SEED = 2**63 - 1  # torch.manual_seed and the tables' seed columns take signed 64-bit integers


def seed_problem(key: str, value: object) -> Problem | None:
    return check(key, value, is_int(value) and 0 <= value <= MAX_SEED, "an integer in [0, 2**63 - 1]")


def positive_number(key: str, value: object) -> Problem | None:
    return check(key, value, is_number(value) and value > 0, "a number > 0")


def non_negative_number(key: str, value: object) -> Problem | None:
    return check(key, value, is_number(value) and value >= 0, "a number ≥ 0")


def one_of(key: str, value: object, allowed: Iterable[object]) -> Problem | None:
    allowed = list(allowed)
    return check(key, value, value in allowed, f"one of {allowed}")


def unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be used (or made) as a folder to write into; None if it can.

    Tried for real in its nearest existing ancestor (a throwaway folder, removed at once): permission
    bits do not tell for root, read-only mounts or /proc.
    """
    # os.path, not Path: Path.exists raises for a path inside a folder we may not look into.
    existing = next(f for f in (path, *path.parents) if os.path.exists(f))
    if not os.path.isdir(existing):
        return f"{existing} is a file"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ctsim-probe-", dir=existing))
    except OSError as e:
        return f"{existing} is not writable ({e.strerror})"
    return None
