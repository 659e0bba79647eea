"""Small real data sets bundled with scikit-learn (no network), split deterministically.

Each loader returns ``(x_train, y_train), (x_test, y_test)`` as NumPy arrays: features
float32 of shape (n, features) in their original scale (digits: 64 pixels in 0..16 — divide
by 16, or standardize with ``standardize``), class labels int64, regression targets float32.

The split is stratified for classification (every class keeps its proportion in both parts)
and drawn from NumPy's PCG64 generator with a fixed seed, so it is the same on every machine
and every run.

The data files are read straight from scikit-learn's package folder (``sklearn/datasets/data``)
without importing scikit-learn, which takes longer than the training runs of the examples;
if a file is not where it has been for years, scikit-learn's own loader is used.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["digits", "iris", "breast_cancer", "diabetes", "split", "standardize"]

Split = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def split(x: np.ndarray, y: np.ndarray, test_size: float = 0.2, seed: int = 0,
          stratify: bool = True) -> Split:
    """A deterministic train/test split; stratified by the labels `y` when `stratify`."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be between 0 and 1, got {test_size}")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
    test = []
    for idx in groups:
        idx = rng.permutation(idx)
        test.append(idx[: int(round(test_size * len(idx)))])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])


def _data_file(name: str) -> Path | None:
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / name
        if path.is_file():
            return path
    return None


def _labelled_csv(name: str, header: bool, sklearn_loader: Callable
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of a bundled CSV whose last column is the class."""
    path = _data_file(name)
    if path is None:
        data = sklearn_loader()
        return data.data, data.target
    table = np.loadtxt(path, delimiter=",", skiprows=1 if header else 0, dtype=np.float64)
    return table[:, :-1], table[:, -1]


def _classification(name: str, header: bool, loader_name: str, test_size: float,
                    seed: int) -> Split:
    def sklearn_loader():
        import sklearn.datasets

        return getattr(sklearn.datasets, loader_name)()

    x, y = _labelled_csv(name, header, sklearn_loader)
    return split(x.astype(np.float32), y.astype(np.int64), test_size, seed)


def digits(test_size: float = 0.2, seed: int = 0) -> Split:
    """1797 handwritten digits, 8x8 pixels in 0..16 (64 features), 10 classes.
    Reshape to (n, 1, 8, 8) for a CNN."""
    return _classification("digits.csv.gz", False, "load_digits", test_size, seed)


def iris(test_size: float = 0.2, seed: int = 0) -> Split:
    """150 iris flowers, 4 measurements in cm, 3 species."""
    return _classification("iris.csv", True, "load_iris", test_size, seed)


def breast_cancer(test_size: float = 0.2, seed: int = 0) -> Split:
    """569 breast tumours, 30 features of cell nuclei, 2 classes (0 malignant, 1 benign)."""
    return _classification("breast_cancer.csv", True, "load_breast_cancer", test_size, seed)


def diabetes(test_size: float = 0.2, seed: int = 0) -> Split:
    """442 diabetes patients, 10 features in original units (age in years, sex coded 1/2,
    BMI, blood pressure, six serum measurements), target: disease progression after one
    year (float32). A regression task."""
    data_path, target_path = _data_file("diabetes_data_raw.csv.gz"), _data_file(
        "diabetes_target.csv.gz")
    if data_path is None or target_path is None:
        from sklearn.datasets import load_diabetes

        data = load_diabetes(scaled=False)
        x, y = data.data, data.target
    else:
        x, y = np.loadtxt(data_path), np.loadtxt(target_path)
    return split(x.astype(np.float32), y.astype(np.float32), test_size, seed, stratify=False)


def standardize(x_train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Zero mean, unit variance per feature, with the training set's statistics only (so no
    information leaks from the test set). Constant features are left centred."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return tuple(((a - mean) / std).astype(np.float32) for a in (x_train, *others))
