"""The graph IR: types with symbolic shapes, immutable nodes, graphs, and the Tensor handle."""

from .graph import Graph, get_default_graph, name_scope, reset_default_graph, topological, users
from .node import Attrs, ConstValue, Node, ParamStorage
from .shapes import ShapeChecks, sym
from .tensor import Tensor, apply, graph_of
from .types import TensorType, as_dtype

__all__ = [
    "Attrs", "ConstValue", "Graph", "Node", "ParamStorage", "ShapeChecks", "Tensor", "TensorType",
    "apply", "as_dtype", "get_default_graph", "graph_of", "name_scope", "reset_default_graph",
    "sym", "topological", "users",
]
