"""Cross-validation plus a small hyper-parameter search, on the digits data.

First, how well does one MLP (64 pixels -> 64 ReLU units -> 10 classes, Adam) generalize?
Stratified k-fold cross-validation on the training set gives a mean accuracy and its spread
over the folds: a better estimate than one validation split. Then a grid search over the
hidden width and the learning rate, each trial scored by cross-validation too (a held-out
split in quick mode); the best setting is retrained on the whole training set and tested once
on the test set, which no choice has seen.

`build(params)` makes a *new* model and its two compiled functions at every call, so every
fold and every trial starts from fresh parameters. The pixels are scaled by 1/16 (no
statistics of the data), so nothing leaks from a validation fold into training.

Run:  python examples/model_selection.py [--quick] [--backend llvm]
"""

from common import done, setup

import graphc as gc

args = setup("Model selection on digits: cross-validation and a grid search")
F, nn = gc.nn.functional, gc.nn

(x_train, y_train), (x_test, y_test) = gc.datasets.digits()
x_train, x_test = x_train / 16, x_test / 16
fit_args = dict(epochs=3 if args.quick else 15, batch_size=32)


def build(params: dict):
    """A fresh MLP and its training step and evaluation function."""
    hidden = params.get("hidden", 64)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    opt = gc.optim.Adam(model.parameters(), lr=params.get("lr", 1e-3))
    return gc.train.supervised(model, F.cross_entropy, opt, ("N", 64), backend=args.backend)


k = 3 if args.quick else 5
cv = gc.train.cross_validate(build, (x_train, y_train), k=k, **fit_args)
print(f"\n{k}-fold cross-validation of a 64-64-10 MLP (best fold first):")
print(cv)
mean, std = cv.mean()["val_accuracy"], cv.std()["val_accuracy"]
print(f"cross-validation: mean val_accuracy {mean:.4f} ± {std:.4f} over {k} folds")

space = {"hidden": [32, 128], "lr": [1e-3, 1e-2]}
scoring = dict(test_size=0.2) if args.quick else dict(k=3)
results = gc.train.search(build, space, (x_train, y_train), **scoring, **fit_args)
how = "a held-out 20%" if args.quick else "3-fold cross-validation"
print(f"\ngrid search over {space}, scored by {how}:")
print(results)
best = results.best_params
print(f"best params: hidden={best['hidden']}, lr={best['lr']} "
      f"(val_accuracy {results['val_accuracy'][0]:.4f})")

gc.manual_seed(0)
step, evaluate = build(best)
gc.train.fit(step, (x_train, y_train), verbose=0, **fit_args)
test = gc.train.evaluate(evaluate, (x_test, y_test))
print(f"test accuracy with the best params: {test['accuracy']:.4f} ({len(y_test)} test digits)")
done(args)
