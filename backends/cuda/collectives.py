"""Collectives on the GPU target, staged through host memory.

A collective node is a *host step* in the launch plan (``Launch(kind="host")``): the executable
waits for the launches before it, copies the node's input from the device, runs the collective
on the host buffer with mpi4py (graphc/distributed/runtime.py), and copies the result back
before the next launch. The emulator does the same on its host arena. A device-side transport
(NCCL, or CUDA-aware MPI on device pointers) would skip the two copies; see docs/distributed.md.

The split form ``allreduce_start`` / ``allreduce_wait`` is staged as one blocking allreduce at
the start (the wait copies its result): with the copies on the step's path there is nothing to
overlap.
"""

from __future__ import annotations

import numpy as np

from graphc.ir.node import Node
from graphc.ir.text import identifier
from graphc.ops.collective import COLLECTIVES

from ..kernelgen.registry import lowering
from .codegen import Launch


@lowering(*COLLECTIVES, target="cuda")
def host_step(ctx) -> None:
    """A host step instead of a kernel: no device code for this node."""
    gen = ctx.gen
    name = identifier(f"h{ctx.position}_{ctx.node.op.name}", max_length=128)
    gen.launches.append(Launch(name, ctx.node, kind="host"))
    gen.launch_plan.append(len(gen.launches) - 1)


def run_host_step(node: Node, inputs: list[np.ndarray]) -> np.ndarray:
    """The value of a collective node from its inputs, on the host."""
    from graphc.distributed import runtime

    op, attrs = node.op.name, node.attrs
    if op in ("allreduce", "allreduce_start"):
        return runtime.allreduce_array(inputs[0], attrs["reduction"])
    if op == "allreduce_wait":
        return inputs[0]
    if op == "broadcast":
        return runtime.broadcast_array(inputs[0], attrs["root"])
    if op == "reduce_root":
        return runtime.reduce_array(inputs[0], attrs["root"])
    raise AssertionError(f"no host step for {op}")
