"""Differential tests: random programs (tests/passes/random_programs.py) through the
unoptimized NumPy program (the reference), the optimized NumPy program, the LLVM backend and
the emulated CUDA kernels, forward and gradient, on moderate and on hostile inputs.

The rule checked (docs/passes.md, "What a rewrite may change"): whatever compiles without
optimization compiles with it, on every backend; with hostile inputs (0, -0, ±inf, NaN,
overflowing values) NaN, +inf and -inf appear in exactly the same places, and finite values
agree; with moderate inputs the whole pipeline — the stability rewrites included, which may
turn an intermediate overflow into the true finite value — agrees where the reference is
finite, and stays finite there.
"""

import numpy as np
import pytest

import graphc as gc
from graphc.passes.manager import PASS_NAMES
from tests.passes import random_programs as R

WITHOUT_STABILIZE = [p for p in PASS_NAMES if p != "stabilize"]
BACKENDS = [("numpy", None), ("llvm", None), ("cuda", {"emulate": True})]
SEEDS = range(48)


def _check(got, want, exact: bool, dtype, scale: float, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, what
    if exact:
        for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
            where = test(got) != test(want)
            assert not where.any(), f"{what}: {name} at {np.argwhere(where).tolist()}\n" \
                                    f"got  {got}\nwant {want}"
    finite = np.isfinite(want)
    assert np.isfinite(got[finite]).all(), f"{what}: non-finite where the reference is " \
                                           f"finite\ngot  {got}\nwant {want}"
    rtol = 1e-6 if dtype == np.float64 else 2e-3
    both = finite & np.isfinite(got)
    np.testing.assert_allclose(got[both], want[both], rtol=rtol, atol=rtol * scale,
                               err_msg=what)


def _scale(arrays) -> float:
    values = [np.abs(a[np.isfinite(a)]).max(initial=0.0) for a in arrays]
    return float(max([1.0, *values]))


def _run_all(build, seed: int, hostile: bool):
    with gc.Graph(f"random{seed}"):
        program = build()
        outs = program.outputs
        reference = gc.compile(program.inputs, outs, optimize=False)
        passes = WITHOUT_STABILIZE if hostile else True
        candidates = {be: gc.compile(program.inputs, outs, backend=be, optimize=passes,
                                     backend_options=opts) for be, opts in BACKENDS}
    arrays = R.inputs(seed, program, hostile)
    want = reference(*arrays)
    scale = _scale(arrays + [w for w in want])
    for be, fn in candidates.items():
        got = fn(*arrays)
        for k, (g, w) in enumerate(zip(got, want)):
            _check(g, w, hostile, np.dtype(program.dtype), scale,
                   f"{be}, output {k}, {'hostile' if hostile else 'moderate'} inputs, "
                   f"{program.describe()}")


@pytest.mark.parametrize("seed", SEEDS)
def test_forward_agrees_everywhere(seed):
    hostile = seed % 2 == 0
    _run_all(lambda: R.build(seed), seed, hostile)


def _weights(out, seed):
    return gc.constant(np.random.default_rng(seed).uniform(0.5, 1.5, tuple(out.shape)).astype(
        out.dtype))


def _cost(program, seed):
    return sum(gc.sum(o * _weights(o, seed + k)) for k, o in enumerate(program.outputs))


@pytest.mark.parametrize("seed", range(100, 124))
def test_gradients_agree_everywhere(seed):
    """The gradient graph (autodiff's own rules, not stabilized: the same math on every side)
    through the passes and every backend."""
    hostile = seed % 2 == 0

    def build():
        program = R.build(seed)
        cost = _cost(program, seed)
        grads = []
        for x in program.inputs:  # (an input reached only through a comparison has none)
            try:
                grads.append(gc.grad(cost, x, allow_unused=True, stabilize=False))
            except gc.GraphError as exc:
                assert "cannot differentiate" in str(exc)
        program.outputs = [cost, *grads]
        return program

    _run_all(build, seed, hostile)


@pytest.mark.parametrize("seed", range(200, 230))
def test_stability_rewrites_keep_values_and_gradients(seed):
    """Random log/exp/softmax/log_softmax/sum/one_hot/where graphs over random axes (3-d, so
    that the one-hot, softmax and summed axes can disagree): the optimized value and the
    stabilized gradient equal a float64 evaluation of the graph as written."""
    with gc.Graph(f"stability{seed}"):
        program = R.build(seed, "float64", palettes=("stability",), shape=(2, 3, 4))
        cost = _cost(program, seed)
        raw_grads = gc.grad(cost, program.inputs, allow_unused=True, stabilize=False)
        grads = gc.grad(cost, program.inputs, allow_unused=True)
        reference = gc.compile(program.inputs, [cost, *raw_grads], optimize=False)
        optimized = gc.compile(program.inputs, [cost, *grads])
    arrays = R.inputs(seed, program, hostile=False)
    for k, (got, want) in enumerate(zip(optimized(*arrays), reference(*arrays))):
        # log(0) where the one-hot and summed axes disagree is -inf on both sides
        _check(got, want, True, np.dtype(np.float64), 1e-3,
               f"output {k}: {program.describe()}")
