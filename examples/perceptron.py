"""The perceptron (Rosenblatt 1958): learning by correcting mistakes — and its limit, XOR.

The Rosenblatt rule is not gradient descent: after each example, if the prediction
step(w·x + b) is wrong, add lr * (target - prediction) * x to w. Here that rule *is* the
compiled function's update graph (no gc.grad anywhere). On linearly separable data (iris:
setosa vs. the rest, by petal length and width) it converges to zero mistakes, as the
perceptron convergence theorem promises; on XOR, which no line separates, it never does.

Run:  python examples/perceptron.py [--quick]
"""

import numpy as np
from common import done, draw, setup

import graphc as gc

args = setup("Perceptron: the Rosenblatt rule as an update graph, and its failure on XOR")


def perceptron(n_features: int):
    """A compiled online step: predict one example, correct the weights if it was wrong."""
    w = gc.parameter("w", np.zeros(n_features, np.float32))
    b = gc.parameter("b", np.zeros((), np.float32))
    with gc.Graph("perceptron") as graph:
        x = gc.placeholder("x", (n_features,))
        target = gc.placeholder("target", ())  # 0 or 1
        fired = gc.cast(gc.sum(x * w) + b > 0, "float32")  # the threshold unit
        error = target - fired  # 0 when right, +1 / -1 when wrong
        lr = 1.0
        step = gc.compile([x, target], gc.abs(error),
                          updates={w: w + lr * error * x, b: b + lr * error},
                          backend=args.backend)
    return step, w, b, graph


def train(x, y, max_epochs: int) -> tuple[int | None, list[int]]:
    """Online epochs until an epoch makes no mistake; returns (epochs needed, mistakes/epoch)."""
    step, w, b, graph = perceptron(x.shape[1])
    mistakes = []
    for epoch in range(1, max_epochs + 1):
        mistakes.append(int(sum(float(step(xi, yi)) for xi, yi in zip(x, y))))
        if mistakes[-1] == 0:
            return epoch, mistakes
    return None, mistakes


(x_train, y_train), _ = gc.datasets.iris()
x = x_train[:, 2:4]  # petal length and width (cm)
y = (y_train == 0).astype(np.float32)  # setosa or not
epochs, mistakes = train(x, y, max_epochs=100)
print(f"iris setosa vs. rest ({len(x)} flowers, 2 features): converged after {epochs} epochs; "
      f"mistakes per epoch {mistakes}")

xor_x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
xor_y = np.array([0, 1, 1, 0], np.float32)
max_epochs = 20 if args.quick else 1000
epochs_xor, mistakes_xor = train(xor_x, xor_y, max_epochs)
assert epochs_xor is None, "a perceptron cannot separate XOR"
print(f"XOR: still {mistakes_xor[-1]} of 4 wrong after {max_epochs} epochs "
      f"(best epoch: {min(mistakes_xor)} wrong) - no line separates XOR, so the perceptron "
      f"never converges (Minsky & Papert 1969); examples/xor.py solves it with a hidden layer")
draw(args, perceptron(2)[0], "perceptron_step")
done(args)
