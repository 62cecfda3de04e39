"""Models: plain ``nn.Module``s, each taking ``input_shape`` and ``num_classes`` first."""

from ctsim.models.base import ModelSpec
from ctsim.models.bow import BagOfWords
from ctsim.models.cnn import CNN
from ctsim.models.dropout import SeededDropout
from ctsim.models.mlp import MLP
from ctsim.models.recurrent import GRU, LSTM
from ctsim.models.yearbooknet import YearbookNet

__all__ = ["CNN", "GRU", "LSTM", "MLP", "BagOfWords", "ModelSpec", "SeededDropout", "YearbookNet"]
