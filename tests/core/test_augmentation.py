"""Data augmentation inside the compiled step: what the ops produce (the distribution of
crop offsets, shifts, flips and noise), identity in eval mode, the modules following their
mode, the same draws on numpy and llvm, gradients through a crop, and seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import graphc as gc

F = gc.nn.functional
nn = gc.nn


def _images(n=400, h=6, w=6):
    # each pixel holds its own (row, column): where a crop came from can be read back
    img = (np.arange(h)[:, None] * 10 + np.arange(w)[None, :] + 1).astype(np.float32)
    return np.broadcast_to(img, (n, 1, h, w)).copy()


def _offsets(out, img):
    """(top, left) of each output image within the (zero-padded) source, from its values."""
    tops, lefts = [], []
    for o in out[:, 0]:
        r, c = np.argwhere(o > 0)[0]
        v = int(o[r, c]) - 1
        tops.append(v // 10 - r)
        lefts.append(v % 10 - c)
    return np.array(tops), np.array(lefts)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_random_crop_offsets_are_uniform_and_each_sample_has_its_own(backend):
    x = gc.placeholder("x", ("N", 1, 6, 6))
    out = gc.compile([x], F.random_crop(x, 4, padding=1, seed=3), backend=backend)(_images())
    assert out.shape == (400, 1, 4, 4)
    tops, lefts = _offsets(out, None)
    # a 4x4 window of the 8x8 padded image starts at padded 0..4, i.e. image -1..3
    assert set(tops) == set(range(-1, 4)) and set(lefts) == set(range(-1, 4))
    for v in (tops, lefts):
        assert stats.chisquare(np.bincount(v + 1)).pvalue > 1e-3
    assert np.corrcoef(tops, lefts)[0, 1] < 0.2  # independent axes


def test_random_shift_moves_by_at_most_max_shift_with_zero_fill():
    x = gc.placeholder("x", ("N", 1, 6, 6))
    imgs = _images()
    out = gc.compile([x], F.random_shift(x, 2, seed=5))(imgs)
    assert out.shape == imgs.shape
    tops, lefts = _offsets(out, imgs)
    assert set(tops) == set(range(-2, 3)) and set(lefts) == set(range(-2, 3))
    # a shifted image holds a subset of the original pixels, the rest zeros
    assert set(np.unique(out)) <= set(np.unique(imgs)) | {0.0}


def test_random_flip_flips_about_p_of_the_samples_along_the_axis():
    x = gc.placeholder("x", ("N", 1, 6, 6))
    imgs = _images(2000)
    out = gc.compile([x], F.random_flip(x, axis=-1, p=0.3, seed=1))(imgs)
    flipped = np.array([np.array_equal(o, i[..., ::-1]) for o, i in zip(out, imgs)])
    same = np.array([np.array_equal(o, i) for o, i in zip(out, imgs)])
    assert np.all(flipped ^ same)
    assert abs(flipped.mean() - 0.3) < 5 * np.sqrt(0.21 / 2000)
    vertical = gc.compile([x], F.random_flip(x, axis=2, p=1.0))(imgs)
    np.testing.assert_array_equal(vertical, imgs[:, :, ::-1])


def test_gaussian_noise_has_the_asked_standard_deviation():
    x = gc.placeholder("x", ("N", 10))
    base = np.ones((3000, 10), np.float32)
    noise = gc.compile([x], F.gaussian_noise(x, 0.5, seed=2))(base) - base
    assert stats.kstest(noise.ravel() / 0.5, "norm").pvalue > 1e-3


def test_identity_when_not_training_and_modules_follow_their_mode():
    x = gc.placeholder("x", ("N", 1, 6, 6))
    for fn in (lambda t: F.random_crop(t, 6, padding=2, training=False),
               lambda t: F.random_shift(t, 2, training=False),
               lambda t: F.random_flip(t, training=False),
               lambda t: F.gaussian_noise(t, 1.0, training=False)):
        assert fn(x) is x
    gc.manual_seed(0)
    aug = nn.Sequential(nn.RandomCrop(6, padding=2), nn.RandomFlip(), nn.RandomShift(1),
                        nn.GaussianNoise(0.1))
    assert [name for name, _ in aug.named_buffers()] == ["0.rng", "1.rng", "2.rng", "3.rng"]
    imgs = _images(50)
    aug.eval()
    np.testing.assert_array_equal(gc.compile([x], aug(x))(imgs), imgs)
    aug.train()
    step = gc.compile([x], aug(x))
    first, second = step(imgs), step(imgs)
    assert not np.array_equal(first, imgs) and not np.array_equal(first, second)


def test_numpy_and_llvm_draw_the_same_augmentations_and_crops_pass_gradients():
    x = gc.placeholder("x", ("N", 1, 6, 6), "float64")
    y = F.random_flip(F.random_crop(x, 5, padding=1, seed=4), seed=6)
    rng = np.random.default_rng(0)
    imgs = rng.normal(size=(16, 1, 6, 6))
    results = []
    for backend in ("numpy", "llvm"):
        f = gc.compile([x], [y, gc.grad(gc.sum(y * y), x)], backend=backend)
        saved = [p.value.copy() for p in f.parameters()]
        results.append(f(imgs))
        for p, v in zip(f.parameters(), saved):
            p.value = v
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    out, grad = results[0]
    # d sum(y^2)/dx is 2x where a pixel was kept, 0 where it was cropped away
    kept = grad != 0
    np.testing.assert_allclose(grad[kept], 2 * imgs[kept])
    assert np.isclose(np.sum(grad * imgs), 2 * np.sum(out * out))


def test_bad_arguments_are_clear():
    x = gc.placeholder("x", ("N", 1, 6, 6))
    with pytest.raises(gc.ShapeError, match="does not fit"):
        F.random_crop(x, 9)
    with pytest.raises(gc.GraphError, match="axis 0 is"):
        F.random_flip(x, axis=0)
    with pytest.raises(gc.GraphError, match="size == the image size"):
        F.random_crop(x, 4, training=False)
    with pytest.raises(gc.ShapeError, match="images"):
        F.random_crop(gc.placeholder("v", ("N", 6)), 4)


def _crop_and_shift(imgs, backend, opts=None):
    """A crop with padding and a shift of `imgs`, drawn from fixed seeds (the same windows at
    every call of this helper)."""
    with gc.Graph():
        x = gc.placeholder("x", ("N", 2, 5, 6))
        f = gc.compile([x], [F.random_crop(x, (3, 4), padding=1, seed=11),
                             F.random_shift(x, (2, 1), seed=12)],
                       backend=backend, backend_options=opts)
    return f(imgs)


def test_non_finite_pixels_are_moved_not_spread():
    """An inf or NaN pixel (inside the window or not) turns up only where the window put it:
    the crop moves values, it does not multiply them by 0/1 (0 * inf = NaN)."""
    finite = (np.random.default_rng(0).normal(size=(40, 2, 5, 6)) + 10).astype(np.float32)
    odd = finite.copy()
    odd[:, 0, 4, 5], odd[:, 1, 2, 3], odd[:, 0, 0, 0] = np.inf, np.nan, -np.inf
    marked = finite.copy()  # the same images with the odd pixels marked by finite sentinels
    marked[:, 0, 4, 5], marked[:, 1, 2, 3], marked[:, 0, 0, 0] = 1e30, 2e30, -1e30
    outs = _crop_and_shift(odd, "numpy")
    for got, ref in zip(outs, _crop_and_shift(marked, "numpy")):
        want = np.select([ref == 1e30, ref == 2e30, ref == -1e30], [np.inf, np.nan, -np.inf], ref)
        np.testing.assert_array_equal(got, want)
        assert np.isnan(got).sum() == (ref == 2e30).sum() < got[:, 1].size // 4
    for backend, opts in [("llvm", None), ("cuda", {"emulate": True})]:  # the same everywhere
        for a, b in zip(outs, _crop_and_shift(odd, backend, opts)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size, padding", [((2, 3), 0), ((4, 4), (2, 1)), ((4, 5), 0)])
def test_crop_gradient_matches_finite_differences(size, padding):
    imgs = np.random.default_rng(1).normal(size=(3, 2, 4, 5))
    gc.check_grad(lambda xs: gc.sum(gc.sin(F.random_crop(xs[0], size, padding, seed=2))),
                  [imgs], shapes=[("N", 2, 4, 5)])
    gc.check_grad(lambda xs: gc.sum(gc.sin(F.random_shift(xs[0], (1, 3), seed=3))), [imgs])


def test_random_crop_module_in_eval_mode_agrees_with_the_function():
    """Eval mode is the identity, as F.random_crop(training=False): a size other than the
    image size is refused there too, not passed on as an uncropped image."""
    x = gc.placeholder("x", ("N", 1, 5, 5))
    crop = nn.RandomCrop(3)
    crop.eval()
    with pytest.raises(gc.GraphError, match="eval mode.*size == the image size"):
        crop(x)
    padded = nn.RandomCrop(5, padding=1)
    padded.eval()
    assert padded(x) is x
    padded.train()
    assert tuple(padded(x).shape) == tuple(crop.train()(x).shape[:2]) + (5, 5)
    with pytest.raises(gc.GraphError, match="RandomCrop: size"):
        nn.RandomCrop(-1)
    with pytest.raises(gc.GraphError, match="RandomCrop: padding"):
        nn.RandomCrop(3, padding=(1, 2, 3))
    with pytest.raises(gc.GraphError, match="RandomShift: max_shift"):
        nn.RandomShift(1.5)


def test_seed_and_state_together_are_refused():
    x = gc.placeholder("x", ("N", 1, 5, 5))
    for fn in (lambda **kw: F.random_crop(x, 3, **kw), lambda **kw: F.random_shift(x, 1, **kw),
               lambda **kw: F.random_flip(x, **kw), lambda **kw: F.gaussian_noise(x, 0.1, **kw)):
        with pytest.raises(gc.GraphError, match="seed or a state"):
            fn(seed=1, state=gc.rng_state(2))
        with pytest.raises(gc.GraphError, match="seed must"):
            fn(seed=1.5)
        assert tuple(fn(state=gc.rng_state(2)).shape)[1] == 1


@pytest.mark.parametrize("make", [
    lambda x: F.random_flip(x, axis=1.5, p=1.0),  # once accepted, and flipped nothing
    lambda x: F.random_flip(x, axis=True),
    lambda x: F.random_flip(x, p="0.5"),
    lambda x: F.gaussian_noise(x, float("nan")),
    lambda x: gc.nn.RandomFlip(p=2),  # refused when built, as RandomCrop, not at first use
    lambda x: gc.nn.RandomFlip(axis=0),
    lambda x: gc.nn.RandomFlip(axis=1.5),
    lambda x: gc.nn.GaussianNoise(-1),
])
def test_bad_augmentation_arguments_are_refused(make):
    x = gc.placeholder("x", (4, 1, 2, 3))
    with pytest.raises(gc.GraphError):
        make(x)
