"""Elementwise kernels: every named elementwise op, fused `elemwise` groups, and casts.

The loop nest is derived from the broadcasting pattern, which is static (symbolic dims never
broadcast): adjacent axes on which every input is either present or broadcast the same way
are collapsed into one loop, so `(N, 32) + (32,)` is two loops and `(N, 32) * (N, 32)` is one.
The loop body lives in its own function whose pointer arguments are `noalias` when the memory
plan gives them distinct buffers; the innermost loop reads inputs at stride 0 or 1, which the
loop vectorizer widens.
"""

from __future__ import annotations

from llvmlite import ir

from graphc.ir.node import Node
from graphc.ops import REGISTRY

from ..kernelgen.elementwise import element_function
from ..kernelgen.irutil import (
    I64,
    PTR,
    VOID,
    i64,
    ir_type,
    is_float_type,
    loops,
    product,
)
from ..kernelgen.program import KernelContext
from ..kernelgen.registry import lowering


def broadcast_groups(out_shape, in_shapes) -> list[tuple[list[int], tuple[bool, ...]]]:
    """Collapse output axes into groups with one broadcast pattern each.

    Returns [(output axes of the group, per-input "is broadcast" flags)]. Axes of static size 1
    are dropped (they loop once).
    """
    n = len(out_shape)
    groups: list[tuple[list[int], tuple[bool, ...]]] = []
    for a, d in enumerate(out_shape):
        if isinstance(d, int) and d == 1:
            continue
        pattern = []
        for shape in in_shapes:
            j = a - (n - len(shape))
            pattern.append(j < 0 or (isinstance(shape[j], int) and shape[j] == 1))
        pattern = tuple(pattern)
        if groups and groups[-1][1] == pattern:
            groups[-1][0].append(a)
        else:
            groups.append(([a], pattern))
    return groups


def emit_elementwise_loop(ctx: KernelContext, inputs: list[Node], body,
                          out_node: Node | None = None, suffix: str = "loop") -> None:
    """Generate `out[i] = body(b, loaded input values...)` over the broadcast of `inputs`.

    `body(builder, values)` gets each input's element (loaded, in its storage type) and returns
    the output element in the output's storage type. 0-d constants are passed as immediates.
    """
    out = out_node or ctx.node
    out_ty = ir_type(out.dtype)
    immediates: dict[int, ir.Value] = {}
    pointered: list[int] = []
    for k, node in enumerate(inputs):
        if node.op.name == "constant" and node.attrs["value"].array.ndim == 0:
            value = node.attrs["value"].array.item()
            ty = ir_type(node.dtype)
            immediates[k] = ir.Constant(ty, float(value) if is_float_type(ty) else int(value))
        else:
            pointered.append(k)
    groups = broadcast_groups(out.shape, [inputs[k].shape for k in pointered])
    sizes = [product(ctx.b, [ctx.dim(out.shape[a]) for a in axes]) for axes, _ in groups]

    # the loop function: (out, inputs..., sizes...) with noalias where buffers are distinct
    arg_nodes = [out] + [inputs[k] for k in pointered]
    slots = [ctx.layout.slot_of[n.uid] for n in arg_nodes]
    fnty = ir.FunctionType(VOID, [PTR] * len(arg_nodes) + [I64] * len(sizes))
    fn = ir.Function(ctx.module, fnty, name=f"{ctx.name}.{suffix}")
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    for i, arg in enumerate(fn.args[: len(arg_nodes)]):
        arg.name = ctx.gen.value_name(arg_nodes[i])
        if slots.count(slots[i]) == 1:
            arg.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    size_args = list(fn.args[len(arg_nodes):])
    # strides: an input's stride for a group is the product of the later groups it spans
    strides = []
    for j in range(len(pointered)):
        acc: ir.Value = i64(1)
        per_group = []
        for g in reversed(range(len(groups))):
            broadcast = groups[g][1][j]
            per_group.append(i64(0) if broadcast else acc)
            if not broadcast:
                acc = product(b, [acc, size_args[g]])
        strides.append(list(reversed(per_group)))
    out_strides, acc = [], i64(1)
    for g in reversed(range(len(groups))):
        out_strides.append(acc)
        acc = product(b, [acc, size_args[g]])
    out_strides.reverse()
    with loops(b, size_args, "i") as idx:
        values = dict(immediates)
        for j, k in enumerate(pointered):
            ty = ir_type(inputs[k].dtype)
            offset = _offset(b, idx, strides[j])
            ptr = b.gep(fn.args[1 + j], [offset], inbounds=True, source_etype=ty)
            values[k] = b.load(ptr, typ=ty)
        result = body(b, [values[k] for k in range(len(inputs))])
        optr = b.gep(fn.args[0], [_offset(b, idx, out_strides)], inbounds=True,
                     source_etype=out_ty)
        b.store(result, optr)
    b.ret_void()
    # The same loop for another node's buffers is one function, inlined into each kernel so
    # that the kernel's static sizes specialize it (a shared, out-of-line loop ran the
    # autoencoder's sigmoid layers 2.5x slower).
    fn.attributes.add("alwaysinline")
    fn = ctx.gen.intern(fn)
    ctx.b.call(fn, [ctx.ptr(n) for n in arg_nodes] + sizes)


def _offset(b, idx, strides) -> ir.Value:
    out: ir.Value = i64(0)
    for i, s in zip(idx, strides):
        if isinstance(s, ir.Constant) and s.constant == 0:
            continue
        term = i if (isinstance(s, ir.Constant) and s.constant == 1) else b.mul(i, s)
        out = term if (isinstance(out, ir.Constant) and out.constant == 0) else b.add(out, term)
    return out


@lowering(*[name for name, op in REGISTRY.items() if op.is_elementwise], "cast", target="llvm")
def elementwise(ctx: KernelContext) -> None:
    emit_elementwise_loop(ctx, list(ctx.node.inputs), element_function(ctx, ctx.node))
