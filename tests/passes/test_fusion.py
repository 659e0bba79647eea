"""Elementwise fusion on real training graphs: group counts, maximality, fan-out, results."""

import numpy as np
import pytest
import sympy

import graphc as gc
from bench.workloads import MODELS, mlp, small_cnn
from graphc.ir.graph import users
from graphc.ops.shape_ops import same_shape


def _compiled(make, **kw):
    with gc.Graph("m"):
        ins, loss, ups, _ = make(**kw)
        return ins, loss, ups, gc.compile(ins, loss, updates=ups)


def _group_sizes(fn):
    return sorted((len(d["ops"]) for d in fn.graph.meta["fusion"].values()), reverse=True)


def test_mlp_training_step_groups():
    # forward: bias + relu (relu' reads relu's output, so the sum has one reader) | backward:
    # relu' (where), -exp(logp)*sum + g, and one "p - lr * g" group per parameter update
    # (4), plus the scalar 1/N chain.
    fn = _compiled(mlp)[-1]
    assert _group_sizes(fn) == [3, 2, 2, 2, 2, 2, 2, 2]


def test_cnn_training_step_groups():
    fn = _compiled(small_cnn)[-1]
    sizes = _group_sizes(fn)
    assert len(sizes) == 12 and sizes[0] == 3  # (each conv's bias and ReLU: one group)
    assert sum(1 for n in fn.graph.nodes if n.op.name == "elemwise") == 12


@pytest.mark.parametrize("name", sorted(MODELS))
def test_groups_are_maximal(name):
    """No elementwise node is left with a single-use elementwise producer of its own shape."""
    fn = _compiled(MODELS[name])[-1]
    use = users(fn.graph.nodes)
    pinned = {n.uid for n in fn.graph.roots()}
    for n in fn.graph.nodes:
        if not n.op.is_elementwise:
            continue
        for i in n.inputs:
            fusible = i.op.is_elementwise and len(use[i]) == 1 and i.uid not in pinned
            assert not (fusible and same_shape(i.shape, n.shape)), f"{i} could join {n}"


def test_fan_out_is_not_duplicated():
    x = gc.placeholder("x", (3, 4))
    shared = gc.exp(gc.tanh(x))  # used twice: computed once, in its own group
    out = [shared * 2.0 + 1.0, gc.sum(shared, axis=0)]
    fn = gc.compile([x], out)
    exprs = [str(n.attrs["expr"]) for n in fn.graph.nodes if n.op.name == "elemwise"]
    assert sum("tanh" in e for e in exprs) == 1
    a = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(fn(a)[0], np.exp(np.tanh(a)) * 2 + 1, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fused_training_matches_unfused(name):
    rng = np.random.default_rng(1)
    with gc.Graph(name):
        ins, loss, ups, feed = MODELS[name]()
        start = {p: p.value for p in ups}
        feeds = feed(8, rng)
        results = []
        for optimize in (False, True):
            for p, v in start.items():
                p.value = v
            step = gc.compile(ins, loss, updates=ups, optimize=optimize)
            results.append([float(step(*feeds)) for _ in range(5)])
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5)


def test_fused_groups_are_drawn_as_clusters():
    fn = _compiled(mlp)[-1]
    src = gc.viz.to_dot(fn).source
    assert src.count("cluster_fused_") == 8  # the MLP groups above
    assert "fused: " in src


def test_a_value_used_twice_inside_one_group_is_fused_with_it():
    """exp(x) feeds both the product and the sum: all of y*y + y is one fused node."""
    x = gc.placeholder("x", (3, 4), "float64")
    y = gc.exp(x)
    out = y * y + y
    graph, _ = gc.optimize([out])
    ops = [n.op.name for n in graph.nodes if n.op.name not in ("placeholder", "constant")]
    assert ops == ["elemwise"], ops
    a = np.linspace(-1, 1, 12).reshape(3, 4)
    for backend in ("numpy", "llvm"):
        np.testing.assert_allclose(gc.compile([x], out, backend=backend)(a),
                                   np.exp(a) ** 2 + np.exp(a), rtol=1e-12)


def test_a_long_chain_is_fused_in_bounded_pieces():
    """300 elementwise ops in a row: fused into groups of at most MAX_FUSION_DEPTH ops, so
    printers and emitters never recurse past Python's limit; every backend matches NumPy."""
    from graphc.passes.groups import MAX_FUSION_DEPTH

    x = gc.placeholder("x", (5,), "float64")
    y = x
    for i in range(300):
        y = gc.tanh(y) * 1.01 + 0.001 if i % 2 else gc.sigmoid(y) - 0.5
    a = np.linspace(-1, 1, 5)
    want = gc.compile([x], y, optimize=False)(a)
    for backend in ("numpy", "llvm"):
        fn = gc.compile([x], y, backend=backend)
        np.testing.assert_allclose(fn(a), want, rtol=1e-12)
    sizes = fn.stats["passes"][[s.name for s in fn.stats["passes"]].index("fuse")].details[
        "group_sizes"]
    assert sum(sizes) >= 700 and max(sizes) == MAX_FUSION_DEPTH  # a chain: size is depth


@pytest.mark.parametrize("op", [
    lambda y, x: gc.clip(y, -3.0, 3.0), lambda y, x: gc.minimum(y + 1, x),
    lambda y, x: gc.where(y > x, 2 * y, x), lambda y, x: gc.hard_sigmoid(y),
    lambda y, x: gc.leaky_relu(y), lambda y, x: gc.silu(y)],
    ids=["clip", "minimum", "where", "hard_sigmoid", "leaky_relu", "silu"])
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_chains_of_ops_that_read_an_operand_twice_compile(op, backend):
    """Five clips in a row failed the default compile ("an elementwise expression of more
    than 20000 nodes"): each template reads its operand several times, so the group's tree
    grew as a power of the chain's length; twelve never finished. A producer whose copies
    in the tree would pass MAX_COPIES starts a group of its own."""
    x = gc.placeholder("x", (6,), "float32")
    y = x
    for _ in range(20):
        y = op(y * 2, x)
    fn = gc.compile([x], y, backend=backend)
    xv = np.array([0.3, -1.0, 2.0, np.nan, np.inf, -0.0], np.float32)
    want = gc.compile([x], y, optimize=False)(xv)
    np.testing.assert_allclose(fn(xv), want, rtol=1e-5)
    for node in fn.graph.nodes:  # every fused expression's tree stays small
        if node.op.name == "elemwise":
            assert sum(1 for _ in sympy.preorder_traversal(node.attrs["expr"])) < 5000


@pytest.mark.parametrize("form", [
    lambda a, x: a * gc.reciprocal(x), lambda a, x: gc.reciprocal(x) * a * 3.0,
    lambda a, x: a * gc.rsqrt(gc.abs(x)), lambda a, x: gc.reciprocal(x) * gc.reciprocal(a),
    lambda a, x: a - gc.reciprocal(x), lambda a, x: -gc.reciprocal(x) * a,
    lambda a, x: a / x + 0.5, lambda a, x: a / (x * x)],
    ids=["a*recip", "recip*a*3", "a*rsqrt", "recip*recip", "a-recip", "neg_recip*a", "div",
         "div_of_product"])
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_a_fused_reciprocal_is_multiplied_as_the_unfused_ops_do(form, backend):
    """Fusion put reciprocal(x) into a product as a * x**-1, which every emitter computes as
    the division a / x: one rounding where the ops round twice, and a finite quotient where
    1/x overflows (0 * reciprocal(1e-40) is 0 * inf = NaN; 0 / 1e-40 was 0: a NaN erased).
    The reciprocal is now computed alone and multiplied: the fused step gives the unfused
    step's bits. A division stays one division (the last two forms)."""
    rng = np.random.default_rng(0)
    a = gc.placeholder("a", (4096,), "float32")
    x = gc.placeholder("x", (4096,), "float32")
    y = form(a, x)
    av = rng.standard_normal(4096).astype(np.float32)
    xv = rng.standard_normal(4096).astype(np.float32)
    hostile = np.array([1e-40, -1e-40, 0.0, -0.0, np.inf, np.nan, 3e38, 1e-30], np.float32)
    av[:8], xv[:8] = np.roll(hostile, 3), hostile
    av[8:16], xv[8:16] = 0.0, hostile
    fused = gc.compile([a, x], y, backend=backend)
    assert any(n.op.name == "elemwise" for n in fused.graph.nodes)
    plain = gc.compile([a, x], y, backend=backend, optimize=False)
    with np.errstate(all="ignore"):
        got, want = fused(av, xv), plain(av, xv)
    # the same bits, signed zeros and infinities included; a NaN's sign bit is not a value
    # (fneg flips it, 0 - x does not)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.where(np.isnan(got), 0, got).tobytes() == np.where(np.isnan(want), 0, want).tobytes()
