"""matmul: batched matrix product with optional transposes of either operand.

``ta``/``tb`` say "use the transpose of the last two axes of a/b". The DSL's ``@`` never sets
them; gradients do (dA = g @ B^T needs no transpose node), and a rewrite folds explicit
transposes into them, so the LLVM backend can hand the flags straight to BLAS.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..ir.tensor import Tensor, apply
from ..ir.types import TensorType
from .registry import OpDef, register
from .shape_ops import reshape, sum_to_shape


def _mat_dims(shape, transposed: bool):
    rows, cols = shape[-2], shape[-1]
    return (cols, rows) if transposed else (rows, cols)


def _infer(types, attrs, checks):
    a, b = types
    if a.ndim < 2 or b.ndim < 2:
        raise ShapeError("matmul operands must have rank >= 2 (the DSL reshapes vectors)")
    m, k1 = _mat_dims(a.shape, attrs["ta"])
    k2, n = _mat_dims(b.shape, attrs["tb"])
    checks.equal(k1, k2, "matmul inner dimensions must agree")
    batch = checks.broadcast(a.shape[:-2], b.shape[:-2])
    return TensorType(a.dtype, tuple(batch) + (m, n))


def _reference(a, b, *, ta, tb):
    a = np.swapaxes(a, -1, -2) if ta else a
    b = np.swapaxes(b, -1, -2) if tb else b
    return np.matmul(a, b)


def _grad(ctx):
    """With A' = op(A), B' = op(B): dA' = g B'^T and dB' = A'^T g, then undo op()."""
    a, b = ctx.inputs
    g = ctx.g
    ta, tb = ctx.node.attrs["ta"], ctx.node.attrs["tb"]
    if ta:
        da = matmul_t(b, g, ta=tb, tb=True)
    else:
        da = matmul_t(g, b, ta=False, tb=not tb)
    if tb:
        db = matmul_t(g, a, ta=True, tb=ta)
    else:
        db = matmul_t(a, g, ta=not ta, tb=False)
    return [sum_to_shape(da, a.shape), sum_to_shape(db, b.shape)]


MATMUL = register(OpDef("matmul", "linalg", infer=_infer, reference=_reference, grad=_grad,
                        doc="Batched matrix product, NumPy broadcasting over batch axes."))


def matmul_t(a: Tensor, b: Tensor, ta: bool = False, tb: bool = False) -> Tensor:
    """op(a) @ op(b) where op transposes the last two axes when the flag is set."""
    from .elementwise import lift

    a, b = lift(a, b)
    return apply(MATMUL, [a, b], ta=bool(ta), tb=bool(tb))


def matmul(a, b) -> Tensor:
    """a @ b with NumPy semantics (1-D operands are promoted to matrices and squeezed back)."""
    from .elementwise import lift

    a, b = lift(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("matmul does not accept 0-d operands; use * for scaling")
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = reshape(a, (1, a.shape[0]))
    if squeeze_b:
        b = reshape(b, (b.shape[0], 1))
    out = matmul_t(a, b)
    if squeeze_a or squeeze_b:
        shape = list(out.shape)
        if squeeze_b:
            shape.pop(-1)
        if squeeze_a:
            shape.pop(-1 if squeeze_b else -2)
        out = reshape(out, tuple(shape))
    return out
