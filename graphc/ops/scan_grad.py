"""The gradient of a loop: another loop, running the other way (backpropagation through time
as a graph transformation).

For a forward loop ``c[t+1], y[t] = body(c[t], xs[t], k)`` (k: the captured tensors), the
reverse loop carries ``(c_bar, k_bar)``: starting from the cotangent of the final carry and
zeros, each step (in the opposite order) recomputes the body at the saved carry ``c[t]`` (the
forward loop's history result), takes the vector-Jacobian product with the cotangents
``(c_bar, y_bar[t])`` by ``gc.grad`` of ``<c[t+1], c_bar> + <y[t], y_bar[t]>`` inside the
reverse body, and produces ``c_bar <- d/dc[t] (+ the history's own cotangent at t)``,
``k_bar <- k_bar + d/dk`` and, as its y, ``x_bar[t] = d/dxs[t]``. Its final carry is the
gradient for `init` and the captured tensors; its ys, the gradient for `xs`.

Random ops in the forward body read its random-state carry (graphc/ops/scan.py), so the inlined
body at the saved history ``c[t]`` draws exactly what the forward step t drew (its dropout
masks, its noise): nothing random is saved, and random numbers are constants for ``gc.grad``.

The reverse loop is an ordinary scan, so it is optimized, drawn, saved and differentiated
again like any other (a second derivative reads *its* histories).
"""

from __future__ import annotations

from ..ir.tensor import Tensor
from .creation import zeros_like
from .registry import BLOCKED
from .scan import SCAN, captured, inline, loop_output, scan


def _float(t: Tensor) -> bool:
    return t.dtype.kind == "f"


def scan_grad(ctx) -> list:
    """The gradient rule of `scan`: ctx.g maps result indices to their cotangents."""
    from graphc.passes.autodiff import grad

    a = ctx.node.attrs
    body, nc, nx = a["body"], a["n_carry"], a["n_xs"]
    ny = len(body.outputs) - nc
    inputs = ctx.inputs
    init, xs, caps = inputs[:nc], inputs[nc:nc + nx], inputs[nc + nx:]
    gs: dict[int, Tensor] = ctx.g
    fc = [i for i in range(nc) if _float(init[i])]
    fx = [j for j in range(nx) if _float(xs[j])]
    fk = [k for k in range(len(caps)) if _float(caps[k])]
    g_final = {i: gs[i] for i in fc if i in gs}
    g_ys = {j: gs[nc + j] for j in range(ny) if nc + j in gs}
    g_hist = {i: gs[nc + ny + i] for i in fc if nc + ny + i in gs}
    hist = [loop_output(ctx.out, nc + ny + i) for i in range(nc)]

    r_init = ([g_final[i] if i in g_final else zeros_like(init[i]) for i in fc],
              [zeros_like(caps[k]) for k in fk])
    r_xs = (hist, list(xs), [g_ys[j] for j in sorted(g_ys)], [g_hist[i] for i in sorted(g_hist)])

    def step(carry, x):
        c_bar, k_bar = carry
        c_t, x_t, gy_t, gh_t = x
        k_in = [captured(c) for c in caps]
        outs = inline(body, [*c_t, *x_t, *k_in])
        new_c, y = outs[:nc], outs[nc:]
        terms = [(new_c[i] * cb).sum() for i, cb in zip(fc, c_bar)]
        terms += [(y[j] * g).sum() for j, g in zip(sorted(g_ys), gy_t)]
        wrt = [c_t[i] for i in fc] + [x_t[j] for j in fx] + [k_in[k] for k in fk]
        if terms and wrt:
            cost = terms[0]
            for term in terms[1:]:
                cost = cost + term
            grads = grad(cost, wrt, allow_unused=True)
        else:
            grads = [zeros_like(w) for w in wrt]
        m = len(fc) + len(fx)
        d_c, d_x, d_k = grads[:len(fc)], grads[len(fc):m], grads[m:]
        extra = dict(zip(sorted(g_hist), gh_t))
        new_c_bar = [d + extra[i] if i in extra else d for i, d in zip(fc, d_c)]
        new_k_bar = [kb + d for kb, d in zip(k_bar, d_k)]
        return (new_c_bar, new_k_bar), d_x

    (c_bar0, k_total), x_bar = scan(step, r_init, r_xs, length=a["length"],
                                    reverse=not a["reverse"])
    out: list = [BLOCKED] * len(inputs)
    for i, g in zip(fc, c_bar0):
        out[i] = g
    for j, g in zip(fx, x_bar):
        out[nc + j] = g
    for k, g in zip(fk, k_total):
        out[nc + nx + k] = g
    return out


SCAN.grad = scan_grad
