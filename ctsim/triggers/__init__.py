"""Trigger policies: *when* to train. One class per file, one YAML per class in ``conf/trigger/``."""

from ctsim.triggers.always import AlwaysTrigger
from ctsim.triggers.amount import AmountTrigger
from ctsim.triggers.base import (
    ChecksStream,
    DecidesTogether,
    DeclaresSignals,
    Trigger,
    TriggerContext,
    Want,
    WantsSignals,
    replay,
)
from ctsim.triggers.cost import CostTrigger
from ctsim.triggers.drift import DriftTrigger
from ctsim.triggers.ensemble import EnsembleTrigger
from ctsim.triggers.never import NeverTrigger
from ctsim.triggers.performance import PerformanceTrigger
from ctsim.triggers.time import TimeTrigger

__all__ = [
    "AlwaysTrigger",
    "AmountTrigger",
    "ChecksStream",
    "CostTrigger",
    "DecidesTogether",
    "DeclaresSignals",
    "DriftTrigger",
    "EnsembleTrigger",
    "NeverTrigger",
    "PerformanceTrigger",
    "TimeTrigger",
    "Trigger",
    "TriggerContext",
    "Want",
    "WantsSignals",
    "replay",
]
