"""Data-parallel gradients: every process's gradients averaged, weighted by its sample count,
in fused buckets (one collective per bucket, not one per parameter).

Each process computes the gradient g_r of its own mean loss over its n_r samples. The gradient
of the mean loss over all samples is Σ_r n_r·g_r / Σ_r n_r, so each bucket carries the scaled
gradients n_r·g_r and n_r itself, and one allreduce-sum gives both the numerator and the
denominator: a short last batch on one process weighs what it should.

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
from ..ir.shapes import prod
from ..ir.tensor import Tensor
from ..ops.collective import allreduce, allreduce_start, allreduce_wait
from . import runtime

DEFAULT_BUCKET_MB = 25.0  # PyTorch DDP's bucket_cap_mb


def sample_count(cost: Tensor) -> Tensor:
    """This process's number of samples: the leading size of the first batched placeholder the
    cost depends on (a scalar float64 tensor; symbolic sizes are read at run time)."""
    batched = [n for n in topological([cost.node])
               if n.op.name == "placeholder" and len(n.shape) >= 1]
    if not batched:
        raise GraphError("distributed gradients are weighted by each process's sample count, "
                         "but the cost depends on no batched placeholder: pass samples= to "
                         "gc.distributed.DataParallel")
    return ops.numel(Tensor(batched[0], cost.graph), axis=0, dtype=np.float64)


def average_gradients(grads: Sequence[Tensor | None], cost: Tensor, *, samples=None,
                      bucket_mb: float = DEFAULT_BUCKET_MB, overlap: bool = True,
                      build_alone: bool = False) -> list[Tensor | None]:
    """The gradients averaged over all processes, weighted by `samples` (default: the batch
    size of the cost's inputs). None entries stay None. In one process the gradients are
    returned as they are, unless `build_alone` (to look at the buckets and their schedule)."""
    if bucket_mb <= 0:
        raise GraphError(f"bucket_mb must be > 0, got {bucket_mb}")
    if runtime.size() == 1 and not build_alone:
        return list(grads)
    present = [(k, g) for k, g in enumerate(grads) if g is not None]
    for _, g in present:
        if g.dtype.kind != "f":
            raise GraphError(f"a gradient of dtype {g.dtype} cannot be averaged")
        if not isinstance(prod(g.shape) if g.shape else 1, int):
            raise GraphError("gradients with symbolic shapes cannot be bucketed")
    with name_scope("data_parallel"):
        if samples is None:
            n = sample_count(cost)
        elif isinstance(samples, Tensor):
            n = ops.cast(samples, np.float64) if samples.dtype != np.float64 else samples
        else:
            n = ops.constant(np.asarray(float(samples)), graph=cost.graph)
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
            flat = ops.concat([ops.reshape(g * weight, (-1,)) for _, g in bucket]
                              + [ops.reshape(weight, (1,))], 0)
            if overlap:
                total = allreduce_wait(allreduce_start(flat, "sum"), flat)
            else:
                total = allreduce(flat, "sum")
            end = int(flat.shape[0])
            count = total[end - 1:end]
            offset = 0
            for k, g in bucket:
                size = prod(g.shape) if g.shape else 1
                piece = ops.reshape(total[offset:offset + size], g.shape)
                out[k] = piece / ops.reshape(count, ())
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
    bucket); `samples`: this process's weight in the average (default its batch size, read
    from the cost's first batched input); `build_alone`: build the buckets in a single
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

    def average(self, grads: Sequence[Tensor | None], cost: Tensor) -> list[Tensor | None]:
        """What the wrapped optimizer calls between differentiating and clipping."""
        return average_gradients(grads, cost, samples=self.samples, bucket_mb=self.bucket_mb,
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
