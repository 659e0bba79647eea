"""A bounded memo of compilations: the second ``gc.compile`` of the same step skips the passes
and code generation.

Compiling a training step twice in one process (a script that rebuilds its step function, an
evaluation function recompiled per epoch, a notebook cell run again) used to redo everything
but LLVM itself: the pass pipeline and the IR generation are most of a cached compile. Both are
deterministic functions of the *declared program*, the pass selection and the backend with its
options, so ``gc.compile`` keeps the result of the last few compilations keyed by a structural
fingerprint of exactly those (`fingerprint`). On a hit it reuses the optimized program and,
where the backend can rebuild an executable from what its code generator made (the llvm
backend: the IR text and the slot layout, `LLVMExecutable.from_artifact`), that too; each
Function still gets its own executable (its own machine-code engine, arena and pointer tables),
so two Functions from one entry may run at the same time on different threads. The numpy and
cuda backends reuse the optimized program only (their code generation runs again).

What the fingerprint holds, and why:

* every node of the program and of every loop body (recursively): its op, attributes, input
  positions, dtype and shape (symbolic dims as sympy expressions), source location, scope,
  label and shape assumptions. Constants are compared by value (their attribute holds the
  array's bytes);
* parameters and the function's placeholders by *node identity* (their uid: uids are never
  reused in a process). A parameter is live storage whose value changes as it trains, so two
  different parameters with equal values are different programs;
* the inputs, outputs and updates (explicit and default) in order;
* the pass selection (``optimize=`` and ``GRAPHC_DISABLE_PASSES``), the backend and its options.

Anything the fingerprint cannot describe exactly (an attribute value that is neither hashable
nor a known container) makes that compilation bypass the memo rather than risk a wrong hit.
Passes that dump their graphs (``GRAPHC_DUMP_PASSES``) bypass it too: the dumps are wanted.

The memo holds at most `CAPACITY` entries, least recently used dropped first (it never
decides *what* is compiled, only whether a deterministic result is recomputed). An entry holds
its optimized program, and with it the program's parameters: at most `CAPACITY` programs stay
reachable because of it; `clear` drops them all. ``GRAPHC_COMPILE_MEMO=0`` switches the memo
off (read at each compile).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy

from .ir.graph import Graph
from .ir.node import ConstValue, Node
from .ir.types import TensorType

__all__ = ["CAPACITY", "ENV", "MemoEntry", "clear", "enabled", "fingerprint", "info", "lookup",
           "remember"]

#: the most compilations remembered
CAPACITY = 16

#: the environment variable that switches the memo off ("0", "false", "no" or "off")
ENV = "GRAPHC_COMPILE_MEMO"


class _Unmemoizable(Exception):
    """Raised while fingerprinting something the fingerprint cannot describe exactly."""


@dataclass(frozen=True)
class MemoEntry:
    """What a compilation made that a later one of the same program can reuse.

    `artifact` is the backend's generated code (for llvm an `LLVMArtifact`) and `factory` the
    executable class that builds a new executable from it (``factory.from_artifact(program,
    artifact, options)``), or both None: the backend compiles the optimized program again.
    """

    program: Graph
    pass_stats: tuple | None
    artifact: Any = None
    factory: Any = None

    def executable(self, backend, options: dict):
        """A new executable of this entry's program: from the artifact when there is one."""
        if self.artifact is not None:
            return self.factory.from_artifact(self.program, self.artifact, options)
        return backend.compile(self.program, options)


class _Memo:
    """A thread-safe LRU map from fingerprints to entries, at most `capacity` of them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple, MemoEntry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> MemoEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: tuple, entry: MemoEntry) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


_MEMO = _Memo(CAPACITY)


def enabled() -> bool:
    """Is the memo on? (``GRAPHC_COMPILE_MEMO`` unset or not 0/false/no/off, and the passes
    are not asked to dump their graphs.)"""
    if os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return not os.environ.get("GRAPHC_DUMP_PASSES")


def clear() -> None:
    """Forget every remembered compilation (and let their programs and parameters go)."""
    _MEMO.clear()


def info() -> dict:
    """``{"entries", "capacity", "hits", "misses"}`` of the memo, since the last `clear`."""
    return {"entries": len(_MEMO), "capacity": _MEMO.capacity, "hits": _MEMO.hits,
            "misses": _MEMO.misses}


def lookup(key: tuple | None) -> MemoEntry | None:
    """The entry remembered under `key` (None: not remembered, or `key` is None)."""
    return None if key is None else _MEMO.get(key)


def remember(key: tuple | None, program: Graph, pass_stats, executable) -> None:
    """Remember a compilation under `key` (nothing when `key` is None). The executable is
    asked for its reusable artifact (``executable.artifact()``), never kept itself: it belongs
    to its Function, which may close it."""
    if key is None:
        return
    make = getattr(executable, "artifact", None)
    artifact = make() if callable(make) else None
    factory = type(executable) if artifact is not None else None
    stats = tuple(pass_stats) if pass_stats is not None else None
    _MEMO.put(key, MemoEntry(program, stats, artifact, factory))


def fingerprint(program: Graph, optimize: bool | Sequence[str], backend: str,
                options: Mapping) -> tuple | None:
    """The key of a compilation of the declared `program` (what `build_program` made), or
    None when the memo is off or something in the program cannot be fingerprinted exactly.

    Two keys are equal exactly when the compilations are the same: the same nodes (structure,
    attributes, types, locations), the same parameters and placeholders (by identity), the same
    pass selection, backend and backend options.
    """
    if not enabled():
        return None
    selection = bool(optimize) if isinstance(optimize, (bool, np.bool_)) else \
        ("passes", tuple(str(p) for p in optimize))
    disabled = tuple(sorted(p.strip() for p in
                            os.environ.get("GRAPHC_DISABLE_PASSES", "").split(",") if p.strip()))
    try:
        return (backend, _canon(dict(options), {}), selection, disabled,
                _graph_key(program, top=True, bodies={}))
    except (_Unmemoizable, RecursionError):
        return None


def _graph_key(graph: Graph, top: bool, bodies: dict) -> tuple:
    """A graph as a tuple: its nodes in schedule order (inputs referred to by position in that
    order), then its inputs, outputs and updates. Parameters, and the placeholders of the
    compiled program, are identified by uid; a loop body's placeholders by their position among
    the body's inputs (a body traced twice the same way is the same body)."""
    position = {n.uid: k for k, n in enumerate(graph.nodes)}
    body_inputs = {} if top else {n.uid: k for k, n in enumerate(graph.inputs)}
    nodes = []
    for node in graph.nodes:
        op = node.op.name
        if op == "parameter" or (op == "placeholder" and node.uid not in body_inputs):
            identity: tuple | None = ("uid", node.uid)
        elif op == "placeholder":
            identity = ("input", body_inputs[node.uid])
        else:
            identity = None
        try:
            inputs = tuple(position[i.uid] for i in node.inputs)
        except KeyError:  # (a graph whose node list misses a node's input)
            raise _Unmemoizable from None
        nodes.append((op, inputs, identity, _canon(node.attrs, bodies), _type(node.type),
                      _canon(node.loc, bodies), node.scope, node.label,
                      _canon(node.assumptions, bodies)))

    def ref(node: Node) -> tuple:
        k = position.get(node.uid)
        if k is not None:
            return ("node", k)
        if top and node.op.name in ("placeholder", "parameter"):  # (an input nothing reads)
            return ("uid", node.uid, node.op.name, _type(node.type))
        raise _Unmemoizable

    meta = () if top else _canon(dict(graph.meta), bodies)
    return (graph.name, tuple(nodes), tuple(ref(n) for n in graph.inputs),
            tuple(ref(n) for n in graph.outputs),
            tuple((ref(p), ref(v)) for p, v in graph.updates), meta)


def _type(t: TensorType) -> tuple:
    return (t.dtype.str, tuple(d if isinstance(d, int) else ("dim", d) for d in t.shape))


def _canon(value: Any, bodies: dict) -> Any:
    """`value` as something hashable whose equality is exact: tagged with its type, so that
    1, 1.0 and True (equal in Python) or 0.0 and -0.0 stay apart; loop bodies as their key."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if isinstance(value, np.generic):  # (before float: np.float64 is a float)
        return ("scalar", value.dtype.str, value.tobytes())
    if isinstance(value, int):
        return ("int", int(value))
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, Graph):  # a loop body: recursively, once per body object
        key = bodies.get(id(value))
        if key is None:
            key = bodies[id(value)] = ("graph", _graph_key(value, top=False, bodies=bodies))
        return key
    if isinstance(value, Node):
        return ("nodeuid", value.uid)
    if isinstance(value, TensorType):
        return ("type", _type(value))
    if isinstance(value, np.dtype):
        return ("dtype", value.str)
    if isinstance(value, ConstValue):
        return value  # equal by dtype, shape and bytes
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, sympy.Basic):
        return ("sympy", value)  # structural equality, assumptions included
    if isinstance(value, Mapping):
        return ("map", type(value).__name__,
                tuple((_canon(k, bodies), _canon(v, bodies)) for k, v in value.items()))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_canon(v, bodies) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", frozenset(_canon(v, bodies) for v in value))
    try:
        hash(value)
    except TypeError:
        raise _Unmemoizable from None
    # anything else hashable (a source location, a parameter's storage, an enum): by its own
    # equality — identity unless its class defines value equality
    return ("obj", type(value).__module__, type(value).__qualname__, value)
