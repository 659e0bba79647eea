"""Node counts before and after optimization for the example models' training steps.

Run:  python bench/pass_stats.py          (prints one table per model, then a summary)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graphc as gc  # noqa: E402
from bench.workloads import BENCHMARKS, MODELS  # noqa: E402
from graphc.passes import format_stats  # noqa: E402


def main() -> None:
    models = {**{f"test:{k}": v for k, v in MODELS.items()},
              **{f"bench:{k}": v[0] for k, v in BENCHMARKS.items()}}
    summary = []
    for name, make in models.items():
        with gc.Graph(name):
            inputs, loss, updates, _ = make()
            fn = gc.compile(inputs, loss, updates=updates)
        stats = fn.stats["passes"]
        fused = sum(1 for n in fn.graph.nodes if n.op.name == "elemwise")
        before, after = stats[0].nodes_before, stats[-1].nodes_after
        summary.append((name, before, after, fused, sum(s.seconds for s in stats)))
        print(f"== {name}: training step")
        print(format_stats(stats))
        print()
    print(f"{'model':<18} {'nodes before':>12} {'after':>6} {'shrink':>7} {'fused':>6} "
          f"{'time':>8}")
    for name, before, after, fused, secs in summary:
        print(f"{name:<18} {before:>12} {after:>6} {1 - after / before:>6.0%} {fused:>6} "
              f"{secs * 1000:>6.0f}ms")


if __name__ == "__main__":
    main()
