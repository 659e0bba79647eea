"""Backpropagation as a transformation of the flow graph.

gc.grad walks the graph from the cost back to the parameters, asking each box for its local
gradient (fprop/bprop per box, chain rule, reverse order) and builds the answer as *new graph
nodes*. This script prints the local derivatives sympy derives for the activations, checks the
gradient against finite differences, computes a Hessian-vector product (a gradient of a
gradient), and draws the forward and backward graph (backward nodes in orange).

Run:  python examples/backprop.py      (writes out/backprop.svg, or .dot without graphviz)
"""

from pathlib import Path

import numpy as np

import graphc as gc

F = gc.nn.functional

print("local derivatives, derived by sympy from each op's expression:")
for op in ("sigmoid", "tanh", "relu", "softplus", "elu"):
    print(f"  d {op}(x)/dx = {gc.derivative(op)}")

rng = np.random.default_rng(0)
with gc.Graph("backprop") as graph:
    x = gc.placeholder("x", ("N", 3))
    t = gc.placeholder("t", ("N", 1))
    W1 = gc.parameter("W1", rng.normal(0, 0.5, (3, 4)).astype(np.float32))
    W2 = gc.parameter("W2", rng.normal(0, 0.5, (4, 1)).astype(np.float32))
    with gc.name_scope("hidden"):
        h = gc.tanh(x @ W1)
    with gc.name_scope("output"):
        y = gc.sigmoid(h @ W2)
    loss = F.mse_loss(y, t)
    dW1, dW2 = gc.grad(loss, [W1, W2])  # new nodes in the same graph

X = rng.normal(size=(5, 3)).astype(np.float32)
T = rng.uniform(size=(5, 1)).astype(np.float32)
grads = gc.compile([x, t], [loss, dW1, dW2])
value, g1, g2 = grads(X, T)
print(f"\nloss = {value:.5f};  |dL/dW1| = {np.linalg.norm(g1):.5f},  |dL/dW2| = "
      f"{np.linalg.norm(g2):.5f}")

# The same function of W1, W2 in float64, checked against central differences.
err = gc.check_grad(
    lambda ws: F.mse_loss(gc.sigmoid(gc.tanh(gc.constant(X.astype(np.float64)) @ ws[0]) @ ws[1]),
                          gc.constant(T.astype(np.float64))),
    [W1.value.astype(np.float64), W2.value.astype(np.float64)])
print(f"gradient check against finite differences: max relative error {err:.2e}")

# Second order: the Hessian of the loss w.r.t. W2 applied to a vector, as a graph.
with graph:
    v = gc.placeholder("v", (4, 1))
    hv = gc.hessian_vector_product(loss, W2, v)
print("H·v for v = ones:", gc.compile([x, t, v], hv)(X, T, np.ones((4, 1), np.float32)).ravel())

target = Path("out") / ("backprop.svg" if gc.viz.dot_available() else "backprop.dot")
gc.viz.render([loss, dW1, dW2], target, title="forward (white) and backward (orange) graph")
print(f"picture of the forward and backward graph: {target}")
