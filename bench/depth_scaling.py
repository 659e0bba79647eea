"""Per-call overhead against graph size: an MLP of depth 2/8/32/64 trained with Adam.

Each layer is tiny (width 16, batch 16), so a step's time is almost all per-call and per-op
overhead: the time per step should grow linearly with the depth (the number of parameters,
state slots and ops). A backend whose calling convention does work per *pair* of values
(the NumPy backend once checked every new value against every parameter with
``np.may_share_memory``: O(P²)) shows up here as super-linear growth.

    python bench/depth_scaling.py [--depths 2,8,32,64] [--backends numpy,llvm] [--quick]
                                  [--threads 2] [--no-frameworks] [--no-torch-compile]

The contenders of one depth — graphc's backends and, when installed, PyTorch eager,
torch.compile and JAX jit on the same model, batch, initial values and Adam — are timed
round-robin (window after window, each in turn, medians of 5 or 7 rounds), so a noisy moment
of a shared machine hits them alike; it prints median ms/step and ms per layer, and how
OpenBLAS was set up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build(depth: int, width: int = 16, seed: int = 0):
    """(inputs, loss, Adam updates, batch) of a `depth`-layer tanh MLP, float32."""
    import numpy as np

    import graphc as gc

    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", ("N", width))
    y = gc.placeholder("y", ("N",), "int64")
    h, params = x, []
    for i in range(depth):
        W = gc.parameter(f"fc{i}.w", rng.uniform(-0.25, 0.25, (width, width)).astype(np.float32))
        b = gc.parameter(f"fc{i}.b", np.zeros(width, np.float32))
        params += [W, b]
        h = gc.nn.functional.linear(h, W, b)
        if i < depth - 1:
            h = gc.tanh(h)
    loss = gc.nn.functional.cross_entropy(h, y)
    updates = gc.optim.Adam(params, lr=1e-3).updates(loss)
    batch = [rng.normal(size=(16, width)).astype(np.float32), rng.integers(0, width, 16)]
    return [x, y], loss, updates, batch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", default="2,8,32,64")
    p.add_argument("--backends", default="numpy,llvm")
    p.add_argument("--quick", action="store_true", help="shorter timing windows")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-frameworks", action="store_true",
                   help="graphc's backends only (no PyTorch, torch.compile or JAX)")
    p.add_argument("--no-torch-compile", action="store_true",
                   help="skip torch.compile (its first call compiles C++)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.timing import threads_before_loading, threads_now, timing_note

    threads_before_loading(args.threads)
    import graphc as gc  # (before NumPy: graphc's BLAS policy must reach OpenBLAS's start)
    from bench import frameworks
    from bench.timing import blas_settings, round_robin

    threads_now(args.threads)
    window, repeats = (0.1, 5) if args.quick else (0.3, 7)
    backends = args.backends.split(",")
    found = {} if args.no_frameworks else frameworks.available()
    others = (["PyTorch eager"] + ([] if args.no_torch_compile else ["torch.compile"])
              if found.get("torch") else []) + (["JAX jit"] if found.get("jax") else [])
    labels = backends + others
    print("BLAS:", blas_settings())
    print("comparisons:", ", ".join(f"{k} {'found' if v else 'not installed'}"
                                    for k, v in found.items()) or "none")
    print(timing_note(window, repeats))
    print(f"{'depth':>5} {'params':>7} " + " ".join(f"{b + ' ms':>16} {'/layer':>7}"
                                                    for b in labels))
    for depth in (int(d) for d in args.depths.split(",")):
        with gc.Graph(f"mlp{depth}"):
            inputs, loss, updates, batch = build(depth)
        # every contender starts from the same values: the model's, before any step
        initial = [p.value.copy() for p in updates if p.name.startswith("fc")]
        steps = {b: gc.compile(inputs, loss, updates=updates, backend=b) for b in backends}
        if "PyTorch eager" in others:
            steps["PyTorch eager"] = frameworks.make_torch_deep(initial, args.threads)
        if "torch.compile" in others:
            steps["torch.compile"] = frameworks.make_torch_deep(initial, args.threads,
                                                                compiled=True)
        if "JAX jit" in others:
            steps["JAX jit"] = frameworks.make_jax_deep(initial)
        ms = round_robin(steps, batch, window, repeats)
        print(f"{depth:>5} {len(updates):>7} " + " ".join(f"{ms[b]:>16.3f} {ms[b] / depth:>7.3f}"
                                                          for b in labels), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
