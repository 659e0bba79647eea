"""Leaf ops: placeholders (fed at call time), parameters (trainable state), constants."""

from __future__ import annotations

import numpy as np

from ..errors import GraphError, ShapeError
from ..ir.graph import Graph, get_default_graph
from ..ir.node import Attrs, ConstValue, ParamStorage
from ..ir.shapes import format_shape, normalize_shape
from ..ir.tensor import Tensor
from ..ir.types import DEFAULT_FLOAT, TensorType, as_dtype
from .registry import OpDef, register

PLACEHOLDER = register(OpDef(
    "placeholder", "source",
    infer=lambda types, attrs, checks: TensorType(attrs["dtype"], attrs["shape"]),
    hash_consed=False,
    doc="A graph input fed at call time; str shape entries are symbolic dimensions.",
))

PARAMETER = register(OpDef(
    "parameter", "source",
    infer=lambda types, attrs, checks: TensorType(
        attrs["storage"].value.dtype, attrs["storage"].value.shape
    ),
    hash_consed=False,
    doc="Trainable state: a NumPy array owned by the graph, shared by compiled functions.",
))

CONSTANT = register(OpDef(
    "constant", "source",
    infer=lambda types, attrs, checks: TensorType(
        attrs["value"].array.dtype, attrs["value"].array.shape
    ),
    reference=lambda *, value: value.array,
    doc="A constant array (hash-consed by content).",
))


def placeholder(name: str, shape, dtype="float32") -> Tensor:
    """A graph input. Shape entries are ints or names of symbolic dimensions ("N")."""
    if not isinstance(name, str) or not name:
        raise GraphError(f"placeholder name must be a non-empty str, got {name!r}")
    try:
        dims = normalize_shape(shape)
    except ShapeError as exc:
        raise ShapeError(f"placeholder {name!r}: {exc}") from None
    for d in dims:  # (a call binds each name to a size: 2*N would bind nothing; compile
        if not isinstance(d, int) and not d.is_Symbol:  # raised a raw ValueError on it)
            raise ShapeError(f"placeholder {name!r}: shape entry {d} is an expression; a "
                             f"placeholder's dims are ints and names (a tensor of shape "
                             f"{format_shape(dims)} is computed from the inputs instead)")
    graph = get_default_graph()
    attrs = Attrs(name=name, shape=dims, dtype=as_dtype(dtype))
    return Tensor(graph.make_node(PLACEHOLDER, (), attrs), graph)


def parameter(name: str, value, dtype=None) -> Tensor:
    """Trainable state: `value` (a NumPy array) is copied into the graph."""
    if not isinstance(name, str) or not name:
        raise GraphError(f"parameter name must be a non-empty str, got {name!r}")
    arr = np.asarray(value)
    if dtype is not None:
        arr = arr.astype(as_dtype(dtype))
    elif arr.dtype.kind == "f" and arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    as_dtype(arr.dtype)
    graph = get_default_graph()
    storage = ParamStorage(name, arr)
    return Tensor(graph.make_node(PARAMETER, (), Attrs(name=name, storage=storage)), graph)


def constant_array(value, dtype=None) -> np.ndarray:
    """Normalize a constant's value: Python floats become float32, ints int64 (or `dtype`)."""
    if dtype is not None:
        return np.asarray(value, dtype=as_dtype(dtype))
    arr = np.asarray(value)
    if arr.dtype == np.float64 and not isinstance(value, np.ndarray | np.generic):
        arr = arr.astype(DEFAULT_FLOAT)
    if arr.dtype.kind == "f" and arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(DEFAULT_FLOAT)
    if arr.dtype.kind in "iu" and arr.dtype not in (np.int32, np.int64):
        arr = arr.astype(np.int64)
    as_dtype(arr.dtype)
    return arr


def constant(value, dtype=None, graph: Graph | None = None) -> Tensor:
    """A constant tensor. Python scalars mix with tensors without calling this."""
    graph = graph or get_default_graph()
    arr = constant_array(value, dtype)
    return Tensor(graph.make_node(CONSTANT, (), Attrs(value=ConstValue(arr))), graph)
