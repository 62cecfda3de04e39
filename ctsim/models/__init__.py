"""Models: plain ``nn.Module``s, each taking ``input_shape`` and ``num_classes`` first."""

from ctsim.models.base import ModelSpec
from ctsim.models.mlp import MLP
from ctsim.models.yearbooknet import YearbookNet

__all__ = ["MLP", "ModelSpec", "YearbookNet"]
