"""The host's rendering of the channels-last convolution steps (graphc/ops/loops.py):
register tiles read from a channels-last copy of the padded input.

A `ChannelsLastConv` holds output positions by output channels:

    for (n, q) in [lo, hi):              (samples by channel tiles, split between threads)
      for each tile of POSITIONS output positions p0.. (row-major; the last one ends at the
      image's end, overlapping the tile before it):
        acc[r][v] = 0
        for kh, kw:  for c:
          ws[v]  = w[q, kh, kw, c, v*LANES ...]                     (two vector loads)
          acc[r][v] += broadcast(x[n, ih(p0 + r) + kh*dh, iw(p0 + r) + kw*dw, c]) * ws[v]
        out[n, q*TILE + t, p0 + r] = lane t of acc[r]                (for the channels that exist)

Per step of the reduction: two vector loads of the packed weights and six broadcasts of the
input feed twelve fused multiply-adds, as in a DirectConv tile, but the length of an output
row does not shape the tile: rows of four positions use every lane. Without dilation along
rows, a kernel row's taps and channels are one run of memory, summed as one loop.

A `ChannelsLastWeightGrad` holds output channels by input channels, for one kernel tap:

    for (tap, input channel tile, output channel tile) in [lo, hi):   (split between threads)
      acc[r][v] = sum over n, oh, ow of broadcast(g[n, co0 + r, oh, ow])
                                        * x[n, oh*sh + kh*dh, ow*sw + kw*dw, c0 + v*LANES ...]
      out[co0 + r, c0 + t, kh, kw] = lane t of acc[r]

Its sums run over every output position of the batch, however small the image or large the
stride: where the per-sample GEMM of im2col had a reduction of one image's positions.

On a CPU with 32 vector registers (AVX-512VL: `toolchain.wide_tiles`) an item holds two
channel tiles at once, 24 accumulators: the forward's next output channel tile (its packed
weights `w_next` further on), the weight gradient's next input channel tile (the next
channels of x). Single threaded, that made 128 channels of 8x8 and 256 of 4x4 11-13%
faster; an odd last tile runs alone.

Each is one function of the module (`_tile_function`, `_grad_tile_function`, and their
`.pair` forms), called with the sizes and strides as arguments. Every output element is
one reduction in a fixed order, computed by one thread: the same bits on any thread count.
"""

from __future__ import annotations

from llvmlite import ir

from graphc.errors import BackendError
from graphc.ops import loops as L

from ..kernelgen.irutil import i64, product, splat
from ..kernelgen.toolchain import wide_tiles
from .register_tiles import (
    StepBuffers,
    fma_into,
    shared_function,
    type_name,
    vector_kit,
    while_present,
)
from .register_tiles import rolled_loop as loop

__all__ = ["channels_last_conv"]


def channels_last_conv(ctx, step) -> None:
    """Render a ChannelsLastConv or ChannelsLastWeightGrad `step` into the kernel `ctx` (a
    HostKernel): its loop over items in its own function, run on every thread when the
    step is large enough (`run_parallel`)."""
    part = ctx.host_part()
    lo, hi = part.bounds
    kind = _WeightGradTiles if isinstance(step, L.ChannelsLastWeightGrad) else _Tiles
    items = kind(part, step)
    items.emit(lo, hi)
    part.finish()
    ctx.run_parallel(part, *items.work(ctx))


class _Items(StepBuffers):
    """A channels-last step's items, in the part function `k` of the kernel: its buffers
    `names`, the channels of a tile's two vectors, and how many tiles an item holds (two
    where the CPU has the registers: `wide_tiles`)."""

    def __init__(self, k, step, names) -> None:
        super().__init__(k, step, names)
        self.tile = L.channels_last_tile(k.node.dtype.itemsize)
        self.width = 2 if wide_tiles() else 1

    def pointer_to(self, name: str, *index):
        """The address of element `index` of buffer `name`."""
        return self.pointer(name, self.at(name, *index))

    def call_tiles(self, make, first, count: int, args) -> None:
        """Call the tile function `make(module, ty, pair)` on `args`: the pair form where
        items hold pairs and the tile after `first` (an i64 value) is one of the `count`,
        else the single form (an odd last tile)."""
        b, single = self.b, make(self.k.module, self.ty, False)
        if self.width == 1:
            b.call(single, args)
            return
        with b.if_else(b.icmp_unsigned("<", b.add(first, i64(1)), i64(count))) as (two, one):
            with two:
                b.call(make(self.k.module, self.ty, True), args)
            with one:
                b.call(single, args)


class _Tiles(_Items):
    """A ChannelsLastConv's items: (sample, channel tiles) pairs."""

    def __init__(self, k, step: L.ChannelsLastConv) -> None:
        super().__init__(k, step, (step.x, step.w, step.out))
        geo = self.geo
        self.positions = geo.out_size[0] * geo.out_size[1]
        if self.positions < L.CHANNELS_LAST_POSITIONS:  # conv.channels_last rules this out
            raise BackendError(f"a channels-last convolution needs "
                               f"{L.CHANNELS_LAST_POSITIONS} output positions or more, got "
                               f"{self.positions}")
        self.tiles = -(-geo.out_channels // self.tile)
        self.items = -(-self.tiles // self.width)  # a sample's: item j holds tile j*width..

    def work(self, ctx):
        """`run_parallel`'s counts and cost of a point: every (sample, channel tiles) item,
        the tiles' outputs of a sample shared between its items, each output a sum of
        channels x kh x kw multiply-adds."""
        from .threads import MACS_PER_POINT

        geo = self.geo
        counts = [product(ctx.b, [ctx.dim(geo.batch), i64(self.items)]),
                  i64(self.tiles * self.tile * self.positions // self.items)]
        return counts, (geo.channels * geo.kernel[0] * geo.kernel[1], MACS_PER_POINT)

    def emit(self, lo, hi) -> None:
        """Items lo..hi, a sample's tiles in order."""
        b, s, geo, tile = self.b, self.step, self.geo, self.tile
        (OH, OW), (KH, KW) = geo.out_size, geo.kernel
        (SH, SW), (DH, DW) = geo.stride, geo.dilation
        xs = self.strides[s.x]  # (n, i, j, c): xs[1] a row, xs[2] a position
        # with no dilation along rows, a kernel row's taps read one run of the input row
        # ((kw, c) -> kw*C + c) and of the packed weights: one loop of KW*C terms
        taps, terms = (1, KW * geo.channels) if DW == 1 else (KW, geo.channels)
        with loop(b, hi, "j", start=lo) as j:
            n, k = b.udiv(j, i64(self.items)), b.urem(j, i64(self.items))
            q = b.mul(k, i64(self.width))
            co0 = b.mul(q, i64(tile))
            channels = b.sub(i64(geo.out_channels), co0)  # (the tile function stops there)
            args = [self.pointer_to(s.x, n, 0, 0, 0), self.pointer_to(s.w, q, 0, 0, 0, 0),
                    self.pointer_to(s.out, n, co0, 0, 0), channels, i64(terms), i64(KH),
                    i64(taps), i64(OH * OW), i64(OW), b.mul(xs[1], i64(SH)),
                    b.mul(xs[2], i64(SW)), b.mul(xs[1], i64(DH)), b.mul(xs[2], i64(DW)),
                    self.strides[s.w][0]]
            self.call_tiles(_tile_function, q, self.tiles, args)


class _WeightGradTiles(_Items):
    """A ChannelsLastWeightGrad's items: (kernel tap, input channel tiles, output channel
    tile), the output channel tiles innermost (consecutive items read the same input
    vectors)."""

    def __init__(self, k, step: L.ChannelsLastWeightGrad) -> None:
        super().__init__(k, step, (step.x, step.g, step.out))
        geo, self.rows = self.geo, L.CHANNELS_LAST_POSITIONS
        self.c_tiles = -(-geo.channels // self.tile)
        self.c_items = -(-self.c_tiles // self.width)
        self.co_tiles = -(-geo.out_channels // self.rows)
        self.items = geo.kernel[0] * geo.kernel[1] * self.c_items * self.co_tiles

    def work(self, ctx):
        """`run_parallel`'s counts and cost of a point: every item, the sums of a tap and
        output channel tile shared between its items, each sum over every output position
        of the batch (a point each)."""
        from .threads import MACS_PER_POINT

        geo = self.geo
        counts = [i64(self.items), i64(self.c_tiles * self.tile * self.rows // self.c_items),
                  product(ctx.b, [ctx.dim(geo.batch), i64(geo.out_size[0] * geo.out_size[1])])]
        return counts, (1, MACS_PER_POINT)

    def emit(self, lo, hi) -> None:
        """Items lo..hi."""
        b, s, geo, tile, rows = self.b, self.step, self.geo, self.tile, self.rows
        C, CO = geo.channels, geo.out_channels
        (OH, OW), (KH, KW) = geo.out_size, geo.kernel
        (SH, SW), (DH, DW) = geo.stride, geo.dilation
        xs, gs = self.strides[s.x], self.strides[s.g]  # x (n, i, j, c); g (n, co, oh, ow)
        with loop(b, hi, "u", start=lo) as u:
            q, rest = b.urem(u, i64(self.co_tiles)), b.udiv(u, i64(self.co_tiles))
            ci, tap = b.urem(rest, i64(self.c_items)), b.udiv(rest, i64(self.c_items))
            ct = b.mul(ci, i64(self.width))
            kh, kw = b.udiv(tap, i64(KW)), b.urem(tap, i64(KW))
            co0, c0 = b.mul(q, i64(rows)), b.mul(ct, i64(tile))
            co_count = b.select(b.icmp_unsigned("<", q, i64(CO // rows)), i64(rows),
                                i64(CO % rows or rows))
            c_count = b.sub(i64(C), c0)  # (the tile function stops there)
            args = [self.pointer_to(s.x, 0, b.mul(kh, i64(DH)), b.mul(kw, i64(DW)), c0),
                    self.pointer_to(s.g, 0, co0, 0, 0),
                    self.pointer_to(s.out, co0, c0, kh, kw), co_count, c_count,
                    self.k.dim(geo.batch), i64(OH), i64(OW), xs[0],
                    b.mul(xs[1], i64(SH)), b.mul(xs[2], i64(SW)), gs[0], gs[1],
                    i64(C * KH * KW), i64(KH * KW)]
            self.call_tiles(_grad_tile_function, ct, self.c_tiles, args)


def _tile_body(module: ir.Module, fn: ir.Function, ty: ir.Type, width: int = 1):
    """What both tile functions start with: a builder at `fn`'s entry, the vector type, its
    lane count and fused multiply-add, the accumulators (CHANNELS_LAST_POSITIONS rows of
    `width` x CHANNELS_LAST_VECTORS stack slots, which LLVM keeps in registers) and an
    aligned load."""
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    vec, lanes, fma = vector_kit(module, ty)
    with b.goto_entry_block():
        accs = [[b.alloca(vec, name=f"acc{r}.{v}")
                 for v in range(width * L.CHANNELS_LAST_VECTORS)]
                for r in range(L.CHANNELS_LAST_POSITIONS)]

    def load(ptr, offset, typ):
        value = b.load(b.gep(ptr, [offset], source_etype=ty), typ=typ)
        value.align = L.DIRECT_VECTOR_BYTES // lanes
        return value

    return b, vec, lanes, fma, accs, load


def _grad_tile_function(module: ir.Module, ty: ir.Type, pair: bool = False) -> ir.Function:
    """One tile of a channels-last weight gradient (see ChannelsLastWeightGrad):

        acc[r][v] = sum over n < N, oh < OH, ow < OW of
                    g[n*g_sample + r*g_channel + oh*OW + ow]
                    * x[n*x_sample + oh*x_oh + ow*x_ow + v*LANES ...]
        out[r*out_co + t*out_c] = lane t of acc[r]     for r < co_count, t < c_count

    with x at the tap's and the input channel tile's first element, g at the output channel
    tile's, out at the tile's first weight. Rows past co_count read the last row that
    exists (their sums are not stored). `pair`: two input channel tiles at once (the next
    one's channels follow in x: 24 accumulators, for a CPU with 32 vector registers)."""
    width = 2 if pair else 1
    fn, new = shared_function(module, f"graphc.channels_last_grad_tile.{type_name(ty)}"
                              + (".pair" if pair else ""), [
        "x", "g", "out", "co_count", "c_count", "N", "OH", "OW", "x_sample", "x_oh", "x_ow",
        "g_sample", "g_channel", "out_co", "out_c"], noalias=True)
    if not new:
        return fn
    (x, g, out, co_count, c_count, N, OH, OW, x_sample, x_oh, x_ow, g_sample, g_channel,
     out_co, out_c) = fn.args
    b, vec, lanes, fma, accs, load = _tile_body(module, fn, ty, width)
    size, tile, rows = L.DIRECT_VECTOR_BYTES // lanes, L.CHANNELS_LAST_VECTORS * lanes, len(accs)

    for row in accs:
        for a in row:
            b.store(ir.Constant(vec, [0.0] * lanes), a)
    last = b.sub(co_count, i64(1))
    g_rows = [b.mul(b.select(b.icmp_signed("<", i64(r), co_count), i64(r), last), g_channel)
              for r in range(rows)]
    with loop(b, N, "n") as n:
        x_n, g_n = b.mul(n, x_sample), b.mul(n, g_sample)
        with loop(b, OH, "oh") as oh:
            x_row, g_row = b.add(x_n, b.mul(oh, x_oh)), b.add(g_n, b.mul(oh, OW))
            with loop(b, OW, "ow") as ow:
                x_at, g_at = b.add(x_row, b.mul(ow, x_ow)), b.add(g_row, ow)
                xv = [load(x, b.add(x_at, i64(v * lanes)), vec)
                      for v in range(width * L.CHANNELS_LAST_VECTORS)]
                for g_off, row in zip(g_rows, accs):
                    fma_into(b, fma, row, splat(b, load(g, b.add(g_at, g_off), ty), vec), xv)
    sums = [[b.load(a, typ=vec) for a in row] for row in accs]

    def store_row(r):  # the output channels that exist, each the input channels that exist
        def store_lane(t):
            value = b.extract_element(sums[r][t // lanes], i64(t % lanes))
            at = b.add(b.mul(i64(r), out_co), b.mul(i64(t), out_c))
            b.store(value, b.gep(out, [at], source_etype=ty)).align = size

        while_present(b, fn, width * tile, c_count, store_lane, name=f"row{r}.lane",
                      done=f"row{r}.stored")

    while_present(b, fn, rows, co_count, store_row, name="row")
    b.ret_void()
    return fn


def _tile_function(module: ir.Module, ty: ir.Type, pair: bool = False) -> ir.Function:
    """Every register tile of one sample's channel tile (see the module's docstring):

        acc[r][v] = sum over kh < KH, kw < KW, c < C of
                    x[ih(p0+r) + kh*x_kh + kw*x_kw + c] * w[((kh*KW + kw)*C + c)*TILE + v*LANES ...]
        out[t*P + p0 + r] = lane t of acc[r]            for t < channels, r < POSITIONS

    with ih(p) = (p / OW)*x_oh + (p % OW)*x_ow, and x, w and out already at the sample's and
    channel tile's first element. `pair`: two channel tiles at once, the second's packed
    weights `w_next` elements after the first's (24 accumulators: for a CPU with 32 vector
    registers, `wide_tiles`). One function a module, element type and width: the sizes and
    strides are arguments."""
    width = 2 if pair else 1
    fn, new = shared_function(module, f"graphc.channels_last_tile.{type_name(ty)}"
                              + (".pair" if pair else ""), [
        "x", "w", "out", "channels", "C", "KH", "KW", "P", "OW", "x_oh", "x_ow", "x_kh",
        "x_kw", "w_next"], noalias=True)
    if not new:
        return fn
    x, w, out, channels, C, KH, KW, P, OW, x_oh, x_ow, x_kh, x_kw, w_next = fn.args
    b, vec, lanes, fma, accs, load = _tile_body(module, fn, ty, width)
    size, tile, rows = L.DIRECT_VECTOR_BYTES // lanes, L.CHANNELS_LAST_VECTORS * lanes, len(accs)

    w_tap = b.mul(C, i64(tile))  # the packed weights of one (kh, kw)
    count = b.udiv(b.add(P, i64(rows - 1)), i64(rows))
    with loop(b, count, "pt") as pt:
        first = b.mul(pt, i64(rows))
        last = b.sub(P, i64(rows))  # the last tile ends at the image's end
        p0 = b.select(b.icmp_signed("<", first, last), first, last)
        bases = []
        for r in range(rows):
            p = b.add(p0, i64(r))
            bases.append(b.add(b.mul(b.udiv(p, OW), x_oh), b.mul(b.urem(p, OW), x_ow)))
        for row in accs:
            for a in row:
                b.store(ir.Constant(vec, [0.0] * lanes), a)
        with loop(b, KH, "kh") as kh:
            x_row, w_row = b.mul(kh, x_kh), b.mul(b.mul(kh, KW), w_tap)
            with loop(b, KW, "kw") as kw:
                x_at = b.add(x_row, b.mul(kw, x_kw))
                w_at = b.add(w_row, b.mul(kw, w_tap))
                starts = [b.add(base, x_at) for base in bases]
                with loop(b, C, "c") as c:
                    w_c = b.add(w_at, b.mul(c, i64(tile)))
                    ws = [load(w, b.add(b.add(w_c, b.mul(w_next, i64(half))), i64(v * lanes)),
                               vec)
                          for half in range(width) for v in range(L.CHANNELS_LAST_VECTORS)]
                    for start, row in zip(starts, accs):
                        fma_into(b, fma, row, splat(b, load(x, b.add(start, c), ty), vec), ws)
        sums = [[b.load(a, typ=vec) for a in row] for row in accs]

        def store_channel(t):  # (the channels past the last one that exists end the tile)
            base = b.add(b.mul(i64(t), P), p0)
            for r in range(rows):
                value = b.extract_element(sums[r][t // lanes], i64(t % lanes))
                b.store(value, b.gep(out, [b.add(base, i64(r))], source_etype=ty)).align = size

        while_present(b, fn, width * tile, channels, store_channel)
    b.ret_void()
    return fn
