"""gc.compile and gc.Function: from a graph to a callable, validated training step.

``compile`` cuts the part of the graph the outputs and updates need into a *program graph*,
adds default updates (batch-norm statistics, random states), runs the optimization pipeline
and hands the result to a backend. ``Function`` owns the calling convention: it checks and
converts every input, binds symbolic dimensions, checks the shape facts the graph assumed,
runs the backend's executable, and only then writes the new parameter values — all of them or
none.
"""

from __future__ import annotations

import contextlib
import gc as garbage_collector
import time
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import sympy

from .call_groups import group_for
from .errors import ArgumentError, BackendError, GraphError, ShapeError, at
from .ir.graph import Graph, topological
from .ir.node import Node
from .ir.shapes import format_shape
from .ir.tensor import Tensor, graph_of
from .ir.types import can_feed


def _as_list(outputs) -> tuple[list[Tensor], bool]:
    if isinstance(outputs, Tensor):
        return [outputs], True
    if isinstance(outputs, (list, tuple)):
        return list(outputs), False
    raise GraphError(f"outputs must be a tensor or a list of tensors, got {type(outputs).__name__}")


def _normalize_updates(updates) -> list[tuple[Tensor, Tensor]]:
    if updates is None:
        return []
    pairs = list(updates.items()) if isinstance(updates, Mapping) else list(updates)
    out, seen = [], set()
    for param, value in pairs:
        if not isinstance(param, Tensor) or param.op != "parameter":
            raise GraphError(f"updates keys must be parameters, got {param!r}")
        if param.node.uid in seen:
            raise GraphError(f"parameter {param.name!r} is updated twice")
        seen.add(param.node.uid)
        if not isinstance(value, Tensor):
            raise GraphError(f"the new value of {param.name!r} must be a tensor")
        out.append((param, _conformed(param, value, "update")))
    return out


def _conformed(param: Tensor, value: Tensor, what: str) -> Tensor:
    """`value` as the new value of `param`: of its dtype (a cast within the same kind: a
    float64 running mean of a float32 parameter) and of its shape. The native backends write
    the value into the parameter's own memory, so anything else would write past it."""
    from .ops import cast

    if value.dtype != param.dtype:
        if value.dtype.kind != param.dtype.kind:
            raise GraphError(f"{what} of {param.name!r}: value is {value.dtype}, parameter "
                             f"is {param.dtype}")
        value = cast(value, param.dtype)
    if len(value.shape) != len(param.shape) or any(
        isinstance(d, int) and d != p for d, p in zip(value.shape, param.shape)
    ):  # (a symbolic size is checked at each call, before anything is applied)
        raise ShapeError(f"{what} of {param.name!r}: value has shape "
                         f"{format_shape(value.shape)}, parameter has "
                         f"{format_shape(param.shape)}{at(value.node.loc)}")
    return value


def default_updates(graph: Graph, roots: list[Node], explicit: set[int] | None = None
                    ) -> list[tuple[Node, Node]]:
    """Default updates of every trigger the roots depend on (to a fixpoint), except those of
    the parameters in `explicit` (uids): [(parameter node, its new value node)].

    A parameter with several triggers (a batch-norm layer called twice in one step, the same
    random state drawn from twice) gets them all, applied in the order the triggers were
    built: each later update reads the value the earlier one wrote, as two calls of a
    PyTorch module would.
    """
    chains: dict[int, list[tuple[Node, Node]]] = {}
    taken: set[tuple[int, int]] = set()
    frontier = list(roots)
    while True:
        reach = {n.uid for n in topological(frontier)}
        added = []
        for trigger, entries in graph.default_updates.items():
            if trigger.uid not in reach:
                continue
            for param, value in entries:
                if param.uid in (explicit or ()) or (trigger.uid, param.uid) in taken:
                    continue
                taken.add((trigger.uid, param.uid))
                chains.setdefault(param.uid, []).append((param, value))
                added.append(value)
        if not added:
            break
        frontier = frontier + added
    chosen = []
    for chain in chains.values():
        param, value = chain[0]
        for _, later in chain[1:]:
            value = _substitute(graph, later, param, value)
        chosen.append((param, value))
    return chosen


def _substitute(graph: Graph, root: Node, old: Node, new: Node) -> Node:
    """`root` rebuilt with `new` wherever it read `old` (the nodes that do not depend on
    `old` are shared)."""
    mapping = {old.uid: new}
    for node in topological([root]):
        if node.uid in mapping or not any(i.uid in mapping for i in node.inputs):
            continue
        inputs = [mapping.get(i.uid, i) for i in node.inputs]
        mapping[node.uid] = graph.make_node(node.op, inputs, node.attrs, loc=node.loc,
                                            scope=node.scope)
    return mapping.get(root.uid, root)


def build_program(inputs, outputs, updates=None, name: str | None = None, *,
                  unique_names: bool = True) -> tuple[Graph, bool]:
    """The program graph: inputs, outputs and updates (explicit and default) of a function.
    `unique_names`: the inputs' names must differ, as a function's callers may feed by name
    (gc.optimize builds a program nobody calls: a re-run notebook cell's two "x" are fine)."""
    outs, single = _as_list(outputs)
    for o in outs:
        if not isinstance(o, Tensor):
            raise GraphError(f"outputs must be tensors, got {type(o).__name__}")
    ins = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    names = set()
    for x in ins:
        if not isinstance(x, Tensor) or x.op != "placeholder":
            raise GraphError(f"inputs must be placeholders, got {x!r}")
        if x.name in names and unique_names:
            raise GraphError(f"two inputs are named {x.name!r}; input names must be unique "
                             "within one compiled function (they can be fed by name)")
        names.add(x.name)
    pairs = _normalize_updates(updates)
    graph = graph_of(*outs, *ins, *[t for p in pairs for t in p])
    roots = [o.node for o in outs] + [v.node for _, v in pairs]
    explicit = {p.node.uid for p, _ in pairs}
    update_nodes = [(p.node, v.node) for p, v in pairs]
    for param, value in default_updates(graph, roots, explicit):
        value = _conformed(Tensor(param, graph), Tensor(value, graph), "default update")
        update_nodes.append((param, value.node))

    program = Graph(name or graph.name)
    program.inputs = [x.node for x in ins]
    program.outputs = [o.node for o in outs]
    program.updates = update_nodes
    program.set_nodes(topological(program.roots()))
    fed = {n.uid for n in program.inputs}
    for n in program.nodes:
        if n.op.name == "placeholder" and n.uid not in fed:
            raise GraphError(f"the outputs depend on placeholder {n.name!r}, which is not among "
                             f"the inputs{at(n.loc)}")
    bound = set().union(*[n.type.symbols for n in program.inputs])
    for n in program.nodes:
        if n.op.name == "scan" and not isinstance(n.attrs["length"], int):
            unbound = sorted(s.name for s in n.attrs["length"].free_symbols - bound)
            if unbound:
                raise ShapeError(f"scan: its length {n.attrs['length']} uses the dimension(s) "
                                 f"{', '.join(unbound)}, which no input's shape binds{at(n.loc)}")
    return program, single


def _check_sizes_bound(program: Graph) -> None:
    """Every size a compiled program computes must follow from its inputs' shapes: a
    dimension only the graph names (``x.reshape(("M",))`` with inputs of N) has no size at
    a call (the numpy backend raised KeyError 'M' there, llvm a ShapeError about a buffer's
    bytes). gc.optimize of bare outputs does not check it: their inputs are not known."""
    bound = set().union(*[n.type.symbols for n in program.inputs])
    for n in program.nodes:
        unbound = sorted(s.name for s in n.type.symbols - bound)
        if unbound:
            raise ShapeError(f"{n.op.name}: its shape {format_shape(n.shape)} uses the "
                             f"dimension(s) {', '.join(unbound)}, which no input's shape binds "
                             f"(inputs: {', '.join(x.name for x in program.inputs) or 'none'})"
                             f"{at(n.loc)}")


def compile(inputs, outputs, updates=None, backend: str = "numpy",
            optimize: bool | Sequence[str] = True,
            backend_options: dict | None = None) -> Function:  # noqa: A001 - the public name
    """Compile a graph into a callable `Function` on a backend ("numpy", "llvm", "cuda").

    `updates` maps parameters to tensors computing their new values; they are applied after
    all outputs are computed, all at once (a training step is one compiled function).
    `optimize` runs the whole pass pipeline (True), none of it (False), or the passes named
    in a list, in pipeline order (``["cse", "dce"]``).

    Compiling the same declared program again (same nodes, parameters, placeholders, pass
    selection, backend and options) reuses the optimized program and, on llvm, the generated
    IR of a recent compilation (graphc/compile_memo.py; ``GRAPHC_COMPILE_MEMO=0`` turns it
    off); the new Function still gets its own executable.
    """
    from . import compile_memo
    from .backends import get_backend
    from .passes.manager import optimize_program

    started = time.perf_counter()
    impl = get_backend(backend)
    program, single = build_program(inputs, outputs, updates)
    _check_sizes_bound(program)
    if not isinstance(optimize, (list, tuple, bool, np.bool_)):
        raise GraphError(f"optimize must be True, False or a list of pass names, got "
                         f"{optimize!r}")
    if backend_options is not None and not isinstance(backend_options, Mapping):
        raise GraphError(f"backend_options must be a dict of option names to values, got "
                         f"{type(backend_options).__name__} {backend_options!r}")
    options = dict(backend_options or {})
    # the shape facts of the program as declared: a rewrite may drop the node that carried
    # one (the sink pass replaces a loop by a sum over its xs), and the call must still
    # check it
    declared_facts = _facts(program)
    key = compile_memo.fingerprint(program, optimize, backend, options)
    entry = compile_memo.lookup(key)
    if entry is not None:  # passes and code generation done before: a new executable only
        program = entry.program
        stats = list(entry.pass_stats) if entry.pass_stats is not None else None
    else:
        stats = None
        with _collector_paused():
            if isinstance(optimize, (list, tuple)):
                program, stats = optimize_program(program, passes=optimize)
            elif optimize:
                program, stats = optimize_program(program)
    from .distributed import consistency

    found = consistency.collectives(program)
    if found:  # (collective) every process runs the same collectives, with roots that exist
        consistency.check_program(program, found)
    if entry is not None:
        executable = entry.executable(impl, options)
    else:
        with _collector_paused():
            executable = impl.compile(program, options)
        compile_memo.remember(key, program, stats, executable)
    fn = Function(program, executable, single, backend, declared_facts, found)
    if fn.distributed:  # a collective call: every process starts from rank 0's state
        from .distributed import runtime

        runtime.broadcast_parameters(fn._params)
    # the declared graph (what gc.onnx.export writes), not the optimized one that runs
    fn.declared = (_as_list(outputs)[0],
                   list(inputs) if isinstance(inputs, (list, tuple)) else [inputs])
    fn.stats.update(compile_seconds=time.perf_counter() - started, passes=stats,
                    compile_memo_hit=entry is not None)
    return fn


def _facts(program: Graph) -> list[tuple]:
    """(relation, why, node) for every shape fact a node of `program` records for the call
    to check (symbolic sizes its shape rule could not decide)."""
    return [(rel, why, n) for n in program.nodes for rel, why in n.assumptions]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a program compiles. A compile makes
    hundreds of thousands of short-lived objects (sympy expressions, IR instructions), and
    every few thousand allocations the collector walks the live ones, the whole process at
    times: that was half of cnn32's code generation (0.32 s -> 0.16 s without it). Reference
    counting still frees what dies; cycles wait for the next collection after the compile."""
    paused = garbage_collector.isenabled()
    garbage_collector.disable()
    try:
        yield
    finally:
        if paused:
            garbage_collector.enable()


class Function:
    """A compiled graph. Call it with arrays (positionally or by input name)."""

    def __init__(self, program: Graph, executable, single: bool, backend: str,
                 declared_facts: list | None = None, collectives: list | None = None) -> None:
        self._program = program
        self._exe = executable
        self._single = single
        self.backend = backend
        self.declared: tuple[list[Tensor], list[Tensor]] | None = None  # set by compile
        self._inputs = list(program.inputs)
        self._index = {n.name: i for i, n in enumerate(self._inputs)}
        self._updates = [(p.attrs["storage"], v) for p, v in program.updates]
        self._params = [n.attrs["storage"] for n in program.nodes if n.op.name == "parameter"]
        # what the program's nodes need of the sizes, and what the declared program's did
        # (gc.compile: an optimization may have removed a node that needed it)
        self._assumptions = _facts(program)
        # the bytes of every value whose size depends on the inputs' (one expression each)
        self._byte_sizes = {sympy.Mul(*n.shape) * n.dtype.itemsize for n in program.nodes
                            if any(not isinstance(d, int) for d in n.shape)}
        known = {(rel, why) for rel, why, _ in self._assumptions}
        self._assumptions += [f for f in declared_facts or () if (f[0], f[1]) not in known]
        for param, value in program.updates:  # a symbolic new value must fit its parameter
            for d, p in zip(value.shape, param.shape):
                if not isinstance(d, int):
                    why = (f"the new value of {param.name!r} (shape {format_shape(value.shape)}) "
                           f"must have the parameter's shape {format_shape(param.shape)}")
                    self._assumptions.append((sympy.Eq(d, p), why, value))
        self._checked: set[tuple] = set()  # keys whose shape facts hold
        self._ran: set[tuple] = set()  # keys the executable has run a step for
        # one call at a time, of this function and of every function sharing a parameter
        self._group = group_for([*self._params, *(p.attrs["storage"]
                                                  for p, _ in program.updates)])
        self._closed = False
        self._symbols = sorted({d for n in self._inputs for d in n.type.symbols},
                               key=lambda s: s.name)
        self._specs = [_input_spec(n, self._symbols) for n in self._inputs]
        self._native_updates = getattr(executable, "applies_updates", False)
        from .distributed import consistency

        # (scan bodies included; compile passes what its own check walked)
        found = consistency.collectives(program) if collectives is None else collectives
        #: does a call communicate with the other MPI processes (gc.distributed)?
        self.distributed = bool(found)
        # collectives with symbolic sizes: a call compares them across processes first
        self._collective_sizes = consistency.symbolic_sizes(found)
        self._local_sizes: dict[tuple, list] = {}  # key -> those sizes bound (one per key)
        # calls the executable's shorter path may serve (`Executable.again_lane`): it applies
        # its updates itself and does not communicate (that call runs under a watchdog)
        from .backends.base import Executable

        self._again = (self._native_updates and not self.distributed
                       and type(executable).again_lane is not Executable.again_lane)
        #: the lane of the last call the short path served (Executable.again_lane)
        self._lane = None
        if not self._native_updates:
            from .passes.memory import leaving_copies

            self._copy_outputs, self._copy_news = leaving_copies(program, executable.views)
            self._copies = any(self._copy_outputs) or any(self._copy_news)
            self._storages = [storage for storage, _ in self._updates]
        self.stats: dict = {"nodes": len(program.nodes)}
        self.stats.update(getattr(executable, "stats", {}))
        plan = program.meta.get("memory")
        if plan is not None and not any(n.type.symbols for n in program.nodes):
            self.stats.update(plan.evaluate({}))

    def close(self) -> None:
        """Free what this function holds — its machine code, buffers, device memory — now
        rather than when it is garbage-collected. Calling it afterwards is a BackendError;
        its parameters live on (they belong to the graph)."""
        group = self._group.acquire()
        try:
            self._exe.close()
            self._closed = True
        finally:
            group.lock.release()

    def parameters(self) -> list[Tensor]:
        """The parameters this function updates (explicit and default updates), in a stable
        order: the program's order. They are tensors of the graph the function was declared
        in (ops on them build there, as on the user's own parameter tensors; on the program
        graph they added nodes to `Function.graph` and could not mix with the user's)."""
        updated = {p.uid for p, _ in self._program.updates}
        declared = getattr(self, "declared", None)
        graph = self._program
        if declared is not None and (declared[0] or declared[1]):
            graph = (declared[0] or declared[1])[0].graph
        return [Tensor(n, graph) for n in self._program.nodes
                if n.op.name == "parameter" and n.uid in updated]

    @property
    def graph(self) -> Graph:
        """The optimized program graph that actually runs."""
        return self._program

    @property
    def source(self) -> str:
        """The generated program: NumPy source, LLVM IR or PTX."""
        return self._exe.source

    def memory(self, **dims: int) -> dict:
        """Bytes the memory plan needs for given sizes of the symbolic dims, e.g. N=64:
        ``arena_bytes`` (all buffers) and ``peak_live_bytes`` (most bytes live at once)."""
        from .ir.shapes import sym

        plan = self._program.meta.get("memory")
        if plan is None:
            raise GraphError("this function was compiled without the plan_memory pass")
        missing = [s.name for s in self._symbols if s.name not in dims]
        if missing:
            example = ", ".join(f"{name}=64" for name in missing)
            raise ShapeError(f"the memory figures depend on the size of {', '.join(missing)}: "
                             f"give it, e.g. fn.memory({example})")
        return plan.evaluate({sym(k): int(v) for k, v in dims.items()})

    def kernel_profile(self) -> list[tuple[str, int]]:
        """Cycles per kernel over all calls so far, most expensive first: where a step's
        time goes (llvm backend, compiled with ``backend_options={"profile": True}``). The
        cycles are the time-stamp counter's, which ticks at a fixed rate (2.6 GHz on the
        project's Zen 4 VM, whose cores ran at about 3.55 GHz): compare kernels with them,
        not instructions per core cycle."""
        profile = getattr(self._exe, "kernel_profile", None)
        if profile is None:
            raise BackendError(f"the {self.backend} backend has no kernel profile; compile with "
                               f"backend='llvm', backend_options={{'profile': True}}")
        return profile()

    @property
    def input_names(self) -> list[str]:
        return [n.name for n in self._inputs]

    def __repr__(self) -> str:
        outs = len(self._program.outputs)
        return (f"<Function {self.backend}: inputs {self.input_names}, {outs} output(s), "
                f"{len(self._updates)} update(s), {len(self._program.nodes)} nodes>")

    # -- calling ----------------------------------------------------------------------------
    def __call__(self, /, *args, **kwargs):  # (an input may be named "self")
        lane = self._lane
        if lane is not None and not kwargs:
            # a training loop's call: the lane serves arrays of the last call's dtypes and
            # shapes, contiguous, and answers None to others
            group = self._group.acquire()
            try:
                outputs = None if self._closed else lane(args)
            except MemoryError as exc:  # (the caller's arrays, allocated before the step)
                raise self._out_of_memory(exc, self._fast_key(args)) from None
            finally:
                group.lock.release()
            if outputs is not None:
                return outputs[0] if self._single else outputs
        key = self._fast_key(args) if not kwargs else None
        if key is not None and self._again and key in self._checked:
            # arrays exactly as needed, the sizes checked before: the short path, kept
            group = self._group.acquire()
            try:
                run = None if self._closed else self._exe.again_lane(key, args)
                outputs = None if run is None else run(args)
            except MemoryError as exc:
                raise self._out_of_memory(exc, key) from None
            finally:
                group.lock.release()
            if outputs is not None:
                self._lane = run
                return outputs[0] if self._single else outputs
        self._lane = None
        if key is not None:  # the arrays are exactly as needed
            arrays = args
            # the executable knows the sizes of a key it has run with; another thread may
            # have checked this key but not run it yet
            binding = None if key in self._ran else dict(zip(self._symbols, key))
        else:
            arrays, binding = self._validate(self._arrange(args, kwargs))
            key = tuple(binding[s] for s in self._symbols)
        if key not in self._checked:
            self._check_assumptions(binding, key)
        # one step at a time: the native backends reuse their buffers, and the updates of
        # functions sharing a parameter must not interleave
        group = self._group.acquire()
        try:
            if self._closed:
                raise BackendError("this function was closed (Function.close()): compile it "
                                   "again to call it")
            try:
                outputs = self._run(arrays, binding, key)
            except MemoryError as exc:  # (buffers and the caller's arrays, before any update)
                raise self._out_of_memory(exc, key) from None
            self._ran.add(key)
            return outputs
        finally:
            group.lock.release()

    def _out_of_memory(self, exc: MemoryError, key) -> BackendError:
        """Every backend allocates what a call needs (buffers, the arrays it returns) before
        the step writes a parameter: running out is a failed call that changed nothing."""
        sizes = dict(zip((s.name for s in self._symbols), key)) if key is not None else {}
        return BackendError(f"{self._program.name}: not enough memory for a call with sizes "
                            f"{sizes} ({exc}); no parameter was changed")

    def _run(self, arrays, binding, key):
        if self.distributed:  # bounded by gc.distributed.set_timeout, if one is set
            from .distributed import runtime

            with runtime.watchdog(f"a call of the distributed step {self._program.name!r}"):
                if self._collective_sizes and runtime.active():
                    from .distributed import consistency

                    mine = self._local_sizes.get(key)
                    if mine is None:  # (sympy's substitution once per key, not per call)
                        sizes = binding if binding is not None else dict(zip(self._symbols, key))
                        mine = consistency.local_sizes(self._collective_sizes, sizes)
                        self._local_sizes[key] = mine
                    consistency.check_sizes(self._collective_sizes, mine, self._program.name)
                outputs, new_values = self._exe.run(arrays, binding, key)
        else:
            outputs, new_values = self._exe.run(arrays, binding, key)
        if not self._native_updates:
            # which outputs and new values may share memory with a parameter or an input was
            # derived once, at compile time (leaving_copies): copy exactly those, O(values) a call
            if self._copies:
                outputs = [np.array(o, copy=True) if copy else o
                           for o, copy in zip(outputs, self._copy_outputs)]
                new_values = [np.array(v, copy=True) if copy else v
                              for v, copy in zip(new_values, self._copy_news)]
            # every output and new value exists and converts: now apply all updates (only now)
            checked = [storage.checked(new) for storage, new in zip(self._storages, new_values)]
            for storage, new in zip(self._storages, checked):
                storage.write_checked(new)
        return outputs[0] if self._single else outputs

    def _fast_key(self, args) -> tuple | None:
        """The sizes of the symbolic dims (the call's key) if every argument is an array of
        exactly the right dtype, layout and shape; else None, and the general path converts
        or explains what is wrong. It runs on every call, so the specs are plain tuples and
        the loop does nothing else."""
        if len(args) != len(self._specs):
            return None
        sizes: list = [None] * len(self._symbols)
        ndarray = np.ndarray
        for a, (dtype, ndim, fixed, symbolic) in zip(args, self._specs):
            if type(a) is not ndarray or a.dtype is not dtype or not a.flags.c_contiguous:
                return None
            shape = a.shape
            if len(shape) != ndim:
                return None
            for axis, size in fixed:
                if shape[axis] != size:
                    return None
            for axis, k in symbolic:
                if sizes[k] is None:
                    sizes[k] = shape[axis]
                elif sizes[k] != shape[axis]:
                    return None
        return tuple(sizes)

    def _arrange(self, args, kwargs) -> list:
        n = len(self._inputs)
        if len(args) > n:
            raise ArgumentError(f"this function takes {n} input(s) {self.input_names}, got "
                                f"{len(args)} positional arguments")
        values: list = list(args) + [_MISSING] * (n - len(args))
        for key, v in kwargs.items():
            if key not in self._index:
                raise ArgumentError(f"unknown input {key!r}; inputs are {self.input_names}")
            i = self._index[key]
            if values[i] is not _MISSING:
                raise ArgumentError(f"input {key!r} given twice (positionally and by name)")
            values[i] = v
        missing = [self._inputs[i].name for i, v in enumerate(values) if v is _MISSING]
        if missing:
            raise ArgumentError(f"missing input(s) {missing}; inputs are {self.input_names}")
        return values

    def _validate(self, values: list) -> tuple[list[np.ndarray], dict]:
        binding: dict[sympy.Symbol, int] = {}
        bound_by: dict[sympy.Symbol, str] = {}
        arrays = []
        for node, value in zip(self._inputs, values):
            arrays.append(_convert(node, value, binding, bound_by))
        return arrays, binding

    def _fed_from(self, rel, binding: dict) -> str:
        """Which input each size of a failed fact came from: the placeholder, its declared
        shape and the shape fed (the fact is the graph's, but the fix is in what was fed)."""
        named = []
        for symbol in sorted(getattr(rel, "free_symbols", ()), key=lambda s: s.name):
            for node in self._inputs:
                if symbol in node.shape:
                    fed = tuple(int(d.xreplace(binding)) if not isinstance(d, int) else d
                                for d in node.shape)
                    named.append(f"{symbol.name} is axis {node.shape.index(symbol)} of input "
                                 f"{node.name!r} {format_shape(node.shape)}, fed as {fed}")
                    break
        return f" ({'; '.join(named)})" if named else ""

    def _check_assumptions(self, binding: dict, key: tuple) -> None:
        for rel, why, node in self._assumptions:
            verdict = rel.xreplace(binding) if hasattr(rel, "xreplace") else rel
            if verdict is sympy.false or verdict is False:
                sizes = ", ".join(f"{s.name}={v}" for s, v in binding.items())
                raise ShapeError(f"{node.op.name}: {why} does not hold for {sizes}"
                                 f"{self._fed_from(rel, binding)}{at(node.loc)}")
        for nbytes in self._byte_sizes:  # (past 2^62 bytes NumPy raised a ValueError, not a
            if int(nbytes.xreplace(binding)) >= 1 << 62:  # MemoryError: any backend)
                raise self._out_of_memory(MemoryError(f"a value of {nbytes.xreplace(binding)} "
                                                      f"bytes"), key)
        self._checked.add(key)


def _input_spec(node: Node, symbols: list) -> tuple:
    """What an input must look like, precomputed for the fast path of Function.__call__:
    (dtype, rank, ((axis, size) for fixed sizes), ((axis, symbol's index) for symbolic))."""
    fixed = tuple((a, d) for a, d in enumerate(node.shape) if isinstance(d, int))
    symbolic = tuple((a, symbols.index(d)) for a, d in enumerate(node.shape)
                     if not isinstance(d, int))
    return node.dtype, len(node.shape), fixed, symbolic


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _convert(node: Node, value, binding: dict, bound_by: dict) -> np.ndarray:
    """Check one input against its placeholder and convert it (dtype, contiguity)."""
    name, want = node.name, node.type
    if isinstance(value, np.ma.MaskedArray):
        raise ShapeError(f"input {name!r}: a masked array, whose mask would be dropped; pass "
                         f"its .filled(value) or its .data")
    if isinstance(value, Tensor):
        raise ShapeError(f"input {name!r}: got the symbolic tensor {value.name!r}; a compiled "
                         f"function is fed arrays (NumPy, or anything np.asarray takes)")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, RuntimeError) as exc:  # (a torch tensor needing grad:
        raise ShapeError(f"input {name!r}: cannot turn {type(value).__name__} into an array "
                         f"({exc})") from None  # RuntimeError)
    if not can_feed(arr.dtype, want.dtype):
        raise ShapeError(
            f"input {name!r}: expected {want.dtype}, got {arr.dtype}; only conversions within a "
            f"kind or widening it (bool -> int -> float) are done implicitly")
    if arr.dtype.kind in "iu" and want.dtype.kind in "iu" and arr.size and \
            not np.can_cast(arr.dtype, want.dtype, "safe"):
        info = np.iinfo(want.dtype)  # int64 -> int32 is allowed, but only for values that fit
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            raise ShapeError(f"input {name!r}: expected {want.dtype}, got {arr.dtype} with values "
                             f"from {lo} to {hi}, outside {want.dtype}'s range")
    if arr.ndim != len(want.shape):
        raise ShapeError(f"input {name!r}: expected shape {format_shape(want.shape)} (rank "
                         f"{len(want.shape)}), got {arr.shape} (rank {arr.ndim})")
    for axis, (d, actual) in enumerate(zip(want.shape, arr.shape)):
        if isinstance(d, int):
            if d != actual:
                raise ShapeError(f"input {name!r}: expected shape {format_shape(want.shape)}, got "
                                 f"{arr.shape} (axis {axis} must be {d})")
        elif d.is_Symbol:
            if d in binding and binding[d] != actual:
                raise ShapeError(
                    f"dimension {d} is {binding[d]} in input {bound_by[d]!r} but {actual} in "
                    f"input {name!r} (shape {format_shape(want.shape)}, got {arr.shape})")
            binding[d] = actual
            bound_by[d] = name
        else:
            raise ShapeError(f"input {name!r}: placeholder dims must be ints or names, got {d}")
    # (an overflow is refused below; an underflow to 0 is rounding, also under the user's
    # np.seterr(all="raise"))
    with np.errstate(over="ignore", under="ignore"):
        out = np.asarray(arr, dtype=want.dtype, order="C")  # (ascontiguousarray: 0-d -> 1-d)
    if arr.dtype.kind == "f" and out.dtype.itemsize < arr.dtype.itemsize and out.size:
        overflow = np.isinf(out)  # a finite float64 beyond float32's range, as a parameter's
        if overflow.any() and np.isfinite(arr[overflow]).any():  # write refuses it
            big = arr[overflow & np.isfinite(arr)].flat[0]
            raise ShapeError(f"input {name!r}: the {arr.dtype} value {float(big)!r} overflows "
                             f"{out.dtype} (it would become inf)")
    return out
