"""Pictures of graphs with graphviz.

Every node shows its op (or name), shape and dtype. Placeholders, parameters, constants and
outputs have their own styles; gradient nodes (built by gc.grad) are drawn in a warm color;
nodes are grouped into clusters by name scope (modules, "grad/...", fused groups), which keeps
pictures of a few hundred nodes legible. Parameter updates of a training step are drawn as
dashed edges back to the parameter.

Every piece of text that reaches the dot source (graph and scope names, node labels, titles,
tooltips) goes through `_text`: names are the user's (or an ONNX file's), and dot would
otherwise read a trailing backslash as escaping the closing quote (a syntax error), expand
``\\N``/``\\G``/``\\l`` in labels, and take ``<...>`` as an HTML-like label.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import graphviz

from .errors import BackendError, GraphError
from .files import atomic_write
from .ir.graph import Graph, topological
from .ir.node import Node
from .ir.shapes import format_shape
from .ir.tensor import Tensor

_STYLE = {
    "placeholder": dict(shape="ellipse", style="filled", fillcolor="#cfe2ff", color="#3d6fb6"),
    "parameter": dict(shape="box", style="filled,rounded", fillcolor="#d4edda", color="#2e7d32"),
    "constant": dict(shape="box", style="filled", fillcolor="#eeeeee", color="#9e9e9e",
                     fontsize="9"),
    "op": dict(shape="box", style="filled", fillcolor="#ffffff", color="#555555"),
    "grad": dict(shape="box", style="filled", fillcolor="#ffe0cc", color="#d9731a"),
    "fused": dict(shape="box", style="filled", fillcolor="#f3e5f5", color="#7b1fa2"),
    # communication between MPI processes (gc.distributed): where a step waits on the others
    "collective": dict(shape="hexagon", style="filled", fillcolor="#fff3c4", color="#b58900"),
}


def _text(value) -> str:
    """`value` as literal dot text: backslashes doubled (no ``\\N``-style escapes, no quote
    swallowed by a trailing backslash), never read as an HTML-like ``<...>`` label, and
    control characters shown as ``\\xNN`` (raw, a NUL made dot fail and left a .dot file
    it could not read back). Text beyond `MAX_TEXT` characters is cut, ending ``...``: dot
    refuses a quoted string over 16384 bytes, and a label that long shows nothing anyway."""
    text = "".join(c if c in "\n\t" or ord(c) >= 32 else f"\\x{ord(c):02x}" for c in str(value))
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT - 3] + "..."
    return graphviz.escape(text)


def _cluster_name(scope: str) -> str:
    """A scope's cluster name: its text, or for a scope too long for `_text`, a digest of it
    (two long scopes that differ only past the cut must stay two clusters)."""
    import hashlib

    if len(scope) <= MAX_TEXT - 20:
        return _text(f"cluster_{scope}")
    return f"cluster_{hashlib.sha256(scope.encode('utf-8', 'surrogatepass')).hexdigest()}"


#: the longest text of one label or name in a picture (`_text`); escaped, with every
#: character up to 4 bytes of UTF-8 doubled, it stays within dot's 16384-byte strings
MAX_TEXT = 1000


def _collect(obj) -> tuple[list[Node], list[Node], list[tuple[Node, Node]], str, dict]:
    """(nodes, outputs, updates, title, fusion info) for whatever the user wants drawn."""
    from .function import Function

    if isinstance(obj, Function):
        obj = obj.graph
    if isinstance(obj, Graph):
        fusion = obj.meta.get("fusion", {})
        if obj.outputs or obj.updates:
            return (topological(obj.roots()), list(obj.outputs), list(obj.updates), obj.name,
                    fusion)
        return list(obj.nodes), [], [], obj.name, fusion
    if isinstance(obj, Tensor):
        tensors = [obj]
    else:
        tensors = list(obj) if isinstance(obj, (list, tuple)) else []
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise GraphError("draw a Graph, a Function, a Tensor or a list of Tensors")
    outs = [t.node for t in tensors]
    return topological(outs), outs, [], tensors[0].graph.name, {}


def _label(node: Node, show_dtype: bool) -> str:
    """The node's label, escaped for dot (see `_text`)."""
    return _text(_raw_label(node, show_dtype))


def _raw_label(node: Node, show_dtype: bool) -> str:
    op = node.op.name
    shape = format_shape(node.shape)
    kind = f"{shape} {node.dtype}" if show_dtype else shape
    if op in ("placeholder", "parameter"):
        return f"{op} {node.name}\n{kind}"
    if op == "constant":
        value = node.attrs["value"]
        return f"constant {value!r}" if value.array.size <= 6 else f"constant\n{kind}"
    title = node.label or op
    if node.op.kind == "collective":  # allreduce sum, broadcast from 0
        what = node.attrs.get("reduction")
        title = f"{title} {what}" if what else f"{title} (root {node.attrs['root']})"
    if op == "elemwise":
        title = f"{node.label or 'fused'}\n{node.attrs['expr']}"
        if len(title) > 60:
            title = title[:57] + "..."
    return f"{title}\n{kind}"


def _kind(node: Node) -> str:
    op = node.op.name
    if op in ("placeholder", "parameter", "constant"):
        return op
    if node.op.kind == "collective":
        return "collective"
    if op == "elemwise" and not node.scope.startswith("grad"):
        return "fused"
    return "grad" if node.scope.startswith("grad") else "op"


#: the node count above which dot's layout passes are bounded (`to_dot`)
LARGE_GRAPH = 150


def to_dot(graph_or_outputs, *, show_dtype: bool = True, clusters: bool = True,
           rankdir: str = "TB", title: str | None = None) -> graphviz.Digraph:
    """A `graphviz.Digraph` of a graph, a compiled function's graph, or some tensors.

    In an optimized graph, each fused elementwise node is drawn as a cluster holding the ops
    it was made of (its label shows the fused expression).
    """
    nodes, outputs, updates, name, fusion = _collect(graph_or_outputs)
    dot = graphviz.Digraph(name=_text(name))
    dot.attr(rankdir=rankdir, fontname="Helvetica", fontsize="11", label=_text(title or name),
             labelloc="t", compound="true")
    if len(nodes) > LARGE_GRAPH:
        # dot's ranking (network simplex) and crossing minimization take minutes on deep
        # graphs where one node feeds every layer (an unrolled RNN's weights: 80 steps ran
        # over 100 s); bounded passes draw them in seconds, by size alone (deterministic)
        dot.attr(nslimit="1", nslimit1="1", mclimit="0.1")
    dot.attr("node", fontname="Helvetica", fontsize="10", height="0.3")
    dot.attr("edge", color="#777777", arrowsize="0.6")
    output_ids = {n.uid for n in outputs}

    groups: dict[str, list[Node]] = {}
    for n in nodes:
        groups.setdefault(n.scope if clusters else "", []).append(n)

    def emit(target, node: Node) -> None:
        style = dict(_STYLE[_kind(node)])
        if node.uid in output_ids:
            style.update(penwidth="2.5", peripheries="2")
        tooltip = _text(f"{node.op.name} %{node.uid}" + (f" at {node.loc}" if node.loc else ""))
        if node.uid in fusion:
            _emit_fused(target, node, fusion[node.uid], style, tooltip)
            return
        if node.op.name == "scan":
            _emit_loop(target, node, f"n{node.uid}", show_dtype, style, tooltip)
            return
        target.node(f"n{node.uid}", _label(node, show_dtype), tooltip=tooltip, **style)

    # nested clusters following the scope path ("mlp/linear1" inside "mlp")
    tree: dict = {}
    for scope in groups:
        level = tree
        for part in [p for p in scope.split("/") if p]:
            level = level.setdefault(part, {})

    def draw(target, path: str, level: dict) -> None:
        for n in groups.get(path, []):
            emit(target, n)
        for part, sub in level.items():
            child = f"{path}/{part}" if path else part
            with target.subgraph(name=_cluster_name(child)) as c:
                grad = child.startswith("grad")
                c.attr(label=_text(part), style="rounded,dashed" if grad else "rounded",
                       color="#d9731a" if grad else "#9e9e9e", fontsize="10")
                draw(c, child, sub)

    draw(dot, "", tree)
    for n in nodes:
        for k, i in enumerate(n.inputs):
            src = _port(i, fusion)
            if n.uid in fusion:
                members = [m for m, op in enumerate(fusion[n.uid]["ops"]) if ("in", k) in
                           op["inputs"]]
                for m in members:
                    dot.edge(src, f"n{n.uid}_{m}")
            else:
                dot.edge(src, f"n{n.uid}")
    for param, value in updates:
        dot.edge(_port(value, fusion), f"n{param.uid}", style="dashed", color="#2e7d32",
                 label="update", fontsize="8", constraint="false")
    return dot


def _port(node: Node, fusion: dict) -> str:
    """The dot id that carries a node's value (a fused node's value leaves its last op)."""
    if node.uid in fusion:
        return f"n{node.uid}_{len(fusion[node.uid]['ops']) - 1}"
    return f"n{node.uid}"


def _emit_fused(target, node: Node, info: dict, style: dict, tooltip: str) -> None:
    with target.subgraph(name=f"cluster_fused_{node.uid}") as c:
        expr = str(node.attrs["expr"])
        expr = expr if len(expr) <= 70 else expr[:67] + "..."
        c.attr(label=_text(f"fused: {expr}"), style="rounded,filled", fillcolor="#faf4fb",
               color="#7b1fa2", fontsize="9")
        last = len(info["ops"]) - 1
        for m, op in enumerate(info["ops"]):
            member_style = dict(_STYLE["fused"])
            if m == last:
                member_style.update({k: v for k, v in style.items() if k in ("penwidth",
                                                                          "peripheries")})
            consts = [ref[1] for ref in op["inputs"] if ref[0] == "const"]
            label = op["op"] + (f" ({', '.join(consts)})" if consts else "")
            c.node(f"n{node.uid}_{m}", _text(f"{label}\n{format_shape(op['shape'])}"),
                   tooltip=tooltip, **member_style)
            for ref in op["inputs"]:
                if ref[0] == "op":
                    c.edge(f"n{node.uid}_{ref[1]}", f"n{node.uid}_{m}")


def _emit_loop(target, node: Node, ident: str, show_dtype: bool, style: dict,
               tooltip: str) -> None:
    """A scan as a cluster holding its body (nested loops inside, recursively); the loop node
    itself sits in the cluster and receives the body's results as dashed edges."""
    body, nc = node.attrs["body"], node.attrs["n_carry"]
    length = format_shape((node.attrs["length"],)).strip("(),")
    direction = ", reverse" if node.attrs["reverse"] else ""
    with target.subgraph(name=f"cluster_{ident}") as c:
        c.attr(label=_text(f"scan over {length} steps{direction}"), style="rounded,filled",
               fillcolor="#f1f8ff", color="#3d6fb6", fontsize="10")
        c.node(ident, f"scan\n{nc} carry, {len(body.outputs) - nc} y", tooltip=tooltip,
               **style)
        members = topological(body.outputs + body.inputs)
        for n in members:
            sub = f"{ident}_{n.uid}"
            if n.op.name == "scan":
                _emit_loop(c, n, sub, show_dtype, dict(_STYLE["op"]), n.op.name)
            else:
                c.node(sub, _label(n, show_dtype), **_STYLE[_kind(n)])
            for i in n.inputs:
                c.edge(f"{ident}_{i.uid}", sub)
        for k, o in enumerate(body.outputs):
            c.edge(f"{ident}_{o.uid}", ident, style="dashed", color="#3d6fb6",
                   label="carry" if k < nc else "y", fontsize="8")


def dot_available() -> bool:
    return shutil.which("dot") is not None


def render(graph_or_outputs, path, **kwargs) -> Path:
    """Write a picture; the format comes from the extension (.svg, .png, .pdf or .dot)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in ("svg", "png", "pdf", "dot", "gv"):
        raise GraphError(f"cannot render to {path.suffix!r}: use .svg, .png, .pdf or .dot")
    dot = to_dot(graph_or_outputs, **kwargs)
    if fmt in ("dot", "gv"):
        atomic_write(path, dot.source.encode())
        return path
    if not dot_available():
        raise BackendError(
            "drawing needs graphviz's 'dot' program (Debian/Ubuntu: apt-get install graphviz); "
            f"or render to {path.with_suffix('.dot')} instead"
        )
    try:
        data = dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound as exc:  # on PATH but not runnable
        raise BackendError(f"graphviz's 'dot' program could not run ({exc}); render to "
                           f"{path.with_suffix('.dot')} instead") from None
    except graphviz.CalledProcessError as exc:
        # `dot` refused the source or crashed: one line naming why, not a subprocess traceback
        why = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise BackendError(f"graphviz's 'dot' failed to draw {path.name}"
                           + (f": {why[0]}" if why else f" (exit status {exc.returncode})")
                           ) from None
    atomic_write(path, data)
    return path
