"""The Graph: a hash-consed collection of nodes, plus what a compiled program needs.

User code builds nodes into the *current* graph (a default one, or the innermost
``with gc.Graph():``). Creation order is a topological order, since a node's inputs exist
before it. ``gc.compile`` cuts out the part reachable from the outputs into a new Graph whose
``inputs``, ``outputs`` and ``updates`` are set; passes map such a program graph to a new one.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence

import networkx as nx

from ..errors import GraphError, ShapeError, at, capture_location
from .node import Attrs, Node
from .shapes import ShapeChecks, format_shape


class Graph:
    """A static graph of tensor ops. Usable as a context manager (``with gc.Graph():``)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or "graph"
        self.nodes: list[Node] = []
        self._table: dict[tuple, Node] = {}
        self._scopes: list[str] = []
        self._members: set[int] = set()
        self._building_for: Node | None = None  # passes: new nodes inherit this node's line
        # trigger node -> [(parameter node, new value node)], see add_default_update.
        self.default_updates: dict[Node, list[tuple[Node, Node]]] = {}
        # Set on program graphs (what gc.compile / gc.optimize produce).
        self.inputs: list[Node] = []
        self.outputs: list[Node] = []
        self.updates: list[tuple[Node, Node]] = []
        # Filled by passes (fusion groups, memory plan, ...): analysis results for backends.
        self.meta: dict = {}
        # Set while gc.scan traces a loop body into this graph: maps a tensor of another
        # graph (or a parameter) to the body placeholder that captures it (graphc/ops/scan.py).
        self.capture = None

    # -- building ---------------------------------------------------------------------------
    def make_node(
        self,
        op,
        inputs: Sequence[Node],
        attrs: Attrs | dict | None = None,
        *,
        loc=None,
        scope: str | None = None,
    ) -> Node:
        """Build (or find, if an identical one exists) the node ``op(*inputs, **attrs)``."""
        attrs = attrs if isinstance(attrs, Attrs) else Attrs(attrs or {})
        inputs = tuple(inputs)
        key = (op.name, tuple(i.uid for i in inputs), attrs) if op.hash_consed else None
        if key is not None:
            found = self._table.get(key)
            if found is not None:
                return found
        if loc is None:
            loc = self._building_for.loc if self._building_for is not None else capture_location()
        checks = ShapeChecks()
        try:
            out_type = op.infer([i.type for i in inputs], attrs, checks)
        except ShapeError as exc:
            shapes = ", ".join(f"{format_shape(i.shape)} {i.dtype}" for i in inputs)
            raise ShapeError(f"{op.name}: {exc} [inputs: {shapes}]{at(loc)}") from None
        except GraphError as exc:
            raise type(exc)(f"{op.name}: {exc}{at(loc)}") from None
        node = Node(
            op,
            inputs,
            attrs,
            out_type,
            loc=loc,
            scope=self.current_scope if scope is None else scope,
            assumptions=tuple(checks.assumptions),
        )
        self.nodes.append(node)
        self._members.add(node.uid)
        if key is not None:
            self._table[key] = node
        return node

    def set_nodes(self, nodes: list[Node]) -> None:
        """Make `nodes` (a topological order) this graph's node list (program graphs)."""
        self.nodes = list(nodes)
        self._members = {n.uid for n in self.nodes}

    def adopt(self, node: Node) -> Node:
        """Add an existing leaf node (placeholder/parameter) to this graph's node list."""
        if node.inputs:
            raise GraphError("only leaf nodes can be shared between graphs")
        if node.op.hash_consed:
            found = self._table.setdefault(node.key(), node)
            if found is not node:
                return found
        if node.uid not in self._members:
            self._members.add(node.uid)
            self.nodes.append(node)
        return node

    # -- name scopes ------------------------------------------------------------------------
    @property
    def current_scope(self) -> str:
        return "/".join(self._scopes)

    @contextlib.contextmanager
    def name_scope(self, name: str) -> Iterator[str]:
        self._scopes.append(name)
        try:
            yield self.current_scope
        finally:
            self._scopes.pop()

    @contextlib.contextmanager
    def building_for(self, node: Node) -> Iterator[None]:
        """Nodes built inside replace `node`: they take its source line and name scope."""
        saved = self._building_for, self._scopes
        self._building_for = node
        self._scopes = [p for p in node.scope.split("/") if p]
        try:
            with self:  # nodes made of constants alone must land here, not in a user's block
                yield
        finally:
            self._building_for, self._scopes = saved

    @contextlib.contextmanager
    def scope_as(self, path: str) -> Iterator[str]:
        """Build nodes under the full scope `path` (autodiff mirrors forward scopes as grad/...)."""
        saved = self._scopes
        self._scopes = [p for p in path.split("/") if p]
        try:
            with self:
                yield path
        finally:
            self._scopes = saved

    # -- default updates --------------------------------------------------------------------
    def add_default_update(self, trigger: Node, param: Node, value: Node) -> None:
        """Whenever a compiled function's outputs depend on `trigger`, update `param` to `value`.

        This is how batch_norm's running statistics and random ops' states advance without the
        user listing them in ``updates`` (Theano's ``default_update``).
        """
        if param.op.name != "parameter":
            raise GraphError("default updates can only target parameters")
        entries = self.default_updates.setdefault(trigger, [])
        entries[:] = [(p, v) for p, v in entries if p is not param] + [(param, value)]

    # -- traversal --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def placeholders(self) -> list[Node]:
        return [n for n in self.nodes if n.op.name == "placeholder"]

    @property
    def parameters(self) -> list[Node]:
        return [n for n in self.nodes if n.op.name == "parameter"]

    @property
    def constants(self) -> list[Node]:
        return [n for n in self.nodes if n.op.name == "constant"]

    def to_networkx(self, nodes: Iterable[Node] | None = None) -> nx.DiGraph:
        """A DiGraph over node objects with an edge for every input use (for analysis)."""
        g = nx.DiGraph()
        for n in nodes if nodes is not None else self.nodes:
            g.add_node(n)
            for i in n.inputs:
                g.add_edge(i, n)
        return g

    def roots(self) -> list[Node]:
        """What a program computes: its outputs and update values, then the updated
        parameters (in that order). A parameter may be written without being read
        (``updates={q: x * 2}``): it still belongs to the program."""
        return list(self.outputs) + [v for _, v in self.updates] + [p for p, _ in self.updates]

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self.nodes)} nodes>"

    def __str__(self) -> str:
        from .printing import format_graph

        return format_graph(self)

    # -- context manager --------------------------------------------------------------------
    def __enter__(self) -> Graph:
        _stack().append(self)
        return self

    def __exit__(self, *exc) -> None:
        _stack().pop()


def topological(roots: Iterable[Node]) -> list[Node]:
    """Nodes reachable from `roots`, in creation order.

    A node's uid is assigned when it is built and its inputs are always built before it, so
    sorting by uid is a deterministic topological order.
    """
    seen: dict[int, Node] = {}
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node.uid in seen:
            continue
        seen[node.uid] = node
        stack.extend(i for i in node.inputs if i.uid not in seen)
    return [seen[k] for k in sorted(seen)]


def users(nodes: Iterable[Node]) -> dict[Node, list[Node]]:
    """For each node, the nodes that take it as an input (each user listed once)."""
    out: dict[Node, list[Node]] = {}
    for n in nodes:
        out.setdefault(n, [])
        for i in dict.fromkeys(n.inputs):
            out.setdefault(i, []).append(n)
    return out


_local = threading.local()
_DEFAULT = Graph("default")


def _stack() -> list[Graph]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def in_graph_block() -> bool:
    """Whether some ``with gc.Graph():`` block is active (in this thread)."""
    return bool(_stack())


def get_default_graph() -> Graph:
    """The innermost ``with gc.Graph():`` graph, else the module-wide default graph."""
    stack = _stack()
    return stack[-1] if stack else _DEFAULT


def graph_for(x) -> Graph:
    """The graph an op made from tensor x (``normal_like(x)``, ``zeros_like(x)``) goes into:
    the loop body gc.scan is tracing, when there is one (x may be a tensor it captures from
    an enclosing graph: a draw built there would run once per call, not at every step),
    else x's own graph (so that such ops need no ``with gc.Graph():`` around them)."""
    current = get_default_graph()
    return current if current.capture is not None else x.graph


def reset_default_graph() -> Graph:
    """Start a fresh module-wide default graph (handy in notebooks and tests)."""
    global _DEFAULT
    _DEFAULT = Graph("default")
    return _DEFAULT


@contextlib.contextmanager
def name_scope(name: str) -> Iterator[str]:
    """Group the nodes built inside into a named scope (drawn as one cluster by gc.viz)."""
    with get_default_graph().name_scope(name) as full:
        yield full
