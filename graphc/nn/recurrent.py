"""Recurrent layers looped with ``gc.scan``: RNN (tanh/relu), LSTM, GRU.

PyTorch's interface: inputs are ``(T, N, features)``, or ``(N, T, features)`` with
``batch_first=True``; ``layer(x, h0, lengths=None)`` returns ``(output, h_n)`` — ``output``
every step's hidden state of the last layer (same layout as the input), ``h_n`` the final
hidden state of every layer ``(num_layers, N, hidden)``; an LSTM's state is the pair
``(h, c)`` of such tensors.

Each layer is one ``gc.scan`` whose body is the cell, traced once: T may be symbolic
(``("T", "N", D)``), so one compiled function serves every sequence length, and the graph
(and its compile time) does not grow with T. Layer k+1 loops over layer k's outputs.
Backpropagation through time is ``gc.grad`` (a reverse scan). ``lengths=`` (an int tensor
(N,)) gives each sequence its own length: a step counter in the carry masks the update
(``where(t < lengths, new, old)``) so ``h_n`` is each sequence's state at its own last step,
and outputs past the end are zero — PyTorch's ``pack_padded_sequence`` / ``pad_packed_sequence``
round trip, without sorting. ``unroll=True`` keeps the older form: the loop runs while the
graph is built (T must be an int; each step is a name scope ``t0``, ``t1``... in pictures).

The input projection ``x_t W_ih + b_ih`` stays inside the body as a product of the x slice
with a captured weight: that is the shape the loop-invariant hoisting pass rewrites into one
matrix product over all T before the loop (what cuDNN does), so the layer does not do it by
hand. Each gate is its own product with a column block of the weights (sliced once, outside
the loop), as in the unrolled form. The alternative, one product per weight followed by
slices of the activations, gives half the nodes and half the compile time, but its training
step ran about 10% slower on numpy and on llvm (an LSTM, T=32, N=32, D=32, H=128, float32,
input projections hoisted in both; 2 shared cores).

Weights follow PyTorch's gate order, names (``weight_ih_l0``, ``bias_hh_l1``...) and init
(U(-1/sqrt(hidden), 1/sqrt(hidden)) for every weight and bias, two bias vectors), stored as
(in, gates * hidden) for ``x @ W`` like ``Linear``: the transpose of PyTorch's storage.
``dtype=`` (float32 or float64) as every layer's.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np

from .. import init, ops
from ..arguments import maybe_equal
from ..errors import GraphError, ShapeError
from ..ir.graph import name_scope
from ..ir.shapes import dims_equal, format_shape
from ..ir.tensor import Tensor
from ..ir.types import promote
from ..ops.scan import scan
from ..ops.sources import constant, parameter
from . import functional as F
from .module import Module


def _masked(new, old, live: Tensor):
    """One step under a length mask: the state where `live` (N, 1) holds, else the old one
    (zeros when there is none yet), and the output zeroed where it does not."""
    def pick(n, o):
        return ops.where(live, n, o if o is not None else 0.0)

    if isinstance(new, tuple):
        olds = old if old is not None else (None,) * len(new)
        state = tuple(pick(n, o) for n, o in zip(new, olds))
        return state, ops.where(live, new[0], 0.0)
    return pick(new, old), ops.where(live, new, 0.0)


def _padding_zeroed(xs: Tensor, lengths: Tensor) -> Tensor:
    """The (T, N, features) sequence with every step past its sequence's length set to 0.

    PyTorch's packed sequences never read the padding; the masked recurrence does (the
    input projection over all T, and the gradient's ``xs^T @ g``), so a NaN or inf in the
    padding made every weight gradient NaN (0 * NaN), though the outputs were right. The
    step index comes from a loop of T steps, so T may be symbolic."""
    _, steps = scan(lambda t, _: (t + 1, t), ops.constant(np.int64(0)), length=xs.shape[0])
    live = ops.less(ops.reshape(steps, (xs.shape[0], 1, 1)),
                    ops.reshape(lengths, (1, xs.shape[1], 1)))
    return ops.where(live, xs, 0.0)


class _Recurrent(Module):
    gates = 1
    adds_terms = True  # the cell uses x W_ih + b_ih + h W_hh + b_hh only as a sum (not GRU)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False,
                 rng: init.RngLike = None, *, unroll: bool = False,
                 dtype="float32") -> None:
        super().__init__()
        if int(num_layers) < 1:
            raise GraphError(f"num_layers must be at least 1, got {num_layers}")
        rng, dt = init.as_rng(rng), init.float_dtype(dtype)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers, self.batch_first = int(num_layers), bool(batch_first)
        self.bias, self.unroll = bool(bias), bool(unroll)
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
        """Per-gate column blocks of layer k's weights and biases (the unrolled form)."""
        return tuple(self._gates(w) for w in self._whole_weights(k))

    def _whole_weights(self, k: int) -> tuple:
        """Layer k's (weight_ih, bias_ih, weight_hh, bias_hh); a bias is None without bias."""
        return tuple(getattr(self, f"{name}_l{k}", None)
                     for name in ("weight_ih", "bias_ih", "weight_hh", "bias_hh"))

    def _step_terms(self, x_t: Tensor, h: Tensor, w_ih, b_ih, w_hh, b_hh) -> tuple[list, list]:
        """The cell's per-gate terms from one product per weight, split into the gates' column
        blocks. A cell that only adds its two terms (RNN, LSTM) gets their sum split, and zeros
        for the recurrent terms (folded away): one add and one slice per gate, forward, and one
        concat of the gates' gradients, backward."""
        xw, hw = F.linear(x_t, w_ih, b_ih), F.linear(h, w_hh, b_hh)

        def split(z):
            H = self.hidden_size
            return [z[..., g * H:(g + 1) * H] for g in range(self.gates)]

        if self.adds_terms:
            return split(xw + hw), [0.0] * self.gates
        return split(xw), split(hw)

    def forward(self, x: Tensor, state=None, lengths=None):
        """Returns ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``); see the module doc.

        `state` is the initial state of every layer, ``(num_layers, N, hidden)`` (LSTM: the
        pair); without one the recurrence starts from zeros. `lengths` (an int tensor or array
        of shape (N,)) gives each sequence's own length: its state stops changing after its
        last step and its outputs past the end are zero, as PyTorch's packed sequences.
        """
        if x.ndim != 3:
            layout = "(N, T, features)" if self.batch_first else "(T, N, features)"
            raise ShapeError(f"{type(self).__name__} expects {layout}, got {x.shape}")
        time_axis = 1 if self.batch_first else 0
        self._check_state(state, x.shape[1 - time_axis])
        lengths = self._lengths(lengths, x.shape[1 - time_axis])
        if self.unroll:
            sequence, finals = self._unrolled(x, state, lengths)
            output = ops.stack(sequence, axis=time_axis)
        else:
            sequence = ops.transpose(x, (1, 0, 2)) if self.batch_first else x
            if lengths is not None:  # (the later layers read outputs zeroed past the end)
                sequence = _padding_zeroed(sequence, lengths)
            finals = []
            for k in range(self.num_layers):
                with name_scope(f"l{k}") if self.num_layers > 1 else nullcontext():
                    sequence, final = self._scan_layer(k, sequence, self._initial(state, k),
                                                       lengths)
                finals.append(final)
            output = ops.transpose(sequence, (1, 0, 2)) if self.batch_first else sequence
        if isinstance(finals[0], tuple):
            return output, tuple(ops.stack([f[j] for f in finals], axis=0) for j in range(2))
        return output, ops.stack(finals, axis=0)

    def _lengths(self, lengths, batch) -> Tensor | None:
        """`lengths` as an int64 tensor of shape (N,), checked against the batch size."""
        if lengths is None:
            return None
        if not isinstance(lengths, Tensor):
            array = np.asarray(lengths)
            if array.dtype.kind not in "iu":
                raise GraphError(f"{type(self).__name__}: lengths must be integers, got "
                                 f"{array.dtype}")
            lengths = constant(array.astype(np.int64))
        if lengths.dtype.kind not in "iu":
            raise GraphError(f"{type(self).__name__}: lengths must be an int tensor, got "
                             f"{lengths.dtype}")
        if lengths.ndim != 1 or dims_equal(lengths.shape[0], batch) is False:
            raise ShapeError(f"{type(self).__name__}: lengths must have shape (N,) = "
                             f"({batch},), got {format_shape(lengths.shape)}")
        if dims_equal(lengths.shape[0], batch) is not True:
            # e.g. a constant (4,) for a batch "N": take the batch's dim, so the carry keeps
            # its shape (N, hidden) instead of broadcasting to (4, hidden)
            lengths = ops.reshape(lengths, (batch,))
        return lengths if lengths.dtype == np.int64 else lengths.astype("int64")

    def _scan_layer(self, k: int, xs: Tensor, state, lengths: Tensor | None):
        """Layer k over the (T, N, features) sequence `xs` as one ``gc.scan``: the stacked
        outputs (T, N, hidden) and the final state.

        The input projection ``x_t W_ih + b_ih`` is computed inside the body from the x slice
        and the (captured) weight: the loop-invariant hoisting pass turns exactly that product
        into one matrix product over all T before the loop. Each weight is one product for all
        gates, whose result is sliced per gate: fewer, larger GEMMs, and the gradient's pieces
        are joined by one concat (the `adjacent_unslices` rule). With `lengths`, a step counter
        rides in the carry and ``t < lengths`` selects, per sequence, the new state or the old
        one (and the output or zero)."""
        w_ih, b_ih, w_hh, b_hh = self._whole_weights(k)
        if state is None:  # zeros: exactly the unrolled form's first step (0 @ W = 0)
            # (the dtype the unrolled form's first step has: float64 inputs give float64)
            zero = ops.zeros((xs.shape[1], self.hidden_size), promote(xs.dtype, w_hh.dtype))
            state = (zero, zero) if self.gates == 4 else zero
        init = state if lengths is None else (state, ops.constant(np.int64(0)))

        def step(carry, x_t):
            old = carry if lengths is None else carry[0]
            h = old[0] if isinstance(old, tuple) else old
            xw, hw = self._step_terms(x_t, h, w_ih, b_ih, w_hh, b_hh)
            new = self.cell(xw, hw, old)
            if lengths is None:
                return new, (new[0] if isinstance(new, tuple) else new)
            t = carry[1]
            live = ops.expand_dims(ops.less(t, lengths), 1)  # (N, 1): still inside its sequence
            new, y = _masked(new, old, live)
            return (new, t + 1), y

        final, ys = scan(step, init, xs)
        return ys, (final if lengths is None else final[0])

    def _unrolled(self, x: Tensor, state, lengths: Tensor | None):
        """The loop run while the graph is built (``unroll=True``): every step's last-layer
        output and every layer's final state; each step is a name scope t0, t1, ..."""
        time_axis = 1 if self.batch_first else 0
        steps = x.shape[time_axis]
        if not isinstance(steps, int):
            raise GraphError(f"{type(self).__name__}(unroll=True) unrolls over a static "
                             f"sequence length; axis {time_axis} has size {steps} (leave "
                             f"unroll=False to loop with gc.scan)")
        sequence = [x[:, t, :] if self.batch_first else x[t] for t in range(steps)]
        finals = []
        for k in range(self.num_layers):
            layer_state = self._initial(state, k)
            w_ih, b_ih, w_hh, b_hh = self._layer_weights(k)
            outputs = []
            for t, x_t in enumerate(sequence):
                with name_scope(f"l{k}/t{t}" if self.num_layers > 1 else f"t{t}"):
                    if lengths is not None and k == 0:  # the padding never read (as
                        # _padding_zeroed; later layers read outputs zeroed past the end)
                        x_t = ops.where(ops.expand_dims(ops.greater(lengths, t), 1), x_t, 0.0)
                    xw = [F.linear(x_t, w, b) for w, b in zip(w_ih, b_ih)]
                    h = layer_state[0] if isinstance(layer_state, tuple) else layer_state
                    hw = ([b if b is not None else 0.0 for b in b_hh] if h is None
                          else [F.linear(h, w, b) for w, b in zip(w_hh, b_hh)])
                    new = self.cell(xw, hw, layer_state)
                    if lengths is None:
                        layer_state = new
                        outputs.append(new[0] if isinstance(new, tuple) else new)
                    else:
                        live = ops.expand_dims(ops.greater(lengths, t), 1)
                        layer_state, y = _masked(new, layer_state, live)
                        outputs.append(y)
            finals.append(layer_state)
            sequence = outputs
        return sequence, finals

    def _check_state(self, state, batch) -> None:
        """The initial state must be (num_layers, N, hidden) for the input's batch N: a wrong
        batch or width was reported by an inner add's broadcast."""
        if state is None:
            return
        if isinstance(state, tuple) != (self.gates == 4):
            want = "a pair (h0, c0)" if self.gates == 4 else "one tensor h0"
            raise GraphError(f"{type(self).__name__}: the initial state must be {want}")
        want = (self.num_layers, batch, self.hidden_size)
        for p in state if isinstance(state, tuple) else (state,):
            if p.ndim != 3 or not all(maybe_equal(a, b) for a, b in zip(p.shape, want)):
                raise ShapeError(f"{type(self).__name__}: an initial state has shape "
                                 f"(num_layers={self.num_layers}, N={batch}, "
                                 f"hidden_size={self.hidden_size}), got {p.shape}")

    def _initial(self, state, k: int):
        """Layer k's slice of the initial state (None: zeros; checked by `_check_state`)."""
        if state is None:
            return None
        parts = state if isinstance(state, tuple) else (state,)
        sliced = tuple(p[k] for p in parts)
        return sliced if isinstance(state, tuple) else sliced[0]

    def _gates(self, w: Tensor | None) -> list:
        if w is None:
            return [None] * self.gates
        H = self.hidden_size
        return [w[..., k * H:(k + 1) * H] for k in range(self.gates)] if self.gates > 1 else [w]

    def cell(self, xw: list, hw: list, state):
        """One step from the per-gate input terms x W_ih + b_ih and recurrent terms
        h W_hh + b_hh (unrolled: biases, or 0, at the first step without a state, which is
        then None)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        extra = f", num_layers={self.num_layers}" if self.num_layers > 1 else ""
        extra += ", batch_first=True" if self.batch_first else ""
        extra += ", unroll=True" if self.unroll else ""
        return f"{self.input_size}, {self.hidden_size}{extra}"


class RNN(_Recurrent):
    """Elman RNN: ``h_t = tanh(x_t W_ih + b_ih + h_{t-1} W_hh + b_hh)`` (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 rng: init.RngLike = None, *, unroll: bool = False,
                 dtype="float32") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise GraphError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, rng,
                         unroll=unroll, dtype=dtype)
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
    adds_terms = False

    def cell(self, xw, hw, h):
        (xr, xz, xn), (hr, hz, hn) = xw, hw
        r, z = ops.sigmoid(xr + hr), ops.sigmoid(xz + hz)
        n = ops.tanh(xn + r * hn)
        return (1.0 - z) * n if h is None else (1.0 - z) * n + z * h
