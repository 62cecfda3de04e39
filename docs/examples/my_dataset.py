"""A dataset of your own: samples from a NumPy ``.npz`` file with arrays ``x``, ``y`` and ``t``.

Run it from this folder (``_target_: my_dataset.NpzStream`` in ``conf/dataset/my_dataset.yaml``)::

    python -m ctsim --config-dir conf dataset=my_dataset dataset.path=my_data.npz model=mlp
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ctsim.datasets.base import Samples
from ctsim.validation import ConfigError, Problem, check, is_number

ARRAYS = "arrays x (features, one row per sample), y (class index per row) and t (time per row)"


class NpzStream:
    """Rows of ``x`` with labels ``y`` arriving at times ``t``; one slice per ``slice_width`` of time.

    Slice ``s`` holds the rows with ``floor((t - min t) / slice_width) == s``, labelled by the time it
    starts; empty slices are left out. Classes are ``0 … max y``. ctsim splits every slice into its
    train pool and held-out test set (``stream.test_fraction``).

    A dataset tells its ``name``, ``input_shape`` and ``num_classes`` before :meth:`load` (the models
    are built and checked against them at start-up), and says in :meth:`path_problems` what keeps its
    files from being read, so a bad path is a one-line error before any work.

    Args:
        path: the ``.npz`` file.
        slice_width: the length of one slice, in the unit of ``t``.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "data.npz"
    >>> rng = np.random.default_rng(0)
    >>> np.savez(path, x=rng.normal(size=(60, 3)), y=rng.integers(0, 2, 60), t=np.linspace(2000, 2003, 60))
    >>> data = NpzStream(path)
    >>> data.input_shape, data.num_classes, data.load().slice_labels
    ((3,), 2, ['2000', '2001', '2002', '2003'])
    >>> NpzStream(path.with_name("missing.npz")).path_problems()[0].key
    'dataset.path'
    """

    name = "my_dataset"

    def __init__(self, path: str, slice_width: float = 1.0):
        ConfigError.raise_all(
            [
                check("path", path, isinstance(path, (str, Path)) and str(path), "the path of an .npz file"),
                check("slice_width", slice_width, is_number(slice_width) and slice_width > 0, "a number > 0"),
            ]
        )
        self.path, self.slice_width = Path(path), float(slice_width)

    @cached_property
    def _arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.path) as found:
            return {k: found[k] for k in ("x", "y", "t")}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self._arrays["x"].shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self._arrays["y"].max()) + 1

    def path_problems(self) -> list[Problem]:
        if not self.path.is_file():
            return [Problem("dataset.path", str(self.path), f"an .npz file with {ARRAYS}")]
        try:
            x, y, t = self._arrays.values()
        except (OSError, ValueError, KeyError) as err:  # not an npz, or an array missing
            return [Problem("dataset.path", str(self.path), f"an .npz file with {ARRAYS} ({err})")]
        if not (len(x) == len(y) == len(t) > 0 and y.ndim == 1 and np.issubdtype(y.dtype, np.integer)):
            return [Problem("dataset.path", str(self.path), f"{ARRAYS}, of one length, y integers")]
        return []

    def load(self) -> Samples:
        x, y, t = self._arrays.values()
        step = np.floor((t - t.min()) / self.slice_width).astype(np.int64)
        used, slice_index = np.unique(step, return_inverse=True)  # empty slices left out
        starts = t.min() + used * self.slice_width
        return Samples(
            x=torch.as_tensor(x, dtype=torch.float32),
            y=torch.as_tensor(y, dtype=torch.long),
            time=torch.as_tensor(t, dtype=torch.float64),
            slice=torch.as_tensor(slice_index, dtype=torch.long),
            slice_labels=[f"{s:g}" for s in starts],
            num_classes=self.num_classes,
            change_points=[],  # none known; a dataset with designed drift lists its ChangePoints here
        )
