"""Datasets: each one file, each configured by ``conf/dataset/<name>.yaml``."""

from ctsim.datasets.base import ChangePoint, Dataset, Samples
from ctsim.datasets.portraits import Portraits
from ctsim.datasets.sensors import Sensors

__all__ = ["ChangePoint", "Dataset", "Portraits", "Samples", "Sensors"]
