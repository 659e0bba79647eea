"""matmul: BLAS gemm for real work, a plain loop nest for tiny products and integers.

Row-major C = op(A) @ op(B) is column-major C^T = op(B)^T @ op(A)^T, so the Fortran routine
gets (B, A) swapped and the transpose flags go straight into the call: a transposed operand
is never copied. Batched products loop over the (broadcast) batch axes around the call.
"""

from __future__ import annotations

import math

from llvmlite import ir

from ..kernelgen.irutil import (
    F32,
    F64,
    I8,
    I32,
    I64,
    PTR,
    VOID,
    const,
    contiguous_strides,
    declare,
    entry_alloca,
    i64,
    is_float_type,
    load,
    loop,
    loops,
    product,
    splat,
    store,
    unless_empty,
    vector_fma,
)
from ..kernelgen.program import KernelContext
from ..kernelgen.registry import lowering
from .threads import blas_team, external_i32

SMALL_GEMM = 8 * 8 * 8  # below this many multiply-adds, a loop beats the BLAS call overhead
# below this many multiply-adds, BLAS threads cost more than they save. 2^19 (was 2^22):
# an LSTM's per-step products (32x128x512) gain 6-15% on two cores from BLAS's threads;
# the other benchmark steps did not move (round-robin A/B of 2^17, 2^19, 2^22, one run)
THREADED_GEMM = 1 << 19


def gemm_call(ctx: KernelContext, b: ir.IRBuilder, ty: ir.Type, ta: bool, tb: bool, m, n, k,
              a_ptr, lda, b_ptr, ldb, c_ptr, ldc, beta: float, alpha: float = 1.0) -> None:
    """Row-major C[m, n] = alpha * op(A) @ op(B) + beta * C through Fortran sgemm/dgemm."""
    from .blas import blas

    name = "graphc_sgemm" if ty == F32 else "graphc_dgemm"
    fn = declare(ctx.module, name, VOID, [PTR] * 13)
    int_ty = I64 if blas().int_bits == 64 else I32

    def int_arg(v, label):
        slot = entry_alloca(b, int_ty, label)
        b.store(b.trunc(v, int_ty) if int_ty != v.type else v, slot)
        return slot

    def char_arg(flag, label):
        slot = entry_alloca(b, I8, label)
        b.store(ir.Constant(I8, ord("T" if flag else "N")), slot)
        return slot

    def scalar_arg(value, label):
        slot = entry_alloca(b, ty, label)
        b.store(const(ty, value), slot)
        return slot

    def at_least_one(v):
        return b.select(b.icmp_signed("<", v, i64(1)), i64(1), v)

    def call():
        b.call(fn, args)

    args = [char_arg(tb, "transb"), char_arg(ta, "transa"), int_arg(n, "n"), int_arg(m, "m"),
            int_arg(k, "k"), scalar_arg(alpha, "alpha"), b_ptr, int_arg(at_least_one(ldb), "ldb"),
            a_ptr, int_arg(at_least_one(lda), "lda"), scalar_arg(beta, "beta"), c_ptr,
            int_arg(at_least_one(ldc), "ldc")]
    if not blas().local_threads:
        call()
        return
    threads = declare(ctx.module, "graphc_blas_threads", I32, [I32])
    small = b.icmp_signed("<", b.mul(b.mul(m, n), k), i64(THREADED_GEMM))
    with b.if_else(small) as (then, otherwise):
        with then:
            previous = b.call(threads, [ir.Constant(I32, 1)])
            call()
            b.call(threads, [previous])
        with otherwise:
            # The BLAS's own threads, but no more than the user's count (GRAPHC_NUM_THREADS or
            # set_threads, read at every call: threads.blas_team): a step given one thread
            # keeps its products on one too. Never more than the BLAS had: OpenBLAS would
            # start the threads asked.
            previous = b.call(threads, [ir.Constant(I32, 1)])
            team = b.load(blas_team(ctx.module))
            b.call(threads, [b.select(b.icmp_signed("<", team, previous), team, previous)])
            call()
            b.call(threads, [previous])


def blas_to_one_thread_if_workers_spin(module: ir.Module, b: ir.IRBuilder,
                                       count_to_restore: ir.Value) -> None:
    """Where workers spin on after their work (graphc_blas_spins: OpenBLAS's with NumPy
    imported before graphc, libgomp's with PyTorch imported before it), put the calling
    thread's later products on one BLAS thread: called as a parallel region starts, since
    a BLAS worker woken by a product would spin through the nests that follow it, on the
    core one of their threads needs, or find a region's worker spinning on its own. The
    first region of a step keeps the count it found, plus one, in `count_to_restore` (an
    i64 of the step's scratch, 0 when nothing is to be put back), and the step puts it back
    as it returns (`restore_blas_threads`). A step whose regions never start (mlp_784: only
    products at its sizes; the autoencoder at its batch) keeps the BLAS's threads and pays
    nothing."""
    from .blas import blas

    if not blas().local_threads:
        return
    flag = external_i32(module, "graphc_blas_spins")
    threads = declare(module, "graphc_blas_threads", I32, [I32])
    with b.if_then(b.icmp_signed("!=", b.load(flag, typ=I32), ir.Constant(I32, 0))):
        found = b.sext(b.call(threads, [ir.Constant(I32, 1)]), I64)
        with b.if_then(b.icmp_signed("==", b.load(count_to_restore, typ=I64), i64(0))):
            b.store(b.add(found, i64(1)), count_to_restore)


def restore_blas_threads(module: ir.Module) -> ir.Function:
    """``void graphc.restore_blas_threads(ptr count_to_restore)``: give the calling thread
    back the BLAS thread count a region lowered in this step (see
    `blas_to_one_thread_if_workers_spin`), if one did. Every return of the step calls it, a
    failed step's too. It was done in Python around each call, by three calls of OpenBLAS's
    setter, 1 µs a step on every step (0.9 µs of the autoencoder's 13)."""
    name = "graphc.restore_blas_threads"
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR]), name=name)
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    word = fn.args[0]
    count = b.load(word, typ=I64)
    with b.if_then(b.icmp_signed("!=", count, i64(0))):
        threads = declare(module, "graphc_blas_threads", I32, [I32])
        b.call(threads, [b.trunc(b.sub(count, i64(1)), I32)])
        b.store(i64(0), word)
    b.ret_void()
    return fn


def _gemm_function(module: ir.Module, name: str, extra: tuple[str, ...] = (),
                   scalar: ir.Type | None = None) -> ir.Function:
    """The module's function `name`(C, A, B, m, n, k, *extra[, alpha]) over noalias operands
    (the extra arguments are i64; `scalar`: a last argument `alpha` of that type): the one
    already there (with its body), or a new declaration whose body the caller writes."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    labels = ("C", "A", "B", "m", "n", "k", *extra) + (("alpha",) if scalar else ())
    types = [PTR] * 3 + [I64] * (len(labels) - 3 - bool(scalar)) + ([scalar] if scalar else [])
    fn = ir.Function(module, ir.FunctionType(VOID, types), name=name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    for arg, label in zip(fn.args, labels):
        arg.name = label
    for arg in fn.args[:3]:
        arg.add_attribute("noalias")
    return fn


def _loop_gemm_function(module: ir.Module, ty: ir.Type, ta: bool, tb: bool,
                        accumulate: bool) -> ir.Function:
    """One shared function per variant: C (+)= op(A) @ op(B) as i-p-j loops over noalias
    operands (the inner j loop runs along rows of C and B and vectorizes)."""
    name = f"graphc.gemm_loop.{ty}.{'t' if ta else 'n'}{'t' if tb else 'n'}" \
           f"{'.acc' if accumulate else ''}"
    fn = _gemm_function(module, name)
    if fn.blocks:
        return fn
    c_ptr, a_ptr, b_ptr, m, n, k = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero = const(ty, 0)
    flt = is_float_type(ty)
    with loop(b, m, "mi") as i:
        row = b.mul(i, n)
        if not accumulate:
            with loop(b, n, "mz") as j:
                store(b, zero, c_ptr, ty, b.add(row, j))
        with loop(b, k, "mp") as p:
            a_idx = b.add(b.mul(p, m), i) if ta else b.add(b.mul(i, k), p)
            a = load(b, a_ptr, ty, a_idx)
            with loop(b, n, "mj") as j:
                b_idx = b.add(b.mul(j, k), p) if tb else b.add(b.mul(p, n), j)
                bv = load(b, b_ptr, ty, b_idx)
                c_idx = b.add(row, j)
                cur = load(b, c_ptr, ty, c_idx)
                if flt:
                    value = b.fadd(cur, b.fmul(a, bv))
                elif ty == I8:  # bools (0/1 bytes): NumPy's product is any(a and b)
                    value = b.or_(cur, b.and_(a, bv))
                else:
                    value = b.add(cur, b.mul(a, bv))
                store(b, value, c_ptr, ty, c_idx)
    b.ret_void()
    return fn


#: Register tiles of small products: TILE_ROWS rows of C by two vectors of 32 bytes (16
#: floats, 8 doubles): twelve accumulators, enough to cover the fused multiply-adds' latency.
TILE_ROWS = 6
#: The short tiles that finish the rows six-row tiles leave: eight accumulators, still
#: enough for two multiply-add pipes of four cycles' latency. A 32-row product in six-row
#: tiles computed 36 rows and took as long as a 36-row one (3.3k counter cycles for
#: 32x64 @ 64x32, 2.8k for 30 rows); in five six-row tiles and two four-row ones it
#: computes each row once.
SHORT_TILE_ROWS = 4
TILE_VECTOR_BYTES = 32
#: Up to this many multiply-adds a product runs in register tiles on one thread; above it,
#: BLAS on every core. Below it BLAS runs on one thread too, and its call and packing cost
#: more: 64x128x64 took 22 µs tiled against 28.5 in BLAS, 32x64x32 11.6 against 12.8 (a
#: compiled matmul, one process); at 2^21, 64x256x120 took 52.6 against 44.3 on two threads.
TILED_GEMM = 1 << 19
#: ... and from this many multiply-adds in the sizes known at compile time. The tiles'
#: function costs 20-25 ms of LLVM's time; products smaller than this per unit of a symbolic
#: batch (the tiny MLP's 4x16 and 16x16 layers) ran no faster in it.
TILED_GEMM_MIN = 1024
#: A product with a size known only at run time (a batch) gets the tiles' branch only if it
#: would still take it with that size at 64: mlp_784's 784x512 layers (BLAS at any real
#: batch) paid 0.1 s of compile time for a branch they never took.
TILED_GEMM_BATCH = 64
#: How m rows (m >= TILE_ROWS) split into six-row and four-row tiles, by m mod 6: the
#: six-row tiles' count is m // 6 plus the first entry, the four-row tiles' count the
#: second. The tiles of each kind follow each other from row 0, the last one of a kind
#: ending at most at m (so it may overlap the one before), four-row tiles after six-row ones.
#: Rows computed: m exactly where m mod 6 is even, else m + 1 to m + 3.
ROW_SPLIT = ((0, 0), (0, 1), (-1, 2), (0, 1), (0, 1), (1, 0))


def tile_columns(ty: ir.Type) -> int:
    """Columns of C in one register tile: two vectors."""
    return 2 * TILE_VECTOR_BYTES // (4 if ty == F32 else 8)


def _tiled_gemm_function(module: ir.Module, ty: ir.Type, update: bool = False) -> ir.Function:
    """C = A @ B in register tiles, A(i, p) at ``A[i*a_row + p*a_col]`` (so op(A) may be a
    transpose), for m >= TILE_ROWS and n >= tile_columns (checked by the caller): six rows
    (TILE_ROWS) or four (SHORT_TILE_ROWS, `ROW_SPLIT`) by two vectors of C held in registers
    for the whole sum over k, one broadcast of A per row and two vector loads of B's row
    feeding the fused multiply-adds of each step. The last tile of columns ends at the
    matrix's edge, overlapping the tile before it, as may the last tile of rows of each
    kind (those elements are computed twice, the same way). Each element of C is one sum
    over k in order, so the result does not depend on the tiling or the sizes.

    `update`: C = C + alpha * (A @ B) instead, each tile's sums multiplied by alpha and added
    to C as it is stored (an SGD step of a parameter C: `tiles_update_sized`). Rounded as the
    separate update ``alpha * g + C`` would round it (a product, then a sum), but with no
    gradient stored and no second pass over C. Only for tiles that never overlap (m even, n
    a whole number of tiles), since an element stored twice would be updated twice."""
    fn = _gemm_function(module, f"graphc.gemm_tiles.{ty}" + (".update" if update else ""),
                        ("a_row", "a_col"), ty if update else None)
    if fn.blocks:
        return fn
    fn.attributes.add("noinline")  # one copy a module: inlined at each call it cost 25 ms each
    c_ptr, a_ptr, b_ptr, m, n, k, a_row, a_col = fn.args[:8]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    size = 4 if ty == F32 else 8
    lanes = TILE_VECTOR_BYTES // size
    vec = ir.VectorType(ty, lanes)
    fma = vector_fma(module, vec)
    accs = [[entry_alloca(b, vec, f"acc{r}.{v}") for v in range(2)] for r in range(TILE_ROWS)]
    cols = i64(2 * lanes)

    def tiles(count, width):
        return b.sdiv(b.add(count, b.sub(width, i64(1))), width)

    def start(first, t, width, count):  # the last tile ends at the edge
        at = b.add(first, b.mul(t, width))
        return b.select(b.icmp_signed("<", at, b.sub(count, width)), at, b.sub(count, width))

    def vector_at(ptr, index):
        return b.gep(ptr, [index], inbounds=True, source_etype=ty)

    def split(column):
        table = ir.Constant(ir.ArrayType(I64, len(ROW_SPLIT)),
                            [i64(pair[column]) for pair in ROW_SPLIT])
        slot = entry_alloca(b, table.type, f"row_split{column}")
        b.store(table, slot)
        return b.load(b.gep(slot, [i64(0), b.srem(m, i64(TILE_ROWS))], inbounds=True,
                            source_etype=table.type), typ=I64)

    alpha = splat(b, fn.args[8], vec) if update else None
    six_tiles = b.add(b.sdiv(m, i64(TILE_ROWS)), split(0))
    four_tiles = split(1)
    zero = ir.Constant(vec, [0.0] * lanes)

    def row_tiles(count, first, rows):
        height = i64(rows)
        with loop(b, count, f"ti{rows}", unroll=False) as ti:
            i0 = start(first, ti, height, m)
            with loop(b, tiles(n, cols), f"tj{rows}", unroll=False) as tj:
                j0 = start(i64(0), tj, cols, n)
                for row in accs[:rows]:
                    for slot in row:
                        b.store(zero, slot)
                with loop(b, k, f"p{rows}", unroll=False) as p:
                    brow = b.add(b.mul(p, n), j0)
                    bv = []
                    for v in range(2):
                        x = b.load(vector_at(b_ptr, b.add(brow, i64(v * lanes))), typ=vec)
                        x.align = size
                        bv.append(x)
                    for r in range(rows):
                        i = b.add(i0, i64(r))
                        a = load(b, a_ptr, ty, b.add(b.mul(i, a_row), b.mul(p, a_col)))
                        a = splat(b, a, vec)
                        for v in range(2):
                            b.store(b.call(fma, [a, bv[v], b.load(accs[r][v], typ=vec)]),
                                    accs[r][v])
                for r in range(rows):
                    crow = b.add(b.mul(b.add(i0, i64(r)), n), j0)
                    for v in range(2):
                        at = vector_at(c_ptr, b.add(crow, i64(v * lanes)))
                        value = b.load(accs[r][v], typ=vec)
                        if update:
                            old = b.load(at, typ=vec)
                            old.align = size
                            value = b.fadd(b.fmul(alpha, value), old)
                        st = b.store(value, at)
                        st.align = size

    row_tiles(six_tiles, i64(0), TILE_ROWS)
    row_tiles(four_tiles, b.mul(six_tiles, i64(TILE_ROWS)), SHORT_TILE_ROWS)
    b.ret_void()
    return fn


#: A product with B transposed gets the register tiles too where B (n x k) has at most this
#: many elements, known at compile time: B is first transposed into a stack buffer of the
#: kernel (32 KiB of floats), in square blocks of a vector's lanes. The autoencoder's
#: d2 @ W2.T (32x64 @ 64x32) took 4.2k counter cycles in BLAS, ... in the tiles.
TRANSPOSED_B_TILED = 8192


def transpose_block(b: ir.IRBuilder, rows: list) -> list:
    """The columns of a square block held as its L rows (L vectors of L lanes): log2(L)
    stages of shuffles, each swapping the off-diagonal halves of the blocks of its size."""
    block, lanes = list(rows), len(rows)
    h = lanes // 2
    while h:
        low = [q if not q & h else lanes + (q ^ h) for q in range(lanes)]
        high = [q ^ h if not q & h else lanes + q for q in range(lanes)]
        low, high = (ir.Constant(ir.VectorType(I32, lanes), mask) for mask in (low, high))
        for i in range(lanes):
            if not i & h:
                x, y = block[i], block[i + h]
                block[i] = b.shuffle_vector(x, y, low)
                block[i + h] = b.shuffle_vector(x, y, high)
        h //= 2
    return block


def _transpose_function(module: ir.Module, ty: ir.Type) -> ir.Function:
    """``dst (cols x rows) = src (rows x cols)^T``, both contiguous: square blocks of L x L
    (L the lanes of a 32-byte vector) loaded as L vectors, transposed by log2(L) stages of
    shuffles (each swaps the off-diagonal halves of the blocks of the stage), stored as L
    vectors; the rows and columns past the last whole block one element at a time."""
    name = f"graphc.transpose.{ty}"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    fn = ir.Function(module, ir.FunctionType(VOID, [PTR, PTR, I64, I64]), name=name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    fn.attributes.add("noinline")
    dst, src, rows, cols = fn.args
    for arg, label in zip(fn.args, ("dst", "src", "rows", "cols")):
        arg.name = label
    for arg in (dst, src):
        arg.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    size = 4 if ty == F32 else 8
    lanes = TILE_VECTOR_BYTES // size
    vec = ir.VectorType(ty, lanes)
    whole_rows = b.mul(b.sdiv(rows, i64(lanes)), i64(lanes))
    whole_cols = b.mul(b.sdiv(cols, i64(lanes)), i64(lanes))

    with loop(b, b.sdiv(rows, i64(lanes)), "tr", unroll=False) as rb:
        with loop(b, b.sdiv(cols, i64(lanes)), "tc", unroll=False) as cb:
            r0, c0 = b.mul(rb, i64(lanes)), b.mul(cb, i64(lanes))
            block = []
            for i in range(lanes):
                at = b.add(b.mul(b.add(r0, i64(i)), cols), c0)
                v = b.load(b.gep(src, [at], inbounds=True, source_etype=ty), typ=vec)
                v.align = size
                block.append(v)
            block = transpose_block(b, block)
            for j in range(lanes):
                at = b.add(b.mul(b.add(c0, i64(j)), rows), r0)
                st = b.store(block[j], b.gep(dst, [at], inbounds=True, source_etype=ty))
                st.align = size

    def one_by_one(row_from, row_to, col_from):
        with loop(b, b.sub(row_to, row_from), "er", unroll=False) as r:
            r = b.add(r, row_from)
            with loop(b, b.sub(cols, col_from), "ec", unroll=False) as c:
                c = b.add(c, col_from)
                value = load(b, src, ty, b.add(b.mul(r, cols), c))
                store(b, value, dst, ty, b.add(b.mul(c, rows), r))

    one_by_one(i64(0), whole_rows, whole_cols)  # the columns right of the blocks
    one_by_one(whole_rows, rows, i64(0))  # the rows below them
    b.ret_void()
    return fn


def loop_gemm(ctx: KernelContext, b: ir.IRBuilder, ty: ir.Type, ta: bool, tb: bool, m, n, k,
              a_ptr, b_ptr, c_ptr, accumulate: bool = False) -> None:
    """C (+)= op(A) @ op(B) with plain loops (tiny products, integer types)."""
    fn = _loop_gemm_function(ctx.module, ty, ta, tb, accumulate)
    b.call(fn, [c_ptr, a_ptr, b_ptr, m, n, k])


def _static_work(*dims) -> int:
    """The product of the dims known at compile time (a lower bound of the work)."""
    out = 1
    for d in dims:
        if isinstance(d, ir.Constant):
            out *= int(d.constant)
    return out


def _known_work(known: list) -> int:
    """The product of the sizes known at compile time (None: known only at run time)."""
    return math.prod(d for d in known if d is not None)


def _never_tiled(known: list, tb: bool, columns: int) -> bool:
    """Does a product whose sizes (m, n, k) are `known` (ints, None where only the run time
    knows) skip the register tiles whatever the unknown sizes are? (B transposed and not
    known small, too little or too much work, too few rows or columns for one tile.)"""
    static = _known_work(known)
    transposed_too_big = tb and (None in known[1:] or known[1] * known[2] > TRANSPOSED_B_TILED)
    return (transposed_too_big or static < TILED_GEMM_MIN
            or static * TILED_GEMM_BATCH ** known.count(None) > TILED_GEMM
            or (known[0] is not None and known[0] < TILE_ROWS)
            or (known[1] is not None and known[1] < columns)
            or (None not in known and not TILED_GEMM_MIN <= static <= TILED_GEMM))


def tiles_update_sized(known: list, tb: bool, columns: int) -> bool:
    """Can the register tiles compute C + alpha * (A @ B) into C for these sizes (`known` as
    in `_never_tiled`), whatever the unknown ones are? Tiles that never overlap (m even and
    known, n a known whole number of tiles), and where the run time may choose otherwise, a
    product large enough for BLAS, which takes alpha too."""
    static = _known_work(known)
    return (not _never_tiled(known, tb, columns)
            and known[0] is not None and known[0] % 2 == 0
            and known[1] is not None and known[1] % columns == 0
            and (None not in known or static > SMALL_GEMM))


def scaled_update_sized(m, n, k, tb: bool, itemsize: int, exact: bool = True) -> bool:
    """Does the product of these sizes (ints, or symbols known only at run time) take
    ``C += alpha * (A @ B)`` into C whatever the symbols' values (passes/memory.py's
    products_into_updates)? BLAS products (the update's values within rounding), and
    register tiles that do not overlap, where the separate update rounds ``alpha * g`` once
    as the tiles do (`exact`: alpha is one number of the expression)."""
    known = [d if isinstance(d, int) else None for d in (m, n, k)]
    columns = 2 * TILE_VECTOR_BYTES // itemsize
    return blas_sized(m, n, k, tb, itemsize) or (exact and
                                                 tiles_update_sized(known, tb, columns))


def blas_sized(m, n, k, tb: bool, itemsize: int) -> bool:
    """Does a float product of these sizes (ints, or symbols known only at run time) go to
    BLAS whatever the symbols' values? `gemm`'s choice, made on the graph's shapes."""
    known = [d if isinstance(d, int) else None for d in (m, n, k)]
    static = _known_work(known)
    return _never_tiled(known, tb, 2 * TILE_VECTOR_BYTES // itemsize) and static > SMALL_GEMM


def gemm(ctx: KernelContext, b: ir.IRBuilder, ty: ir.Type, ta: bool, tb: bool, m, n, k,
         a_ptr, b_ptr, c_ptr, accumulate: bool = False, alpha: float = 1.0) -> None:
    """C (+)= op(A) @ op(B) for contiguous row-major operands: a loop nest when tiny (or not a
    BLAS type), register tiles when small (TILED_GEMM_MIN to TILED_GEMM multiply-adds, at
    least one whole tile, a transposed B only if known small: `_never_tiled`), BLAS
    otherwise; decided at compile time where the static sizes settle it, else by a test of
    the sizes at run time.
    `accumulate`: C += alpha op(A) @ op(B): an update of a parameter
    (codegen.HostCodegen.product_updates, only where `scaled_update_sized` holds), or a sum
    a loop accumulates in place (loops.py, alpha 1); register tiles that never overlap do it
    as they store (`tiles_update_sized`), else BLAS (beta 1) or the loop nest (alpha 1)."""
    if ty not in (F32, F64):
        loop_gemm(ctx, b, ty, ta, tb, m, n, k, a_ptr, b_ptr, c_ptr, accumulate)
        return
    known = [int(d.constant) if isinstance(d, ir.Constant) else None for d in (m, n, k)]
    update = accumulate and tiles_update_sized(known, tb, tile_columns(ty))
    if accumulate and not update or _never_tiled(known, tb, tile_columns(ty)):
        _gemm_untiled(ctx, b, ty, ta, tb, m, n, k, a_ptr, b_ptr, c_ptr, accumulate, alpha)
        return

    def tiled():
        a_row, a_col = (i64(1), m) if ta else (k, i64(1))
        b_rows = b_ptr
        if tb:  # B (n x k) into a k x n buffer of the kernel's stack (_never_tiled: small)
            b_rows = entry_alloca(b, ir.ArrayType(ty, known[1] * known[2]), "b_transposed")
            b.call(_transpose_function(ctx.module, ty), [b_rows, b_ptr, n, k])
        args = [c_ptr, a_ptr, b_rows, m, n, k, a_row, a_col]
        b.call(_tiled_gemm_function(ctx.module, ty, update),
               args + [const(ty, alpha)] if update else args)

    if None not in known:
        tiled()
        return
    fits = b.and_(b.and_(b.icmp_signed(">=", m, i64(TILE_ROWS)),
                         b.icmp_signed(">=", n, i64(tile_columns(ty)))),
                  b.icmp_signed("<=", b.mul(b.mul(m, n), k), i64(TILED_GEMM)))
    with b.if_else(fits) as (then, otherwise):
        with then:
            tiled()
        with otherwise:
            _gemm_untiled(ctx, b, ty, ta, tb, m, n, k, a_ptr, b_ptr, c_ptr, accumulate, alpha)


def _gemm_untiled(ctx: KernelContext, b: ir.IRBuilder, ty: ir.Type, ta: bool, tb: bool, m, n,
                  k, a_ptr, b_ptr, c_ptr, accumulate: bool, alpha: float = 1.0) -> None:
    def blas_call():
        gemm_call(ctx, b, ty, ta, tb, m, n, k, a_ptr, m if ta else k, b_ptr, k if tb else n,
                  c_ptr, n, 1.0 if accumulate else 0.0, alpha)

    static = _static_work(m, n, k)
    all_static = all(isinstance(d, ir.Constant) for d in (m, n, k))
    if static > SMALL_GEMM:
        blas_call()
        return
    if alpha != 1.0:  # (the loop nest has no alpha: scaled_update_sized keeps them away)
        raise AssertionError("a scaled product is for BLAS or the tiles only "
                             "(scaled_update_sized)")
    if all_static:
        loop_gemm(ctx, b, ty, ta, tb, m, n, k, a_ptr, b_ptr, c_ptr, accumulate)
        return
    small = b.icmp_signed("<=", b.mul(b.mul(m, n), k), i64(SMALL_GEMM))
    with b.if_else(small) as (then, otherwise):
        with then:
            loop_gemm(ctx, b, ty, ta, tb, m, n, k, a_ptr, b_ptr, c_ptr, accumulate)
        with otherwise:
            blas_call()


@lowering("matmul", target="llvm")
def matmul(ctx: KernelContext) -> None:
    node, b = ctx.node, ctx.b
    a_node, b_node = node.inputs
    ty = ctx.ty()
    ta, tb = node.attrs["ta"], node.attrs["tb"]
    a_shape, b_shape, out_shape = ctx.shape(a_node), ctx.shape(b_node), ctx.shape()
    m, n = out_shape[-2], out_shape[-1]
    k = a_shape[-2] if ta else a_shape[-1]
    batch = out_shape[:-2]

    def batch_strides(node_, shape):
        """Element stride of each output batch axis in this operand (0 where broadcast)."""
        mat = product(b, shape[-2:])
        strides = contiguous_strides(b, shape[:-2] + [i64(1)])[:-1] if len(shape) > 2 else []
        strides = [b.mul(s, mat) for s in strides]
        lead = len(batch) - len(strides)
        out = []
        for axis in range(len(batch)):
            j = axis - lead
            stretched = j < 0 or (node_.shape[j] == 1 and node.shape[axis] != 1)
            out.append(i64(0) if stretched else strides[j])
        return out

    sa, sb = batch_strides(a_node, a_shape), batch_strides(b_node, b_shape)
    sc = [b.mul(s, b.mul(m, n)) for s in contiguous_strides(b, batch + [i64(1)])[:-1]]
    A, B, C = ctx.in_ptr(0), ctx.in_ptr(1), ctx.out_ptr
    # an SGD update p + scale * (A @ B) computed by the product into p (C is p's memory)
    _param, scale = getattr(ctx.gen, "product_updates", {}).get(node.uid, (None, None))

    def products() -> None:
        # an empty C (m or n of 0) needs nothing, not one call per batch entry (2**40 of
        # them); k of 0 still needs the zeroed C that the GEMM writes
        with unless_empty(b, [m, n]), loops(b, batch, "batch") as idx:
            def at(ptr, strides):
                off = i64(0)
                for i, s in zip(idx, strides):
                    off = b.add(off, b.mul(i, s))
                return b.gep(ptr, [off], inbounds=True, source_etype=ty)

            gemm(ctx, b, ty, ta, tb, m, n, k, at(A, sa), at(B, sb), at(C, sc),
                 accumulate=scale is not None, alpha=1.0 if scale is None else scale)

    if batch or not _panels_possible(ctx, m, n, k, scale):
        products()
        return
    # a 2-d float product in column panels on every core (panel_gemm.py) where the run-time
    # test of the sizes and the threads passes, the usual products where it does not
    from . import panel_gemm

    with b.if_else(panel_gemm.fits(b, ty, m, n, k, scale is not None)) as (then, otherwise):
        with then:
            panel_gemm.emit(ctx, ta, tb, scale)
        with otherwise:
            products()


def _panels_possible(ctx: KernelContext, m, n, k, scale) -> bool:
    """May the 2-d product of kernel `ctx` take the column panels (panel_gemm.py) for some
    value of its sizes known only at run time?"""
    from . import panel_gemm

    ty = ctx.ty()
    known = [int(d.constant) if isinstance(d, ir.Constant) else None for d in (m, n, k)]
    return ty in (F32, F64) and panel_gemm.possible(ty, known, scale is not None)
