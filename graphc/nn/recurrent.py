"""Recurrent layers unrolled over a static sequence length: RNN (tanh/relu), LSTM, GRU.

Inputs are batch-first, ``(N, T, features)`` with an int T: the loop runs while the graph is
built, so the compiled step is one static graph (each time step is a name scope ``t0``, ``t1``,
... in pictures) and backpropagation through time is ordinary ``gc.grad``.

Weights follow PyTorch's gate order and init (U(-1/sqrt(hidden), 1/sqrt(hidden)) for every
weight and bias, two bias vectors), stored as (in, gates * hidden) for ``x @ W``.
"""

from __future__ import annotations

import math

from .. import init, ops
from ..errors import GraphError, ShapeError
from ..ir.graph import name_scope
from ..ir.tensor import Tensor
from ..ops.sources import parameter
from . import functional as F
from .module import Module


class _Recurrent(Module):
    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 rng: init.RngLike = None) -> None:
        super().__init__()
        rng = init.as_rng(rng)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        width, bound = self.gates * hidden_size, 1.0 / math.sqrt(hidden_size)
        self.weight_ih = parameter("weight_ih", init.uniform((input_size, width), rng, bound))
        self.weight_hh = parameter("weight_hh", init.uniform((hidden_size, width), rng, bound))
        self.bias_ih = parameter("bias_ih", init.uniform((width,), rng, bound)) if bias else None
        self.bias_hh = parameter("bias_hh", init.uniform((width,), rng, bound)) if bias else None

    def forward(self, x: Tensor, state=None):
        """Returns (outputs (N, T, hidden): every step's hidden state, final state).

        `state` (and the final state) is h (N, hidden); for LSTM the pair (h, c). Without
        an initial state the recurrence starts from zeros.
        """
        if x.ndim != 3:
            raise ShapeError(f"{type(self).__name__} expects (N, T, features), got {x.shape}")
        steps = x.shape[1]
        if not isinstance(steps, int):
            raise GraphError(f"{type(self).__name__} unrolls over a static sequence length; "
                             f"axis 1 has size {steps}")
        # Per-gate column blocks of the weights, sliced once: slicing weights rather than
        # per-step activations keeps the backward pass free of full-size scatter buffers.
        w_ih, b_ih = self._gates(self.weight_ih), self._gates(self.bias_ih)
        w_hh, b_hh = self._gates(self.weight_hh), self._gates(self.bias_hh)
        outputs = []
        for t in range(steps):
            with name_scope(f"t{t}"):
                x_t = x[:, t, :]
                xw = [F.linear(x_t, w, b) for w, b in zip(w_ih, b_ih)]
                h = state[0] if isinstance(state, tuple) else state
                hw = ([b if b is not None else 0.0 for b in b_hh] if h is None
                      else [F.linear(h, w, b) for w, b in zip(w_hh, b_hh)])
                state = self.cell(xw, hw, state)
                outputs.append(state[0] if isinstance(state, tuple) else state)
        return ops.stack(outputs, axis=1), state

    def _gates(self, w: Tensor | None) -> list:
        if w is None:
            return [None] * self.gates
        H = self.hidden_size
        return [w[..., k * H:(k + 1) * H] for k in range(self.gates)] if self.gates > 1 else [w]

    def cell(self, xw: list, hw: list, state):
        """One step from the per-gate input terms x W_ih + b_ih and recurrent terms
        h W_hh + b_hh (biases, or 0, at the first step)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class RNN(_Recurrent):
    """Elman RNN: ``h_t = tanh(x_t W_ih + b_ih + h_{t-1} W_hh + b_hh)`` (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh",
                 bias: bool = True, rng: init.RngLike = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise GraphError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, rng)
        self.nonlinearity = nonlinearity

    def cell(self, xw, hw, h):
        act = ops.tanh if self.nonlinearity == "tanh" else ops.relu
        return act(xw[0] + hw[0])


class LSTM(_Recurrent):
    """Long short-term memory (gates i, f, g, o as PyTorch): ``c = f*c + i*g``,
    ``h = o * tanh(c)``. The state is the pair (h, c)."""

    gates = 4

    def cell(self, xw, hw, state):
        c = state[1] if state is not None else None
        i, f, g, o = (a + b for a, b in zip(xw, hw))
        i, f, g, o = ops.sigmoid(i), ops.sigmoid(f), ops.tanh(g), ops.sigmoid(o)
        c = i * g if c is None else f * c + i * g
        return o * ops.tanh(c), c


class GRU(_Recurrent):
    """Gated recurrent unit (PyTorch's formulation, gates r, z, n):
    ``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``, ``h = (1 - z) * n + z * h``."""

    gates = 3

    def cell(self, xw, hw, h):
        (xr, xz, xn), (hr, hz, hn) = xw, hw
        r, z = ops.sigmoid(xr + hr), ops.sigmoid(xz + hz)
        n = ops.tanh(xn + r * hn)
        return (1.0 - z) * n if h is None else (1.0 - z) * n + z * h
