"""graphc -> ONNX: the declared graph (the user's outputs, or a Function's declared outputs)
written node by node as ONNX nodes. Parameters become initializers, placeholders graph
inputs (symbolic dims as ``dim_param``), constants ``Constant`` nodes (so that a graphc
graph exported and imported again has the same parameters, and no more).

Elementwise ops without a one-node ONNX form (and fused ``elemwise`` nodes) are written from
their sympy expression, node by node (`ExpressionWriter`). A shape argument with symbolic
dims (a reshape to ``(N, T*H)``, a broadcast to ``(N, 4)``) is computed in the file from
the graph inputs' ``Shape``, so no dim is guessed. A ``gc.scan`` loop becomes an ONNX
``Scan`` (a ``Loop`` when it has no xs) whose body is the loop's body graph, written the same
way; the tensors it captures are read from the enclosing graph by name.

A graph that updates state when it runs (training-mode batch norm, dropout, any random op)
is refused: export an eval-mode graph. A graphc op without an ONNX form is an
UnsupportedError naming the op and the user's line that built it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

import numpy as np
import onnx
import sympy
from onnx import helper, numpy_helper
from sympy.core import relational

from ..errors import at
from ..ir.graph import topological
from ..ir.node import Node
from ..ir.shapes import as_dim
from ..ir.tensor import Tensor
from ..ops import expr as E
from ..ops.shape_ops import is_int_value
from . import dtypes
from .errors import UnsupportedError
from .importer import FROZEN_KEY

DEFAULT_OPSET = 18
#: the oldest opset the writers produce (Softmax over one axis, ReduceSum's axes as an input)
MIN_OPSET = 13
EXPORTERS: dict[str, Callable] = {}


def exports(*names: str):
    def register(fn):
        for n in names:
            EXPORTERS[n] = fn
        return fn

    return register


class Writer:
    """Collects ONNX nodes, initializers (the parameters) and names while the graph is walked.

    A loop body is written by a child writer: its own nodes (its constants among them) and
    names, the parent's initializers, name set (ONNX names are unique across subgraphs) and
    dim sources."""

    def __init__(self, opset: int, parent: Writer | None = None) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.names: dict[int, str] = {}
        self.results: dict[int, list[str | None]] = {}  # a scan node -> its results' names
        self.readers: dict[int, set[int]] = parent.readers if parent else {}
        self.initializers: list[onnx.TensorProto] = parent.initializers if parent else []
        # the initializers of frozen parameters (batch-norm statistics, frozen layers):
        # written in the model's metadata, so that an import keeps them frozen
        self.frozen: list[str] = parent.frozen if parent else []
        self.used: set[str] = parent.used if parent else set()
        # a symbol -> (graph input name, axis) where it is a whole dim
        self.dim_sources: dict = parent.dim_sources if parent else {}
        self._dims: dict = {}  # a symbol -> the name of its (1,) int64 value, in this graph
        #: values that expressions of several nodes may share, by what they compute from which
        #: names (an integer division's safe divisor), in this graph
        self.shared: dict = {}

    def fresh(self, base: str) -> str:
        base = base or "t"
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def const(self, value, dtype=None, base: str = "const") -> str:
        """A constant as a ``Constant`` node, not an initializer: importers (graphc's among
        them) make float initializers trainable parameters, and a constant is not one."""
        arr = np.asarray(value, dtype=dtype)
        name = self.fresh(base)
        self.nodes.append(helper.make_node("Constant", [], [name],
                                           value=numpy_helper.from_array(arr, name)))
        return name

    def ints(self, values, base: str = "shape") -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), base=base)

    def add(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def dim(self, node: Node, d) -> str:
        """A (1,) int64 tensor holding dim `d` (an int or a sympy expression over the graph
        inputs' symbolic dims) when the model runs."""
        if isinstance(d, (int, np.integer)) or (isinstance(d, sympy.Expr) and d.is_Integer):
            return self.ints([int(d)], "dim")
        if d in self._dims:
            return self._dims[d]
        if d.is_Symbol:
            if d not in self.dim_sources:
                _fail(node, f"uses the dim {d}, which is no whole dim of a graph input, so the "
                            "exported file cannot compute it")
            source, axis = self.dim_sources[d]
            out = self.add("Gather", [self.add("Shape", [source]), self.ints([axis], "axis")],
                           self.fresh(f"dim_{d}"))
        elif d.is_Add or d.is_Mul:
            op = "Add" if d.is_Add else "Mul"
            args = [self.dim(node, a) for a in d.args]
            out = args[0]
            for a in args[1:]:
                out = self.add(op, [out, a])
        elif isinstance(d, (sympy.Max, sympy.Min)):
            out = self.add("Max" if isinstance(d, sympy.Max) else "Min",
                           [self.dim(node, a) for a in d.args])
        elif d.is_Pow and d.exp.is_Integer and d.exp > 0:
            base = self.dim(node, d.base)
            out = base
            for _ in range(int(d.exp) - 1):
                out = self.add("Mul", [out, base])
        elif isinstance(d, (sympy.floor, sympy.ceiling)):
            num, den = sympy.fraction(sympy.together(d.args[0]))
            if not den.is_Integer or den <= 0:
                _fail(node, f"uses the dim {d}, which the exporter cannot write")
            if isinstance(d, sympy.ceiling):
                num = num + den - 1
            # (sizes are nonnegative: ONNX's truncating integer Div is the floor here)
            out = self.add("Div", [self.dim(node, sympy.expand(num)), self.ints([int(den)])])
        else:
            _fail(node, f"uses the dim {d}, which the exporter cannot write")
        self._dims[d] = out
        return out

    def shape(self, node: Node, dims) -> str:
        """An int64 shape tensor for `dims` (ints and symbolic dims)."""
        if all(isinstance(d, (int, np.integer)) for d in dims):
            return self.ints(dims)
        return self.add("Concat", [self.dim(node, d) for d in dims], self.fresh("shape"), axis=0)


def _fail(node: Node, message: str):
    raise UnsupportedError(f"export: {node.op.name} node {message}{at(node.loc)}")


def _reshape_target(w: Writer, node: Node, shape) -> str:
    """A reshape target for ONNX: ints, one symbolic dim written as -1, several computed from
    the inputs' shapes."""
    symbolic = [d for d in shape if not isinstance(d, int)]
    if len(symbolic) <= 1:
        return w.ints([d if isinstance(d, int) else -1 for d in shape])
    return w.shape(node, shape)


_SIMPLE = {
    "add": "Add", "sub": "Sub", "mul": "Mul", "neg": "Neg", "exp": "Exp", "log": "Log",
    "sqrt": "Sqrt", "abs": "Abs", "sign": "Sign", "tanh": "Tanh", "sigmoid": "Sigmoid",
    "softplus": "Softplus", "relu": "Relu", "sin": "Sin", "cos": "Cos", "tan": "Tan",
    "arctan": "Atan", "erf": "Erf", "floor": "Floor", "ceil": "Ceil", "round": "Round",
    "reciprocal": "Reciprocal", "softsign": "Softsign", "less": "Less",
    "greater": "Greater", "less_equal": "LessOrEqual", "greater_equal": "GreaterOrEqual",
    "equal": "Equal", "isnan": "IsNaN", "isinf": "IsInf", "maximum": "Max", "minimum": "Min",
}


#: arithmetic on booleans, which ONNX's Add, Mul, Max and Min do not define, as the logic it
#: is in NumPy (True + True is True: or; True * False is False: and)
_BOOLEAN = {"add": "Or", "mul": "And", "maximum": "Or", "minimum": "And"}


@exports(*_SIMPLE)
def _simple(w: Writer, node: Node, ins: list[str]) -> str:
    if node.op.name in _BOOLEAN and node.type.dtype == bool:
        return w.add(_BOOLEAN[node.op.name], ins)
    return w.add(_SIMPLE[node.op.name], ins)


@exports("pow")
def _pow(w, node, ins):
    """Pow; for integers, a negative exponent gives graphc's truncated ``1 / a**-b`` (1 for
    a = 1, +-1 for a = -1, 0 otherwise, 0 ** -n included: onnxruntime's Pow gave INT_MIN
    there), and Pow only ever sees exponents >= 0."""
    if node.type.dtype.kind == "f":
        return w.add("Pow", ins)
    a, b = ins
    dt = node.inputs[1].dtype
    out_dt = node.type.dtype

    def c(v, d=out_dt):
        return w.const(np.asarray(v, dtype=d))

    negative = w.add("Less", [b, c(0, dt)])
    powered = w.add("Pow", [a, w.add("Where", [negative, c(0, dt), b])])
    odd = w.add("Equal", [w.add("Mod", [b, c(2, dt)]), c(1, dt)])
    minus_one = w.add("Where", [odd, c(-1), c(1)])
    inverse = w.add("Where", [w.add("Equal", [a, c(1)]), c(1),
                              w.add("Where", [w.add("Equal", [a, c(-1)]), minus_one, c(0)])])
    return w.add("Where", [negative, inverse, powered])


@exports("div")
def _div(w, node, ins):
    return w.add("Div", ins)


@exports("not_equal")
def _not_equal(w, node, ins):
    return w.add("Not", [w.add("Equal", ins)])


@exports("square")
def _square(w, node, ins):
    return w.add("Mul", [ins[0], ins[0]])


@exports("rsqrt")
def _rsqrt(w, node, ins):
    return w.add("Reciprocal", [w.add("Sqrt", ins)])


@exports("silu")
def _silu(w, node, ins):
    return w.add("Mul", [ins[0], w.add("Sigmoid", ins)])


@exports("leaky_relu")
def _leaky_relu(w, node, ins):
    return w.add("LeakyRelu", ins, alpha=float(node.attrs["alpha"]))


@exports("elu")
def _elu(w, node, ins):
    return w.add("Elu", ins, alpha=float(node.attrs["alpha"]))


@exports("hard_sigmoid")
def _hard_sigmoid(w, node, ins):
    return w.add("HardSigmoid", ins, alpha=1 / 6, beta=0.5)


@exports("gelu")
def _gelu(w, node, ins):
    approximate = node.attrs.get("approximate", "none")
    if w.opset >= 20:
        return w.add("Gelu", ins, approximate=approximate)
    dt = node.type.dtype
    x = ins[0]
    if approximate == "tanh":  # tanh(sqrt(2/pi) (x + 0.044715 x^3)), as graphc's gelu
        cube = w.add("Mul", [w.add("Mul", [x, x]), x])
        inner = w.add("Add", [x, w.add("Mul", [cube, w.const(0.044715, dt)])])
        inner = w.add("Tanh", [w.add("Mul", [inner, w.const(np.sqrt(2 / np.pi), dt)])])
    else:
        inner = w.add("Erf", [w.add("Mul", [x, w.const(np.sqrt(0.5), dt)])])
    half_x = w.add("Mul", [x, w.const(0.5, dt)])
    return w.add("Mul", [half_x, w.add("Add", [inner, w.const(1, dt)])])


@exports("where")
def _where(w, node, ins):
    if node.dtype == np.bool_:  # as logic: onnxruntime implements no Where on booleans
        c, a, b = ins
        return w.add("Or", [w.add("And", [c, a]), w.add("And", [w.add("Not", [c]), b])])
    return w.add("Where", ins)


@exports("clip")
def _clip(w, node, ins):
    return w.add("Min", [w.add("Max", [ins[0], ins[1]]), ins[2]])


@exports("cast")
def _cast(w, node, ins):
    return w.add("Cast", ins, to=dtypes.to_onnx(node.attrs["dtype"]))


@exports("matmul")
def _matmul(w, node, ins):
    a, b = ins
    rank_a, rank_b = node.inputs[0].type.ndim, node.inputs[1].type.ndim
    if node.attrs.get("ta"):
        a = w.add("Transpose", [a], perm=list(range(rank_a - 2)) + [rank_a - 1, rank_a - 2])
    if node.attrs.get("tb"):
        b = w.add("Transpose", [b], perm=list(range(rank_b - 2)) + [rank_b - 1, rank_b - 2])
    return w.add("MatMul", [a, b])


@exports("reshape")
def _reshape(w, node, ins):
    shape = node.attrs["shape"]
    zeros = {"allowzero": 1} if 0 in shape and w.opset >= 14 else {}  # (0 is "copy" else)
    return w.add("Reshape", [ins[0], _reshape_target(w, node, shape)], **zeros)


@exports("transpose")
def _transpose(w, node, ins):
    return w.add("Transpose", ins, perm=[int(a) for a in node.attrs["axes"]])


@exports("broadcast_to")
def _broadcast_to(w, node, ins):
    shape = list(node.attrs["shape"])
    src = node.inputs[0].type.shape
    offset = len(shape) - len(src)
    for i, d in enumerate(shape):  # a symbolic dim the input already has: Expand keeps it
        if not isinstance(d, int) and i >= offset and \
                sympy.simplify(src[i - offset] - d) == 0:
            shape[i] = 1
    return w.add("Expand", [ins[0], w.shape(node, shape)])


@exports("concat")
def _concat(w, node, ins):
    return w.add("Concat", ins, axis=int(node.attrs["axis"]))


@exports("slice")
def _slice(w, node, ins):
    starts, steps, sizes = node.attrs["starts"], node.attrs["steps"], node.attrs["sizes"]
    in_shape = node.inputs[0].type.shape
    axes, s_, e_, st_ = [], [], [], []
    for axis, (s, st, n) in enumerate(zip(starts, steps, sizes)):
        if s == 0 and st == 1 and sympy.simplify(n - in_shape[axis]) == 0:
            continue  # the whole axis
        if not isinstance(st, int) or (st < 0 and not all(isinstance(v, int) for v in (s, n))):
            _fail(node, "with a symbolic bound and a negative step is not exportable")
        end = s + st * n
        if isinstance(end, sympy.Expr):
            end = sympy.expand(end)
            end = int(end) if end.is_Integer else end
        axes.append(axis)
        s_.append(s)
        e_.append(end if not isinstance(end, int) or end >= 0 else -(2**63))
        st_.append(st)
    if not axes:
        return w.add("Identity", ins)
    return w.add("Slice", [ins[0], w.shape(node, s_), w.shape(node, e_),
                           w.ints(axes, "axes"), w.ints(st_, "steps")])


@exports("unslice")
def _unslice(w, node, ins):
    """The adjoint of a slice (in gradient graphs): g padded with zeros, for unit steps."""
    a = node.attrs
    g_shape = node.inputs[0].type.shape
    if any(st != 1 for st in a["steps"]):
        _fail(node, f"with steps {tuple(a['steps'])} is not exportable (unit steps only)")
    before = list(a["starts"])
    after = [sympy.simplify(d - s - n) for d, s, n in zip(a["shape"], a["starts"], g_shape)]
    after = [int(v) if isinstance(v, sympy.Expr) and v.is_Integer else v for v in after]
    return w.add("Pad", [ins[0], w.shape(node, before + after)])


@exports("scatter_add")
def _scatter_add(w, node, ins):
    """Rows of g added into zeros at ids (the gradient of a gather): ScatterND with add."""
    if w.opset < 16:
        _fail(node, "needs opset >= 16 (ScatterND with reduction='add')")
    zeros = w.add("ConstantOfShape", [w.shape(node, node.type.shape)],
                  value=numpy_helper.from_array(np.zeros(1, dtype=node.type.dtype)))
    ids = w.add("Unsqueeze", [ins[1], w.ints([-1], "axes")])
    return w.add("ScatterND", [zeros, ids, ins[0]], reduction="add")


@exports("pad")
def _pad(w, node, ins):
    widths = node.attrs["widths"]
    pads = [a for a, _ in widths] + [b for _, b in widths]
    return w.add("Pad", [ins[0], w.ints(pads, "pads")])


_REDUCE = {"sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin",
           "logsumexp": "ReduceLogSumExp"}


@exports(*_REDUCE)
def _reduce(w, node, ins):
    axes = [int(a) for a in node.attrs["axes"]]
    keep = int(bool(node.attrs["keepdims"]))
    op = _REDUCE[node.op.name]
    boolean = node.type.dtype == bool  # (max/min of a mask: ONNX reduces numbers only)
    x = w.add("Cast", ins, to=onnx.TensorProto.INT32) if boolean else ins[0]
    if op == "ReduceSum" or w.opset >= 18:
        out = w.add(op, [x, w.ints(axes, "axes")], keepdims=keep)
    else:
        out = w.add(op, [x], axes=axes, keepdims=keep)
    return w.add("Cast", [out], to=onnx.TensorProto.BOOL) if boolean else out


@exports("numel")
def _numel(w, node, ins):
    x = node.inputs[0]
    shape = w.add("Shape", ins)
    dims = w.add("Gather", [shape, w.ints(node.attrs["axes"], "axes")])
    count = w.add("ReduceProd", [dims], keepdims=0)
    return w.add("Cast", [count], to=dtypes.to_onnx(node.attrs["dtype"])) if x is not None \
        else count


@exports("softmax", "log_softmax")
def _softmax(w, node, ins):
    op = "Softmax" if node.op.name == "softmax" else "LogSoftmax"
    return w.add(op, ins, axis=int(node.attrs["axis"]))


@exports("argmax")
def _argmax(w, node, ins):
    return w.add("ArgMax", ins, axis=int(node.attrs["axis"]), keepdims=0)


@exports("take")
def _take(w, node, ins):
    return w.add("Gather", ins, axis=0)


@exports("conv")
def _conv(w, node, ins):
    a = node.attrs
    pads = list(a["padding"]) * 2
    return w.add("Conv", ins, strides=list(a["stride"]), pads=pads,
                 dilations=list(a["dilation"]))


@exports("conv_transpose")
def _conv_transpose(w, node, ins):
    a = node.attrs
    nd = len(a["stride"])
    g_shape = node.inputs[0].type.shape
    w_shape = node.inputs[1].type.shape
    output_padding = []
    for i in range(nd):
        base = ((g_shape[2 + i] - 1) * a["stride"][i] - 2 * a["padding"][i] +
                a["dilation"][i] * (w_shape[2 + i] - 1) + 1)
        extra = sympy.simplify(a["out_size"][i] - base)
        if not extra.is_Integer:
            _fail(node, "with a symbolic output padding is not exportable")
        output_padding.append(int(extra))
    return w.add("ConvTranspose", ins, strides=list(a["stride"]), pads=list(a["padding"]) * 2,
                 dilations=list(a["dilation"]), output_padding=output_padding)


@exports("max_pool", "avg_pool")
def _pool(w, node, ins):
    a = node.attrs
    op = "MaxPool" if node.op.name == "max_pool" else "AveragePool"
    extra = {} if op == "MaxPool" else {"count_include_pad": 1}
    return w.add(op, ins, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                 pads=list(a["padding"]) * 2, **extra)


@exports("one_hot")
def _one_hot(w, node, ins):
    n = int(node.attrs["n"])
    # the classes in the ids' own dtype (int32 or int64): Equal takes one type
    classes = w.const(np.arange(n, dtype=node.inputs[0].dtype), base="classes")
    eq = w.add("Equal", [w.add("Unsqueeze", [ins[0], w.ints([-1], "axes")]), classes])
    return w.add("Cast", [eq], to=dtypes.to_onnx(node.attrs["dtype"]))


# -- elementwise expressions -------------------------------------------------------------------

_UNARY_EXPR = {sympy.exp: "Exp", sympy.log: "Log", sympy.tanh: "Tanh", sympy.Abs: "Abs",
               sympy.sign: "Sign", sympy.sin: "Sin", sympy.cos: "Cos", sympy.tan: "Tan",
               sympy.atan: "Atan", sympy.erf: "Erf", E.sigmoid: "Sigmoid",
               E.softplus: "Softplus", E.floor_value: "Floor", E.ceil_value: "Ceil",
               E.round_even: "Round"}
_BOOL_EXPR = {E.isnan: "IsNaN", E.isinf: "IsInf"}
_RELATION = {"<": "Less", "<=": "LessOrEqual", ">": "Greater", ">=": "GreaterOrEqual",
             "==": "Equal"}


class ExpressionWriter:
    """Writes the sympy expression of an elementwise node as ONNX nodes, one per operation,
    in the expression's own order (nothing is simplified: IEEE results stay graphc's).

    Values are computed in `dtype` (the node's value dtype), comparisons and logic in bool.
    log1p and expm1 use the accurate compositions (Goldberg's ``log(u)*(x/(u-1))``, Kahan's
    ``(u-1)*(x/log(u))``, the quotient first so that no product overflows) rather than
    ``log(1+x)``; integer ``//`` and ``%`` follow NumPy
    (floor, divisor's sign, 0 for a zero divisor), as graphc computes them."""

    def __init__(self, w: Writer, node: Node, inputs: list[str], dtype) -> None:
        self.w, self.node, self.dtype = w, node, np.dtype(dtype)
        self.env = {E.sym_input(i): name for i, name in enumerate(inputs)}
        self.kinds = {E.sym_input(i): ("bool" if t.dtype == np.dtype(bool) else "value")
                      for i, t in enumerate(node.inputs)}
        self.memo: dict = {}

    def const(self, value) -> str:
        if self.dtype.kind in "iu" and not float(value).is_integer():
            _fail(self.node, f"has the constant {value} in an integer expression")
        return self.w.const(np.asarray(float(value) if self.dtype.kind == "f" else int(value),
                                       dtype=self.dtype))

    def write(self, e) -> str:
        if e not in self.memo:
            self.memo[e] = self._write(e)
        return self.memo[e]

    def _chain(self, op: str, names: list[str]) -> str:
        out = names[0]
        for n in names[1:]:
            out = self.w.add(op, [out, n])
        return out

    def _write(self, e) -> str:  # noqa: C901 - one case per expression node type
        w = self.w
        if isinstance(e, sympy.Symbol):
            return self.env[e]
        if e is sympy.true or e is sympy.false:
            return w.const(np.asarray(bool(e)))
        if e is sympy.nan:
            if self.dtype.kind != "f":
                _fail(self.node, "has NaN in an integer expression")
            return self.const(float("nan"))
        if isinstance(e, (sympy.Integer, sympy.Rational, sympy.Float)):
            return self.const(e)
        if isinstance(e, sympy.Add):
            plus = [a for a in e.args if not _negated(a)]
            minus = [-a for a in e.args if _negated(a)]
            out = self.write(plus[0]) if plus else w.add("Neg", [self.write(minus.pop(0))])
            for a in plus[1:]:
                out = w.add("Add", [out, self.write(a)])
            for a in minus:
                out = w.add("Sub", [out, self.write(a)])
            return out
        if isinstance(e, sympy.Mul):
            num = [a for a in e.args if not (a.is_Pow and a.exp.is_negative)]
            den = [a.base ** -a.exp for a in e.args if a.is_Pow and a.exp.is_negative]
            if num and num[0] == -1:
                rest = sympy.Mul(*num[1:], evaluate=False) if len(num) > 2 else \
                    (num[1] if len(num) == 2 else sympy.Integer(1))
                inner = self.write(rest) if not den else self.write(
                    sympy.Mul(rest, *[d ** -1 for d in den], evaluate=False))
                return w.add("Neg", [inner])
            out = self._chain("Mul", [self.write(a) for a in num]) if num else self.const(1)
            for d in den:
                out = w.add("Div", [out, self.write(d)])
            return out
        if isinstance(e, sympy.Pow):
            base, p = e.args
            if p == 2:
                b = self.write(base)
                return w.add("Mul", [b, b])
            if p == sympy.Rational(1, 2):
                return w.add("Sqrt", [self.write(base)])
            if p == -1:
                return w.add("Reciprocal", [self.write(base)])
            if p == -sympy.Rational(1, 2):
                return w.add("Reciprocal", [w.add("Sqrt", [self.write(base)])])
            return w.add("Pow", [self.write(base), self.write(p)])
        if e.func in _UNARY_EXPR:
            return w.add(_UNARY_EXPR[e.func], [self.write(e.args[0])])
        if e.func in _BOOL_EXPR:
            return w.add(_BOOL_EXPR[e.func], [self.write(e.args[0])])
        if e.func is E.log1p:
            return self._log1p(self.write(e.args[0]))
        if e.func is E.expm1:
            return self._expm1(self.write(e.args[0]))
        if e.func in (E.log2, E.log10):
            base = 2.0 if e.func is E.log2 else 10.0
            return w.add("Div", [w.add("Log", [self.write(e.args[0])]),
                                 self.const(np.log(base))])
        if e.func in (E.tie, E.alone):
            return self.write(e.args[0])
        if e.func is E.nan_of:
            return self._chain("Add", [self.write(a) for a in e.args])
        if e.func is E.floordiv:
            return self._floordiv(self.write(e.args[0]), self.write(e.args[1]))
        if e.func is E.mod:
            return self._mod(self.write(e.args[0]), self.write(e.args[1]))
        if isinstance(e, sympy.Piecewise):
            return self._piecewise(list(e.args))
        if isinstance(e, relational.Relational):
            return self._relation(e)
        if isinstance(e, (sympy.And, sympy.Or)):
            return self._chain("And" if isinstance(e, sympy.And) else "Or",
                               [self.write(a) for a in e.args])
        if isinstance(e, sympy.Not):
            return w.add("Not", [self.write(e.args[0])])
        _fail(self.node, f"has the expression {type(e).__name__}, which has no ONNX form")

    def _relation(self, e) -> str:
        lhs, rhs, op = e.lhs, e.rhs, e.rel_op
        if op in ("==", "!=") and rhs == 0 and isinstance(lhs, sympy.Symbol) and \
                self.kinds.get(lhs) == "bool":  # a bool compared to 0: its truth
            return self.write(lhs) if op == "!=" else self.w.add("Not", [self.write(lhs)])
        if op == "!=":
            return self.w.add("Not", [self.w.add("Equal", [self.write(lhs), self.write(rhs)])])
        return self.w.add(_RELATION[op], [self.write(lhs), self.write(rhs)])

    def _piecewise(self, cases) -> str:
        (value, cond), rest = cases[0], cases[1:]
        if cond is sympy.true:
            return self.write(value)
        other = self._piecewise(rest) if rest else self.write(sympy.nan)
        return self.w.add("Where", [self.write(cond), self.write(value), other])

    def _log1p(self, x: str) -> str:
        w = self.w
        u = w.add("Add", [x, self.const(1)])
        um1 = w.add("Sub", [u, self.const(1)])
        # log(u) * (x / (u - 1)): the product x * log(u) first overflowed for x >= ~4e36
        ratio = w.add("Mul", [w.add("Log", [u]), w.add("Div", [x, um1])])
        # u == 1: x is below the rounding of 1 + x, and log1p(x) = x; u = inf: log(u)
        exact = w.add("Or", [w.add("Equal", [um1, self.const(0)]),
                             w.add("IsInf", [u])])
        return w.add("Where", [exact, w.add("Where", [w.add("Equal", [um1, self.const(0)]), x,
                                                      w.add("Log", [u])]), ratio])

    def _expm1(self, x: str) -> str:
        w = self.w
        u = w.add("Exp", [x])
        um1 = w.add("Sub", [u, self.const(1)])
        # (u - 1) * (x / log(u)): the product (u - 1) * x first overflowed near x = 88 (float32)
        ratio = w.add("Mul", [um1, w.add("Div", [x, w.add("Log", [u])])])
        small = w.add("Equal", [u, self.const(1)])
        plain = w.add("Or", [w.add("Equal", [um1, self.const(-1)]), w.add("IsInf", [u])])
        return w.add("Where", [small, x, w.add("Where", [plain, um1, ratio])])

    def _safe_divisor(self, a: str, b: str) -> tuple[str, str]:
        """(b == 0, a divisor ONNX's integer Div and Mod never trap on): 1 where b is 0 and
        where a is INT_MIN and b is -1 (x86's idiv raises SIGFPE for both, and onnxruntime
        divides natively, killing the host process). a / 1 is then INT_MIN with remainder 0,
        NumPy's (and graphc's) INT_MIN // -1 and INT_MIN % -1; by zero is masked to 0 after.
        Built once per operand pair in a graph (`a // b` and `a % b` share it)."""
        w = self.w
        key = ("safe_divisor", a, b, self.dtype)
        if key in w.shared:
            return w.shared[key]
        is_zero = w.add("Equal", [b, self.const(0)])
        lowest = self.const(int(np.iinfo(self.dtype).min))
        overflow = w.add("And", [w.add("Equal", [a, lowest]),
                                 w.add("Equal", [b, self.const(-1)])])
        safe = w.add("Where", [w.add("Or", [is_zero, overflow]), self.const(1), b])
        w.shared[key] = (is_zero, safe)
        return is_zero, safe

    def _float_divmod(self, a: str, b: str) -> tuple[str, str]:
        """NumPy's float ``(a // b, a % b)`` as its npy_divmod computes them (the llvm
        kernels do the same): C's fmod (ONNX ``Mod(fmod=1)``), the quotient ``(a - fmod) / b``
        corrected to the divisor's sign and snapped to an integer, signed zeros as NumPy's.
        ``Floor(a / b)`` is not it: ``1 // 0.1`` is 9 (a / b rounds up to 10), ``inf // 2`` is
        NaN and ``-1 // inf`` is -1.

        A value that may be -0.0 is always Where's second branch, under a condition that is no
        ``Not``: onnxruntime's Where gives +0.0 when it picks a -0.0 from its first branch,
        and its optimizer swaps the branches of a Where whose condition is a Not."""
        key = ("divmod", a, b)
        if key in self.memo:
            return self.memo[key]
        w = self.w
        zero, one = self.const(0), self.const(1)

        def nonzero(v):  # v != 0, true for NaN, without a Not
            return w.add("Or", [w.add("Or", [w.add("Less", [v, zero]),
                                             w.add("Greater", [v, zero])]),
                                w.add("IsNaN", [v])])

        m = w.add("Mod", [a, b], fmod=1)  # the sign of a; NaN for b == 0 or an infinite a
        quotient = w.add("Div", [a, b])
        div = w.add("Div", [w.add("Sub", [a, m]), b])
        m_nonzero = nonzero(m)
        fix = w.add("And", [m_nonzero, w.add("Xor", [w.add("Less", [b, zero]),
                                                     w.add("Less", [m, zero])])])
        # a zero remainder takes the divisor's sign (b is neither 0 nor NaN there)
        signed_zero = w.add("Where", [w.add("Greater", [b, zero]), zero, self.const(-0.0)])
        m = w.add("Where", [fix, w.add("Add", [m, b]),
                            w.add("Where", [m_nonzero, m, signed_zero])])
        div = w.add("Where", [fix, w.add("Sub", [div, one]), div])
        floor = w.add("Floor", [div])
        snapped = w.add("Where", [w.add("Greater", [w.add("Sub", [div, floor]),
                                                    self.const(0.5)]),
                                  w.add("Add", [floor, one]), floor])  # (never -0.0)
        # a zero quotient takes the sign of a / b (finite there: |a| < |b| or b infinite)
        q = w.add("Where", [nonzero(div), snapped, w.add("Mul", [quotient, zero])])
        q = w.add("Where", [w.add("Equal", [b, zero]), quotient, q])
        self.memo[key] = (q, m)
        return q, m

    def _floordiv(self, a: str, b: str) -> str:
        w = self.w
        if self.dtype.kind == "f":
            return self._float_divmod(a, b)[0]
        zero = self.const(0)
        is_zero, safe = self._safe_divisor(a, b)
        q = w.add("Div", [a, safe])  # truncates
        # the remainder, the sign of a (no Mod(fmod=1): |q * safe| <= |a| cannot overflow)
        r = w.add("Sub", [a, w.add("Mul", [q, safe])])
        off = w.add("And", [w.add("Not", [w.add("Equal", [r, zero])]),
                            w.add("Xor", [w.add("Less", [r, zero]),
                                          w.add("Less", [safe, zero])])])
        q = w.add("Where", [off, w.add("Sub", [q, self.const(1)]), q])
        return w.add("Where", [is_zero, zero, q])

    def _mod(self, a: str, b: str) -> str:
        w = self.w
        if self.dtype.kind != "f":
            is_zero, safe = self._safe_divisor(a, b)
            return w.add("Where", [is_zero, self.const(0),
                                   w.add("Mod", [a, safe], fmod=0)])
        return self._float_divmod(a, b)[1]


def _negated(term) -> bool:
    coeff, _ = term.as_coeff_mul()
    return coeff.is_number and coeff < 0


def _expression(w: Writer, node: Node, ins: list[str]) -> str:
    """Any elementwise node, from its sympy expression."""
    from ..ops.elementwise import value_dtype

    expr = node.op.expr(node.attrs)
    dtype = node.attrs.get("dtype") if node.op.name == "elemwise" else None
    if dtype is None or np.dtype(dtype) == np.dtype(bool):
        dtype = value_dtype(t.dtype for t in node.inputs)
    out = ExpressionWriter(w, node, ins, dtype).write(expr)
    want = node.type.dtype
    produced = np.dtype(bool) if isinstance(expr, sympy.logic.boolalg.Boolean) else \
        np.dtype(dtype)
    if produced != want:
        out = w.add("Cast", [out], to=dtypes.to_onnx(want))
    if out in ins:  # (an expression that is one of its inputs: ONNX wants a new name)
        out = w.add("Identity", [out])
    return out


# -- loops ------------------------------------------------------------------------------------


def _loop_results_read(order: list[Node]) -> dict[int, set[int]]:
    """For each scan node, the result indices some scan_output reads."""
    read: dict[int, set[int]] = {}
    for n in order:
        if n.op.name == "scan_output":
            read.setdefault(n.inputs[0].uid, set()).add(int(n.attrs["index"]))
    return read


def _body_graph(w: Writer, node: Node, ins: list[str], extra_inputs: list,
                history: list[int]) -> onnx.GraphProto:
    """The loop body as an ONNX graph: `extra_inputs` (value infos written before the body's
    own), the carry and x placeholders, then outputs new carries, ys and the carries entering
    the step for each history index in `history`."""
    a = node.attrs
    body, nc, nx = a["body"], a["n_carry"], a["n_xs"]
    sub = Writer(w.opset, parent=w)
    inputs = list(extra_inputs)
    for ph in body.inputs[:nc + nx]:
        name = sub.fresh(_clean(ph.attrs["name"]))
        sub.names[ph.uid] = name
        inputs.append(_value_info(name, ph.type))
    for ph, outer in zip(body.inputs[nc + nx:], ins[nc + nx:]):
        sub.names[ph.uid] = outer  # captured: read from the enclosing graph
    _write_nodes(sub, topological(body.outputs))
    produced = {o for n in sub.nodes for o in n.output}
    outputs, seen = [], set()
    entries = [(o, o.type) for o in body.outputs] + \
        [(body.inputs[i], body.inputs[i].type) for i in history]
    for k, (o, t) in enumerate(entries):
        name = sub.names[o.uid]
        if name not in produced or name in seen:
            name = sub.add("Identity", [name], sub.fresh(f"body_out_{k}"))
        seen.add(name)
        outputs.append(_value_info(name, t))
    return helper.make_graph(sub.nodes, sub.fresh("scan_body"), inputs, outputs)


@exports("scan")
def _scan(w, node, ins):
    a = node.attrs
    nc, nx, body = a["n_carry"], a["n_xs"], a["body"]
    ny = len(body.outputs) - nc
    read = w.readers.get(node.uid, set())
    history = sorted(i - nc - ny for i in read if i >= nc + ny)
    if nx == 0:
        return _scan_as_loop(w, node, ins, history)
    graph = _body_graph(w, node, ins, [], history)
    k = ny + len(history)
    outs = [w.fresh(f"loop_carry_{i}") for i in range(nc)] + \
        [w.fresh(f"loop_y_{j}") for j in range(ny)] + \
        [w.fresh(f"loop_history_{i}") for i in history]
    direction = 1 if a["reverse"] else 0  # (reverse in and out: ys[t] is step t's)
    w.nodes.append(helper.make_node(
        "Scan", ins[:nc + nx], outs, w.fresh("scan"), body=graph, num_scan_inputs=nx,
        scan_input_directions=[direction] * nx,
        # (no ys: the attribute is left out, as helper.make_node cannot type an empty list)
        **({"scan_output_directions": [direction] * k} if k else {})))
    w.results[node.uid] = outs[:nc + ny] + [None] * nc
    for i, name in zip(history, outs[nc + ny:]):
        w.results[node.uid][nc + ny + i] = name
    return outs[0] if outs else w.const(np.asarray(True))


def _scan_as_loop(w, node, ins, history):
    """A scan without xs: an ONNX Loop of `length` steps (ys flipped back when reverse)."""
    a = node.attrs
    nc, body = a["n_carry"], a["body"]
    ny = len(body.outputs) - nc
    extra = [helper.make_tensor_value_info(w.fresh("iteration"), onnx.TensorProto.INT64, []),
             helper.make_tensor_value_info(w.fresh("cond"), onnx.TensorProto.BOOL, [])]
    graph = _body_graph(w, node, ins, extra, history)
    cond_out = helper.make_tensor_value_info(w.fresh("cond_out"), onnx.TensorProto.BOOL, [])
    graph.node.append(helper.make_node("Identity", [extra[1].name], [cond_out.name]))
    graph.output.insert(0, cond_out)
    length = w.add("Squeeze", [w.dim(node, as_dim(a["length"]))])
    outs = [w.fresh(f"loop_carry_{i}") for i in range(nc)] + \
        [w.fresh(f"loop_y_{j}") for j in range(ny + len(history))]
    w.nodes.append(helper.make_node("Loop", [length, ""] + ins[:nc], outs, w.fresh("loop"),
                                    body=graph))
    stacked = outs[nc:]
    if a["reverse"]:  # the Loop stacks in step order; ys are indexed by t = T-1-step
        stacked = [w.add("Slice", [y, w.ints([-1]), w.ints([-(2**63)]), w.ints([0]),
                                   w.ints([-1])]) for y in stacked]
    w.results[node.uid] = outs[:nc] + stacked[:ny] + [None] * nc
    for i, name in zip(history, stacked[ny:]):
        w.results[node.uid][nc + ny + i] = name
    return outs[0] if outs else w.const(np.asarray(True))


@exports("scan_output")
def _scan_output(w, node, ins):
    name = w.results[node.inputs[0].uid][int(node.attrs["index"])]
    if name is None:  # pragma: no cover - readers are collected before the walk
        _fail(node, "reads a loop result the exporter did not write")
    return name


def _clean(name: str) -> str:
    return re.sub(r"\W", "_", name).strip("_") or "t"


# -- the walk -----------------------------------------------------------------------------------


def _value_info(name: str, t) -> onnx.ValueInfoProto:
    shape = [d if isinstance(d, int) else str(d) for d in t.shape]
    return helper.make_tensor_value_info(name, dtypes.to_onnx(t.dtype), shape)


def _declared(outputs_or_fn, inputs):
    from ..function import Function

    if isinstance(outputs_or_fn, Function):
        declared = getattr(outputs_or_fn, "declared", None)
        if declared is None:
            raise UnsupportedError("export: this Function does not keep its declared graph; "
                                   "pass its output tensors instead")
        outs, ins = declared
        return outs, (inputs if inputs is not None else ins)
    if callable(outputs_or_fn) and not isinstance(outputs_or_fn, Tensor):
        raise UnsupportedError(
            f"export: outputs_or_fn is a Python {type(outputs_or_fn).__name__}: pass the "
            "output tensors or a compiled gc.Function (gc.compile(...))")
    if isinstance(outputs_or_fn, Tensor):
        outs = [outputs_or_fn]
    elif isinstance(outputs_or_fn, (list, tuple)):
        outs = list(outputs_or_fn)
    else:
        raise UnsupportedError(f"export: outputs must be a tensor, a list of tensors or a "
                               f"gc.Function, got {type(outputs_or_fn).__name__}")
    for o in outs:
        if not isinstance(o, Tensor):
            raise UnsupportedError(f"export: outputs must be tensors, got {type(o).__name__}")
    return outs, inputs


def _check_arguments(inputs, opset) -> None:
    """Argument mistakes as graphc errors naming the argument (they were raw TypeErrors and
    AttributeErrors from deep inside the writer)."""
    if opset is not None and not is_int_value(opset):
        raise UnsupportedError(f"export: opset must be an int (or None for {DEFAULT_OPSET}), "
                               f"got {opset!r} ({type(opset).__name__})")
    if inputs is None:
        return
    if isinstance(inputs, Tensor) or not isinstance(inputs, (list, tuple)):
        raise UnsupportedError(f"export: inputs must be a list of placeholder tensors, got "
                               f"{type(inputs).__name__}")
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor) or t.op != "placeholder":
            what = f"a {t.op} tensor" if isinstance(t, Tensor) else type(t).__name__
            raise UnsupportedError(f"export: inputs[{i}] must be a placeholder tensor "
                                   f"(gc.placeholder), got {what}")


def _refuse_state(outs: list[Tensor]) -> None:
    graph = outs[0].graph
    reach = {n.uid for n in topological([o.node for o in outs])}
    for trigger, entries in graph.default_updates.items():
        if trigger.uid in reach:
            scope = trigger.scope or ""
            what = ("training-mode batch norm" if "batch_norm" in scope else
                    "dropout in training mode" if "dropout" in scope else
                    f"a {trigger.op.name} node that updates "
                    f"{', '.join(p.name for p, _ in entries)}")
            raise UnsupportedError(
                f"export: the graph contains {what}, which updates state when it runs; "
                f"export an eval-mode graph (module.eval() before building it){at(trigger.loc)}")
    for n in _all_nodes(topological([o.node for o in outs])):
        if n.op.kind == "random":
            raise UnsupportedError(f"export: {n.op.name} draws random numbers; export an "
                                   f"eval-mode graph{at(n.loc)}")


def _all_nodes(order: list[Node]):
    """`order` and, recursively, the nodes of every loop body in it."""
    for n in order:
        yield n
        if n.op.name == "scan":
            yield from _all_nodes(topological(n.attrs["body"].outputs))


def _write_nodes(w: Writer, order: list[Node]) -> None:
    """Write `order` (topological) into `w`; nodes already named (inputs) are skipped."""
    for n, read in _loop_results_read(order).items():
        w.readers.setdefault(n, set()).update(read)
    for node in order:
        if node.uid in w.names:
            continue
        op = node.op.name
        if op == "parameter":
            name = w.fresh(node.attrs["name"])
            w.initializers.append(numpy_helper.from_array(
                np.asarray(node.attrs["storage"].value), name))
            if not node.attrs["storage"].requires_grad:
                w.frozen.append(name)
        elif op == "constant":
            name = w.const(node.attrs["value"].array)
        elif op == "placeholder":
            _fail(node, f"{node.attrs['name']!r} is not among the inputs")
        else:
            fn = EXPORTERS.get(op)
            if fn is None and node.op.is_elementwise:
                fn = _expression
            if fn is None:
                _fail(node, "has no ONNX export yet")
            name = fn(w, node, [w.names[i.uid] for i in node.inputs])
        w.names[node.uid] = name


def export(outputs_or_fn, path, inputs=None, opset: int | None = None) -> onnx.ModelProto:
    """Write the declared graph of `outputs_or_fn` to `path` (None: do not write)."""
    outs, inputs = _declared(outputs_or_fn, inputs)
    _check_arguments(inputs, opset)
    if not outs:
        raise UnsupportedError("export: no outputs")
    _refuse_state(outs)
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not MIN_OPSET <= opset <= newest:
        # (the writers use opset 13's forms: Softmax over one axis, ReduceSum's axes input)
        raise UnsupportedError(f"export: opset {opset}: graphc writes opsets {MIN_OPSET} to "
                               f"{newest} (this onnx's newest)")
    w = Writer(DEFAULT_OPSET if opset is None else int(opset))
    order = topological([o.node for o in outs])
    placeholders = [n for n in order if n.op.name == "placeholder"]
    if inputs is not None:
        given = [t.node for t in inputs]
        missing = [p.name for p in placeholders if all(p is not g for g in given)]
        if missing:
            raise UnsupportedError(f"export: the outputs need placeholders not in inputs: "
                                   f"{', '.join(missing)}")
        placeholders = given
    graph_inputs = []
    for p in placeholders:
        name = w.fresh(p.attrs["name"])
        w.names[p.uid] = name
        graph_inputs.append(_value_info(name, p.type))
        for axis, d in enumerate(p.type.shape):
            if isinstance(d, sympy.Symbol):
                w.dim_sources.setdefault(d, (name, axis))
    _write_nodes(w, order)
    graph_outputs = []
    for i, o in enumerate(outs):
        name = w.names[o.node.uid]
        out_name = w.fresh(f"output_{i}") if name in {v.name for v in graph_inputs} or \
            any(init.name == name for init in w.initializers) or \
            name in [g.name for g in graph_outputs] else name
        if out_name != name:
            w.add("Identity", [name], out_name)
        graph_outputs.append(_value_info(out_name, o))
    graph = helper.make_graph(w.nodes, "graphc", graph_inputs, graph_outputs, w.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", w.opset)],
                              producer_name="graphc")
    if w.frozen:
        helper.set_model_props(model, {FROZEN_KEY: json.dumps(sorted(w.frozen))})
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model
