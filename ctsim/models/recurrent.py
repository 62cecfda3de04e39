"""LSTM and GRU classifiers written with plain tensor ops, so that ``torch.func.vmap`` can batch them.

``torch.nn.LSTM`` and ``torch.nn.GRU`` run fused kernels (cuDNN on GPUs, one fused op on CPUs) over a
flattened weight buffer, which ``torch.func`` cannot vmap over a stack of models. These modules compute
the same recurrences (torch's equations, gate order and initialisation) with matrix products and
element-wise ops, unrolled over the static sequence length. Their parameters have exactly torch's names
and shapes, so ``model.rnn.load_state_dict(torch_lstm.state_dict())`` copies weights from a
``torch.nn.LSTM(batch_first=True)``; ``tests/test_recurrent.py`` checks outputs and gradients against
torch's modules and under ``vmap``.

Inputs are batch first: ``(batch, sequence length, features)``.

>>> lstm = LSTM((24, 4), num_classes=3)
>>> sum(p.numel() for p in lstm.parameters()), tuple(lstm(torch.zeros(5, 24, 4)).shape)
(4963, (5, 3))
>>> sorted(name for name, _ in lstm.rnn.named_parameters())
['bias_hh_l0', 'bias_ih_l0', 'weight_hh_l0', 'weight_ih_l0']
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ctsim.validation import ConfigError, check, is_int, positive_int

PARAMETERS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # per layer, suffixed _l0, _l1, ...: as torch
Layer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def lstm_layer(
    x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
) -> torch.Tensor:
    """One LSTM layer over ``x`` ``(batch, time, in)``: every step's hidden state ``(batch, time, hidden)``.

    Gates in torch's order (input, forget, cell, output), zero initial state.
    """
    hidden = w_hh.shape[1]
    # The input projection of every step at once: one large product instead of one per step.
    gates_x = F.linear(x, w_ih, b_ih + b_hh).unbind(1)
    h = torch.zeros(x.shape[0], hidden, dtype=x.dtype, device=x.device)
    c = h
    outputs = []
    for gx in gates_x:
        i, f, g, o = (gx + h @ w_hh.T).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def gru_layer(
    x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
) -> torch.Tensor:
    """One GRU layer over ``x`` ``(batch, time, in)``: every step's hidden state ``(batch, time, hidden)``.

    Gates in torch's order (reset, update, new), zero initial state; as torch, the reset gate scales
    the hidden state's projection including its bias: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``.
    """
    hidden = w_hh.shape[1]
    gates_x = F.linear(x, w_ih, b_ih).unbind(1)
    h = torch.zeros(x.shape[0], hidden, dtype=x.dtype, device=x.device)
    outputs = []
    for gx in gates_x:
        xr, xz, xn = gx.chunk(3, dim=-1)
        hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        outputs.append(h)
    return torch.stack(outputs, dim=1)


class Recurrent(nn.Module):
    """``num_layers`` stacked recurrent layers with torch's parameter names, shapes and initialisation.

    Args:
        layer: :func:`lstm_layer` or :func:`gru_layer`.
        gates: gate blocks per layer: 4 for the LSTM, 3 for the GRU.
        input_size, hidden_size, num_layers: as for ``torch.nn.LSTM``.

    Its forward returns the last layer's hidden state at the last step, ``(batch, hidden_size)``.
    """

    def __init__(self, layer: Layer, gates: int, input_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.layer, self.hidden_size, self.num_layers = layer, hidden_size, num_layers
        rows = gates * hidden_size
        for k in range(num_layers):
            width = input_size if k == 0 else hidden_size
            shapes = ((rows, width), (rows, hidden_size), (rows,), (rows,))
            for name, shape in zip(PARAMETERS, shapes):
                self.register_parameter(f"{name}_l{k}", nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As torch: every weight and bias uniform in ±1/√hidden_size, drawn in torch's order."""
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(self.num_layers):
            x = self.layer(x, *(getattr(self, f"{name}_l{k}") for name in PARAMETERS))
        return x[:, -1]

    def extra_repr(self) -> str:
        return f"{self.layer.__name__}, hidden_size={self.hidden_size}, num_layers={self.num_layers}"


class _Classifier(nn.Module):
    """A :class:`Recurrent` network over the sequence, then a linear head on its final hidden state.

    :class:`LSTM` and :class:`GRU` name their ``layer`` function and its ``gates``; nothing else differs.
    """

    layer: Layer
    gates: int
    input_kind = "values"  # what its rows must hold (ctsim.app.build checks it against the dataset)

    def __init__(self, input_shape: tuple[int, int], num_classes: int, hidden: int = 32, layers: int = 1):
        super().__init__()
        ConfigError.raise_all(
            [
                positive_int("hidden", hidden),
                positive_int("layers", layers),
                check(
                    "input_shape",
                    tuple(input_shape),
                    len(input_shape) == 2 and all(is_int(d) and d >= 1 for d in input_shape),
                    "(sequence length, features): a sequence dataset such as dataset=sensors",
                ),
            ]
        )
        self.rnn = Recurrent(self.layer, self.gates, input_shape[1], hidden, layers)
        self.head = nn.Linear(hidden, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The last layer's final hidden state ``(batch, hidden)``."""
        return self.rnn(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class LSTM(_Classifier):
    """An LSTM over the sequence, then a linear head on its final hidden state.

    Args:
        input_shape: ``(sequence length, features)``.
        num_classes: outputs of the head.
        hidden: hidden size of every layer.
        layers: stacked LSTM layers.

    >>> net = LSTM((24, 4), num_classes=3, hidden=8, layers=2)
    >>> sum(p.numel() for p in net.parameters()), tuple(net.embed(torch.zeros(2, 24, 4)).shape)
    (1051, (2, 8))
    """

    layer = staticmethod(lstm_layer)
    gates = 4


class GRU(_Classifier):
    """A GRU over the sequence, then a linear head on its final hidden state.

    Args:
        input_shape, num_classes, hidden, layers: as :class:`LSTM` (``layers`` stacked GRU layers).

    >>> net = GRU((24, 4), num_classes=3)
    >>> sum(p.numel() for p in net.parameters()), tuple(net(torch.zeros(5, 24, 4)).shape)
    (3747, (5, 3))
    """

    layer = staticmethod(gru_layer)
    gates = 3
