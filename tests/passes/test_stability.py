"""The stability rewrites: on extreme inputs the naive graph gives inf/NaN (or loses all
precision) and the optimized one does not — for values and for gradients."""

import numpy as np
import pytest

import graphc as gc

F = gc.nn.functional
LABELS = np.array([0, 2])
CASES = {
    "log_softmax": (lambda z: gc.log(gc.softmax(z)),
                    np.array([[1000.0, 0.0, -1000.0], [-500.0, 0.0, 500.0]])),
    "cross_entropy_by_hand": (
        lambda z: -gc.mean(gc.sum(gc.one_hot(gc.constant(LABELS), 3) * gc.log(gc.softmax(z)), 1)),
        np.array([[-1000.0, 0.0, 1000.0], [1000.0, 0.0, -1000.0]])),
    "picked_softmax_probability": (
        lambda z: -gc.log(gc.sum(gc.one_hot(gc.constant(LABELS), 3) * gc.softmax(z), 1)),
        np.array([[-1000.0, 0.0, 1000.0], [1000.0, 0.0, -1000.0]])),
    "log_sigmoid": (lambda z: gc.log(gc.sigmoid(z)), np.array([-800.0, -20.0, 0.0, 50.0])),
    "log_one_minus_sigmoid": (lambda z: gc.log(1.0 - gc.sigmoid(z)),
                              np.array([800.0, 40.0, 0.0, -50.0])),
    "bce_from_sigmoid": (
        lambda z: -gc.mean(0.3 * gc.log(gc.sigmoid(z)) + 0.7 * gc.log(1.0 - gc.sigmoid(z))),
        np.array([-800.0, 800.0, 0.5])),
    "log_exp": (lambda z: gc.log(gc.exp(z)), np.array([800.0, -800.0, 1.0])),
    "softplus_by_hand": (lambda z: gc.log(1.0 + gc.exp(z)), np.array([800.0, -50.0, 1.0])),
}


def _reference(name, z):
    with np.errstate(all="ignore"):
        ref = {
            "log_softmax": lambda: z - np.max(z, 1, keepdims=True) - np.log(
                np.exp(z - np.max(z, 1, keepdims=True)).sum(1, keepdims=True)),
            "cross_entropy_by_hand": lambda: -np.mean(_ls(z)[np.arange(2), LABELS]),
            "picked_softmax_probability": lambda: -_ls(z)[np.arange(2), LABELS],
            "log_sigmoid": lambda: -np.logaddexp(0, -z),
            "log_one_minus_sigmoid": lambda: -np.logaddexp(0, z),
            "bce_from_sigmoid": lambda: np.mean(0.3 * np.logaddexp(0, -z) + 0.7 * np.logaddexp(
                0, z)),
            "log_exp": lambda: z,
            "softplus_by_hand": lambda: np.logaddexp(0, z),
        }[name]()
    return ref


def _ls(z):
    m = z.max(1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(1, keepdims=True))


@pytest.mark.parametrize("name", sorted(CASES))
def test_values(name):
    f, z = CASES[name]
    x = gc.placeholder("z", z.shape, "float64")
    y = f(x)
    naive = gc.compile([x], y, optimize=False)(z)
    stable = gc.compile([x], y)(z)
    assert not np.all(np.isfinite(naive)), "the naive graph should overflow on these inputs"
    assert np.all(np.isfinite(stable))
    np.testing.assert_allclose(stable, _reference(name, z), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients(name):
    f, z = CASES[name]
    x = gc.placeholder("z", z.shape, "float64")
    cost = gc.sum(f(x))
    naive = gc.compile([x], gc.grad(cost, x, stabilize=False), optimize=False)(z)
    stable = gc.compile([x], gc.grad(cost, x))(z)
    assert not np.all(np.isfinite(naive))
    assert np.all(np.isfinite(stable))
    # the stable gradient matches finite differences of the stable reference
    eps = 1e-6
    numeric = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += eps
        zm[idx] -= eps
        numeric[idx] = (np.sum(_reference(name, zp)) - np.sum(_reference(name, zm))) / (2 * eps)
    np.testing.assert_allclose(stable, numeric, rtol=1e-5, atol=1e-6)


def test_log1p_and_expm1_keep_precision_for_tiny_inputs():
    x = gc.placeholder("x", (2,))  # float32, where 1 + 1e-10 == 1
    tiny = np.array([1e-10, -3e-9], np.float32)
    fn_naive = gc.compile([x], [gc.log(1.0 + x), gc.exp(x) - 1.0], optimize=False)
    fn = gc.compile([x], [gc.log(1.0 + x), gc.exp(x) - 1.0])
    assert np.all(fn_naive(tiny)[0] == 0) and np.all(fn_naive(tiny)[1] == 0)
    for out in fn(tiny):
        np.testing.assert_allclose(out, tiny, rtol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_log_sigmoid_rewrites_keep_the_sign_of_an_exact_zero(backend):
    """log(sigmoid(+inf)) is log(1) = +0.0 exactly; -softplus(-x) made it -0.0 (and
    log(1 - sigmoid(-inf)) the same)."""
    x = gc.placeholder("x", (2,), "float32")
    outs = [1 / gc.log(gc.sigmoid(x)), 1 / gc.log(1 - gc.sigmoid(x))]
    got = gc.compile([x], outs, backend=backend)(np.array([np.inf, -np.inf], np.float32))
    np.testing.assert_array_equal(got[0], [np.inf, -0.0])
    np.testing.assert_array_equal(got[1], [-0.0, np.inf])
    assert np.signbit(got[0][1]) and np.signbit(got[1][0])


def test_a_gradient_with_respect_to_an_intermediate_keeps_every_path():
    """log(e) of e = exp(z) was stabilized to z before differentiating: the gradient with
    respect to e lost the 1/e of that use (the same for log of softmax probabilities)."""
    import torch

    z = gc.placeholder("z", (3,), "float64")
    e = gc.exp(z)
    zv = np.array([0.0, 1.0, -2.0])
    grad = gc.compile([z], gc.grad(gc.sum(gc.log(e)) + gc.sum(e), e))(zv)
    np.testing.assert_allclose(grad, 1 / np.exp(zv) + 1)
    logits = gc.placeholder("l", (2, 3), "float64")
    p = gc.softmax(logits)
    lv = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]])
    t = torch.tensor(lv, requires_grad=True)
    pt = torch.softmax(t, -1)
    pt.retain_grad()
    (-pt.log().sum() + (pt * pt).sum()).backward()
    got = gc.compile([logits], gc.grad(-gc.sum(gc.log(p)) + gc.sum(p * p), p))(lv)
    np.testing.assert_allclose(got, pt.grad.numpy(), rtol=1e-12)
    # with respect to the logits the cost is still stabilized (log_softmax, no 1/p)
    big = np.array([[0.0, 800.0, -800.0], [1.0, 2.0, 3.0]])
    assert np.isfinite(gc.compile([logits], gc.grad(-gc.sum(gc.log(p)), logits))(big)).all()


def test_a_canonical_merge_of_an_intermediates_uses_keeps_the_stabilized_cost():
    """h * h is square(h) in canonical form (two uses of h become one): the fallback for
    gradients with respect to intermediates took that for a lost use and dropped every
    rewrite, so -log(sigmoid(-h*h)) had a NaN gradient at h = 30."""
    x = gc.placeholder("x", (1,), "float64")
    h = x * 2.0
    loss = gc.sum(-gc.log(gc.sigmoid(-(h * h))))
    gh, gx = gc.compile([x], gc.grad(loss, [h, x]))(np.array([15.0]))
    np.testing.assert_allclose(gh, [60.0])
    np.testing.assert_allclose(gx, [120.0])
