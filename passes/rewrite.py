"""The rewrite engine: small named rules, indexed by the op at their root, run to a fixpoint.

A rule is a function of a `Match` (the node being rebuilt, with its already-rewritten inputs)
returning a replacement tensor or None. One *round* rebuilds the program bottom-up into a fresh
graph, trying the rules of each node's op; hash-consing in the fresh graph merges identical
nodes as a side effect (CSE for free). Rounds repeat until no rule fires. If a graph repeats, or
the round cap is hit, the stage is cycling: the error names the rules that kept firing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from graphc.errors import GraphError
from graphc.ir.graph import Graph, topological
from graphc.ir.node import Node
from graphc.ir.shapes import dims_equal, format_shape
from graphc.ir.tensor import Tensor

LEAVES = ("placeholder", "parameter", "constant")


@dataclass(frozen=True)
class Rule:
    """A named rewrite applying to nodes whose op is in `ops` ("*" means every op)."""

    name: str
    ops: tuple[str, ...]
    fn: Callable[[Match], Tensor | None]
    doc: str = ""


class RuleSet:
    """The rules of one stage, indexed by root op."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rules: list[Rule] = []

    def rule(self, *ops: str):
        """Decorator: register a rule for nodes of these ops (the function name names it)."""

        def deco(fn: Callable[[Match], Tensor | None]) -> Callable:
            self.rules.append(Rule(fn.__name__, ops, fn, (fn.__doc__ or "").strip()))
            return fn

        return deco

    def for_op(self, op: str) -> list[Rule]:
        return [r for r in self.rules if op in r.ops or "*" in r.ops]

    def __iter__(self):
        return iter(self.rules)


@dataclass
class Match:
    """What a rule sees: the original node and its inputs as rewritten tensors."""

    node: Node
    inputs: list[Tensor]
    graph: Graph
    mapping: dict[int, Node] = field(default_factory=dict)

    def resolve(self, old: Node) -> Tensor:
        """The rewritten version of any already-visited node of the original program."""
        return Tensor(self.mapping[old.uid], self.graph)

    @property
    def op(self) -> str:
        return self.node.op.name

    @property
    def attrs(self):
        return self.node.attrs

    @property
    def type(self):
        return self.node.type

    def input_op(self, i: int) -> str:
        return self.inputs[i].node.op.name


@dataclass
class Firing:
    rule: str
    op: str
    node: str
    where: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.op} {self.node}{self.where}"


@dataclass
class StageResult:
    graph: Graph
    fired: Counter = field(default_factory=Counter)
    trace: list[Firing] = field(default_factory=list)
    rounds: int = 0
    seconds: float = 0.0


def rebuild(program: Graph, rules: RuleSet | None = None, target: Graph | None = None,
            trace: list[Firing] | None = None, roots: Iterable[Node] | None = None
            ) -> tuple[Graph, dict[int, Node], int]:
    """One bottom-up round: rebuild the nodes reachable from the roots into `target`.

    Returns (target, old uid -> new node, number of rule firings).
    """
    target = target if target is not None else Graph(program.name)
    nodes = topological(roots if roots is not None else program.roots())
    mapping: dict[int, Node] = {}
    fired = 0
    for node in nodes:
        if node.op.name in LEAVES:
            mapping[node.uid] = target.adopt(node)
            continue
        inputs = [Tensor(mapping[i.uid], target) for i in node.inputs]
        replacement = None
        if rules is not None:
            match = Match(node, inputs, target, mapping)
            for rule in rules.for_op(node.op.name):
                with target.building_for(node):
                    result = rule.fn(match)
                if result is None:
                    continue
                _check_replacement(rule, node, result)
                replacement = result.node if result.graph is target else target.adopt(result.node)
                fired += 1
                if trace is not None:
                    where = f" at {node.loc.short()}" if node.loc else ""
                    trace.append(Firing(rule.name, node.op.name, f"%{node.uid}", where))
                break
        if replacement is None:
            replacement = target.make_node(node.op, [t.node for t in inputs], node.attrs,
                                           loc=node.loc, scope=node.scope)
            if node.label and replacement.label is None:
                replacement.label = node.label
        mapping[node.uid] = replacement
    return target, mapping, fired


def _check_replacement(rule: Rule, node: Node, result) -> None:
    if not isinstance(result, Tensor):
        raise GraphError(f"rewrite rule {rule.name} returned {type(result).__name__}, not a Tensor")
    same = result.dtype == node.dtype and len(result.shape) == len(node.shape) and all(
        dims_equal(a, b) is not False for a, b in zip(result.shape, node.shape))
    if not same:
        raise GraphError(
            f"rewrite rule {rule.name} changed the type of {node.op.name} %{node.uid} from "
            f"{format_shape(node.shape)} {node.dtype} to {format_shape(result.shape)} "
            f"{result.dtype}")


def remap_program(program: Graph, target: Graph, mapping: dict[int, Node]) -> Graph:
    """Give `target` the program's inputs/outputs/updates, through `mapping`."""
    target.inputs = [mapping.get(n.uid, n) for n in program.inputs]
    for n in target.inputs:
        target.adopt(n)
    target.outputs = [mapping[n.uid] for n in program.outputs]
    target.updates = [(p, mapping[v.uid]) for p, v in program.updates]
    target.set_nodes(topological(target.roots() + target.inputs))
    target.meta = dict(program.meta)
    return target


def fingerprint(program: Graph) -> int:
    """A structural hash of a program (independent of uids)."""
    index: dict[int, int] = {}
    parts = []
    for i, n in enumerate(program.nodes):
        index[n.uid] = i
        leaf = n.uid if n.op.name in ("placeholder", "parameter") else None
        parts.append((n.op.name, n.attrs, tuple(index[x.uid] for x in n.inputs), leaf))
    parts.append(tuple(index[n.uid] for n in program.outputs))
    parts.append(tuple((index[p.uid], index[v.uid]) for p, v in program.updates))
    return hash(tuple(parts))


def run_to_fixpoint(program: Graph, rules: RuleSet, max_rounds: int = 30) -> StageResult:
    """Apply a stage's rules round after round until nothing fires (or fail naming a cycle)."""
    started = time.perf_counter()
    result = StageResult(program)
    seen = {fingerprint(program): 0}
    per_round: list[Counter] = []
    current = program
    for round_no in range(1, max_rounds + 1):
        trace: list[Firing] = []
        target, mapping, fired = rebuild(current, rules, trace=trace)
        current = remap_program(current, target, mapping)
        result.rounds = round_no
        result.trace += trace
        counts = Counter(f.rule for f in trace)
        result.fired += counts
        per_round.append(counts)
        if not fired:
            break
        fp = fingerprint(current)
        if fp in seen:
            looping = sorted(set().union(*[set(c) for c in per_round[seen[fp]:]]))
            raise GraphError(
                f"rewrite stage {rules.name!r} is cycling: the graph after round {round_no} "
                f"equals the graph after round {seen[fp]}; rules that keep rewriting: "
                f"{', '.join(looping)}")
        seen[fp] = round_no
    else:
        looping = sorted(set(per_round[-1]))
        raise GraphError(f"rewrite stage {rules.name!r} did not reach a fixpoint in {max_rounds} "
                         f"rounds; rules still firing: {', '.join(looping)}")
    result.graph = current
    result.seconds = time.perf_counter() - started
    return result


def rewrite_loop_bodies(body: Graph, rules: RuleSet,
                        roots: Iterable[Node] | None = None) -> Graph:
    """`body` with one round of `rules` applied to the loops nested in it (the loop passes
    rewrite inner loops before the loop holding them), or `body` itself when nothing fired."""
    if not any(n.op.name == "scan" for n in body.nodes):
        return body
    target, mapping, fired = rebuild(body, rules, roots=roots)
    if not fired:
        return body
    return remap_program(body, target, mapping)
