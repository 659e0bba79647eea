"""Training-step workloads shared by the benchmarks, bench/pass_stats.py and the pass tests.

Each builder returns ``(inputs, loss, updates, feed)``: placeholders, the scalar loss, plain-SGD
updates, and ``feed(batch, rng)`` producing a batch of inputs. All float32.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import graphc as gc

F = gc.nn.functional


def _param(name, shape, rng, fan_in=None):
    scale = (fan_in or shape[0]) ** -0.5
    return gc.parameter(name, rng.uniform(-scale, scale, shape).astype(np.float32))


def _zeros(name, n):
    return gc.parameter(name, np.zeros(n, np.float32))


def sgd(loss, params, lr=0.05):
    grads = gc.grad(loss, params)
    return {p: p - lr * g for p, g in zip(params, grads)}


def _class_feed(shape, classes):
    def feed(batch, rng):
        return [rng.normal(size=(batch, *shape)).astype(np.float32),
                rng.integers(0, classes, batch)]
    return feed


def mlp(sizes=(64, 32, 10), activation: Callable = gc.relu, seed=0):
    """MLP classifier: linear layers with `activation` between, cross-entropy, SGD."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", ("N", sizes[0]))
    y = gc.placeholder("y", ("N",), "int64")
    params, h = [], x
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        W, c = _param(f"fc{i}.w", (a, b), rng), _zeros(f"fc{i}.b", b)
        params += [W, c]
        with gc.name_scope(f"fc{i}"):
            h = F.linear(h, W, c)
            if i < len(sizes) - 2:
                h = activation(h)
    loss = F.cross_entropy(h, y)
    return [x, y], loss, sgd(loss, params), _class_feed((sizes[0],), sizes[-1])


def lenet5(seed=0):
    """LeNet-5 on 1x28x28: conv6-5x5, maxpool, conv16-5x5, maxpool, 120, 84, 10 (ReLU)."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", ("N", 1, 28, 28))
    y = gc.placeholder("y", ("N",), "int64")
    c1, b1 = _param("conv1.w", (6, 1, 5, 5), rng, 25), _zeros("conv1.b", 6)
    c2, b2 = _param("conv2.w", (16, 6, 5, 5), rng, 150), _zeros("conv2.b", 16)
    f1, d1 = _param("fc1.w", (256, 120), rng), _zeros("fc1.b", 120)
    f2, d2 = _param("fc2.w", (120, 84), rng), _zeros("fc2.b", 84)
    f3, d3 = _param("fc3.w", (84, 10), rng), _zeros("fc3.b", 10)
    h = F.max_pool2d(gc.relu(F.conv2d(x, c1, b1)), 2)  # 6x12x12
    h = F.max_pool2d(gc.relu(F.conv2d(h, c2, b2)), 2)  # 16x4x4
    h = gc.relu(F.linear(h.reshape(-1, 256), f1, d1))
    h = gc.relu(F.linear(h, f2, d2))
    loss = F.cross_entropy(F.linear(h, f3, d3), y)
    params = [c1, b1, c2, b2, f1, d1, f2, d2, f3, d3]
    return [x, y], loss, sgd(loss, params), _class_feed((1, 28, 28), 10)


def cnn32(seed=0):
    """VGG-style net on 3x32x32 (CIFAR-sized): 2x conv3x3(32), maxpool, 2x conv3x3(64),
    maxpool, linear 4096-256, linear 256-10; ReLU, "same" padding (about 4.8 GFLOP per
    training step at batch 32)."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", ("N", 3, 32, 32))
    y = gc.placeholder("y", ("N",), "int64")
    params, h = [], x
    for i, (cin, cout) in enumerate([(3, 32), (32, 32), (32, 64), (64, 64)]):
        w = _param(f"conv{i}.w", (cout, cin, 3, 3), rng, cin * 9)
        b = _zeros(f"conv{i}.b", cout)
        params += [w, b]
        h = gc.relu(F.conv2d(h, w, b, padding=1))
        if i % 2:
            h = F.max_pool2d(h, 2)
    f1, d1 = _param("fc1.w", (4096, 256), rng), _zeros("fc1.b", 256)
    f2, d2 = _param("fc2.w", (256, 10), rng), _zeros("fc2.b", 10)
    params += [f1, d1, f2, d2]
    h = gc.relu(F.linear(h.reshape(-1, 4096), f1, d1))
    loss = F.cross_entropy(F.linear(h, f2, d2), y)
    return [x, y], loss, sgd(loss, params), _class_feed((3, 32, 32), 10)


def small_cnn(seed=0):
    """conv-relu-maxpool x2 and a linear layer on 1x8x8 images (the digits data's size)."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", ("N", 1, 8, 8))
    y = gc.placeholder("y", ("N",), "int64")
    w1, b1 = _param("conv1.w", (8, 1, 3, 3), rng, 9), _zeros("conv1.b", 8)
    w2, b2 = _param("conv2.w", (16, 8, 3, 3), rng, 72), _zeros("conv2.b", 16)
    W, c = _param("fc.w", (64, 10), rng), _zeros("fc.b", 10)
    h = F.max_pool2d(gc.relu(F.conv2d(x, w1, b1, padding=1)), 2)
    h = F.max_pool2d(gc.relu(F.conv2d(h, w2, b2, padding=1)), 2)
    loss = F.cross_entropy(F.linear(h.reshape(-1, 64), W, c), y)
    return [x, y], loss, sgd(loss, [w1, b1, w2, b2, W, c]), _class_feed((1, 8, 8), 10)


def autoencoder(sizes=(64, 32), seed=0):
    """64-32-64 sigmoid autoencoder, MSE loss."""
    rng = np.random.default_rng(seed)
    n, k = sizes
    x = gc.placeholder("x", ("N", n))
    W1, b1 = _param("enc.w", (n, k), rng), _zeros("enc.b", k)
    W2, b2 = _param("dec.w", (k, n), rng), _zeros("dec.b", n)
    out = gc.sigmoid(F.linear(gc.sigmoid(F.linear(x, W1, b1)), W2, b2))
    loss = F.mse_loss(out, x)

    def feed(batch, rng):
        return [rng.uniform(0, 1, (batch, n)).astype(np.float32)]

    return [x], loss, sgd(loss, [W1, b1, W2, b2]), feed


def rnn(steps=6, hidden=16, seed=0):
    """tanh RNN unrolled over `steps` time steps, linear readout, MSE."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", ("N", steps, 3))
    t = gc.placeholder("t", ("N", 1))
    Wx, Wh = _param("rnn.wx", (3, hidden), rng), _param("rnn.wh", (hidden, hidden), rng)
    b, V = _zeros("rnn.b", hidden), _param("out.w", (hidden, 1), rng)
    h = gc.tanh(x[:, 0] @ Wx + b)
    for k in range(1, steps):
        h = gc.tanh(x[:, k] @ Wx + h @ Wh + b)
    loss = F.mse_loss(h @ V, t)

    def feed(batch, rng):
        return [rng.normal(size=(batch, steps, 3)).astype(np.float32),
                rng.normal(size=(batch, 1)).astype(np.float32)]

    return [x, t], loss, sgd(loss, [Wx, Wh, b, V]), feed


def lstm_classifier(steps="T", features=32, hidden=128, classes=10, seed=0):
    """gc.nn.LSTM (a gc.scan; `steps` may be a dimension name) read out from the last state:
    bench/lstm.py's workload without its PyTorch weights, for the GPU check's timing."""
    gc.manual_seed(seed)
    x = gc.placeholder("x", (steps, "N", features))
    y = gc.placeholder("y", ("N",), "int64")
    lstm, head = gc.nn.LSTM(features, hidden), gc.nn.Linear(hidden, classes)
    _, (h_n, _) = lstm(x)
    loss = F.cross_entropy(head(h_n[0]), y)
    length = 32 if isinstance(steps, str) else steps

    def feed(batch, rng):
        return [rng.normal(size=(length, batch, features)).astype(np.float32),
                rng.integers(0, classes, size=batch)]

    return [x, y], loss, sgd(loss, [*lstm.parameters(), *head.parameters()]), feed


# The benchmark table of the LLVM issue, and the smaller models used by tests.
BENCHMARKS = {
    "tiny_mlp": (lambda: mlp((4, 16, 3), gc.tanh), 16),
    "mlp_784": (lambda: mlp((784, 512, 512, 10), gc.relu), 128),
    "lenet5": (lenet5, 64),
    "autoencoder": (autoencoder, 32),
    "cnn32": (cnn32, 32),
}
MODELS = {"mlp": mlp, "cnn": small_cnn, "autoencoder": autoencoder, "rnn": rnn}
