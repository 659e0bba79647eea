"""The shared lowering: an op that describes its kernel as loop nests (OpDef.loops, next to
its definition in graphc/ops) is lowered on every target by rendering them with that target's
schedule (nest.py). Importing this module registers it for every such op."""

from __future__ import annotations

from graphc.ops import REGISTRY

from .nest import render
from .registry import lowering

DESCRIBED = sorted(name for name, op in REGISTRY.items() if op.loops is not None)


@lowering(*DESCRIBED)
def described(ctx) -> None:
    """Render the node's loop nests (none, one, or several kernels in order)."""
    render(ctx, ctx.node.op.loops(ctx.node, ctx.gen.program))
