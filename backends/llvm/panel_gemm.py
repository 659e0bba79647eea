"""Mid-sized float products in graphc's own register tiles on every core, where the CPU has
full-width AVX-512: column panels of C split between threads.

Why not the BLAS: on a CPU whose vectors are 64 bytes wide and run at full width (a Zen 5,
`graphc.ops.loops.direct_vector_bytes`), the BLAS a user has may not use them (OpenBLAS
under ``OPENBLAS_CORETYPE=Haswell`` runs its AVX2 kernels), and at an MLP's sizes its
threads share one packed panel that costs them their second core's worth (docs/
performance.md, "The fifteenth session"). The tiles here hold 6 rows by two 64-byte vectors
of C in registers (twelve accumulators: enough to cover two multiply-add pipes' latency),
as the small products' tiles do with 32-byte vectors (`kernels_linalg._tiled_gemm_function`);
six-row tiles reach 230-250 GFLOP/s on one core of a Zen 5 (OpenBLAS's Haswell kernels:
120-130).

    for each column panel j0 (PANEL_VECTORS vectors of C's row) in [lo, hi):   (a thread's)
      for each block of KC steps of the sum:
        packed = op(B)[block, panel]          (contiguous: one row of the panel a step, from
                                               B's rows or, B transposed, its columns in
                                               16x16 blocks transposed in registers)
        for each tile of 6 rows i0 (the last one's rows past m computed, never stored):
          acc = 0 on the first block, else the tile of C so far
          for p in block:  acc[r][v] += op(A)[i0 + r, p] * packed[p, v]   (a broadcast)
          C tile = acc        (an SGD update: C + alpha * acc, on a one-block sum only)

op(A) is read where it is: along its rows, or with A transposed, six neighbours of one of
its rows a step (copying it into rows first, on one thread before the region, cost 5-12%
of a weight gradient's product). Every element of C is one sum over k in order, whether
it spans one block or several (a block's partial sum goes through C as the float it is):
the same bits on any thread count. The choice is a fixed rule of the CPU and the sizes
(`possible`, `fits`), never a timing.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

from llvmlite import ir

from graphc.ops import loops as L

from ..kernelgen.irutil import F32, I32, I64, PTR, VOID, entry_alloca, i64, loop, splat
from .kernels_linalg import TILED_GEMM_BATCH, transpose_block
from .register_tiles import vector_kit

__all__ = ["KC", "PANEL_VECTORS", "emit", "fits", "possible", "vector_lanes"]

#: Vectors of C's row in a panel (the tile's width): two, so a tile's step is two loads of
#: the packed panel and one broadcast of A per row for twelve multiply-adds.
PANEL_VECTORS = 2
#: Steps of the sum whose panel is packed at once: 256 rows of 128 bytes (a float panel) is
#: 32 KiB, which stays in the first-level cache (48 KiB on a Zen 5) beside A's rows.
KC = 256
#: From this many multiply-adds: a region on every core pays for its start (BLAS goes on
#: two threads from 2^19; the tiles do 2^21 in about 17 µs on one core of a Zen 5).
MIN_MACS = 1 << 21
#: At most this many bytes of A: every panel reads the whole of op(A), which must stay in
#: the second-level cache (1 MiB a core on a Zen 5) to be read at its speed; larger products
#: need blocking of A's rows too (a BLAS's), and go to the BLAS.
MAX_A_BYTES = 512 * 1024
#: Rows of a tile
TILE_ROWS = 6


def _itemsize(ty: ir.Type) -> int:
    return 4 if ty == F32 else 8


def vector_lanes(ty: ir.Type) -> int:
    """Elements of a 64-byte vector of `ty` (the panels run only where the tiles' vectors
    are 64 bytes: `possible`)."""
    return 64 // _itemsize(ty)


def panel_width(ty: ir.Type) -> int:
    return PANEL_VECTORS * vector_lanes(ty)


def possible(ty: ir.Type, known: list, update: bool) -> bool:
    """Can a 2-d product of these sizes (`known`: m, n, k as ints, None where only the run
    time knows) take the panels for some value of the unknown ones? Only on a CPU with
    full-width 64-byte vectors; n a whole number of vectors (no column is computed twice, so
    a panel is one thread's and an update is applied once); at least one tile of rows; op(A)
    in MAX_A_BYTES; MIN_MACS multiply-adds; and for an SGD update, a sum of one block (the
    update adds alpha times the whole sum to C's old value)."""
    if L.direct_vector_bytes() != 64:
        return False
    m, n, k = known
    lanes, size = vector_lanes(ty), _itemsize(ty)
    if n is not None and (n % lanes or n < lanes):
        return False
    if m is not None and m < TILE_ROWS:
        return False
    if update and k is not None and k > KC:
        return False
    if m is not None and k is not None and m * k * size > MAX_A_BYTES:
        return False
    # a size known only at run time (a batch) counts as TILED_GEMM_BATCH (64): a product too
    # small even then never compiles the panels' branch (the tiny MLP's step: 4x16 layers)
    if math.prod(TILED_GEMM_BATCH if d is None else d for d in known) < MIN_MACS:
        return False
    return True


def fits(b: ir.IRBuilder, ty: ir.Type, m, n, k, update: bool) -> ir.Value:
    """The run-time test of `possible`'s rule on the sizes' values (i1), and of the threads:
    the regions may use as many as the BLAS's products (`threads.blas_team`). Where they are
    kept on one thread while the BLAS has more (libgomp's workers would spin: a user's
    OMP_WAIT_POLICY=ACTIVE, PyTorch imported first), the BLAS's threads do the product."""
    from . import threads

    lanes = i64(vector_lanes(ty))
    size = i64(_itemsize(ty))
    tests = [b.icmp_signed("==", b.srem(n, lanes), i64(0)),
             b.icmp_signed(">=", n, lanes),
             b.icmp_signed(">=", m, i64(TILE_ROWS)),
             b.icmp_signed("<=", b.mul(b.mul(m, k), size), i64(MAX_A_BYTES)),
             b.icmp_signed(">=", b.mul(b.mul(m, n), k), i64(MIN_MACS))]
    if update:
        tests.append(b.icmp_signed("<=", k, i64(KC)))
    module = b.module
    team = b.load(threads.thread_count(module), typ=I32)
    tests.append(b.icmp_signed(">=", team, b.load(threads.blas_team(module), typ=I32)))
    out = tests[0]
    for t in tests[1:]:
        out = b.and_(out, t)
    return out


def emit(ctx, ta: bool, tb: bool, alpha: float | None) -> None:
    """C = op(A) @ op(B) (or, `alpha` given, C += alpha * op(A) @ op(B)) for the 2-d matmul
    of kernel `ctx`, its panels split between threads where the work is worth a region
    (`run_parallel`), each thread packing into a panel on its own stack."""
    from . import threads

    ty = ctx.ty()
    width = panel_width(ty)
    slot = ctx.layout.new_slot()  # private: on each calling thread's stack
    part = ctx.host_part({slot: KC * width * _itemsize(ty)})
    pb = part.b
    lo, hi = part.bounds
    m, n, k = _sizes(part, ta)
    args = [part.out_ptr, part.in_ptr(0), part.in_ptr(1), part.slot_ptr(slot, "packed"),
            m, n, k, lo, hi]
    n_known = ctx.node.shape[-1]
    halves = not (isinstance(n_known, int) and n_known % width == 0)
    fn = _panels_function(ctx.module, ty, ta, tb, alpha is not None, halves)
    pb.call(fn, args + ([ir.Constant(ty, alpha)] if alpha is not None else []))
    part.finish()
    b = ctx.b
    m, n, k = _sizes(ctx, ta)  # (again: the values of this function, not the part's)
    panels = b.sdiv(b.add(n, i64(width - 1)), i64(width))
    # every multiply-add is a point's worth over MACS_PER_POINT, as a convolution's
    ctx.run_parallel(part, [panels, m, k, i64(width)], (1, threads.MACS_PER_POINT))


def _sizes(k, ta: bool) -> tuple:
    """m, n and k of the matmul of kernel (or part) `k`, as its i64 values."""
    m, n = k.shape()[-2:]
    a_shape = k.shape(k.node.inputs[0])
    return m, n, a_shape[-2] if ta else a_shape[-1]


def _panels_function(module: ir.Module, ty: ir.Type, ta: bool, tb: bool, update: bool,
                     halves: bool) -> ir.Function:
    """The module's one copy of ``graphc.gemm_panels.<ty>.<ta tb>[.update][.halves]``(C, A,
    B, packed, m, n, k, lo, hi[, alpha]), ``<ta tb>`` as ``nn``, ``tn``, ``nt`` or ``tt``:
    column panels lo..hi of C; A (m x k) or, `ta`, (k x m); B (k x n) or, `tb`, (n x k).
    `halves`: n may end in a panel of one vector (else every panel is whole: half the code,
    where n is known to be a multiple of the panel's width)."""
    name = (f"graphc.gemm_panels.{ty}.{'t' if ta else 'n'}{'t' if tb else 'n'}"
            + (".update" if update else "") + (".halves" if halves else ""))
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    labels = ["C", "A", "B", "packed", "m", "n", "k", "lo", "hi"]
    types = [PTR] * 4 + [I64] * 5 + ([ty] if update else [])
    fn = ir.Function(module, ir.FunctionType(VOID, types), name=name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    fn.attributes.add("noinline")
    for arg, label in zip(fn.args, labels + ["alpha"]):
        arg.name = label
    for arg in fn.args[:4]:
        arg.add_attribute("noalias")
    _PanelBody(fn, ty, ta, tb, update, halves).emit()
    return fn


class _PanelBody:
    def __init__(self, fn: ir.Function, ty: ir.Type, ta: bool, tb: bool, update: bool,
                 halves: bool) -> None:
        self.ty, self.ta, self.tb, self.update, self.halves = ty, ta, tb, update, halves
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.size = _itemsize(ty)
        self.vec, self.lanes, self.fma = vector_kit(fn.module, ty)  # (the convolution tiles')
        self.width = PANEL_VECTORS * self.lanes
        (self.c, self.a, self.bm, self.packed, self.m, self.n, self.k, self.lo,
         self.hi) = fn.args[:9]
        self.alpha = splat(self.b, fn.args[9], self.vec) if update else None
        self.accs = [[entry_alloca(self.b, self.vec, f"acc{r}.{v}")
                      for v in range(PANEL_VECTORS)] for r in range(TILE_ROWS)]

    def at(self, ptr, index):
        return self.b.gep(ptr, [index], inbounds=True, source_etype=self.ty)

    def vload(self, ptr, index, align=None):
        v = self.b.load(self.at(ptr, index), typ=self.vec)
        v.align = align or self.size
        return v

    def vstore(self, value, ptr, index, align=None) -> None:
        st = self.b.store(value, self.at(ptr, index))
        st.align = align or self.size

    def emit(self) -> None:
        b = self.b
        with loop(b, self.hi, "panel", start=self.lo, unroll=False) as panel:
            j0 = b.mul(panel, i64(self.width))
            whole = b.icmp_signed("<=", b.add(j0, i64(self.width)), self.n)
            blocks = b.sdiv(b.add(self.k, i64(KC - 1)), i64(KC))
            with loop(b, blocks, "block", unroll=False) as block:
                p0 = b.mul(block, i64(KC))
                left = b.sub(self.k, p0)
                kc = b.select(b.icmp_signed("<", left, i64(KC)), left, i64(KC))
                first = b.icmp_signed("==", block, i64(0))
                if self.halves:
                    with b.if_else(whole) as (full, half):
                        with full:
                            self.panel(j0, p0, kc, first, PANEL_VECTORS)
                        with half:  # the last panel of n = an odd number of vectors
                            self.panel(j0, p0, kc, first, 1)
                else:
                    self.panel(j0, p0, kc, first, PANEL_VECTORS)
        b.ret_void()

    def panel(self, j0, p0, kc, first, vectors: int) -> None:
        self.pack(j0, p0, kc, vectors)
        self.row_tiles(j0, p0, kc, first, vectors)

    def pack(self, j0, p0, kc, vectors: int) -> None:
        """packed[p, :] = op(B)[p0 + p, j0 : j0 + vectors * lanes] for p < kc."""
        b = self.b
        if not self.tb:
            with loop(b, kc, "pack", unroll=False) as p:
                row = b.add(b.mul(b.add(p0, p), self.n), j0)
                for v in range(vectors):
                    self.vstore(self.vload(self.bm, b.add(row, i64(v * self.lanes))),
                                self.packed, b.add(b.mul(p, i64(self.width)),
                                                   i64(v * self.lanes)), align=64)
            return
        # B is (n x k): the panel's columns are B's rows j0.., read along the sum in square
        # blocks of a vector's lanes, each transposed in registers (one element at a time,
        # a 128x512x512 product ran at 196 GFLOP/s on two threads of a Zen 5, against 360
        # with B not transposed); the steps past the last whole block one by one
        lanes = self.lanes
        whole = b.mul(b.sdiv(kc, i64(lanes)), i64(lanes))
        with loop(b, b.sdiv(kc, i64(lanes)), "pack_block", unroll=False) as q:
            p = b.add(p0, b.mul(q, i64(lanes)))
            for v in range(vectors):
                rows = [self.vload(self.bm, b.add(b.mul(b.add(j0, i64(v * lanes + i)), self.k),
                                                  p)) for i in range(lanes)]
                for i, column in enumerate(transpose_block(b, rows)):
                    step = b.add(b.mul(q, i64(lanes)), i64(i))
                    self.vstore(column, self.packed,
                                b.add(b.mul(step, i64(self.width)), i64(v * lanes)), align=64)
        with loop(b, b.sub(kc, whole), "pack_rest", unroll=False) as r:
            step = b.add(whole, r)
            with loop(b, i64(vectors * lanes), "pack_col") as j:
                value = b.load(self.at(self.bm, b.add(b.mul(b.add(j0, j), self.k),
                                                      b.add(p0, step))), typ=self.ty)
                b.store(value, self.at(self.packed, b.add(b.mul(step, i64(self.width)), j)))

    def row_tiles(self, j0, p0, kc, first, vectors: int) -> None:
        """Tiles of TILE_ROWS rows from row 0; the last one's rows past m read A's and C's
        last row and store nothing. Tiles never overlap: a row's partial sum is in C
        between blocks, and a row computed by two tiles would add its block twice."""
        b, m, n = self.b, self.m, self.n
        rows = TILE_ROWS
        zero = ir.Constant(self.vec, [0.0] * self.lanes)
        count = b.sdiv(b.add(m, i64(rows - 1)), i64(rows))
        with loop(b, count, f"tile.{vectors}", unroll=False) as t:
            i0 = b.mul(t, i64(rows))
            last = b.sub(m, i64(1))
            present = [b.icmp_signed("<", b.add(i0, i64(r)), m) for r in range(rows)]
            row = [b.select(present[r], b.add(i0, i64(r)), last) for r in range(rows)]
            crows = [b.add(b.mul(row[r], n), j0) for r in range(rows)]
            with b.if_else(first) as (fresh, later):
                with fresh:
                    for r in range(rows):
                        for v in range(vectors):
                            b.store(zero, self.accs[r][v])
                with later:  # the sum so far, as the float it is
                    for r in range(rows):
                        for v in range(vectors):
                            offset = b.add(crows[r], i64(v * self.lanes))
                            b.store(self.vload(self.c, offset), self.accs[r][v])
            if self.ta:
                a_rows = [b.add(b.mul(p0, m), row[r]) for r in range(rows)]
            else:
                a_rows = [b.add(b.mul(row[r], self.k), p0) for r in range(rows)]
            with loop(b, kc, f"p{rows}.{vectors}", unroll=False) as p:
                base = b.mul(p, i64(self.width))
                bv = [self.vload(self.packed, b.add(base, i64(v * self.lanes)), align=64)
                      for v in range(vectors)]
                for r in range(rows):
                    step = b.mul(p, m) if self.ta else p  # (A transposed: a row a step)
                    a = b.load(self.at(self.a, b.add(a_rows[r], step)), typ=self.ty)
                    a = splat(b, a, self.vec)
                    for v in range(vectors):
                        slot = self.accs[r][v]
                        b.store(b.call(self.fma, [a, bv[v], b.load(slot, typ=self.vec)]),
                                slot)
            for r in range(rows):
                with b.if_then(present[r]) if r else nullcontext():  # (row 0 is present)
                    for v in range(vectors):
                        offset = b.add(crows[r], i64(v * self.lanes))
                        value = b.load(self.accs[r][v], typ=self.vec)
                        if self.update:  # (one block only: `possible` and `fits`)
                            value = b.fadd(b.fmul(self.alpha, value),
                                           self.vload(self.c, offset))
                        self.vstore(value, self.c, offset)
