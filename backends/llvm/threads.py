"""Parallel loops on the host: the OpenMP runtime (libgomp) runs a nest's outermost loop on
every core, its threads taking chunks of it.

Generated code names three functions and one variable, bound here when a program is
compiled:

* ``graphc_parallel(fn, data, threads, flags)`` starts a team of `threads` threads, each
  calling ``fn(data)``, and returns when all are done: libgomp's ``GOMP_parallel``;
* ``graphc_thread_num()`` / ``graphc_team_size()``: ``omp_get_thread_num`` and
  ``omp_get_num_threads`` (a region sizes its chunks by the team);
* ``graphc_num_threads`` (i32): how many threads a region may use, read at every call:
  ``GRAPHC_NUM_THREADS``, default every core this process may run on.

The program is the same for any thread count and on a machine without libgomp (then the
count is 1 and the regions never start): a point of a nest computes the same value on any
thread, and threads take chunks, ranges of whole points, from a shared counter, so results
do not depend on the count or on which thread ran what.

libgomp's workers spin briefly (``GOMP_SPINCOUNT=100``, a few µs) and then sleep until the
next region, set by ``import graphc`` before the library loads unless the user chose a
policy (graphc/blas_policy.py). With libgomp's default (spin for milliseconds, then sleep)
a worker still spinning after a region took the second core from the BLAS's worker in the
next product: cnn32's step took 105 ms on two threads against 66 on one. Sleeping at once
(``OMP_WAIT_POLICY=PASSIVE`` alone, the policy until the eighth session) cost each region a
wake-up of 30-77 µs on the Zen 4 VM. The
process has one libgomp (PyTorch's is libgomp.so.1 too, and the loader shares it), so the
policy reaches PyTorch's regions as well; its cnn32 eager step took 50-54 ms either way.
Where the workers would spin on between regions anyway (the user's ``OMP_WAIT_POLICY=ACTIVE``
or a long ``GOMP_SPINCOUNT``, or libgomp loaded by another library before graphc), every
nest runs on the calling thread and ``graphc info`` says why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from functools import cache

import numpy as np
from llvmlite import ir

from graphc import blas_policy
from graphc.errors import BackendError

from ..kernelgen.irutil import I32, I64, PTR, declare, load
from ..kernelgen.toolchain import add_symbol

#: A nest of fewer points than this runs on the calling thread. A point is a plain one: a
#: load or two, a little arithmetic and a store (about 0.6 cycles on one thread of the 2-core
#: Zen 4 VM); other work says what its point is worth in these (`HostKernel.run_parallel`'s
#: `per_point`). The bar is where a region's hand-over (waking the sleeping worker: 20-30 µs
#: on that VM) pays: plain nests (a ReLU mask, a scaled sum, a row sum) ran 1.2-1.9x slower
#: on two threads than on one from 2^17 to 2^19 points and 0.75x at 2^20 and 2^21; LeNet-5's
#: max pooling (2^17.8 points) and its gradient took 1.5x as long on two. (It was 2^17 on
#: the Zen 3 VM of the earlier sessions; measured one thread against two in one process,
#: each nest compiled alone.)
PARALLEL_MIN_POINTS = 1 << 20
#: What a call of a costly math function adds to a point's worth (`nest.point_worth`): on
#: that VM, a point of tanh(x) * y took 2.3 cycles, of exp(x) + y 1.3, of a mask 0.6; tanh
#: paid on two threads from 2^17 points (0.90x, 0.75x at 2^18), exp from 2^19 (0.84x).
MATH_CALL_POINTS = 4
#: A register tile's multiply-adds worth one plain point: a direct convolution's tiles ran
#: 13-16 of them per time-stamp cycle (2.6 GHz) on one thread. A direct convolution's output
#: point is worth its reduction's length over this: LeNet-5's second layer, 64 samples of 16
#: channels of 8x8 outputs, is 65536 outputs but 9.8M multiply-adds, 0.28 ms on one thread
#: (0.71x on two).
MACS_PER_POINT = 8


@dataclass(frozen=True)
class ThreadRuntime:
    source: str  # where the parallel regions come from, for `graphc info`
    threads: int  # the count regions start with (GRAPHC_NUM_THREADS, or every core)
    openmp: bool  # False: no libgomp, every nest runs on the calling thread


_keep: list = []  # the counter and the fallbacks' callbacks must outlive every program


#: the most threads GRAPHC_NUM_THREADS or set_threads may ask for: libgomp would try to
#: start them all (99999999999 asked it for 272 GB and ended the process; 2^31 wrapped to a
#: negative count)
MAX_THREADS = 4096


def _count() -> int:
    chosen = os.environ.get("GRAPHC_NUM_THREADS", "").strip()
    if chosen:
        # (ASCII digits only: isdigit() is True for '²', which int() refuses)
        if not (chosen.isascii() and chosen.isdigit()) or not 1 <= int(chosen) <= MAX_THREADS:
            raise BackendError(f"GRAPHC_NUM_THREADS must be a whole number of threads, 1 to "
                               f"{MAX_THREADS}; it is {chosen!r}")
        return int(chosen)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _in_forked_child() -> None:
    """A forked child of a process with libgomp runs every region on its calling thread
    (graphc.blas_policy.FORKED_AFTER_OPENMP, whose handler ran first: it was registered at
    ``import graphc``)."""
    if blas_policy.FORKED_AFTER_OPENMP and _keep:
        _keep[0].value = 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_forked_child)


def set_threads(count: int) -> int:
    """Let parallel regions use `count` threads from now on (at most 1 without libgomp),
    and the BLAS's products as many at most (`blas_team`); returns the previous count.
    graphc's own kernels give the same bits with any count; a product the BLAS computes is
    rounded as the BLAS rounds it, and where the regions are held to one thread (libgomp's
    workers would spin) a product goes to the BLAS once it has more threads than the
    regions (`panel_gemm.fits`), not to graphc's panels. In a process forked from one
    that loaded libgomp the regions stay on one thread (blas_policy.FORKED_AFTER_OPENMP)."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or \
            not 1 <= int(count) <= MAX_THREADS:  # (1.5 or "2": what GRAPHC_NUM_THREADS refuses)
        raise BackendError(f"set_threads: a count of threads from 1 to {MAX_THREADS}, not "
                           f"{count!r}")
    openmp = runtime().openmp  # (binds the counter, _keep[0], on first use)
    counter = _keep[0]
    previous = counter.value
    counter.value = max(1, int(count)) if openmp and not blas_policy.FORKED_AFTER_OPENMP else 1
    _blas_team.value = max(1, int(count))
    return previous


#: the most threads a step's BLAS products may use (`graphc_blas_team`): the user's count,
#: GRAPHC_NUM_THREADS or set_threads, else every core. Not the regions' count, which is 1
#: where libgomp's workers would spin or there is no libgomp: that says nothing of the
#: BLAS's own threads (a PyTorch imported first made mlp_784's products one-threaded, 2.4
#: -> 4.4 ms, when they shared it).
_blas_team = ctypes.c_int32(1)


def blas_team(module: ir.Module) -> ir.GlobalVariable:
    return external_i32(module, "graphc_blas_team")


@cache
def runtime() -> ThreadRuntime:
    """Bind the generated code's parallel-loop symbols (once per process)."""
    from .blas import blas

    # workers that spin on between regions (the user's policy, or libgomp loaded before
    # graphc without a passive one) would take the BLAS's cores (see above), so every nest
    # runs on the calling thread; but libgomp's own default, loaded first by PyTorch, spins
    # for milliseconds only, and a step's products after a region then run on one BLAS
    # thread (kernels_linalg.blas_to_one_thread_if_workers_spin): its regions run
    default_first = blas_policy.OPENMP_DEFAULT_FIRST and blas().local_threads
    spins = "" if default_first else blas_policy.OPENMP_SPINS
    count = 1 if spins or blas_policy.FORKED_AFTER_OPENMP else _count()
    gomp = None
    for name in (ctypes.util.find_library("gomp"), "libgomp.so.1"):
        if not name:
            continue
        try:
            gomp = ctypes.CDLL(name)
            break
        except OSError:
            continue
    counter = ctypes.c_int32(count if gomp is not None else 1)
    _keep.append(counter)
    add_symbol("graphc_num_threads", ctypes.addressof(counter))
    _blas_team.value = _count()
    add_symbol("graphc_blas_team", ctypes.addressof(_blas_team))
    if gomp is not None:
        for ours, theirs in (("graphc_parallel", "GOMP_parallel"),
                             ("graphc_thread_num", "omp_get_thread_num"),
                             ("graphc_team_size", "omp_get_num_threads")):
            add_symbol(ours, ctypes.cast(getattr(gomp, theirs), ctypes.c_void_p).value)
        if spins:
            return ThreadRuntime(f"OpenMP (libgomp), 1 thread: {spins}", 1, True)
        if default_first:
            return ThreadRuntime(
                f"OpenMP (libgomp), {count} thread(s); workers: libgomp's default (a spin of "
                f"milliseconds), loaded before graphc (by PyTorch?): a step's products after "
                f"a region run on one BLAS thread; import graphc first, or set "
                f"OMP_WAIT_POLICY=PASSIVE, to keep the BLAS's threads there", count, True)

        return ThreadRuntime(f"OpenMP (libgomp), {count} thread(s); workers: "
                             f"{blas_policy.OPENMP_STATUS}", count, True)
    # no OpenMP runtime: every nest runs on the calling thread; the symbols still resolve
    region = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    fallbacks = (
        ("graphc_parallel", ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p,
                                             ctypes.c_uint32, ctypes.c_uint32)(
            lambda fn, data, n, flags: region(fn)(data))),
        ("graphc_thread_num", ctypes.CFUNCTYPE(ctypes.c_int32)(lambda: 0)),
        ("graphc_team_size", ctypes.CFUNCTYPE(ctypes.c_int32)(lambda: 1)),
    )
    for name, fn in fallbacks:
        _keep.append(fn)
        add_symbol(name, ctypes.cast(fn, ctypes.c_void_p).value)
    return ThreadRuntime("none (libgomp not found): one thread", 1, False)


#: what a region's threads share, as five i64: the part's three kernel arguments (pointers),
#: the count of outermost iterations, and the next iteration no thread has taken yet
REGION_WORDS = 5
PART = ir.FunctionType(I32, [PTR, PTR, PTR, I64, I64])


def external_i32(module: ir.Module, name: str) -> ir.GlobalVariable:
    """The module's declaration of a runtime i32 the process binds by name (add_symbol)."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    var = ir.GlobalVariable(module, I32, name=name)
    var.linkage = "external"
    return var


def thread_count(module: ir.Module) -> ir.GlobalVariable:
    return external_i32(module, "graphc_num_threads")


#: chunks per thread: a thread that shares its core with another process takes fewer
CHUNKS_PER_THREAD = 32


def region_entry(module: ir.Module, part: ir.Function) -> ir.Function:
    """``void <part>.region(ptr data)``: every thread of the team takes chunks of the
    outermost loop from a shared counter (an atomic add) until none is left, and runs each
    through `part`. A chunk is ceil(n / (team · CHUNKS_PER_THREAD)) iterations: which thread
    runs a point changes nothing in its result, and a thread slowed by a busy core simply
    takes fewer chunks."""
    name = f"{part.name}.region"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), name=name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    data = fn.args[0]
    slots, dims, ids = (b.inttoptr(load(b, data, I64, ir.Constant(I64, k)), PTR)
                        for k in range(3))
    n = load(b, data, I64, ir.Constant(I64, 3))
    counter = b.gep(data, [ir.Constant(I64, 4)], source_etype=I64)
    team = b.sext(b.call(declare(module, "graphc_team_size", I32, []), []), I64)
    pieces = b.mul(team, ir.Constant(I64, CHUNKS_PER_THREAD))
    chunk = b.sdiv(b.add(n, b.sub(pieces, ir.Constant(I64, 1))), pieces)
    chunk = b.select(b.icmp_signed("<", chunk, ir.Constant(I64, 1)), ir.Constant(I64, 1), chunk)
    head = b.append_basic_block("take")
    work = b.append_basic_block("work")
    done = b.append_basic_block("done")
    b.branch(head)
    b.position_at_end(head)
    lo = b.atomic_rmw("add", counter, chunk, "monotonic")
    b.cbranch(b.icmp_signed("<", lo, n), work, done)
    b.position_at_end(work)
    end = b.add(lo, chunk)
    hi = b.select(b.icmp_signed("<", end, n), end, n)
    b.call(part, [slots, dims, ids, lo, hi])
    b.branch(head)
    b.position_at_end(done)
    b.ret_void()
    return fn


def start_region(module: ir.Module, b: ir.IRBuilder, part: ir.Function, data: ir.Value,
                 threads: ir.Value) -> None:
    """Run `part` over the region `data` on `threads` threads; returns when all are done."""
    fn = declare(module, "graphc_parallel", ir.VoidType(), [PTR, PTR, I32, I32])
    b.call(fn, [region_entry(module, part), data, threads, ir.Constant(I32, 0)])
