"""mlp_784's products on a spinning two-thread team against OpenBLAS's own threads.

Compiles bench/c/spin_team.c against the OpenBLAS that NumPy ships (gcc needed) and runs
its modes alternately in fresh processes: 0, OpenBLAS's two threads (graphc's llvm step
today); 2, two threads alive for the whole step, each on half of C's columns, spinning
between products. The measurement behind docs/performance.md's "The sixteenth session":
what a step-long team of threads would give the 90%-of-peak target.

    python bench/spin_team.py [--runs 3] [--iterations 400]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "c" / "spin_team.c"


def _openblas() -> Path:
    import numpy

    libs = Path(numpy.__file__).resolve().parent.parent / "numpy.libs"
    found = sorted(libs.glob("libscipy_openblas64_*.so*"))
    if not found:
        sys.exit(f"no scipy-openblas64 library in {libs}: this measurement needs NumPy's "
                 f"OpenBLAS wheel")
    return found[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=400)
    args = parser.parse_args(argv)
    lib = _openblas()
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "spin_team"
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(SOURCE), f"-L{lib.parent}",
                        f"-l:{lib.name}", f"-Wl,-rpath,{lib.parent}", "-lpthread"], check=True)
        env = dict(os.environ, OPENBLAS_THREAD_TIMEOUT="4")  # graphc's policy
        for _ in range(args.runs):
            for mode in ("0", "2"):
                subprocess.run([str(exe), mode, str(args.iterations)], env=env, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
