"""Sequence to sequence with attention: a GRU encoder-decoder learns to sort digits, on
sequences of different lengths.

Each example is a random sequence of 3 to 7 digits; the answer is the same digits in
ascending order. Sorting needs attention by *content*: to write its next digit, the decoder
must find where in the input the next-smallest digit sits, wherever that is.

The model (Luong et al. 2015, "dot" attention): digit embeddings, a GRU encoder over the
input, a GRU decoder that starts from the encoder's final state and reads the previous output
digit (a start token first). At every output step the decoder's state scores each encoder
state by a dot product; the softmax of the scores (the attention weights) mixes the encoder
states into a context vector, and tanh(W [context; state]) is read out as the next digit's
logits. Training feeds the true previous digit (teacher forcing), so the decoder runs over
the whole target at once; at evaluation the decoder runs one step at a time on its own
previous guess (greedy decoding) — itself a ``gc.scan`` whose body calls the decoder GRU.

Variable lengths: sequences are padded with a PAD token to the longest of their batch; the
graph derives each sequence's length from the padding and hands it to both GRUs as
``lengths=`` (their states stop at each sequence's own end, PyTorch's packed sequences),
attention never looks at padded positions, and the loss counts real digits only. Every
length is symbolic (``("N", "S")``): training runs on batches padded to 7, while the one
compiled greedy decoder reads the test set grouped by length, each group at its own S, with
no padding at all.

Trained with gc.train.fit (Adam, a learning rate decaying tenfold over the run), it reports
the greedy test accuracy per sequence (every digit right) and per digit, against a baseline
that writes each output position's most common digit; how much of the attention falls where
the written digit sits in the input; a few test examples; and draws the attention weights of
those examples as heat maps (out/seq2seq_attention.png: in each row, the output step's
weight over the input positions).

Run:  python examples/seq2seq.py [--quick] [--backend llvm]
"""

import numpy as np
from common import done, draw, setup

import graphc as gc

args = setup("Seq2seq with attention: a GRU encoder-decoder sorts 3 to 7 digits")
F, nn = gc.nn.functional, gc.nn
S_MIN, S_MAX, DIGITS, EMBED, HIDDEN = 3, 7, 10, 32, 64
START = PAD = DIGITS  # a token no digit uses: the decoder's first input, and the padding
EPOCHS, TRAIN, BATCH = (3, 3000, 64) if args.quick else (20, 8000, 64)


def sorting_task(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n random digit sequences of S_MIN..S_MAX digits and the same digits sorted, padded
    with PAD to (n, S_MAX)."""
    lengths = rng.integers(S_MIN, S_MAX + 1, n)
    src = rng.integers(0, DIGITS, (n, S_MAX))
    src[np.arange(S_MAX) >= lengths[:, None]] = PAD
    return src, np.sort(src, axis=1)  # PAD sorts last: the padding stays where it was


def text(digits: np.ndarray) -> str:
    """A digit sequence as a string (padding left out), for printing."""
    return "".join(str(d) for d in digits if d != PAD)


def teacher_inputs(tgt: np.ndarray) -> np.ndarray:
    """What the decoder reads in training: the start token, then the true digits shifted."""
    return np.concatenate([np.full((len(tgt), 1), START), tgt[:, :-1]], axis=1)


class Seq2Seq(nn.Module):
    """src (N, S) digits -> logits (N, S, DIGITS) for each output digit."""

    def __init__(self) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(DIGITS + 1, EMBED)  # + PAD
        self.tgt_embed = nn.Embedding(DIGITS + 1, EMBED)  # + the start token
        self.encoder = nn.GRU(EMBED, HIDDEN, batch_first=True)
        self.decoder = nn.GRU(EMBED, HIDDEN, batch_first=True)
        self.combine = nn.Linear(2 * HIDDEN, HIDDEN)
        self.out = nn.Linear(HIDDEN, DIGITS)

    def encode(self, src):
        """The encoder states (N, S, H) (zero past each end), its final state (1, N, H) at
        each sequence's own last digit, the mask of real digits (N, S) and the lengths."""
        real = gc.not_equal(src, PAD)
        lengths = gc.sum(real, axis=1)  # int64 (N,)
        memory, h = self.encoder(self.src_embed(src), lengths=lengths)
        return memory, h, real, lengths

    def attend(self, states, memory, real):
        """Luong dot attention of decoder states (N, T, H) over encoder states (N, S, H),
        padded positions left out: the logits (N, T, DIGITS) and the weights (N, T, S)."""
        scores = states @ gc.transpose(memory, (0, 2, 1))
        scores = gc.where(real[:, None, :], scores, -1e9)
        weights = gc.softmax(scores, axis=-1)
        context = weights @ memory
        mixed = gc.tanh(self.combine(gc.concat([context, states], axis=-1)))
        return self.out(mixed), weights

    def forward(self, src, tgt_in):
        """Teacher forcing: the decoder reads the true previous digits, all steps at once."""
        memory, h, real, lengths = self.encode(src)
        states, _ = self.decoder(self.tgt_embed(tgt_in), h, lengths=lengths)
        return self.attend(states, memory, real)[0]

    def greedy(self, src):
        """Decode one step at a time, each step reading the previous step's argmax, as a loop
        of S steps (S symbolic): the predicted digits (N, S) and the attention (N, S, S)."""
        memory, h, real, _ = self.encode(src)

        def step(carry, _):
            h, token = carry
            state, h = self.decoder(self.tgt_embed(token[:, None]), h)  # a GRU over one step
            logits, w = self.attend(state, memory, real)
            token = gc.argmax(logits[:, 0, :], axis=-1)  # (N,)
            return (h, token), (token, w[:, 0, :])

        start = src[:, 0] * 0 + START  # (N,): every sequence starts from the start token
        _, (tokens, weights) = gc.scan(step, (h, start), length=src.shape[1])
        return gc.transpose(tokens, (1, 0)), gc.transpose(weights, (1, 0, 2))


def sequence_loss(logits, tgt):
    """Mean cross-entropy per real (not padded) output digit."""
    real = gc.not_equal(tgt, PAD).astype(logits.dtype)
    logp = gc.log_softmax(logits, axis=-1)
    picked = gc.sum(logp * gc.one_hot(gc.minimum(tgt, DIGITS - 1), DIGITS), axis=-1)
    return -gc.sum(picked * real) / gc.sum(real)


rng = np.random.default_rng(0)
src_test, tgt_test = sorting_task(1000, rng)  # drawn first: the same in quick and full mode
src_val, tgt_val = sorting_task(500, rng)
src_train, tgt_train = sorting_task(TRAIN, rng)

model = Seq2Seq()
print(f"{model.num_parameters()} parameters")
steps = EPOCHS * -(-TRAIN // BATCH)
# the rate decays tenfold over the run: fast progress first, a steady finish
opt = gc.optim.Adam(model.parameters(), clip_norm=1.0,
                    lr=gc.optim.schedules.exponential(2e-3, 0.1 ** (1 / steps)))
functions = []
for training in (True, False):
    model.train(training)
    with gc.Graph("train_step" if training else "evaluate"):
        src = gc.placeholder("src", ("N", "S"), "int64")
        tgt_in = gc.placeholder("tgt_in", ("N", "S"), "int64")
        tgt = gc.placeholder("tgt", ("N", "S"), "int64")
        loss = sequence_loss(model(src, tgt_in), tgt)
        functions.append(gc.compile([src, tgt_in, tgt], loss,
                                    updates=opt.updates(loss) if training else None,
                                    backend=args.backend))
step, evaluate = functions
with gc.Graph("greedy"):
    src = gc.placeholder("src", ("N", "S"), "int64")
    decode = gc.compile([src], list(model.greedy(src)), backend=args.backend)

history = gc.train.fit(step, (src_train, teacher_inputs(tgt_train), tgt_train), epochs=EPOCHS,
                       batch_size=BATCH, eval_fn=evaluate,
                       val_data=(src_val, teacher_inputs(tgt_val), tgt_val), verbose=2)

# Greedy decoding of the test set grouped by length: one compiled function, each group at its
# own S (no padding), the results put back in the padded layout.
lengths = np.sum(src_test != PAD, axis=1)
pred = np.full_like(tgt_test, PAD)
attention = np.zeros((len(src_test), S_MAX, S_MAX))
for n in np.unique(lengths):
    rows = np.flatnonzero(lengths == n)
    got, weights = decode(src_test[rows, :n])
    pred[rows, :n], attention[rows, :n, :n] = got, weights
real = tgt_test != PAD
token_acc = float(np.sum((pred == tgt_test) & real) / np.sum(real))
seq_acc = float(np.mean(np.all(pred == tgt_test, axis=1)))
majority = np.array([np.bincount(tgt_train[:, j][tgt_train[:, j] != PAD],
                                 minlength=DIGITS).argmax() for j in range(S_MAX)])
print(f"baseline (each position's most common digit): token accuracy "
      f"{np.sum((tgt_test == majority) & real) / np.sum(real):.4f}")
print(f"test sequence accuracy {seq_acc:.4f}, token accuracy {token_acc:.4f} "
      f"({len(src_test)} test sequences of {S_MIN} to {S_MAX} digits, greedy decoding by one "
      f"compiled function for {len(np.unique(lengths))} lengths)")
# Where the attention looks: the share of each output step's weight that falls on the input
# positions holding the digit it wrote, against the share that uniform weights over the
# sequence's real digits would give.
hits = (src_test[:, None, :] == pred[:, :, None]) & real[:, :, None]  # (N, output, input)
focus = np.sum(attention * hits, axis=-1)[real]
uniform = (np.sum(hits, axis=-1) / lengths[:, None])[real]
print(f"attention on input positions holding the written digit: {np.mean(focus):.2f} of the "
      f"weight (uniform weights: {np.mean(uniform):.2f})")
wrong = np.flatnonzero(np.any(pred != tgt_test, axis=1))
shown = [0, 1, 2, 3] + [int(i) for i in wrong[wrong > 3][:1]]
print("examples (input -> greedy output):")
for i in shown:
    print(f"  {text(src_test[i])} -> {text(pred[i])}"
          + (f"  (wrong: sorted is {text(tgt_test[i])})" if i in wrong else ""))
path = args.out / "seq2seq_attention.png"
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(shown), figsize=(3 * len(shown), 3.6), squeeze=False)
    for ax, i in zip(axes[0], shown):
        n = lengths[i]
        ax.imshow(attention[i, :n, :n], cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(n), [str(d) for d in src_test[i, :n]])
        ax.set_yticks(range(n), [str(d) for d in pred[i, :n]])
        ax.set_xlabel("input digit")
        ax.set_ylabel("output digit")
        ax.set_title(f"test example {i}" + (" (wrong)" if i in wrong else ""), fontsize=9)
    fig.suptitle("attention weights (row: output step, column: input position)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
except ImportError:  # no matplotlib: the maps as a grayscale grid, no labels
    gc.plot.image_grid(attention[shown], path, ncols=len(shown), scale=16)
print(f"attention maps: {path}")
draw(args, decode, "seq2seq_greedy")
done(args)
