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
    I32,
    contiguous_strides,
    declare,
    i64,
    ir_type,
    linear_index,
    memset_zero,
    product,
)
from ..kernelgen.irutil import loop as counted_loop
from ..kernelgen.nest import buffer_slot

__all__ = ["direct_conv"]


def loop(b, count, name, start=None):
    """A counted loop LLVM leaves rolled: the tiles are unrolled by hand already, and
    unrolling the loops around them cost 12-15% of cnn32's compile time for no faster step
    (measured side by side)."""
    return counted_loop(b, count, name, start=start, unroll=False)


def direct_conv(ctx, step) -> None:
    """Render a DirectConv or DirectWeightGrad `step` into the kernel `ctx` (a HostKernel):
    its outer loop (over samples by channel tiles; the input channels of a weight gradient)
    in its own function, run on every thread when the step is large enough
    (`run_parallel`)."""
    part = ctx.host_part()
    lo, hi = part.bounds
    geo = step.geometry
    oh, ow = geo.out_size
    if isinstance(step, L.DirectWeightGrad):
        _WeightGradTiles(part, step, (step.x, step.g, step.out, step.partial)).emit(lo, hi)
        kh, kw = geo.kernel
        counts = [i64(geo.channels), i64(geo.out_channels * kh * kw),
                  product(ctx.b, [ctx.dim(geo.batch), i64(oh * ow)])]
    else:
        _Tiles(part, step, (step.x, step.w, step.out)).emit(lo, hi)
        # the items: every (sample, channel tile) pair, of TILE x oh x ow outputs each
        counts = [product(ctx.b, [ctx.dim(geo.batch),
                                  i64(L.direct_channel_tiles(geo.out_channels))]),
                  i64(geo.tile * oh * ow)]
    part.finish()
    ctx.run_parallel(part, counts)


class _Tiles:
    """A DirectConv's tiles, in the part function `k` of the kernel."""

    def __init__(self, k, step, names) -> None:
        self.k, self.b, self.step, self.geo = k, k.b, step, step.geometry
        self.ty = ir_type(k.node.dtype)
        self.lanes = L.DIRECT_VECTOR_BYTES // k.node.dtype.itemsize
        self.vec = ir.VectorType(self.ty, self.lanes)
        self.align = k.node.dtype.itemsize
        self.check_rows(self.geo.out_size[1])
        self.ptrs = {name: k.slot_ptr(buffer_slot(k.gen, k.node, step.buffers[name]), name)
                     for name in names}
        # every buffer of a direct step has its shape, all of it known but the batch
        self.strides = {name: contiguous_strides(k.b, [i64(1)] + [
            i64(int(d)) for d in step.buffers[name].shape[1:]]) for name in names}

    def at(self, name: str, *index):
        """The element offset of `index` (values or ints) in buffer `name`."""
        return linear_index(self.b, [i64(i) if isinstance(i, int) else i for i in index],
                            self.strides[name])

    def check_rows(self, width: int) -> None:
        if width < self.lanes:  # graphc/ops/conv.DIRECT_MIN_WIDTH rules this out
            raise BackendError(f"a direct convolution needs rows of {self.lanes} positions "
                               f"or more, got {width}")

    def fma(self, a, x, acc):
        name = f"llvm.fma.v{self.lanes}{'f32' if self.ty == F32 else 'f64'}"
        return self.b.call(declare(self.k.module, name, self.vec, [self.vec] * 3), [a, x, acc])

    def splat(self, scalar):
        b = self.b
        one = b.insert_element(ir.Constant(self.vec, ir.Undefined), scalar, i64(0))
        zeros = ir.Constant(ir.VectorType(I32, self.lanes), [0] * self.lanes)
        return b.shuffle_vector(one, ir.Constant(self.vec, ir.Undefined), zeros)

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
        """Every output position of channels q*TILE... (`channels` of them stored)."""
        b = self.b
        count, edge = L.direct_row_tiles(self.geo.out_size[1], self.k.node.dtype.itemsize)
        full = [v * self.lanes for v in range(L.DIRECT_TILE_VECTORS)]
        with loop(b, i64(self.geo.out_size[0]), "oh") as oh:
            if count:
                with loop(b, i64(count), "ot") as ot:
                    self.tile(n, q, oh, b.mul(ot, i64(full[-1] + self.lanes)), full, channels)
            if edge:
                self.tile(n, q, oh, i64(0), edge, channels)

    def tile(self, n, q, oh, ow0, starts: list[int], channels: int) -> None:
        """Output positions ow0 + starts[v] (a vector each) of channels q*TILE..., of which
        the first `channels` are stored."""
        b, s, tile = self.b, self.step, self.geo.tile
        C, XW, (KH, KW) = self.geo.channels, self.geo.x_size[1], self.geo.kernel
        DH, DW = self.geo.dilation
        with b.goto_entry_block():
            accs = [[b.alloca(self.vec) for _ in starts] for _ in range(tile)]
        for row in accs:
            for a in row:
                b.store(ir.Constant(self.vec, [0.0] * self.lanes), a)
        with loop(b, i64(C), "c") as c:
            x_base = self.at(s.x, n, c, b.mul(oh, i64(self.geo.stride_h)), ow0)
            w_base = self.at(s.w, q, c)
            with loop(b, i64(KH), "kh") as kh:
                x_row = b.add(x_base, b.mul(kh, i64(DH * XW)))
                w_row = b.add(w_base, b.mul(kh, i64(KW * tile)))
                # the accumulators in registers for a kernel row (LLVM promotes the slots)
                sums = [[b.load(a, typ=self.vec) for a in row] for row in accs]
                for kw in range(KW):
                    xs = [self.load(s.x, b.add(x_row, i64(kw * DW + start)), self.vec)
                          for start in starts]
                    for t in range(tile):
                        weight = self.splat(self.load(s.w, b.add(w_row, i64(kw * tile + t)),
                                                      self.ty))
                        sums[t] = [self.fma(x, weight, acc) for x, acc in zip(xs, sums[t])]
                for row, values in zip(accs, sums):
                    for a, v in zip(row, values):
                        b.store(v, a)
        for t in range(channels):
            base = self.at(s.out, n, b.add(b.mul(q, i64(tile)), i64(t)), oh, ow0)
            for a, start in zip(accs[t], starts):
                self.store(s.out, b.load(a, typ=self.vec), b.add(base, i64(start)))


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
        b, s = self.b, self.step
        CO, (KH, KW) = self.geo.out_channels, self.geo.kernel
        per_channel = CO * KH * KW * self.lanes
        tile = L.DIRECT_GRAD_TILE
        full_q, edge_channels = divmod(CO, tile)
        # this thread's input channels' sums, cleared
        memset_zero(b, self.k.module, b.gep(self.ptrs[s.partial], [b.mul(lo, i64(per_channel))],
                                            source_etype=self.ty),
                    b.mul(b.sub(hi, lo), i64(per_channel * self.align)))
        # a sample's gradient for a channel tile stays in cache while every input channel of
        # the range reads it; each sum still adds the samples in order
        with loop(b, self.k.dim(self.geo.batch), "n") as n:
            if full_q:
                with loop(b, i64(full_q), "q") as q:
                    with loop(b, hi, "c", start=lo) as c:
                        self.sample(c, n, b.mul(q, i64(tile)), tile)
            if edge_channels:
                with loop(b, hi, "c", start=lo) as c:
                    self.sample(c, n, i64(full_q * tile), edge_channels)
        with loop(b, hi, "c", start=lo) as c:
            self.reduce_lanes(c)

    def sample(self, c, n, co0, channels: int) -> None:
        """One sample's contribution to channels co0.. (`channels` of them), every tap."""
        b, s = self.b, self.step
        (OH, OW), (KH, KW) = self.geo.out_size, self.geo.kernel
        DH, DW = self.geo.dilation
        with loop(b, i64(KH), "kh") as kh:
            for kw0 in range(0, KW, self.TAPS):
                taps = range(kw0, min(KW, kw0 + self.TAPS))
                # partial[c, co0 + t, kh, kw, :]
                spots = [[self.at(s.partial, c, b.add(co0, i64(t)), kh, kw) for kw in taps]
                         for t in range(channels)]
                with b.goto_entry_block():
                    accs = [[b.alloca(self.vec) for _ in taps] for _ in range(channels)]
                for row, places in zip(accs, spots):
                    for a, place in zip(row, places):
                        b.store(self.load(s.partial, place, self.vec), a)
                with loop(b, i64(OH), "oh") as oh:
                    x_row = self.at(s.x, n, c, b.add(b.mul(oh, i64(self.geo.stride_h)),
                                                     b.mul(kh, i64(DH))))
                    g_row = self.at(s.g, n, co0, oh)
                    with loop(b, i64(OW // self.lanes), "v") as v:
                        ow = b.mul(v, i64(self.lanes))
                        xs = [self.load(s.x, b.add(x_row, b.add(ow, i64(kw * DW))), self.vec)
                              for kw in taps]
                        for t in range(channels):
                            gv = self.load(s.g, b.add(g_row, b.add(ow, i64(t * OH * OW))),
                                           self.vec)
                            for x, a in zip(xs, accs[t]):
                                b.store(self.fma(gv, x, b.load(a, typ=self.vec)), a)
                for row, places in zip(accs, spots):
                    for a, place in zip(row, places):
                        self.store(s.partial, b.load(a, typ=self.vec), place)

    def reduce_lanes(self, c) -> None:
        """out[co, c, kh, kw] = partial[c, co, kh, kw, 0] + ... + [lanes - 1], in order."""
        b, s = self.b, self.step
        CO, (KH, KW) = self.geo.out_channels, self.geo.kernel
        with loop(b, i64(CO), "co") as co, loop(b, i64(KH), "kh") as kh, \
                loop(b, i64(KW), "kw") as kw:
            at = self.at(s.partial, c, co, kh, kw)
            total = self.load(s.partial, at, self.ty)
            for lane in range(1, self.lanes):
                total = b.fadd(total, self.load(s.partial, b.add(at, i64(lane)), self.ty))
            self.store(s.out, total, self.at(s.out, co, c, kh, kw))
