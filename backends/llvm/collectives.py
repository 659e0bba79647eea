"""Collectives on the host: the native step calls MPI itself (no Python between ops).

Under mpiexec, a collective's kernel calls ``MPI_Allreduce`` / ``MPI_Iallreduce`` +
``MPI_Wait`` / ``MPI_Bcast`` / ``MPI_Reduce`` of the very library mpi4py loaded: its entry
points are JIT symbols (``graphc_MPI_*``) and the communicator, datatype and operation handles
are read from a table (``graphc_mpi_handles``) that graphc/distributed/runtime.py fills in, so
the machine code is the same in every process and is cached like any other. In a single
process a collective is a copy.

A non-blocking allreduce keeps its ``MPI_Request`` in a scratch slot shared by its start and
wait kernels; the wait's second input (the send buffer) keeps that buffer alive until then.
"""

from __future__ import annotations

from llvmlite import ir

from graphc.distributed import runtime
from graphc.errors import BackendError

from ..kernelgen.irutil import (
    I32,
    I64,
    PTR,
    convert,
    declare,
    i64,
    ir_type,
    load,
    loop,
    memcpy,
    memset_zero,
    store,
)
from ..kernelgen.program import KernelContext
from ..kernelgen.registry import lowering

_DTYPES = {"float32": "float32", "float64": "float64", "int32": "int32", "int64": "int64"}


def _handles(ctx: KernelContext) -> ir.Value:
    table = ctx.module.globals.get("graphc_mpi_handles")
    if table is None:
        table = ir.GlobalVariable(ctx.module, ir.ArrayType(I64, len(runtime.HANDLES)),
                                  name="graphc_mpi_handles")
        table.linkage = "external"
    return table


def _handle(ctx: KernelContext, name: str) -> ir.Value:
    """The MPI handle `name` (runtime.HANDLES), at the implementation's handle width."""
    b = ctx.b
    word = b.load(b.gep(_handles(ctx), [ir.Constant(I32, 0),
                                        ir.Constant(I32, runtime.handle_index(name))]), typ=I64)
    width = runtime.native().handle_bits
    return word if width == 64 else b.trunc(word, ir.IntType(width))


def _dtype_handle(ctx: KernelContext) -> ir.Value:
    name = _DTYPES.get(ctx.node.dtype.name)
    if name is None:
        raise BackendError(f"{ctx.node.op.name} on the llvm backend takes float32, float64, "
                           f"int32 or int64 values, not {ctx.node.dtype}: cast first")
    return _handle(ctx, name)


def _count(ctx: KernelContext) -> ir.Value:
    n = ctx.numel()
    if isinstance(n, ir.Constant) and int(n.constant) >= 2**31:
        raise BackendError(f"{ctx.node.op.name}: {n.constant} values exceed MPI's int count; "
                           "use smaller buckets (gc.distributed.DataParallel(bucket_mb=...))")
    return ctx.b.trunc(n, I32)


def _mpi_fn(ctx: KernelContext, name: str, args: list) -> ir.Function:
    return declare(ctx.module, f"graphc_MPI_{name}", I32, args)


def _scale_by_size(ctx: KernelContext) -> None:
    """out /= size (allreduce "mean"), in the node's float type."""
    b, ty = ctx.b, ctx.ty()
    size = convert(b, _handle_word(ctx, "size"), I64, ty)
    with loop(b, ctx.numel(), "i") as i:
        store(b, b.fdiv(load(b, ctx.out_ptr, ty, i), size), ctx.out_ptr, ty, i)


def _handle_word(ctx: KernelContext, name: str) -> ir.Value:
    b = ctx.b
    return b.load(b.gep(_handles(ctx), [ir.Constant(I32, 0),
                                        ir.Constant(I32, runtime.handle_index(name))]), typ=I64)


def _copy(ctx: KernelContext, source: int = 0) -> None:
    if not ctx.same_buffer(ctx.node, ctx.node.inputs[source]):
        memcpy(ctx.b, ctx.module, ctx.out_ptr, ctx.in_ptr(source), ctx.nbytes())


def _op_handle(ctx: KernelContext) -> ir.Value:
    return _handle(ctx, "max" if ctx.attrs["reduction"] == "max" else "sum")


def _check_root(ctx: KernelContext) -> int:
    root = ctx.attrs["root"]
    if root >= runtime.size():
        raise BackendError(f"{ctx.node.op.name}: root {root} is not a process of this job "
                           f"(size {runtime.size()})")
    return root


@lowering("allreduce", target="llvm")
def allreduce(ctx: KernelContext) -> None:
    if not runtime.active():
        _copy(ctx)
        return
    h = ir.IntType(runtime.native().handle_bits)
    fn = _mpi_fn(ctx, "Allreduce", [PTR, PTR, I32, h, h, h])
    ctx.b.call(fn, [ctx.in_ptr(0), ctx.out_ptr, _count(ctx), _dtype_handle(ctx),
                    _op_handle(ctx), _handle(ctx, "comm")])
    if ctx.attrs["reduction"] == "mean":
        _scale_by_size(ctx)


@lowering("broadcast", target="llvm")
def broadcast(ctx: KernelContext) -> None:
    _copy(ctx)
    if not runtime.active():
        return
    h = ir.IntType(runtime.native().handle_bits)
    fn = _mpi_fn(ctx, "Bcast", [PTR, I32, h, I32, h])
    ctx.b.call(fn, [ctx.out_ptr, _count(ctx), _dtype_handle(ctx),
                    ir.Constant(I32, _check_root(ctx)), _handle(ctx, "comm")])


@lowering("reduce_root", target="llvm")
def reduce_root(ctx: KernelContext) -> None:
    if not runtime.active():
        _copy(ctx)
        return
    b = ctx.b
    h = ir.IntType(runtime.native().handle_bits)
    root = _check_root(ctx)
    memset_zero(b, ctx.module, ctx.out_ptr, ctx.nbytes())
    fn = _mpi_fn(ctx, "Reduce", [PTR, PTR, I32, h, h, I32, h])
    b.call(fn, [ctx.in_ptr(0), ctx.out_ptr, _count(ctx), _dtype_handle(ctx),
                _handle(ctx, "sum"), ir.Constant(I32, root), _handle(ctx, "comm")])
    with b.if_then(b.icmp_signed("!=", _handle_word(ctx, "rank"), i64(root))):
        memset_zero(b, ctx.module, ctx.out_ptr, ctx.nbytes())  # (significant at the root only)


def _request(ctx: KernelContext, start_uid: int) -> ir.Value:
    slot, _ = ctx.shared_scratch(("mpi_request", start_uid),
                                 max(runtime.native().request_bytes, 8))
    return ctx.slot_ptr(slot, "request")


@lowering("allreduce_start", target="llvm")
def allreduce_start(ctx: KernelContext) -> None:
    if not runtime.active():
        _copy(ctx)
        return
    h = ir.IntType(runtime.native().handle_bits)
    fn = _mpi_fn(ctx, "Iallreduce", [PTR, PTR, I32, h, h, h, PTR])
    ctx.b.call(fn, [ctx.in_ptr(0), ctx.out_ptr, _count(ctx), _dtype_handle(ctx),
                    _op_handle(ctx), _handle(ctx, "comm"), _request(ctx, ctx.node.uid)])


@lowering("allreduce_wait", target="llvm")
def allreduce_wait(ctx: KernelContext) -> None:
    if runtime.active():
        started = ctx.node.inputs[0]
        status = ctx.scratch(runtime.native().status_bytes, "status")
        ctx.b.call(_mpi_fn(ctx, "Wait", [PTR, PTR]), [_request(ctx, started.uid), status])
    _copy(ctx, 0)
    if runtime.active() and ctx.attrs["reduction"] == "mean":
        _scale_by_size(ctx)


__all__ = ["allreduce", "allreduce_start", "allreduce_wait", "broadcast", "reduce_root",
           "ir_type"]
