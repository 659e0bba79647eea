"""The one lowering registry of the native targets, keyed by op.

A lowering is ``fn(ctx)``: `ctx` is the target's context for one node (`node`, `position`,
`gen`, `target`, and ``ctx.kernel(suffix, work)`` for the kernel to build into — on the host
the node's one function, on a GPU a new launch). Most ops register one lowering for every
target: it renders the op's loop-nest description (graphc/ops/loops.py) with the target's
schedule. A target that needs its own code for an op (a GEMM calling BLAS or cuBLAS)
registers an override with ``target=``, as JAX's ``register_lowering(..., platform=)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from graphc.errors import BackendError
from graphc.ir.node import Node

Lowering = Callable[[object], None]
_LOWERINGS: dict[tuple[str | None, str], Lowering] = {}
TARGETS = ("llvm", "cuda")


def lowering(*ops: str, target: str | None = None) -> Callable[[Lowering], Lowering]:
    """Register ``fn(ctx)`` as the lowering of these ops, for every target or for one."""
    if target is not None and target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; targets are {TARGETS}")

    def deco(fn: Lowering) -> Lowering:
        for op in ops:
            _LOWERINGS[(target, op)] = fn
        return fn

    return deco


def lowering_for(node: Node, target: str) -> Lowering:
    """The lowering of a node's op on a target (its override, else the shared one)."""
    fn = _LOWERINGS.get((target, node.op.name)) or _LOWERINGS.get((None, node.op.name))
    if fn is None:
        raise BackendError(f"the {target} backend has no lowering for op {node.op.name}"
                           + (f" (used at {node.loc})" if node.loc else ""))
    return fn


class Coverage:
    """The ops a target lowers, as a container (``"conv" in Coverage("cuda")``)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __contains__(self, op: object) -> bool:
        return (self.target, op) in _LOWERINGS or (None, op) in _LOWERINGS

    def __iter__(self):
        return iter(sorted({op for t, op in _LOWERINGS if t in (None, self.target)}))

    def ops(self) -> Iterable[str]:
        return list(self)
