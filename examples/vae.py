"""A variational autoencoder on the digits (Kingma and Welling 2013), with a 2-d latent space.

The encoder (64 -> 256 -> 128, ELU) gives, for each digit, a Gaussian over codes: its mean
`mu` and log-variance `logvar` (2 numbers each). The training step draws a code from it with
the reparameterization trick, ``z = mu + exp(logvar / 2) * eps`` where ``eps =
gc.random.normal_like(mu)`` is drawn *inside the compiled step* (fresh numbers at every call,
the same on every backend), so the gradient flows through `mu` and `logvar` and not through
the draw. The decoder (2 -> 128 -> 256 -> 64, ELU) turns a code back into pixel logits. The
loss is the negative evidence lower bound, per digit:

    reconstruction  -log p(x | z) = sum over pixels of BCE(sigmoid(logits), x)
  + KL(q(z | x) || N(0, I))       = -0.5 * sum(1 + logvar - mu**2 - exp(logvar))

The KL term pulls every digit's code distribution towards the prior N(0, I), so codes drawn
from the prior decode into digits: out/vae_samples.png holds 64 of them, drawn by
gc.random.normal inside a compiled sampler. Pixels are scaled to [0, 1] and used as soft
targets, so the reconstruction term includes the targets' own entropy (it cannot reach 0);
the reference is the best model that ignores the code, the mean image (its KL is 0).

With two latent numbers the code space is a picture: out/vae_latent.png scatters the test
digits' mean codes coloured by their label (digits cluster though no label was used; needs
matplotlib), and out/vae_manifold.png decodes a grid of codes spread over the prior. A
5-nearest-neighbour classifier on the 2-d codes measures how well they separate the digits.

Run:  python examples/vae.py [--quick] [--backend llvm]
"""

import numpy as np
from common import done, draw, save_figure, setup
from scipy.stats import norm
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

import graphc as gc

args = setup("Variational autoencoder on digits: 64 -> 2-d Gaussian code -> 64 pixels")
F, nn = gc.nn.functional, gc.nn
LATENT = 2

(x_train, y_train), (x_test, y_test) = gc.datasets.digits()
x_train, x_test = x_train / 16, x_test / 16


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 256), nn.ELU(), nn.Linear(256, 128), nn.ELU())
        self.mu = nn.Linear(128, LATENT)
        self.logvar = nn.Linear(128, LATENT)
        self.decoder = nn.Sequential(nn.Linear(LATENT, 128), nn.ELU(), nn.Linear(128, 256),
                                     nn.ELU(), nn.Linear(256, 64))

    def encode(self, x):
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def forward(self, x):  # pixel logits of a reconstruction from a sampled code, and q(z|x)
        mu, logvar = self.encode(x)
        z = mu + gc.exp(0.5 * logvar) * gc.random.normal_like(mu)  # reparameterization
        return self.decoder(z), mu, logvar


def negative_elbo(x, logits, mu, logvar):
    """(reconstruction, KL), each summed over a digit's pixels / codes, mean over the batch."""
    reconstruction = 64 * F.binary_cross_entropy_with_logits(logits, x)
    kl = (-0.5 * (1 + logvar - gc.square(mu) - gc.exp(logvar)).sum(axis=1)).mean()
    return reconstruction, kl


model = VAE()
print(model, f"\n{model.num_parameters()} parameters")
opt = gc.optim.Adam(model.parameters(), lr=2e-3)
with gc.Graph("vae_step"):
    x = gc.placeholder("x", ("N", 64))
    rec, kl = negative_elbo(x, *model(x))
    loss = rec + kl
    step = gc.compile([x], [loss, rec, kl], updates=opt.updates(loss), backend=args.backend)
with gc.Graph("vae_evaluate"):
    x = gc.placeholder("x", ("N", 64))
    rec, kl = negative_elbo(x, *model(x))  # one sampled code per digit, as in training
    mu, _ = model.encode(x)
    mean_reconstruction = gc.sigmoid(model.decoder(mu))  # decode the most likely code
    evaluate = gc.compile([x], [rec, kl, mu, mean_reconstruction], backend=args.backend)
with gc.Graph("vae_sample"):
    prior = gc.random.normal((64, LATENT))  # fresh codes from N(0, I) at every call
    sample = gc.compile([], gc.sigmoid(model.decoder(prior)), backend=args.backend)
with gc.Graph("vae_decode"):
    z = gc.placeholder("z", ("M", LATENT))
    decode = gc.compile([z], gc.sigmoid(model.decoder(z)), backend=args.backend)


def test_terms() -> tuple[float, float, np.ndarray, np.ndarray]:
    """Mean reconstruction and KL over the test set, the mean codes, the reconstructions."""
    sums, codes, recons = np.zeros(2), [], []
    for (batch,) in gc.train.batches((x_test,), 128):
        r, k, m, p = evaluate(batch)
        sums += len(batch) * np.array([r, k])
        codes.append(m)
        recons.append(p)
    r, k = sums / len(x_test)
    return float(r), float(k), np.concatenate(codes), np.concatenate(recons)


rng = np.random.default_rng(0)
epochs, batch_size = (4 if args.quick else 60), 32
for epoch in range(1, epochs + 1):
    sums = np.zeros(3)
    for (batch,) in gc.train.batches((x_train,), batch_size, shuffle=True, rng=rng):
        sums += len(batch) * np.array([float(v) for v in step(batch)])
    train_loss, train_rec, train_kl = sums / len(x_train)
    test_rec, test_kl, _, _ = test_terms()
    print(f"epoch {epoch:3d}/{epochs}  train loss {train_loss:.3f} = reconstruction "
          f"{train_rec:.3f} + KL {train_kl:.3f}  test loss {test_rec + test_kl:.3f}", flush=True)

test_rec, test_kl, codes, recons = test_terms()
p_mean = np.clip(x_train.mean(0), 1e-6, 1 - 1e-6)  # the best code-free model: the mean image
mean_image_bce = float(-(x_test * np.log(p_mean) + (1 - x_test) * np.log(1 - p_mean)).sum(1)
                       .mean())
print(f"VAE test loss per digit: {test_rec + test_kl:.3f} = reconstruction {test_rec:.3f} + KL "
      f"{test_kl:.3f} (mean image, no code: reconstruction {mean_image_bce:.3f})")
mse = float(np.mean((recons - x_test) ** 2))
mean_image_mse = float(np.mean((x_train.mean(0) - x_test) ** 2))
print(f"test reconstruction MSE per pixel from the mean code: VAE {mse:.4f}, mean image "
      f"{mean_image_mse:.4f}")

# How well do two numbers per digit separate the digits? Nearest neighbours in code space.
train_codes = np.concatenate([evaluate(b)[2] for (b,) in gc.train.batches((x_train,), 256)])
knn = KNeighborsClassifier(5).fit(train_codes, y_train)
print(f"a 5-nearest-neighbour classifier on the 2-d codes reads {knn.score(codes, y_test):.4f} "
      f"of the test digits (chance 0.10)")

# Samples from the prior, and how digit-like they are (as in gan.py): the distance to the
# nearest training digit, next to real test digits and to digits with their pixels shuffled.
samples = sample()
print(f"samples: {gc.plot.image_grid(samples.reshape(-1, 8, 8), args.out / 'vae_samples.png')}")
many = np.concatenate([sample() for _ in range(16)])  # 1024 codes from the prior
shuffled = np.random.default_rng(1).permuted(x_test, axis=1)
index = NearestNeighbors(n_neighbors=1).fit(x_train)
distance = {name: float(index.kneighbors(images)[0].mean())
            for name, images in (("VAE", many), ("real", x_test), ("shuffled", shuffled))}
print(f"distance to the nearest training digit: VAE samples {distance['VAE']:.2f}, real test "
      f"digits {distance['real']:.2f}, pixel-shuffled digits {distance['shuffled']:.2f}")

# The decoded code space: a 12 x 12 grid of codes at evenly spaced quantiles of the prior.
q = norm.ppf(np.linspace(0.04, 0.96, 12)).astype(np.float32)
grid = np.stack(np.meshgrid(q, q[::-1]), -1).reshape(-1, LATENT)
manifold = gc.plot.image_grid(decode(grid).reshape(-1, 8, 8), args.out / "vae_manifold.png",
                              ncols=12, scale=4)
print(f"decoded code space: {manifold}")
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.2))
    points = ax.scatter(codes[:, 0], codes[:, 1], c=y_test, cmap="tab10", s=12, vmin=-0.5,
                        vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel("code 1")
    ax.set_ylabel("code 2")
    ax.set_title("VAE: mean codes of the test digits (no labels used in training)")
    save_figure(args, fig, "vae_latent.png", "latent space")
except ImportError:
    print("latent space picture skipped: it needs matplotlib (pip install 'graphc[plot]')")
draw(args, step, "vae_train_step")
done(args)
