"""What every backend provides: a lowering per op name, and an executable for a program."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from graphc.errors import BackendError
from graphc.ir.graph import Graph
from graphc.ir.node import Node


class Executable(ABC):
    """A compiled program: ``run`` maps validated inputs to (outputs, new parameter values)."""

    source: str = ""
    stats: dict

    #: True when `run` writes the parameter updates itself (after everything succeeded)
    applies_updates: bool = False

    def close(self) -> None:
        """Free what the executable holds (buffers, machine code, device memory). The default
        holds nothing that the garbage collector does not free."""
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
