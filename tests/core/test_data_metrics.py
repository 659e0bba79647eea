"""gc.datasets (bundled data, deterministic splits) and gc.metrics."""

import numpy as np
import pytest

import graphc as gc

D, M = gc.datasets, gc.metrics


@pytest.mark.parametrize("loader,n,features,classes", [
    (D.digits, 1797, 64, 10), (D.iris, 150, 4, 3), (D.breast_cancer, 569, 30, 2)])
def test_classification_sets(loader, n, features, classes):
    (xtr, ytr), (xte, yte) = loader()
    assert xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert xtr.shape[1] == features and len(xtr) + len(xte) == n
    assert len(xte) == pytest.approx(0.2 * n, abs=classes)
    assert set(np.unique(yte)) == set(range(classes))  # stratified: every class in test
    (xtr2, ytr2), _ = loader()
    assert np.array_equal(xtr, xtr2) and np.array_equal(ytr, ytr2)  # deterministic


def test_digits_are_in_original_scale_and_splits_are_disjoint():
    (xtr, _), (xte, _) = D.digits()
    assert xtr.min() == 0 and xtr.max() == 16
    rows = {r.tobytes() for r in xtr}
    overlap = sum(r.tobytes() in rows for r in xte)
    assert overlap < 5  # (a few digits images are exact duplicates in the data itself)
    (a, _), _ = D.digits(seed=1)
    assert not np.array_equal(a, xtr)


def test_diabetes_is_regression_in_original_units():
    (xtr, ytr), (xte, yte) = D.diabetes()
    assert ytr.dtype == np.float32 and xtr.shape[1] == 10 and len(xtr) + len(xte) == 442
    assert 18 <= xtr[:, 0].min() and xtr[:, 0].max() <= 80  # age in years
    s_train, s_test = D.standardize(xtr, xte)
    np.testing.assert_allclose(s_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(s_train.std(0), 1, atol=1e-4)
    assert s_test.shape == xte.shape


def test_metrics():
    y = np.array([0, 0, 1, 1, 2, 2])
    scores = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    assert M.accuracy(y, scores) == pytest.approx(4 / 6)
    cm = M.confusion_matrix(y, scores)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    p, r, f = M.precision_recall_f1(y, scores, average=None)
    np.testing.assert_allclose(p, [0.5, 2 / 3, 1.0])
    np.testing.assert_allclose(r, [0.5, 1.0, 0.5])
    np.testing.assert_allclose(f, [0.5, 0.8, 2 / 3])
    assert M.precision_recall_f1(y, scores)[2] == pytest.approx(np.mean([0.5, 0.8, 2 / 3]))
    assert M.accuracy([1, 0], np.array([[2.0], [-1.0]])) == 1.0  # one logit column
    assert "macro F1" in M.report(y, scores)
    with pytest.raises(ValueError, match="labels but"):
        M.accuracy([0, 1], [0])


@pytest.mark.parametrize("name", ["digits", "iris", "breast_cancer", "diabetes"])
def test_bundled_files_read_as_scikit_learn_reads_them(name, monkeypatch):
    """The direct file reader and scikit-learn's own loader give the same split."""
    pytest.importorskip("sklearn.datasets")
    fast = getattr(D, name)()
    monkeypatch.setattr(D, "_data_file", lambda _: None)  # force scikit-learn's loader
    slow = getattr(D, name)()
    for (xa, ya), (xb, yb) in zip(fast, slow):
        assert xa.dtype == xb.dtype and ya.dtype == yb.dtype
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_macro_means_cover_the_classes_that_occur_as_scikit_learn():
    """A class in neither the labels nor the predictions is not averaged in (perfect
    predictions of classes {0, 2} scored 0.667); with n_classes given, every class is."""
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(0)
    cases = [(np.array([0, 2, 2, 0]), np.array([0, 2, 2, 0]))]
    cases += [(rng.choice([1, 3, 4], 30), rng.choice([0, 3, 4], 30)) for _ in range(5)]
    for y, pred in cases:
        want = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)[:3]
        np.testing.assert_allclose(M.precision_recall_f1(y, pred), want)
        assert f"macro F1 {want[2]:.4f}" in M.report(y, pred)
        every = precision_recall_fscore_support(y, pred, labels=range(6), average="macro",
                                                zero_division=0)[:3]
        np.testing.assert_allclose(M.precision_recall_f1(y, pred, n_classes=6), every)


@pytest.mark.parametrize("call,match", [
    (lambda: M.confusion_matrix([0, 1, -1], [0, 1, 1]), "got -1"),
    (lambda: M.confusion_matrix([0.7, 1], [0, 1]), r"\(whole numbers\), got 0.7"),
    (lambda: M.confusion_matrix([0, 1, 2], [0, 1, 2], n_classes=2), "not one of the n_classes"),
    (lambda: M.confusion_matrix([0, 10**9], [0, 1]), "relabel the classes"),
    (lambda: M.precision_recall_f1([0, np.nan], [0, 1]), r"\(whole numbers\), got nan"),
])
def test_what_is_not_a_class_label_is_refused(call, match):
    """A -1 was counted as the last class of a confusion matrix, a true label 0.7 as class 0,
    a label beyond n_classes raised an IndexError, a 1e9 label asked for an exabyte."""
    with pytest.raises(ValueError, match=match):
        call()


def test_a_float_prediction_per_example_is_a_binary_logit_by_its_dtype():
    """A float (n,) is a binary classifier's logit, as the (n, 1) column (fit's running
    accuracy of such a model), whatever its values: whole-number logits are not labels."""
    assert M.accuracy([1, 0], np.array([[2.0], [-1.0]])) == 1.0  # a logit column, as before
    assert M.accuracy([1, 0, 1], np.array([0.5, -2.25, 3.0])) == 1.0
    assert M.accuracy([1, 1, 0], np.array([2.0, 3.0, -1.0])) == 1.0
    assert M.accuracy([0, 1, 2], np.array([0, 1, 2])) == 1.0  # integer labels
    assert M.accuracy([-1, 1, 1], [-1, 1, -1]) == pytest.approx(2 / 3)  # any labels, as sklearn
    np.testing.assert_array_equal(M.confusion_matrix(np.array([0.0, 1.0]), [0, 1], 3),
                                  [[1, 0, 0], [0, 1, 0], [0, 0, 0]])
