"""Training-step benchmark: graphc (numpy, llvm) vs hand-written NumPy, PyTorch eager, JAX jit.

One process runs every workload on every framework found, from the same initial parameters
and the same batch, float32, plain SGD, 2 threads. Each workload's frameworks are timed
round-robin (a 0.3 s window each, 9 rounds) so that a noisy moment of a shared machine does
not favour one of them. It prints median milliseconds per step, ratios, compile times and
memory, then a Markdown table for the README.

    python bench/bench_backends.py [--quick] [--workloads tiny_mlp,lenet5] [--threads 2]

Install the comparison frameworks with the `bench` extra (see the README); graphc's numbers
need nothing extra. `graphc bench` runs this script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: the keys of bench/workloads.py's BENCHMARKS (a test keeps them equal), named here so that
#: --help lists them and a wrong name is refused before graphc, NumPy and the slow set-up
#: (sgemm peak, backend start-up) run: the thread variables must be set before NumPy loads
WORKLOADS = ("tiny_mlp", "mlp_784", "lenet5", "autoencoder", "cnn32")


def _parse(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter timing windows")
    p.add_argument("--workloads", default=None,
                   help=f"comma-separated subset of {', '.join(WORKLOADS)} (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-torch-compile", action="store_true",
                   help="skip torch.compile (its first call compiles C++: 15-60 s a workload)")
    args = p.parse_args(argv)
    if args.workloads is not None:
        names = [n.strip() for n in args.workloads.split(",")]
        unknown = [n for n in names if n not in WORKLOADS]
        if unknown:
            p.error(f"--workloads: unknown workload(s) {', '.join(map(repr, unknown))}; "
                    f"choose from {', '.join(WORKLOADS)}")
        args.workloads = ",".join(names)
    if args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    return args


def main(argv=None, prog=None) -> int:
    """`prog`: the command named in usage lines (``graphc bench`` runs this file)."""
    args = _parse(argv, prog)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.timing import threads_before_loading, threads_now, timing_note

    threads_before_loading(args.threads)
    # JAX runs with XLA's defaults (a thread per core): the Eigen flags we used to pass here
    # left XLA threads that kept every BLAS-based framework 1.7x slower for the rest of the
    # process, and made JAX itself slower.
    import datetime
    import platform
    import time
    import tracemalloc

    # isort: off
    import graphc as gc  # before NumPy: graphc's BLAS policy must reach OpenBLAS's start
    import numpy as np
    # isort: on
    from bench import frameworks, handwritten_numpy
    from bench.flops import sgemm_peak, step_flops
    from bench.timing import blas_settings, round_robin
    from bench.workloads import BENCHMARKS
    from graphc.sysinfo import report

    threads_now(args.threads)  # (what had loaded before this script: under `graphc bench`)

    window = 0.1 if args.quick else 0.3
    repeats = 5 if args.quick else 9

    def measure(steps: dict, batch) -> dict:
        return round_robin(steps, batch, window, repeats, warmup=10)

    found = frameworks.available()
    machine = dict(report()[0][1] + report()[2][1])
    print(f"graphc {gc.__version__} benchmark, {datetime.date.today()}, "
          f"{machine.get('host CPU')}, {machine.get('cpus')} cpus, {args.threads} threads, "
          f"numpy {np.__version__}, {platform.python_version()}")
    print("BLAS:", blas_settings())
    print("comparisons:", ", ".join(f"{k} {'found' if v else 'not installed'}"
                                    for k, v in found.items()))
    print(timing_note(window, repeats))
    peak = sgemm_peak()
    print(f"sgemm peak (NumPy's BLAS, 1024x1024, {args.threads} threads): {peak:.0f} GFLOP/s")
    print(f"backend start-up (imports, BLAS lookup, LLVM's target; once a process, not in the "
          f"compile times below): {_start_backends(gc, np):.2f} s")
    names = args.workloads.split(",") if args.workloads else list(BENCHMARKS)
    rows = []
    for name in names:
        make, batch_size = BENCHMARKS[name]
        with gc.Graph(name):
            inputs, loss, updates, feed = make()
        params = list(updates)
        initial = [p.value for p in params]
        batch = feed(batch_size, np.random.default_rng(0))

        results, steps = {}, {}
        for backend in ("numpy", "llvm"):
            for p, v in zip(params, initial):  # every framework starts from the same values
                p.value = v
            options = {"cache": False} if backend == "llvm" else None
            start = time.perf_counter()
            fn = gc.compile(inputs, loss, updates=updates, backend=backend,
                            backend_options=options)
            cold = time.perf_counter() - start
            cached = None
            if backend == "llvm":
                gc.compile(inputs, loss, updates=updates, backend="llvm")  # fill the cache
                start = time.perf_counter()
                fn = gc.compile(inputs, loss, updates=updates, backend="llvm")
                cached = time.perf_counter() - start
            first = float(fn(*batch))
            memory = fn.memory(**{s.name: batch_size for s in inputs[0].shape
                                  if not isinstance(s, int)})["arena_bytes"]
            memory += sum(v.nbytes for v in initial)
            steps[f"graphc {backend}"] = fn
            results[f"graphc {backend}"] = dict(first=first, compile=cold, cached=cached,
                                                memory=memory)
        if name in handwritten_numpy.MAKERS:  # (none for cnn32: nobody writes that by hand)
            step = handwritten_numpy.MAKERS[name]([v.copy() for v in initial])
            tracemalloc.start()
            first = float(step(*batch))
            memory = tracemalloc.get_traced_memory()[1] + sum(v.nbytes for v in initial)
            tracemalloc.stop()
            steps["hand-written NumPy"] = step
            results["hand-written NumPy"] = dict(first=first, memory=memory)
        if found["torch"]:
            step = frameworks.make_torch(name, [v.copy() for v in initial], args.threads)
            first = step(*batch)
            steps["PyTorch eager"] = step
            results["PyTorch eager"] = dict(first=first)
            if not args.no_torch_compile:
                step = frameworks.make_torch(name, [v.copy() for v in initial], args.threads,
                                             compiled=True)
                start = time.perf_counter()
                first = step(*batch)
                steps["torch.compile"] = step
                results["torch.compile"] = dict(first=first, compile=time.perf_counter() - start)
        if found["jax"]:
            step = frameworks.make_jax(name, [v.copy() for v in initial])
            start = time.perf_counter()
            first = step(*batch)
            steps["JAX jit"] = step
            results["JAX jit"] = dict(first=first, compile=time.perf_counter() - start)
        flops = step_flops(steps["graphc llvm"], {s.name: batch_size for s in inputs[0].shape
                                                  if not isinstance(s, int)})
        for label, ms in measure(steps, batch).items():
            results[label]["ms"] = ms
            results[label]["gflops"] = flops / ms / 1e6
        reference = results["graphc numpy"]["first"]
        for label, r in results.items():
            if abs(r["first"] - reference) > 1e-3 * max(1.0, abs(reference)):
                print(f"  WARNING {name}/{label}: first loss {r['first']:.6f} differs from "
                      f"graphc numpy's {reference:.6f}")
        rows.append((name, batch_size, results))
        _print_workload(name, batch_size, results, flops, peak)
    print(f"\nsgemm peak measured again after the steps: {sgemm_peak():.0f} GFLOP/s")
    _print_markdown(rows, peak)
    return 0


def _start_backends(gc, np) -> float:
    """Seconds to start both backends: a first, trivial compile on each (what any process
    pays once, whatever it compiles), so that the workloads' compile times are compiles."""
    import time

    start = time.perf_counter()
    with gc.Graph("start-up"):
        x = gc.placeholder("x", ("N", 4))
        for backend in ("numpy", "llvm"):
            options = {"cache": False} if backend == "llvm" else None
            fn = gc.compile([x], (x * 2.0 + 1.0).sum(), backend=backend,
                            backend_options=options)
            fn(np.ones((2, 4), np.float32))
    return time.perf_counter() - start


def _fmt_bytes(n) -> str:
    return "—" if n is None else f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def _print_workload(name, batch, results, flops, peak) -> None:
    hand = results.get("hand-written NumPy", {}).get("ms")
    torch = results.get("PyTorch eager", {}).get("ms")
    print(f"\n{name} (batch {batch}): first loss {results['graphc numpy']['first']:.5f}, "
          f"{flops / 1e9:.3f} GFLOP a step in its products")
    print(f"  {'framework':<20} {'ms/step':>9} {'GFLOP/s':>8} {'of peak':>8} {'vs NumPy':>9} "
          f"{'vs torch':>9} {'compile s':>10} {'memory':>10}")
    for label, r in results.items():
        compile_s = "" if r.get("compile") is None else f"{r['compile']:.2f}"
        if r.get("cached") is not None:
            compile_s += f" ({r['cached']:.2f} cached)"
        vs_torch = f"{torch / r['ms']:.2f}x" if torch else "—"
        vs_hand = f"{hand / r['ms']:.2f}x" if hand else "—"
        print(f"  {label:<20} {r['ms']:>9.3f} {r['gflops']:>8.1f} {r['gflops'] / peak:>8.0%} "
              f"{vs_hand:>9} {vs_torch:>9} {compile_s:>10} {_fmt_bytes(r.get('memory')):>10}")


LABELS = ["graphc llvm", "graphc numpy", "hand-written NumPy", "PyTorch eager", "torch.compile",
          "JAX jit"]
OTHERS = ("PyTorch eager", "torch.compile", "JAX jit")


def _print_markdown(rows, peak) -> None:
    print("\n| workload | " + " | ".join(LABELS) +
          " | llvm GFLOP/s (of peak) | llvm vs NumPy | llvm vs best other |")
    print("|---|" + "---:|" * (len(LABELS) + 3))
    for name, batch, results in rows:
        cells = [f"{results[k]['ms']:.3f}" if k in results else "—" for k in LABELS]
        llvm = results["graphc llvm"]
        others = [results[k]["ms"] for k in OTHERS if k in results]
        best = f"{min(others) / llvm['ms']:.2f}x" if others else "—"
        hand = results.get("hand-written NumPy", {}).get("ms")
        vs_hand = f"{hand / llvm['ms']:.2f}x" if hand else "—"
        rate = f"{llvm['gflops']:.1f} ({llvm['gflops'] / peak:.0%})"
        print(f"| {name} (batch {batch}) | " + " | ".join(cells) +
              f" | {rate} | {vs_hand} | {best} |")


if __name__ == "__main__":
    sys.exit(main())
