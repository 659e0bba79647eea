"""Tensor: the symbolic value users hold, with Python operators that build graph nodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import GraphError
from .graph import Graph, get_default_graph, in_graph_block
from .node import Attrs, Node


def _ops():
    import graphc.ops as ops  # the op library imports this module; bind it late

    return ops


class Tensor:
    """A symbolic tensor: a node of a graph. Build with the DSL, run with gc.compile."""

    __slots__ = ("node", "graph")
    __array_priority__ = 1000  # numpy scalars/arrays defer to our reflected operators

    def __init__(self, node: Node, graph: Graph) -> None:
        self.node = node
        self.graph = graph

    # -- type -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.node.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.node.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.node.type.shape)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def op(self) -> str:
        return self.node.op.name

    @property
    def value(self) -> np.ndarray:
        """The current value of a parameter (a copy; assign to set it)."""
        if self.node.op.name != "parameter":
            raise GraphError(f"{self.name} is a {self.op}, not a parameter: it has no value")
        from ..call_groups import between_calls

        storage = self.node.attrs["storage"]
        with between_calls(storage):  # (not half a step's update)
            return storage.value.copy()

    @value.setter
    def value(self, new) -> None:
        """Write a new value (checked: shape, dtype kind, and no finite value made non-finite
        by the conversion, e.g. 1e300 into float32 — a gc.ShapeError naming the parameter)."""
        if self.node.op.name != "parameter":
            raise GraphError(f"{self.name} is a {self.op}, not a parameter: it has no value")
        from ..call_groups import between_calls

        storage = self.node.attrs["storage"]
        with between_calls(storage):  # (not into the middle of a step)
            storage.write(new, key=repr(self.name))

    @property
    def requires_grad(self) -> bool:
        """Whether optimizers train this parameter (False once frozen); False for anything
        that is not a float parameter."""
        if self.node.op.name != "parameter" or self.dtype.kind != "f":
            return False
        return bool(self.node.attrs["storage"].requires_grad)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Freeze (False) or unfreeze a parameter, as PyTorch's ``requires_grad_``; the flag
        lives with its value, so every optimizer that builds an update graph afterwards sees
        it. Returns the tensor."""
        if self.node.op.name != "parameter":
            raise GraphError(f"{self.name} is a {self.op}, not a parameter: only parameters "
                             "can be frozen")
        self.node.attrs["storage"].requires_grad = bool(requires_grad)
        return self

    # -- == and != : elementwise as tensors, identity as Python truth values -----------------
    def __hash__(self) -> int:
        return hash(self.node.uid)

    def __eq__(self, other: object):
        return _Comparison.of(self, other, equal=True)

    def __ne__(self, other: object):
        return _Comparison.of(self, other, equal=False)

    def __bool__(self) -> bool:
        raise GraphError(
            f"the truth value of symbolic tensor {self.name} is unknown until the graph runs; "
            "use gc.where(cond, a, b) for data-dependent choices"
        )

    def __iter__(self):
        raise GraphError(f"symbolic tensor {self.name} cannot be iterated; index it instead")

    def __len__(self) -> int:
        if not self.shape:
            raise GraphError("len() of a 0-d tensor")
        first = self.shape[0]
        if not isinstance(first, int):
            raise GraphError(f"len() of {self.name}: first dimension {first} is symbolic")
        return first

    def __repr__(self) -> str:
        from .shapes import format_shape

        return f"<Tensor {self.name}: {self.op} {format_shape(self.shape)} {self.dtype}>"

    # -- arithmetic -------------------------------------------------------------------------
    def __add__(self, other):
        return _ops().add(self, other)

    def __radd__(self, other):
        return _ops().add(other, self)

    def __sub__(self, other):
        return _ops().sub(self, other)

    def __rsub__(self, other):
        return _ops().sub(other, self)

    def __mul__(self, other):
        return _ops().mul(self, other)

    def __rmul__(self, other):
        return _ops().mul(other, self)

    def __truediv__(self, other):
        return _ops().div(self, other)

    def __rtruediv__(self, other):
        return _ops().div(other, self)

    def __floordiv__(self, other):
        return _ops().floor_divide(self, other)

    def __rfloordiv__(self, other):
        return _ops().floor_divide(other, self)

    def __mod__(self, other):
        return _ops().remainder(self, other)

    def __rmod__(self, other):
        return _ops().remainder(other, self)

    def __pow__(self, other):
        return _ops().pow(self, other)

    def __rpow__(self, other):
        return _ops().pow(other, self)

    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __rmatmul__(self, other):
        return _ops().matmul(other, self)

    def __neg__(self):
        return _ops().neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ops().abs(self)

    def __lt__(self, other):
        return _ops().less(self, other)

    def __le__(self, other):
        return _ops().less_equal(self, other)

    def __gt__(self, other):
        return _ops().greater(self, other)

    def __ge__(self, other):
        return _ops().greater_equal(self, other)

    # -- methods ----------------------------------------------------------------------------
    def __getitem__(self, index):
        return _ops().getitem(self, index)

    @property
    def T(self) -> Tensor:
        return _ops().transpose(self)

    def reshape(self, *shape) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops().reshape(self, shape)

    def sum(self, axis=None, keepdims: bool = False) -> Tensor:
        return _ops().sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False) -> Tensor:
        return _ops().mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims: bool = False) -> Tensor:
        return _ops().max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims: bool = False) -> Tensor:
        return _ops().min(self, axis=axis, keepdims=keepdims)

    def astype(self, dtype) -> Tensor:
        return _ops().cast(self, dtype)


class _Comparison(Tensor):
    """``a == b`` / ``a != b``: used as a tensor (``gc.where(s == s, s, 0)``), the elementwise
    comparison with IEEE meaning (NaN == NaN is false), built when first used; as a Python
    truth value (``if a == b``, dict keys, ``in`` on lists), whether a and b are the same node,
    so tensors stay usable as dict keys (``updates``) and in lists."""

    __slots__ = ("_a", "_b", "_equal", "_built")

    @classmethod
    def of(cls, a: Tensor, b: object, equal: bool):
        if not isinstance(b, (Tensor, bool, int, float, np.generic, np.ndarray)):
            return NotImplemented  # None, strings...: Python compares identity
        out = cls.__new__(cls)
        out._a, out._b, out._equal, out._built = a, b, equal, None
        return out

    def _tensor(self) -> Tensor:
        if self._built is None:
            fn = _ops().equal if self._equal else _ops().not_equal
            self._built = fn(self._a, self._b)
        return self._built

    @property
    def node(self) -> Node:  # type: ignore[override]
        return self._tensor().node

    @property
    def graph(self) -> Graph:  # type: ignore[override]
        return self._tensor().graph

    def __bool__(self) -> bool:
        same = isinstance(self._b, Tensor) and self._b.node is self._a.node
        return same if self._equal else not same

    def __repr__(self) -> str:
        op = "==" if self._equal else "!="
        other = self._b.name if isinstance(self._b, Tensor) else repr(self._b)
        return f"<Tensor ({self._a.name} {op} {other}): elementwise when used as a tensor>"


TensorLike = Any  # Tensor | Python scalar | NumPy array


_SHAREABLE = ("parameter", "constant")


def graph_of(*values) -> Graph:
    """The graph shared by the tensors among `values` (the default graph if there are none).

    Parameters and constants may come from another graph: they are leaves holding their own
    value, so a module's parameters work in whichever graph the module is called. Anything
    else from two graphs is an error. A node built from such leaves only (the reshape of a
    bias, the decay of a running mean) goes to the graph of the active ``with gc.Graph():``
    block, where it will meet the other nodes of the model; outside any block, to the graph
    of its first leaf.
    """
    active = get_default_graph()
    if active.capture is not None:  # tracing a loop body: outer tensors get captured
        return active
    graph = None
    for v in values:
        if isinstance(v, Tensor) and v.node.op.name not in _SHAREABLE:
            if graph is None:
                graph = v.graph
            elif v.graph is not graph:
                raise GraphError(
                    f"tensors from two different graphs were combined ({graph.name!r} and "
                    f"{v.graph.name!r}); build a model inside one `with gc.Graph():` block"
                )
    if graph is None:
        leaves = [v for v in values if isinstance(v, Tensor)]
        if not leaves or in_graph_block() or any(t.graph is active for t in leaves):
            graph = active
        else:
            graph = leaves[0].graph
    return graph


def apply(op, inputs: Sequence[Tensor], **attrs: Any) -> Tensor:
    """Build the node `op(*inputs, **attrs)` in the inputs' graph and wrap it as a Tensor."""
    graph = graph_of(*inputs)
    if graph.capture is not None:  # a loop body: tensors from outside become its inputs
        nodes = [graph.capture(t) for t in inputs]
    else:
        nodes = [t.node if t.graph is graph else graph.adopt(t.node) for t in inputs]
    node = graph.make_node(op, nodes, Attrs(attrs))
    return Tensor(node, graph)
