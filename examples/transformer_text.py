"""A small Transformer language model, trained character by character on Python's own
documentation, with pictures of what its attention heads look at.

The text is the Python Language Reference's help topics (``pydoc_data.topics``: the pages
``help("if")`` shows), which ship with every CPython: no download. The last 10% is held out.
The model (Vaswani et al. 2017, "pre-LN" layers): embedding + sinusoidal positions, two
``nn.TransformerEncoderLayer`` with 4 heads each, a causal mask (position t sees only
positions 0..t, so each position predicts the next character), a final layer norm and a
linear read-out; Adam. It reports the held-out perplexity (exp of the mean cross-entropy per
character; lower is better) against counting baselines, samples text from a prompt, and
draws the attention weights of every head on a line of the Zen of Python
(out/transformer_attention.png).

Run:  python examples/transformer_text.py [--quick] [--backend llvm]
"""

import codecs
import contextlib
import io
import math
import pydoc_data.topics
import string

import numpy as np
from common import done, draw, setup

import graphc as gc

with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
    import this

args = setup("Character-level Transformer on Python's help topics (causal self-attention)")
F, nn = gc.nn.functional, gc.nn
D_MODEL, HEADS, FF = 64, 4, 128
# quick mode: one layer over 32 characters (compiling the step is most of its time)
T, LAYERS, BATCH, STEPS = (32, 1, 16, 200) if args.quick else (64, 2, 32, 2000)

# -- the text: printable ASCII, spaces runs kept (indentation is part of the language) ------
text = "\n\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
alphabet = sorted(set(string.printable) - set("\t\r\x0b\x0c"))
text = "".join(c for c in text if c in alphabet)
index = {c: i for i, c in enumerate(alphabet)}
ids = np.array([index[c] for c in text], np.int64)
V = len(alphabet)
split = int(0.9 * len(ids))
train_ids, val_ids = ids[:split], ids[split:]
print(f"text: {len(text)} characters of pydoc_data.topics ({len(pydoc_data.topics.topics)} "
      f"help topics), alphabet of {V}; {len(train_ids)} for training, {len(val_ids)} held out")


def windows(data: np.ndarray, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive non-overlapping (input, next-character target) windows of length T."""
    count = (len(data) - 1) // T if n is None else min(n, (len(data) - 1) // T)
    x = data[:count * T].reshape(count, T)
    y = data[1:count * T + 1].reshape(count, T)
    return x, y


# -- the model -------------------------------------------------------------------------------


class CharTransformer(nn.Module):
    """ids (N, T) -> logits (N, T, V) for the next character at every position."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, D_MODEL)
        self.pos = nn.PositionalEncoding(D_MODEL, dropout=0.0, max_len=T, batch_first=True)
        layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FF, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu"
                                           if hasattr(gc.ops, "gelu") else "relu")
        self.encoder = nn.TransformerEncoder(layer, LAYERS, norm=nn.LayerNorm(D_MODEL))
        self.head = nn.Linear(D_MODEL, V)

    def inputs(self, ids):
        # embeddings are N(0, 1) per component: scale them to the positions' size
        return self.pos(self.embed(ids) * (1.0 / math.sqrt(D_MODEL)) * 4.0)

    def forward(self, ids):
        """(logits, [every layer's attention weights (N, heads, T, T)]). The weights are the
        very nodes the layers compute (graphs are hash-consed: the second call of self_attn on
        the same input adds nothing), so a function that returns them only copies them out."""
        x, maps = self.inputs(ids), []
        for layer in self.encoder.layers:
            h = layer.norm1(x)  # a pre-LN layer attends over its normalized input
            maps.append(layer.self_attn(h, h, h, is_causal=True, average_attn_weights=False)[1])
            x = layer(x, is_causal=True)
        return self.head(self.encoder.norm(x)), maps


def next_char_loss(logits, targets):
    """Mean cross-entropy per character, over every position of every window."""
    return F.cross_entropy(gc.reshape(logits, (-1, V)), gc.reshape(targets, (-1,)))


model = CharTransformer()
print(f"{model.num_parameters()} parameters")
opt = gc.optim.Adam(model.parameters(), lr=2e-3, clip_norm=1.0)
with gc.Graph("train_step"):
    x, y = gc.placeholder("x", ("N", T), "int64"), gc.placeholder("y", ("N", T), "int64")
    loss = next_char_loss(model(x)[0], y)
    step = gc.compile([x, y], loss, updates=opt.updates(loss), backend=args.backend)
model.eval()
with gc.Graph("evaluate"):  # loss, logits and attention maps: one function
    x, y = gc.placeholder("x", ("N", T), "int64"), gc.placeholder("y", ("N", T), "int64")
    logits, maps = model(x)
    evaluate = gc.compile([x, y], [next_char_loss(logits, y), logits] + maps,
                          backend=args.backend)

# -- training: random windows of the training text -------------------------------------------
rng = np.random.default_rng(0)
losses = []
for k in range(1, STEPS + 1):
    starts = rng.integers(0, len(train_ids) - T - 1, BATCH)
    batch = train_ids[starts[:, None] + np.arange(T + 1)]
    losses.append(float(step(batch[:, :-1], batch[:, 1:])))
    if k % (STEPS // 5) == 0:
        print(f"step {k:5d}  train loss {np.mean(losses[-50:]):.3f}")

# -- held-out perplexity, against counting baselines ------------------------------------------
x_val, y_val = windows(val_ids, 60 if args.quick else None)
total = 0.0
for i in range(0, len(x_val), 64):
    total += float(evaluate(x_val[i:i + 64], y_val[i:i + 64])[0]) * len(x_val[i:i + 64])
val_ppl = math.exp(total / len(x_val))
targets = y_val.ravel()
unigram = (np.bincount(train_ids, minlength=V) + 1.0) / (len(train_ids) + V)
pairs = np.zeros((V, V)) + 1.0
np.add.at(pairs, (train_ids[:-1], train_ids[1:]), 1.0)
bigram = pairs / pairs.sum(1, keepdims=True)
previous = x_val.ravel()
unigram_ppl = math.exp(-np.mean(np.log(unigram[targets])))
bigram_ppl = math.exp(-np.mean(np.log(bigram[previous, targets])))
print(f"baselines on the held-out text: uniform {V}, unigram perplexity {unigram_ppl:.2f}, "
      f"bigram perplexity {bigram_ppl:.2f}")
print(f"val perplexity {val_ppl:.2f} ({len(targets)} held-out characters, after {STEPS} steps)")


# -- sampling ---------------------------------------------------------------------------------
def sample(prompt: str, length: int, temperature: float = 0.7) -> str:
    """Continue `prompt` character by character (the last T characters as context)."""
    out = [index[c] for c in prompt]
    window = np.zeros((1, T), np.int64)
    for _ in range(length):
        context = out[-T:]
        window[0, :len(context)] = context  # later positions cannot be seen: causal mask
        scores = evaluate(window, window)[1][0, len(context) - 1] / temperature
        p = np.exp(scores - scores.max())
        out.append(int(rng.choice(V, p=p / p.sum())))
    return "".join(alphabet[i] for i in out)


print("sample:\n" + sample("The \"while\" statement", 120 if args.quick else 400))

# -- attention maps on a line of the Zen of Python ----------------------------------------------
zen = codecs.decode(this.s, "rot13")
probe = next(s for s in zen.splitlines() if s.startswith("Beautiful"))[:T]
ids_probe = np.zeros((1, T), np.int64)
ids_probe[0, :len(probe)] = [index[c] for c in probe]
maps = [m[0, :, :len(probe), :len(probe)] for m in evaluate(ids_probe, ids_probe)[2:]]
n = len(probe)
rows = np.stack(maps)  # (layers, heads, n, n)
assert np.allclose(rows.sum(-1), 1.0) and np.all(np.triu(rows, 1) == 0)  # causal and normalized
look_back = [(rows[i, h] * (np.arange(n)[:, None] - np.arange(n)[None, :])).sum(-1).mean()
             for i in range(LAYERS) for h in range(HEADS)]
print(f"mean distance looked back, per head ({' | '.join(f'layer {i + 1}' for i in range(LAYERS))}"
      "): " +
      " | ".join(" ".join(f"{d:.1f}" for d in look_back[i * HEADS:(i + 1) * HEADS])
                 for i in range(LAYERS)))
path = args.out / "transformer_attention.png"
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(LAYERS, HEADS, figsize=(4 * HEADS, 4 * LAYERS), squeeze=False)
    for i in range(LAYERS):
        for h in range(HEADS):
            ax = axes[i][h]
            ax.imshow(rows[i, h], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {i + 1}, head {h + 1}", fontsize=9)
            labels = ["␣" if c == " " else c for c in probe]
            ax.set_xticks(range(n), labels, fontsize=6)
            ax.set_yticks(range(n), labels, fontsize=6)
    fig.suptitle(f"attention weights (row: query character, column: key) on {probe!r}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
except ImportError:  # no matplotlib: the maps as a grayscale grid, no labels
    gc.plot.image_grid(rows.reshape(-1, n, n), path, ncols=HEADS, scale=6)
print(f"attention maps: {path}")
draw(args, evaluate, "transformer_evaluate")
done(args)
