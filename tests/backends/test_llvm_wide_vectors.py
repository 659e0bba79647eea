"""The direct and channels-last convolution tiles with 64-byte vectors (16 floats), as a CPU
with full-width AVX-512 runs them (graphc/ops/loops.direct_vector_bytes). The rest of the
suite pins 32-byte vectors (tests/conftest.py), for which its schedule tests pick their
sizes; here every convolution kind, with its gradients, is compared with the NumPy backend
in a process that uses 64-byte vectors, at sizes on both sides of a vector's 16 positions."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import NEEDS_AVX512

pytestmark = NEEDS_AVX512

CASES = r"""
import itertools
import numpy as np
import graphc as gc
import graphc.ops.conv as C
import graphc.ops.loops as L
F = gc.nn.functional
assert L.DIRECT_VECTOR_BYTES == 64 and L.DIRECT_ROW_MULTIPLE == 16
taken = set()
for name in ("direct", "channels_last", "direct_weight_grad", "channels_last_weight_grad"):
    rule = getattr(C, name)
    def spy(node, _rule=rule, _name=name):
        answer = _rule(node)
        if answer:
            taken.add(_name)
        return answer
    setattr(C, name, spy)
rng = np.random.default_rng(0)
cases = 0
for dtype, (cin, cout), width, (k, s, p, d), transpose, batch in itertools.product(
        ["float32", "float64"], [(3, 6), (17, 32), (32, 4)], [8, 15, 16, 17, 33],
        [(3, 1, 1, 1), (1, 1, 0, 1), (3, 2, 1, 1), (2, 1, 1, 2)], [False, True], [0, 1, 7]):
    if transpose and (s != 1 or d != 1) or (dtype == "float64") != (batch == 1):
        continue  # (float32 at batches 0 and 7, float64 at 1)
    x = gc.placeholder("x", ("N", cin, 5, width), dtype)
    shape = (cin, cout, k, k) if transpose else (cout, cin, k, k)
    w = gc.parameter("w", rng.normal(size=shape).astype(dtype))
    b = gc.parameter("b", rng.normal(size=cout).astype(dtype))
    if transpose:
        y = F.conv_transpose2d(x, w, b, padding=min(p, k - 1))
    else:
        y = F.conv2d(x, w, b, stride=s, padding=p, dilation=d)
    weights = gc.constant(rng.normal(size=(1,) + tuple(y.shape[1:])).astype(dtype))
    loss = (y * weights).sum()
    outs = [y, *gc.grad(loss, [x, w, b])]
    feed = rng.normal(size=(batch, cin, 5, width)).astype(dtype)
    want = gc.compile([x], outs)(feed)
    got = gc.compile([x], outs, backend="llvm")(feed)
    tol = 1e-4 if dtype == "float32" else 1e-10
    for g, v in zip(got, want):
        np.testing.assert_allclose(g, v, rtol=tol, atol=tol * max(1.0, float(np.abs(v).max(
            initial=0.0))), err_msg=f"{dtype} {cin}->{cout} width {width} k{k} s{s} p{p} "
                                    f"d{d} transpose={transpose} batch {batch}")
    cases += 1
print(cases, " ".join(sorted(taken)))
"""


def test_the_convolution_tiles_with_64_byte_vectors_match_numpy():
    env = dict(os.environ, GRAPHC_VECTOR_BYTES="64", GRAPHC_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CASES], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    count, *taken = out.stdout.split()
    assert int(count) > 100
    assert {"direct", "channels_last", "direct_weight_grad"} <= set(taken), taken


def test_the_vector_width_setting_is_checked():
    env = dict(os.environ, GRAPHC_VECTOR_BYTES="48")
    out = subprocess.run([sys.executable, "-c", "import graphc.ops.loops as L; "
                          "L.direct_vector_bytes()"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "GRAPHC_VECTOR_BYTES must be 32 or" in out.stderr
