"""graphc -> ONNX: the declared graph (the user's outputs, or a Function's declared outputs)
written node by node as ONNX nodes. Parameters become initializers, placeholders graph
inputs (symbolic dims as ``dim_param``), constants initializers too.

A graph that updates state when it runs (training-mode batch norm, dropout, any random op)
is refused: export an eval-mode graph. A graphc op without an ONNX form is an
UnsupportedError naming the op and the user's line that built it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import onnx
import sympy
from onnx import helper, numpy_helper

from ..errors import at
from ..ir.graph import topological
from ..ir.node import Node
from ..ir.tensor import Tensor
from . import dtypes
from .errors import UnsupportedError

DEFAULT_OPSET = 18
EXPORTERS: dict[str, Callable] = {}


def exports(*names: str):
    def register(fn):
        for n in names:
            EXPORTERS[n] = fn
        return fn

    return register


class Writer:
    """Collects ONNX nodes, initializers and names while the graph is walked."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: dict[int, str] = {}
        self.used: set[str] = set()

    def fresh(self, base: str) -> str:
        base = base or "t"
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def const(self, value, dtype=None, base: str = "const") -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def ints(self, values, base: str = "shape") -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), base=base)

    def add(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _fail(node: Node, message: str):
    raise UnsupportedError(f"export: {node.op.name} node {message}{at(node.loc)}")


def _shape_values(node: Node, shape) -> list[int]:
    """A reshape target for ONNX: ints, at most one symbolic dim written as -1."""
    out, symbolic = [], 0
    for d in shape:
        if isinstance(d, int):
            out.append(d)
        else:
            symbolic += 1
            out.append(-1)
    if symbolic > 1:
        _fail(node, f"reshapes to {tuple(shape)}, which has several symbolic dims (not yet "
                    "exportable)")
    return out


_SIMPLE = {
    "add": "Add", "sub": "Sub", "mul": "Mul", "neg": "Neg", "exp": "Exp", "log": "Log",
    "sqrt": "Sqrt", "abs": "Abs", "sign": "Sign", "tanh": "Tanh", "sigmoid": "Sigmoid",
    "softplus": "Softplus", "relu": "Relu", "sin": "Sin", "cos": "Cos", "tan": "Tan",
    "arctan": "Atan", "erf": "Erf", "floor": "Floor", "ceil": "Ceil", "round": "Round",
    "reciprocal": "Reciprocal", "softsign": "Softsign", "pow": "Pow", "less": "Less",
    "greater": "Greater", "less_equal": "LessOrEqual", "greater_equal": "GreaterOrEqual",
    "equal": "Equal", "isnan": "IsNaN", "isinf": "IsInf", "maximum": "Max", "minimum": "Min",
}


@exports(*_SIMPLE)
def _simple(w: Writer, node: Node, ins: list[str]) -> str:
    return w.add(_SIMPLE[node.op.name], ins)


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
    if approximate != "none":
        _fail(node, "with approximate='tanh' needs opset >= 20")
    dt = node.type.dtype
    inner = w.add("Erf", [w.add("Mul", [ins[0], w.const(np.sqrt(0.5), dt)])])
    half_x = w.add("Mul", [ins[0], w.const(0.5, dt)])
    return w.add("Mul", [half_x, w.add("Add", [inner, w.const(1, dt)])])


@exports("where")
def _where(w, node, ins):
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
    return w.add("Reshape", [ins[0], w.ints(_shape_values(node, node.attrs["shape"]))])


@exports("transpose")
def _transpose(w, node, ins):
    return w.add("Transpose", ins, perm=[int(a) for a in node.attrs["axes"]])


@exports("broadcast_to")
def _broadcast_to(w, node, ins):
    shape = [d if isinstance(d, int) else 1 for d in node.attrs["shape"]]
    return w.add("Expand", [ins[0], w.ints(shape)])


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
        if not all(isinstance(v, int) for v in (s, st, n)):
            _fail(node, "with symbolic bounds is not exportable yet")
        end = s + st * n
        axes.append(axis)
        s_.append(s)
        e_.append(end if end >= 0 else -(2**63))
        st_.append(st)
    if not axes:
        return w.add("Identity", ins)
    return w.add("Slice", [ins[0], w.ints(s_, "starts"), w.ints(e_, "ends"),
                           w.ints(axes, "axes"), w.ints(st_, "steps")])


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
    if op == "ReduceSum" or w.opset >= 18:
        return w.add(op, [ins[0], w.ints(axes, "axes")], keepdims=keep)
    return w.add(op, ins, axes=axes, keepdims=keep)


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
    eq = w.add("Equal", [w.add("Unsqueeze", [ins[0], w.ints([-1], "axes")]),
                         w.ints(range(n), "classes")])
    return w.add("Cast", [eq], to=dtypes.to_onnx(node.attrs["dtype"]))


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
    outs = [outputs_or_fn] if isinstance(outputs_or_fn, Tensor) else list(outputs_or_fn)
    for o in outs:
        if not isinstance(o, Tensor):
            raise UnsupportedError(f"export: outputs must be tensors, got {type(o).__name__}")
    return outs, inputs


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
    for n in topological([o.node for o in outs]):
        if n.op.kind == "random":
            raise UnsupportedError(f"export: {n.op.name} draws random numbers; export an "
                                   f"eval-mode graph{at(n.loc)}")


def export(outputs_or_fn, path, inputs=None, opset: int | None = None) -> onnx.ModelProto:
    """Write the declared graph of `outputs_or_fn` to `path` (None: do not write)."""
    outs, inputs = _declared(outputs_or_fn, inputs)
    if not outs:
        raise UnsupportedError("export: no outputs")
    _refuse_state(outs)
    w = Writer(opset or DEFAULT_OPSET)
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
    for node in order:
        if node.uid in w.names:
            continue
        op = node.op.name
        if op == "parameter":
            name = w.fresh(node.attrs["name"])
            w.initializers.append(numpy_helper.from_array(
                np.asarray(node.attrs["storage"].value), name))
        elif op == "constant":
            name = w.const(node.attrs["value"].array)
        elif op == "placeholder":
            _fail(node, f"{node.attrs['name']!r} is not among the inputs")
        else:
            fn = EXPORTERS.get(op)
            if fn is None:
                _fail(node, "has no ONNX export yet")
            name = fn(w, node, [w.names[i.uid] for i in node.inputs])
        w.names[node.uid] = name
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
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model
