"""Per-call overhead against graph size: an MLP of depth 2/8/32/64 trained with Adam.

Each layer is tiny (width 16, batch 16), so a step's time is almost all per-call and per-op
overhead: the time per step should grow linearly with the depth (the number of parameters,
state slots and ops). A backend whose calling convention does work per *pair* of values
(the NumPy backend once checked every new value against every parameter with
``np.may_share_memory``: O(P²)) shows up here as super-linear growth.

    python bench/depth_scaling.py [--depths 2,8,32,64] [--backends numpy,llvm] [--quick]

The backends of one depth are timed round-robin (window after window, each in turn), so a
noisy moment of a shared machine hits them alike; it prints median ms/step and ms per layer.
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
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import graphc as gc
    from bench.timing import round_robin

    window, repeats = (0.1, 5) if args.quick else (0.3, 7)
    backends = args.backends.split(",")
    print(f"{'depth':>5} {'params':>7} " + " ".join(f"{b + ' ms':>10} {'/layer':>7}"
                                                    for b in backends))
    for depth in (int(d) for d in args.depths.split(",")):
        with gc.Graph(f"mlp{depth}"):
            inputs, loss, updates, batch = build(depth)
        steps = {b: gc.compile(inputs, loss, updates=updates, backend=b) for b in backends}
        ms = round_robin(steps, batch, window, repeats)
        print(f"{depth:>5} {len(updates):>7} " + " ".join(f"{ms[b]:>10.3f} {ms[b] / depth:>7.3f}"
                                                          for b in backends), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
