"""A character-level LSTM language model, trained on the docstrings of Python's own standard
library, then asked to write.

The text is every docstring of 28 pure-Python standard modules (difflib, logging,
statistics, threading, argparse, typing...), read from their sources with ``ast``: it ships
with every CPython, no download. The last 10% (the last modules' docstrings) is held out.
The model: character embeddings, an ``nn.LSTM``, a linear read-out of the next character's
logits at every step; Adam on random windows of the training text, cross-entropy per
character.

The LSTM loops with ``gc.scan`` over a symbolic sequence length, so one compiled forward
function ``(ids (N, T), h0, c0) -> (logits, h_n, c_n)`` does three jobs at three lengths: it
reads the held-out text as 16 parallel streams in chunks of 128 characters (the state carried
from chunk to chunk, so every character is predicted from everything before it) for the
perplexity; it reads a prompt; and it writes one character at a time (T = 1), each sampled at
a temperature from the softmax of its logits and fed back with the state. It reports the
held-out perplexity (exp of the mean cross-entropy per character; lower is better) against
counting baselines (unigram and bigram character frequencies) and prints samples.

Run:  python examples/char_lm.py [--quick] [--backend llvm]
"""

import ast
import importlib
import inspect
import math
import string

import numpy as np
from common import done, draw, setup

import graphc as gc

args = setup("Character-level LSTM language model on the standard library's docstrings")
F, nn = gc.nn.functional, gc.nn
EMBED = 32
# quick mode: a small LSTM and a short run (compiling the step is a good part of its time)
HIDDEN, T, BATCH, STEPS = (96, 32, 32, 150) if args.quick else (256, 64, 32, 3000)
MODULES = ("difflib", "logging", "statistics", "threading", "shutil", "subprocess",
           "collections", "argparse", "random", "textwrap", "functools", "fractions",
           "inspect", "doctest", "configparser", "optparse", "pdb", "enum", "tempfile",
           "contextlib", "zipfile", "email.message", "http.client", "unittest.case", "typing",
           "datetime", "pathlib", "ast")


# -- the text: docstrings, printable ASCII ---------------------------------------------------
def docstrings(module: str) -> list[str]:
    """Every docstring (module, classes, functions) in a module's source, in order."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = [ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, kinds)]
    return [d for d in found if d]


alphabet = sorted(set(string.printable) - set("\t\r\x0b\x0c"))
index = {c: i for i, c in enumerate(alphabet)}
text = "\n\n".join(d for m in MODULES for d in docstrings(m))
text = "".join(c for c in text if c in index)
ids = np.array([index[c] for c in text], np.int64)
V = len(alphabet)
split = int(0.9 * len(ids))
train_ids, val_ids = ids[:split], ids[split:]
if args.quick:  # the first 4096 held-out characters only
    val_ids = val_ids[:4096 + 1]
print(f"text: {len(text)} characters of docstrings from {len(MODULES)} standard modules, "
      f"alphabet of {V}; {len(train_ids)} for training, {len(val_ids) - 1} held out")


# -- the model ---------------------------------------------------------------------------------
class CharLSTM(nn.Module):
    """ids (N, T) and a state -> the next character's logits (N, T, V) and the new state."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, EMBED)
        self.lstm = nn.LSTM(EMBED, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, V)

    def forward(self, ids, state=None):
        out, state = self.lstm(self.embed(ids), state)
        return self.head(out), state


def next_char_loss(logits, targets):
    """Mean cross-entropy per character, over every position of every window."""
    return F.cross_entropy(gc.reshape(logits, (-1, V)), gc.reshape(targets, (-1,)))


model = CharLSTM()
print(f"{model.num_parameters()} parameters (LSTM with {HIDDEN} units)")
opt = gc.optim.Adam(model.parameters(), lr=3e-3, clip_norm=1.0)
with gc.Graph("train_step"):
    x, y = gc.placeholder("x", ("N", "T"), "int64"), gc.placeholder("y", ("N", "T"), "int64")
    loss = next_char_loss(model(x)[0], y)
    step = gc.compile([x, y], loss, updates=opt.updates(loss), backend=args.backend)
model.eval()
with gc.Graph("forward"):  # one function for every T: validation chunks, prompts, sampling
    x = gc.placeholder("ids", ("N", "T"), "int64")
    h0, c0 = (gc.placeholder(name, (1, "N", HIDDEN)) for name in ("h0", "c0"))
    logits, (h_n, c_n) = model(x, (h0, c0))
    forward = gc.compile([x, h0, c0], [logits, h_n, c_n], backend=args.backend)


def zero_state(n: int) -> list[np.ndarray]:
    return [np.zeros((1, n, HIDDEN), np.float32) for _ in range(2)]


# -- training: random windows of the training text -------------------------------------------
rng = np.random.default_rng(0)
losses = []
for k in range(1, STEPS + 1):
    starts = rng.integers(0, len(train_ids) - T - 1, BATCH)
    batch = train_ids[starts[:, None] + np.arange(T + 1)]
    losses.append(float(step(batch[:, :-1], batch[:, 1:])))
    if k % (STEPS // 5) == 0:
        print(f"step {k:5d}  train loss {np.mean(losses[-50:]):.3f}")


# -- held-out perplexity: 16 streams read in chunks, the state carried across chunks -------
def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


STREAMS, CHUNK = 16, 128
per_stream = (len(val_ids) - 1) // STREAMS
inputs = val_ids[:STREAMS * per_stream].reshape(STREAMS, per_stream)
targets = val_ids[1:STREAMS * per_stream + 1].reshape(STREAMS, per_stream)
state, nll = zero_state(STREAMS), 0.0
for i in range(0, per_stream, CHUNK):  # the last chunk is shorter: the same function
    logits, *state = forward(inputs[:, i:i + CHUNK], *state)
    picked = np.take_along_axis(log_softmax(logits), targets[:, i:i + CHUNK, None], -1)
    nll -= picked.sum()
val_ppl = math.exp(nll / targets.size)
unigram = (np.bincount(train_ids, minlength=V) + 1.0) / (len(train_ids) + V)
pairs = np.zeros((V, V)) + 1.0
np.add.at(pairs, (train_ids[:-1], train_ids[1:]), 1.0)
bigram = pairs / pairs.sum(1, keepdims=True)
unigram_ppl = math.exp(-np.mean(np.log(unigram[targets.ravel()])))
bigram_ppl = math.exp(-np.mean(np.log(bigram[inputs.ravel(), targets.ravel()])))
print(f"baselines on the held-out text: uniform {V}, unigram perplexity {unigram_ppl:.2f}, "
      f"bigram perplexity {bigram_ppl:.2f}")
print(f"val perplexity {val_ppl:.2f} ({targets.size} held-out characters, after {STEPS} steps; "
      f"chunks of {CHUNK} characters through the forward function)")


# -- sampling: the prompt in one call, then one character per call -------------------------
def sample(prompt: str, length: int, temperature: float) -> str:
    """Continue `prompt`: each next character drawn from softmax(logits / temperature)."""
    logits, *state = forward(np.array([[index[c] for c in prompt]]), *zero_state(1))
    out = []
    for _ in range(length):
        scores = logits[0, -1].astype(np.float64) / temperature
        p = np.exp(scores - scores.max())
        out.append(int(rng.choice(V, p=p / p.sum())))
        logits, *state = forward(np.array([[out[-1]]]), *state)  # T = 1
    return prompt + "".join(alphabet[i] for i in out)


for temperature in (0.5, 0.8):
    print(f"sample at temperature {temperature}:\n"
          + sample("Return the ", 120 if args.quick else 400, temperature))
draw(args, forward, "char_lm_forward")
done(args)
