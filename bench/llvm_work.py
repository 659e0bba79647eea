"""How much work LLVM does to compile a workload's step, counted in instructions.

The wall-clock or CPU time of a compile moves by up to 40% between runs on a shared VM, even
for the same IR in one process, which drowns a compile-time change of 10%. The instructions
LLVM executes to optimize and emit the same module parts do not move: this counts them with
valgrind's callgrind (when installed), over `toolchain.compile_object` of each part, minus a
run that compiles nothing (the interpreter's start and imports).

Run:  python bench/llvm_work.py cnn32,tiny_mlp       (about a minute per workload)
"""

from __future__ import annotations

import argparse
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: what runs under callgrind: compile every part of the pickled list, one after another
CHILD = """
import pickle, sys
sys.path.insert(0, {root!r})
from graphc.backends.kernelgen import toolchain
toolchain.initialize()
for text in pickle.load(open(sys.argv[1], "rb")):
    toolchain.compile_object(text)
"""


def module_parts(name: str) -> tuple[str, ...]:
    """The IR texts of the module parts that a cold compile of workload `name` hands LLVM."""
    import graphc as gc
    from bench.workloads import BENCHMARKS

    with gc.Graph(name):
        inputs, loss, updates, _ = BENCHMARKS[name][0]()
        fn = gc.compile(inputs, loss, updates=updates, backend="llvm",
                        backend_options={"cache": False})
    return fn._exe.parts


def instructions(parts, workdir: Path) -> int:
    """Instructions executed (callgrind's total) compiling `parts` in a fresh interpreter."""
    listing = workdir / "parts.pkl"
    listing.write_bytes(pickle.dumps(list(parts)))
    out = workdir / "callgrind.out"
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                          sys.executable, "-c", CHILD.format(root=str(ROOT)), str(listing)],
                         capture_output=True, text=True, check=True)
    totals = re.findall(r"refs:\s+([\d,]+)", run.stderr)
    if not totals:
        raise RuntimeError(f"callgrind printed no total:\n{run.stderr[-2000:]}")
    return int(totals[-1].replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", help="comma-separated names from bench/workloads.py")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: nothing to count with")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        baseline = instructions((), workdir)
        for name in args.workloads.split(","):
            parts = module_parts(name)
            work = instructions(parts, workdir) - baseline
            size = sum(len(p) for p in parts)
            print(f"{name:12s} {len(parts)} parts, {size / 1e3:7.1f} KB of IR: "
                  f"{work / 1e9:6.3f} billion instructions in LLVM", flush=True)


if __name__ == "__main__":
    main()
