"""What every training example shares: options, quick mode, the output folder, pictures.

Options: --backend (numpy; llvm/cuda when built), --out (default out/), --quick (also set by
the environment variable GRAPHC_QUICK=1: a few epochs, for the test suite).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

import graphc as gc


def setup(description: str) -> argparse.Namespace:
    """Parse the common options, print the title, start the clock."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", default="numpy", help="numpy (default), llvm or cuda")
    parser.add_argument("--out", default="out", help="folder for pictures (default: out/)")
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("GRAPHC_QUICK") == "1",
                        help="a few epochs only (also GRAPHC_QUICK=1)")
    args = parser.parse_args()
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    args.started = time.perf_counter()
    gc.manual_seed(0)
    # The numpy backend issues many small matrix products; BLAS threads cost more than they
    # save on those, and stall badly when the cores are shared (see README).
    threadpool_limits(1, user_api="blas")
    if gc.distributed.is_main():  # (under mpiexec: one title, not one per process)
        print(description + (" [quick mode]" if args.quick else ""))
    return args


def draw(args, what, name: str) -> Path:
    """Render a graph picture as SVG (or .dot when graphviz's `dot` is missing)."""
    path = args.out / (f"{name}.svg" if gc.viz.dot_available() else f"{name}.dot")
    gc.viz.render(what, path)
    print(f"graph picture: {path}")
    return path


def save_figure(args, fig, filename: str, what: str) -> Path:
    """Lay out a matplotlib figure, write it into out/ and say where."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = args.out / filename
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"{what}: {path}")
    return path


def done(args) -> None:
    if gc.distributed.is_main():
        print(f"done in {time.perf_counter() - args.started:.1f}s")
