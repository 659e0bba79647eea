"""Two builds of graphc, the same training steps, interleaved: is a change slower?

    python bench/compare_builds.py --baseline-rev HEAD~3 [--runs 5] [--workloads lenet5,...]

Each run times every workload's llvm (and numpy, with --numpy) step in a fresh process, once
with the baseline build and once with this working tree, alternating, so that a noisy moment
of a shared machine hits both alike; the report gives, per workload, the median over the runs
of each build's median ms/step and their ratio. The baseline is the graphc of a git revision
(``--baseline-rev``, exported to a temporary folder) or a folder laid out as an importable
``graphc`` package (``--baseline DIR``: ``DIR/graphc`` with ``passes`` and ``backends`` inside).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# run in a child: time each workload's step (median ms of `repeats` windows)
CHILD = r"""
import json, os, statistics, sys, time
import graphc as gc  # before NumPy, as a user's script would: a build's BLAS policy applies
import numpy as np
from bench.workloads import BENCHMARKS
from threadpoolctl import threadpool_limits
threadpool_limits(int(os.environ.get("THREADS", "2")), user_api="blas")
out = {}
for name in sys.argv[1].split(","):
    build, batch = BENCHMARKS[name]
    for backend in sys.argv[2].split(","):
        with gc.Graph(name):
            inputs, loss, updates, feed = build()
            step = gc.compile(inputs, loss, updates=updates, backend=backend)
        data = feed(batch, np.random.default_rng(0))
        for _ in range(20):
            step(*data)
        times = []
        for _ in range(9):
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < 0.2:
                step(*data)
                n += 1
            times.append((time.perf_counter() - start) / n * 1e3)
        out[f"{name}/{backend}"] = statistics.median(times)
print(json.dumps(out))
"""


def _layout(rev: str, into: Path) -> Path:
    """Export a revision's graphc as an importable package folder."""
    archive = into / "src.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "graphc",
                    "passes", "backends", "bench"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (into / "passes").rename(into / "graphc" / "passes")
    (into / "backends").rename(into / "graphc" / "backends")
    # the same training steps for both builds: this tree's workloads (an older revision may
    # lack one, such as cnn32 before it was added)
    shutil.copy(ROOT / "bench" / "workloads.py", into / "bench" / "workloads.py")
    return into


def _run(path: Path | None, workloads: str, backends: str) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2")
    env.pop("PYTHONPATH", None)
    if path is not None:  # the baseline's package first on the path (before the editable one)
        env["PYTHONPATH"] = str(path)
    res = subprocess.run([sys.executable, "-c", CHILD, workloads, backends], env=env,
                         capture_output=True, text=True, cwd=str(path or ROOT), check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--baseline", type=Path, help="an importable graphc layout")
    where.add_argument("--baseline-rev", help="a git revision")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--workloads", default="tiny_mlp,mlp_784,lenet5,autoencoder")
    p.add_argument("--numpy", action="store_true", help="time the numpy backend too")
    args = p.parse_args(argv)
    backends = "llvm,numpy" if args.numpy else "llvm"
    with tempfile.TemporaryDirectory() as tmp:
        base = args.baseline or _layout(args.baseline_rev, Path(tmp))
        results: dict[str, dict[str, list]] = {"baseline": {}, "current": {}}
        for run in range(args.runs):
            order = [("baseline", base), ("current", None)]
            for label, path in order if run % 2 == 0 else reversed(order):
                for key, ms in _run(path, args.workloads, backends).items():
                    results[label].setdefault(key, []).append(ms)
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
    print(f"{'workload':<22} {'baseline ms':>12} {'current ms':>11} {'current/baseline':>17}")
    for key in results["baseline"]:
        b = statistics.median(results["baseline"][key])
        c = statistics.median(results["current"][key])
        print(f"{key:<22} {b:>12.3f} {c:>11.3f} {c / b:>16.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
