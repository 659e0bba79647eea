"""Compile time of a loop against its length (issue 15): an LSTM over a static T of 8 and of
512 steps, and over a symbolic T, on the llvm backend, cold (no machine-code cache). With the
body emitted once, neither the IR nor the compile time grows with T.

Run:  python bench/scan_compile.py          (prints one row per T: forward, then training step)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import graphc as gc  # noqa: E402

N, D, H = 32, 32, 128


def lstm_step_function(T, train: bool, seed: int = 0) -> tuple[gc.Function, float, int]:
    """(function, seconds for gc.compile, IR size in characters)."""
    rng = np.random.default_rng(seed)
    with gc.Graph(f"lstm_T{T}"):
        x = gc.placeholder("x", (T, N, D), "float32")
        y = gc.placeholder("y", (N,), "int64")
        Wx = gc.parameter("Wx", rng.normal(0, 0.1, (D, 4 * H)).astype("float32"))
        Wh = gc.parameter("Wh", rng.normal(0, 0.1, (H, 4 * H)).astype("float32"))
        b = gc.parameter("b", np.zeros(4 * H, "float32"))
        Wo = gc.parameter("Wo", rng.normal(0, 0.1, (H, 10)).astype("float32"))

        def step(carry, xt):
            h, c = carry
            z = xt @ Wx + h @ Wh + b
            i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
            c2 = gc.sigmoid(f) * c + gc.sigmoid(i) * gc.tanh(g)
            h2 = gc.sigmoid(o) * gc.tanh(c2)
            return (h2, c2), None

        zeros = gc.zeros((N, H), "float32")
        (hT, _), _ = gc.scan(step, (zeros, zeros), x)
        loss = gc.nn.functional.cross_entropy(hT @ Wo, y)
        updates = {}
        if train:
            params = [Wx, Wh, b, Wo]
            updates = {p: p - 0.1 * g for p, g in zip(params, gc.grad(loss, params))}
        started = time.perf_counter()
        fn = gc.compile([x, y], loss, updates=updates, backend="llvm",
                        backend_options={"cache": False})
        seconds = time.perf_counter() - started
    return fn, seconds, len(fn.source)


def main() -> None:
    print(f"LSTM N={N} D={D} H={H}, llvm, cold (cache off); seconds for gc.compile "
          "(passes + code generation + LLVM), best of 3")
    for train in (False, True):
        rows = {}
        for T in (8, 512, "T"):
            best, llvm, size = None, None, 0
            for _ in range(3):
                fn, seconds, size = lstm_step_function(T, train)
                if best is None or seconds < best:
                    best, llvm = seconds, fn.stats["llvm_compile_seconds"]
            rows[T] = best
            print(f"  {'training step' if train else 'forward'} T={T!s:>4}: {best:.3f} s "
                  f"(llvm part {llvm:.3f} s), IR {size} chars")
        print(f"  T=512 / T=8: {rows[512] / rows[8]:.2f}x")


if __name__ == "__main__":
    main()
