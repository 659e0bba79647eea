"""The one table: ONNX op type -> the function that builds its graphc ops.

Each entry is ``fn(ctx, *inputs) -> value or list of values`` (see importer.NodeContext);
entries live in one module per op family (ops_math, ops_nn, ops_norm, ops_shape) and register
themselves with ``@onnx_op("Relu", ...)``. ``HANDLERS`` is filled when this module is
imported.
"""

from __future__ import annotations

from collections.abc import Callable

HANDLERS: dict[str, Callable] = {}


def onnx_op(*op_types: str):
    """Register the decorated function as the translation of the given ONNX op types."""

    def register(fn: Callable) -> Callable:
        for op_type in op_types:
            if op_type in HANDLERS:
                raise ValueError(f"ONNX op {op_type} registered twice")
            HANDLERS[op_type] = fn
        return fn

    return register


def supported_ops() -> list[str]:
    """Every ONNX op type graphc imports, sorted."""
    return sorted(HANDLERS)


from . import (  # noqa: E402,F401  (fills HANDLERS)
    ops_attention,
    ops_control,
    ops_math,
    ops_nn,
    ops_norm,
    ops_recurrent,
    ops_shape,
)
