"""Every process must run the same collectives, in the same order, on the same dtypes and sizes:
MPI takes each process's count and datatype on trust, and a mismatch gives wrong numbers, an
MPICH assertion or a hang. graphc checks it instead.

* At compile time (compiling a distributed step is collective already): every process's
  *signature* — each collective's kind, reduction, root, dtype, shape (symbolic dims by name)
  and enclosing scans, in program order, scan bodies included — is gathered on every process;
  the first difference is a ``BackendError`` on every process, naming it and the ranks. A root
  that is not a process of the job is refused there too, on every backend.
* At call time, for the collectives whose shape (or enclosing scan length) is symbolic only:
  one small allgather of their sizes before any data moves; differing sizes are a
  ``BackendError`` on every process. Programs whose collectives all have static shapes (the
  data-parallel gradient buckets, SyncBatchNorm's statistics) pay nothing per call.
"""

from __future__ import annotations

from ..errors import BackendError
from ..ir.graph import Graph, topological
from ..ir.node import Node
from ..ir.shapes import format_shape
from ..ops.collective import COLLECTIVES
from . import runtime


def collectives(program: Graph) -> list[tuple[Node, tuple]]:
    """(node, lengths of the scans around it) for every collective of `program`, in program
    order, the bodies of loops (``gc.scan``) included where their loop node stands."""
    found: list[tuple[Node, tuple]] = []

    def walk(nodes, loops: tuple) -> None:
        for n in nodes:
            if n.op.name in COLLECTIVES:
                found.append((n, loops))
            for value in n.attrs.values():
                if isinstance(value, Graph):
                    walk(topological(list(value.outputs)), (*loops, n.attrs.get("length")))

    walk(program.nodes, ())
    return found


def describe(node: Node, loops: tuple = ()) -> str:
    """One collective as the signature and the messages show it."""
    a = node.attrs
    what = node.op.name
    if "reduction" in a:
        what += f"({a['reduction']!r})"
    if "root" in a:
        what += f"(root={a['root']})"
    where = "".join(f" inside a scan of length {length}" for length in loops)
    return f"{what} of {node.dtype} {format_shape(node.shape)}{where}"


def check_program(program: Graph, found: list[tuple[Node, tuple]] | None = None) -> None:
    """Compile time: the same collectives on every process (one allgather of the signature),
    and roots that exist. A BackendError on every process otherwise. Nothing in one process."""
    if not runtime.active():
        return
    found = collectives(program) if found is None else found
    mine = [describe(n, loops) for n, loops in found]
    c = runtime.comm()
    with runtime.watchdog(f"compiling the distributed step {program.name!r} (comparing the "
                          "processes' collectives)"):
        every = c.allgather(mine)
    for r in range(1, len(every)):
        if every[r] == every[0]:
            continue
        first, other = every[0], every[r]
        k = next((i for i, (a, b) in enumerate(zip(first, other)) if a != b),
                 min(len(first), len(other)))
        here = first[k] if k < len(first) else "nothing (it has no more collectives)"
        there = other[k] if k < len(other) else "nothing (it has no more collectives)"
        raise BackendError(
            f"the processes would run different collectives in {program.name!r}: collective "
            f"#{k + 1} is {here} on rank 0 but {there} on rank {r} (rank 0 has {len(first)} "
            f"collective(s), rank {r} {len(other)}); every process must build the same step: "
            "the same collectives in the same order, with the same op, root, dtype and shape")
    for n, _ in found:
        if n.attrs.get("root") is not None:
            runtime.check_root(n.attrs["root"], n.op.name)


def symbolic_sizes(found: list[tuple[Node, tuple]]) -> list[tuple[str, tuple]]:
    """(description, symbolic sizes) of the collectives whose shape or enclosing scan lengths
    are not all static: what a call must compare across processes."""
    out = []
    for n, loops in found:
        dims = tuple(d for d in (*loops, *n.shape) if not isinstance(d, int))
        if dims:
            out.append((describe(n, loops), (*loops, *n.shape)))
    return out


def local_sizes(checks: list[tuple[str, tuple]], binding: dict) -> list[tuple]:
    """The sizes of `checks` (from `symbolic_sizes`) under one call's binding of the symbols:
    what `check_sizes` compares across the processes (a Function keeps it per binding)."""

    def value(d):
        if isinstance(d, int):
            return d
        v = d.xreplace(binding) if hasattr(d, "xreplace") else d
        try:
            return int(v)
        except TypeError:  # (a size no input binds: compared by name)
            return str(v)

    return [tuple(value(d) for d in dims) for _, dims in checks]


def check_sizes(checks: list[tuple[str, tuple]], mine: list[tuple], name: str) -> None:
    """Call time: the concrete sizes of the symbolic collectives (`local_sizes`), equal on
    every process (one allgather); a BackendError on every process, before any data moves,
    otherwise."""
    if not checks or not runtime.active():
        return
    every = runtime.comm().allgather(mine)
    for r in range(1, len(every)):
        if every[r] == every[0]:
            continue
        k = next(i for i, (a, b) in enumerate(zip(every[0], every[r])) if a != b)
        sizes = ", ".join(f"{format_shape(every[q][k])} on rank {q}" for q in range(len(every)))
        form = format_shape(checks[k][1])
        raise BackendError(
            f"{checks[k][0]} in {name!r}: its sizes {form} (enclosing loop lengths, then the "
            f"shape) differ between the processes: {sizes}; every process must feed the "
            "collectives of a step the same sizes")
