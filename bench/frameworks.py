"""The benchmark workloads in PyTorch (eager) and JAX (jit), for comparison when installed.

Each `make_*` takes the workload name and the initial parameters (NumPy arrays, in graphc's
order and layout) and returns ``step(*batch) -> float loss`` (JAX compiles on the first call).
"""

from __future__ import annotations

LR = 0.05


def available() -> dict[str, bool]:
    found = {}
    for name in ("torch", "jax"):
        try:
            __import__(name)
            found[name] = True
        except ImportError:
            found[name] = False
    return found


def make_torch(name: str, params, threads: int = 2, compiled: bool = False):
    """PyTorch eager, or with `compiled` the forward through ``torch.compile`` (Inductor's
    default mode: it compiles the forward and, through AOTAutograd, the backward, on the
    first call; the SGD step stays eager, as in a usual training loop)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    opt = torch.optim.SGD(ps, lr=LR)

    def mlp(act):
        def forward(x, y):
            h = x
            pairs = list(zip(ps[0::2], ps[1::2]))
            for i, (W, b) in enumerate(pairs):
                h = h @ W + b
                if i < len(pairs) - 1:
                    h = act(h)
            return F.cross_entropy(h, y)
        return forward

    def lenet(x, y):
        c1, d1, c2, d2, f1, e1, f2, e2, f3, e3 = ps
        h = F.max_pool2d(F.relu(F.conv2d(x, c1, d1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, c2, d2)), 2)
        h = F.relu(h.reshape(len(x), -1) @ f1 + e1)
        h = F.relu(h @ f2 + e2)
        return F.cross_entropy(h @ f3 + e3, y)

    def autoencoder(x):
        W1, b1, W2, b2 = ps
        out = torch.sigmoid(torch.sigmoid(x @ W1 + b1) @ W2 + b2)
        return F.mse_loss(out, x)

    def cnn32(x, y):
        h = x
        for i in range(4):
            h = F.relu(F.conv2d(h, ps[2 * i], ps[2 * i + 1], padding=1))
            if i % 2:
                h = F.max_pool2d(h, 2)
        f1, d1, f2, d2 = ps[8:]
        h = F.relu(h.reshape(len(x), -1) @ f1 + d1)
        return F.cross_entropy(h @ f2 + d2, y)

    forward = {"tiny_mlp": mlp(torch.tanh), "mlp_784": mlp(F.relu), "lenet5": lenet,
               "autoencoder": autoencoder, "cnn32": cnn32}[name]
    if compiled:
        forward = torch.compile(forward)

    def step(*batch):
        tensors = [torch.from_numpy(b) for b in batch]
        opt.zero_grad(set_to_none=True)
        loss = forward(*tensors)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def make_jax(name: str, params):
    import jax
    import jax.numpy as jnp
    from jax import lax

    def ce(logits, y):
        logp = jax.nn.log_softmax(logits, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def mlp(act):
        def loss(ps, x, y):
            h = x
            pairs = list(zip(ps[0::2], ps[1::2]))
            for i, (W, b) in enumerate(pairs):
                h = h @ W + b
                if i < len(pairs) - 1:
                    h = act(h)
            return ce(h, y)
        return loss

    def pool(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def conv(x, w, b, padding="VALID"):
        y = lax.conv_general_dilated(x, w, (1, 1), padding,
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + b[None, :, None, None]

    def cnn32(ps, x, y):
        h = x
        for i in range(4):
            h = jax.nn.relu(conv(h, ps[2 * i], ps[2 * i + 1], "SAME"))
            if i % 2:
                h = pool(h)
        f1, d1, f2, d2 = ps[8:]
        h = jax.nn.relu(h.reshape(x.shape[0], -1) @ f1 + d1)
        return ce(h @ f2 + d2, y)

    def lenet(ps, x, y):
        c1, d1, c2, d2, f1, e1, f2, e2, f3, e3 = ps
        h = pool(jax.nn.relu(conv(x, c1, d1)))
        h = pool(jax.nn.relu(conv(h, c2, d2)))
        h = jax.nn.relu(h.reshape(x.shape[0], -1) @ f1 + e1)
        h = jax.nn.relu(h @ f2 + e2)
        return ce(h @ f3 + e3, y)

    def autoencoder(ps, x):
        W1, b1, W2, b2 = ps
        out = jax.nn.sigmoid(jax.nn.sigmoid(x @ W1 + b1) @ W2 + b2)
        return jnp.mean((out - x) ** 2)

    loss_fn = {"tiny_mlp": mlp(jnp.tanh), "mlp_784": mlp(jax.nn.relu), "lenet5": lenet,
               "autoencoder": autoencoder, "cnn32": cnn32}[name]

    @jax.jit
    def update(ps, *batch):
        value, grads = jax.value_and_grad(loss_fn)(ps, *batch)
        return [p - LR * g for p, g in zip(ps, grads)], value

    state = [[jnp.asarray(p) for p in params]]

    def step(*batch):
        state[0], value = update(state[0], *batch)
        return float(value)  # waits for the result: honest timing

    return step


def make_torch_deep(params, threads: int = 2, compiled: bool = False, lr: float = 1e-3):
    """bench/depth_scaling.py's workload in PyTorch: a tanh MLP of ``len(params) // 2``
    layers, cross-entropy, torch.optim.Adam (graphc's Adam is its formula); `compiled` puts
    the forward through torch.compile, the optimizer stays eager."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    opt = torch.optim.Adam(ps, lr=lr)

    def forward(x, y):
        h, pairs = x, list(zip(ps[0::2], ps[1::2]))
        for i, (W, b) in enumerate(pairs):
            h = h @ W + b
            if i < len(pairs) - 1:
                h = torch.tanh(h)
        return F.cross_entropy(h, y)

    if compiled:
        forward = torch.compile(forward)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = forward(torch.from_numpy(x), torch.from_numpy(y))
        loss.backward()
        opt.step()
        return loss.item()

    return step


def make_jax_deep(params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
    """The same in JAX: forward, backward and torch.optim.Adam's update in one jit."""
    import jax
    import jax.numpy as jnp

    def loss_fn(ps, x, y):
        h, pairs = x, list(zip(ps[0::2], ps[1::2]))
        for i, (W, b) in enumerate(pairs):
            h = h @ W + b
            if i < len(pairs) - 1:
                h = jnp.tanh(h)
        logp = jax.nn.log_softmax(h, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def update(state, x, y):
        ps, m, v, t = state
        value, grads = jax.value_and_grad(loss_fn)(ps, x, y)
        t = t + 1
        m = [betas[0] * a + (1 - betas[0]) * g for a, g in zip(m, grads)]
        v = [betas[1] * a + (1 - betas[1]) * g * g for a, g in zip(v, grads)]
        c1, c2 = 1 - betas[0] ** t, 1 - betas[1] ** t
        ps = [p - lr * (a / c1) / (jnp.sqrt(b / c2) + eps) for p, a, b in zip(ps, m, v)]
        return (ps, m, v, t), value

    zeros = [jnp.zeros_like(jnp.asarray(p)) for p in params]
    state = [([jnp.asarray(p) for p in params], zeros, list(zeros), jnp.float32(0))]

    def step(x, y):
        state[0], value = update(state[0], x, y)
        return float(value)  # waits for the result: honest timing

    return step
