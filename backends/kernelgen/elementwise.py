"""The element of an elementwise op or a fused group: one scalar computation, shared by
every target (the host's loops, the GPU's grid-stride kernels)."""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from graphc.ir.node import Node
from graphc.ops import expr as E
from graphc.ops.elementwise import value_dtype

from .emitter import ExprEmitter
from .irutil import I1, I8, convert, ir_type
from .program import KernelContext

__all__ = ["compute_type", "element_function"]


def compute_type(node: Node) -> ir.Type:
    """The type an elementwise expression is evaluated in: its inputs' value dtype (a
    comparison's output is bool, its arithmetic is not)."""
    if node.dtype != np.dtype(bool):
        return ir_type(node.dtype)
    values = value_dtype(i.dtype for i in node.inputs)
    return ir_type(np.float32 if values == np.dtype(bool) else values)


def element_function(ctx: KernelContext, node: Node):
    """body(builder, input elements) -> output element, for an elementwise op or a cast.

    Shared by the host loops here and the GPU kernels (backends/cuda)."""
    out_ty = ir_type(node.dtype)
    in_bool = [i.dtype == np.dtype(bool) for i in node.inputs]
    in_tys = [ir_type(i.dtype) for i in node.inputs]
    if node.op.name == "cast":
        return lambda b, v: convert(b, v[0], in_tys[0], out_ty, src_bool=in_bool[0])
    expr = node.op.expr(node.attrs)
    cty = compute_type(node)
    symbols = [E.sym_input(i) for i in range(len(node.inputs))]

    def body(b: ir.IRBuilder, values):
        env = {s: convert(b, v, t, cty, src_bool=flag)
               for s, v, t, flag in zip(symbols, values, in_tys, in_bool)}
        result = ExprEmitter(b, ctx.module, cty, ctx.gen.math).emit(expr, env)
        if result.type == I1:
            return b.zext(result, I8) if out_ty == I8 else convert(b, result, I1, out_ty)
        return convert(b, result, cty, out_ty)

    return body
