"""`graphc bench`: run the repository's benchmark script (bench/bench_backends.py)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main(args) -> int:
    script = Path(__file__).resolve().parents[1] / "bench" / "bench_backends.py"
    if not script.exists():
        print("the benchmarks ship with the graphc repository (bench/bench_backends.py); "
              "run `graphc bench` from an editable install of a checkout")
        return 1
    argv = ["bench_backends.py"] + (["--quick"] if args.quick else []) + (
        ["--workloads", args.workloads] if args.workloads else [])
    saved = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        sys.argv = saved
    return 0
