"""Control-flow ONNX ops: If (a condition known at import), Loop (a for-loop) and Scan, the
last two as one ``gc.scan`` node each.

graphc's graphs are static: a branch or a number of steps chosen by data at run time has no
graph form. So ``If`` maps only when its condition folds at import (a constant, a shape
comparison), and ``Loop`` only as a for-loop: a trip count known at import (an int, or a
symbolic dim folded from ``Shape``) and a condition that is true on entry and that the body
passes on unchanged (or sets to a constant true) — which is what ``torch.onnx.export`` writes
for recurrent and scan-like code. Anything else is an UnsupportedError naming the node, its op
type and opset.

A subgraph (a branch, a loop body) reads the names of the enclosing graph; it is translated
with the values the enclosing graph has at that node, and inside a loop body the enclosing
tensors it uses are captured by ``gc.scan`` (so gradients reach them).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import sympy

from .. import ops
from ..errors import GraphError
from ..ir.tensor import Tensor
from ..ops.scan import scan
from . import dtypes
from .errors import StaticValueNeeded, UnsupportedError
from .table import onnx_op


def outer_env(ctx) -> dict:
    """The values of the enclosing graph (ONNX name -> value) at the node being translated,
    which the importer hands over as ``ctx.env``."""
    env = getattr(ctx, "env", None)
    if not isinstance(env, dict):
        ctx.fail("internal: the enclosing graph's values are not available to a subgraph")
    return env


def run_subgraph(ctx, graph: onnx.GraphProto, env: dict, bound: dict) -> list:
    """Translate `graph` (a branch or body) reading `env` (the enclosing values, not modified)
    with its formal inputs `bound`; returns the values of its outputs, in order."""
    from .importer import run_nodes

    local = dict(env)
    for t in graph.initializer:
        local[t.name] = dtypes.array_of(t, f"subgraph {graph.name!r}'s initializer")
    local.update(bound)
    run_nodes(graph.node, local, ctx.opset)
    outs = []
    for vi in graph.output:
        if vi.name not in local:
            ctx.fail(f"subgraph {graph.name!r} does not define its output {vi.name!r}")
        outs.append(local[vi.name])
    return outs


def _reads(graph: onnx.GraphProto, name: str) -> bool:
    """Whether any node of `graph` (or of a subgraph nested in it) reads `name`."""
    for node in graph.node:
        if name in node.input:
            return True
        for a in node.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            if any(_reads(g, name) for g in subs):
                return True
    return False


def _truth(ctx, value, what: str) -> bool:
    """A condition known at import, as a Python bool. Otherwise StaticValueNeeded (an
    UnsupportedError): the ONNX backend then specializes on the model's boolean inputs."""
    if isinstance(value, Tensor) and value.op != "constant":
        raise StaticValueNeeded(
            f"{ctx.where()}: {what} is computed from data when the model runs; graphc's "
            "graphs are static, so it must be known at import (a constant or a folded shape "
            "comparison)")
    arr = np.asarray(ctx.static(value, what))
    if arr.size != 1:
        ctx.fail(f"{what} has {arr.size} elements, not 1")
    return bool(arr.reshape(-1)[0])


def _length(ctx, value):
    """A trip count known at import: an int, or a symbolic dim folded from a shape."""
    if isinstance(value, Tensor) and value.op not in ("constant", "parameter"):
        raise StaticValueNeeded(
            f"{ctx.where()}: the trip count M is computed from data when the model runs; "
            "graphc needs the number of steps at import (a constant or a dim from Shape)")
    arr = np.asarray(ctx.static(value, "the trip count M"))
    if arr.size != 1:
        ctx.fail(f"the trip count M has {arr.size} elements, not 1")
    m = arr.reshape(-1)[0]
    if isinstance(m, sympy.Expr):
        return int(m) if m.is_Integer else m
    return int(m)


def node_scan(ctx, fn: Callable, init, xs, length=None, reverse: bool = False):
    """gc.scan, with its shape and structure errors reported as this node's."""
    try:
        return scan(fn, init, xs, length=length, reverse=reverse)
    except UnsupportedError:
        raise
    except GraphError as exc:
        ctx.fail(f"its body cannot be a graphc loop: {exc}")


@onnx_op("If")
def _if(ctx, cond):
    taken = _truth(ctx, cond, "the condition")
    branch = ctx.attr("then_branch" if taken else "else_branch")
    return run_subgraph(ctx, branch, outer_env(ctx), {})


@onnx_op("Loop")
def _loop(ctx, trip_count=None, cond=None, *initial):
    body: onnx.GraphProto = ctx.attr("body")
    env = outer_env(ctx)
    if trip_count is None:
        ctx.fail("a Loop without a trip count M is a while loop (its number of steps depends "
                 "on data); graphc maps Loop only as a for-loop")
    length = _length(ctx, trip_count)
    if cond is not None and not _truth(ctx, cond, "the loop condition"):
        ctx.fail("the loop condition is false on entry (zero steps): not supported")
    n = len(initial)
    names = [vi.name for vi in body.input]
    if len(names) != 2 + n or len(body.output) < 1 + n:
        ctx.fail(f"the body has {len(names)} inputs and {len(body.output)} outputs; a Loop "
                 f"with {n} carried values needs {2 + n} inputs and at least {1 + n} outputs")
    init = [ctx.tensor(v) for v in initial]
    counter = _reads(body, names[0])
    if counter:
        init.append(ops.constant(np.asarray(0, dtype=np.int64)))

    def step(carry, _):
        bound = {names[1]: np.asarray(True)}
        bound.update(zip(names[2:], carry[:n]))
        if counter:
            bound[names[0]] = carry[n]
        outs = run_subgraph(ctx, body, env, bound)
        keep_going = outs[0]
        if isinstance(keep_going, Tensor) and keep_going.op != "constant":
            ctx.fail("the loop condition is computed from data in the body (a while loop); "
                     "graphc maps Loop only as a for-loop: a trip count and a condition that "
                     "stays true")
        if not _truth(ctx, keep_going, "the body's condition output"):
            ctx.fail("the body sets the loop condition to false (the loop would stop early); "
                     "only for-loops are supported")
        new = [ctx.tensor(v) for v in outs[1:1 + n]]
        if counter:
            new.append(carry[n] + ops.constant(np.asarray(1, dtype=np.int64)))
        return new, [ctx.tensor(v) for v in outs[1 + n:]]

    final, ys = node_scan(ctx, step, init, None, length=length)
    return list(final[:n]) + list(ys)


def _move_axis(x: Tensor, src: int, dst: int) -> Tensor:
    if src == dst:
        return x
    axes = list(range(x.ndim))
    axes.insert(dst, axes.pop(src))
    return ops.transpose(x, axes)


def _flip0(ctx, x: Tensor, what: str) -> Tensor:
    if not isinstance(x.shape[0], int):
        ctx.fail(f"{what} runs in reverse while others run forward, over a symbolic number "
                 f"of steps {x.shape[0]}: graphc reverses an axis only of known size")
    return x[::-1]


def _body_step(ctx, body: onnx.GraphProto, env: dict, n: int):
    """A gc.scan step function running the ONNX body: n states, then the scan slices."""
    names = [vi.name for vi in body.input]

    def step(carry, x):
        outs = run_subgraph(ctx, body, env, dict(zip(names, list(carry) + list(x))))
        return [ctx.tensor(v) for v in outs[:n]], [ctx.tensor(v) for v in outs[n:]]

    return step


def _scan_v8(ctx, seq_lens, *inputs):
    """Scan-8: inputs and outputs carry a batch axis first and the body sees one example, so
    the loop over the batch is an outer gc.scan around the loop over the sequence."""
    body: onnx.GraphProto = ctx.attr("body")
    m = int(ctx.attr("num_scan_inputs"))
    n = len(inputs) - m
    states = [ctx.tensor(v) for v in inputs[:n]]
    xs = [ctx.tensor(v) for v in inputs[n:]]
    dirs = [int(d) for d in ctx.attr("directions", [0] * m)]
    if m == 0 or len(body.input) != n + m:
        ctx.fail(f"the body has {len(body.input)} inputs, the node {n} states and {m} scan "
                 "inputs")
    steps = xs[0].shape[1]
    if seq_lens is not None:
        lens = np.asarray(ctx.static(seq_lens, "sequence_lens")).ravel()
        if not (isinstance(steps, int) and np.all(lens == steps)):
            ctx.fail("sequence_lens shorter than the sequence are not supported")
    reverse = all(d == 1 for d in dirs)
    step = _body_step(ctx, body, outer_env(ctx), n)

    def example(_, ex):
        seqs = [_flip0(ctx, x, f"scan input {i}") if d == 1 and not reverse else x
                for i, (x, d) in enumerate(zip(ex[n:], dirs))]
        final, ys = node_scan(ctx, step, list(ex[:n]), seqs, reverse=reverse)
        # Scan-8 writes outputs in the order of the steps taken
        ys = [_flip0(ctx, y, f"scan output {j}") if reverse else y for j, y in enumerate(ys)]
        return [], list(final) + ys

    _, results = node_scan(ctx, example, [], states + xs)
    return results


@onnx_op("Scan")
def _scan_op(ctx, *inputs):
    if ctx.opset < 9:
        return _scan_v8(ctx, *inputs)
    body: onnx.GraphProto = ctx.attr("body")
    m = int(ctx.attr("num_scan_inputs"))
    n = len(inputs) - m
    states = [ctx.tensor(v) for v in inputs[:n]]
    xs = [ctx.tensor(v) for v in inputs[n:]]
    k = len(body.output) - n
    in_axes = [int(a) for a in ctx.attr("scan_input_axes", [0] * m)]
    in_dirs = [int(d) for d in ctx.attr("scan_input_directions", [0] * m)]
    out_axes = [int(a) for a in ctx.attr("scan_output_axes", [0] * k)]
    out_dirs = [int(d) for d in ctx.attr("scan_output_directions", [0] * k)]
    if m == 0:
        ctx.fail("a Scan without scan inputs has no number of steps")
    if len(in_axes) != m or len(in_dirs) != m or len(out_axes) != k or len(out_dirs) != k:
        ctx.fail(f"scan_input_axes/directions need {m} entries and scan_output_axes/"
                 f"directions {k}; got {len(in_axes)}, {len(in_dirs)}, {len(out_axes)}, "
                 f"{len(out_dirs)}")
    xs = [_move_axis(x, ctx.axis(a, x.ndim, "scan input axis"), 0) for x, a in zip(xs, in_axes)]
    # one direction for the whole loop when every input agrees; others are flipped
    reverse = all(d == 1 for d in in_dirs)
    xs = [_flip0(ctx, x, f"scan input {i}") if d == 1 and not reverse else x
          for i, (x, d) in enumerate(zip(xs, in_dirs))]
    if len(body.input) != n + m:
        ctx.fail(f"the body has {len(body.input)} inputs, the node {n} states and {m} scan "
                 "inputs")
    step = _body_step(ctx, body, outer_env(ctx), n)
    final, ys = node_scan(ctx, step, states, xs, reverse=reverse)
    results = list(final)
    for j, (y, a, d) in enumerate(zip(ys, out_axes, out_dirs)):
        if (d == 1) != reverse:  # ONNX: a reverse output holds step t's value at T-1-t
            y = _flip0(ctx, y, f"scan output {j}")
        results.append(_move_axis(y, 0, ctx.axis(a, y.ndim, "scan output axis")))
    return results
