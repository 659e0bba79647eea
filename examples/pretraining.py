"""Greedy layer-wise pre-training of a deep sigmoid network (Hinton et al. 2006, Bengio et al.
2007) on the digits, then supervised fine-tuning, against the same network from scratch.

The network is 64 -> 48 -> 32 -> 16 sigmoid units -> 10 classes. Deep stacks of sigmoids are
hard to train from a random start: the gradient shrinks by a factor of at most 1/4 at every
sigmoid on its way down, so the lower layers barely move. Pre-training gives them a useful
start without any label: each layer in turn is trained as a shallow autoencoder (code =
sigmoid(W h + b), reconstruction logits = W' code + b', binary cross-entropy against h) on
the codes of the layers below it, which are frozen with ``Module.freeze()`` — the optimizer is
given every parameter of the stack and skips the frozen ones. Stacked, the three encoders and
their decoders form a 64-48-32-16-32-48-64 autoencoder; its test reconstruction error is
printed next to PCA with 16 components and the mean image.

Then everything is unfrozen (``unfreeze()``), a linear classifier is put on top of the 16
units, and the whole network is fine-tuned with the labels; the same network from a random
start is trained with the same optimizer, batch size and number of epochs. Twice: with all
the training labels, and with only 10 labels per class (pre-training used all the images,
without their labels: semi-supervised learning). Test accuracy after every few epochs shows
how much faster the pre-trained network learns; out/pretraining_curves.png draws it.

Run:  python examples/pretraining.py [--quick] [--backend llvm]
"""

import numpy as np
from common import done, draw, save_figure, setup

import graphc as gc

args = setup("Greedy layer-wise pre-training of a 64-48-32-16 sigmoid network on digits")
F, nn = gc.nn.functional, gc.nn
SIZES = (64, 48, 32, 16)
PRE_EPOCHS = 4 if args.quick else 30
REGIMES = [("all labels", None, 4 if args.quick else 40),  # name, labels per class, epochs
           ("10 labels per class", 10, 15 if args.quick else 100)]

(x_train, y_train), (x_test, y_test) = gc.datasets.digits()
x_train, x_test = x_train / 16, x_test / 16


def encoder() -> nn.Sequential:
    return nn.Sequential(*[nn.Sequential(nn.Linear(a, b), nn.Sigmoid())
                           for a, b in zip(SIZES, SIZES[1:])])


def values(modules) -> list[np.ndarray]:
    return [p.value.copy() for m in modules for p in m.parameters()]


# 1. Greedy pre-training: one shallow autoencoder per layer, the layers below frozen.
stack = encoder().named("encoder")
decoders = [nn.Linear(b, a).named(f"decoder{k + 1}")
            for k, (a, b) in enumerate(zip(SIZES, SIZES[1:]))]
for k, (layer, decoder) in enumerate(zip(stack, decoders)):
    below = stack[:k]
    for m in below:
        m.freeze()
    before = values(below)
    given = [p for m in stack[:k + 1] for p in m.parameters()] + decoder.parameters()
    with gc.Graph(f"pretrain_layer{k + 1}"):
        x = gc.placeholder("x", ("N", 64))
        h = x
        for m in below:  # frozen: no gradient computed through them, no update
            h = m(h)
        loss = F.binary_cross_entropy_with_logits(decoder(layer(h)), h)
        opt = gc.optim.Adam(given, lr=1e-2)  # given the frozen parameters too: it skips them
        step = gc.compile([x], loss, updates=opt.updates(loss), backend=args.backend)
    history = gc.train.fit(step, (x_train,), epochs=PRE_EPOCHS, batch_size=32, verbose=0)
    unchanged = all(np.array_equal(a, b) for a, b in zip(before, values(below)))
    updated = {t.name for t in step.parameters()}  # what the compiled step writes
    trained = sum(p.value.size for p in given if p.name in updated)
    frozen = "layer 1" if k == 1 else f"layers 1-{k}"
    print(f"layer {k + 1} ({SIZES[k]} -> {SIZES[k + 1]}) as an autoencoder: reconstruction "
          f"loss {history['loss'][0]:.4f} -> {history['loss'][-1]:.4f} over {PRE_EPOCHS} "
          f"epochs; trained {trained} of the {sum(p.value.size for p in given)} parameters "
          f"given to the optimizer" + (f"; {frozen} frozen, unchanged: {unchanged}" if k else ""))
    if k == len(stack) - 1:
        draw(args, step, "pretraining_layer3_step")
stack.unfreeze()
pretrained = {k: v.copy() for k, v in stack.state().items()}

# 2. The stacked autoencoder: encode through all three layers, decode back through all three.
with gc.Graph("stacked_autoencoder"):
    x = gc.placeholder("x", ("N", 64))
    r = stack.eval()(x)
    for decoder in reversed(decoders):
        r = gc.sigmoid(decoder(r))  # every decoder was trained to give logits of its input
    reconstruct = gc.compile([x], r, backend=args.backend)
recon = reconstruct(x_test)
mse = float(np.mean((recon - x_test) ** 2))
mean = x_train.mean(0)
top = np.linalg.svd(x_train - mean, full_matrices=False)[2][:SIZES[-1]]
pca = float(np.mean(((x_test - mean) @ top.T @ top + mean - x_test) ** 2))
print(f"stacked autoencoder 64-48-32-16-32-48-64: test reconstruction MSE per pixel "
      f"{mse:.4f} (PCA with 16 components {pca:.4f}, mean image "
      f"{float(np.mean((mean - x_test) ** 2)):.4f})")
rows = np.concatenate([np.stack([x_test[i:i + 10], recon[i:i + 10]]) for i in (0, 10)])
print("reconstructions: " + str(gc.plot.image_grid(
    rows.reshape(-1, 8, 8), args.out / "pretraining_reconstructions.png", ncols=10, scale=6)))

# 3. Fine-tune everything with labels, against the same network from a random start.
curves = {}
for name, per_class, epochs in REGIMES:
    if per_class is None:
        x_lab, y_lab = x_train, y_train
    else:
        rng = np.random.default_rng(0)
        pick = np.concatenate([rng.choice(np.flatnonzero(y_train == d), per_class,
                                          replace=False) for d in range(10)])
        x_lab, y_lab = x_train[pick], y_train[pick]
    accuracy = {}
    for start in ("pre-trained", "from scratch"):
        if start == "pre-trained":
            body = stack.load_state(pretrained)  # every regime starts from the same weights
        else:
            body = encoder()
        model = nn.Sequential(body, nn.Linear(SIZES[-1], 10))
        opt = gc.optim.Adam(model.parameters(), lr=3e-3)
        step, evaluate = gc.train.supervised(model, F.cross_entropy, opt, ("N", 64),
                                             backend=args.backend)
        # the test set is only watched here (nothing is chosen by it): a learning curve
        history = gc.train.fit(step, (x_lab, y_lab), epochs=epochs, batch_size=32, verbose=0,
                               eval_fn=evaluate, val_data=(x_test, y_test))
        curves[f"{start}, {name}"] = history["val_accuracy"]
        accuracy[start] = history["val_accuracy"][-1]
        every = max(1, epochs // 5)
        print(f"{name} ({len(y_lab)}), {start}: test accuracy after epochs "
              f"{', '.join(str(e) for e in range(every, epochs + 1, every))}: "
              + " ".join(f"{a:.3f}" for a in history["val_accuracy"][every - 1::every]))
    print(f"{name} ({len(y_lab)} labelled digits, {epochs} epochs): test accuracy pre-trained "
          f"{accuracy['pre-trained']:.4f}, from scratch {accuracy['from scratch']:.4f}")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, accs in curves.items():
        ax.plot(np.arange(1, len(accs) + 1), accs, label=label,
                linestyle="-" if label.startswith("pre") else "--")
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title("64-48-32-16 sigmoid network: pre-trained vs random start")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(args, fig, "pretraining_curves.png", "curves")
except ImportError:
    print("curves skipped: they need matplotlib (pip install 'graphc[plot]')")
done(args)
