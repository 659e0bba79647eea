"""The pass manager: the default pipeline, per-pass statistics, switches and dumps.

Default pipeline (each a named pass; rewrite stages run their rules to a fixpoint):

    sink -> hoist -> loop_bodies -> canonicalize -> fold -> stabilize -> simplify -> cse -> dce
    -> fuse -> collectives -> plan_memory

(`sink` moves accumulations such as a weight gradient's ``dW + x_t^T @ g_t`` out of scan bodies,
as one product over all steps after the loop, passes/sink.py; `hoist` moves loop-invariant work
and input projections out of them, passes/hoist.py; `loop_bodies` then runs this same pipeline,
with the same passes switched off, on the body of every scan.)

Switch passes off by name (``gc.optimize(..., exclude=["fuse"])`` or the environment variable
``GRAPHC_DISABLE_PASSES=fuse,simplify``). Set ``GRAPHC_DUMP_PASSES=some/dir`` to write the graph
as text after every pass, and also ``GRAPHC_DUMP_PICTURES=1`` for an SVG per pass.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from graphc.errors import GraphError
from graphc.ir.graph import Graph, topological
from graphc.ir.printing import format_graph
from graphc.ir.text import identifier

from .bodies import loop_bodies_program
from .canonicalize import CANONICALIZE
from .collectives import schedule_collectives
from .fold import FOLD
from .fuse import fuse_program
from .hoist import hoist_program
from .memory import memory_program
from .prune import prune_loops_program
from .rewrite import RuleSet, rebuild, remap_program, run_to_fixpoint
from .simplify import SIMPLIFY, simplify_program
from .sink import sink_program
from .stabilize import STABILIZE


@dataclass
class PassStat:
    """What one pass did."""

    name: str
    nodes_before: int
    nodes_after: int
    seconds: float
    fired: dict = field(default_factory=dict)  # rule name -> times fired
    details: dict = field(default_factory=dict)

    def __str__(self) -> str:
        rules = ", ".join(f"{k}×{v}" for k, v in sorted(self.fired.items()))
        return (f"{self.name:<13} {self.nodes_before:>5} -> {self.nodes_after:<5} "
                f"{self.seconds * 1000:7.1f} ms  {rules}")


def _merged(name: str, *sets: RuleSet) -> RuleSet:
    merged = RuleSet(name)
    for s in sets:
        merged.rules += s.rules
    return merged


def _stage(rules: RuleSet) -> Callable[[Graph], tuple[Graph, dict]]:
    def run(program: Graph) -> tuple[Graph, dict]:
        res = run_to_fixpoint(program, rules)
        return res.graph, {"fired": dict(res.fired), "rounds": res.rounds, "trace": res.trace}

    return run


def cse_program(program: Graph) -> tuple[Graph, dict]:
    """Rebuild into a fresh, hash-consed graph: structurally equal nodes become one."""
    target, mapping, _ = rebuild(program)
    out = remap_program(program, target, mapping)
    return out, {"merged": len(program.nodes) - len(out.nodes)}


def dce_program(program: Graph) -> tuple[Graph, dict]:
    """Keep only what the outputs and updates need (and the inputs, which are fed)."""
    before = len(program.nodes)
    program.set_nodes(topological(program.roots() + list(program.inputs)))
    return program, {"removed": before - len(program.nodes)}


# Each stage also runs the canonicalization rules, which clean up what its rewrites leave.
PIPELINE: list[tuple[str, Callable[[Graph], tuple[Graph, dict]]]] = [
    ("prune_loops", prune_loops_program),
    ("sink", sink_program),
    ("hoist", hoist_program),
    ("loop_bodies", loop_bodies_program),
    ("canonicalize", _stage(CANONICALIZE)),
    ("fold", _stage(_merged("fold", FOLD, CANONICALIZE))),
    ("stabilize", _stage(_merged("stabilize", STABILIZE, CANONICALIZE))),
    ("simplify", simplify_program),
    ("cse", cse_program),
    ("dce", dce_program),
    ("fuse", fuse_program),
    ("collectives", schedule_collectives),
    ("plan_memory", memory_program),
]
PASS_NAMES = [name for name, _ in PIPELINE]
ALL_RULES = [*CANONICALIZE, *FOLD, *STABILIZE, *SIMPLIFY]  # every named rewrite rule


def _selected(passes: Iterable[str] | None, exclude: Iterable[str] | None) -> list[str]:
    env = os.environ.get("GRAPHC_DISABLE_PASSES", "")
    if isinstance(passes, str):  # one pass by name ("cse" was three unknown passes)
        passes = [passes]
    if isinstance(exclude, str):
        exclude = [exclude]
    excluded = set(exclude or ()) | {p.strip() for p in env.split(",") if p.strip()}
    chosen = list(passes) if passes is not None else list(PASS_NAMES)
    unknown = sorted((set(chosen) | excluded) - set(PASS_NAMES))
    if unknown:
        raise GraphError(f"unknown pass(es) {unknown}; passes are {PASS_NAMES}")
    return [p for p in PASS_NAMES if p in chosen and p not in excluded]


def optimize_program(program: Graph, passes: Iterable[str] | None = None,
                     exclude: Iterable[str] | None = None, dump: str | None = None,
                     pictures: bool | None = None) -> tuple[Graph, list[PassStat]]:
    """Run the pipeline on a program graph; returns the new program and per-pass statistics."""
    dump = dump or os.environ.get("GRAPHC_DUMP_PASSES") or None
    if pictures is None:
        pictures = os.environ.get("GRAPHC_DUMP_PICTURES", "") not in ("", "0")
    table = dict(PIPELINE)
    stats: list[PassStat] = []
    if dump:  # each compilation in its own folder: 001_train_step/, 002_evaluate/, ...
        global _dumps
        _dumps += 1
        dump = Path(dump) / f"{_dumps:03d}_{_safe_name(program.name)}"
        _dump(program, Path(dump), 0, "input", pictures)
    selected = _selected(passes, exclude)
    for k, name in enumerate(selected, start=1):
        before = len(program.nodes)
        started = time.perf_counter()
        if name == "loop_bodies":  # bodies get the passes this program gets
            program, details = loop_bodies_program(program, passes=selected)
        else:
            program, details = table[name](program)
        fired = details.pop("fired", {})
        stats.append(PassStat(name, before, len(program.nodes), time.perf_counter() - started,
                              fired, details))
        if dump:
            _dump(program, Path(dump), k, name, pictures)
    return program, stats


_dumps = 0  # compilations dumped so far in this process


def _safe_name(name: str | None) -> str:
    """A folder name for a graph's name (free text, possibly from a file): graphc.ir.text's
    token, so it has no separators, dots or control characters."""
    return identifier(name or "graph", extra="-", default="graph")


def _dump(program: Graph, folder: Path, k: int, name: str, pictures: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{k:02d}_{name}.txt").write_text(format_graph(program) + "\n")
    if pictures:
        from graphc import viz

        suffix = "svg" if viz.dot_available() else "dot"
        viz.render(program, folder / f"{k:02d}_{name}.{suffix}", title=f"after {name}")


def format_stats(stats: list[PassStat]) -> str:
    """A table of what each pass did, for printing."""
    header = f"{'pass':<13} {'nodes':>13} {'time':>10}  rules fired"
    return "\n".join([header] + [str(s) for s in stats])
