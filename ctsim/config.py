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

from collections.abc import Iterable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Problem:
    """One bad config value."""

    key: str
    value: object
    expected: str

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: expected {self.expected}"


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
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(key: str, value: object) -> Problem | None:
    return check(key, value, is_int(value) and value >= 1, "an integer ≥ 1")


def positive_number(key: str, value: object) -> Problem | None:
    return check(key, value, is_number(value) and value > 0, "a number > 0")


def non_negative_number(key: str, value: object) -> Problem | None:
    return check(key, value, is_number(value) and value >= 0, "a number ≥ 0")


def one_of(key: str, value: object, allowed: Iterable[object]) -> Problem | None:
    allowed = list(allowed)
    return check(key, value, value in allowed, f"one of {allowed}")
