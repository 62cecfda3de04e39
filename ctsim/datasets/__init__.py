"""Datasets: each one file, each configured by ``conf/dataset/<name>.yaml``.

Generated (no files needed): portraits, sensors, sea, hyperplane, rbf. From your files: table (read
directly), and yearbook, vision_stream, huffpost and arxiv (prepared once with ``ctsim datasets
prepare``; see :mod:`ctsim.datasets.prepare`).
"""

from ctsim.datasets.base import ChangePoint, Dataset, Samples
from ctsim.datasets.portraits import Portraits
from ctsim.datasets.sensors import Sensors
from ctsim.datasets.synthetic import SEA, Hyperplane, RandomRBF
from ctsim.datasets.table import Table
from ctsim.datasets.text import Arxiv, HuffPost
from ctsim.datasets.vision import VisionStream
from ctsim.datasets.yearbook import Yearbook

__all__ = [
    "SEA",
    "Arxiv",
    "ChangePoint",
    "Dataset",
    "HuffPost",
    "Hyperplane",
    "Portraits",
    "RandomRBF",
    "Samples",
    "Sensors",
    "Table",
    "VisionStream",
    "Yearbook",
]
