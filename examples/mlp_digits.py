"""A multi-layer perceptron on the digits data, trained with gc.train.fit.

64 standardized pixels -> 256 ReLU units (dropout 0.2) -> 10 classes, Adam, minibatches of
32. A validation set is split off the training set for early stopping (patience 5: the best
parameters are restored at the end); the test set is used once, at the end. Writes the loss
and accuracy curves (out/mlp_digits_curves.png) and prints the confusion matrix.

Run:  python examples/mlp_digits.py [--quick]
"""

from common import done, setup

import graphc as gc

args = setup("MLP on digits: 64-256-10, ReLU, dropout, Adam, early stopping")
F, nn = gc.nn.functional, gc.nn

(x_train, y_train), (x_test, y_test) = gc.datasets.digits()
(x_fit, y_fit), (x_val, y_val) = gc.datasets.split(x_train, y_train, test_size=0.15)
x_fit, x_val, x_test = gc.datasets.standardize(x_fit, x_val, x_test)

model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 10))
print(model)
opt = gc.optim.Adam(model.parameters(), lr=1e-3)
step, evaluate = gc.train.supervised(model, F.cross_entropy, opt, ("N", 64),
                                     backend=args.backend)
history = gc.train.fit(step, (x_fit, y_fit), epochs=3 if args.quick else 40, batch_size=32,
                       eval_fn=evaluate, val_data=(x_val, y_val), early_stopping=5)
test = gc.train.evaluate(evaluate, (x_test, y_test))
_, scores = evaluate(x_test, y_test)
print(gc.metrics.report(y_test, scores))
print("confusion matrix (rows: true digit, columns: predicted):")
print(gc.metrics.confusion_matrix(y_test, scores))
print(f"MLP test accuracy: {test['accuracy']:.4f} ({len(y_test)} test digits, "
      f"{history.epochs} epochs, best epoch {history.best_epoch})")
print(f"curves: {gc.plot.curves(history, args.out / 'mlp_digits_curves.png', title='MLP')}")
done(args)
