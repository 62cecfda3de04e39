"""Engines: jobs in, trained generations out."""

from ctsim.engine.base import Engine, State, TrainConfig, Trained, TrainJob, job_seed
from ctsim.engine.batched import BatchedEngine
from ctsim.engine.sequential import SequentialEngine

__all__ = [
    "BatchedEngine",
    "Engine",
    "SequentialEngine",
    "State",
    "TrainConfig",
    "TrainJob",
    "Trained",
    "job_seed",
]
