"""What the host's convolution tiles share (backends/llvm/direct_conv.py along NCHW rows,
backends/llvm/channels_last_conv.py on a channels-last copy): the buffers of a step as
pointers and strides, the vector type and fused multiply-add of a tile, the module's one
copy of a tile function, and a loop LLVM leaves rolled."""

from __future__ import annotations

from llvmlite import ir

from graphc.ops import loops as L

from ..kernelgen.irutil import (
    F32,
    I64,
    PTR,
    VOID,
    contiguous_strides,
    i64,
    ir_type,
    linear_index,
    vector_fma,
)
from ..kernelgen.irutil import loop as counted_loop
from ..kernelgen.nest import buffer_slot

__all__ = ["StepBuffers", "fma_into", "rolled_loop", "shared_function", "type_name", "vector_kit",
           "while_present"]


def rolled_loop(b, count, name, start=None):
    """A counted loop LLVM leaves rolled: the tiles are unrolled by hand already, and
    unrolling the loops around them cost 12-15% of cnn32's compile time for no faster step
    (measured side by side)."""
    return counted_loop(b, count, name, start=start, unroll=False)


def vector_kit(module: ir.Module, ty: ir.Type):
    """The vector type of a tile, its lane count and its fused multiply-add."""
    lanes = L.DIRECT_VECTOR_BYTES // (4 if ty == F32 else 8)
    vec = ir.VectorType(ty, lanes)
    return vec, lanes, vector_fma(module, vec)


def type_name(ty: ir.Type) -> str:
    return "f32" if ty == F32 else "f64"


def shared_function(module: ir.Module, name: str, labels: list[str], noalias: bool = False):
    """The module's function `name`(three pointers, then i64 `labels`), and whether its body
    is still to be written. One copy a module, not inlined: every convolution whose tile has
    the same shape calls it, so LLVM optimizes and compiles it once (cnn32's step has five
    such convolutions). `noalias`: the three buffers never overlap."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing, False
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR] * 3 + [I64] * (len(labels) - 3)),
                     name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    fn.attributes.add("nounwind")
    for arg, label in zip(fn.args, labels):
        arg.name = label
    if noalias:
        for arg in fn.args[:3]:
            arg.add_attribute("noalias")
    return fn, True


class StepBuffers:
    """A tile step's buffers `names` in the part function `k` of a kernel: each one's
    pointer and strides (every buffer of such a step has its shape, all of it known but the
    batch)."""

    def __init__(self, k, step, names) -> None:
        self.k, self.b, self.step, self.geo = k, k.b, step, step.geometry
        self.ty = ir_type(k.node.dtype)
        self.ptrs = {name: k.slot_ptr(buffer_slot(k.gen, k.node, step.buffers[name]), name)
                     for name in names}
        self.strides = {name: contiguous_strides(k.b, [i64(1)] + [
            i64(int(d)) for d in step.buffers[name].shape[1:]]) for name in names}

    def at(self, name: str, *index):
        """The element offset of `index` (values or ints) in buffer `name`."""
        return linear_index(self.b, [i64(i) if isinstance(i, int) else i for i in index],
                            self.strides[name])

    def pointer(self, name: str, offset):
        return self.b.gep(self.ptrs[name], [offset], source_etype=self.ty)


def fma_into(b: ir.IRBuilder, fma, slots, scale, vectors) -> None:
    """slots[v] += scale * vectors[v] for each v: a row of a tile's accumulators (stack slots
    LLVM keeps in registers) and the vectors one broadcast value multiplies."""
    for slot, vector in zip(slots, vectors):
        b.store(b.call(fma, [scale, vector, b.load(slot, typ=vector.type)]), slot)


def while_present(b: ir.IRBuilder, fn: ir.Function, count: int, present, body,
                  name: str = "store", done: str = "stored") -> None:
    """body(t) for t = 0, 1, ... count - 1 while t < `present` (an i64 value, at least 1): a
    chain of tests that leaves at the first t past it (blocks `name`1, `name`2, ... and
    `done`), as a tile stores only the channels that exist."""
    done = fn.append_basic_block(done)
    for t in range(count):
        if t:
            more = fn.append_basic_block(f"{name}{t}")
            b.cbranch(b.icmp_signed("<", i64(t), present), more, done)
            b.position_at_end(more)
        body(t)
    b.branch(done)
    b.position_at_end(done)
