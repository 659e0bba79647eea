"""Immutable IR nodes and the small value types their attributes hold.

A node is an op applied to input nodes with frozen attributes. Nodes are hash-consed by their
graph: building the same op on the same inputs with the same attributes twice returns the same
node, so common-subexpression elimination is free and structural identity is object identity.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SourceLocation
from .types import TensorType

if TYPE_CHECKING:
    from ..ops.registry import OpDef

_uids = itertools.count(1)


class Attrs(Mapping):
    """A frozen, hashable mapping of op attributes (values must be hashable)."""

    __slots__ = ("_items", "_hash")

    def __init__(self, items: Mapping | None = None, **kwargs: Any) -> None:
        merged = dict(items or {}, **kwargs)
        self._items = tuple(sorted(merged.items()))
        self._hash = hash(self._items)

    def __getitem__(self, key: str) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attrs) and self._items == other._items

    def replace(self, **changes: Any) -> Attrs:
        return Attrs(dict(self._items), **changes)

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k}={v!r}" for k, v in self._items) + "}"


class ConstValue:
    """A NumPy array made hashable by content, for constant nodes' attributes."""

    __slots__ = ("array", "_hash")

    def __init__(self, array: np.ndarray) -> None:
        arr = np.array(array, copy=True, order="C")
        arr.setflags(write=False)
        self.array = arr
        self._hash = hash((arr.dtype.str, arr.shape, arr.tobytes()))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ConstValue)
            and self.array.dtype == other.array.dtype
            and self.array.shape == other.array.shape
            and self.array.tobytes() == other.array.tobytes()
        )

    def __repr__(self) -> str:
        if self.array.size <= 6:
            return np.array2string(self.array, separator=", ")
        return f"<{self.array.dtype} array {self.array.shape}>"


class ParamStorage:
    """The live value of a parameter, shared by its graph and every compiled function.

    Compared by identity: two parameters with equal values are still two parameters.
    `value` is a C-contiguous host array updated in place by compiled steps. A device backend
    that keeps a newer copy on its device registers itself as `device`: reading `value` then
    fetches that copy first, and `write` (or `Tensor.value = ...`) tells it the host changed.
    """

    __slots__ = ("name", "_value", "uid", "next_stream", "device", "__weakref__")

    def __init__(self, name: str, value: np.ndarray) -> None:
        self.name = name
        self._value = np.array(value, copy=True, order="C")
        self.uid = next(_uids)
        self.next_stream = 0  # how many random ops already draw from this (RNG state) parameter
        self.device = None  # an object with pull(storage) and host_changed(storage)

    @property
    def value(self) -> np.ndarray:
        if self.device is not None:
            self.device.pull(self)
        return self._value

    def write(self, new) -> None:
        """Copy new values in (same shape; dtype cast within its kind), in place."""
        np.copyto(self.value, new, casting="same_kind")
        if self.device is not None:
            self.device.host_changed(self)

    def __repr__(self) -> str:
        return f"<parameter {self.name} {self.value.shape} {self.value.dtype}>"


class Node:
    """One value of the graph: ``op(*inputs, **attrs)`` with its inferred type.

    ``loc`` is the user's source line that created the node; ``scope`` the name scope it was
    created in (``"mlp/linear1"``); ``assumptions`` the symbolic-shape facts its shape rule
    needed (sympy relations with explanations), checked when a compiled function is called.
    """

    __slots__ = ("op", "inputs", "attrs", "type", "uid", "loc", "scope", "assumptions", "label")

    def __init__(
        self,
        op: OpDef,
        inputs: tuple[Node, ...],
        attrs: Attrs,
        type: TensorType,
        loc: SourceLocation | None = None,
        scope: str = "",
        assumptions: tuple = (),
        label: str | None = None,
    ) -> None:
        init = object.__setattr__
        init(self, "op", op)
        init(self, "inputs", inputs)
        init(self, "attrs", attrs)
        init(self, "type", type)
        init(self, "uid", next(_uids))
        init(self, "loc", loc)
        init(self, "scope", scope)
        init(self, "assumptions", assumptions)
        init(self, "label", label)

    def __setattr__(self, name: str, value: Any) -> None:
        # Only the display label may be set after creation (it is not part of the identity).
        if name != "label":
            raise AttributeError("nodes are immutable; passes build new nodes instead")
        object.__setattr__(self, name, value)

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.type.shape)

    @property
    def name(self) -> str:
        """Placeholders keep their user name; other nodes get op_uid, or their label.

        A parameter's label is its qualified name in a module tree (``"conv1.weight"``), set
        when the module that owns it is attached to a parent; it defaults to the name the
        parameter was created with.
        """
        if self.op.name == "placeholder":
            return self.attrs["name"]
        if self.op.name == "parameter":
            return self.label or self.attrs["name"]
        return self.label or f"{self.op.name}_{self.uid}"

    def key(self) -> tuple:
        return (self.op.name, tuple(i.uid for i in self.inputs), self.attrs)

    def __repr__(self) -> str:
        args = ", ".join(i.name for i in self.inputs)
        return f"<{self.name} = {self.op.name}({args}) : {self.type}>"
