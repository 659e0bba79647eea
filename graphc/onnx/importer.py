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

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np
import onnx

from .. import ops
from ..errors import GraphError
from ..ir.graph import name_scope
from ..ir.tensor import Tensor
from ..ir.text import MAX_IDENTIFIER, identifier, is_identifier
from ..ops.reduce import size_scalar
from . import dtypes
from .errors import StaticValueNeeded, UnsupportedError
from .ops_shape import FOLD_LIMIT
from .table import HANDLERS

Value = Any  # Tensor | np.ndarray (known at import) | None (an omitted optional input)


def _identifier(name: str, fallback: str) -> str:
    ident = re.sub(r"\W", "_", name or "") or fallback
    return ident if not ident[0].isdigit() else "d" + ident


def _dim_name(text: str) -> str:
    """A graphc dimension name for an ONNX dim_param (or an unnamed dim's made-up name): the
    text itself when it already is one (an ASCII identifier of at most MAX_IDENTIFIER
    characters); otherwise its readable escape (``größe`` -> ``gr_xf6_xdfe``) followed by a
    digest of the exact text, so that two different texts (``a-b``, ``a_b``) never meet in one
    name and the same text always gives the same name."""
    if is_identifier(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{identifier(text, default='d', max_length=MAX_IDENTIFIER - 9)}_{digest}"


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or `name` with the first free ``_2``, ``_3``... suffix, never one of `taken`."""
    out, k = name, 2
    while out in taken:
        suffix = f"_{k}"
        out, k = name[:MAX_IDENTIFIER - len(suffix)] + suffix, k + 1
    taken.add(out)
    return out


def _dim_names(inputs) -> dict:
    """The dimension name of every symbolic dim of the model inputs: by dim_param (one name
    per distinct dim_param, the same dim_param the same name), and by (input, axis) for the
    dims that have neither a value nor a dim_param (each a name of its own). Distinct
    dim_params always get distinct names; the mapping depends only on the file."""
    tensors = [vi for vi in inputs if vi.type.HasField("tensor_type")]
    names: dict = {}
    taken: set[str] = set()
    for vi in tensors:
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value") and d.dim_param and d.dim_param not in names:
                names[d.dim_param] = _unique(_dim_name(d.dim_param), taken)
    for vi in tensors:
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if not d.HasField("dim_value") and not d.dim_param:
                names[(vi.name, i)] = _unique(identifier(f"{vi.name}_{i}", default="d",
                                                         max_length=MAX_IDENTIFIER - 4), taken)
    return names


#: the elements the import-time arrays of one model (Range, OneHot's classes, diagonal masks'
#: indices, large concatenations) may take beyond FOLD_LIMIT each: 128 MB of int64 in all,
#: whatever the file claims
FOLD_BUDGET = 1 << 24
_fold_budget: ContextVar[list[int] | None] = ContextVar("graphc_onnx_fold_budget", default=None)


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

    def charge_fold(self, n: int, what: str) -> None:
        """Count `n` elements a handler is about to build at import against the model's
        budget (FOLD_BUDGET): a Range(0, 3e8) of a 178-byte file asked for 7 GB, and many
        such nodes would ask for any amount."""
        box = _fold_budget.get()
        if box is None:  # (a node translated outside a model's import: its own budget)
            box = [FOLD_BUDGET]
        if n > box[0]:
            self.fail(f"{what} of {n:,} elements: more than graphc builds when it imports a "
                      f"model ({FOLD_BUDGET:,} elements in all)")
        box[0] -= n

    def can_fold(self, n: int) -> bool:
        """Whether a fold of `n` elements fits the model's budget (charging it if so): past
        FOLD_LIMIT, what the budget cannot take stays a graph operation."""
        if n <= FOLD_LIMIT:
            return True
        box = _fold_budget.get()
        if box is None or n > box[0]:
            return False
        box[0] -= n
        return True

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def axis(self, value, rank: int, what: str = "axis") -> int:
        """An axis from the file, checked against `rank` (``-rank <= axis < rank``) and made
        non-negative; anything else fails naming the node (never wraps around)."""
        try:
            a = int(value)
        except (TypeError, ValueError, OverflowError):
            self.fail(f"{what} {value!r} is not an integer")
        if not -rank <= a < rank:
            self.fail(f"{what} {a} is out of range for rank {rank} (valid: {-rank}..{rank - 1})")
        return a % rank

    def axes(self, values, rank: int, what: str = "axes") -> list[int]:
        """Several axes, each checked as `axis`, none repeated."""
        values = list(np.asarray(values, dtype=object).ravel())
        out = [self.axis(v, rank, f"{what} {[_plain(v) for v in values]}: axis")
               for v in values]
        if len(set(out)) != len(out):
            self.fail(f"{what} {list(values)} repeat an axis")
        return out

    def ints(self, value, what: str, length: int | None = None) -> list[int]:
        """An int list attribute (or a known array) with `length` entries when given."""
        try:
            out = [int(v) for v in np.asarray(value).ravel()]
        except (TypeError, ValueError, OverflowError):
            self.fail(f"{what} {value!r} are not integers")
        if length is not None and len(out) != length:
            self.fail(f"{what} {out} have {len(out)} entries, expected {length}")
        return out

    def check_size(self, dims, dtype, what: str = "the result") -> int:
        """The number of elements of a tensor of known `dims`, failing when a dim is
        negative or when no array of that many elements of `dtype` can exist."""
        n = 1
        for d in dims:
            if d < 0:
                self.fail(f"{what} has a negative dim in {list(dims)}")
            n *= int(d)
        if n * np.dtype(dtype).itemsize > np.iinfo(np.intp).max:
            self.fail(f"{what} of shape {list(dims)} has {n} elements: larger than any array")
        return n

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
                return self._symbolic_tensor(arr)
        if arr.dtype not in dtypes.NUMPY_TO_ONNX:
            self.fail(f"dtype {arr.dtype} is not supported by graphc")
        return ops.constant(arr, dtype=arr.dtype)

    def _symbolic_tensor(self, arr: np.ndarray) -> Tensor:
        """An int64 tensor of shape arithmetic over symbolic dims used as data (a mean's
        element count, a computed bound): each element computed when the model runs from
        the dims' sizes (`dim_tensor`)."""
        import sympy

        elems = []
        for v in arr.ravel():
            try:
                elems.append(dim_tensor(sympy.sympify(v, strict=True)))
            except (TypeError, ValueError, GraphError):
                self.fail(f"a value with symbolic dims ({v}) is used as data, and graphc "
                          "cannot compute it as a tensor")
        if arr.ndim == 0:
            return elems[0]
        flat = ops.stack(elems) if len(elems) > 1 else ops.reshape(elems[0], (1,))
        return ops.reshape(flat, arr.shape)

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

    def is_static(self, *values: Value, size: int | None = None) -> bool:
        """Are these values known arrays, to fold with NumPy at import? Not when the result
        — `size` elements, or by default the values broadcast together — would be larger
        than FOLD_LIMIT and than each of them: two ConstantOfShape of [40000, 1] and
        [1, 20000] (a 205-byte file) would fold into 3 GB, a Gather of 200 rows of 2^20 into
        1.6 GB. Such an operation stays a graph operation, computed when the model runs."""
        if not all(v is None or isinstance(v, np.ndarray) for v in values):
            return False
        arrays = [v for v in values if v is not None]
        if size is None:
            try:
                size = math.prod(np.broadcast_shapes(*(a.shape for a in arrays)))
            except ValueError:
                return True  # (the handler reports shapes that do not broadcast)
        return size <= max([FOLD_LIMIT] + [a.size for a in arrays])


def dim_tensor(e) -> Tensor:
    """A sympy expression over symbolic dims (sums, products, Max, Min, integer powers) as an
    int64 scalar tensor, computed when the model runs: a symbol is the element count of a
    broadcast zero of that size (graphc's numel, which reads only the shape), the rest graphc
    ops. Anything else (floor, a symbol of no size) raises TypeError."""
    import sympy

    if e.is_Integer or e.is_Symbol:
        return size_scalar(e)
    if e.is_Add or e.is_Mul:
        parts = [dim_tensor(a) for a in e.args]
        out = parts[0]
        for p in parts[1:]:
            out = ops.add(out, p) if e.is_Add else ops.mul(out, p)
        return out
    if isinstance(e, (sympy.Max, sympy.Min)):
        parts = [dim_tensor(a) for a in e.args]
        out = parts[0]
        for p in parts[1:]:
            out = ops.maximum(out, p) if isinstance(e, sympy.Max) else ops.minimum(out, p)
        return out
    if e.is_Pow and e.exp.is_Integer and e.exp > 0:
        base = dim_tensor(e.base)
        out = base
        for _ in range(int(e.exp) - 1):
            out = ops.mul(out, base)
        return out
    raise TypeError(f"{e} cannot be computed as a tensor")


def _plain(v):
    """An int from the file as a plain int for messages (NumPy ints print as themselves)."""
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return v


def _attribute(a: onnx.AttributeProto):
    value = onnx.helper.get_attribute_value(a)
    if a.type == onnx.AttributeProto.TENSOR:
        return dtypes.array_of(value, f"attribute {a.name!r}")
    if a.type == onnx.AttributeProto.TENSORS:
        return [dtypes.array_of(t, f"attribute {a.name!r}") for t in value]
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


_ATTR_TYPES = {int(t): name for name, t in onnx.AttributeProto.AttributeType.items()}


def check_node(ctx: NodeContext) -> None:
    """Check a node against its ONNX schema at the model's opset before translating it: the
    number of inputs and outputs, the required inputs given, the required attributes present
    and every attribute of the type the schema says. (An op whose schema is not at this opset
    is left to its table entry.)"""
    node = ctx.node
    try:
        schema = onnx.defs.get_schema(node.op_type, ctx.opset, "")
    except onnx.defs.SchemaError:
        return
    n_in, n_out = len(node.input), len(node.output)
    if not schema.min_input <= n_in <= schema.max_input:
        ctx.fail(f"it has {n_in} inputs; the op takes {_count(schema.min_input, schema.max_input)}")
    if not schema.min_output <= n_out <= schema.max_output:
        ctx.fail(f"it has {n_out} outputs; the op gives "
                 f"{_count(schema.min_output, schema.max_output)}")
    single = onnx.defs.OpSchema.FormalParameterOption.Single
    for i, (name, formal) in enumerate(zip(node.input, schema.inputs)):
        if not name and formal.option == single:
            ctx.fail(f"its required input {i} ({formal.name}) is empty")
    for a in node.attribute:
        spec = schema.attributes.get(a.name)
        if spec is not None and int(a.type) != int(spec.type) and not (
                a.type == onnx.AttributeProto.UNDEFINED):
            ctx.fail(f"attribute {a.name} is of type {_ATTR_TYPES.get(int(a.type), a.type)}; the "
                     f"op takes {_ATTR_TYPES.get(int(spec.type), spec.type)}")
    for name, spec in schema.attributes.items():
        if spec.required and name not in ctx.attrs:
            ctx.fail(f"the required attribute {name} is missing")


def _count(lo: int, hi: int) -> str:
    if lo == hi:
        return str(lo)
    return f"at least {lo}" if hi >= 2**31 - 1 else f"{lo} to {hi}"


#: what a table entry raises on input it did not expect (an index past a list, a missing key,
#: a value NumPy refuses): reported as the node's error, never as a raw Python one
_RAW_ERRORS = (IndexError, KeyError, ValueError, TypeError, AttributeError, ArithmeticError,
               MemoryError)


def translate(ctx: NodeContext, handler, inputs: list):
    """Run a table entry; any error it raises names the node (a graphc error keeps its class,
    a raw Python error becomes an UnsupportedError)."""
    try:
        return handler(ctx, *inputs)
    except GraphError as exc:
        message = str(exc)
        if message.startswith("ONNX node") or ctx.where() in message:
            raise
        try:
            error = type(exc)(f"{ctx.where()}: {message}")
        except Exception:  # noqa: BLE001 - a class that does not take a message: keep it
            raise exc from None
        raise error from exc
    except _RAW_ERRORS as exc:
        raise UnsupportedError(
            f"{ctx.where()}: the node cannot be translated: its inputs or attributes are "
            f"malformed or not supported ({type(exc).__name__}: {exc})") from exc


def run_nodes(nodes: Sequence[onnx.NodeProto], env: dict, opset: int) -> None:
    """Translate `nodes` in order, reading and writing `env` (ONNX name -> value)."""
    for node in nodes:
        try:
            ctx = NodeContext(node, opset)
        except Exception as exc:  # noqa: BLE001 - an attribute onnx cannot decode
            raise UnsupportedError(f"ONNX node {node.name or node.op_type!r} ({node.op_type}, "
                                   f"opset {opset}): unreadable attribute ({exc})") from exc
        ctx.env = env  # what a subgraph (an If branch, a loop body) reads from outside
        if node.domain not in ("", "ai.onnx"):
            ctx.fail(f"domain {node.domain!r} is not supported (only the default ONNX domain)")
        handler = HANDLERS.get(node.op_type)
        if handler is None:
            ctx.fail("graphc has no translation for this op type")
        check_node(ctx)
        inputs = []
        for name in node.input:
            if name and name not in env:
                ctx.fail(f"input {name!r} is not defined before the node")
            inputs.append(env[name] if name else None)
        with name_scope(_identifier(node.name or node.op_type, node.op_type)):
            out = translate(ctx, handler, inputs)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        # a NumPy scalar (np.take with a scalar index, ...) is a known 0-d array
        outs = [np.asarray(o) if isinstance(o, np.generic) else o for o in outs]
        for i, name in enumerate(node.output):
            if not name:
                continue
            if i >= len(outs) or outs[i] is None:
                ctx.fail(f"output {i} ({name!r}) is not supported")
            env[name] = outs[i]


#: The model metadata key under which gc.onnx.export lists the initializers of frozen
#: parameters (a JSON list of names): an import keeps them frozen.
FROZEN_KEY = "graphc.frozen"
#: Inputs that are not weights: a Clip's bounds, an RNN's initial states (in ONNX order).
_NOT_WEIGHTS = {"Clip": (1, 2), "LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}


def frozen_initializers(proto: onnx.ModelProto, initializers: dict) -> set[str]:
    """The float initializers an import makes frozen parameters (``requires_grad`` False:
    optimizers skip them; ``requires_grad_(True)`` trains them): batch norm's statistics;
    those gc.onnx.export wrote as frozen; 0-d ones (PyTorch's exporters write a number of
    the model, as ``x ** 2``'s exponent or a hardtanh's bound, so: trained, the exponent's
    gradient was NaN after one step); and those read only as a Clip's bounds or an RNN's
    initial state (its zero h0)."""
    graph = proto.graph
    frozen = bn_statistics(graph)
    for prop in proto.metadata_props:
        if prop.key == FROZEN_KEY:
            try:
                names = json.loads(prop.value)
            except ValueError:
                names = None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise UnsupportedError(f"the model's {FROZEN_KEY!r} metadata is not a JSON "
                                       f"list of initializer names")
            frozen.update(n for n in names if n in initializers)
    frozen.update(n for n, a in initializers.items() if a.ndim == 0)
    readers: dict[str, list[bool]] = {}  # per reading: whether it reads no weight

    def read(nodes, top: bool) -> None:
        for node in nodes:
            for position, name in enumerate(node.input):
                if name in initializers:
                    readers.setdefault(name, []).append(
                        top and position in _NOT_WEIGHTS.get(node.op_type, ()))
            for attr in node.attribute:  # (a loop body's reads count as weights)
                for body in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    read(body.node, False)

    read(graph.node, True)
    frozen.update(n for n, no_weight in readers.items() if all(no_weight))
    return frozen


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
        self.initializers = {t.name: dtypes.array_of(t, "initializer")
                             for t in graph.initializer}
        self.inputs = [vi for vi in graph.input if vi.name not in self.initializers]
        self.output_names = [vi.name for vi in graph.output]
        defined = set(self.initializers) | {vi.name for vi in graph.input}
        defined.update(name for node in graph.node for name in node.output)
        defined.discard("")
        for name in self.output_names:
            if name not in defined:
                raise UnsupportedError(f"ONNX model output {name!r} is not produced by any node "
                                       "and is not a model input or initializer")
        self._dim_names = _dim_names(self.inputs)
        self._nodes = self._unalias(graph)
        self._frozen = frozen_initializers(proto, self.initializers)
        # the parameters, made at the first call and then shared by every graph (as a
        # module's): None until then
        self._params: dict[str, Tensor] | None = None

    def _unalias(self, graph: onnx.GraphProto) -> list:
        """The nodes to run, without the Identity nodes that alias a float initializer:
        torch.onnx's TorchScript exporter writes parameters of equal values once and the
        others as ``Identity(first)`` (a fresh batch norm's running variance as its weight,
        every fresh LayerNorm after the first as the first). Each such output becomes an
        initializer of its own, a copy: tied, fine-tuning trained the two as one and the
        statistics of batch norm were trained, not frozen."""
        nodes = []
        for node in graph.node:
            source = node.input[0] if node.op_type == "Identity" and node.input else ""
            array = self.initializers.get(source)
            if array is not None and array.dtype.kind == "f" and node.output[0] and \
                    node.output[0] not in self.initializers:
                self.initializers[node.output[0]] = array.copy()
                continue
            nodes.append(node)
        return nodes

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
                    shape.append(self._dim_names[d.dim_param])
                else:
                    shape.append(self._dim_names[(vi.name, i)])
            out.append((vi.name, tuple(shape), dtype))
        return out

    def placeholders(self) -> list[Tensor]:
        """One placeholder per model input, in the model's order."""
        return [ops.placeholder(name, shape, dtype) for name, shape, dtype in self.input_types()]

    def _initializer_values(self) -> dict[str, Value]:
        """The initializers by name: float ones as the model's parameters, the rest as known
        arrays. The parameters are made once, at the first call, and every later call uses
        the same ones in whatever graph it builds (docs/semantics.md, "Parameters shared
        between graphs"): a model fine-tuned in a training graph is evaluated with its trained
        values in another graph. They were once made per graph, so a new graph silently read
        the file's original weights."""
        params = self._params
        if params is None:
            params = {}
            for name, arr in self.initializers.items():
                if arr.dtype.kind == "f" and arr.dtype in dtypes.NUMPY_TO_ONNX:
                    p = ops.parameter(name, arr)
                    if name in self._frozen:
                        p.requires_grad_(False)
                    params[name] = p
            self._params = params
        env: dict[str, Value] = {}
        for name, arr in self.initializers.items():
            env[name] = params.get(name, arr)
        return env

    def parameters(self) -> list[Tensor]:
        """The parameters (float initializers), in the file's order: the same tensors in
        every graph (made at the first call when none has been made yet)."""
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
        budget = _fold_budget.set([FOLD_BUDGET])
        try:
            run_nodes(self._nodes, env, self.opset)
        finally:
            _fold_budget.reset(budget)
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
    from google.protobuf.message import DecodeError

    try:
        if isinstance(model, (str, os.PathLike)):
            proto = onnx.load(os.fspath(model))
        elif isinstance(model, bytes):
            proto = onnx.load_from_string(model)
        elif isinstance(model, onnx.ModelProto):
            proto = model
        else:
            raise TypeError(f"gc.onnx.load takes a path or an onnx.ModelProto, got "
                            f"{type(model).__name__}")
    except (DecodeError, onnx.checker.ValidationError) as exc:
        # (a file that is not ONNX, or external data outside the model's folder)
        raise UnsupportedError(f"not a readable ONNX model: {type(exc).__name__}: "
                               f"{str(exc)[:300]}") from None
    if not proto.graph.output and not proto.graph.node:
        raise UnsupportedError("the ONNX model is empty: no nodes, no outputs (an empty or "
                               "truncated file?)")
    return OnnxModel(proto)
