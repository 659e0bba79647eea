"""`graphc demo`: build a small network, train it with a compiled step, draw its graph."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def main(args) -> int:
    import graphc as gc
    from graphc import viz

    F = gc.nn.functional
    out = Path(args.out)
    rng = np.random.default_rng(0)
    with gc.Graph("xor_mlp") as g:
        x = gc.placeholder("x", ("N", 2))
        y = gc.placeholder("y", ("N",), "int64")
        W1 = gc.parameter("W1", rng.normal(0, 1, (2, 8)).astype(np.float32))
        b1 = gc.parameter("b1", np.zeros(8, np.float32))
        W2 = gc.parameter("W2", rng.normal(0, 1, (8, 2)).astype(np.float32))
        b2 = gc.parameter("b2", np.zeros(2, np.float32))
        logits = F.linear(gc.tanh(F.linear(x, W1, b1)), W2, b2)
        loss = F.cross_entropy(logits, y)
        params = [W1, b1, W2, b2]
        grads = gc.grad(loss, params)
        step = gc.compile([x, y], loss, updates={p: p - 0.5 * d for p, d in zip(params, grads)})
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    Y = np.array([0, 1, 1, 0], np.int64)
    start = time.perf_counter()
    for i in range(500):
        loss_value = step(X, Y)
        if i % 100 == 0:
            print(f"step {i:4d}  loss {float(loss_value):.4f}")
    predict = gc.compile([x], gc.argmax(logits, axis=1))
    print(f"XOR predictions {predict(X)} (want {Y}); {time.perf_counter() - start:.2f}s")
    target = out / ("xor_graph.svg" if viz.dot_available() else "xor_graph.dot")
    viz.render(step, target)
    print(f"training-step graph: {target}")
    del g
    return 0
