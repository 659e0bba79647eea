"""Transfer learning on the digits: reuse what a CNN learned on 0-4 to learn 5-9 from a few
examples, with the reused layers frozen.

A small CNN — stage 1 (conv 3x3, 16 channels, batch norm, ReLU, max-pool), stage 2 (the same
with 32 channels) and a linear classifier — is trained on all the digits 0-4. Then a new task:
the digits 5-9, from a small labelled set (20 digits per class; 10 in quick mode). The trained
stages are frozen with ``Module.freeze()``: their parameters get no update (no gradient is
even computed for them), and their batch norms stay in evaluation mode — they use, and keep,
the running statistics of 0-4 — even inside a model put in training mode. A new head is put
on top and only the head is trained, at two depths:

* stages 1 and 2 frozen, a new linear head (645 trainable numbers);
* stage 1 frozen, a new stage 2 and linear head.

They are compared with the same CNN trained from scratch on the small set, and with the linear
head alone on raw pixels, all with the same optimizer and number of steps, tested on every
5-9 digit of the test set; in full mode the small set is drawn 3 times and the accuracies
averaged (one draw's accuracy moves by a few points with the draw).

What it shows, on these 8x8 digits: the early layers transfer and the late ones do not. With
stage 1 frozen the new head does far better than on raw pixels, about as well as the whole
CNN trained from scratch — which learns 5-9 from few examples remarkably well here. Stage 2
specialized in telling 0-4 apart (Yosinski et al. 2014: later features are more specific to
their task): a linear head on it does little better than on raw pixels.

The script checks what freezing promises: the frozen weights are bit-identical before and
after all the fine-tuning, their batch-norm running statistics too, and the compiled
fine-tuning step updates only the new head's parameters and the optimizer's state for them.

Run:  python examples/transfer.py [--quick] [--backend llvm]
"""

import numpy as np
from common import done, draw, setup

import graphc as gc

args = setup("Transfer learning on digits: a CNN trained on 0-4, frozen, new heads for 5-9")
F, nn = gc.nn.functional, gc.nn
PER_CLASS = 10 if args.quick else 20
FINE_EPOCHS = 15 if args.quick else 40
DRAWS = 1 if args.quick else 3

(x_train, y_train), (x_test, y_test) = gc.datasets.digits()
x_train, x_test = (x_train / 16).reshape(-1, 1, 8, 8), (x_test / 16).reshape(-1, 1, 8, 8)
low_train, low_test = y_train < 5, y_test < 5
x_a, y_a = x_train[low_train], y_train[low_train]  # task A: the digits 0-4, all of them
xa_test, ya_test = x_test[low_test], y_test[low_test]
xb_test, yb_test = x_test[~low_test], y_test[~low_test] - 5  # task B: 5-9 as classes 0-4


def stage(c_in: int, c_out: int, name: str) -> nn.Sequential:
    """conv 3x3 - batch norm - ReLU - max-pool 2: halves the image, c_out channels."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.MaxPool2d(2)).named(name)


def classifier() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(32 * 2 * 2, 5)).named("classifier")


def train(model, data, epochs: int, batch_size: int, verbose: int = 0):
    """Adam on `data` (what is not frozen); returns the step, evaluation function and the
    last epoch's training loss."""
    opt = gc.optim.Adam(model.parameters(), lr=3e-3)
    step, evaluate = gc.train.supervised(model, F.cross_entropy, opt, ("N", 1, 8, 8),
                                         backend=args.backend)
    history = gc.train.fit(step, data, epochs=epochs, batch_size=batch_size, verbose=verbose)
    return step, evaluate, history["loss"][-1]


def accuracy(evaluate, x, y) -> float:
    return gc.train.evaluate(evaluate, (x, y))["accuracy"]


def trainable(model) -> int:
    return sum(p.value.size for p in model.parameters() if p.requires_grad)


# 1. Learn task A.
print(f"task A: digits 0-4, {len(y_a)} training digits; task B: digits 5-9, {PER_CLASS} "
      f"training digits per class, {len(yb_test)} test digits")
stage1, stage2 = stage(1, 16, "stage1"), stage(16, 32, "stage2")
model_a = nn.Sequential(stage1, stage2, classifier())
print(f"\ntraining on 0-4 ({model_a.num_parameters()} parameters):")
_, evaluate_a, _ = train(model_a, (x_a, y_a), epochs=3 if args.quick else 10, batch_size=32,
                         verbose=2)
print(f"task A (0-4) test accuracy: {accuracy(evaluate_a, xa_test, ya_test):.4f}")

# 2. Freeze both stages: from here on they are fixed feature extractors.
stage1.freeze()
stage2.freeze()


def frozen_state() -> tuple[dict, dict]:
    """Copies of the frozen stages' weights and of their buffers (batch-norm statistics)."""
    weights = {p.name: p.value.copy() for m in (stage1, stage2) for p in m.parameters()}
    buffers = {b.name: b.value.copy() for m in (stage1, stage2) for b in m.buffers()}
    return weights, buffers


weights_before, buffers_before = frozen_state()
MODELS = {  # what is trained on task B's few digits; `stage1` and `stage2` stay frozen
    "stages 1-2 frozen + new head": lambda: nn.Sequential(stage1, stage2, classifier()),
    "stage 1 frozen + new stage 2 and head": lambda: nn.Sequential(
        stage1, stage(16, 32, "new_stage2"), classifier()),
    "from scratch": lambda: nn.Sequential(stage(1, 16, "stage1"), stage(16, 32, "stage2"),
                                          classifier()),
    "linear head on pixels": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 5)),
}
print()
accuracies = np.zeros((DRAWS, len(MODELS)))
for draw_index in range(DRAWS):
    rng = np.random.default_rng(draw_index)
    few = np.concatenate([rng.choice(np.flatnonzero(y_train == d), PER_CLASS, replace=False)
                          for d in range(5, 10)])
    x_b, y_b = x_train[few], y_train[few] - 5  # task B's small training set
    for j, (name, build) in enumerate(MODELS.items()):
        model = build()
        step, evaluate, loss = train(model, (x_b, y_b), FINE_EPOCHS, batch_size=10)
        accuracies[draw_index, j] = accuracy(evaluate, xb_test, yb_test)
        print(f"draw {draw_index + 1}, {name} ({trainable(model)} of {model.num_parameters()} "
              f"parameters trainable): training loss {loss:.4f}, test accuracy "
              f"{accuracies[draw_index, j]:.4f}")
        if draw_index == 0 and j == 0:
            updated = [p.name for p in step.parameters()]
            head = [n for n in updated if not n.startswith("adam.")]
            print(f"  its fine-tuning step updates {len(updated)} tensors: the new head's "
                  f"{', '.join(head)} and Adam's state for them")
            draw(args, step, "transfer_finetune_step")

weights_after, buffers_after = frozen_state()
same_weights = all(np.array_equal(weights_after[k], v) for k, v in weights_before.items())
same_buffers = all(np.array_equal(buffers_after[k], v) for k, v in buffers_before.items())
print(f"\nfrozen weights unchanged: {same_weights} ({len(weights_before)} tensors)")
print(f"frozen batch-norm running statistics unchanged: {same_buffers} "
      f"({', '.join(sorted({k.split('.')[-1] for k in buffers_before}))})")
mean = accuracies.mean(0)
print(f"task B (5-9) test accuracy from {5 * PER_CLASS} training digits"
      f"{f', mean of {DRAWS} draws' if DRAWS > 1 else ''}: "
      + ", ".join(f"{name} {a:.4f}" for name, a in zip(MODELS, mean)))
done(args)
