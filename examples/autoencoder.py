"""An autoencoder on the digits: squeeze 64 pixels through a 12-number code and back.

encoder 64 -> 48 (ELU) -> 12, decoder 12 -> 48 (ELU) -> 64 (sigmoid), trained to reproduce
its input (binary cross-entropy per pixel, pixels scaled to [0, 1]) with Adam. No labels are
used: the code is what the network finds worth keeping. Prints the test reconstruction
error against two baselines and writes out/autoencoder_reconstructions.png: test digits in the
odd rows, their reconstructions from 12 numbers right below.

Run:  python examples/autoencoder.py [--quick]
"""

import numpy as np
from common import done, draw, setup

import graphc as gc

args = setup("Autoencoder on digits: 64 -> 12 -> 64 pixels")
F, nn = gc.nn.functional, gc.nn

(x_train, _), (x_test, _) = gc.datasets.digits()
x_train, x_test = x_train / 16, x_test / 16
CODE = 12


class AutoEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 48), nn.ELU(), nn.Linear(48, CODE))
        self.decoder = nn.Sequential(nn.Linear(CODE, 48), nn.ELU(), nn.Linear(48, 64))

    def forward(self, x):  # logits of the reconstructed pixels
        return self.decoder(self.encoder(x))


model = AutoEncoder()
opt = gc.optim.Adam(model.parameters(), lr=3e-3)
step, reconstruct = gc.train.supervised(model, F.binary_cross_entropy_with_logits, opt,
                                        ("N", 64), ("N", 64), "float32", backend=args.backend)
history = gc.train.fit(step, (x_train, x_train), epochs=3 if args.quick else 60,
                       batch_size=32, eval_fn=reconstruct, val_data=(x_test, x_test),
                       verbose=2 if args.quick else 1)
_, logits = reconstruct(x_test, x_test)
recon = 1 / (1 + np.exp(-logits))
mse = float(np.mean((recon - x_test) ** 2))
mean_image = float(np.mean((x_train.mean(0) - x_test) ** 2))
# the best 12-number linear code: projection on the top 12 principal components
centered = x_train - x_train.mean(0)
top = np.linalg.svd(centered, full_matrices=False)[2][:CODE]
pca = (x_test - x_train.mean(0)) @ top.T @ top + x_train.mean(0)
print(f"test reconstruction MSE per pixel: autoencoder {mse:.4f}, PCA with {CODE} components "
      f"{float(np.mean((pca - x_test) ** 2)):.4f}, mean image {mean_image:.4f}")
rows = np.concatenate([np.stack([x_test[i:i + 10], recon[i:i + 10]]) for i in (0, 10)])
grid = gc.plot.image_grid(rows.reshape(-1, 8, 8), args.out / "autoencoder_reconstructions.png",
                          ncols=10, scale=6)
print(f"reconstructions: {grid}")
draw(args, reconstruct, "autoencoder")
done(args)
