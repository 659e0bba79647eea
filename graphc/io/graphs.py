"""Graphs as JSON: one entry per node (op name, input indices, attributes, scope, label,
source line), arrays kept aside in an ``ArrayTable`` (stored as .npz next to the JSON).

Attribute values are written with a type tag so they come back exactly: ``{"tuple": [...]}``,
``{"dtype": "float32"}``, ``{"sympy": tree}`` (see expressions.py), ``{"const": key}`` and
``{"param": key}`` (arrays), ``{"graph": tree}`` (a sub-graph, e.g. a loop's body: the same
tree `encode_graph` writes, format version 2), plain JSON for bool/int/float/str/None.
Loading rebuilds each node through ``Graph.make_node`` with the registry's OpDef — so shape
rules check the file as they check user code — and an unknown op or attribute type is an
error, never a guess.

A file is data: every field is type-checked (a wrong type is a GraphError, which ``gc.load``
reports as a FormatError; an attribute's value by ``ATTR_TYPES``), integers are bounded,
arrays must have a dtype graphc supports, and nesting is bounded (tuples `MAX_TUPLE_DEPTH`,
sub-graphs `MAX_GRAPH_DEPTH`). Names, scopes, labels and source locations are free text: kept
as they are, and escaped by ``graphc.ir.text`` wherever a backend puts them into code.
"""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Iterable
from functools import cache

import numpy as np
import sympy

from ..errors import GraphError, SourceLocation
from ..ir.graph import Graph, topological
from ..ir.node import Attrs, ConstValue, Node, ParamStorage
from ..ir.text import is_identifier
from ..ir.types import SUPPORTED_DTYPES, as_dtype
from ..ops.registry import REGISTRY
from ..ops.shape_ops import check_axes, check_axis, is_int_value
from .expressions import MAX_INT_BITS, from_json, short, to_json

MAX_TUPLE_DEPTH = 32  # tuples inside tuples in one attribute
MAX_GRAPH_DEPTH = 8  # graphs inside graphs (a loop in a loop's body ...)
_DTYPES = {d.name: d for d in SUPPORTED_DTYPES}
_GRAPH_FIELDS = frozenset({"name", "nodes", "inputs", "outputs", "updates", "default_updates"})
_NODE_FIELDS = frozenset({"op", "inputs", "attrs", "scope"})  # (+ "label", "loc" when set)


class ArrayTable:
    """Arrays referenced from JSON by short keys (``a0``, ``a1``, ...)."""

    def __init__(self, arrays: dict[str, np.ndarray] | None = None) -> None:
        self.arrays: dict[str, np.ndarray] = dict(arrays or {})
        self._ids: dict[int, str] = {}
        self._storages: dict[str, ParamStorage] = {}

    def put(self, array: np.ndarray, owner: object | None = None, what: str = "an array") -> str:
        """Store `array` (once per `owner`, e.g. a parameter's storage) and return its key.
        Only what ``gc.load`` reads back is stored: an array (or a value NumPy makes one of)
        with no Python objects in it, since the file's arrays are read without pickle; else a
        FormatError naming `what`, raised before anything is written."""
        if owner is not None and id(owner) in self._ids:
            return self._ids[id(owner)]
        key = f"a{len(self.arrays)}"
        self.arrays[key] = _storable(array, what)
        if owner is not None:
            self._ids[id(owner)] = key
        return key

    def get(self, key) -> np.ndarray:
        if not isinstance(key, str) or key not in self.arrays:
            raise GraphError(f"the file refers to a missing array {short(key)}")
        return self.arrays[key]

    def tensor_array(self, key) -> np.ndarray:
        """The array `key` as a constant's or parameter's value: a dtype graphc supports."""
        array = self.get(key)
        as_dtype(array.dtype)
        return array

    def storage(self, key, name: str) -> ParamStorage:
        """The parameter storage saved under `key`: one per key, so a parameter that several
        nodes (or a graph and its sub-graphs) share stays one parameter."""
        array = self.tensor_array(key)
        if key not in self._storages:
            self._storages[key] = ParamStorage(name, array)
        return self._storages[key]


def _storable(value, what: str) -> np.ndarray:
    """`value` as the C-ordered array the file stores, or a FormatError: arrays holding
    Python objects (object dtype, or a structured dtype with an object field) would be
    pickled by ``np.savez`` and refused by ``gc.load``, which reads without pickle."""
    from ..ir.tensor import Tensor
    from . import FormatError

    if isinstance(value, Tensor):
        raise FormatError(f"gc.save: {what} is the symbolic tensor {short(value.name)}, not an "
                          f"array (a parameter's array is its .value)")
    try:
        array = np.asarray(value, order="C")  # (ascontiguousarray makes 0-d 1-d)
    except Exception as exc:  # a ragged nested list, an object whose __array__ fails ...
        raise FormatError(f"gc.save: {what} is not an array ({type(exc).__name__}: "
                          f"{short(str(exc))})") from None
    if array.dtype.hasobject:
        found = (f"an array of dtype {array.dtype}" if isinstance(value, np.ndarray)
                 else f"a {type(value).__name__}")
        raise FormatError(f"gc.save: {what} is {found}, which cannot be saved: a graphc file "
                          f"holds arrays without Python objects (numbers, bools, strings, "
                          f"bytes), read back without pickle")
    return array


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


def encode_attr(value, table: ArrayTable, *, inputs: int | None = None, depth: int = 0,
                free_text: bool = False):
    """The JSON form of one attribute value. `inputs`: the node's number of inputs when the
    value is an elementwise expression (its symbols are x0..x{inputs-1}); `depth`: how deep
    in sub-graphs the node sits; `free_text`: a string value may be any text (a name).
    Raises GraphError for what `decode_attr` would refuse."""
    return _encode_attr(value, table, inputs, depth, 0, free_text)


def _encode_attr(value, table: ArrayTable, inputs, depth: int, nesting: int,
                 free_text: bool = False):
    if nesting > MAX_TUPLE_DEPTH:
        raise GraphError(f"cannot save tuples nested more than {MAX_TUPLE_DEPTH} deep")
    if isinstance(value, ParamStorage):
        return {"param": table.put(value.value, value)}
    if isinstance(value, ConstValue):
        return {"const": table.put(value.array)}
    if isinstance(value, np.dtype):
        return {"dtype": value.name}
    if isinstance(value, sympy.Basic):
        return {"sympy": to_json(value, inputs)}
    if isinstance(value, Graph):
        if depth >= MAX_GRAPH_DEPTH:
            raise GraphError(f"cannot save graphs nested more than {MAX_GRAPH_DEPTH} deep")
        nodes, triples = graph_nodes(value)
        return {"graph": encode_graph(value.name, nodes, table, inputs=value.inputs,
                                      outputs=value.outputs, updates=value.updates,
                                      default_updates=triples, depth=depth + 1)}
    if isinstance(value, tuple):
        return {"tuple": [_encode_attr(v, table, inputs, depth, nesting + 1, free_text)
                          for v in value]}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool):
        _check_int(value)
    if isinstance(value, str) and not (free_text or is_identifier(value)):
        raise GraphError(f"cannot save the string attribute {short(value)}: only names are "
                         f"free text, other strings must be identifiers")
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise GraphError(f"cannot save an attribute of type {type(value).__name__}: {short(value)}")


def encode_graph(name: str, nodes: list[Node], table: ArrayTable, *, inputs=(), outputs=(),
                 updates=(), default_updates=(), depth: int = 0) -> dict:
    """The JSON tree of `nodes` (a topological order closed under inputs) and the roles of
    some of them: program inputs/outputs/updates and default updates (trigger, param, value).
    `depth` counts the graphs this one is nested in (0 for a file's graph)."""
    index = {n.uid: i for i, n in enumerate(nodes)}

    def idx(n: Node) -> int:
        if n.uid not in index:
            raise GraphError(f"internal: node {n.name} is not among the saved nodes")
        return index[n.uid]

    entries = []
    for n in nodes:
        check_attrs(n.op, n.attrs, [i.type for i in n.inputs])  # (what gc.load would refuse
        # is refused now)
        expression_inputs = len(n.inputs) if n.op.is_elementwise else None
        entry = {"op": n.op.name, "inputs": [idx(i) for i in n.inputs],
                 "attrs": {k: encode_attr(v, table, depth=depth, free_text=k in FREE_TEXT,
                                          inputs=expression_inputs if k == "expr" else None)
                           for k, v in n.attrs.items()},
                 "scope": n.scope}
        if n.label is not None:
            entry["label"] = n.label
        if n.loc is not None:
            _check_int(n.loc.lineno)
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


def decode_attr(value, table: ArrayTable, name: str | None = None, *,
                inputs: int | None = None, depth: int = 0, free_text: bool = False):
    """Rebuild an attribute value written by `encode_attr` (same `inputs`, `depth` and
    `free_text`); `name` names a parameter's storage. Anything unexpected is a GraphError."""
    return _decode_attr(value, table, name, inputs, depth, 0, free_text)


def _decode_attr(value, table: ArrayTable, name, inputs, depth: int, nesting: int,
                 free_text: bool = False):
    if nesting > MAX_TUPLE_DEPTH:
        raise GraphError(f"an attribute with tuples nested more than {MAX_TUPLE_DEPTH} deep")
    if isinstance(value, dict):
        if len(value) != 1:
            raise GraphError(f"bad attribute {short(value)}")
        (tag, body), = value.items()
        if tag == "param":
            return table.storage(body, name or "param")
        if tag == "const":
            return ConstValue(table.tensor_array(body))
        if tag == "dtype":
            if not isinstance(body, str) or body not in _DTYPES:
                raise GraphError(f"dtype {short(body)} is not supported (supported: "
                                 f"{', '.join(_DTYPES)})")
            return _DTYPES[body]
        if tag == "sympy":
            return from_json(body, inputs)
        if tag == "tuple" and isinstance(body, list):
            return tuple(_decode_attr(v, table, name, inputs, depth, nesting + 1, free_text)
                         for v in body)
        if tag == "graph":
            if depth >= MAX_GRAPH_DEPTH:
                raise GraphError(f"graphs nested more than {MAX_GRAPH_DEPTH} deep")
            return decode_graph(body, table, depth=depth + 1)
        raise GraphError(f"unknown attribute tag {short(tag)}")
    if isinstance(value, int) and not isinstance(value, bool):
        _check_int(value)
    if isinstance(value, str) and not (free_text or is_identifier(value)):
        # (an op's expression may hand an attribute to sympy, which parses strings as code)
        raise GraphError(f"bad string attribute {short(value)}: only names are free text, "
                         f"other strings must be identifiers")
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise GraphError(f"bad attribute value {short(value)}")


def decode_graph(tree, table: ArrayTable, *, depth: int = 0) -> Graph:
    """Rebuild a graph written by `encode_graph` (program roles and default updates too).
    Every field is checked; anything unexpected is a GraphError naming the node."""
    if not isinstance(tree, dict):
        raise GraphError(f"a graph must be an object, not {type(tree).__name__}")
    missing = sorted(_GRAPH_FIELDS - set(tree))
    if missing:
        raise GraphError(f"the graph has no {', '.join(missing)}")
    graph = Graph(_text(tree["name"], "the graph's name"))
    nodes: list[Node] = []
    for i, entry in enumerate(_list(tree.get("nodes"), "the graph's nodes")):
        if not isinstance(entry, dict) or not _NODE_FIELDS <= set(entry):
            raise GraphError(f"node {i} is not an object with the fields "
                             f"{', '.join(sorted(_NODE_FIELDS))}")
        op_name = entry.get("op")
        op = REGISTRY.get(op_name) if isinstance(op_name, str) else None
        if op is None:
            raise GraphError(f"node {i}: unknown op {short(op_name)} (not in this graphc's "
                             f"registry)")
        inputs = [nodes[_index(j, i, f"node {i} ({op_name}): bad input index")]
                  for j in _list(entry.get("inputs"), f"node {i}'s inputs")]
        raw = entry.get("attrs")
        if not isinstance(raw, dict):
            raise GraphError(f"node {i} ({op_name}): attrs must be an object")
        name = raw.get("name") if isinstance(raw.get("name"), str) else None
        expression_inputs = len(inputs) if op.is_elementwise else None
        try:
            attrs = Attrs({k: decode_attr(v, table, name, depth=depth, free_text=k in FREE_TEXT,
                                          inputs=expression_inputs if k == "expr" else None)
                           for k, v in raw.items()})
            check_attrs(op, attrs, [n.type for n in inputs])
        except GraphError as exc:
            raise GraphError(f"node {i} ({op_name}): {exc}") from None
        loc = entry.get("loc")
        if loc is not None:
            if not (isinstance(loc, list) and len(loc) == 3 and isinstance(loc[0], str)
                    and type(loc[1]) is int and isinstance(loc[2], str)):
                raise GraphError(f"node {i} ({op_name}): bad source location {short(loc)}")
            _check_int(loc[1])
            loc = SourceLocation(loc[0], loc[1], loc[2])
        scope = _text(entry["scope"], f"node {i}'s scope")
        label = entry.get("label")
        if label is not None:
            label = _text(label, f"node {i}'s label")
        try:
            node = graph.make_node(op, inputs, attrs, loc=loc, scope=scope)
        except GraphError as exc:
            raise GraphError(f"node {i} ({op_name}) does not rebuild: {exc}") from None
        if label is not None:
            node.label = label
        nodes.append(node)

    _check_dims_are_declared(nodes)

    def at(j) -> Node:
        return nodes[_index(j, len(nodes), "bad node index")]

    def rows(key: str, width: int) -> list[list]:
        out = _list(tree[key], key)
        if not all(isinstance(r, list) and len(r) == width for r in out):
            raise GraphError(f"bad {key}: each entry lists {width} node indices")
        return out

    graph.inputs = [at(j) for j in _list(tree["inputs"], "inputs")]
    graph.outputs = [at(j) for j in _list(tree["outputs"], "outputs")]
    graph.updates = [(at(p), at(v)) for p, v in rows("updates", 2)]
    for t, p, v in rows("default_updates", 3):
        graph.add_default_update(at(t), at(p), at(v))
    return graph


def _check_dims_are_declared(nodes: list[Node]) -> None:
    """Every dimension name an attribute uses (a slice's start, a reshape's target) must be
    a placeholder's: sizes are bound from the inputs, and a name no input binds had no value
    (the NumPy backend looked it up among Python's globals: ``__debug__`` read as True)."""
    import sympy

    declared = {s.name for n in nodes if n.op.name == "placeholder"
                for d in n.attrs["shape"] if isinstance(d, sympy.Basic) for s in d.free_symbols}

    def names(value):
        if isinstance(value, sympy.Basic):
            return {s.name for s in value.free_symbols}
        if isinstance(value, (tuple, list)):
            return set().union(*(names(v) for v in value)) if value else set()
        return set()

    for i, n in enumerate(nodes):
        for key, value in n.attrs.items():
            if key == "expr":  # (an elementwise expression's symbols are its inputs)
                continue
            unknown = sorted(names(value) - declared)
            if unknown:
                raise GraphError(f"node {i} ({n.op.name}): attribute {key} uses the dimension "
                                 f"{short(unknown[0])}, which no placeholder declares")


#: Attributes whose string values are free text (kept as they are; escaped by graphc.ir.text).
FREE_TEXT = frozenset({"name"})

#: The attributes of the ops that have no reference kernel to tell them.
_LEAF_ATTRS = {"placeholder": {"name": str, "shape": tuple, "dtype": np.dtype},
               "parameter": {"name": str, "storage": ParamStorage},
               "constant": {"value": ConstValue}}


@cache
def _reference_attrs(op_name: str) -> tuple[frozenset, frozenset] | None:
    """(required, allowed) attribute names of an op: its reference kernel's keyword-only
    parameters (the NumPy backend calls it with the attributes as keywords); None when the
    kernel takes any keywords (elementwise ops: their expression decides)."""
    try:
        parameters = inspect.signature(REGISTRY[op_name].reference).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    keywords = [p for p in parameters if p.kind is p.KEYWORD_ONLY]
    return (frozenset(p.name for p in keywords if p.default is p.empty),
            frozenset(p.name for p in keywords))


def _is_dim(value) -> bool:
    """A dimension: an int or a sympy expression of integers and dimension names."""
    return is_int_value(value) or (isinstance(value, sympy.Expr) and not value.atoms(sympy.Float))


def _tuple_of(check):
    return lambda v: isinstance(v, tuple) and all(check(e) for e in v)


#: The type of every attribute a non-leaf op takes, by name: one name means one kind of value
#: in every op (the ops' reference kernels name the attributes, `_reference_attrs`; a test
#: checks that every name they use has an entry here and that every op case the DSL builds
#: fits it). (description, check) pairs; a value that fails its check is refused on save and
#: on load, so a file cannot hand a kernel a "yes" where it expects a bool.
ATTR_TYPES: dict[str, tuple[str, object]] = {
    **{k: ("a bool", lambda v: isinstance(v, (bool, np.bool_)))
       for k in ("keepdims", "ta", "tb", "reverse")},
    **{k: ("an int", is_int_value)
       for k in ("axis", "n", "rows", "root", "stream", "index", "n_carry", "n_xs")},
    **{k: ("a tuple of ints", _tuple_of(is_int_value))
       for k in ("axes", "kernel", "stride", "padding", "dilation")},
    **{k: ("a tuple of ints or dimension expressions", _tuple_of(_is_dim))
       for k in ("shape", "sizes", "starts", "steps", "in_size", "out_size")},
    "length": ("a dimension", _is_dim),
    "widths": ("a tuple of (int, int) pairs",
               _tuple_of(lambda p: isinstance(p, tuple) and len(p) == 2
                         and all(is_int_value(e) for e in p))),
    "dtype": ("a dtype", lambda v: isinstance(v, np.dtype)),
    "alpha": ("a float", lambda v: isinstance(v, (float, np.floating))),
    "approximate": ("'none' or 'tanh'", lambda v: v in ("none", "tanh")),
    "reduction": ("a str", lambda v: isinstance(v, str)),
    # (a fused comparison is a sympy Boolean, not an Expr; check_expression says the rest)
    "expr": ("a sympy expression",
             lambda v: isinstance(v, (sympy.Expr, sympy.logic.boolalg.Boolean))),
    "body": ("a graph", lambda v: isinstance(v, Graph)),
}


def _check_axis_attrs(attrs: Attrs, types) -> None:
    """`axis` / `axes` against the first input's rank, by the shape rules' own checks
    (graphc.ops.shape_ops.check_axis / check_axes, which the rules of transpose, concat, the
    reductions, softmax and argmax run): here for every op that takes an axis, whether or
    not its rule checks it."""

    if not types:
        return
    ndim = len(types[0].shape)
    if "axis" in attrs:
        check_axis(attrs["axis"], ndim)
    if "axes" in attrs:
        check_axes(attrs["axes"], ndim)


def check_attrs(op, attrs: Attrs, types=None) -> None:
    """Raise GraphError unless `attrs` are attributes `op` takes: names that are identifiers
    (the NumPy backend writes them as keywords), exactly the leaf ops' attributes with their
    types, the keywords of the op's reference kernel, each value of the type `ATTR_TYPES`
    gives its name (every attribute of an op with a reference kernel has one), axes in range
    of the first input's rank when `types` (the inputs' TensorTypes) are given, and for
    elementwise ops attributes its expression can be built from."""
    bad = [k for k in attrs if not is_identifier(k) or keyword.iskeyword(k)]
    if bad:
        raise GraphError(f"bad attribute name {short(bad[0])}")
    leaf = _LEAF_ATTRS.get(op.name)
    if leaf is not None:
        if set(attrs) != set(leaf) or not all(isinstance(attrs[k], t) for k, t in leaf.items()):
            raise GraphError(f"a {op.name} takes the attributes "
                             f"{', '.join(f'{k} ({t.__name__})' for k, t in leaf.items())}")
        if op.name == "placeholder" and not attrs["name"]:
            raise GraphError("a placeholder's name is empty")
        if op.name == "placeholder" and not _tuple_of(_is_dim)(attrs["shape"]):
            raise GraphError(f"attribute shape must be a tuple of dimensions, not "
                             f"{short(attrs['shape'])}")
        return
    schema = _reference_attrs(op.name) if op.reference is not None else None
    if schema is not None:
        required, allowed = schema
        if not required <= set(attrs) <= allowed:
            raise GraphError(f"the attributes of {op.name} are {sorted(allowed)} (required "
                             f"{sorted(required)}), not {sorted(attrs)}")
    for k, v in attrs.items():
        kind = ATTR_TYPES.get(k)
        if kind is None:
            if schema is not None or not op.is_elementwise:
                raise GraphError(f"attribute {k}: no type is known for it (graphc.io.graphs."
                                 f"ATTR_TYPES)")
            continue  # (an elementwise op's own attribute: its expression checks it)
        what, fits = kind
        if not fits(v):
            raise GraphError(f"attribute {k} must be {what}, not {short(v)}")
    if types is not None:
        _check_axis_attrs(attrs, types)
    if op.is_elementwise:
        try:
            op.expr(attrs)
        except GraphError:
            raise
        except Exception as exc:  # a missing or mistyped attribute of the expression
            raise GraphError(f"the attributes {sorted(attrs)} do not make a {op.name} "
                             f"expression ({type(exc).__name__}: {short(str(exc))})") from None


def _list(value, what: str) -> list:
    if not isinstance(value, list):
        raise GraphError(f"{what} must be a list, not {type(value).__name__}")
    return value


def _index(j, bound: int, what: str) -> int:
    if type(j) is not int or not 0 <= j < bound:
        raise GraphError(f"{what} {short(j)}")
    return j


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise GraphError(f"{what} must be a string, not {type(value).__name__}")
    return value


def _check_int(value: int) -> None:
    if abs(value).bit_length() > MAX_INT_BITS:
        raise GraphError(f"an integer of {abs(value).bit_length()} bits (at most {MAX_INT_BITS})")
