"""Loops on the NumPy backend: a scan node runs its body's own generated program in a Python
loop (the body was optimized by the `loop_bodies` pass like any program).

The generated step calls ``_loops[k](dims, T, [inputs...])``, which returns every result of
the loop (final carries, stacked ys, carry histories; see graphc/ops/scan.py), with None for
those no ``scan_output`` of the program reads.
"""

from __future__ import annotations

import numpy as np

from graphc.errors import GraphError, IndexRangeError
from graphc.ir.graph import Graph
from graphc.ir.node import Node
from graphc.ir.shapes import evaluate_shape, sym
from graphc.ops.scan import scan_results

from .checks import NonFinite


class LoopRunner:
    """One scan node of a program: its body compiled once, run T times per call."""

    def __init__(self, node: Node, needed: set[int], check_finite: bool = False) -> None:
        from . import NumpyExecutable

        a = node.attrs
        self.body: Graph = a["body"]
        self.nc, self.nx = a["n_carry"], a["n_xs"]
        self.ny = len(self.body.outputs) - self.nc
        self.reverse = a["reverse"]
        self.types = scan_results(node)
        self.needed = needed
        self.exe = NumpyExecutable(self.body, check_finite, loop_body=True)

    @property
    def source(self) -> str:
        return self.exe.source

    def __call__(self, dims: dict, T, args: list) -> list:
        nc, nx, ny = self.nc, self.nx, self.ny
        T = int(T)
        carries = [np.asarray(c) for c in args[:nc]]
        xs, caps = args[nc:nc + nx], list(args[nc + nx:])
        binding = {sym(k): v for k, v in dims.items()}
        ys = [np.empty(evaluate_shape(self.types[nc + j].shape, binding),
                       self.types[nc + j].dtype) if nc + j in self.needed else None
              for j in range(ny)]
        hist = [np.empty(evaluate_shape(self.types[nc + ny + i].shape, binding),
                         self.types[nc + ny + i].dtype) if nc + ny + i in self.needed else None
                for i in range(nc)]
        for x in xs:
            if len(x) != T:
                raise GraphError(f"internal: a loop over {T} steps got xs of length {len(x)}")
        step = self.exe._step
        consts = self.exe._consts
        for t in (range(T - 1, -1, -1) if self.reverse else range(T)):
            for i, h in enumerate(hist):
                if h is not None:
                    h[t] = carries[i]
            # (inside the program's step, which runs in its executable's quiet_context)
            try:
                outs = step([*carries, *[x[t] for x in xs], *caps], [], consts, dims)
            except NonFinite as exc:  # a position in the body: name the body's node
                where, kind = exc.args[:2]  # (an inner loop's adds its body)
                if isinstance(where, int):  # (the body: its fused groups' ops)
                    raise NonFinite(self.body.nodes[where], kind, self.body) from None
                raise
            except IndexRangeError as exc:  # the body's node that read the id (innermost)
                if getattr(exc, "node", None) is None:
                    exc.node = self.exe.failing_node(exc.__traceback__)
                raise
            carries = [np.asarray(c) for c in outs[:nc]]
            for j, y in enumerate(ys):
                if y is not None:
                    y[t] = outs[nc + j]
        return [*carries, *ys, *hist]


def check_outputs(program: Graph) -> dict[int, set[int]]:
    """For each scan node of `program` (uid), the result indices its scan_outputs read;
    a scan_output whose type disagrees with its loop (a file can say anything) is refused."""
    needed: dict[int, set[int]] = {}
    for n in program.nodes:
        if n.op.name != "scan_output":
            continue
        loop = n.inputs[0]
        if loop.op.name != "scan":
            raise GraphError(f"scan_output {n.name} reads a {loop.op.name}, not a scan")
        types = scan_results(loop)
        k = n.attrs["index"]
        if k >= len(types) or types[k].dtype != n.dtype or tuple(types[k].shape) != n.shape:
            raise GraphError(f"scan_output {n.name}: result {k} of its loop is not "
                             f"{n.type}")
        needed.setdefault(loop.uid, set()).add(k)
    return needed
