"""Basics: declare a graph, compile it, run it, draw it, read the generated program.

Run:  python examples/basics.py    (writes out/basics.svg, or .dot without graphviz)
"""

from pathlib import Path

import numpy as np

import graphc as gc

F = gc.nn.functional

with gc.Graph("basics") as graph:
    # A placeholder is fed at call time; "N" is a symbolic batch size.
    x = gc.placeholder("x", ("N", 3))
    W = gc.parameter("W", np.array([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]], np.float32))
    b = gc.parameter("b", np.array([0.1, -0.1], np.float32))
    h = gc.tanh(F.linear(x, W, b))
    score = (h * h).sum(axis=1)

print("symbolic shapes:", x.shape, "->", h.shape, "->", score.shape)

fn = gc.compile([x], [h, score])
batch = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]], np.float32)
h_val, score_val = fn(batch)
print("h =\n", h_val)
print("score =", score_val)

expected = np.tanh(batch @ W.value + b.value)
assert np.allclose(h_val, expected, atol=1e-6), "graphc disagrees with NumPy"
print("matches NumPy: yes")

print("\nthe generated program (Function.source):")
print(fn.source)

out = Path("out")
target = out / ("basics.svg" if gc.viz.dot_available() else "basics.dot")
gc.viz.render(fn, target)
print(f"picture of the graph: {target}")
