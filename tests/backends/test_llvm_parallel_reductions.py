"""Reductions on every thread (backends/kernelgen/host_reductions.py): a whole buffer reduced
to one number in chunks whose length is a rule of the count, and reductions over leading
axes in memory order with the threads splitting the output. Both must give the same bits on
any thread count, the NumPy backend's values, and, for a count of one chunk, the bits of the
one-thread schedule they replace."""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.backends.kernelgen import host_reductions as R
from graphc.backends.llvm import threads
from tests.helpers import same_bits_on_every_thread_count

BIG = threads.PARALLEL_MIN_POINTS

pytestmark = pytest.mark.skipif(not threads.runtime().openmp,
                                reason="no libgomp here: every nest runs on the calling thread")


def _parts(fn) -> set[str]:
    """The ops of the kernels with a parallel part."""
    return set(re.findall(r'define internal i32 @"k\d+\.(\w+)\.part', fn.source))


def _hostile(shape, dtype, rng, special):
    a = rng.standard_normal(shape).astype(dtype)
    if special:
        flat = a.reshape(-1)
        picks = rng.choice(flat.size, size=8, replace=False)
        flat[picks[:3]] = [np.inf, -np.inf, -0.0]
        if special == "nan":
            flat[picks[3]] = np.nan
    return a


# (name, input shape with "N" where symbolic, the fed shape, the reduction)
FORMS = [
    ("sum", ("N",), (BIG + 12345,), lambda x: x.sum()),
    ("mean", (8, "N", 64), (8, 3001, 64), lambda x: x.mean()),
    ("max", ("N", 513), (2100, 513), lambda x: x.max()),
    ("min", (BIG + 1,), (BIG + 1,), lambda x: x.min()),
    ("sum_keepdims", ("N", 1024), (1100, 1024), lambda x: x.sum(axis=(0, 1), keepdims=True)),
    ("bias_grad", ("N", 1000), (1100, 1000), lambda x: x.sum(axis=0)),
    ("conv_bias_grad", ("N", 24, 40, 40), (30, 24, 40, 40), lambda x: x.sum(axis=(0, 2, 3))),
    ("max_axis0", ("N", 3, 700), (600, 3, 700), lambda x: x.max(axis=0)),
    ("middle_axis", ("N", 700, 3), (600, 700, 3), lambda x: x.sum(axis=1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", [None, "inf", "nan"])
@pytest.mark.parametrize("form", FORMS, ids=[f[0] for f in FORMS])
def test_a_big_reduction_runs_on_every_thread_with_the_same_bits(form, special, dtype):
    name, shape, fed, reduce = form
    x = gc.placeholder("x", shape, dtype)
    fn = gc.compile([x], reduce(x), backend="llvm")
    op = "sum" if name in ("mean", "sum_keepdims", "bias_grad", "conv_bias_grad",
                           "middle_axis") else name.split("_")[0]
    assert op in _parts(fn)
    data = _hostile(fed, dtype, np.random.default_rng(len(name)), special)
    (got,) = same_bits_on_every_thread_count(lambda d: [fn(d)], data)
    want = gc.compile([x], reduce(x), backend="numpy")(data)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(got, want, **tol)


def test_a_whole_sum_counts_every_term_once_across_the_largest_chunks():
    """Past MAX_CHUNKS chunks of CHUNK_TERMS the chunks grow (a rule of the count): small
    whole numbers, whose chunk sums are exact, sum to the exact total rounded once."""
    n = R.MAX_CHUNKS * R.CHUNK_TERMS + 3 * 1024 + 7
    x = gc.placeholder("x", ("N",))
    fn = gc.compile([x], x.sum(), backend="llvm")
    data = (np.arange(n) % 7 - 2).astype(np.float32)
    exact = int((np.arange(n, dtype=np.int64) % 7 - 2).sum())
    got = same_bits_on_every_thread_count(lambda d: [fn(d)], data, counts=(2, 5))[0]
    assert got == np.float32(exact)


@pytest.mark.parametrize("n", [0, 1, 1023, R.CHUNK_TERMS, R.CHUNK_TERMS + 1, 3 * R.CHUNK_TERMS])
def test_every_count_of_a_symbolic_sum_is_summed(n):
    x = gc.placeholder("x", ("N",), np.float64)
    fn = gc.compile([x], [x.sum(), x.max() if n else x.sum()], backend="llvm")
    data = np.random.default_rng(n).standard_normal(n)
    total, top = same_bits_on_every_thread_count(lambda d: fn(d), data)
    np.testing.assert_allclose(total, data.sum(), rtol=1e-12, atol=1e-12)
    if n:
        assert top == data.max()


def test_one_chunk_gives_the_bits_of_the_one_thread_schedule():
    """A count of one chunk, known (the flat schedule) or symbolic (the chunked one)."""
    rows = R.CHUNK_TERMS // 1000
    data = np.random.default_rng(3).standard_normal((rows, 1000)).astype(np.float32) * 1e3
    known = gc.placeholder("x", (rows, 1000))
    symbolic = gc.placeholder("x", ("N", 1000))
    flat = gc.compile([known], known.sum(), backend="llvm")
    chunked = gc.compile([symbolic], symbolic.sum(), backend="llvm")
    assert "sum" not in _parts(flat) and "sum" in _parts(chunked)
    assert flat(data).tobytes() == chunked(data).tobytes()


def test_a_small_known_reduction_gets_no_region():
    x = gc.placeholder("x", (BIG // 4, 2))
    fn = gc.compile([x], [x.sum(), x.sum(axis=0)], backend="llvm")
    assert not _parts(fn)


def test_a_training_step_s_bias_gradients_and_loss_split_alike():
    """An MLP's bias gradients (sums over the batch) and its loss over a big batch."""
    rng = np.random.default_rng(4)
    x = gc.placeholder("x", ("N", 1024))
    W = gc.parameter("W", (rng.standard_normal((1024, 1024)) * 0.03).astype(np.float32))
    b = gc.parameter("b", np.zeros(1024, np.float32))
    loss = gc.square(gc.tanh(x @ W + b)).mean()
    fn = gc.compile([x], [loss, *gc.grad(loss, [b])], backend="llvm")
    assert "sum" in _parts(fn)
    data = rng.standard_normal((1536, 1024)).astype(np.float32)
    got = same_bits_on_every_thread_count(lambda d: fn(d), data)
    want = gc.compile([x], [loss, *gc.grad(loss, [b])], backend="numpy")(data)
    for a, w in zip(got, want):
        np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-7)
