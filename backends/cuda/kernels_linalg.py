"""Matrix products on the GPU: a shared-memory tiled GEMM (matmul, and the Gemm steps of the
op descriptions: a convolution's product of its columns).

The tiled kernel is written as *phases* separated by barriers:

    init (acc = 0)
    for each K tile:  load (each thread copies one A and one B element into shared tiles)
                      -- barrier --
                      compute (acc += row of A tile . column of B tile)
                      -- barrier --
    store (C = acc, or C += acc)

On a GPU the kernel calls the phases in that order with `bar.sync`. The emulator runs each
phase for every thread of a block before starting the next, with the shared tiles in a
per-block buffer and each thread's accumulator in its own slot: exactly the semantics of the
barriers, on one CPU thread. The phase functions are the same IR in both cases.
"""

from __future__ import annotations

from llvmlite import ir

from graphc.ir.node import Node
from graphc.ir.shapes import prod

from ..kernelgen.irutil import (
    F32,
    I8,
    I64,
    PTR,
    VOID,
    const,
    i64,
    is_float_type,
    load,
    loop,
    store,
)
from ..kernelgen.registry import lowering
from .codegen import GpuCodegen, GpuKernel, GpuNode

TILE = 16
PHASES = ("init", "load", "compute", "store")


def _phase_functions(module: ir.Module, ty: ir.Type, ta: bool, tb: bool, accumulate: bool
                     ) -> dict[str, ir.Function]:
    """The four phases of one GEMM variant (shared by every launch of that variant).

    Signature: (A, B, C, m, n, k, kt, shared, private, tx, ty, bx, by) -> void.
    """
    kind = ("f32" if ty == F32 else "f64") if is_float_type(ty) else f"i{ty.width}"
    tag = f"{kind}.{'t' if ta else 'n'}{'t' if tb else 'n'}{'.acc' if accumulate else ''}"
    flt = is_float_type(ty)  # integers (int32, int64) wrap as NumPy's products and sums do
    logical = ty == I8  # bools (0/1 bytes): NumPy's product is any(a and b)

    def add(x, y):
        return b.fadd(x, y) if flt else b.or_(x, y) if logical else b.add(x, y)

    def mul(x, y):
        return b.fmul(x, y) if flt else b.and_(x, y) if logical else b.mul(x, y)

    names = {p: f"graphc.gemm.{tag}.{p}" for p in PHASES}
    if names["init"] in module.globals:
        return {p: module.globals[n] for p, n in names.items()}
    sig = ir.FunctionType(VOID, [PTR, PTR, PTR, I64, I64, I64, I64, PTR, PTR, I64, I64, I64,
                                 I64])
    fns = {}
    for phase, name in names.items():
        fn = ir.Function(module, sig, name=name)
        fn.linkage = "internal"
        fn.attributes.add("alwaysinline")
        fn.attributes.add("nounwind")
        for arg, label in zip(fn.args, ("A", "B", "C", "m", "n", "k", "kt", "shared", "private",
                                        "tx", "ty", "bx", "by")):
            arg.name = label
        fns[phase] = fn
    T = i64(TILE)
    b = None  # the builder of the phase being written (add and mul use it)

    def body(phase):
        nonlocal b
        fn = fns[phase]
        A, B, C, m, n, k, kt, shared, private, tx, tyi, bx, by = fn.args
        b = ir.IRBuilder(fn.append_basic_block())
        row = b.add(b.mul(by, T), tyi)
        col = b.add(b.mul(bx, T), tx)
        tile_a = shared
        tile_b = b.gep(shared, [i64(TILE * TILE)], source_etype=ty)
        slot = b.add(b.mul(tyi, T), tx)
        if phase == "init":
            store(b, const(ty, 0), private, ty, i64(0))
        elif phase == "load":
            kk = b.add(b.mul(kt, T), tx)  # A tile: row `row`, column kk
            ok = b.and_(b.icmp_signed("<", row, m), b.icmp_signed("<", kk, k))
            a_idx = b.add(b.mul(kk, m), row) if ta else b.add(b.mul(row, k), kk)
            store(b, _guarded_load(b, A, ty, a_idx, ok), tile_a, ty, slot)
            kr = b.add(b.mul(kt, T), tyi)  # B tile: row kr, column `col`
            ok = b.and_(b.icmp_signed("<", kr, k), b.icmp_signed("<", col, n))
            b_idx = b.add(b.mul(col, k), kr) if tb else b.add(b.mul(kr, n), col)
            store(b, _guarded_load(b, B, ty, b_idx, ok), tile_b, ty, slot)
        elif phase == "compute":
            acc = load(b, private, ty, i64(0))
            total = acc
            for j in range(TILE):  # unrolled dot product of a tile row and a tile column
                a = load(b, tile_a, ty, b.add(b.mul(tyi, T), i64(j)))
                c = load(b, tile_b, ty, b.add(i64(j * TILE), tx))
                total = add(total, mul(a, c))
            store(b, total, private, ty, i64(0))
        else:
            ok = b.and_(b.icmp_signed("<", row, m), b.icmp_signed("<", col, n))
            with b.if_then(ok):
                idx = b.add(b.mul(row, n), col)
                value = load(b, private, ty, i64(0))
                if accumulate:
                    value = add(load(b, C, ty, idx), value)
                store(b, value, C, ty, idx)
        b.ret_void()

    for phase in PHASES:
        body(phase)
    return fns


def _guarded_load(b: ir.IRBuilder, base, ty, index, ok) -> ir.Value:
    safe = b.select(ok, index, i64(0))
    return b.select(ok, load(b, base, ty, safe), const(ty, 0))


def emit_gemm(gen: GpuCodegen, node: Node, k: int, suffix: str, operands, m, n, kdim, ta: bool,
              tb: bool, accumulate: bool = False, batch=1, host_slots=None) -> None:
    """A tiled GEMM launch: C = op(A) @ op(B) (+ C).

    `operands(ctx, z) -> (A, B, C)` gives the three pointers for batch index z (an i64 value).
    m, n, kdim, batch are int or sympy size expressions. `host_slots` = (A, B, C) slots when
    the operands are whole buffers (no batch offsets): the device runtime may then call cuBLAS
    instead of launching the kernel.
    """
    ctx = GpuKernel(gen, node, k, suffix=suffix, kind="gemm")
    # (cuBLAS only for float32/float64: an integer product is always the kernel below)
    ctx.launch.gemm = dict(m=m, n=n, k=kdim, batch=batch, ta=ta, tb=tb, accumulate=accumulate,
                           slots=host_slots if node.dtype.kind == "f" else None,
                           itemsize=node.dtype.itemsize)
    b = ctx.b
    ty = ctx.ty()
    phases = _phase_functions(gen.module, ty, ta, tb, accumulate)
    mv, nv, kv = ctx.dim(m), ctx.dim(n), ctx.dim(kdim)
    tiles = b.udiv(b.add(kv, i64(TILE - 1)), i64(TILE))
    if gen.target == "ptx":
        shared_g = ir.GlobalVariable(gen.module, ir.ArrayType(ty, 2 * TILE * TILE),
                                     name=f"{ctx.name}.tiles", addrspace=3)
        shared_g.linkage = "internal"
        shared_g.align = 16
        shared = b.addrspacecast(shared_g, PTR)
        private = b.alloca(ty, name="acc")
        tx, tyi = ctx.special("tid", "x"), ctx.special("tid", "y")
        bx, by, z = ctx.special("ctaid", "x"), ctx.special("ctaid", "y"), ctx.special("ctaid", "z")
        A, B, C = operands(ctx, z)
        args = [A, B, C, mv, nv, kv]
        barrier = ir.Function(gen.module, ir.FunctionType(VOID, []), name="llvm.nvvm.barrier0") \
            if "llvm.nvvm.barrier0" not in gen.module.globals else \
            gen.module.globals["llvm.nvvm.barrier0"]
        b.call(phases["init"], args + [i64(0), shared, private, tx, tyi, bx, by])
        with loop(b, tiles, "kt") as kt:
            b.call(phases["load"], args + [kt, shared, private, tx, tyi, bx, by])
            b.call(barrier, [])
            b.call(phases["compute"], args + [kt, shared, private, tx, tyi, bx, by])
            b.call(barrier, [])
        b.call(phases["store"], args + [i64(0), shared, private, tx, tyi, bx, by])
        ctx.finish()
        return
    # emulation: this kernel is the driver for one block (the host loops over blocks);
    # every phase runs for all TILE x TILE threads before the next one starts
    threads = TILE * TILE
    with b.goto_entry_block():
        shared = b.alloca(ty, size=2 * threads, name="tiles")
        private = b.alloca(ty, size=threads, name="accumulators")
    bx, by, z = ctx.special("ctaid", "x"), ctx.special("ctaid", "y"), ctx.special("ctaid", "z")
    A, B, C = operands(ctx, z)
    args = [A, B, C, mv, nv, kv]

    def all_threads(phase, kt):
        with loop(b, i64(TILE), "ty") as tyi, loop(b, i64(TILE), "tx") as tx:
            mine = b.gep(private, [b.add(b.mul(tyi, i64(TILE)), tx)], source_etype=ty)
            b.call(phases[phase], args + [kt, shared, mine, tx, tyi, bx, by])

    all_threads("init", i64(0))
    with loop(b, tiles, "kt") as kt:
        all_threads("load", kt)
        all_threads("compute", kt)
    all_threads("store", i64(0))
    ctx.finish()


def unravel(b: ir.IRBuilder, flat: ir.Value, dims: list[ir.Value]) -> list[ir.Value]:
    """Coordinates of a flat (row-major) index."""
    coords = []
    rem = flat
    for d in reversed(dims[1:]):
        coords.append(b.urem(rem, d))
        rem = b.udiv(rem, d)
    coords.append(rem)
    return list(reversed(coords))


def _batch_offsets(ctx: GpuKernel, node: Node, z):
    """Element offsets of A, B and C for flattened batch index z (broadcast batch axes)."""
    b = ctx.b
    a_node, b_node = node.inputs
    batch = list(node.shape[:-2])
    coords = unravel(b, z, ctx.dims(batch)) if batch else []
    offsets = []
    for operand in (a_node, b_node, node):
        shape = ctx.shape(operand)
        mat = ctx.numel_of(shape[-2:])
        lead = len(batch) - (operand.ndim - 2)
        off: ir.Value = i64(0)
        stride = mat
        for a in reversed(range(operand.ndim - 2)):
            stretched = operand.shape[a] == 1 and node.shape[a + lead] != 1
            if not stretched:
                off = b.add(off, b.mul(coords[a + lead], stride))
            stride = b.mul(stride, shape[a])
        offsets.append(off)
    return offsets


@lowering("matmul", target="cuda")
def matmul(site: GpuNode) -> None:
    gen, node, k = site.gen, site.node, site.position
    a_node, b_node = node.inputs
    ta, tb = node.attrs["ta"], node.attrs["tb"]
    m, n = node.shape[-2], node.shape[-1]
    kdim = a_node.shape[-2] if ta else a_node.shape[-1]
    batch = prod(node.shape[:-2]) if node.ndim > 2 else 1

    def operands(ctx, z):
        ty = ctx.ty()
        oa, ob, oc = _batch_offsets(ctx, node, z)
        return (ctx.b.gep(ctx.in_ptr(0), [oa], source_etype=ty),
                ctx.b.gep(ctx.in_ptr(1), [ob], source_etype=ty),
                ctx.b.gep(ctx.out_ptr, [oc], source_etype=ty))

    whole = batch == 1 if isinstance(batch, int) else False
    slots = (_slot_of(gen, a_node), _slot_of(gen, b_node), _slot_of(gen, node)) if whole else None
    emit_gemm(gen, node, k, ".gemm", operands, m, n, kdim, ta, tb, batch=batch, host_slots=slots)


def _slot_of(gen, node):
    return gen.layout.slot_of[node.uid]
