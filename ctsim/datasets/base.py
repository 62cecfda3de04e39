"""What a dataset hands to ctsim: every sample as tensors, plus the drift it knows about."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch

from ctsim.validation import Problem, check, is_number, seed_problem, unwritable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChangePoint:
    """Ground truth of one designed change: where it is, whether abrupt or gradual, what changed.

    ``slice`` is where it starts; a gradual change ends at ``end_slice``.
    """

    slice: int
    kind: Literal["abrupt", "gradual"]
    what: str
    end_slice: int | None = None


@dataclass(frozen=True)
class Samples:
    """All samples of a dataset, in any order. A sample's key is its row.

    ``time`` is a float timestamp (e.g. fractional years) that orders arrival; ``slice`` is the index
    of the contiguous time period the sample belongs to, labelled by ``slice_labels``. ``is_test`` is
    the dataset's own train/test split (Wild-Time's, for Yearbook), if it has one: the stream then
    uses it instead of drawing one. ``fit``, if given, makes the inputs from the training rows' mask
    once the stream has split (a table's normalisation, fitted on training rows only); ``x`` is then a
    placeholder of the right shape.
    """

    x: torch.Tensor
    y: torch.Tensor
    time: torch.Tensor
    slice: torch.Tensor
    slice_labels: list[str]
    num_classes: int
    change_points: list[ChangePoint]
    is_test: torch.Tensor | None = None
    fit: Callable[[torch.Tensor], torch.Tensor] | None = None


class Dataset(Protocol):
    """A time-ordered dataset: its shapes are known before :meth:`load` does any work."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int

    def load(self) -> Samples: ...

    def path_problems(self) -> list[Problem]:
        """What keeps the data root from being used, found without loading anything; empty if it can be.

        Cheap (a few ``stat`` calls), so a run can report it at start-up with the config's other problems
        instead of failing after the first slow step.
        """
        ...


SAMPLE_KEYS = ("x", "y", "time", "slice")

CacheParams = dict[str, str | int | float]


def cached_tensors(
    path: Path,
    generate: Callable[[], dict[str, torch.Tensor]],
    cache: bool,
    params: CacheParams,
    keys: tuple[str, ...] = SAMPLE_KEYS,
) -> dict[str, torch.Tensor]:
    """``generate()``'s tensors (one row per sample under each of ``keys``), cached at ``path``.

    ``params`` are everything that changes what ``generate`` returns (dataset name, generator version,
    size, seed). The cache file records them and the sample count, and is read only if they match and
    every tensor of ``keys`` is there with one row per sample. Any other file (made with other
    parameters, by an older ctsim, truncated, corrupt) is regenerated and replaced, with one warning that
    says why. With ``cache`` off nothing is read or written.
    """
    if cache and os.path.exists(path):
        data, why = _read_cache(path, params, keys)
        if data is not None:
            return data
        log.warning("%s: generating it again", why)
    data = generate()
    if cache:
        meta = {**params, "samples": len(data[keys[0]])}
        _write_atomically(path, {**data, "meta": meta})
    return data


def _read_cache(
    path: Path, params: CacheParams, keys: tuple[str, ...]
) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The cached tensors of ``keys`` if the file at ``path`` matches ``params``; else None and why not."""
    try:
        data = torch.load(path, weights_only=True)  # plain tensors and values only: never runs code
    except Exception as err:  # torch.load raises many types on a damaged file; each means "regenerate"
        why = err.strerror if isinstance(err, OSError) and err.strerror else "it is truncated or damaged"
        return None, f"cannot read the cache {path} ({why})"
    meta = data.get("meta") if isinstance(data, dict) else None
    if not isinstance(meta, dict) or "samples" not in meta:
        return None, f"the cache {path} does not record what it was made with (an older ctsim wrote it)"
    other = [f"{k}={meta.get(k)!r}, not {v!r}" for k, v in params.items() if meta.get(k) != v]
    if other:
        return None, f"the cache {path} was made with {'; '.join(other)}"
    missing = [k for k in keys if not isinstance(data.get(k), torch.Tensor) or data[k].dim() == 0]
    if missing:
        return None, f"the cache {path} has no per-sample tensor {', '.join(missing)}"
    wrong = [f"{k} has {len(data[k])}" for k in keys if len(data[k]) != meta["samples"]]
    if wrong:
        return None, f"the cache {path} records {meta['samples']} samples, but {', '.join(wrong)}"
    return {k: data[k] for k in keys}, ""


def _write_atomically(path: Path, data: dict[str, object]) -> None:
    """Save ``data`` to ``path`` through a temporary file and a rename.

    A concurrent reader (another process of a multirun) never sees half a file. A cache that cannot be
    written only costs the next run the generation again, so it is a warning, not an error.
    """
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as err:  # torch.save reports some write errors as RuntimeError
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        log.warning("cannot write the cache %s (%s): the data is used without caching it", path, err)
        return
    log.info("cached %s", path)


def cache_folder_problems(root: Path, path: Path, cache: bool) -> list[Problem]:
    """Why the cache file ``path`` under the data root ``root`` cannot be read or created; [] if it can.

    An existing readable cache file is enough (a read-only root is fine then). Otherwise the nearest
    existing ancestor of its folder must be a folder that ctsim can write into.
    """
    if not cache or (os.path.isfile(path) and os.access(path, os.R_OK)):
        return []
    why = unwritable(path.parent)
    if why is None:
        return []
    return [Problem("dataset.root", str(root), f"a folder ctsim can write the generated cache into ({why})")]


def size_problem(size: object) -> Problem | None:
    """``size`` is the share of a dataset to use: a number in (0, 1] (1 is the whole dataset).

    >>> print(size_problem(1.5))
    size=1.5: expected a number in (0, 1]: the share of the dataset to use (1 is all of it)
    """
    ok = is_number(size) and 0 < size <= 1
    return check("size", size, ok, "a number in (0, 1]: the share of the dataset to use (1 is all of it)")


def generator_problems(size: object, seed: object, cache: object) -> list[Problem | None]:
    """Problems with the arguments of a dataset generated from a seed at a size (portraits, sensors)."""
    return [
        size_problem(size),
        seed_problem("seed", seed),
        check("cache", cache, isinstance(cache, bool), "true or false"),
    ]


class Generated(Protocol):
    """A dataset generated from a seed at a size: what :func:`load_generated` reads of it."""

    name: str
    num_classes: int
    size: float
    seed: int
    cache: bool
    change_points: Sequence[ChangePoint]

    @property
    def cache_path(self) -> Path: ...

    @property
    def slice_labels(self) -> list[str]: ...


def load_generated(
    dataset: Generated, version: int, generate: Callable[[], dict[str, torch.Tensor]]
) -> Samples:
    """Every sample of ``dataset``: ``generate()``'s tensors, or its cache's if that matches.

    The cache records the dataset's name, the generator's ``version``, ``size`` and ``seed``.
    """
    params = {"dataset": dataset.name, "version": version, "size": dataset.size, "seed": dataset.seed}
    data = cached_tensors(dataset.cache_path, generate, dataset.cache, params)
    return Samples(
        x=data["x"],
        y=data["y"],
        time=data["time"],
        slice=data["slice"],
        slice_labels=dataset.slice_labels,
        num_classes=dataset.num_classes,
        change_points=list(dataset.change_points),
    )
