"""Data-parallel training on MPI: collectives as graph ops, gradients averaged in buckets.

    mpiexec -n 2 python train.py

Every process runs the same script on its shard of the data. ``gc.distributed.allreduce`` and
``broadcast`` are graph ops (graphc/ops/collective.py) lowered on every backend;
``opt.updates(cost, distributed=True)`` or ``DataParallel(opt).updates(cost)`` average the
gradients over the processes (weighted by each one's sample count) in fused buckets whose
collectives the static schedule starts as soon as their gradients exist. Compiling a
distributed step is collective: every process compiles it, and the parameters and optimizer
state are broadcast from rank 0. ``gc.train.fit`` shards every epoch across the processes.

Without mpiexec (or without mpi4py) everything here is single-process: ``rank() == 0``,
``size() == 1`` and the collectives are identities, so the same script runs on a laptop.
"""

from __future__ import annotations

from ..ops.collective import allreduce, broadcast, reduce_root
from .data_parallel import DataParallel, average_gradients, weighted_gradients
from .runtime import (
    abort,
    allreduce_array,
    barrier,
    broadcast_array,
    broadcast_object,
    describe,
    set_timeout,
)
from .runtime import rank as _rank
from .runtime import size as _size
from .sampler import shard_indices


def rank() -> int:
    """This process's number in the job, 0 … size()-1 (0 outside mpiexec)."""
    return _rank()


def size() -> int:
    """How many processes run this script together (1 outside mpiexec)."""
    return _size()


def is_main() -> bool:
    """True on rank 0, the process that prints, draws and writes files."""
    return _rank() == 0


__all__ = [
    "DataParallel", "abort", "allreduce", "allreduce_array", "average_gradients", "barrier",
    "broadcast", "broadcast_array", "broadcast_object", "describe", "is_main", "rank",
    "reduce_root", "set_timeout", "shard_indices", "size", "weighted_gradients",
]
