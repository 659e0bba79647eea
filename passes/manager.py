"""The pass manager: runs the optimization pipeline over a program graph."""

from __future__ import annotations

from graphc.ir.graph import Graph


def optimize_program(program: Graph) -> tuple[Graph, list]:
    """Run the default pipeline; returns the new program and per-pass statistics."""
    return program, []
