"""The `graphc` command: demo, viz, info, bench (viz and info also read ONNX files)."""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

from .errors import BackendError, GraphError
from .ir.text import terminal_text


def _onnx_tables() -> None:
    """Load every ONNX translation module (the control-flow and recurrent ones included)."""
    from .onnx import require_onnx

    require_onnx()
    from .onnx import ops_control, ops_recurrent, table  # noqa: F401


def _onnx_model(path: str):
    if not Path(path).is_file():
        raise SystemExit(f"graphc: no such file {path!r}")
    _onnx_tables()
    import onnx

    try:
        return onnx.load(path)
    except Exception as exc:  # a protobuf decode error names nothing useful on its own
        raise SystemExit(f"graphc: {path} is not a readable ONNX model ({exc})") from None


def _type_text(vi) -> str:
    from .onnx.dtypes import ONNX_TO_NUMPY, type_name

    if not vi.type.HasField("tensor_type"):
        return "(not a tensor)"
    tt = vi.type.tensor_type
    dtype = ONNX_TO_NUMPY.get(tt.elem_type)
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
            for d in tt.shape.dim] if tt.HasField("shape") else ["?"]
    return f"{dtype if dtype is not None else type_name(tt.elem_type)}  ({', '.join(dims)})"


def _all_onnx_nodes(graph):
    """Every node of `graph` and of the subgraphs (If branches, loop bodies) inside it."""
    for node in graph.node:
        yield node
        for a in node.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _all_onnx_nodes(g)


def onnx_report(path: str) -> tuple[list[str], bool]:
    """The lines `graphc info model.onnx` prints, and whether graphc imports the model.

    Every op type graphc has no translation for is listed (with its nodes), not only the
    first; when all op types are known, the model is imported once, so an unsupported
    attribute, dtype or data-dependent shape is reported too."""
    from collections import Counter

    import numpy as np

    from .errors import GraphError
    from .onnx.dtypes import array_of
    from .onnx.importer import bn_statistics, default_opset, load
    from .onnx.table import HANDLERS

    proto = _onnx_model(path)
    graph = proto.graph
    opset = default_opset(proto)
    producer = f", from {proto.producer_name} {proto.producer_version}".rstrip() \
        if proto.producer_name else ""
    lines = [f"{path}: ONNX graph {graph.name!r}, opset {opset}{producer}"]
    inits = {t.name: t for t in graph.initializer}
    width = max([len(v.name) for v in list(graph.input) + list(graph.output)] + [4])
    lines.append("inputs:")
    lines += [f"  {vi.name:<{width}}  {_type_text(vi)}" for vi in graph.input
              if vi.name not in inits]
    lines.append("outputs:")
    lines += [f"  {vi.name:<{width}}  {_type_text(vi)}" for vi in graph.output]
    try:
        floats = {n: array_of(t, "initializer") for n, t in inits.items()
                  if t.data_type in (1, 11)}  # FLOAT, DOUBLE: what becomes a gc.parameter
    except GraphError as exc:
        return lines + [f"graphc cannot import it: {exc}"], False
    frozen = bn_statistics(graph) & set(floats)
    total = sum(int(np.prod(a.shape)) for a in floats.values())
    frozen_count = sum(int(np.prod(floats[n].shape)) for n in frozen)
    lines.append(f"parameters: {total:,} values in {len(floats)} float initializers"
                 + (f" ({frozen_count:,} of them batch-norm statistics, frozen)"
                    if frozen else ""))
    nodes = list(_all_onnx_nodes(graph))
    counts = Counter(n.op_type for n in nodes)
    lines.append(f"ops: {len(nodes)} nodes, " + ", ".join(
        f"{op} x{k}" if k > 1 else op for op, k in sorted(counts.items())))
    unknown: dict[str, list[str]] = {}
    for n in nodes:
        if n.domain not in ("", "ai.onnx"):
            unknown.setdefault(f"{n.domain}.{n.op_type}", []).append(n.name or n.output[0])
        elif n.op_type not in HANDLERS:
            unknown.setdefault(n.op_type, []).append(n.name or n.output[0])
    if unknown:
        lines.append(f"unsupported ops ({len(unknown)} types, "
                     f"{sum(len(v) for v in unknown.values())} nodes, opset {opset}):")
        for op, names in sorted(unknown.items()):
            shown = ", ".join(repr(n) for n in names[:5])
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            lines.append(f"  {op}: {shown}{more}")
        return lines, False
    from .ir.graph import Graph

    try:
        model = load(proto)
        with Graph():
            model(*model.placeholders())
    except GraphError as exc:
        lines.append(f"unsupported: {exc}")
        return lines, False
    except Exception as exc:  # noqa: BLE001 - a report, not a crash: say it is graphc's fault
        lines.append(f"import failed inside graphc (a bug; please report it): "
                     f"{type(exc).__name__}: {exc}")
        return lines, False
    lines.append("unsupported ops: none (graphc imports this model)")
    return lines, True


def _cmd_info(args) -> int:
    if args.model:
        lines, ok = onnx_report(args.model)
        print(terminal_text("\n".join(lines)))  # (names in the file are the file's)
        return 0 if ok else 1
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
    if Path(path).suffix != ".py":  # (runpy would run any file's code: a .gcz with a
        # __main__.py inside is a zip Python runs; only what is plainly a script is run)
        raise SystemExit(f"graphc viz: FILE.py:NAME runs FILE.py as Python to find NAME; "
                         f"{path!r} is not a .py file")
    # as `python FILE.py` would run it: its folder first on the import path (a model script
    # importing its neighbour failed), and its own argv (one parsing arguments read graphc's)
    saved_path, saved_argv = list(sys.path), sys.argv
    sys.path.insert(0, str(Path(path).resolve().parent))
    sys.argv = [path]
    try:
        namespace = runpy.run_path(path, run_name="__graphc_viz__")
    finally:
        sys.path[:], sys.argv = saved_path, saved_argv
    if name not in namespace:
        raise SystemExit(f"graphc viz: {path} defines no name {name!r}")
    return namespace[name]


def _onnx_outputs(path: str):
    """The outputs of the ONNX model at `path`, imported into a new graph (what graphc sees:
    its ops after import, constants and shapes folded)."""
    from .errors import GraphError
    from .ir.graph import Graph
    from .onnx.importer import load

    model = load(_onnx_model(path))
    try:
        with Graph(f"onnx:{Path(path).stem}"):
            out = model(*model.placeholders())
    except GraphError as exc:
        raise SystemExit(f"graphc viz: graphc cannot import {path}: {exc}\n(`graphc info "
                         f"{path}` lists every unsupported op)") from None
    return out


def _cmd_viz(args) -> int:
    from . import viz
    from .ir.tensor import Tensor
    from .passes.autodiff import grad

    if Path(args.output).suffix.lower() not in (".svg", ".png", ".pdf", ".dot"):
        # (before running the user's script: it may train for minutes)
        raise SystemExit(f"graphc viz: cannot render to {Path(args.output).suffix!r}: use "
                         f".svg, .png, .pdf or .dot")
    if args.target.lower().endswith(".onnx"):
        if args.grad:
            raise SystemExit("graphc viz --grad: give FILE.py:NAME (a scalar cost), not an "
                             "ONNX model")
        out = viz.render(_onnx_outputs(args.target), args.output)
        print(f"wrote {out}")
        return 0
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

    viz = sub.add_parser("viz", help="draw a tensor/graph defined in a Python file, or an "
                                     "ONNX model as graphc imports it")
    viz.add_argument("target", help="FILE.py:NAME, or MODEL.onnx")
    viz.add_argument("-o", "--output", required=True, help="out.svg / .png / .pdf / .dot")
    viz.add_argument("--grad", action="store_true",
                     help="draw the backward graph of the scalar NAME w.r.t. its parameters")
    viz.set_defaults(func=_cmd_viz)

    info = sub.add_parser("info", help="backends available on this machine; with MODEL.onnx: "
                                       "its inputs, outputs, parameters, unsupported ops")
    info.add_argument("model", nargs="?", default=None,
                      help="an ONNX file to describe (exit status 1 if graphc cannot import "
                           "it)")
    info.set_defaults(func=_cmd_info)

    bench = sub.add_parser("bench", help="compare backends (and PyTorch/JAX when installed)")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions")
    bench.add_argument("--workloads", default=None,
                       help="comma-separated subset of tiny_mlp, mlp_784, lenet5, autoencoder, "
                            "cnn32 (default: all)")
    bench.add_argument("--threads", type=int, default=2,
                       help="threads for every framework's BLAS and runtime (default: 2)")
    bench.add_argument("--no-torch-compile", action="store_true",
                       help="skip torch.compile (its first call compiles C++: 15-60 s a "
                            "workload)")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (GraphError, BackendError) as exc:  # graphc's own message (a bad setting, a file)
        print(terminal_text(f"graphc {args.command}: {exc}"), file=sys.stderr)
        return 1
    except SystemExit as exc:  # a message of the commands' own (it may quote a file's names)
        if not isinstance(exc.code, str):
            raise
        print(terminal_text(exc.code), file=sys.stderr)
        return 1
    except BrokenPipeError:  # `graphc info | head`: the reader left, which is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:  # an output path that cannot be written (a directory, say)
        where = f": {exc.filename}" if exc.filename else ""
        print(terminal_text(f"graphc {args.command}: {exc.strerror or exc}{where}"),
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
