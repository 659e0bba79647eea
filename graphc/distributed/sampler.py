"""Sharding an epoch across processes, as PyTorch's ``DistributedSampler``.

Every process draws the same shuffled order (same seed, same epoch), pads it by repeating its
first examples until its length is a multiple of the process count, and takes every size()-th
example starting at its rank. All processes then hold the same number of examples, so they run
the same number of steps: a process with one step fewer would leave the others waiting in a
collective forever. Step k of process r with batch b reads examples ``r + p·(k·b + j)`` of the
padded order, so the p processes together read exactly the k-th batch of p·b examples that one
process would read with ``batch_size = p·b``.
"""

from __future__ import annotations

import numpy as np


def shard_indices(order, rank: int, size: int) -> np.ndarray:
    """Process `rank`'s share of `order` (an index array, or a count n for ``arange(n)``):
    padded to a multiple of `size`, then every `size`-th element from `rank`."""
    order = np.arange(order) if np.ndim(order) == 0 else np.asarray(order)
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"need 0 <= rank < size, got rank {rank} of {size}")
    if len(order) == 0:
        raise ValueError("cannot shard an empty data set")
    total = -(-len(order) // size) * size
    if total > len(order):
        order = np.concatenate([order, np.resize(order, total - len(order))])
    return order[rank::size]


def average_logs(logs: dict[str, float], weight: float) -> dict[str, float]:
    """Per-process metrics averaged over the processes, weighted by `weight` (the examples
    each one saw); the same dict on every process. Identity in one process."""
    from ..errors import GraphError
    from . import runtime

    if not runtime.active():
        return dict(logs)
    keys = sorted(logs)
    # the same keys everywhere, or the allreduce below would mix arrays of different lengths
    every = runtime.comm().allgather(keys)
    if any(k != every[0] for k in every):
        which = "; ".join(f"rank {r}: {k}" for r, k in enumerate(every))
        raise GraphError(f"the processes recorded different metrics ({which}): every process "
                         "must compute the same outputs")
    # a process that saw nothing (weight 0) adds nothing, not NaN·0
    values = np.array([float(logs[k]) * weight if weight else 0.0 for k in keys]
                      + [float(weight)])
    total = runtime.allreduce_array(values, "sum")
    merged = {k: float(v / total[-1]) if total[-1] else float("nan")
              for k, v in zip(keys, total[:-1])}
    return {k: merged[k] for k in logs}  # (the caller's order: the loss first)
