"""NumPy lowerings: for each op, the Python expression of one line of the generated program.

A lowering receives the node, the variable names of its inputs and a `Printer` for attribute
values (which may mention symbolic dimensions, bound as local variables of the program), and
returns an expression string. Elementwise ops print their sympy expression; other ops call
NumPy directly or the op's reference kernel (``K.<op>``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import sympy
from sympy.printing.pycode import pycode

from graphc.ops import REGISTRY
from graphc.ops import expr as E
from graphc.ops.elementwise import value_dtype
from graphc.ops.expr_numpy import numpy_function, numpy_source
from graphc.ops.registry import OpDef


class Printer:
    """Prints attribute values as Python source (dims as the program's local variables;
    `renamed` maps the dims whose local variable is not their own name)."""

    def __init__(self, renamed: dict | None = None) -> None:
        self.renamed = renamed or {}

    def value(self, v) -> str:
        if isinstance(v, sympy.Expr):
            if v.is_Integer:
                return str(int(v))
            numerator, denominator = sympy.fraction(sympy.together(v))
            if denominator.is_Integer and denominator != 1:  # a size such as N/2: (N)//2,
                return f"({self.value(numerator)})//{int(denominator)}"  # an int, as NumPy needs
            return pycode(v.xreplace(self.renamed), fully_qualified_modules=True)
        if isinstance(v, np.dtype):
            return "np.bool_" if v.kind == "b" else f"np.{v.name}"
        if isinstance(v, tuple):
            inner = ", ".join(self.value(x) for x in v)
            return f"({inner},)" if len(v) == 1 else f"({inner})"
        if isinstance(v, float):
            return repr(v)
        return repr(v)

    def kwargs(self, node, skip=()) -> str:
        return ", ".join(f"{k}={self.value(v)}" for k, v in node.attrs.items() if k not in skip)


Lowering = Callable[[object, list[str], Printer], str]
LOWERINGS: dict[str, Lowering] = {}
#: For each op, the inputs whose memory the value its lowering computes may share (a NumPy
#: view, or the input array itself): a tuple, or a function of the node giving one. Declared
#: with the lowering that produces the view (``lowers(..., views=...)``); ops lowered to their
#: reference kernel declare it on the OpDef (``reference_views``). `views` reads it;
#: Function derives from it, once, which outputs and new values may alias a parameter.
VIEWS: dict[str, tuple[int, ...] | Callable] = {}


def lowers(*names: str, views: tuple[int, ...] | Callable = ()):
    def deco(fn: Lowering) -> Lowering:
        for n in names:
            LOWERINGS[n] = fn
            VIEWS[n] = views
        return fn

    return deco


def views(node) -> tuple[int, ...]:
    """The positions of the inputs whose memory `node`'s value may share on this backend."""
    if node.op.name in ("placeholder", "parameter", "constant"):
        return ()
    declared = VIEWS[node.op.name]
    return declared(node) if callable(declared) else declared


def _reference_call(node, args: list[str], p: Printer) -> str:
    kw = p.kwargs(node)
    return f"K.{node.op.name}({', '.join(args)}{', ' if kw and args else ''}{kw})"


def _identity_input(node) -> tuple[int, ...]:
    """An elementwise expression that is one of its inputs (``x * 1`` simplifies to ``x``)
    is printed as that input's name: the value is the input array itself, or a broadcast
    view of it. Every other expression computes a new array."""
    expr = node.op.expr(node.attrs)
    for i in range(len(node.inputs)):
        if expr == E.sym_input(i) and _result_dtype(node) == node.dtype:
            return (i,)
    return ()


def elementwise_names(node, args: list[str]) -> dict | None:
    """The names `_elementwise` prints the inputs of `node` with, where its line is the bare
    expression (every input used, NumPy's own result dtype); else None."""
    expr = node.op.expr(node.attrs)
    names = {E.sym_input(i): a for i, a in enumerate(args)}
    used = {s for s in expr.free_symbols if s in names}
    if len(used) < len(args) or _result_dtype(node) != node.dtype or _integer(node):
        return None
    return names


@lowers(*[name for name, op in REGISTRY.items() if op.is_elementwise], views=_identity_input)
def _elementwise(node, args, p):
    expr = node.op.expr(node.attrs)
    names = {E.sym_input(i): a for i, a in enumerate(args)}
    text = numpy_source(expr, names, integer=_integer(node), dtype=_value_dtype(node))
    used = {s for s in expr.free_symbols if s in names}
    if len(used) < len(args):
        shape = p.value(tuple(node.shape))
        text = f"np.broadcast_to({text}, {shape})"
    if _result_dtype(node) != node.dtype:
        text = f"np.asarray({text}).astype({p.value(node.dtype)})"
    return text


def _integer(node) -> bool:
    return _value_dtype(node).kind in "iu"


def _value_dtype(node) -> np.dtype:
    """The dtype an elementwise group computes in: its inputs' value dtype (a group of
    numbers only, fused with `fold` off, has no inputs: its own dtype; it was bool, and the
    numbers ran as Python floats and ints)."""
    if not node.inputs:
        return np.dtype(node.dtype)
    return np.dtype(value_dtype(i.dtype for i in node.inputs))


def _result_dtype(node) -> np.dtype:
    """What NumPy itself would return for this expression on inputs of these dtypes."""
    expr = node.op.expr(node.attrs)
    fn = numpy_function(expr, len(node.inputs), _integer(node), _value_dtype(node))
    probes = [np.ones(1, dtype=i.dtype) for i in node.inputs]
    with np.errstate(all="ignore"):
        return np.asarray(fn(*probes)).dtype


@lowers("cast")
def _cast(node, args, p):
    return f"{args[0]}.astype({p.value(node.attrs['dtype'])})"


_REDUCING_UFUNC = {"sum": "np.add", "max": "np.maximum", "min": "np.minimum"}


@lowers("sum", "max", "min")
def _reduce(node, args, p):
    """The ufunc's own ``reduce``: what ``np.sum``/``np.max``/``np.min`` compute (the same
    dtypes, the same error on an empty max), without their Python wrapper's microseconds."""
    a = node.attrs
    return (f"{_REDUCING_UFUNC[node.op.name]}.reduce({args[0]}, axis={p.value(a['axes'])}, "
            f"keepdims={a['keepdims']})")


@lowers("argmax")
def _argmax(node, args, p):
    return f"np.argmax({args[0]}, axis={node.attrs['axis']})"


@lowers("reshape", views=(0,))
def _reshape(node, args, p):
    return f"{args[0]}.reshape({p.value(node.attrs['shape'])})"


@lowers("transpose", views=(0,))
def _transpose(node, args, p):
    return f"{args[0]}.transpose({p.value(node.attrs['axes'])})"


@lowers("broadcast_to", views=(0,))
def _broadcast(node, args, p):
    return f"np.broadcast_to({args[0]}, {p.value(node.attrs['shape'])})"


@lowers("concat")
def _concat(node, args, p):
    return f"np.concatenate([{', '.join(args)}], axis={node.attrs['axis']})"


@lowers("matmul")
def _matmul(node, args, p):
    a = f"{args[0]}.mT" if node.attrs["ta"] else args[0]
    b = f"{args[1]}.mT" if node.attrs["tb"] else args[1]
    return f"KN.batched_matmul({a}, {b})" if node.ndim > 2 else f"{a} @ {b}"


@lowers("numel")
def _numel(node, args, p):
    """A NumPy scalar of the count, as 0-d arithmetic returns anyway: np.asarray with a
    dtype cost 2 µs more in the autoencoder's step (its mean)."""
    dims = " * ".join(f"{args[0]}.shape[{a}]" for a in node.attrs["axes"]) or "1"
    return f"{p.value(node.attrs['dtype'])}({dims})"


@lowers("conv", "conv_weight_grad", "conv_transpose", "max_pool", "max_pool_grad",
        "max_pool_select", "avg_pool")
def _whole_batch_kernel(node, args, p):
    """Convolutions and pooling run the whole-batch kernels of backends/numpy/kernels.py
    (the same values as the ops' reference functions, at hand-written NumPy speed), with
    the executable's scratch buffers."""
    kw = p.kwargs(node)
    return f"KN.{node.op.name}({', '.join(args)}, {kw}, scratch=_scratch)"


@lowers("log_softmax", "softmax", "logsumexp", "one_hot")
def _without_wrappers(node, args, p):
    """The reference's operations, without its Python overhead (backends/numpy/kernels.py)."""
    return f"KN.{node.op.name}({args[0]}, {p.kwargs(node)})"


@lowers("scan_output", views=(0,))
def _scan_output(node, args, p):
    return f"{args[0]}[{node.attrs['index']}]"


def _every_input(node) -> tuple[int, ...]:
    return tuple(range(len(node.inputs)))


@lowers("scan", views=_every_input)  # a carry the body does not change passes through
def _scan(node, args, p):  # (generate() writes the loop's call: it owns the LoopRunners)
    raise AssertionError("scan nodes are generated by backends.numpy.generate")


# Everything else runs the op's NumPy reference semantics, defined next to the op.
_CUSTOM = set(LOWERINGS) | {"placeholder", "parameter", "constant"}
for _name in REGISTRY:
    if _name not in _CUSTOM:
        LOWERINGS[_name] = _reference_call
        VIEWS[_name] = REGISTRY[_name].reference_views


def reference_kernels() -> dict[str, Callable]:
    """The ``K`` namespace of generated programs: every op's reference function."""
    return {name: op.reference for name, op in REGISTRY.items() if op.reference is not None}


def op_of(name: str) -> OpDef:
    return REGISTRY[name]
