"""What every backend provides: a lowering per op name, and an executable for a program."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from graphc.errors import BackendError
from graphc.ir.graph import Graph
from graphc.ir.node import Node


def describe_node(program: Graph, node: Node) -> str:
    """A node for an error message: its op and the user's line; for a fused node, every op
    of its group and each one's line (what a user wrote, not what fusion made of it)."""
    from graphc.errors import at

    fused = program.meta.get("fusion", {}).get(node.uid)
    if not fused:
        return f"{node.op.name} {node.name}{at(node.loc)}"
    lines = [f"a fused group of {len(fused['ops'])} ops:"]
    for member in fused["ops"]:
        where = f", created at {member['loc']}" if member.get("loc") is not None else ""
        lines.append(f"    {member['op']}{where}")
    return "\n".join(lines)


def check_flags(backend: str, options: dict, flags) -> None:
    """Options that are switches must be True or False: ``check_finite="no"`` read as true
    on two backends, and was refused on the third."""
    for flag in flags:
        if flag in options and not isinstance(options[flag], (bool, np.bool_)):
            raise BackendError(f"{backend} backend option {flag!r} must be True or False, got "
                               f"{options[flag]!r}")


def leaving_values(program: Graph) -> list[Node]:
    """The float values that leave a step, each once: its outputs and its new parameter
    values, inputs and parameters among them. check_finite looks at these for infinities on
    every backend (a leaf once went unchecked, and a fed NaN into a parameter)."""
    leaving = dict.fromkeys([*program.outputs, *(v for _, v in program.updates)])
    return [n for n in leaving if n.dtype.kind == "f"]


def nonfinite_message(program: Graph, node: Node, kind: str, body: Graph | None = None) -> str:
    """The one message of ``backend_options={"check_finite": True}`` on every backend.

    `kind` is "NaN" (any node) or "inf" (an output or a new parameter value: infinities are
    legitimate inside a graph, as masks and padding). `body`: the gc.scan body that holds
    `node` (the NumPy and llvm backends check the nodes of loop bodies too)."""
    role = ""
    if body is not None:
        role = " (in the body of a gc.scan loop)"
    elif any(node is o for o in program.outputs):
        role = " (an output)"
    elif any(node is v for _, v in program.updates):
        params = ", ".join(repr(p.name) for p, v in program.updates if v is node)
        role = f" (the new value of {params})"
    where = describe_node(program if body is None else body, node)
    return (f"check_finite: the first {kind} of this call came from {where}{role}\n"
            "  no parameter was updated")


class Executable(ABC):
    """A compiled program: ``run`` maps validated inputs to (outputs, new parameter values)."""

    source: str = ""
    stats: dict

    #: True when `run` writes the parameter updates itself (after everything succeeded)
    applies_updates: bool = False

    def views(self, node: Node) -> tuple[int, ...]:
        """The positions of the inputs whose memory `node`'s value may share when `run`
        returns it (a view, or the input itself). Function derives from this, once, which
        outputs and new values may alias a parameter or an input (and copies only those).
        The default assumes every input may be shared: always safe, never fast."""
        return tuple(range(len(node.inputs)))

    def close(self) -> None:
        """Free what the executable holds (buffers, machine code, device memory). The default
        holds nothing that the garbage collector does not free."""
        return None

    def again_lane(self, key: tuple, inputs: list):
        """A function of the inputs that runs the step again for the sizes `key` of the last
        call, by a shorter path than `run`'s, or None where no such path applies (the
        default). The function serves arrays of the dtypes and shapes of `inputs` (arrays
        exactly as the program needs them) and returns the outputs; for other arrays, or
        once the path has stopped applying, it returns None and has done nothing. Its
        caller holds the function's lock and has checked that it is open. It runs on every
        call of a training loop, whose own Python was a fifth of a small model's step:
        gc.Function keeps it until it answers None."""
        return None

    @abstractmethod
    def run(self, inputs: list[np.ndarray], binding: dict | None, key: tuple) -> tuple[list, list]:
        """Compute every output and every update's new value.

        `key` identifies the sizes of the symbolic dims (the same key, the same sizes);
        `binding` maps each symbol to its size, or is None when this key was seen before.
        Unless `applies_updates`, parameters must not be modified: the caller applies the
        returned new values.
        """


class Backend(ABC):
    """A code generator. Missing lowerings are a compile-time error naming the op."""

    name: str = ""
    lowerings: dict = {}

    def check_coverage(self, nodes: list[Node]) -> None:
        missing = sorted({n.op.name for n in nodes if n.op.name not in self.lowerings})
        if missing:
            where = next(n for n in nodes if n.op.name == missing[0]).loc
            raise BackendError(
                f"the {self.name} backend has no lowering for op(s) {', '.join(missing)}"
                + (f" (first used at {where})" if where else "")
            )

    @abstractmethod
    def compile(self, program: Graph, options: dict) -> Executable:
        """Build an executable for an (optimized) program graph."""
