"""Recurrent ONNX ops: LSTM, GRU and RNN, each direction one ``gc.scan`` loop.

The input projection ``X @ W^T + b`` of every step is one matmul over the whole sequence,
outside the loop; the loop body holds only the recurrent part (``h @ R^T`` and the gates).
ONNX's gate orders are kept as the file has them: LSTM ``i, o, f, c`` (peepholes ``i, o,
f``), GRU ``z, r, h`` (``linear_before_reset`` as written: PyTorch's GRU sets it to 1).
Directions ``forward``, ``reverse`` and ``bidirectional``, both layouts, optional initial
states; the default activations (and Sigmoid/Tanh/Relu chosen explicitly). Partial sequence
lengths, ``clip``, ``input_forget`` and parameterized activations are refused by name.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..ir.tensor import Tensor
from . import ops_control  # (by module: the two import each other through table.py)
from .table import onnx_op

_ACTIVATIONS = {"sigmoid": ops.sigmoid, "tanh": ops.tanh, "relu": ops.relu}


def _activations(ctx, defaults: list[str], num_dir: int) -> list[list]:
    names = ctx.attr("activations", None)
    if ctx.attr("activation_alpha", None) is not None or \
            ctx.attr("activation_beta", None) is not None:
        ctx.fail("activation_alpha/activation_beta are not supported")
    names = list(names) if names else defaults * num_dir
    if len(names) != len(defaults) * num_dir:
        ctx.fail(f"activations={names!r}: expected {len(defaults)} per direction")
    fns = []
    for name in names:
        fn = _ACTIVATIONS.get(name.lower())
        if fn is None:
            ctx.fail(f"activation {name!r} is not supported (Sigmoid, Tanh, Relu)")
        fns.append(fn)
    k = len(defaults)
    return [fns[d * k:(d + 1) * k] for d in range(num_dir)]


class _Recurrence:
    """What LSTM, GRU and RNN read alike: the sequence as (T, N, D), weights per direction,
    initial states, and how to write the outputs back in the node's layout."""

    def __init__(self, ctx, x, w, r, b, seq_lens, n_gates: int) -> None:
        self.ctx = ctx
        x, w, r = ctx.tensor(x), ctx.tensor(w), ctx.tensor(r)
        for t in (x, w, r):
            if t.dtype.kind != "f":
                ctx.fail(f"input of type {t.dtype} is not supported (float32/float64 only)")
        ctx.refuse_attrs(input_forget=(0,))
        if ctx.attr("clip", None) is not None:
            ctx.fail("attribute clip is not supported")
        self.layout = int(ctx.attr("layout", 0))
        direction = ctx.attr("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            ctx.fail(f"direction={direction!r} is not supported")
        self.reverse = [direction == "reverse"] if direction != "bidirectional" else \
            [False, True]
        self.x = ops.transpose(x, (1, 0, 2)) if self.layout else x
        self.w, self.r = w, r
        self.hidden = int(ctx.attr("hidden_size", w.shape[1] // n_gates))
        if w.shape[1] != n_gates * self.hidden or w.shape[0] != len(self.reverse):
            ctx.fail(f"W has shape {tuple(w.shape)}; expected ({len(self.reverse)}, "
                     f"{n_gates}*{self.hidden}, input_size)")
        self.b = None if b is None else ctx.tensor(b)
        self.steps, self.batch = self.x.shape[0], self.x.shape[1]
        if seq_lens is not None:
            lens = np.asarray(ctx.static(seq_lens, "sequence_lens")).ravel()
            if not (isinstance(self.steps, int) and np.all(lens == self.steps)):
                ctx.fail("sequence_lens shorter than the sequence are not supported (every "
                         "sequence must have all of its steps)")

    def state(self, value, d: int) -> Tensor:
        """Initial state of direction d, (N, H): given, or zeros."""
        if value is None:
            return ops.zeros((self.batch, self.hidden), dtype=self.x.dtype)
        t = self.ctx.tensor(value)
        if self.layout:
            t = ops.transpose(t, (1, 0, 2))
        return t[d]

    def projected(self, d: int, extra_bias=None) -> Tensor:
        """X @ W[d]^T + bias of every step, (T, N, G*H), bias from B[d] (both halves unless
        `extra_bias` picks what to add)."""
        xw = ops.matmul(self.x, ops.transpose(self.w[d]))
        if self.b is not None:
            g = self.w.shape[1]
            bias = self.b[d][:g] + self.b[d][g:] if extra_bias is None else extra_bias
            xw = xw + bias
        return xw

    def recurrent(self, d: int) -> Tensor:
        return ops.transpose(self.r[d])

    def outputs(self, ys: list[Tensor], finals: list[list[Tensor]]) -> list[Tensor]:
        """Y (T, num_dir, N, H) or (N, T, num_dir, H), then each final state (num_dir, N, H)
        or (N, num_dir, H)."""
        y = ops.stack(ys, 1)
        states = [ops.stack(list(fs), 0) for fs in zip(*finals)]
        if self.layout:
            y = ops.transpose(y, (2, 0, 1, 3))
            states = [ops.transpose(s, (1, 0, 2)) for s in states]
        return [y, *states]


def _gate(z: Tensor, k: int, h: int) -> Tensor:
    return z[..., k * h:(k + 1) * h]


@onnx_op("LSTM")
def _lstm(ctx, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
    rec = _Recurrence(ctx, x, w, r, b, seq_lens, 4)
    acts = _activations(ctx, ["Sigmoid", "Tanh", "Tanh"], len(rec.reverse))
    H = rec.hidden
    p = None if p is None else ctx.tensor(p)
    ys, finals = [], []
    for d, rev in enumerate(rec.reverse):
        f, g, hact = acts[d]
        rt = rec.recurrent(d)
        peep = None if p is None else [_gate(p[d], k, H) for k in range(3)]

        def step(carry, xw_t, f=f, g=g, hact=hact, rt=rt, peep=peep):
            h, c = carry
            z = xw_t + ops.matmul(h, rt)
            zi, zo, zf, zc = (_gate(z, k, H) for k in range(4))
            if peep is not None:
                zi, zf = zi + peep[0] * c, zf + peep[2] * c
            c_new = f(zf) * c + f(zi) * g(zc)
            if peep is not None:
                zo = zo + peep[1] * c_new
            h_new = f(zo) * hact(c_new)
            return (h_new, c_new), h_new

        (h_n, c_n), y = ops_control.node_scan(
            ctx, step, (rec.state(h0, d), rec.state(c0, d)), rec.projected(d), reverse=rev)
        ys.append(y)
        finals.append((h_n, c_n))
    return rec.outputs(ys, finals)


@onnx_op("GRU")
def _gru(ctx, x, w, r, b=None, seq_lens=None, h0=None):
    rec = _Recurrence(ctx, x, w, r, b, seq_lens, 3)
    acts = _activations(ctx, ["Sigmoid", "Tanh"], len(rec.reverse))
    before_reset = bool(ctx.attr("linear_before_reset", 0))
    H = rec.hidden
    ys, finals = [], []
    for d, rev in enumerate(rec.reverse):
        f, g = acts[d]
        rt = rec.recurrent(d)
        rt_zr, rt_h = rt[:, :2 * H], rt[:, 2 * H:]
        rb_h, bias = None, None
        if rec.b is not None:
            wb, rb = rec.b[d][:3 * H], rec.b[d][3 * H:]
            if before_reset:  # R_bh stays inside r * (h @ R_h^T + R_bh)
                rb_h = rb[2 * H:]
                bias = wb + ops.concat([rb[:2 * H], ops.zeros((H,), dtype=rb.dtype)], 0)
            else:
                bias = wb + rb

        def step(h, xw_t, f=f, g=g, rt_zr=rt_zr, rt_h=rt_h, rb_h=rb_h):
            zr = _gate(xw_t, 0, 2 * H) + ops.matmul(h, rt_zr)
            z, r_ = f(_gate(zr, 0, H)), f(_gate(zr, 1, H))
            xh = _gate(xw_t, 2, H)
            if before_reset:
                hr = ops.matmul(h, rt_h)
                hh = g(xh + r_ * (hr if rb_h is None else hr + rb_h))
            else:
                hh = g(xh + ops.matmul(r_ * h, rt_h))
            h_new = (1.0 - z) * hh + z * h
            return h_new, h_new

        h_n, y = ops_control.node_scan(ctx, step, rec.state(h0, d), rec.projected(d, bias),
                                       reverse=rev)
        ys.append(y)
        finals.append((h_n,))
    return rec.outputs(ys, finals)


@onnx_op("RNN")
def _rnn(ctx, x, w, r, b=None, seq_lens=None, h0=None):
    rec = _Recurrence(ctx, x, w, r, b, seq_lens, 1)
    acts = _activations(ctx, ["Tanh"], len(rec.reverse))
    ys, finals = [], []
    for d, rev in enumerate(rec.reverse):
        (f,) = acts[d]
        rt = rec.recurrent(d)

        def step(h, xw_t, f=f, rt=rt):
            h_new = f(xw_t + ops.matmul(h, rt))
            return h_new, h_new

        h_n, y = ops_control.node_scan(ctx, step, rec.state(h0, d), rec.projected(d), reverse=rev)
        ys.append(y)
        finals.append((h_n,))
    return rec.outputs(ys, finals)
