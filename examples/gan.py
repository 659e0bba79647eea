"""A generative adversarial network on the digits (Goodfellow et al. 2014).

A generator maps 16 random numbers to an 8x8 image; a discriminator scores images as real
or generated. They are trained in turn, each by its own compiled step: the discriminator's
step updates only its parameters (real digits -> 1, generated -> 0), the generator's step only
its own (make the discriminator say 1: the non-saturating loss). Both steps share the same
parameters through the modules. Writes out/gan_samples.png and measures how digit-like the
samples are (distance to the nearest real digit) and whether they cover all ten digits.

Run:  python examples/gan.py [--quick]
"""

import numpy as np
from common import done, draw, setup

import graphc as gc

args = setup("GAN on digits: an MLP generator against an MLP discriminator")
F, nn = gc.nn.functional, gc.nn
NOISE = 16

(x_train, y_train), _ = gc.datasets.digits()
x_train = x_train / 16

G = nn.Sequential(nn.Linear(NOISE, 128), nn.LeakyReLU(0.2), nn.Linear(128, 64),
                  nn.Sigmoid()).named("generator")
D = nn.Sequential(nn.Linear(64, 128), nn.LeakyReLU(0.2), nn.Linear(128, 1)).named("discriminator")
opt_d = gc.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
opt_g = gc.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))


def bce(logits, target: float):
    return F.binary_cross_entropy_with_logits(logits, target)


with gc.Graph("discriminator_step"):
    real = gc.placeholder("real", ("N", 64))
    z = gc.placeholder("z", ("M", NOISE))
    loss_d = bce(D(real), 1.0) + bce(D(G(z)), 0.0)
    d_step = gc.compile([real, z], loss_d, updates=opt_d.updates(loss_d), backend=args.backend)
with gc.Graph("generator_step"):
    z = gc.placeholder("z", ("M", NOISE))
    loss_g = bce(D(G(z)), 1.0)
    g_step = gc.compile([z], loss_g, updates=opt_g.updates(loss_g), backend=args.backend)
with gc.Graph("sample"):
    z = gc.placeholder("z", ("M", NOISE))
    sample = gc.compile([z], G(z), backend=args.backend)

rng = np.random.default_rng(0)
epochs, batch = (5 if args.quick else 150), 64
for epoch in range(1, epochs + 1):
    for (real_batch,) in gc.train.batches((x_train,), batch, shuffle=True, rng=rng):
        noise = rng.standard_normal((batch, NOISE)).astype(np.float32)
        ld = d_step(real_batch, noise)
        lg = g_step(rng.standard_normal((batch, NOISE)).astype(np.float32))
    if epoch % max(1, epochs // 6) == 0 or epoch == epochs:
        print(f"epoch {epoch:3d}  discriminator loss {float(ld):.3f}  generator loss "
              f"{float(lg):.3f}")

samples = sample(rng.standard_normal((64, NOISE)).astype(np.float32))
print(f"samples: {gc.plot.image_grid(samples.reshape(-1, 8, 8), args.out / 'gan_samples.png')}")

# How digit-like are the samples? Distance to the nearest training digit, next to real test
# digits (what a new real digit scores) and to digits with their pixels shuffled (the same
# pixel values without the shapes). A digits classifier checks that all ten digits appear.
many = sample(rng.standard_normal((1000, NOISE)).astype(np.float32))
x_test = gc.datasets.digits()[1][0] / 16
shuffled = rng.permuted(x_test, axis=1)
train_sq = (x_train ** 2).sum(1)


def nearest(images) -> float:
    d2 = (images ** 2).sum(1)[:, None] - 2 * images @ x_train.T + train_sq[None, :]
    return float(np.sqrt(np.maximum(d2.min(1), 0)).mean())


print(f"distance to the nearest training digit: GAN samples {nearest(many):.2f}, real test "
      f"digits {nearest(x_test):.2f}, pixel-shuffled digits {nearest(shuffled):.2f}")
judge = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
step, classify = gc.train.supervised(judge, F.cross_entropy, gc.optim.Adam(judge.parameters()),
                                     ("N", 64), backend=args.backend)
gc.train.fit(step, (x_train, y_train), epochs=20, batch_size=32, verbose=0)
_, logits = classify(many, np.zeros(len(many), np.int64))
counts = np.bincount(logits.argmax(1), minlength=10)
print(f"a digits classifier reads the 1000 samples as digits 0..9: {counts.tolist()} "
      f"({(counts >= 20).sum()} of 10 digits at least 2% each)")
draw(args, g_step, "gan_generator_step")
done(args)
