"""OpDef: the one place an op is defined, and the registry of all ops.

An OpDef holds an op's shape/dtype rule (`infer`), its reference semantics in NumPy
(`reference`), its gradient rule (`grad`), which builds graph nodes, and its kernel for the
native targets as loop-nest descriptions (`loops`, see loops.py). Elementwise ops have
no hand-written reference or gradient: they carry a sympy expression (`expr`) from which both
are derived. Backends register lowerings keyed by `OpDef.name`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sympy

from ..ir.node import Attrs


class _GradMarker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: A gradient rule returns ZERO for an input whose gradient is mathematically zero
#: (the condition of `where`, the shape-only input of an op).
ZERO = _GradMarker("ZERO")
#: ... and BLOCKED for an input the op cannot be differentiated with respect to
#: (argmax, comparisons, one_hot, integer casts). gc.grad raises GraphError if a requested
#: gradient can only flow through such an input.
BLOCKED = _GradMarker("BLOCKED")


@dataclass(eq=False)
class OpDef:
    """Everything about one op, except how each backend lowers it."""

    name: str
    kind: str  # source | elementwise | reduction | shape | linalg | nn | index | random
    infer: Callable  # (input types, attrs, ShapeChecks) -> TensorType
    reference: Callable | None = None  # NumPy semantics: (*arrays, **attrs) -> array
    grad: Callable | None = None  # (GradContext) -> list[Tensor | ZERO | BLOCKED]
    expr: Callable[[Attrs], sympy.Expr] | None = None  # elementwise ops only
    # the kernel as loop nests (graphc/ops/loops.py): (node, program) -> LoopNest or a list
    loops: Callable | None = None
    hash_consed: bool = True
    # the inputs whose memory `reference`'s result may share (it returns a view of them, or
    # one of them): the NumPy backend's aliasing analysis reads this (passes/memory.py
    # value_roots), and tests/core/test_views.py checks it against what every op case returns
    reference_views: tuple[int, ...] = ()
    doc: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def is_elementwise(self) -> bool:
        return self.expr is not None

    def __repr__(self) -> str:
        return f"<op {self.name}>"


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} registered twice")
    REGISTRY[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"no op named {name!r}") from None


def all_ops() -> list[OpDef]:
    return list(REGISTRY.values())
