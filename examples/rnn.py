"""Recurrent networks on the adding problem (Hochreiter & Schmidhuber 1997).

Each input is a sequence of T steps with two channels: a random number in [0, 1), and a
marker that is 1 at exactly two steps (one in each half). The target is the sum of the two
marked numbers, so the network must remember a value seen many steps before the end. The
recurrent layers unroll over the static T while the graph is built (each step a scope
t0..t{T-1} in the picture) and are trained by backpropagation through time, i.e. gc.grad.
Guessing the mean scores an MSE of about 0.17; a network that solved the task scores near 0.

Run:  python examples/rnn.py [--quick]
"""

import numpy as np
from common import done, draw, setup

import graphc as gc

args = setup("RNN vs LSTM on the adding problem (sequences of 12 steps)")
F, nn = gc.nn.functional, gc.nn
T, HIDDEN = 12, 24


def adding_problem(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    values = rng.random((n, T)).astype(np.float32)
    marks = np.zeros((n, T), np.float32)
    rows = np.arange(n)
    first, second = rng.integers(0, T // 2, n), rng.integers(T // 2, T, n)
    marks[rows, first] = marks[rows, second] = 1
    return np.stack([values, marks], -1), values[rows, first] + values[rows, second]


class Adder(nn.Module):
    """A recurrent layer read at its last step by a linear layer."""

    def __init__(self, cell: type):
        super().__init__()
        self.rnn = cell(2, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, x):
        _, state = self.rnn(x)  # the final state: h_n (layers, N, hidden), or (h_n, c_n)
        h = state[0] if isinstance(state, tuple) else state
        return gc.reshape(self.head(h[-1]), ("N",))


rng = np.random.default_rng(0)
x_train, y_train = adding_problem(4000, rng)
x_test, y_test = adding_problem(1000, rng)
print(f"predicting the mean: test MSE {np.mean((y_train.mean() - y_test) ** 2):.4f}")
for cell in (nn.RNN, nn.LSTM):
    model = Adder(cell)
    opt = gc.optim.Adam(model.parameters(), lr=3e-3, clip_norm=1.0)
    step, evaluate = gc.train.supervised(model, F.mse_loss, opt, ("N", T, 2), y_dtype="float32",
                                         backend=args.backend)
    history = gc.train.fit(step, (x_train, y_train), epochs=2 if args.quick else 25,
                           batch_size=50, verbose=0)
    mse, pred = evaluate(x_test, y_test)
    close = float(np.mean(np.abs(pred - y_test) < 0.1))
    print(f"{cell.__name__:>4} ({model.num_parameters()} parameters): test MSE {float(mse):.4f}, "
          f"{close:.0%} of test sums within 0.1 (train loss {history['loss'][0]:.3f} -> "
          f"{history['loss'][-1]:.4f} in {history.epochs} epochs, "
          f"{sum(history['time']):.1f}s)")
draw(args, evaluate, "rnn_adding")
done(args)
