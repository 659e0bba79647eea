"""Hand-written NumPy training steps for the benchmark workloads (the baseline to beat).

What a careful person writes by hand: forward, backward derived on paper, SGD in place,
float32 throughout, no framework. Each `make_*` returns ``step(*batch) -> loss`` closing over
parameter arrays initialised from the graphc workload, so every framework starts from the same
numbers (the benchmark checks that the first losses agree).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _softmax_ce(logits, y):
    n = logits.shape[0]
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(axis=1, keepdims=True)
    loss = -(logits[np.arange(n), y] - m[:, 0] - np.log(s[:, 0])).mean()
    g = e / s
    g[np.arange(n), y] -= 1.0
    return loss, g / n


def make_mlp(params, activation: str, lr: float = 0.05):
    Ws, bs = params[0::2], params[1::2]

    def step(x, y):
        hs, zs = [x], []
        h = x
        for i, (W, b) in enumerate(zip(Ws, bs)):
            z = h @ W + b
            zs.append(z)
            if i < len(Ws) - 1:
                h = np.tanh(z) if activation == "tanh" else np.maximum(z, 0)
                hs.append(h)
        loss, g = _softmax_ce(z, y)
        for i in reversed(range(len(Ws))):
            gW, gb = hs[i].T @ g, g.sum(axis=0)
            if i:
                g = g @ Ws[i].T
                g = g * (1 - hs[i] ** 2) if activation == "tanh" else g * (zs[i - 1] > 0)
            Ws[i] -= lr * gW
            bs[i] -= lr * gb
        return loss

    return step


def make_autoencoder(params, lr: float = 0.05):
    W1, b1, W2, b2 = params

    def step(x):
        h = 1 / (1 + np.exp(-(x @ W1 + b1)))
        out = 1 / (1 + np.exp(-(h @ W2 + b2)))
        diff = out - x
        loss = (diff * diff).mean()
        g2 = (2.0 / diff.size) * diff * out * (1 - out)
        g1 = (g2 @ W2.T) * h * (1 - h)
        for p, g in zip(params, (x.T @ g1, g1.sum(axis=0), h.T @ g2, g2.sum(axis=0))):
            p -= lr * g
        return loss

    return step


def _conv(x, w, b):
    """Valid cross-correlation: x (N,C,H,W), w (O,C,k,k) -> (N,O,H-k+1,W-k+1), and the windows."""
    k = w.shape[2]
    win = sliding_window_view(x, (k, k), axis=(2, 3))  # N,C,OH,OW,k,k
    y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # N,OH,OW,O
    return y.transpose(0, 3, 1, 2) + b[None, :, None, None], win


def _conv_backward(g, win, w, x_shape, need_dx: bool):
    gw = np.tensordot(g, win, axes=([0, 2, 3], [0, 2, 3]))  # O,C,k,k
    gb = g.sum(axis=(0, 2, 3))
    if not need_dx:
        return gw, gb, None
    k = w.shape[2]
    dx = np.zeros(x_shape, dtype=g.dtype)
    oh, ow = g.shape[2], g.shape[3]
    for a in range(k):
        for c in range(k):
            dx[:, :, a:a + oh, c:c + ow] += np.tensordot(g, w[:, :, a, c], axes=([1], [0])
                                                         ).transpose(0, 3, 1, 2)
    return gw, gb, dx


def _pool(x):
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, h // 2, w // 2, 4)
    idx = blocks.argmax(axis=-1)
    return np.take_along_axis(blocks, idx[..., None], -1)[..., 0], idx


def _unpool(g, idx, shape):
    n, c, h, w = shape
    blocks = np.zeros((n, c, h // 2, w // 2, 4), dtype=g.dtype)
    np.put_along_axis(blocks, idx[..., None], g[..., None], -1)
    return blocks.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(shape)


def make_lenet5(params, lr: float = 0.05):
    c1, d1, c2, d2, f1, e1, f2, e2, f3, e3 = params

    def step(x, y):
        z1, win1 = _conv(x, c1, d1)
        a1 = np.maximum(z1, 0)
        p1, i1 = _pool(a1)
        z2, win2 = _conv(p1, c2, d2)
        a2 = np.maximum(z2, 0)
        p2, i2 = _pool(a2)
        flat = p2.reshape(len(x), -1)
        h1 = np.maximum(flat @ f1 + e1, 0)
        h2 = np.maximum(h1 @ f2 + e2, 0)
        loss, g = _softmax_ce(h2 @ f3 + e3, y)
        grads = {}
        grads["f3"], grads["e3"] = h2.T @ g, g.sum(0)
        g = (g @ f3.T) * (h2 > 0)
        grads["f2"], grads["e2"] = h1.T @ g, g.sum(0)
        g = (g @ f2.T) * (h1 > 0)
        grads["f1"], grads["e1"] = flat.T @ g, g.sum(0)
        g = (g @ f1.T).reshape(p2.shape)
        g = _unpool(g, i2, a2.shape) * (z2 > 0)
        grads["c2"], grads["d2"], g = _conv_backward(g, win2, c2, p1.shape, True)
        g = _unpool(g, i1, a1.shape) * (z1 > 0)
        grads["c1"], grads["d1"], _ = _conv_backward(g, win1, c1, x.shape, False)
        for name, p in zip(["c1", "d1", "c2", "d2", "f1", "e1", "f2", "e2", "f3", "e3"],
                           params):
            p -= lr * grads[name]
        return loss

    return step


MAKERS = {"tiny_mlp": lambda p: make_mlp(p, "tanh"), "mlp_784": lambda p: make_mlp(p, "relu"),
          "lenet5": make_lenet5, "autoencoder": make_autoencoder}
