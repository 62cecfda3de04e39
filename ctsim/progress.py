"""Progress bars on stderr, shown only when stderr is a terminal.

tqdm sizes a bar from the terminal it writes to, less one column and one row. A pseudo-terminal that
reports a size of 0×0 (``script -qc CMD /dev/null``, many CI runners and IDE consoles) leaves it -1
columns and -1 rows: it then takes the bar for scrolled off the screen and prints nothing (with 0
columns alone, it cuts the bar short). :func:`bar` gives a dimension the terminal reports as 0 the
value :func:`shutil.get_terminal_size` falls back to ($COLUMNS / $LINES, else 80×24).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
"""tqdm's, less its rate (items/s): the postfix gives a rate in samples/s."""


def bar(iterable: Iterable | None = None, *, enabled: bool, **tqdm_kwargs: Any) -> tqdm:
    """A tqdm bar on stderr if ``enabled`` and stderr is a terminal, else a silent one.

    ``leave=False`` (a finished bar is erased) and ``bar_format=FORMAT`` unless given.
    """
    tqdm_kwargs = {"leave": False, "bar_format": FORMAT, **tqdm_kwargs}
    size = _terminal_size(sys.stderr) if enabled else None
    if size is None:
        return tqdm(iterable, disable=True, **tqdm_kwargs)
    columns, lines = size
    if columns and lines:
        return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **tqdm_kwargs)
    fallback = shutil.get_terminal_size()
    columns, lines = columns or fallback.columns, lines or fallback.lines
    return tqdm(iterable, file=sys.stderr, ncols=columns - 1, nrows=lines - 1, **tqdm_kwargs)


def _terminal_size(stream: Any) -> tuple[int, int] | None:
    """(columns, lines) of the terminal ``stream`` writes to, 0 where it reports 0; None if no terminal."""
    try:
        if not stream.isatty():
            return None
        size = os.get_terminal_size(stream.fileno())
        return size.columns, size.lines
    except (AttributeError, OSError, ValueError):  # no stream, no file descriptor, closed
        return None


def rate(samples: float, seconds: float) -> str:
    """Throughput for a bar's postfix.

    >>> rate(12_345, 2.0), rate(0, 0.0)
    ('6.17k samples/s', '? samples/s')
    """
    return f"{tqdm.format_sizeof(samples / seconds)} samples/s" if seconds > 0 else "? samples/s"


def replay_status(pipelines: int, generations: int, samples: int, seconds: float, training: int = 0) -> str:
    """The replay bar's postfix: the jobs being trained (when ``training``), training throughput so far,
    generations trained so far and the population; most telling first, as a narrow terminal cuts the end.

    >>> replay_status(4, 1, 3000, 1.5, training=2)
    'training 2 jobs, 2.00k samples/s, 1 generation, 4 pipelines'
    """
    parts = [rate(samples, seconds), _count(generations, "generation"), _count(pipelines, "pipeline")]
    return ", ".join([f"training {_count(training, 'job')}", *parts] if training else parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
