"""The `graphc` command: demo, viz, info, bench."""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path


def _cmd_info(args) -> int:
    from .sysinfo import report

    for section, rows in report():
        print(f"{section}:")
        for key, value in rows:
            print(f"  {key:<10} {value}")
    return 0


def _load_target(spec: str):
    if ":" not in spec:
        raise SystemExit(f"graphc viz: expected FILE.py:NAME, got {spec!r}")
    path, name = spec.rsplit(":", 1)
    if not Path(path).exists():
        raise SystemExit(f"graphc viz: no such file {path!r}")
    namespace = runpy.run_path(path, run_name="__graphc_viz__")
    if name not in namespace:
        raise SystemExit(f"graphc viz: {path} defines no name {name!r}")
    return namespace[name]


def _cmd_viz(args) -> int:
    from . import viz
    from .ir.tensor import Tensor
    from .passes.autodiff import grad

    target = _load_target(args.target)
    if args.grad:
        if not isinstance(target, Tensor) or target.ndim != 0:
            raise SystemExit("graphc viz --grad: NAME must be a scalar tensor (a cost)")
        from .ir.graph import topological

        leaves = [n for n in topological([target.node]) if n.dtype.kind == "f"]
        # the gradient w.r.t. the parameters; a cost of placeholders alone: w.r.t. those
        wrt = ([n for n in leaves if n.op.name == "parameter"] or
               [n for n in leaves if n.op.name == "placeholder"])
        if not wrt:
            raise SystemExit("graphc viz --grad: the cost depends on no float parameter or "
                             "placeholder")
        tensors = [Tensor(n, target.graph) for n in wrt]
        with target.graph.building_for(target.node):  # the gradient's source line: the cost's
            target = [target] + grad(target, tensors)
    out = viz.render(target, args.output)
    print(f"wrote {out}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import main as demo_main

    return demo_main(args)


def _cmd_bench(args) -> int:
    from .benchmarks import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a model on real data, draw its graph")
    demo.add_argument("--backend", default="numpy", help="numpy (default), llvm or cuda")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs (default: 12)")
    demo.add_argument("--out", default="out", help="folder for pictures (default: out/)")
    demo.set_defaults(func=_cmd_demo)

    viz = sub.add_parser("viz", help="draw a tensor/graph defined in a Python file")
    viz.add_argument("target", help="FILE.py:NAME")
    viz.add_argument("-o", "--output", required=True, help="out.svg / .png / .pdf / .dot")
    viz.add_argument("--grad", action="store_true",
                     help="draw the backward graph of the scalar NAME w.r.t. its parameters")
    viz.set_defaults(func=_cmd_viz)

    info = sub.add_parser("info", help="backends available on this machine")
    info.set_defaults(func=_cmd_info)

    bench = sub.add_parser("bench", help="compare backends (and PyTorch/JAX when installed)")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions")
    bench.add_argument("--workloads", default=None, help="comma-separated subset")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `graphc info | head`: the reader left, which is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
