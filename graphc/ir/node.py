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

    One path writes a parameter, `write`: it checks the new value (shape, dtype kind, no
    finite value turned non-finite by the conversion) and tells every device holding a copy.
    Compiled steps update the host array in place and then call `changed_in_place`. `value`
    is read-only: a view of the current host array (fetched from a device that holds a newer
    copy first). A device backend registers itself in `devices` with ``pull(storage)``,
    ``host_changed(storage)`` and ``newer`` (its copy is more recent than the host's).
    """

    __slots__ = ("name", "_value", "uid", "next_stream", "devices", "requires_grad",
                 "call_group", "__weakref__")

    def __init__(self, name: str, value: np.ndarray) -> None:
        self.name = name
        self._value = np.array(value, copy=True, order="C")
        self.uid = next(_uids)
        self.next_stream = 0  # how many random ops already draw from this (RNG state) parameter
        self.devices: list = []  # device copies (see the class docstring)
        # False: frozen. Kept here, with the value, so that every module, optimizer and
        # function sharing the parameter sees it (read when an update graph is built)
        self.requires_grad = True
        # the lock shared by the compiled functions using this parameter (call_groups.py)
        self.call_group = None

    @property
    def value(self) -> np.ndarray:
        """The current value, read-only (use `write` to change it)."""
        view = self.host_buffer().view()
        view.flags.writeable = False
        return view

    def host_buffer(self) -> np.ndarray:
        """The host array itself, up to date: for a native step that updates it in place
        (which then calls `changed_in_place`). Not for writing from Python: use `write`."""
        for device in self.devices:
            if device.newer:
                device.pull(self)
        return self._value

    def checked(self, new, key: str | None = None) -> np.ndarray:
        """`new` converted to this parameter's dtype, or a ShapeError naming `key` (the
        parameter's name by default): a wrong shape, another kind of number (float into
        int), or a conversion that turns a finite value non-finite (1e300 into float32).
        A rounding (float64 -> float32) is allowed, as in PyTorch."""
        target = self._value
        if type(new) is np.ndarray and new.shape == target.shape and new.dtype == target.dtype:
            return new  # what a training step returns: nothing to convert, nothing to lose
        from ..errors import ShapeError

        key = key or self.name
        arr = np.asarray(new)
        if arr.shape != target.shape:
            raise ShapeError(f"{key}: the parameter has shape {target.shape}, the new value "
                             f"{arr.shape}")
        if not np.can_cast(arr.dtype, target.dtype, "same_kind") and not (
                arr.dtype.kind in "biu" and target.dtype.kind in "iuf"):
            raise ShapeError(f"{key}: the parameter holds {target.dtype}, the new value is "
                             f"{arr.dtype}")
        with np.errstate(all="ignore"):
            out = arr.astype(target.dtype, copy=False)
        if arr.dtype.kind == "f" and out.dtype.kind == "f" and out.dtype != arr.dtype:
            lost = np.isfinite(arr) & ~np.isfinite(out)
            if lost.any():
                where = tuple(int(i) for i in np.argwhere(lost)[0])
                raise ShapeError(f"{key}: {arr[where]!r} at {where} does not fit in "
                                 f"{target.dtype} (it would become {out[where]!r})")
        return out

    def write(self, new, key: str | None = None) -> None:
        """Copy a new value in, in place, after `checked`; every device copy is updated."""
        self.write_checked(self.checked(new, key))

    def write_checked(self, value: np.ndarray) -> None:
        """`write` for a value `checked` has already returned (a step checks every new value
        before it writes any)."""
        self._value[...] = value  # (`checked` gave the same shape and dtype)
        if self.devices:
            for device in self.devices:
                device.newer = False
            self.changed_in_place()

    def changed_in_place(self) -> None:
        """The host array was written (by `write` or a native step): device copies follow."""
        for device in self.devices:
            device.host_changed(self)

    def __repr__(self) -> str:
        return f"<parameter {self.name} {self._value.shape} {self._value.dtype}>"


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
