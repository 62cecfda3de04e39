"""Selection policies: *what* to train on. One class per file, one YAML per class in ``conf/selection/``
(presamplers) and ``conf/selection/downsample/`` (downsamplers); see :mod:`ctsim.selection.base`."""

from ctsim.selection.all import AllData
from ctsim.selection.balanced import ClassBalanced
from ctsim.selection.base import Presampler, Selection, SelectionContext, SelectionPolicy
from ctsim.selection.downsample import RS2, Downsampled, ScoreDownsampler
from ctsim.selection.freshness import Freshness
from ctsim.selection.new import NewData
from ctsim.selection.reservoir import Reservoir
from ctsim.selection.trigger_balanced import TriggerBalanced
from ctsim.selection.uniform import Uniform
from ctsim.selection.window import Window

__all__ = [
    "RS2",
    "AllData",
    "ClassBalanced",
    "Downsampled",
    "Freshness",
    "NewData",
    "Presampler",
    "Reservoir",
    "ScoreDownsampler",
    "Selection",
    "SelectionContext",
    "SelectionPolicy",
    "TriggerBalanced",
    "Uniform",
    "Window",
]
