"""Classification metrics on NumPy arrays: accuracy, confusion matrix, precision/recall/F1.

Predictions may be given as labels (n,) or as class scores (n, classes), from which the
predicted label is the argmax — so a compiled function's logits can be passed directly.
"""

from __future__ import annotations

import numpy as np

__all__ = ["predicted_labels", "accuracy", "confusion_matrix", "precision_recall_f1", "report"]


def predicted_labels(pred: np.ndarray) -> np.ndarray:
    """Labels from labels (n,) or from scores (n, classes) by argmax. Labels are integers or
    bools; a float prediction of one score per example, (n, 1) or (n,), is a binary
    classifier's logit, thresholded at 0 (so give logits, not probabilities). Decided by the
    dtype alone, never by the values: a model's output is read the same way in every batch
    (whole-number logits such as 2.0 and -1.0 were once read as labels in some)."""
    pred = np.asarray(pred)
    if pred.ndim == 2 and pred.shape[1] == 1:
        return (pred[:, 0] > 0).astype(np.int64)
    if pred.ndim == 2:
        return pred.argmax(axis=1)
    if pred.ndim == 1:
        if pred.dtype.kind == "f":
            return (pred > 0).astype(np.int64)
        return class_labels(pred, "predictions (n,)")
    raise ValueError(f"predictions must be labels (n,) or scores (n, classes), got {pred.shape}")


def _whole(arr: np.ndarray) -> np.ndarray:
    return np.isfinite(arr) & (arr == np.round(arr))


def class_labels(values, what: str = "labels") -> np.ndarray:
    """`values` as int64 class labels: integers, bools, or floats holding whole numbers;
    anything else is a ValueError naming `what` (a true label 0.7 once counted as class 0)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        whole = _whole(arr)
        if not whole.all():
            raise ValueError(f"{what} must be class labels (whole numbers), got "
                             f"{float(arr[~whole][0])}")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{what} must be class labels, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _labels(y_true, pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = class_labels(y_true, "the true labels").ravel()
    y_pred = predicted_labels(pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    return y_true, y_pred


def accuracy(y_true, pred) -> float:
    """The fraction of correct predictions."""
    y_true, y_pred = _labels(y_true, pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


#: the most classes a confusion matrix takes from its labels alone (a 1e9 label would ask
#: for 8e18 bytes): above it, `n_classes` must be given
MAX_INFERRED_CLASSES = 1 << 14


def confusion_matrix(y_true, pred, n_classes: int | None = None) -> np.ndarray:
    """``C[i, j]`` = how many examples of class i were predicted as class j (rows: truth)."""
    y_true, y_pred = _labels(y_true, pred)
    lowest = int(min(y_true.min(initial=0), y_pred.min(initial=0)))
    if lowest < 0:  # (accuracy takes any labels; a matrix is indexed by them)
        raise ValueError(f"a confusion matrix needs class labels 0, 1, ..., got {lowest} (a -1 "
                         f"was counted as the last class)")
    largest = int(max(y_true.max(initial=-1), y_pred.max(initial=-1)))
    if n_classes is None:
        n_classes = largest + 1
        if n_classes > MAX_INFERRED_CLASSES:
            raise ValueError(f"a label of {largest} asks for a {n_classes} x {n_classes} "
                             f"confusion matrix; relabel the classes 0..k-1 or pass n_classes")
    elif largest >= n_classes:
        raise ValueError(f"a label of {largest} is not one of the n_classes={n_classes} "
                         f"classes 0..{n_classes - 1}")
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def precision_recall_f1(y_true, pred, n_classes: int | None = None, average: str | None = "macro"):
    """Per-class precision, recall and F1, or their unweighted mean (``average="macro"``).

    A class never predicted has precision 0; a class absent from `y_true` has recall 0 (as
    scikit-learn's ``zero_division=0``). The macro mean is over the classes that occur in
    the labels or the predictions, as scikit-learn's, or over all `n_classes` when given
    (a class that occurs in neither counts as 0 then).
    """
    cm = confusion_matrix(y_true, pred, n_classes).astype(np.float64)
    tp = np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(tp / cm.sum(axis=0))
        recall = np.nan_to_num(tp / cm.sum(axis=1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    if average is None:
        return precision, recall, f1
    if average != "macro":
        raise ValueError(f"average must be 'macro' or None, got {average!r}")
    seen = _averaged(cm, n_classes)
    return float(precision[seen].mean()), float(recall[seen].mean()), float(f1[seen].mean())


def _averaged(cm: np.ndarray, n_classes: int | None) -> np.ndarray:
    """Which classes a macro mean covers: those in the labels or the predictions (the rows
    and columns of the confusion matrix that count something), or all of `n_classes`."""
    if n_classes is not None:
        return np.ones(len(cm), bool)
    return (cm.sum(axis=0) + cm.sum(axis=1)) > 0


def report(y_true, pred, n_classes: int | None = None) -> str:
    """A printable table: precision, recall, F1 and support per class, then accuracy."""
    y_true_l, _ = _labels(y_true, pred)
    p, r, f = precision_recall_f1(y_true, pred, n_classes, average=None)
    support = np.bincount(y_true_l, minlength=len(p))
    lines = ["class  precision  recall     f1  support"]
    lines += [f"{c:5d}  {p[c]:9.3f}  {r[c]:6.3f}  {f[c]:5.3f}  {support[c]:7d}"
              for c in range(len(p))]
    seen = _averaged(confusion_matrix(y_true, pred, n_classes), n_classes)
    lines.append(f"accuracy {accuracy(y_true, pred):.4f} over {len(y_true_l)} examples; "
                 f"macro F1 {f[seen].mean():.4f}")
    return "\n".join(lines)
