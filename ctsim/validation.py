"""Config validation: errors that name the key, the value and what is allowed.

Components validate their own arguments in their constructors (Hydra runs them at start-up, before
any data is loaded or model trained) and report every problem at once::

    >>> ConfigError.raise_all([check("every", 0, False, "an integer ≥ 1")])
    Traceback (most recent call last):
    ...
    ctsim.validation.ConfigError: invalid config:
      every=0: expected an integer ≥ 1

The entry point prefixes each problem with the config group it came from (``trigger.every``).
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import re
import shlex
import tempfile
from collections.abc import Iterable, Sequence
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
        return f"{self.key}={_as_typed(self.value)}: expected {expected}"


def _as_typed(value: object) -> str:
    """A value as a user types it on the command line or in YAML: ``null``, ``true``, ``false`` for
    Python's None and bools, else its ``repr`` (strings quoted, so a space or an empty one shows).

    >>> _as_typed(None), _as_typed(True), _as_typed("al"), _as_typed(0.5)
    ('null', 'true', "'al'", '0.5')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


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


@dataclass(frozen=True)
class Hook:
    """One method of a policy contract, read from a ``typing.Protocol``: its name, the arguments ctsim
    passes, whether it is a static method, and what ctsim calls it for (the first docstring line)."""

    name: str
    args: tuple[str, ...]
    static: bool
    does: str

    def __str__(self) -> str:
        return f"{self.name}({', '.join(self.args)})"


def hooks(protocol: type) -> list[Hook]:
    """The methods ``protocol`` declares, in order (its public functions and static methods)."""
    found = []
    for name, raw in vars(protocol).items():
        static = isinstance(raw, staticmethod)
        func = raw.__func__ if static else raw
        if name.startswith("_") or not inspect.isfunction(func):
            continue
        params = list(inspect.signature(func).parameters)[0 if static else 1 :]
        does = (inspect.getdoc(func) or "").split("\n")[0].rstrip(".")
        found.append(Hook(name, tuple(params), static, does))
    return found


def contract_problems(
    cls: type,
    key: str,
    role: str,
    required: Sequence[type],
    optional: Sequence[type] = (),
    bases: tuple[type, ...] = (),
) -> list[Problem]:
    """What keeps the class ``cls`` from serving as a ``role`` (a trigger, a selection policy).

    Every method of the ``required`` protocols must be there and take the arguments ctsim passes; a
    method of the ``optional`` ones must take them where it is there. A method of the class named almost
    like a declared one that the class does not give itself (``observ`` for ``observe``, ``want`` for
    ``wants``, ``chose`` for a ``choose`` inherited from one of ``bases``) is taken for a misspelling:
    ctsim would never call it. An abstract method (a protocol's stub) counts as missing. Each problem
    is one line under ``key`` (e.g. ``trigger._target_``) naming the class, the method and the name
    expected. Checked on the class, so nothing is built or loaded.
    """
    name = f"{cls.__module__}.{cls.__qualname__}"
    declared = [(h, True) for p in required for h in hooks(p)]
    declared += [(h, False) for p in optional for h in hooks(p)]
    expected = {h.name for h, _ in declared}

    def given(n: str) -> bool:  # by the class itself, not only by a base it extends
        return any(n in vars(k) for k in cls.__mro__ if k not in bases and k is not object)

    own = [n for n in dir(cls) if n[0] != "_" and n not in expected and given(n)]
    own = [n for n in own if callable(getattr(cls, n, None))]
    found = []
    for hook, needed in declared:
        attr = inspect.getattr_static(cls, hook.name, None)
        missing = attr is None or getattr(attr, "__isabstractmethod__", False)
        near = [] if given(hook.name) and not missing else difflib.get_close_matches(hook.name, own, 1, 0.75)
        if near:
            text = (
                f"{name} has no method {hook} but has {near[0]}: rename {near[0]} to {hook.name} "
                f"(ctsim calls {hook.name}: {hook.does})"
            )
            found.append(Problem(key, name, "", text=text))
        elif missing and needed:
            text = f"{name} has no method {hook}, which every {role} needs ({hook.does})"
            found.append(Problem(key, name, "", text=text))
        elif not missing:
            why = _uncallable(hook, attr)
            if why:
                found.append(Problem(key, name, "", text=f"{name}.{hook.name} {why} (ctsim calls {hook})"))
    return found


def _uncallable(hook: Hook, attr: object) -> str | None:
    """Why ctsim cannot call ``attr`` (a class's attribute) as ``hook`` declares it; None if it can."""
    if hook.static and not isinstance(attr, staticmethod):
        return "must be a @staticmethod"
    func = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
    if not callable(func):
        return f"is a {type(attr).__name__}, not a method"
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None  # a callable without a signature to check (a builtin): taken as it is
    placeholders = hook.args if hook.static else ("self", *hook.args)
    try:
        signature.bind(*placeholders)
    except TypeError:
        return f"takes {signature}: it must take {', '.join(placeholders)}"
    return None


def first_line(e: BaseException) -> str:
    """The first non-blank line of an exception's message (its type's name when it has none): what a
    one-line error shows of a cause.

    >>> first_line(ValueError("bad value\\nmore detail"))
    'bad value'
    >>> first_line(KeyError())
    'KeyError'
    """
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


UNQUOTED = re.compile(r"[A-Za-z_/.%][\w./%-]*", re.ASCII)  # read by Hydra unquoted, as this text
KEYWORDS = ("true", "false", "null", "nan", "inf")  # Hydra reads these unquoted as values, in any case


def override_text(key: str, value: str | list[str]) -> str:
    """``key=value`` as a shell word that Hydra reads back as these strings: a value it would read
    otherwise (a space, a letter outside ASCII, ``true``) is quoted, ``"key='Datum der Messung'"``.

    >>> print(override_text("dataset.time_column", "ts"), override_text("dataset.classes", ["größe", "b"]))
    dataset.time_column=ts "dataset.classes=['größe','b']"
    """
    values = value if isinstance(value, list) else [value]
    plain = all(UNQUOTED.fullmatch(v) and v.lower() not in KEYWORDS for v in values)
    if not plain:  # Hydra's escapes: a quote, and backslashes before a quote or at the end
        values = ["'" + re.sub(r"(\\+)('|$)", r"\1\1\2", v).replace("'", "\\'") + "'" for v in values]
    override = f"{key}=[{','.join(values)}]" if isinstance(value, list) else f"{key}={values[0]}"
    if plain:
        return override
    return f'"{override}"' if not any(c in override for c in '"$`\\!') else shlex.quote(override)
