"""Data augmentation inside the compiled training step: the same CNN trained on the digits
with and without random shifts, tested on the test digits as they are and moved by a pixel.

The digits of the data set are centred. A CNN trained on them learns strokes at the places
where centred digits have them, and moving a test digit by a single pixel (8x8 images: an
eighth of its width) costs it much of its accuracy. Augmentation shows the network moved
digits while it trains: ``nn.RandomShift(1)`` as the model's first layer moves every training
image by a random -1..1 pixels along each axis (zeros fill in; ``RandomCrop(8, padding=1)``
is the same operation), with fresh draws at every step from a seeded random state inside the
compiled step — no Python loop over images, the same draws on every backend. The layer
follows the model's mode: in evaluation mode it is the identity, so the evaluation function,
compiled from the same model, sees the test images unchanged.

The two models (LeNet-style: conv 3x3 (16) - ReLU - max-pool - conv 3x3 (32) - ReLU - max-pool
- 64 ReLU units - 10; Adam; the same initial weights and batches) are tested on the test set
and on a shifted copy of it: every test digit moved by one pixel along one or both axes (one
of the 8 directions, drawn with numpy, fixed seed). out/augmentation_samples.png shows
training digits as the augmented step sees them, and shifted test digits.

Run:  python examples/augmentation.py [--quick] [--backend llvm]
"""

import numpy as np
from common import done, draw, setup

import graphc as gc

args = setup("Data augmentation on digits: the same CNN with and without random shifts")
F, nn = gc.nn.functional, gc.nn
EPOCHS = 5 if args.quick else 40

(x_train, y_train), (x_test, y_test) = gc.datasets.digits()
x_train, x_test = (x_train / 16).reshape(-1, 1, 8, 8), (x_test / 16).reshape(-1, 1, 8, 8)


def shifted(images: np.ndarray, moves: np.ndarray) -> np.ndarray:
    """Each image (N, 1, H, W) moved by its (dy, dx), zeros filling in."""
    out = np.zeros_like(images)
    H, W = images.shape[-2:]
    for img, new, (dy, dx) in zip(images, out, moves):
        new[:, max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
            img[:, max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


directions = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)])
moves = directions[np.random.default_rng(2024).integers(0, len(directions), len(x_test))]
x_shifted = shifted(x_test, moves)


def cnn(augment: bool) -> nn.Sequential:
    layers = [nn.Conv2d(1, 16, 3, padding=1, rng=1), nn.ReLU(), nn.MaxPool2d(2),
              nn.Conv2d(16, 32, 3, padding=1, rng=2), nn.ReLU(), nn.MaxPool2d(2),
              nn.Flatten(), nn.Linear(32 * 2 * 2, 64, rng=3), nn.ReLU(), nn.Linear(64, 10, rng=4)]
    return nn.Sequential(*([nn.RandomShift(1, rng=5)] if augment else []), *layers)


accuracy = {}
for augment in (False, True):
    model = cnn(augment)
    print(f"\n{'with' if augment else 'without'} augmentation:\n{model}")
    opt = gc.optim.Adam(model.parameters(), lr=3e-3)
    step, evaluate = gc.train.supervised(model, F.cross_entropy, opt, ("N", 1, 8, 8),
                                         backend=args.backend)
    gc.train.fit(step, (x_train, y_train), epochs=EPOCHS, batch_size=32, verbose=2)
    for name, x in (("test", x_test), ("shifted", x_shifted)):
        accuracy[augment, name] = gc.train.evaluate(evaluate, (x, y_test))["accuracy"]
    print(f"{'with' if augment else 'without'} augmentation: test accuracy "
          f"{accuracy[augment, 'test']:.4f}, on the shifted test digits "
          f"{accuracy[augment, 'shifted']:.4f}")
    if augment:
        draw(args, step, "augmentation_train_step")

print(f"\ntest accuracy without augmentation: {accuracy[False, 'test']:.4f} (shifted digits "
      f"{accuracy[False, 'shifted']:.4f}); with random shifts: {accuracy[True, 'test']:.4f} "
      f"(shifted digits {accuracy[True, 'shifted']:.4f})")

# What the augmented step sees: 10 training digits (top row), three random shifts of each
# (drawn by a layer of its own, so that the model's draws stay as they were), and 10 shifted
# test digits (bottom row).
with gc.Graph("show_augmentation"):
    x = gc.placeholder("x", ("N", 1, 8, 8))
    show = gc.compile([x], nn.RandomShift(1, rng=6).train()(x), backend=args.backend)
first = x_train[:10]
rows = np.concatenate([first] + [show(first) for _ in range(3)] + [x_shifted[:10]])
picture = gc.plot.image_grid(rows, args.out / "augmentation_samples.png", ncols=10, scale=6)
print(f"augmented training digits and shifted test digits: {picture}")
done(args)
