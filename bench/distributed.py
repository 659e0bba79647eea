"""Data-parallel scaling, measured: training steps on 1 and 2 MPI processes, and the allreduce
alone for each model's gradient size.

    python bench/distributed.py [--quick] [--backend llvm] [--json docs/distributed_bench.json]

Launches itself twice under MPICH's ``mpiexec``: one process with two BLAS threads, batch B
(the single-process baseline), and two processes with one BLAS thread each, batch B/2 each
(the same global batch: strong scaling on one 2-core machine). Each model's step is timed in
windows (median of the windows; on two processes the slower rank's time), then its
gradient-sized allreduce alone — through a compiled llvm graph (``MPI_Allreduce`` from native
code) and through mpi4py on NumPy buffers. Prints a table and writes the numbers as JSON, which
``bench/distributed_model.py`` reads to model larger clusters (docs/distributed.md).

Workloads: bench/workloads.py's ``mlp_784`` (784-512-512-10, batch 128) and ``lenet5``
(batch 64), float32, SGD, gradients averaged with ``opt.updates(loss, distributed=True)``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mlp_784", "lenet5")


def _windows(fn, seconds: float, windows: int) -> float:
    """Median seconds per call over `windows` windows of about `seconds` each. Every process
    makes the same number of calls (rank 0's calibration, broadcast): a collective called a
    different number of times on two processes would wait forever."""
    import numpy as np

    from graphc import distributed as D

    fn()
    t0 = time.perf_counter()
    fn()  # warm: buffers, caches; and a first estimate
    per_call = max(time.perf_counter() - t0, 1e-6)
    calls = D.broadcast_object(max(3, int(seconds / per_call)))
    per = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per.append((time.perf_counter() - t0) / calls)
    return float(np.median(per))


def worker(args) -> None:
    """One process of a launch: time every model's distributed step, then the allreduces."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    import graphc as gc
    from bench.workloads import BENCHMARKS
    from graphc import distributed as D

    rank, size = D.rank(), D.size()
    seconds, windows = (0.15, 3) if args.quick else (0.4, 7)
    results = {"processes": size, "threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "0")),
               "backend": args.backend, "models": {}}
    for name in MODELS:
        build, batch = BENCHMARKS[name]
        gc.reset_default_graph()
        inputs, loss, sgd_updates, feed = build()
        params = list(sgd_updates)
        opt = gc.optim.SGD(params, lr=0.01)
        step = gc.compile(inputs, loss, updates=opt.updates(loss, distributed=True),
                          backend=args.backend)
        local = batch // size
        data = feed(local, np.random.default_rng(rank))
        D.barrier()
        t = _windows(lambda: step(*data), seconds, windows)  # noqa: B023
        slowest = float(D.allreduce_array(np.array([t]), "max")[0])
        count = sum(int(np.prod(p.shape)) for p in params)
        entry = {"global_batch": batch, "batch_per_process": local, "step_ms": slowest * 1e3,
                 "parameters": count, "gradient_bytes": 4 * count}
        if size > 1:
            x = gc.placeholder("g", (count,), "float32")
            ar = gc.compile([x], D.allreduce(x), backend="llvm")
            g = np.ones(count, np.float32)
            D.barrier()
            native = _windows(lambda: ar(g), seconds, windows)  # noqa: B023
            D.barrier()
            host = _windows(lambda: D.allreduce_array(g), seconds, windows)  # noqa: B023
            entry["allreduce_native_ms"] = float(D.allreduce_array(np.array([native]),
                                                                   "max")[0]) * 1e3
            entry["allreduce_mpi4py_ms"] = float(D.allreduce_array(np.array([host]),
                                                                   "max")[0]) * 1e3
        results["models"][name] = entry
    if rank == 0:
        print("RESULT " + json.dumps(results), flush=True)


def launch(processes: int, threads: int, args) -> dict:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_"))}
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", str(processes),
           sys.executable, __file__, "--worker", "--backend", args.backend]
    if args.quick:
        cmd.append("--quick")
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter timing windows")
    p.add_argument("--backend", default="llvm", help="llvm (default) or numpy")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    import datetime
    import platform

    one = launch(1, 2, args)
    two = launch(2, 1, args)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    report = {"date": datetime.date.today().isoformat(), "machine": platform.platform(),
              "cpus": os.cpu_count(), "load_average_at_end": load, "backend": args.backend,
              "one_process_two_threads": one, "two_processes_one_thread": two}
    print(f"{args.backend} backend, {os.cpu_count()} cores, load average {load:.1f} at the end"
          " (numbers taken while the machine was shared are 'under load')")
    print("| model | gradient | 1 process × 2 threads, batch B | 2 processes × 1 thread, "
          "B/2 each | speed-up | allreduce alone (native / mpi4py) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in MODELS:
        a, b = one["models"][name], two["models"][name]
        print(f"| {name} (B={a['global_batch']}) | {a['gradient_bytes'] / 2**20:.2f} MiB | "
              f"{a['step_ms']:.2f} ms | {b['step_ms']:.2f} ms | "
              f"{a['step_ms'] / b['step_ms']:.2f}x | {b['allreduce_native_ms']:.3f} / "
              f"{b['allreduce_mpi4py_ms']:.3f} ms |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
