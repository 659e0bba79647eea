"""Recurrent layers unrolled over a static sequence length: RNN (tanh/relu), LSTM, GRU.

PyTorch's interface: inputs are ``(T, N, features)``, or ``(N, T, features)`` with
``batch_first=True``; ``layer(x, h0)`` returns ``(output, h_n)`` — ``output`` every step's
hidden state of the last layer (same layout as the input), ``h_n`` the final hidden state of
every layer ``(num_layers, N, hidden)``; an LSTM's state is the pair ``(h, c)`` of such
tensors. T must be an int: the loop runs while the graph is built, so the compiled step is
one static graph (each time step is a name scope ``t0``, ``t1``, ... in pictures) and
backpropagation through time is ordinary ``gc.grad``.

Weights follow PyTorch's gate order, names (``weight_ih_l0``, ``bias_hh_l1``...) and init
(U(-1/sqrt(hidden), 1/sqrt(hidden)) for every weight and bias, two bias vectors), stored as
(in, gates * hidden) for ``x @ W`` like ``Linear``: the transpose of PyTorch's storage.
``dtype=`` (float32 or float64) as every layer's.
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

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False,
                 rng: init.RngLike = None, *, dtype="float32") -> None:
        super().__init__()
        if int(num_layers) < 1:
            raise GraphError(f"num_layers must be at least 1, got {num_layers}")
        rng, dt = init.as_rng(rng), init.float_dtype(dtype)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers, self.batch_first = int(num_layers), bool(batch_first)
        self.bias = bool(bias)
        width, bound = self.gates * hidden_size, 1.0 / math.sqrt(hidden_size)
        for k in range(self.num_layers):
            fan_in = input_size if k == 0 else hidden_size
            self._new(f"weight_ih_l{k}", init.uniform((fan_in, width), rng, bound, dt))
            self._new(f"weight_hh_l{k}", init.uniform((hidden_size, width), rng, bound, dt))
            if bias:
                self._new(f"bias_ih_l{k}", init.uniform((width,), rng, bound, dt))
                self._new(f"bias_hh_l{k}", init.uniform((width,), rng, bound, dt))

    def _new(self, name: str, value) -> None:
        setattr(self, name, parameter(name, value))

    def _layer_weights(self, k: int) -> tuple[list, list, list, list]:
        """Per-gate column blocks of layer k's weights and biases. Slicing the weights rather
        than per-step activations keeps the backward pass free of full-size scatter buffers."""
        def get(name):
            return getattr(self, f"{name}_l{k}", None)

        return (self._gates(get("weight_ih")), self._gates(get("bias_ih")),
                self._gates(get("weight_hh")), self._gates(get("bias_hh")))

    def forward(self, x: Tensor, state=None):
        """Returns ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``); see the module doc.

        `state` is the initial state of every layer, ``(num_layers, N, hidden)`` (LSTM: the
        pair); without one the recurrence starts from zeros.
        """
        if x.ndim != 3:
            layout = "(N, T, features)" if self.batch_first else "(T, N, features)"
            raise ShapeError(f"{type(self).__name__} expects {layout}, got {x.shape}")
        time_axis = 1 if self.batch_first else 0
        steps = x.shape[time_axis]
        if not isinstance(steps, int):
            raise GraphError(f"{type(self).__name__} unrolls over a static sequence length; "
                             f"axis {time_axis} has size {steps}")
        sequence = [x[:, t, :] if self.batch_first else x[t] for t in range(steps)]
        finals = []
        for k in range(self.num_layers):
            layer_state = self._initial(state, k)
            w_ih, b_ih, w_hh, b_hh = self._layer_weights(k)
            outputs = []
            for t, x_t in enumerate(sequence):
                with name_scope(f"l{k}/t{t}" if self.num_layers > 1 else f"t{t}"):
                    xw = [F.linear(x_t, w, b) for w, b in zip(w_ih, b_ih)]
                    h = layer_state[0] if isinstance(layer_state, tuple) else layer_state
                    hw = ([b if b is not None else 0.0 for b in b_hh] if h is None
                          else [F.linear(h, w, b) for w, b in zip(w_hh, b_hh)])
                    layer_state = self.cell(xw, hw, layer_state)
                    outputs.append(layer_state[0] if isinstance(layer_state, tuple)
                                   else layer_state)
            finals.append(layer_state)
            sequence = outputs
        output = ops.stack(sequence, axis=time_axis)
        if isinstance(finals[0], tuple):
            return output, tuple(ops.stack([f[j] for f in finals], axis=0) for j in range(2))
        return output, ops.stack(finals, axis=0)

    def _initial(self, state, k: int):
        """Layer k's slice of the initial state (None: zeros)."""
        if state is None:
            return None
        if isinstance(state, tuple) != (self.gates == 4):
            want = "a pair (h0, c0)" if self.gates == 4 else "one tensor h0"
            raise GraphError(f"{type(self).__name__}: the initial state must be {want}")
        parts = state if isinstance(state, tuple) else (state,)
        for p in parts:
            if p.ndim != 3 or p.shape[0] != self.num_layers:
                raise ShapeError(f"{type(self).__name__}: an initial state has shape "
                                 f"(num_layers={self.num_layers}, N, {self.hidden_size}), got "
                                 f"{p.shape}")
        sliced = tuple(p[k] for p in parts)
        return sliced if isinstance(state, tuple) else sliced[0]

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
        extra = f", num_layers={self.num_layers}" if self.num_layers > 1 else ""
        extra += ", batch_first=True" if self.batch_first else ""
        return f"{self.input_size}, {self.hidden_size}{extra}"


class RNN(_Recurrent):
    """Elman RNN: ``h_t = tanh(x_t W_ih + b_ih + h_{t-1} W_hh + b_hh)`` (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 rng: init.RngLike = None, *, dtype="float32") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise GraphError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, rng,
                         dtype=dtype)
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
