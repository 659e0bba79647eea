"""The NumPy backend: the reference. It turns a program into readable Python source.

The generated function has one line per node, commented with the op, its shape and dtype and
the user's source line, so ``Function.source`` reads like a hand-written NumPy training step:

    def step(inputs, params, consts, dims):
        N = dims['N']
        x = inputs[0]                      # placeholder (N, 64) float32
        p_W = params[0]                    # parameter (64, 10) float32
        t7 = x @ p_W                       # matmul (N, 10) float32   mlp.py:12
        ...
        t15 = (p_W - (0.05 * t14))         # elemwise (64, 10) float32  mlp.py:20
        # nothing below can fail: the new values are written in place
        _targets[0][...] = t15  # W
        return [t12]

Where it can, a parameter takes its new value's last operation instead, as ``W -= lr * g``
would: the line keeps its other operand, ``t15 = (0.05 * t14)``,
and the tail computes into the parameter, ``np.subtract(_targets[0], t15, out=_targets[0])``.
"""

from __future__ import annotations

import builtins
import contextvars
import functools
import math
import re
import types

import numpy as np
import sympy

from graphc.errors import BackendError, IndexRangeError, index_error_message
from graphc.ir.graph import Graph
from graphc.ir.node import Node
from graphc.ir.shapes import format_shape
from graphc.ir.text import identifier, source_text
from graphc.ops.expr_numpy import (
    NUMPY_NAMESPACE,
    OverflowCounter,
    numpy_outer_operation,
    numpy_sigmoid,
)
from graphc.passes.memory import leaving_copies, value_roots

from ..base import Backend, Executable, check_flags, leaving_values, nonfinite_message
from . import kernels
from .checks import NonFinite, check_finite_value, check_nan
from .loops import LoopRunner, check_outputs
from .lowering import LOWERINGS, Printer, elementwise_names, reference_kernels, views

#: every name the generated source reads that is not a value of the program: its namespace
#: (see NumPyExecutable), Python's builtins (symbolic bounds print as max/min) and the
#: temporaries of repeated subexpressions (_r0, _r1, ...: graphc.ops.expr_numpy)
_RESERVED = {"np", "K", "KN", "_scratch", "math", "inputs", "params", "consts", "dims", "step",
             "_loops", "_targets", "_check_nan", "_check_finite",
             *NUMPY_NAMESPACE, *dir(builtins)}
_TEMPORARY = re.compile(r"_r[0-9]+")


def _identifier(name: str, taken: set[str], prefix: str = "") -> str:
    """A fresh variable name for free text (a placeholder's name comes from the user or a
    file): graphc.ir.text makes it a plain token, this makes it unique in the program and
    distinct from every name the source reads for itself (an input named ``_r0`` or ``max``
    was taken for a temporary or a builtin: wrong values, or a TypeError)."""
    base = identifier(prefix + name, reserved=_RESERVED)
    if _TEMPORARY.fullmatch(base):
        base = "v" + base
    out, k = base, 2
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def generate(program: Graph, copies: tuple[list[bool], list[bool]],
             check_finite: bool = False, loops: list | None = None,
             loop_body: bool = False) -> tuple[str, list[np.ndarray], list, dict[int, Node]]:
    """Python source of the program, its constant arrays and parameter storages (in order),
    and the node computed on each line of the source (for errors raised while it runs).
    The program's loops (scan nodes) are appended to `loops` as LoopRunners, which the
    source calls as ``_loops[k]``.

    With `check_finite`, every value is checked for NaN as soon as it is computed, and the
    outputs and new parameter values for infinities too, before the step returns (not those
    of a `loop_body`, whose outputs stay inside the program: a running maximum's carry may
    start at -inf).
    `copies`: leaving_copies of the program (what the step copies before its writes)."""
    taken: set[str] = set()
    names: dict[int, str] = {}
    consts: list[np.ndarray] = []
    params: list = []
    symbols = sorted({s for n in program.nodes for s in n.type.symbols}, key=lambda s: s.name)
    # a dim keeps its name as a local variable unless that would shadow something ("K", "np")
    local = {s: _identifier(s.name, taken) for s in symbols}
    printer = Printer({s: sympy.Symbol(v, **s.assumptions0) for s, v in local.items()
                       if v != s.name})
    body = [f"    {local[s]} = dims[{s.name!r}]" for s in symbols]
    input_pos = {n.uid: i for i, n in enumerate(program.inputs)}
    rows: list[tuple[str, str]] = []
    needed = check_outputs(program)
    # new values whose last operation writes straight into their parameter (in _leaving)
    into = {} if check_finite else _written_into(program, copies[1])
    sunk: dict[int, str] = {}  # update index -> its tail line's call, {var} for the line's
    loops = [] if loops is None else loops
    # values are named by their position in the schedule: the same program, the same source
    for position, node in enumerate(program.nodes):
        op = node.op.name
        outer = None  # (ufunc, operands) where the node's last operation writes a parameter
        if op == "placeholder":
            var = _identifier(node.name, taken)
            code = f"inputs[{input_pos[node.uid]}]"
        elif op == "parameter":
            var = _identifier(node.name, taken, "p_")
            code = f"params[{len(params)}]"
            params.append(node.attrs["storage"])
        elif op == "constant":
            var = _identifier(f"c{position}", taken)
            value = node.attrs["value"].array
            if value.ndim == 0:
                code = f"np.{value.dtype.name}({_literal(value.item())})"
            else:
                code = f"consts[{len(consts)}]"
                consts.append(value)
        elif op == "scan":
            var = _identifier(f"t{position}", taken)
            args = ", ".join(names[i.uid] for i in node.inputs)
            code = f"_loops[{len(loops)}](dims, {printer.value(node.attrs['length'])}, [{args}])"
            loops.append(LoopRunner(node, needed.get(node.uid, set()), check_finite))
        else:
            var = _identifier(f"t{position}", taken)
            args = [names[i.uid] for i in node.inputs]
            outer = _outer_operation(node, args, into) if node.uid in into else None
            if outer is None:
                code = LOWERINGS[op](node, args, printer)
            else:  # the operands now; the last operation writes the parameter (_leaving)
                k = into[node.uid][0]
                code, sunk[k] = _split_last_operation(outer, k, program.updates[k][0],
                                                      dict(zip(args, node.inputs)))
        names[node.uid] = var
        where = f"  {source_text(node.loc.short(), 80)}" if node.loc is not None else ""
        comment = f"# {op} {format_shape(node.shape)} {node.dtype}{where}"
        if outer is not None:
            comment += " (its operands: the last operation writes the parameter below)"
        rows.append((f"    {var} = {code}", comment))
    width = min(max((len(a) for a, _ in rows), default=0) + 2, 72)
    plan = program.meta.get("memory")
    pinned = {n.uid for n in program.roots()}
    line_nodes: dict[int, Node] = {}
    leaves = ("placeholder", "parameter", "constant")
    for step, ((a, c), node) in enumerate(zip(rows, program.nodes)):
        body.append(f"{a.ljust(width)}{c}")
        line_nodes[len(body) + 1] = node  # (line 1 is the def)
        if check_finite and node.op.name not in leaves and node.dtype.kind == "f":
            body.append(f"    _check_nan({names[node.uid]}, {step})")
        dead = [names[u] for u in (plan.dies_after.get(step, ()) if plan else ())
                if u not in pinned]
        if dead:  # free temporaries as soon as the memory plan says they are dead
            body.append(f"    del {', '.join(dead)}")
    if check_finite and not loop_body:  # infinities are legitimate inside; not in what
        # leaves the step
        position = {n.uid: k for k, n in enumerate(program.nodes)}
        for n in leaving_values(program):
            body.append(f"    _check_finite({names[n.uid]}, {position[n.uid]})")
    leaving, outs = _leaving(program, names, taken, copies, sunk)
    body += leaving
    body.append(f"    return [{', '.join(outs)}]")
    source = "def step(inputs, params, consts, dims):\n" + "\n".join(body) + "\n"
    return source, consts, params, line_nodes


def _written_into(program: Graph, copy_news: list[bool]) -> dict[int, tuple[int, set[int]]]:
    """The new values that may be computed straight into their parameter: node uid -> (index
    of the update, uids of the inputs safe to read in the step's tail). A candidate is
    elementwise, used by nothing but its one update, and not copied first (it shares no
    memory with what the call writes). An input is safe in the tail when its memory is its
    own parameter's, a constant's or its own: another parameter may already hold its new
    value there, and an input array may be a parameter's (``fn(W.value)``)."""
    uses: dict[int, int] = {}
    for used in [*(i for n in program.nodes for i in n.inputs), *program.outputs,
                 *(v for _, v in program.updates)]:
        uses[used.uid] = uses.get(used.uid, 0) + 1
    candidates = {v.uid: k for k, ((_, v), copy) in enumerate(zip(program.updates, copy_news))
                  if not copy and v.op.is_elementwise and uses[v.uid] == 1}
    if not candidates:
        return {}
    roots = value_roots(program, views)
    into = {}
    for k, (p, v) in enumerate(program.updates):
        if candidates.get(v.uid) == k:
            own = ("parameter", p.attrs["storage"].uid)
            into[v.uid] = (k, {i.uid for i in v.inputs
                               if all(r == own or r[0] == "constant" for r in roots[i.uid])})
    return into


def _outer_operation(node: Node, args: list[str], into: dict) -> tuple[str, list[str]] | None:
    """(ufunc, operand sources) of a new value computed into its parameter, or None where
    its expression cannot end in one ufunc call (see numpy_outer_operation) or an operand
    read in the tail is not safe there."""
    k, safe = into[node.uid]
    names_by_symbol = elementwise_names(node, args)
    if names_by_symbol is None:
        return None
    outer = numpy_outer_operation(node.op.expr(node.attrs), names_by_symbol)
    if outer is None:
        return None
    ufunc, operands = outer
    plain = {a: i for i, a in zip(node.inputs, args)}
    for text in operands:
        if text in plain and plain[text].uid not in safe:
            return None
    return ufunc, operands


def _split_last_operation(outer: tuple[str, list[str]], k: int, param: Node,
                          inputs_by_name: dict) -> tuple[str, str]:
    """The line that keeps a new value's operands, and the tail's call computing it into
    parameter `k` (with ``{var}`` for the line's variable). The parameter itself is read in
    the tail as ``_targets[k]``, the very array written: NumPy then sees an exact in-place
    operation, where the step's read-only view of it cost an overlap check."""
    ufunc, operands = outer
    own = [text in inputs_by_name and inputs_by_name[text].op.name == "parameter"
           and inputs_by_name[text].attrs["storage"] is param.attrs["storage"]
           for text in operands]
    kept = [text for text, is_own in zip(operands, own) if not is_own]
    if len(kept) == 1:
        line, refs = kept[0], iter(["{var}"])
    elif not kept:  # every operand is the parameter itself ({W: -W})
        line, refs = "()", iter(())
    else:
        line, refs = f"({', '.join(kept)},)", iter(f"{{var}}[{i}]" for i in range(len(kept)))
    args = [f"_targets[{k}]" if is_own else next(refs) for is_own in own]
    return line, f"{ufunc}({', '.join(args)}, out=_targets[{k}])"


def _leaving(program: Graph, names: dict[int, str], taken: set[str],
             copies: tuple[list[bool], list[bool]],
             sunk: dict[int, str]) -> tuple[list[str], list[str]]:
    """The step's last lines, and the name each output leaves under: the values that leave
    it, then the parameter updates, written in
    place (``_targets[k]`` is the k-th updated parameter's host array), as a careful NumPy
    programmer writes ``W -= lr * g``: no new array per parameter, no second pass over the
    values in Python. Everything that can raise ran above, so a failed call writes nothing.

    `copies` (graphc.passes.memory.leaving_copies, from the views each line may return) says
    which outputs and new values must be copied first: an output sharing memory with a
    parameter or an input, a new value sharing memory with something this call writes.
    `sunk`: the updates whose new value's last operation writes the parameter (that call,
    on the operands its line kept: _written_into, _split_last_operation)."""
    copy_outputs, copy_news = copies
    lines, outs = [], []  # (each output position its own name: a value listed twice)
    for n, copy in zip(program.outputs, copy_outputs):
        if copy:  # (a copy is also writable: never a read-only broadcast view)
            var = _identifier(f"out_{names[n.uid]}", taken)
            lines.append(f"    {var} = np.array({names[n.uid]})")
            outs.append(var)
        else:
            outs.append(names[n.uid])
    news = []
    for (_, v), copy in zip(program.updates, copy_news):
        var = names[v.uid]
        if copy:
            var = _identifier(f"new_{var}", taken)
            lines.append(f"    {var} = np.array({names[v.uid]})")
        news.append(var)
    if news:
        lines.append("    # nothing below can fail: the new values are written in place")
    for k, ((param, _), var) in enumerate(zip(program.updates, news)):
        if k in sunk:  # the new value's last operation, into the parameter: no temporary
            lines.append(f"    {sunk[k].format(var=var)}  # {source_text(param.name, 60)}")
        else:
            lines.append(f"    _targets[{k}][...] = {var}  # {source_text(param.name, 60)}")
    return lines, outs


#: NumPy's overflows in every step, counted for the sigmoid (expr_numpy.numpy_sigmoid), which
#: compares the count before and after its exp. One counter for all: a loop body's step runs
#: in its program's context, not its own; a count another thread adds only makes a sigmoid
#: look for lanes to mend, and find none.
OVERFLOWS = OverflowCounter()
_COUNTING_SIGMOID = functools.partial(numpy_sigmoid, overflows=OVERFLOWS)


def quiet_context() -> contextvars.Context:
    """A context in which NumPy ignores floating-point errors (infinities and NaN are values
    inside a step, not warnings), made once per executable: ``context.run(step, ...)`` costs
    a context switch, where entering ``np.errstate(all="ignore")`` on every call builds its
    error state again — 6 µs of the tiny MLP's 75 µs call. It is a fresh context, so the
    step reads no context variable of its caller's (numpy >= 2 keeps its error state in one).
    One thread at a time may run in it: Function calls a step under its lock. Overflows are
    counted (`OVERFLOWS`)."""
    context = contextvars.Context()
    context.run(np.errstate(all="ignore", over="call", call=OVERFLOWS).__enter__)
    return context


class NumpyExecutable(Executable):
    applies_updates = True  # the step's last lines write the parameters (see _leaving)

    def __init__(self, program: Graph, check_finite: bool = False,
                 loop_body: bool = False) -> None:
        self.program = program
        self._loops: list[LoopRunner] = []
        #: which outputs and new values the step copies before it writes the parameters
        self.copies = leaving_copies(program, views)
        self.source, self._consts, self._params, self._line_nodes = generate(
            program, self.copies, check_finite, self._loops, loop_body)
        # (their host arrays never move: ParamStorage writes in place)
        self._updated = [p.attrs["storage"] for p, _ in program.updates]
        namespace = {"np": np, "math": math, "K": types.SimpleNamespace(**reference_kernels()),
                     "_check_nan": check_nan, "_check_finite": check_finite_value,
                     "_loops": self._loops, "KN": kernels, "_scratch": kernels.Scratch(),
                     "_targets": [s.host_buffer() for s in self._updated]}
        namespace.update(NUMPY_NAMESPACE)
        namespace["_sigmoid"] = _COUNTING_SIGMOID
        filename = f"<graphc numpy program {source_text(program.name, 80)}>"
        exec(compile(self.source, filename, "exec"), namespace)
        for k, loop in enumerate(self._loops):  # Function.source shows each loop's body
            body = "\n".join("# " + line for line in loop.source.splitlines())
            self.source += f"\n# _loops[{k}]: the body of a scan, run once per step\n{body}\n"
        self._step = namespace["step"]
        # the step reads parameters through read-only views of their host arrays (which
        # never move: ParamStorage writes in place), made once
        self._param_views = [s.value for s in self._params]
        self._dims: dict[tuple, dict] = {}
        self._quiet = quiet_context()
        self.stats = {}

    def views(self, node: Node) -> tuple[int, ...]:
        """What the generated line of `node` may return a view of (declared per op with its
        lowering, or on its OpDef for ops run by their reference kernel)."""
        return views(node)

    def run(self, inputs, binding, key):
        if binding is not None:
            self._dims[key] = {s.name: v for s, v in binding.items()}
        dims = self._dims[key]
        for storage in self._params:  # a device (a cuda function) may hold a newer copy
            if storage.devices:
                storage.host_buffer()
        params = self._param_views
        try:
            outputs = self._quiet.run(self._step, inputs, params, self._consts, dims)
        except IndexRangeError as exc:  # an id or a label out of range: the node that read it
            node = getattr(exc, "node", None) or self.failing_node(exc.__traceback__)
            raise BackendError(index_error_message(node, exc.value, exc.bound)) from None
        except NonFinite as exc:
            where, kind, *body = exc.args  # (a loop names the node of its body itself)
            node = where if isinstance(where, Node) else self.program.nodes[where]
            raise BackendError(nonfinite_message(self.program, node, kind,
                                                 body[0] if body else None)) from None
        for storage in self._updated:  # written in place: device copies must follow
            if storage.devices:
                for device in storage.devices:
                    device.newer = False
                storage.changed_in_place()
        # Outputs are the caller's to keep: never hand out read-only broadcast views.
        return [o if type(o) is np.ndarray and o.flags.writeable else np.array(o)
                for o in outputs], []

    def failing_node(self, tb):
        """The node whose line of the generated step was running when `tb` was raised (a
        loop's runner asks its body's executable, and names the body's node)."""
        line = None
        while tb is not None:
            if tb.tb_frame.f_code is self._step.__code__:
                line = tb.tb_lineno
            tb = tb.tb_next
        return self._line_nodes[line]


class NumpyBackend(Backend):
    name = "numpy"
    lowerings = LOWERINGS

    def compile(self, program: Graph, options: dict) -> NumpyExecutable:
        unknown = sorted(set(options) - {"check_finite"})
        if unknown:
            raise BackendError(f"unknown numpy backend options {unknown}; known: check_finite")
        check_flags("numpy", options, ("check_finite",))
        leaves = {"placeholder", "parameter", "constant"}
        self.check_coverage([n for n in program.nodes if n.op.name not in leaves])
        return NumpyExecutable(program, bool(options.get("check_finite", False)))


BACKEND = NumpyBackend()


def _literal(value) -> str:
    """A Python literal for a scalar constant; inf and nan are spelled as NumPy names."""
    if isinstance(value, float) and not np.isfinite(value):
        return "np.nan" if np.isnan(value) else ("np.inf" if value > 0 else "-np.inf")
    return repr(value)
