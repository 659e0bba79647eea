"""Loop-nest descriptions: an op's kernel, written once beside its OpDef, rendered by every
native target (backends/kernelgen/nest.py: nested loops on the host, a grid-stride loop on a
GPU, the CUDA emulation running the GPU's).

A description says *what* each point of an output is, as a sympy expression over index
symbols, never *how* the loops run:

    LoopNest(domain=[(i, N), (j, M)],                      # the points (a GPU thread each)
             stores=[Store("out", (i, j), Load("x", j, i))])  # out[i, j] = x[j, i]

The vocabulary, on top of sympy's arithmetic, comparisons, Piecewise and the elementwise
functions (exp, log, ...):

* ``Load(buffer, *index)``: an element of a buffer, row-major over its shape;
* ``Reduce(op, body, where, (k, extent), ...)``: sum, max, min or max_first (the first
  maximum in scan order, the first NaN winning: graphc's tie rule) of `body` over the bounds;
* ``ArgMax(body, key, where, (k, extent), ...)``: the `key` of that first maximum;
* ``PhiloxUniform(counter, seed, step, stream)``: the uniform [0, 1) number of Philox4x32-10;
* integer division and remainder are `graphc.ops.expr.floordiv` / `mod` (NumPy's floor
  semantics), index symbols are `index_symbols(...)`.

An op's kernels are a list of such nests run in order, with `Gemm` steps between them where
the work is a matrix product (a convolution: columns, GEMM, permutation).

A nest may compute per point values once (`lets`), check ids (`checks`: an id out of range
stops the step with the error every backend gives) and run an inner loop (`inner`) whose
stores use the lets (a softmax row: the max and the sum once, then every element).

Windowed ops (convolution, pooling) share `tap` and `covering`: the one statement of the
window formula ``p = o*s + k*d - pad`` and of its inverse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import sympy

from . import expr as E

__all__ = ["CHANNELS_LAST_POSITIONS", "CHANNELS_LAST_VECTORS", "DIRECT_GRAD_TILE",
           "DIRECT_TILES", "DIRECT_TILE_FILL", "DIRECT_TILE_VECTORS",
           "direct_vector_bytes", "ArgMax", "Buf", "ChannelsLastConv", "ChannelsLastGeometry",
           "ChannelsLastWeightGrad", "Check", "ConvGeometry", "DirectConv", "DirectGeometry",
           "DirectWeightGrad", "Element", "Gemm", "Load", "LoopNest", "PhiloxUniform",
           "Reduce", "Repeat", "Schedules", "Store", "channels_last_tile", "covering",
           "direct_channel_tiles", "direct_row_tiles", "direct_tile", "direct_work",
           "elementwise_loops", "index_symbols", "inside", "tap"]


def index_symbols(names: str) -> tuple[sympy.Symbol, ...]:
    """Loop indices (nonnegative integers), e.g. ``i, j = index_symbols("i j")``."""
    return tuple(sympy.Symbol(f"_{n}", integer=True, nonnegative=True) for n in names.split())


class Load(sympy.Function):
    """``Load(buffer, *index)``: an element of a buffer (`buffer` a sympy Symbol naming it)."""


class Reduce(sympy.Function):
    """``Reduce(op, body, where, (k, extent), ...)`` with op one of sum, max, min, max_first
    (a Symbol). max/min propagate NaN (numpy.max); max_first is the value at ArgMax."""


class ArgMax(sympy.Function):
    """``ArgMax(body, key, where, (k, extent), ...)``: `key` (an index expression) at the first
    maximum of `body` in scan order; the first NaN wins (numpy.argmax; PyTorch's CPU pooling
    sends a window's gradient to its last NaN instead)."""


class Element(sympy.Function):
    """``Element(*values)``: the node's own element computation (its OpDef.expr, or a cast's
    conversion) applied to one value per input, with NumPy's promotion rules: the body of
    every elementwise op and fused group (kernelgen/elementwise.py emits it). A value is a
    Load, or a number for a 0-d constant input (an immediate the compiler can fold)."""


class PhiloxUniform(sympy.Function):
    """``PhiloxUniform(counter, seed, step, stream)``: float64 in [0, 1), the top 24 bits of
    word 0 of Philox4x32-10 at counter (counter_lo, counter_hi, step, stream), key seed."""


def reduce_(op: str, body, bounds, where=sympy.true) -> Reduce:
    """`Reduce` with its bounds as (symbol, extent) pairs."""
    return Reduce(sympy.Symbol(op), body, where, *[sympy.Tuple(k, n) for k, n in bounds])


def argmax(body, key, bounds, where=sympy.true) -> ArgMax:
    return ArgMax(body, key, where, *[sympy.Tuple(k, n) for k, n in bounds])


def reduce_parts(e) -> tuple[str, object, object, list]:
    """(op, body, where, [(k, extent)]) of a Reduce."""
    op, body, where, *bounds = e.args
    return op.name, body, where, [tuple(b) for b in bounds]


def argmax_parts(e) -> tuple[object, object, object, list]:
    """(body, key, where, [(k, extent)]) of an ArgMax."""
    body, key, where, *bounds = e.args
    return body, key, where, [tuple(b) for b in bounds]


@dataclass(frozen=True)
class Buf:
    """A buffer a nest reads or writes: an input of the node (`input=i`), its output, or a
    scratch buffer (`scratch=key`: shared by the nodes that name the same key, e.g. a max
    pooling's argmax, which its gradient reads). `shape` views the buffer (row-major;
    default: the node's or the input's shape), `dtype` a scratch buffer's type."""

    input: int | None = None
    output: bool = False
    scratch: tuple | None = None
    shape: tuple | None = None
    dtype: np.dtype | None = None


@dataclass
class Store:
    """``buffer[index] = value`` (``+=`` with `accumulate`, only where `where` holds: both only
    in a host form, see LoopNest.host; a GPU point writes its own element, unconditionally)."""

    buffer: str
    index: tuple
    value: object
    accumulate: bool = False
    where: object = sympy.true


@dataclass
class Check:
    """Stop the step (no update applied) unless ``0 <= value < bound``: an id or a label."""

    value: object
    bound: object


@dataclass
class LoopNest:
    """The points of `domain` (row-major, the last axis innermost), each computing its
    `lets` (in order), its `checks`, its `stores`, then the `inner` loop's stores."""

    buffers: dict[str, Buf]
    domain: list[tuple[sympy.Symbol, object]]
    stores: list[Store] = field(default_factory=list)
    lets: list[tuple[sympy.Symbol, object]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    inner: tuple[sympy.Symbol, object] | None = None
    inner_stores: list[Store] = field(default_factory=list)
    name: str = ""  # a suffix naming the kernel when an op has several
    # schedule choices a target may take: {"host": "memory_order"} lets the host run a plain
    # reduction in the input's memory order, accumulating into the output; {"rolled": True}
    # asks it to leave every loop of the domain rolled (LLVM still vectorizes the innermost:
    # for a copy that is cheap to run and costly to unroll, conv.PACK_HINTS), and
    # {"rolled": (axes...)} the loops of those domain axes (a pooling's output rows: LLVM
    # would unroll a short one whole rather than vectorize it)
    hints: dict = field(default_factory=dict)
    # the same computation in the order of its sources, which the host runs instead: a
    # reduction whose terms each go to one place (a max pooling's gradient: every window's g
    # to its argmax) scatters there, with `zero` buffers cleared first and accumulating
    # stores; a GPU runs the gather above (scattering would need atomics)
    host: LoopNest | None = None
    zero: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for s in [*self.stores, *self.inner_stores]:
            if s.buffer not in self.buffers:
                raise ValueError(f"store into undeclared buffer {s.buffer!r}")


@dataclass
class Gemm:
    """``c (+)= op(a) @ op(b)`` for whole row-major buffers viewed as matrices (op: transposed
    with `ta` / `tb`): c is (m, n), op(a) is (m, k), op(b) is (k, n). The one step that is not
    a loop nest: each target calls its library (BLAS on the host; cuBLAS, or the tiled GEMM of
    cuda/kernels_linalg.py, on a GPU)."""

    buffers: dict[str, Buf]
    a: str
    b: str
    c: str
    m: object
    n: object
    k: object
    ta: bool = False
    tb: bool = False
    accumulate: bool = False
    name: str = "gemm"
    # where a matrix starts in its buffer (elements; an expression over a Repeat's index)
    offsets: dict = field(default_factory=dict)


#: Output channels per register tile of a `DirectConv`, the first that fits (`direct_tile`):
#: its weights are packed in blocks of this many channels (the packing is a loop nest of the
#: op's description). A tile holds its channels by two vectors of 32 bytes (8 floats, 4
#: doubles) of a row: 6 channels are 12 accumulators, enough independent fused multiply-adds
#: to cover their latency on two FMA units (with 4 channels, 8 accumulators, a cnn32 layer
#: ran 5-9% slower), and still leave registers for the loads and broadcasts.
DIRECT_TILES = (6, 4)
#: the least share of a tile's channels that a channel count must fill to use that tile
DIRECT_TILE_FILL = 0.85
DIRECT_TILE_VECTORS = 2
#: CPUs whose AVX-512 instructions run as two 256-bit halves (Zen 4): a 64-byte vector does
#: the work of two 32-byte ones there, and leaves more of a short row's tile empty
HALF_WIDTH_AVX512 = ("znver4",)


@cache
def direct_vector_bytes() -> int:
    """The bytes of a vector of the direct convolution tiles (DIRECT_VECTOR_BYTES): 64 on a
    CPU with full-width AVX-512 (a Zen 5: cnn32's llvm step went from 27 to 16 ms), 32 on
    one with AVX2 only or half-width AVX-512 (a Zen 4: as fast, and fewer positions wasted
    at the end of a row). A fact of the machine, as its instruction set: the same program on
    every machine of a kind, whatever its speed; part of the machine-code cache's key through
    the CPU name and features (`kernelgen.toolchain.host_description`).
    ``GRAPHC_VECTOR_BYTES=32`` (or ``64``, on a CPU with AVX-512) chooses instead: the test
    suite's schedule tests are written for 32, and run 64 in tests of their own."""
    import os

    from llvmlite import binding as llvm

    from ..errors import BackendError

    llvm.initialize_native_target()
    features = llvm.get_host_cpu_features()
    avx512 = bool(features.get("avx512f", False) and features.get("avx512vl", False))
    chosen = os.environ.get("GRAPHC_VECTOR_BYTES", "").strip()
    if chosen:
        if chosen not in ("32", "64") or (chosen == "64" and not avx512):
            raise BackendError(f"GRAPHC_VECTOR_BYTES must be 32 or (on a CPU with AVX-512) "
                               f"64, got {chosen!r}")
        return int(chosen)
    return 64 if avx512 and llvm.get_host_cpu_name() not in HALF_WIDTH_AVX512 else 32


def __getattr__(name: str):
    if name == "DIRECT_VECTOR_BYTES":  # (read where it is used: a fact of the machine)
        return direct_vector_bytes()
    if name == "DIRECT_ROW_MULTIPLE":  # a `DirectWeightGrad` reads whole vectors of a row:
        return direct_vector_bytes() // 4  # rows of a multiple of these (both float sizes)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: A `DirectWeightGrad` holds DIRECT_GRAD_TILE output channels by up to three kernel columns
#: of lane-wise sums in registers (12 accumulators)
DIRECT_GRAD_TILE = 4


def direct_row_tiles(width: int, itemsize: int) -> tuple[int, list[int]]:
    """How a `DirectConv` covers a row of `width` output positions (at least one vector):
    the number of full tiles, then the starts of the vectors of one edge tile (none, one or
    two), the last one ending at the row's end. An edge vector may overlap the tile before
    it: it computes those positions again, in the same order, and stores the same bits."""
    lanes = direct_vector_bytes() // itemsize
    count, rest = divmod(width, DIRECT_TILE_VECTORS * lanes)
    if rest == 0:
        return count, []
    if rest <= lanes:
        return count, [width - lanes]
    return count, [width - rest, width - lanes]


def direct_tile(out_channels: int) -> int:
    """The channels of a `DirectConv` tile for `out_channels`: the first of DIRECT_TILES whose
    tiles the channels fill to DIRECT_TILE_FILL (32 channels: 6, filled to 0.89; 8 channels:
    4, where 6 would be filled to 0.67), else the last. A rule of the sizes."""
    for tile in DIRECT_TILES:
        if out_channels / (-(-out_channels // tile) * tile) >= DIRECT_TILE_FILL:
            return tile
    return DIRECT_TILES[-1]


def direct_channel_tiles(out_channels: int) -> int:
    """How many tiles cover `out_channels` (the last one part empty)."""
    return -(-out_channels // direct_tile(out_channels))


def direct_work(channels: int, width: int, itemsize: int) -> float:
    """The share of a `DirectConv`'s multiply-adds that make output: the rest fill the last
    channel tile and the overlapping edge vectors."""
    lanes = direct_vector_bytes() // itemsize
    count, edge = direct_row_tiles(width, itemsize)
    covered = (count * DIRECT_TILE_VECTORS + len(edge)) * lanes
    return channels * width / (direct_channel_tiles(channels) * direct_tile(channels) * covered)


@dataclass(frozen=True)
class ConvGeometry:
    """The sizes of a convolution's register-tile step, every one known but the batch: the
    input (padded) of spatial size `x_size` and `channels`, the output (batch, out_channels,
    *out_size), the kernel's size; a 1-D convolution is a 2-D one of height 1."""

    batch: object
    channels: int
    out_channels: int
    x_size: tuple[int, int]
    out_size: tuple[int, int]
    kernel: tuple[int, int]


@dataclass(frozen=True)
class DirectGeometry(ConvGeometry):
    """A direct convolution step's `ConvGeometry`: `x` viewed (batch, channels, *x_size),
    rows read with stride 1 and kernel rows with `stride_h`."""

    stride_h: int = 1
    dilation: tuple[int, int] = (1, 1)

    @property
    def tile(self) -> int:
        """Output channels per register tile (`direct_tile`)."""
        return direct_tile(self.out_channels)


@dataclass
class DirectConv:
    """A 2-D correlation with stride 1 along the last axis, over an input whose padding is
    already in memory (no edges to test):

        out[n, co, oh, ow] = sum over c, kh, kw of
            x[n, c, oh*stride_h + kh*dilation[0], ow + kw*dilation[1]] * w[co, c, kh, kw]

    with sizes `geometry` and `w` packed by `geometry.tile` output channels:
    (ceil(out_channels / tile), channels, *kernel, tile), zero past the last channel. A
    host-only step, like Gemm a contraction that each target renders its own way: the llvm
    backend as register tiles of vector accumulators (backends/llvm/direct_conv.py). A
    convolution uses it instead of im2col and a GEMM when the cost model
    (graphc/ops/conv.py, `direct`) says so."""

    buffers: dict[str, Buf]
    x: str
    w: str
    out: str
    geometry: DirectGeometry
    name: str = "direct_conv"



#: A `ChannelsLastConv` tile: CHANNELS_LAST_POSITIONS output positions by two vectors of
#: output channels (16 floats, 8 doubles), twelve accumulators as in a DirectConv tile
CHANNELS_LAST_POSITIONS = 6
CHANNELS_LAST_VECTORS = 2


def channels_last_tile(itemsize: int) -> int:
    """Output channels in one `ChannelsLastConv` tile: CHANNELS_LAST_VECTORS vectors."""
    return CHANNELS_LAST_VECTORS * direct_vector_bytes() // itemsize


@dataclass(frozen=True)
class ChannelsLastGeometry(ConvGeometry):
    """A channels-last convolution step's `ConvGeometry`: `x` (padded, channels last)
    viewed (batch, *x_size, channels), the output as the graph has it (NCHW); output
    position (oh, ow) reads the input from (oh*stride[0], ow*stride[1])."""

    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)


@dataclass
class ChannelsLastConv:
    """A 2-D correlation over an input stored channels last (NHWC), its padding in memory:

        out[n, co, oh, ow] = sum over kh, kw, c of
            x[n, oh*stride[0] + kh*dilation[0], ow*stride[1] + kw*dilation[1], c]
            * w[co, c, kh, kw]

    with `w` packed by tiles of `channels_last_tile` output channels: (tiles, *kernel,
    channels, tile), zero past the last channel. The layout the cost model chooses
    (graphc/ops/conv.py, `channels_last`) where the rows of the graph's NCHW layout are too
    short to fill a `DirectConv`'s tile: a tile holds CHANNELS_LAST_POSITIONS output
    positions (anywhere in the image: consecutive in row-major order) by a tile of output
    channels, so the row's length does not shape the registers. A host-only step
    (backends/llvm/channels_last_conv.py); the output keeps the graph's layout, so nothing
    outside the step sees the channels-last copy."""

    buffers: dict[str, Buf]
    x: str
    w: str
    out: str
    geometry: ChannelsLastGeometry
    name: str = "channels_last_conv"


@dataclass
class ChannelsLastWeightGrad:
    """The weight gradient of a convolution, from its input stored channels last (NHWC,
    padded, the channels padded with zeros to whole vectors) and the gradient as the graph
    has it (NCHW):

        out[co, c, kh, kw] = sum over n, oh, ow of
            g[n, co, oh, ow] * x[n, oh*stride[0] + kh*dilation[0], ow*stride[1] + kw*dilation[1], c]

    A tile holds CHANNELS_LAST_POSITIONS output channels by `channels_last_tile` input
    channels (two vectors of x's row) for one kernel tap, summed over every output position
    of the batch in order (n, oh, ow): the sum is as long as the batch's positions, however
    small the image or large the stride. The tiles are split between threads, each sum
    computed by one: the same bits on any thread count. A host-only step
    (backends/llvm/channels_last_conv.py)."""

    buffers: dict[str, Buf]
    x: str
    g: str
    out: str
    geometry: ChannelsLastGeometry
    name: str = "channels_last_weight_grad"


@dataclass
class DirectWeightGrad:
    """The weight gradient of a convolution of `DirectConv`'s form:

        out[co, c, kh, kw] = sum over n, oh, ow of
            g[n, co, oh, ow] * x[n, c, oh*stride_h + kh*dilation[0], ow + kw*dilation[1]]

    with sizes `geometry` (`g` viewed (batch, out_channels, *out_size)), rows of a multiple of
    DIRECT_ROW_MULTIPLE positions. `partial` is a scratch
    buffer of (channels, out_channels, *kernel, lanes) sums, lanes =
    DIRECT_VECTOR_BYTES // itemsize: each lane sums its own positions, sample after sample,
    and then the lanes are added in order. A host-only step (backends/llvm/direct_conv.py);
    the threads split the input channels, so the sums run in the same order on any thread
    count."""

    buffers: dict[str, Buf]
    x: str
    g: str
    out: str
    partial: str
    geometry: DirectGeometry
    name: str = "direct_weight_grad"


@dataclass
class Repeat:
    """`steps` once for every `index` in [0, extent), in order: a host schedule (a GPU runs
    its whole-batch steps instead), e.g. a convolution a sample at a time, its columns small
    enough to stay in cache between the im2col that writes them and the GEMM that reads them.
    The steps may use `index` in their expressions and Gemm offsets.

    `independent`: no iteration reads what another writes, each writes its own part of the
    output (the output's elements it stores hold the index), and its scratch buffers are
    its own (written before they are read, within the iteration). A host may then run the
    iterations on several threads, each with a copy of the scratch."""

    index: sympy.Symbol
    extent: object
    steps: list
    independent: bool = False


class Schedules:
    """One op's kernels in two orders: `host` steps and `gpu` steps (a thread per point, no
    write shared between points). Both are built from the same pieces (a convolution's
    im2col, window formula and GEMM); a target renders its own. `gpu` may be given as a
    function that builds the steps, called only if a GPU asks for them (building a window's
    sympy expressions is a tenth of a host compile of cnn32)."""

    def __init__(self, host: list, gpu: list | Callable[[], list]) -> None:
        self.host = host
        self._gpu = gpu

    @property
    def gpu(self) -> list:
        if callable(self._gpu):
            self._gpu = self._gpu()
        return self._gpu


def buffer(name: str) -> sympy.Symbol:
    """The symbol naming a buffer in Load."""
    return sympy.Symbol(name)


def load(name: str, *index) -> Load:
    return Load(buffer(name), *index)


# -- elementwise ops --------------------------------------------------------------------------


def elementwise_loops(node, program) -> LoopNest:
    """Every elementwise op, fused group and cast: each output point from its inputs' elements
    at the same point, broadcast (NumPy's rules: an input of lower rank lines up with the
    trailing axes; a size-1 axis is read at 0)."""
    idx = index_symbols(" ".join(f"i{a}" for a in range(node.ndim)))
    buffers = {"out": Buf(output=True)}
    values = []
    for j, x in enumerate(node.inputs):
        scalar = x.attrs["value"].array if x.op.name == "constant" else None
        if scalar is not None and scalar.ndim == 0 and not (scalar == 0 and np.signbit(scalar)):
            values.append(_number(scalar.item()))  # (sympy has no -0.0: that one is loaded)
            continue
        lead = node.ndim - x.ndim
        index = [0 if d == 1 and node.shape[a + lead] != 1 else idx[a + lead]
                 for a, d in enumerate(x.shape)]
        buffers[f"x{j}"] = Buf(input=j)
        values.append(load(f"x{j}", *index))
    return LoopNest(buffers, list(zip(idx, node.shape)), [Store("out", idx, Element(*values))],
                    hints={"host": "collapse"})


def _number(v):
    """A scalar as a sympy number, exactly (a float keeps its binary value; NaN and the
    infinities as sympy's)."""
    if isinstance(v, (bool, np.bool_)):
        return sympy.Integer(int(v))
    if isinstance(v, (int, np.integer)):
        return sympy.Integer(int(v))
    v = float(v)
    if v != v:
        return sympy.nan
    if v in (float("inf"), float("-inf")):
        return sympy.oo if v > 0 else -sympy.oo
    return sympy.Float(v, 53)


# -- the window of convolutions and pooling, stated once --------------------------------------


def tap(o, k, stride: int, dilation: int, padding: int):
    """The input position read by output position `o` at kernel offset `k`."""
    return o * stride + k * dilation - padding


def inside(p, size):
    """Position `p` is in [0, size) (outside: the window reads padding)."""
    return sympy.And(p >= 0, p < size)


def covering(p, k, stride: int, dilation: int, padding: int, out_size):
    """The output position whose window reads input position `p` at kernel offset `k`, and
    whether there is one: ``o = (p + pad - k*d) / s`` when that is an integer in range."""
    num = p + padding - k * dilation
    o = E.floordiv(num, stride) if stride != 1 else num
    ok = sympy.And(num >= 0, sympy.Eq(E.mod(num, stride), 0), o < out_size) if stride != 1 \
        else sympy.And(num >= 0, num < out_size)
    return o, ok
