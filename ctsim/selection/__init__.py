"""Selection policies: *what* to train on. One class per file, one YAML per class in ``conf/selection/``."""

from ctsim.selection.all import AllData
from ctsim.selection.base import Selection, SelectionContext, SelectionPolicy
from ctsim.selection.new import NewData

__all__ = ["AllData", "NewData", "Selection", "SelectionContext", "SelectionPolicy"]
