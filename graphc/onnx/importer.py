"""ONNX -> graphc: walk an ONNX graph node by node and build graphc ops through the table.

A value of the ONNX graph is, during import, either a graphc ``Tensor`` or a NumPy array
known at import time (a ``Constant``, an integer initializer, the output of ``Shape`` —
an object array when it holds symbolic dims). Shape arithmetic on known values is folded
here, so ``Reshape(x, Concat(Shape(x)[0], [-1]))`` becomes one graphc reshape to ``(N, -1)``.
Float initializers become ``gc.parameter``s; batch-norm statistics among them are frozen.
Anything the table does not translate exactly raises ``UnsupportedError`` naming the node,
its op type and the opset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .. import ops
from ..ir.graph import get_default_graph, name_scope
from ..ir.tensor import Tensor
from . import dtypes
from .errors import StaticValueNeeded, UnsupportedError
from .table import HANDLERS

Value = Any  # Tensor | np.ndarray (known at import) | None (an omitted optional input)


def _identifier(name: str, fallback: str) -> str:
    ident = re.sub(r"\W", "_", name or "") or fallback
    return ident if not ident[0].isdigit() else "d" + ident


class NodeContext:
    """What a table entry sees of the node it translates: attributes, opset, errors, and the
    conversions between known arrays and tensors."""

    def __init__(self, node: onnx.NodeProto, opset: int) -> None:
        self.node = node
        self.op_type = node.op_type
        self.opset = opset
        self.attrs = {a.name: _attribute(a) for a in node.attribute}
        self.outputs = len(node.output)

    def where(self) -> str:
        name = self.node.name or (self.node.output[0] if self.node.output else "?")
        return f"ONNX node {name!r} ({self.op_type}, opset {self.opset})"

    def fail(self, message: str):
        raise UnsupportedError(f"{self.where()}: {message}")

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def refuse_attrs(self, **supported) -> None:
        """Fail on an attribute whose value differs from the only one(s) graphc supports."""
        for name, allowed in supported.items():
            if name in self.attrs and self.attrs[name] not in allowed:
                self.fail(f"attribute {name}={self.attrs[name]!r} is not supported "
                          f"(supported: {', '.join(repr(a) for a in allowed)})")

    def tensor(self, value: Value) -> Tensor:
        """`value` as a tensor (a known array becomes a constant of its exact dtype)."""
        if isinstance(value, Tensor):
            return value
        arr = np.asarray(value)
        if arr.dtype == object:
            try:
                arr = arr.astype(np.int64)
            except TypeError:
                self.fail("a value with symbolic dims is used as data; graphc folds shapes "
                          "only into shape arguments (Reshape, Expand, ...)")
        if arr.dtype not in dtypes.NUMPY_TO_ONNX:
            self.fail(f"dtype {arr.dtype} is not supported by graphc")
        return ops.constant(arr, dtype=arr.dtype)

    def static(self, value: Value, what: str) -> np.ndarray:
        """`value` as an array known at import time (constants, integer initializers,
        parameters' current values, folded shapes); fails for a computed tensor."""
        if isinstance(value, np.ndarray):
            return value
        if isinstance(value, Tensor):
            if value.op == "constant":
                return value.node.attrs["value"].array
            if value.op == "parameter":
                return np.array(value.value)
        raise StaticValueNeeded(
            f"{self.where()}: {what} must be known when the model is imported (a constant, "
            "an initializer or a shape; or pass a NumPy array for that model input); graphc "
            "has no data-dependent shapes")

    def is_static(self, *values: Value) -> bool:
        return all(v is None or isinstance(v, np.ndarray) for v in values)


def _attribute(a: onnx.AttributeProto):
    value = onnx.helper.get_attribute_value(a)
    if a.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(value)
    if isinstance(value, bytes):
        return value.decode()
    if a.type == onnx.AttributeProto.STRINGS:
        return [v.decode() for v in value]
    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return value
    return value


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def run_nodes(nodes: Sequence[onnx.NodeProto], env: dict, opset: int) -> None:
    """Translate `nodes` in order, reading and writing `env` (ONNX name -> value)."""
    for node in nodes:
        ctx = NodeContext(node, opset)
        ctx.env = env  # what a subgraph (an If branch, a loop body) reads from outside
        if node.domain not in ("", "ai.onnx"):
            ctx.fail(f"domain {node.domain!r} is not supported (only the default ONNX domain)")
        handler = HANDLERS.get(node.op_type)
        if handler is None:
            ctx.fail("graphc has no translation for this op type")
        inputs = []
        for name in node.input:
            if name and name not in env:
                ctx.fail(f"input {name!r} is not defined before the node")
            inputs.append(env[name] if name else None)
        with name_scope(_identifier(node.name or node.op_type, node.op_type)):
            out = handler(ctx, *inputs)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        # a NumPy scalar (np.take with a scalar index, ...) is a known 0-d array
        outs = [np.asarray(o) if isinstance(o, np.generic) else o for o in outs]
        for i, name in enumerate(node.output):
            if not name:
                continue
            if i >= len(outs) or outs[i] is None:
                ctx.fail(f"output {i} ({name!r}) is not supported")
            env[name] = outs[i]


def bn_statistics(graph: onnx.GraphProto) -> set[str]:
    """Names of the initializers BatchNormalization reads as running mean and variance."""
    names = set()
    for node in graph.node:
        if node.op_type == "BatchNormalization":
            names.update(n for n in node.input[3:5] if n)
    return names


class OnnxModel:
    """An imported ONNX model: call it on tensors to add its ops to the current graph."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.proto = proto
        graph = proto.graph
        self.opset = default_opset(proto)
        for imp in proto.opset_import:
            if imp.domain not in ("", "ai.onnx") and any(n.domain == imp.domain
                                                         for n in graph.node):
                raise UnsupportedError(f"ONNX model uses operator set domain {imp.domain!r} "
                                       f"(version {imp.version}); graphc supports only the "
                                       "default domain")
        self.initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.inputs = [vi for vi in graph.input if vi.name not in self.initializers]
        self.output_names = [vi.name for vi in graph.output]
        self._frozen = bn_statistics(graph)
        self._params: dict[int, dict[str, Tensor]] = {}

    @property
    def input_names(self) -> list[str]:
        return [vi.name for vi in self.inputs]

    def input_types(self) -> list[tuple[str, tuple, np.dtype]]:
        """(name, shape, dtype) of every model input; dim_params are names, unnamed unknown
        dims get a name of their own."""
        out = []
        for vi in self.inputs:
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                raise UnsupportedError(f"ONNX model input {vi.name!r}: only tensor inputs are "
                                       "supported (no sequences, maps or optionals)")
            dtype = dtypes.to_numpy(tt.elem_type, f"ONNX model input {vi.name!r}")
            shape = []
            for i, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value"):
                    shape.append(int(d.dim_value))
                elif d.dim_param:
                    shape.append(_identifier(d.dim_param, f"{vi.name}_{i}"))
                else:
                    shape.append(_identifier(f"{vi.name}_{i}", f"d{i}"))
            out.append((vi.name, tuple(shape), dtype))
        return out

    def placeholders(self) -> list[Tensor]:
        """One placeholder per model input, in the model's order."""
        return [ops.placeholder(name, shape, dtype) for name, shape, dtype in self.input_types()]

    def _initializer_values(self) -> dict[str, Value]:
        graph = get_default_graph()
        params = self._params.get(id(graph))
        if params is None:
            params = {}
            for name, arr in self.initializers.items():
                if arr.dtype.kind == "f" and arr.dtype in dtypes.NUMPY_TO_ONNX:
                    p = ops.parameter(name, arr)
                    if name in self._frozen:
                        p.requires_grad_(False)
                    params[name] = p
            self._params[id(graph)] = params
        env: dict[str, Value] = {}
        for name, arr in self.initializers.items():
            env[name] = params.get(name, arr)
        return env

    def parameters(self) -> list[Tensor]:
        """The parameters (float initializers) in the current graph, in the file's order."""
        env = self._initializer_values()
        return [v for v in env.values() if isinstance(v, Tensor)]

    def state(self) -> dict[str, np.ndarray]:
        """A copy of every parameter's current value, by initializer name."""
        return {p.name: p.value for p in self.parameters()}

    def __call__(self, *tensors, **by_name):
        """Add the model's ops to the current graph: tensors for its inputs, positionally or
        by name. A NumPy array given for an input is a value known at import (folded into
        shape arguments such as Reshape's target or Slice's bounds)."""
        names = self.input_names
        if len(tensors) > len(names):
            raise UnsupportedError(f"the model has {len(names)} inputs ({', '.join(names)}), "
                                   f"got {len(tensors)} tensors")
        given = dict(zip(names, tensors))
        for k, v in by_name.items():
            if k not in names:
                raise UnsupportedError(f"the model has no input {k!r} (inputs: "
                                       f"{', '.join(names)})")
            if k in given:
                raise UnsupportedError(f"input {k!r} given twice")
            given[k] = v
        missing = [n for n in names if n not in given]
        if missing:
            raise UnsupportedError(f"missing model inputs: {', '.join(missing)}")
        env = self._initializer_values()
        env.update(given)
        run_nodes(self.proto.graph.node, env, self.opset)
        outs = []
        for name in self.output_names:
            v = env[name]
            outs.append(v if isinstance(v, Tensor) else
                        NodeContext(onnx.NodeProto(name=name, op_type="output"),
                                    self.opset).tensor(v))
        return outs[0] if len(outs) == 1 else outs

    def __repr__(self) -> str:
        return (f"<ONNX model {self.proto.graph.name!r}: inputs {self.input_names}, outputs "
                f"{self.output_names}, opset {self.opset}>")


def load(model) -> OnnxModel:
    """A path (str or PathLike), bytes, or a ``ModelProto`` -> an OnnxModel."""
    if isinstance(model, (str, os.PathLike)):
        proto = onnx.load(os.fspath(model))
    elif isinstance(model, bytes):
        proto = onnx.load_from_string(model)
    elif isinstance(model, onnx.ModelProto):
        proto = model
    else:
        raise TypeError(f"gc.onnx.load takes a path or an onnx.ModelProto, got "
                        f"{type(model).__name__}")
    return OnnxModel(proto)
