"""XOR with a multi-layer perceptron: one hidden layer does what no perceptron can.

Two tanh hidden units can carve the plane into the two XOR regions; backpropagation (gc.grad)
finds them. The whole training step — forward, backward, SGD update — is one compiled
function; this script trains it, prints the four predictions and writes the learned decision
surface over [0, 1]² as a picture (out/xor_surface.png, dark = class 0, light = class 1).

Run:  python examples/xor.py [--quick]
"""

import numpy as np
from common import done, draw, setup

import graphc as gc

args = setup("XOR with a 2-4-1 MLP trained by backpropagation")
F = gc.nn.functional

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
Y = np.array([0, 1, 1, 0], np.float32)

model = gc.nn.Sequential(gc.nn.Linear(2, 4, rng=1), gc.nn.Tanh(), gc.nn.Linear(4, 1, rng=2))
opt = gc.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
step, predict = gc.train.supervised(
    model, lambda z, y: F.binary_cross_entropy_with_logits(gc.reshape(z, ("N",)), y), opt,
    ("N", 2), y_dtype="float32", backend=args.backend)

steps = 300 if args.quick else 1000
for i in range(steps):
    loss, _ = step(X, Y)
    if i % (steps // 5) == 0:
        print(f"step {i:4d}  loss {float(loss):.4f}")
_, logits = predict(X, Y)
prob = 1 / (1 + np.exp(-logits[:, 0]))
for x, p, y in zip(X, prob, Y):
    print(f"  XOR{tuple(int(v) for v in x)} = {int(y)}   predicted p(1) = {p:.3f}")
accuracy = float(((prob > 0.5) == Y).mean())
print(f"accuracy on the four XOR points: {accuracy:.0%} after {steps} steps (final loss "
      f"{float(loss):.4f})")

grid = np.stack(np.meshgrid(np.linspace(0, 1, 48), np.linspace(0, 1, 48)), -1).reshape(-1, 2)
_, surface = predict(grid.astype(np.float32), np.zeros(len(grid), np.float32))
picture = gc.plot.image_grid(surface.reshape(1, 48, 48)[:, ::-1], args.out / "xor_surface.png")
print(f"decision surface: {picture}")
draw(args, step, "xor_train_step")
done(args)
