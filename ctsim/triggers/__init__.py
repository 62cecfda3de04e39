"""Trigger policies: *when* to train. One class per file, one YAML per class in ``conf/trigger/``."""

from ctsim.triggers.always import AlwaysTrigger
from ctsim.triggers.amount import AmountTrigger
from ctsim.triggers.base import Trigger, TriggerContext, replay
from ctsim.triggers.never import NeverTrigger
from ctsim.triggers.time import TimeTrigger

__all__ = [
    "AlwaysTrigger",
    "AmountTrigger",
    "NeverTrigger",
    "TimeTrigger",
    "Trigger",
    "TriggerContext",
    "replay",
]
