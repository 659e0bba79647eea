"""Collectives as graph ops: allreduce, broadcast and reduce across MPI processes.

A collective is an op like any other: a shape rule (the value keeps its type), NumPy semantics
(mpi4py on the buffers, graphc/distributed/runtime.py), a gradient rule that builds graph nodes,
and a lowering per backend (the llvm backend calls MPI from the native step,
backends/llvm/collectives.py). The family is closed under differentiation:

* ``allreduce(x, "sum")``: every process gets Σ_r x_r; the cost's gradient w.r.t. x_r is
  Σ_s g_s, an allreduce-sum of the incoming gradients (``"mean"``: their allreduce-mean).
* ``allreduce(x, "max")``: the gradient flows to the processes holding the maximum, shared
  evenly between ties, as graphc's ``max`` shares it between tied elements.
* ``broadcast(x, root)``: everyone gets x_root; the gradient is the sum of everyone's gradient
  on `root` and zero elsewhere — ``reduce_root`` — whose own gradient is a broadcast.

In one process every collective is an identity. The bucketed gradient average of data-parallel
training uses the split form ``allreduce_start`` / ``allreduce_wait`` (MPI_Iallreduce, then
MPI_Wait), so that the static schedule can start the communication as soon as a bucket's last
gradient exists and wait for it only where its result is first needed
(passes/collectives.py). ``allreduce_wait`` takes the start's input as a second input so
that the memory planner keeps the send buffer intact until the wait.
"""

from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..ir.tensor import Tensor, apply
from .registry import OpDef, register

ALLREDUCE_OPS = ("sum", "mean", "max")
#: ops that communicate: never folded, and a program holding one is a distributed step
COLLECTIVES = ("allreduce", "broadcast", "reduce_root", "allreduce_start", "allreduce_wait")


def _runtime():
    from ..distributed import runtime

    return runtime


def _same_type(types, attrs, checks):
    return types[0]


def _allreduce_infer(types, attrs, checks):
    if attrs["reduction"] not in ALLREDUCE_OPS:
        raise GraphError(f"allreduce: op must be one of {ALLREDUCE_OPS}, got "
                         f"{attrs['reduction']!r}")
    if types[0].dtype.kind not in "fiu":
        raise GraphError(f"allreduce takes numbers, got {types[0].dtype}: cast first")
    if attrs["reduction"] == "mean" and types[0].dtype.kind != "f":
        raise GraphError(f"allreduce(op='mean') needs a float tensor, got {types[0].dtype}")
    return types[0]


def _allreduce_reference(x, *, reduction):
    return _runtime().allreduce_array(x, reduction)


def _allreduce_grad(ctx):
    from .cast import cast
    from .elementwise import div, equal, mul

    op = ctx.node.attrs["reduction"]
    if op in ("sum", "mean"):
        return [allreduce(ctx.g, op)]
    (x,) = ctx.inputs
    hit = cast(equal(x, ctx.out), x.dtype)
    return [mul(hit, div(allreduce(ctx.g, "sum"), allreduce(hit, "sum")))]


ALLREDUCE = register(OpDef(
    "allreduce", "collective", infer=_allreduce_infer, reference=_allreduce_reference,
    grad=_allreduce_grad, hash_consed=True,
    doc="Element-wise sum, mean or maximum of x over all MPI processes (identity alone).",
))


def _root_infer(types, attrs, checks):
    root = attrs["root"]
    if not isinstance(root, int) or root < 0:
        raise GraphError(f"the root of a collective is a process rank (an int >= 0), got {root!r}")
    if types[0].dtype.kind not in "fiu":
        raise GraphError(f"collectives take numbers, got {types[0].dtype}: cast first")
    return types[0]


BROADCAST = register(OpDef(
    "broadcast", "collective", infer=_root_infer,
    reference=lambda x, *, root: _runtime().broadcast_array(x, root),
    grad=lambda ctx: [reduce_root(ctx.g, ctx.node.attrs["root"])],
    doc="Process `root`'s x on every process; its gradient is a sum-reduce to the root.",
))

REDUCE_ROOT = register(OpDef(
    "reduce_root", "collective", infer=_root_infer,
    reference=lambda x, *, root: _runtime().reduce_array(x, root),
    grad=lambda ctx: [broadcast(ctx.g, ctx.node.attrs["root"])],
    doc="The sum of x over all processes on `root`, zeros on the others (broadcast's adjoint).",
))


class Pending:
    """An allreduce in flight in the NumPy backend: the result buffer and its MPI request."""

    __slots__ = ("out", "request", "op")

    def __init__(self, out: np.ndarray, request, op: str) -> None:
        self.out, self.request, self.op = out, request, op

    def wait(self) -> np.ndarray:
        out = _runtime().finish_allreduce(self.out, self.request, self.op)
        self.request = None
        return out


def _start_reference(x, *, reduction):
    out, request = _runtime().start_allreduce(x, reduction)
    return Pending(out, request, reduction)


def _wait_reference(pending, x, *, reduction):
    if isinstance(pending, Pending):
        return pending.wait()
    return np.array(pending)  # (a folded or hand-fed start: already complete)


def _no_grad(what):
    def rule(ctx):
        raise GraphError(f"{what} is the split form of allreduce that data-parallel training "
                         "builds after differentiation; differentiate gc.distributed.allreduce")
    return rule


ALLREDUCE_START = register(OpDef(
    "allreduce_start", "collective", infer=_allreduce_infer, reference=_start_reference,
    grad=_no_grad("allreduce_start"),
    doc="Begins a non-blocking allreduce (MPI_Iallreduce); its value is valid after the wait.",
))
ALLREDUCE_WAIT = register(OpDef(
    "allreduce_wait", "collective", infer=_same_type, reference=_wait_reference,
    grad=_no_grad("allreduce_wait"),
    doc="Completes an allreduce_start (MPI_Wait); its second input is the start's send buffer.",
))


def _as_tensor(x, what: str) -> Tensor:
    from .elementwise import lift

    if isinstance(x, Tensor):
        return x
    (t,) = lift(x)
    return t


def allreduce(t, op: str = "sum") -> Tensor:
    """The element-wise ``"sum"``, ``"mean"`` or ``"max"`` of t over every MPI process; the
    same value on all of them. Differentiable; an identity in a single process."""
    x = _as_tensor(t, "allreduce")
    if op not in ALLREDUCE_OPS:
        raise GraphError(f"allreduce: op must be one of {ALLREDUCE_OPS}, got {op!r}")
    return apply(ALLREDUCE, [x], reduction=op)


def broadcast(t, root: int = 0) -> Tensor:
    """Process `root`'s value of t, on every process. Differentiable (the gradient is summed
    onto `root`); an identity in a single process."""
    return apply(BROADCAST, [_as_tensor(t, "broadcast")], root=_rank_attr(root))


def reduce_root(x, root: int = 0) -> Tensor:
    """Σ_r x_r on process `root`, zeros on the others (broadcast's gradient)."""
    return apply(REDUCE_ROOT, [_as_tensor(x, "reduce_root")], root=_rank_attr(root))


def allreduce_start(x: Tensor, op: str = "sum") -> Tensor:
    """The non-blocking half of an allreduce; pass the result to `allreduce_wait`."""
    return apply(ALLREDUCE_START, [x], reduction=op)


def allreduce_wait(started: Tensor, x: Tensor) -> Tensor:
    """The completed allreduce of `x` begun by ``started = allreduce_start(x)``."""
    if started.op != "allreduce_start" or started.node.inputs[0].uid != x.node.uid:
        raise GraphError("allreduce_wait(started, x) needs started = allreduce_start(x)")
    return apply(ALLREDUCE_WAIT, [started, x], reduction=started.node.attrs["reduction"])


def _rank_attr(root) -> int:
    if isinstance(root, (bool, np.bool_)) or not isinstance(root, (int, np.integer)) or root < 0:
        raise GraphError(f"the root of a collective is a process rank (an int >= 0), got {root!r}")
    return int(root)
