"""Plain-text listing of a graph: one line per node, inputs before users."""

from __future__ import annotations

from .graph import Graph, topological
from .shapes import format_shape


def _describe_attrs(node) -> str:
    skip = {"name", "storage", "shape", "dtype", "value", "expr"}
    parts = [f"{k}={v}" for k, v in node.attrs.items() if k not in skip]
    if node.op.name == "constant":
        parts.append(repr(node.attrs["value"]))
    if "expr" in node.attrs:
        parts.append(f"expr={node.attrs['expr']}")
    return ", ".join(parts)


def format_node(node) -> str:
    args = ", ".join(f"%{i.uid}" for i in node.inputs)
    attrs = _describe_attrs(node)
    call = f"{node.op.name}({args}{', ' if args and attrs else ''}{attrs})"
    if node.op.name in ("placeholder", "parameter"):
        call = f"{node.op.name} {node.name!r}"
    where = f"  # {node.loc.short()}" if node.loc is not None else ""
    return f"%{node.uid} = {call} : {format_shape(node.shape)} {node.dtype}{where}"


def format_graph(graph: Graph) -> str:
    nodes = topological(graph.roots()) if graph.outputs or graph.updates else graph.nodes
    lines = [f"graph {graph.name} ({len(nodes)} nodes)"]
    lines += ["  " + format_node(n) for n in nodes]
    if graph.outputs:
        lines.append("  outputs: " + ", ".join(f"%{n.uid}" for n in graph.outputs))
    for p, v in graph.updates:
        lines.append(f"  update {p.name} <- %{v.uid}")
    return "\n".join(lines)
