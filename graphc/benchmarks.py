"""`graphc bench`: run the repository's benchmark script (bench/bench_backends.py)."""

from __future__ import annotations

import runpy
from pathlib import Path


def main(args) -> int:
    script = Path(__file__).resolve().parents[1] / "bench" / "bench_backends.py"
    if not script.exists():
        print("the benchmarks ship with the graphc repository (bench/bench_backends.py); "
              "run `graphc bench` from an editable install of a checkout")
        return 1
    argv = (["--quick"] if args.quick else []) + (
        ["--workloads", args.workloads] if args.workloads else []) + (
        ["--threads", str(args.threads)] if getattr(args, "threads", None) is not None
        else []) + (["--no-torch-compile"] if getattr(args, "no_torch_compile", False) else [])
    script_main = runpy.run_path(str(script), run_name="graphc_bench")["main"]
    try:  # (usage lines and errors name `graphc bench`, the command the user typed)
        return int(script_main(argv, prog="graphc bench") or 0)
    except SystemExit as exc:
        return int(exc.code or 0)
