"""Data-parallel gradients: every process's gradients averaged, weighted by its sample count,
in fused buckets (one collective per bucket, not one per parameter).

Each process differentiates n_r·cost_r, its mean loss scaled by its n_r samples. The gradient of
the mean loss over all samples is the sum of those gradients over the processes divided by
Σ_r n_r, so each bucket carries the scaled gradients and n_r itself, and one allreduce-sum gives
both the numerator and the denominator: a short last batch on one process weighs what it should.

A bucket's allreduce is split into ``allreduce_start`` / ``allreduce_wait`` (MPI_Iallreduce and
MPI_Wait): the scheduling pass (passes/collectives.py) starts it right after the bucket's last
gradient is computed and waits only where the averaged gradient is first used, so the
communication of the last layers' gradients overlaps the backward pass of the first layers.
Buckets are filled in the order the gradients become ready (the backward pass produces the last
layer's first), up to `bucket_mb` megabytes each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import ops
from ..errors import GraphError
from ..ir.graph import name_scope, topological
from ..ir.shapes import format_shape, prod
from ..ir.tensor import Tensor
from ..ops.collective import allreduce, allreduce_start, allreduce_wait
from . import runtime

DEFAULT_BUCKET_MB = 25.0  # PyTorch DDP's bucket_cap_mb


def sample_count(cost: Tensor) -> Tensor:
    """This process's number of samples (a scalar float64 tensor; symbolic sizes are read at
    run time): the batch dimension of the placeholders the cost depends on.

    The batch is the *symbolic* leading dimension those placeholders share (``x: (N, 3)``
    and ``y: (N,)`` give N); placeholders with a static leading size (a per-class weight of
    shape (2,)) are not batches and are ignored, whatever order they were created in. When
    no placeholder has a symbolic leading dimension, the static leading sizes must agree.
    Anything else is ambiguous — placeholders leading with different dimensions (time-major
    ``(T, N, F)`` next to labels ``(N,)``), or none batched at all — and a GraphError asks for
    ``samples=`` (``gc.distributed.DataParallel(opt, samples=...)``), never a guess."""
    batched = [n for n in topological([cost.node])
               if n.op.name == "placeholder" and len(n.shape) >= 1]
    hint = ("pass this process's sample count as samples= to gc.distributed.DataParallel "
            "(a number or a scalar tensor, e.g. gc.numel(x, axis=1) for time-major inputs)")
    if not batched:
        raise GraphError("distributed gradients are weighted by each process's sample count, "
                         f"but the cost depends on no batched placeholder: {hint}")
    symbolic = [n for n in batched if not isinstance(n.shape[0], int)]
    chosen = symbolic or batched
    leading = {str(n.shape[0]) for n in chosen}
    if len(leading) > 1:
        which = ", ".join(f"{n.name}: {format_shape(n.shape)}" for n in chosen)
        raise GraphError("distributed gradients are weighted by each process's sample count, "
                         "the batch dimension that leads the cost's inputs, but their leading "
                         f"dimensions differ ({which}), so the batch is ambiguous: {hint}")
    return ops.numel(Tensor(chosen[0], cost.graph), axis=0, dtype=np.float64)


def weighted_gradients(cost: Tensor, wrt: Sequence[Tensor], *, samples=None,
                       bucket_mb: float = DEFAULT_BUCKET_MB, overlap: bool = True,
                       build_alone: bool = False) -> list[Tensor]:
    """The gradient of the mean cost over every process's samples w.r.t. `wrt` (replicated
    parameters): each process differentiates n_r·cost_r, and the sums of those gradients and
    of the n_r, allreduced in buckets, give Σ_r n_r·∇cost_r / Σ_r n_r.

    Differentiating the scaled cost (rather than scaling the gradient) is what makes a model
    with collectives inside its forward pass right: through ``SyncBatchNorm``'s allreduce, each
    process's gradient receives the other processes' cotangents, which must carry their own
    weights. In one process: ``gc.grad(cost, wrt)``, unless `build_alone`."""
    from ..passes.autodiff import grad

    if runtime.size() == 1 and not build_alone:
        return grad(cost, list(wrt))
    with name_scope("data_parallel"):
        n = process_weight(cost, samples)
        scaled = cost * (ops.cast(n, cost.dtype) if cost.dtype != n.dtype else n)
    grads = grad(scaled, list(wrt))
    return average_gradients(grads, n, bucket_mb=bucket_mb, overlap=overlap)


def process_weight(cost: Tensor, samples) -> Tensor:
    """This process's weight in an average over the processes (a scalar float64 tensor):
    `samples` as given (a number or a tensor), or its batch size (`sample_count`)."""
    if samples is None:
        return sample_count(cost)
    if isinstance(samples, Tensor):
        return ops.cast(samples, np.float64) if samples.dtype != np.float64 else samples
    return ops.constant(np.asarray(float(samples)), graph=cost.graph)


def cost_flag_of_all(cost: Tensor, samples, overlap: bool) -> Tensor:
    """A scalar of the cost's dtype, NaN iff the cost of some process *with samples* is not
    finite and 0 otherwise (one scalar allreduce: skip_nonfinite's decision, the same on
    every process; a process with an empty batch, whose mean cost is NaN, neither skips
    alone nor makes the others skip). `overlap`: split into start and wait, as the gradient
    buckets are, so the schedule starts it after the forward pass."""
    n = process_weight(cost, samples)
    bad = ops.cast(n > 0.0, np.float64) * (1.0 - ops.cast(ops.isfinite(cost), np.float64))
    total = allreduce_wait(allreduce_start(bad, "sum"), bad) if overlap else \
        allreduce(bad, "sum")
    return ops.cast(ops.where(total > 0.0, total * np.nan, total * 0.0), cost.dtype)


def average_gradients(grads: Sequence[Tensor | None], n: Tensor, *,
                      bucket_mb: float = DEFAULT_BUCKET_MB,
                      overlap: bool = True) -> list[Tensor | None]:
    """Σ_r grads_r / Σ_r n_r over the processes, for gradients already scaled by this
    process's weight `n` (a scalar): buckets of gradients, each with n as its last element,
    one allreduce-sum per bucket. None entries stay None."""
    if bucket_mb <= 0:
        raise GraphError(f"bucket_mb must be > 0, got {bucket_mb}")
    present = [(k, g) for k, g in enumerate(grads) if g is not None]
    for _, g in present:
        if g.dtype.kind != "f":
            raise GraphError(f"a gradient of dtype {g.dtype} cannot be averaged")
        if not isinstance(prod(g.shape) if g.shape else 1, int):
            raise GraphError("gradients with symbolic shapes cannot be bucketed")
    with name_scope("data_parallel"):
        limit = bucket_mb * 2**20
        out: list[Tensor | None] = list(grads)
        # the order the backward pass produces them in: creation order of the gradient nodes
        ready = sorted(present, key=lambda kg: kg[1].node.uid)
        buckets: list[list[tuple[int, Tensor]]] = []
        open_bucket: dict[np.dtype, list] = {}
        for k, g in ready:
            bucket = open_bucket.get(g.dtype)
            size = (prod(g.shape) if g.shape else 1) * g.dtype.itemsize
            if bucket is None or (bucket and _bytes(bucket) + size > limit):
                bucket = []
                buckets.append(bucket)
                open_bucket[g.dtype] = bucket
            bucket.append((k, g))
        for bucket in buckets:
            dtype = bucket[0][1].dtype
            weight = ops.cast(n, dtype) if dtype != n.dtype else n
            flat = ops.concat([ops.reshape(g, (-1,)) for _, g in bucket]
                              + [ops.reshape(weight, (1,))], 0)
            if overlap:
                total = allreduce_wait(allreduce_start(flat, "sum"), flat)
            else:
                total = allreduce(flat, "sum")
            end = int(flat.shape[0])
            count = ops.reshape(total[end - 1:end], ())
            offset = 0
            for k, g in bucket:
                size = prod(g.shape) if g.shape else 1
                out[k] = ops.reshape(total[offset:offset + size], g.shape) / count
                offset += size
        return out


def _bytes(bucket) -> int:
    return sum((prod(g.shape) if g.shape else 1) * g.dtype.itemsize for _, g in bucket)


class DataParallel:
    """An optimizer whose updates average the gradients across MPI processes:
    ``DataParallel(opt).updates(cost)`` is ``opt.updates(cost, distributed=True)`` with the
    bucketing options below. Everything else (state, learning rate, ``skipped``) is the wrapped
    optimizer's.

    `bucket_mb`: the size of a fused bucket (one allreduce each); `overlap`: non-blocking
    collectives placed as early as their gradients allow (False: one blocking allreduce per
    bucket); `samples`: this process's weight in the average (default its batch size: the
    symbolic leading dimension of the cost's inputs, see `sample_count`; an ambiguous one is
    an error asking for `samples`); `build_alone`: build the buckets in a single
    process too (to inspect the schedule)."""

    def __init__(self, optimizer, *, bucket_mb: float = DEFAULT_BUCKET_MB, overlap: bool = True,
                 samples=None, build_alone: bool = False) -> None:
        if isinstance(optimizer, DataParallel):
            optimizer = optimizer.optimizer
        if not hasattr(optimizer, "updates") or not hasattr(optimizer, "gradients"):
            raise GraphError(f"DataParallel wraps a gc.optim optimizer, got "
                             f"{type(optimizer).__name__}")
        if bucket_mb <= 0:
            raise GraphError(f"bucket_mb must be > 0, got {bucket_mb}")
        self.optimizer = optimizer
        self.bucket_mb, self.overlap = float(bucket_mb), bool(overlap)
        self.samples, self.build_alone = samples, bool(build_alone)

    def gradients(self, cost: Tensor, wrt: Sequence[Tensor]) -> list[Tensor]:
        """The averaged gradients the wrapped optimizer updates with (before clipping)."""
        return weighted_gradients(cost, wrt, samples=self.samples, bucket_mb=self.bucket_mb,
                                  overlap=self.overlap, build_alone=self.build_alone)

    def updates(self, cost: Tensor, skip_nonfinite: bool = False,
                distributed: bool = True) -> dict[Tensor, Tensor]:
        """The wrapped optimizer's update dict, gradients averaged across processes."""
        return self.optimizer.updates(cost, skip_nonfinite=skip_nonfinite,
                                      distributed=self if distributed else False)

    def __getattr__(self, name: str):
        return getattr(self.optimizer, name)

    def __repr__(self) -> str:
        return f"DataParallel({self.optimizer!r}, bucket_mb={self.bucket_mb})"
