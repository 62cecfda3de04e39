"""What a run was made from: its config (and hash), code, versions, device and data.

These fields go into the run's ``status.json`` (its row of the ``runs`` table). A resume compares the
config, the code and the data with them and refuses a run whose inputs changed, naming what differs.
The code is ctsim's files and the user's own modules that the config's ``_target_`` names.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
import sysconfig
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from ctsim.engine.base import digest

PACKAGE = Path(__file__).resolve().parent.parent  # ctsim/


def config_hash(config: Mapping) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@functools.cache
def _code_files() -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(p.relative_to(PACKAGE.parent)), hashlib.sha256(p.read_bytes()).hexdigest()[:16])
        for p in sorted(PACKAGE.rglob("*.py"))
    )


def code_files() -> dict[str, str]:
    """SHA-256 (16 hex digits) of every source file of the ctsim package, by path (read once per
    process: the code a process runs does not change under it)."""
    return dict(_code_files())


def user_files(config: Mapping, folder: str | Path | None = None) -> dict[str, str]:
    """SHA-256 (16 hex digits) of the user's own modules that ``config`` names with a ``_target_``
    (``model._target_: my_net.Net``), by path: relative to ``folder`` (the run's working folder; default
    this process's) where they lie in it.

    A module is found as an import would find it on ``sys.path`` (which holds the working folder), but
    not run; it is the user's unless it is ctsim's, the standard library's or an installed package's
    (versions record those). Only the module that defines the target is hashed, not what it imports.
    """
    root = Path(folder or Path.cwd()).resolve()
    found = {}
    for target in sorted(set(_targets(config))):
        path = _module_file(target)
        if path is not None and _is_users(path):
            name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return found


def _targets(node: object) -> Iterator[str]:
    """Every ``_target_`` string in a nested config.

    >>> sorted(_targets({"model": {"_target_": "my_net.Net"}, "x": [{"_target_": "a.B", "k": 1}]}))
    ['a.B', 'my_net.Net']
    """
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                yield value
            else:
                yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


def _module_file(target: str) -> Path | None:
    """The source file of the innermost module in ``target`` (``pkg.nets.Net`` → ``pkg/nets.py``), found
    on ``sys.path`` without importing anything; None where it is not a file (a built-in module)."""
    from importlib.machinery import PathFinder

    names, search, origin = target.split("."), None, None
    for i in range(len(names)):
        spec = PathFinder.find_spec(".".join(names[: i + 1]), search)
        if spec is None:  # an attribute of the module found last (Net), or nothing importable
            break
        if spec.has_location and spec.origin:
            origin = spec.origin
        search = spec.submodule_search_locations
        if search is None:  # a module, not a package: what follows are its attributes
            break
    return Path(origin).resolve() if origin else None


def _is_users(path: Path) -> bool:
    """Whether a module's file is the user's own: not ctsim's, the standard library's or installed."""
    if path.is_relative_to(PACKAGE) or {"site-packages", "dist-packages"} & set(path.parts):
        return False
    return not any(
        path.is_relative_to(Path(sysconfig.get_path(k)).resolve()) for k in ("stdlib", "platstdlib")
    )


def code_hash(files: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(files), sort_keys=True).encode()).hexdigest()[:16]


@functools.cache
def git_state() -> tuple[str | None, bool | None]:
    """The commit of the checkout ctsim runs from, and whether it has uncommitted changes (None, None
    when it is not a git checkout, e.g. an installed wheel)."""
    root = PACKAGE.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit.strip(), None if status is None else bool(status.strip())


def versions() -> dict[str, str]:
    try:
        ctsim = version("ctsim")
    except PackageNotFoundError:
        ctsim = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__, "ctsim": ctsim}


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def data_hash(*tensors: torch.Tensor) -> str:
    """A fingerprint of the replayed data (inputs, labels, times, slices)."""
    return digest(*tensors)


def record(
    config: Mapping,
    overrides: list[str],
    config_name: str,
    seeds: list[int],
    device: torch.device | str,
    command: str,
) -> dict:
    """The run's provenance, for ``status.json``."""
    files = code_files()
    commit, dirty = git_state()
    return {
        "command": command,
        "cwd": str(Path.cwd()),
        "config_name": config_name,
        "overrides": list(overrides),
        "config": dict(config),
        "config_hash": config_hash(config),
        "code_hash": code_hash(files),
        "code_files": files,
        "user_files": user_files(config),  # the user's own modules its _target_s name (my_net.py)
        "git_commit": commit,
        "git_dirty": dirty,
        **versions(),
        "device": str(device),
        "device_name": device_name(device),
        # CPU results depend on it: float32 sums are split across threads, so the rounding differs
        "cpu_threads": torch.get_num_threads(),
        "seeds": seeds,
    }


def differences(saved: Mapping, now: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings."""
    out = []
    for key in sorted(set(saved) | set(now), key=str):
        a, b = saved.get(key, "<absent>"), now.get(key, "<absent>")
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name}: {a!r} then, {b!r} now")
    return out
