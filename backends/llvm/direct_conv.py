"""The host's rendering of a `DirectConv` step (graphc/ops/loops.py): register tiles.

A tile is `geometry.tile` output channels (6, or 4: `loops.direct_tile`) by a run of output
positions along a row, held in vector accumulators for the whole reduction over (input
channel, kernel row, kernel column):

    for (n, q) in [lo, hi):             (samples by channel tiles, split between threads)
      for oh, and each tile of positions ow0.. along the row:
        acc[t][v] = 0
        for c, kh:  for each kw:          (kw unrolled)
          xs[v]  = x[n, c, oh*s + kh*dh, ow0 + kw*dw + v*LANES ...]   (one vector load each)
          acc[t][v] += xs[v] * broadcast(w[q, c, kh, kw, t])          (fused multiply-adds)
        out[n, q*TILE + t, oh, ow0 + v*LANES ...] = acc[t][v]

Per step of the reduction: two vector loads and six broadcasts feed twelve fused
multiply-adds (four and eight with 4-channel tiles), and the input rows and the tile's
weights stay in the first-level cache. The input is already padded, so no load needs a
bounds test. A row's positions go in tiles of two
vectors, then one edge tile whose last vector ends at the row's end (overlapping the tile
before it when the row is not a whole number of vectors: `direct_row_tiles`); the last channel tile
stores only the channels that exist (its packed weights are zero past them).

The tiles are two functions of the module (`_tile_function`, `_grad_tile_function`), called
once per sample and channel tile (and input channel, for a weight gradient), with the
reduction's sizes and the buffers' strides as arguments: every convolution of the same kernel
width, dilation and row tiling calls the same one, which LLVM optimizes and compiles once.
cnn32's five direct convolutions and four weight gradients were nine copies of the tile code,
half of the module's IR. As two functions, LLVM does 24% less work on it (bench/llvm_work.py),
its cold compile took 1.24 s rather than 1.67 (medians), and its step 1-3% longer (side by
side, in one process).

Vectors are 32 bytes (8 floats, 4 doubles) on every machine, so the IR does not depend on the
host; LLVM splits them where the CPU's registers are narrower. Every output element is one
reduction in a fixed order, computed by one thread: the same bits on any thread count.
"""

from __future__ import annotations

from llvmlite import ir

from graphc.errors import BackendError
from graphc.ops import loops as L

from ..kernelgen.irutil import (
    F32,
    i64,
    memset_zero,
    product,
    splat,
)
from .register_tiles import StepBuffers, shared_function, type_name, vector_kit, while_present
from .register_tiles import rolled_loop as loop

__all__ = ["direct_conv"]


def direct_conv(ctx, step) -> None:
    """Render a DirectConv or DirectWeightGrad `step` into the kernel `ctx` (a HostKernel):
    its outer loop (over samples by channel tiles; for a weight gradient, output channel
    tiles by input channels) in its own function, run on every thread when the step is large
    enough (`run_parallel`)."""
    from .threads import MACS_PER_POINT

    part = ctx.host_part()
    lo, hi = part.bounds
    geo = step.geometry
    oh, ow = geo.out_size
    kh, kw = geo.kernel
    if isinstance(step, L.DirectWeightGrad):
        _WeightGradTiles(part, step, (step.x, step.g, step.out, step.partial)).emit(lo, hi)
        # the items: every (output channel tile, input channel) pair; every multiply-add
        # of a tile's channels is a point
        tiles = -(-geo.out_channels // L.DIRECT_GRAD_TILE)
        counts = [i64(tiles * geo.channels), i64(L.DIRECT_GRAD_TILE * kh * kw),
                  product(ctx.b, [ctx.dim(geo.batch), i64(oh * ow)])]
        per_point = (1, MACS_PER_POINT)
    else:
        _Tiles(part, step, (step.x, step.w, step.out)).emit(lo, hi)
        # the items: every (sample, channel tile) pair, of TILE x oh x ow outputs each, each
        # output a sum of channels x kh x kw multiply-adds
        counts = [product(ctx.b, [ctx.dim(geo.batch),
                                  i64(L.direct_channel_tiles(geo.out_channels))]),
                  i64(geo.tile * oh * ow)]
        per_point = (geo.channels * kh * kw, MACS_PER_POINT)
    part.finish()
    ctx.run_parallel(part, counts, per_point)


class _Tiles(StepBuffers):
    """A DirectConv's tiles, in the part function `k` of the kernel."""

    def __init__(self, k, step, names) -> None:
        super().__init__(k, step, names)
        self.lanes = L.DIRECT_VECTOR_BYTES // k.node.dtype.itemsize
        self.align = k.node.dtype.itemsize
        self.check_rows(self.geo.out_size[1])

    def check_rows(self, width: int) -> None:
        if width < self.lanes:  # graphc/ops/conv.DIRECT_MIN_WIDTH rules this out
            raise BackendError(f"a direct convolution needs rows of {self.lanes} positions "
                               f"or more, got {width}")

    def load(self, name: str, offset, ty):
        b = self.b
        v = b.load(b.gep(self.ptrs[name], [offset], source_etype=self.ty), typ=ty)
        v.align = self.align
        return v

    def store(self, name: str, value, offset) -> None:
        b = self.b
        st = b.store(value, b.gep(self.ptrs[name], [offset], source_etype=self.ty))
        st.align = self.align

    def emit(self, lo, hi) -> None:
        """Items lo..hi of (sample, channel tile) pairs, the tiles of a sample in order (a
        batch of one still splits between threads)."""
        b, tiles = self.b, self.geo.tile
        full_q, edge_channels = divmod(self.geo.out_channels, tiles)
        per_sample = i64(L.direct_channel_tiles(self.geo.out_channels))
        with loop(b, hi, "j", start=lo) as j:
            n, q = b.udiv(j, per_sample), b.urem(j, per_sample)
            if edge_channels:
                with b.if_else(b.icmp_unsigned("<", q, i64(full_q))) as (full, edge):
                    with full:
                        self.channel_tile(n, q, tiles)
                    with edge:
                        self.channel_tile(n, q, edge_channels)
            else:
                self.channel_tile(n, q, tiles)

    def channel_tile(self, n, q, channels: int) -> None:
        """Every output position of channels q*TILE... (`channels` of them stored): a call of
        the module's tile function."""
        b, s, geo = self.b, self.step, self.geo
        count, edge = L.direct_row_tiles(geo.out_size[1], self.k.node.dtype.itemsize)
        (KH, KW), (DH, DW) = geo.kernel, geo.dilation
        xs, ws, outs = self.strides[s.x], self.strides[s.w], self.strides[s.out]
        fn = _tile_function(self.k.module, self.ty, geo.tile, KW, DW, tuple(edge))
        b.call(fn, [self.pointer(s.x, self.at(s.x, n, 0, 0, 0)),
                    self.pointer(s.w, self.at(s.w, q, 0)),
                    self.pointer(s.out, self.at(s.out, n, b.mul(q, i64(geo.tile)), 0, 0)),
                    i64(channels), i64(geo.channels), i64(KH), i64(geo.out_size[0]),
                    i64(count), xs[1], b.mul(xs[2], i64(DH)), b.mul(xs[2], i64(geo.stride_h)),
                    ws[1], outs[1], outs[2]])


class _WeightGradTiles(_Tiles):
    """A DirectWeightGrad: for the input channels c of a thread's range, lane-wise sums

        partial[c, co, kh, kw, :] += g[n, co, oh, ow:ow+LANES] * x[n, c, row, ow + kw*dw:...]

    over every sample n (outermost, in order), row oh and vector of a row, DIRECT_GRAD_TILE
    output channels by up to three kernel columns at a time in registers (loaded from
    `partial` before a sample's rows and stored after), then out[co, c, kh, kw] = the lanes
    added in order. The loop order n, channel tile, c keeps a sample's tile of g in cache
    for every c (64 input channels of 16x16: 58 -> 73 GFLOP/s on one thread, where c
    outermost read all of g once per channel)."""

    TAPS = 3  # kernel columns per tile: 4 x 3 accumulators, 3 input vectors, 1 of g

    def check_rows(self, width: int) -> None:
        if width % self.lanes:  # graphc/ops/conv.direct_weight_grad rules this out
            raise BackendError(f"a direct weight gradient needs rows of whole vectors, got "
                               f"{width} positions")

    def emit(self, lo, hi) -> None:
        """Items lo..hi of (output channel tile q, input channel c) pairs, q-major: a thread
        that takes whole tiles runs them as n, q, c (a sample's tile of g in cache for every
        c), and a layer of few input channels (LeNet-5's first: one) still splits between
        threads by its tiles. Each sum adds the samples in order, on any split."""
        b, s = self.b, self.step
        C = self.geo.channels
        tile = L.DIRECT_GRAD_TILE
        full_q, edge_channels = divmod(self.geo.out_channels, tile)
        taps = self.geo.kernel[0] * self.geo.kernel[1] * self.lanes

        def item(u):
            """(c, q, first output channel, its channel count) of item u."""
            q, c = b.udiv(u, i64(C)), b.urem(u, i64(C))
            count = b.select(b.icmp_unsigned("<", q, i64(full_q)), i64(tile),
                             i64(edge_channels or tile))
            return c, q, b.mul(q, i64(tile)), count

        # the items' sums, cleared
        with loop(b, hi, "u", start=lo) as u:
            c, _q, co0, count = item(u)
            memset_zero(b, self.k.module, self.pointer(s.partial, self.at(s.partial, c, co0, 0, 0)),
                        b.mul(count, i64(taps * self.align)))
        with loop(b, self.k.dim(self.geo.batch), "n") as n, loop(b, hi, "u", start=lo) as u:
            c, q, co0, _count = item(u)
            if edge_channels:
                with b.if_else(b.icmp_unsigned("<", q, i64(full_q))) as (full, edge):
                    with full:
                        self.sample(c, n, co0, tile)
                    with edge:
                        self.sample(c, n, co0, edge_channels)
            else:
                self.sample(c, n, co0, tile)
        with loop(b, hi, "u", start=lo) as u:
            c, _q, co0, count = item(u)
            self.reduce_lanes(c, co0, count)

    def sample(self, c, n, co0, channels: int) -> None:
        """One sample's contribution to channels co0.. (`channels` of them), every tap: a
        call of the module's gradient tile function."""
        b, s, geo = self.b, self.step, self.geo
        (OH, OW), (KH, KW) = geo.out_size, geo.kernel
        DH, DW = geo.dilation
        xs, gs, ps = self.strides[s.x], self.strides[s.g], self.strides[s.partial]
        fn = _grad_tile_function(self.k.module, self.ty, channels, KW, DW)
        b.call(fn, [self.pointer(s.partial, self.at(s.partial, c, co0, 0, 0)),
                    self.pointer(s.x, self.at(s.x, n, c, 0, 0)),
                    self.pointer(s.g, self.at(s.g, n, co0, 0, 0)),
                    i64(KH), i64(OH), i64(OW // self.lanes), b.mul(xs[2], i64(geo.stride_h)),
                    b.mul(xs[2], i64(DH)), ps[1], ps[2], ps[3], gs[1], gs[2]])

    def reduce_lanes(self, c, co0, count) -> None:
        """out[co, c, kh, kw] = partial[c, co, kh, kw, 0] + ... + [lanes - 1], in order, for
        the `count` output channels from co0."""
        b, s = self.b, self.step
        KH, KW = self.geo.kernel
        with loop(b, count, "co") as j, loop(b, i64(KH), "kh") as kh, \
                loop(b, i64(KW), "kw") as kw:
            co = b.add(co0, j)
            at = self.at(s.partial, c, co, kh, kw)
            total = self.load(s.partial, at, self.ty)
            for lane in range(1, self.lanes):
                total = b.fadd(total, self.load(s.partial, b.add(at, i64(lane)), self.ty))
            self.store(s.out, total, self.at(s.out, co, c, kh, kw))


def _tile_function(module: ir.Module, ty: ir.Type, tile: int, kw_count: int, dw: int,
                   edge: tuple[int, ...]) -> ir.Function:
    """Every register tile of one sample's channel tile of a direct convolution (see the
    module's docstring): for each output row oh < OH, `count` tiles of two vectors along the
    row and then, where `edge` names vectors, one edge tile of them; each tile

        acc[t][v] = sum over c < C, kh < KH, kw < kw_count of
                    x[c*x_channel + kh*x_kh + oh*x_oh + ow0 + kw*dw + start[v] ...]
                    * w[c*w_channel + (kh*kw_count + kw)*tile + t]
        out[t*out_channel + oh*out_row + ow0 + start[v] ...] = acc[t][v]   for t < channels

    with x, w and out already at the sample's and channel tile's first element. The sizes
    and strides are arguments; what shapes the registers (the tile, the kernel's columns,
    the edge tile's vectors) is in the name, so every convolution of the same kernel width
    and row tiling calls one function."""
    vec, lanes, fma = vector_kit(module, ty)
    name = (f"graphc.direct_tile.{type_name(ty)}.{tile}x{kw_count}.d{dw}.e"
            + "_".join(map(str, edge)))
    fn, new = shared_function(module, name, [
        "x", "w", "out", "channels", "C", "KH", "OH", "count", "x_channel", "x_kh", "x_oh",
        "w_channel", "out_channel", "out_row"])
    if not new:
        return fn
    (x, w, out, channels, C, KH, OH, count, x_channel, x_kh, x_oh, w_channel, out_channel,
     out_row) = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    align = 4 if ty == F32 else 8

    def at(ptr, offset, typ):
        value = b.load(b.gep(ptr, [offset], source_etype=ty), typ=typ)
        value.align = align
        return value

    def one_tile(x_at, out_at, starts) -> None:
        with b.goto_entry_block():
            accs = [[b.alloca(vec) for _ in starts] for _ in range(tile)]
        for row in accs:
            for a in row:
                b.store(ir.Constant(vec, [0.0] * lanes), a)
        with loop(b, C, "c") as c:
            x_base, w_base = b.add(x_at, b.mul(c, x_channel)), b.mul(c, w_channel)
            with loop(b, KH, "kh") as kh:
                x_row = b.add(x_base, b.mul(kh, x_kh))
                w_row = b.add(w_base, b.mul(kh, i64(kw_count * tile)))
                # the accumulators in registers for a kernel row (LLVM promotes the slots)
                sums = [[b.load(a, typ=vec) for a in row] for row in accs]
                for kw in range(kw_count):
                    xs = [at(x, b.add(x_row, i64(kw * dw + start)), vec) for start in starts]
                    for t in range(tile):
                        weight = splat(b, at(w, b.add(w_row, i64(kw * tile + t)), ty), vec)
                        sums[t] = [b.call(fma, [xv, weight, acc]) for xv, acc in zip(xs, sums[t])]
                for row, values in zip(accs, sums):
                    for a, v in zip(row, values):
                        b.store(v, a)
        def store_channel(t):  # (the channels past the last one that exists end the tile)
            base = b.add(out_at, b.mul(i64(t), out_channel))
            for a, start in zip(accs[t], starts):
                st = b.store(b.load(a, typ=vec),
                             b.gep(out, [b.add(base, i64(start))], source_etype=ty))
                st.align = align

        while_present(b, fn, tile, channels, store_channel)

    full = [v * lanes for v in range(L.DIRECT_TILE_VECTORS)]
    with loop(b, OH, "oh") as oh:
        x_oh_at, out_oh_at = b.mul(oh, x_oh), b.mul(oh, out_row)
        with loop(b, count, "ot") as ot:
            ow0 = b.mul(ot, i64(full[-1] + lanes))
            one_tile(b.add(x_oh_at, ow0), b.add(out_oh_at, ow0), full)
        if edge:
            one_tile(x_oh_at, out_oh_at, list(edge))
    b.ret_void()
    return fn


def _grad_tile_function(module: ir.Module, ty: ir.Type, channels: int, kw_count: int,
                        dw: int) -> ir.Function:
    """One sample's sums for `channels` output channels of a direct weight gradient (see
    _WeightGradTiles): for each kernel row kh < KH and group of up to TAPS kernel columns,

        partial[t*p_channel + kh*p_kh + kw*p_tap + lane] += sum over oh < OH, v < vectors of
            g[t*g_channel + oh*g_row + v*LANES + lane]
            * x[kh*x_kh + oh*x_row + v*LANES + kw*dw + lane]

    with partial, x and g already at the sample's, channel's and tile's first element, the
    group's sums held in registers over the whole sample."""
    vec, lanes, fma = vector_kit(module, ty)
    name = f"graphc.direct_grad_tile.{type_name(ty)}.{channels}x{kw_count}.d{dw}"
    fn, new = shared_function(module, name, [
        "partial", "x", "g", "KH", "OH", "vectors", "x_row", "x_kh", "p_channel", "p_kh",
        "p_tap", "g_channel", "g_row"])
    if not new:
        return fn
    partial, x, g, KH, OH, vectors, x_row, x_kh, p_channel, p_kh, p_tap, g_channel, g_row = \
        fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    align = 4 if ty == F32 else 8

    def ptr(base, offset):
        return b.gep(base, [offset], source_etype=ty)

    def load(base, offset):
        value = b.load(ptr(base, offset), typ=vec)
        value.align = align
        return value

    with loop(b, KH, "kh") as kh:
        x_at, p_at = b.mul(kh, x_kh), b.mul(kh, p_kh)
        for kw0 in range(0, kw_count, _WeightGradTiles.TAPS):
            taps = range(kw0, min(kw_count, kw0 + _WeightGradTiles.TAPS))
            spots = [[b.add(p_at, b.add(b.mul(i64(t), p_channel), b.mul(i64(kw), p_tap)))
                      for kw in taps] for t in range(channels)]
            with b.goto_entry_block():
                accs = [[b.alloca(vec) for _ in taps] for _ in range(channels)]
            for row, places in zip(accs, spots):
                for a, place in zip(row, places):
                    b.store(load(partial, place), a)
            with loop(b, OH, "oh") as oh:
                xr, gr = b.add(x_at, b.mul(oh, x_row)), b.mul(oh, g_row)
                with loop(b, vectors, "v") as v:
                    ow = b.mul(v, i64(lanes))
                    xs = [load(x, b.add(xr, b.add(ow, i64(kw * dw)))) for kw in taps]
                    for t in range(channels):
                        gv = load(g, b.add(b.add(gr, ow), b.mul(i64(t), g_channel)))
                        for xv, a in zip(xs, accs[t]):
                            b.store(b.call(fma, [gv, xv, b.load(a, typ=vec)]), a)
            for row, places in zip(accs, spots):
                for a, place in zip(row, places):
                    st = b.store(b.load(a, typ=vec), ptr(partial, place))
                    st.align = align
    b.ret_void()
    return fn
