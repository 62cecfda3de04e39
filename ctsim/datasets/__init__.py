"""Datasets: each one file, each configured by ``conf/dataset/<name>.yaml``."""

from ctsim.datasets.base import ChangePoint, Dataset, Samples
from ctsim.datasets.portraits import Portraits

__all__ = ["ChangePoint", "Dataset", "Portraits", "Samples"]
