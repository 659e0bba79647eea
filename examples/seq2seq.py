"""Sequence to sequence with attention: a GRU encoder-decoder learns to sort digits.

Each example is a random sequence of S digits; the answer is the same digits in ascending
order. Sorting needs attention by *content*: to write its next digit, the decoder must find
where in the input the next-smallest digit sits, wherever that is.

The model (Luong et al. 2015, "dot" attention): digit embeddings, a GRU encoder over the
input, a GRU decoder that starts from the encoder's final state and reads the previous output
digit (a start token first). At every output step the decoder's state scores each encoder
state by a dot product; the softmax of the scores (the attention weights) mixes the encoder
states into a context vector, and tanh(W [context; state]) is read out as the next digit's
logits. Training feeds the true previous digit (teacher forcing), so the decoder runs over
the whole target at once; at evaluation the decoder runs one step at a time on its own
previous guess (greedy decoding), unrolled in one compiled graph. The recurrent layers are
nn.GRU throughout: run over one step with the state passed in, a GRU is its own cell.

Trained with gc.train.fit (Adam, a learning rate decaying tenfold over the run), it reports
the greedy test accuracy per sequence (every digit right) and per digit, against a baseline
that writes each output position's most common digit; how much of the attention falls where
the written digit sits in the input; a few test examples; and draws the attention weights of
those examples as heat maps (out/seq2seq_attention.png: in each row, the output step's
weight over the input positions). Full mode sorts all 1000 test sequences right; quick
mode (3 short epochs) about two thirds of them.

Run:  python examples/seq2seq.py [--quick] [--backend llvm]
"""

import numpy as np
from common import done, draw, setup

import graphc as gc

args = setup("Seq2seq with attention: a GRU encoder-decoder sorts 6 digits")
F, nn = gc.nn.functional, gc.nn
S, DIGITS, EMBED, HIDDEN = 6, 10, 32, 64
START = DIGITS  # the decoder's first input: a token no digit uses
EPOCHS, TRAIN, BATCH = (3, 3000, 64) if args.quick else (20, 8000, 64)


def sorting_task(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n random digit sequences and the same digits sorted."""
    src = rng.integers(0, DIGITS, (n, S))
    return src, np.sort(src, axis=1)


def text(digits: np.ndarray) -> str:
    """A digit sequence as a string, for printing."""
    return "".join(map(str, digits))


def teacher_inputs(tgt: np.ndarray) -> np.ndarray:
    """What the decoder reads in training: the start token, then the true digits shifted."""
    return np.concatenate([np.full((len(tgt), 1), START), tgt[:, :-1]], axis=1)


class Seq2Seq(nn.Module):
    """src (N, S) digits -> logits (N, S, DIGITS) for each output digit."""

    def __init__(self) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(DIGITS, EMBED)
        self.tgt_embed = nn.Embedding(DIGITS + 1, EMBED)  # + the start token
        self.encoder = nn.GRU(EMBED, HIDDEN, batch_first=True)
        self.decoder = nn.GRU(EMBED, HIDDEN, batch_first=True)
        self.combine = nn.Linear(2 * HIDDEN, HIDDEN)
        self.out = nn.Linear(HIDDEN, DIGITS)

    def encode(self, src):
        """The encoder states (N, S, H) and its final state (1, N, H)."""
        return self.encoder(self.src_embed(src))

    def attend(self, states, memory):
        """Luong dot attention of decoder states (N, T, H) over encoder states (N, S, H):
        the logits (N, T, DIGITS) and the attention weights (N, T, S)."""
        weights = gc.softmax(states @ gc.transpose(memory, (0, 2, 1)), axis=-1)
        context = weights @ memory
        mixed = gc.tanh(self.combine(gc.concat([context, states], axis=-1)))
        return self.out(mixed), weights

    def forward(self, src, tgt_in):
        """Teacher forcing: the decoder reads the true previous digits, all steps at once."""
        memory, h = self.encode(src)
        states, _ = self.decoder(self.tgt_embed(tgt_in), h)
        return self.attend(states, memory)[0]

    def greedy(self, src):
        """Decode one step at a time, each step reading the previous step's argmax: the
        predicted digits (N, S) and the attention weights (N, S, S)."""
        memory, h = self.encode(src)
        token = src[:, :1] * 0 + START  # (N, 1): every sequence starts from the start token
        tokens, weights = [], []
        for t in range(S):
            with gc.name_scope(f"decode{t}"):
                state, h = self.decoder(self.tgt_embed(token), h)  # a GRU run over one step
                logits, w = self.attend(state, memory)
                token = gc.argmax(logits, axis=-1)  # (N, 1)
                tokens.append(token)
                weights.append(w)
        return gc.concat(tokens, axis=1), gc.concat(weights, axis=1)


def sequence_loss(logits, tgt):
    """Mean cross-entropy per output digit."""
    return F.cross_entropy(gc.reshape(logits, (-1, DIGITS)), gc.reshape(tgt, (-1,)))


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
        src = gc.placeholder("src", ("N", S), "int64")
        tgt_in = gc.placeholder("tgt_in", ("N", S), "int64")
        tgt = gc.placeholder("tgt", ("N", S), "int64")
        loss = sequence_loss(model(src, tgt_in), tgt)
        functions.append(gc.compile([src, tgt_in, tgt], loss,
                                    updates=opt.updates(loss) if training else None,
                                    backend=args.backend))
step, evaluate = functions
with gc.Graph("greedy"):
    src = gc.placeholder("src", ("N", S), "int64")
    decode = gc.compile([src], list(model.greedy(src)), backend=args.backend)

history = gc.train.fit(step, (src_train, teacher_inputs(tgt_train), tgt_train), epochs=EPOCHS,
                       batch_size=BATCH, eval_fn=evaluate,
                       val_data=(src_val, teacher_inputs(tgt_val), tgt_val), verbose=2)

pred, attention = decode(src_test)
token_acc = float(np.mean(pred == tgt_test))
seq_acc = float(np.mean(np.all(pred == tgt_test, axis=1)))
majority = np.array([np.bincount(tgt_train[:, j], minlength=DIGITS).argmax() for j in range(S)])
print(f"baseline (each position's most common digit): token accuracy "
      f"{np.mean(tgt_test == majority):.4f}")
print(f"test sequence accuracy {seq_acc:.4f}, token accuracy {token_acc:.4f} "
      f"({len(src_test)} test sequences, greedy decoding)")
# Where the attention looks: the share of each output step's weight that falls on the input
# positions holding the digit it wrote, against the share that uniform weights would give.
hits = src_test[:, None, :] == pred[:, :, None]  # (N, output step, input position)
focus = float(np.mean(np.sum(attention * hits, axis=-1)))
print(f"attention on input positions holding the written digit: {focus:.2f} of the weight "
      f"(uniform weights: {np.mean(hits):.2f})")
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
        ax.imshow(attention[i], cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(S), [str(d) for d in src_test[i]])
        ax.set_yticks(range(S), [str(d) for d in pred[i]])
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
