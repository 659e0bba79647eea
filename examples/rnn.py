"""Recurrent networks on the adding problem (Hochreiter & Schmidhuber 1997), with sequences
of different lengths.

Each input is a sequence of 6 to 12 steps with two channels: a random number in [0, 1), and a
marker that is 1 at exactly two steps (one in each half of that sequence). The target is the
sum of the two marked numbers, so the network must remember a value seen many steps before
the end. Sequences are padded to the longest (the padding holds random numbers too, and no
marker) and each one's length is passed as ``lengths=``: the recurrent layer stops updating a
sequence's state after its own last step, so ``h_n`` is the state there and the padding is
never seen (PyTorch's packed sequences).

The recurrent layers loop with ``gc.scan``: the cell is traced once, the sequence length is
symbolic (placeholder ``("N", "T", 2)``), and backpropagation through time is ``gc.grad`` (a
reverse loop). The same compiled evaluation function then reads test sets of 12 and of 24
steps (twice as long as any training sequence). Guessing the mean scores an MSE of about
0.17; a network that solved the task scores near 0.

Run:  python examples/rnn.py [--quick] [--backend llvm]
"""

import numpy as np
from common import done, draw, setup

import graphc as gc

args = setup("RNN vs LSTM on the adding problem (sequences of 6 to 12 steps)")
F, nn = gc.nn.functional, gc.nn
T_MIN, T_MAX, HIDDEN = 6, 12, 24


def adding_problem(n: int, rng: np.random.Generator, t_min: int = T_MIN,
                   t_max: int = T_MAX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n padded sequences (n, t_max, 2), their lengths (n,) and their targets (n,)."""
    lengths = rng.integers(t_min, t_max + 1, n)
    values = rng.random((n, t_max)).astype(np.float32)
    marks = np.zeros((n, t_max), np.float32)
    rows, half = np.arange(n), lengths // 2
    first = (rng.random(n) * half).astype(int)  # in the first half of each sequence
    second = half + (rng.random(n) * (lengths - half)).astype(int)  # in its second half
    marks[rows, first] = marks[rows, second] = 1
    target = values[rows, first] + values[rows, second]
    return np.stack([values, marks], -1), lengths, target


class Adder(nn.Module):
    """A recurrent layer read at each sequence's own last step by a linear layer."""

    def __init__(self, cell: type):
        super().__init__()
        self.rnn = cell(2, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, x, lengths):
        _, state = self.rnn(x, lengths=lengths)  # h_n (layers, N, hidden), or (h_n, c_n)
        h = state[0] if isinstance(state, tuple) else state
        return gc.reshape(self.head(h[-1]), ("N",))


def compile_pair(model: Adder, opt) -> tuple[gc.Function, gc.Function]:
    """The training step and the evaluation function, both for any sequence length T."""
    functions = []
    for training in (True, False):
        model.train(training)
        with gc.Graph("train_step" if training else "evaluate"):
            x = gc.placeholder("x", ("N", "T", 2))
            lengths = gc.placeholder("lengths", ("N",), "int64")
            y = gc.placeholder("y", ("N",))
            pred = model(x, lengths)
            loss = F.mse_loss(pred, y)
            functions.append(gc.compile([x, lengths, y], [loss, pred],
                                        updates=opt.updates(loss) if training else None,
                                        backend=args.backend))
    return functions[0], functions[1]


rng = np.random.default_rng(0)
x_train, len_train, y_train = adding_problem(4000, rng)
x_test, len_test, y_test = adding_problem(1000, rng)
x_long, len_long, y_long = adding_problem(1000, rng, 2 * T_MAX, 2 * T_MAX)
print(f"predicting the mean: test MSE {np.mean((y_train.mean() - y_test) ** 2):.4f}")
for cell in (nn.RNN, nn.LSTM):
    model = Adder(cell)
    opt = gc.optim.Adam(model.parameters(), lr=3e-3, clip_norm=1.0)
    step, evaluate = compile_pair(model, opt)
    history = gc.train.fit(step, (x_train, len_train, y_train),
                           epochs=2 if args.quick else 25, batch_size=50, verbose=0)
    mse, pred = evaluate(x_test, len_test, y_test)
    close = float(np.mean(np.abs(pred - y_test) < 0.1))
    print(f"{cell.__name__:>4} ({model.num_parameters()} parameters): test MSE {float(mse):.4f}, "
          f"{close:.0%} of test sums within 0.1 (train loss {history['loss'][0]:.3f} -> "
          f"{history['loss'][-1]:.4f} in {history.epochs} epochs, "
          f"{sum(history['time']):.1f}s)")
    long_mse, _ = evaluate(x_long, len_long, y_long)  # the same function, T = 24
    print(f"{cell.__name__:>4} on {2 * T_MAX}-step sequences (the same compiled function): "
          f"test MSE {float(long_mse):.4f}")
draw(args, evaluate, "rnn_adding")
done(args)
