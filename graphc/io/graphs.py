"""Graphs as JSON: one entry per node (op name, input indices, attributes, scope, label,
source line), arrays kept aside in an ``ArrayTable`` (stored as .npz next to the JSON).

Attribute values are written with a type tag so they come back exactly: ``{"tuple": [...]}``,
``{"dtype": "float32"}``, ``{"sympy": tree}`` (see expressions.py), ``{"const": key}`` and
``{"param": key}`` (arrays), plain JSON for bool/int/float/str/None. Loading rebuilds each
node through ``Graph.make_node`` with the registry's OpDef — so shape rules check the file as
they check user code — and an unknown op or attribute type is an error, never a guess.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import sympy

from ..errors import GraphError, SourceLocation
from ..ir.graph import Graph, topological
from ..ir.node import Attrs, ConstValue, Node, ParamStorage
from ..ir.types import as_dtype
from ..ops.registry import REGISTRY
from .expressions import from_json, to_json


class ArrayTable:
    """Arrays referenced from JSON by short keys (``a0``, ``a1``, ...)."""

    def __init__(self, arrays: dict[str, np.ndarray] | None = None) -> None:
        self.arrays: dict[str, np.ndarray] = dict(arrays or {})
        self._ids: dict[int, str] = {}

    def put(self, array: np.ndarray, owner: object | None = None) -> str:
        """Store `array` (once per `owner`, e.g. a parameter's storage) and return its key."""
        if owner is not None and id(owner) in self._ids:
            return self._ids[id(owner)]
        key = f"a{len(self.arrays)}"
        self.arrays[key] = np.asarray(array, order="C")  # (ascontiguousarray makes 0-d 1-d)
        if owner is not None:
            self._ids[id(owner)] = key
        return key

    def get(self, key) -> np.ndarray:
        if not isinstance(key, str) or key not in self.arrays:
            raise GraphError(f"the file refers to a missing array {key!r}")
        return self.arrays[key]


def parameter_keys(nodes: Iterable[Node]) -> dict[str, Node]:
    """Unique keys for the parameter nodes among `nodes`: the display name, then ``name#2``,
    ``name#3`` ... for repeated names, in node order (stable for a given program)."""
    out: dict[str, Node] = {}
    for n in nodes:
        if n.op.name != "parameter":
            continue
        key, k = n.name, 2
        while key in out:
            key, k = f"{n.name}#{k}", k + 1
        out[key] = n
    return out


# -- encoding ---------------------------------------------------------------------------------


def _encode_attr(value, table: ArrayTable):
    if isinstance(value, ParamStorage):
        return {"param": table.put(value.value, value)}
    if isinstance(value, ConstValue):
        return {"const": table.put(value.array)}
    if isinstance(value, np.dtype):
        return {"dtype": value.name}
    if isinstance(value, sympy.Basic):
        return {"sympy": to_json(value)}
    if isinstance(value, tuple):
        return {"tuple": [_encode_attr(v, table) for v in value]}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise GraphError(f"cannot save an attribute of type {type(value).__name__}: {value!r}")


def encode_graph(name: str, nodes: list[Node], table: ArrayTable, *, inputs=(), outputs=(),
                 updates=(), default_updates=()) -> dict:
    """The JSON tree of `nodes` (a topological order closed under inputs) and the roles of
    some of them: program inputs/outputs/updates and default updates (trigger, param, value)."""
    index = {n.uid: i for i, n in enumerate(nodes)}

    def idx(n: Node) -> int:
        if n.uid not in index:
            raise GraphError(f"internal: node {n.name} is not among the saved nodes")
        return index[n.uid]

    entries = []
    for n in nodes:
        entry = {"op": n.op.name, "inputs": [idx(i) for i in n.inputs],
                 "attrs": {k: _encode_attr(v, table) for k, v in n.attrs.items()},
                 "scope": n.scope}
        if n.label is not None:
            entry["label"] = n.label
        if n.loc is not None:
            entry["loc"] = [n.loc.filename, n.loc.lineno, n.loc.function]
        entries.append(entry)
    return {"name": name, "nodes": entries,
            "inputs": [idx(n) for n in inputs], "outputs": [idx(n) for n in outputs],
            "updates": [[idx(p), idx(v)] for p, v in updates],
            "default_updates": [[idx(t), idx(p), idx(v)] for t, p, v in default_updates]}


def graph_nodes(graph: Graph) -> tuple[list[Node], list[tuple[Node, Node, Node]]]:
    """Every node of a user graph, plus its default-update nodes (closed under inputs)."""
    triples = [(t, p, v) for t, entries in graph.default_updates.items() for p, v in entries]
    roots = list(graph.nodes) + [v for _, _, v in triples] + [p for _, p, _ in triples]
    return topological(roots), triples


# -- decoding ---------------------------------------------------------------------------------


def _decode_attr(value, table: ArrayTable, name: str | None):
    if isinstance(value, dict):
        if len(value) != 1:
            raise GraphError(f"bad attribute {value!r}")
        (tag, body), = value.items()
        if tag == "param":
            return ParamStorage(name or "param", table.get(body))
        if tag == "const":
            return ConstValue(table.get(body))
        if tag == "dtype":
            return as_dtype(str(body))
        if tag == "sympy":
            return from_json(body)
        if tag == "tuple" and isinstance(body, list):
            return tuple(_decode_attr(v, table, name) for v in body)
        raise GraphError(f"unknown attribute tag {tag!r}")
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise GraphError(f"bad attribute value {value!r}")


def decode_graph(tree: dict, table: ArrayTable) -> Graph:
    """Rebuild a graph written by `encode_graph` (program roles and default updates too)."""
    graph = Graph(str(tree.get("name", "graph")))
    nodes: list[Node] = []
    for i, entry in enumerate(tree["nodes"]):
        op_name = entry["op"]
        op = REGISTRY.get(op_name) if isinstance(op_name, str) else None
        if op is None:
            raise GraphError(f"node {i}: unknown op {op_name!r} (not in this graphc's registry)")
        inputs = []
        for j in entry["inputs"]:
            if not isinstance(j, int) or not 0 <= j < i:
                raise GraphError(f"node {i} ({op_name}): bad input index {j!r}")
            inputs.append(nodes[j])
        raw = entry["attrs"]
        name = raw.get("name") if isinstance(raw.get("name"), str) else None
        attrs = Attrs({str(k): _decode_attr(v, table, name) for k, v in raw.items()})
        loc = entry.get("loc")
        loc = SourceLocation(str(loc[0]), int(loc[1]), str(loc[2])) if loc else None
        try:
            node = graph.make_node(op, inputs, attrs, loc=loc, scope=str(entry.get("scope", "")))
        except GraphError as exc:
            raise GraphError(f"node {i} ({op_name}) does not rebuild: {exc}") from None
        if entry.get("label") is not None:
            node.label = str(entry["label"])
        nodes.append(node)

    def at(j) -> Node:
        if not isinstance(j, int) or not 0 <= j < len(nodes):
            raise GraphError(f"bad node index {j!r}")
        return nodes[j]

    graph.inputs = [at(j) for j in tree.get("inputs", [])]
    graph.outputs = [at(j) for j in tree.get("outputs", [])]
    graph.updates = [(at(p), at(v)) for p, v in tree.get("updates", [])]
    for t, p, v in tree.get("default_updates", []):
        graph.add_default_update(at(t), at(p), at(v))
    return graph
