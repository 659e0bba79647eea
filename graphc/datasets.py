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

``mnist``, ``fashion_mnist`` and ``cifar10`` read the standard distribution files from a
directory you give (graphc never downloads anything) and keep the files' own train/test split
and order. They parse fixed binary layouts (IDX, CIFAR-10 binary records) with NumPy only: a
file is data, never executed, which is why the CIFAR-10 *Python* (pickle) version is refused.
A file that does not match its format raises ``gc.io.FormatError``; missing files raise
``FileNotFoundError`` naming each file, the folder to put it in and where to get it.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import DTypeLike

from .io import FormatError

__all__ = ["digits", "iris", "breast_cancer", "diabetes", "mnist", "fashion_mnist", "cifar10",
           "split", "standardize", "FASHION_MNIST_CLASSES", "CIFAR10_CLASSES"]

Split = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def split(x: np.ndarray, y: np.ndarray, test_size: float = 0.2, seed: int = 0,
          stratify: bool = True) -> Split:
    """A deterministic train/test split; stratified by the labels `y` when `stratify` and
    `y` holds class labels (integers or bools: a regression target's every value would be a
    class of one, and the test set came out empty)."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be between 0 and 1, got {test_size}")
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    labels = stratify and y.ndim == 1 and _class_labels(y)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if labels else [np.arange(len(y))]
    test = []
    for idx in groups:
        idx = rng.permutation(idx)
        test.append(idx[: int(round(test_size * len(idx)))])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])


def _class_labels(y: np.ndarray) -> bool:
    """Whether `y` holds class labels to stratify by: integers, bools, strings, or floats
    that are whole numbers with at least two examples of each (0./1. targets); a regression
    target's every value would be a class of one."""
    if y.dtype.kind in "iubUSO":
        return True
    if y.dtype.kind != "f" or not np.isfinite(y).all() or (y != np.round(y)).any():
        return False
    return bool(np.unique(y, return_counts=True)[1].min() >= 2) if y.size else False


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


# -- files you download yourself: MNIST, Fashion-MNIST (IDX), CIFAR-10 (binary) --------------

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

_PathLike = str | os.PathLike

_IDX_UBYTE = 0x08  # the only element type the MNIST family uses
_IDX_FILES = (  # (role, standard name, number of dimensions)
    ("training images", "train-images-idx3-ubyte", 3),
    ("training labels", "train-labels-idx1-ubyte", 1),
    ("test images", "t10k-images-idx3-ubyte", 3),
    ("test labels", "t10k-labels-idx1-ubyte", 1),
)
_CHUNK = 1 << 22  # read in pieces, so a header claiming terabytes cannot make us allocate them
_CIFAR_FOLDER = "cifar-10-batches-bin"
_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST = "test_batch.bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then 1024 red, 1024 green, 1024 blue bytes
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"


def mnist(path: _PathLike, *, flatten: bool = True, dtype: DTypeLike = np.float32) -> Split:
    """MNIST handwritten digits from the four IDX files in the directory `path`: 60000
    training and 10000 test images of 28x28 pixels in 0..255, labels 0..9 (int64).

    Images are ``(n, 784)`` like ``digits()`` keeps its 64 pixels as features; pass
    ``flatten=False`` for ``(n, 1, 28, 28)`` (NCHW, what a CNN takes). Pixels keep their
    original scale as in ``digits()`` (divide by 255 or ``standardize``). `dtype` is the
    pixels' type (``np.uint8`` keeps a quarter of the memory). The files' own split and order
    are kept: the test set is the official one.

    `path` holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each plain or gzipped (``.gz``,
    as downloaded); torchvision's layout (``path/MNIST/raw/``) is found too.
    """
    return _idx_set("MNIST", path, "MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/ "
                    "(a mirror of http://yann.lecun.com/exdb/mnist/)", flatten, dtype)


def fashion_mnist(path: _PathLike, *, flatten: bool = True, dtype: DTypeLike = np.float32
                  ) -> Split:
    """Fashion-MNIST (Zalando's clothing pictures, names in ``FASHION_MNIST_CLASSES``): the same
    file names, format, sizes and return form as ``mnist()``, so keep the two in different
    directories. torchvision's layout (``path/FashionMNIST/raw/``) is found too."""
    return _idx_set("Fashion-MNIST", path, "FashionMNIST",
                    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ "
                    "(see https://github.com/zalandoresearch/fashion-mnist)", flatten, dtype)


def cifar10(path: _PathLike, *, flatten: bool = True, dtype: DTypeLike = np.float32) -> Split:
    """CIFAR-10 from its *binary* version: 50000 training and 10000 test colour images with
    pixels in 0..255, labels 0..9 (int64; names in ``CIFAR10_CLASSES``).

    Images are ``(n, 3072)`` in the records' channel-major order (the red plane, then green,
    then blue), the same form as ``digits()`` and ``mnist()``; ``flatten=False`` gives
    ``(n, 3, 32, 32)`` (NCHW, what a CNN takes). `dtype` as in ``mnist()`` (float32 training
    images take 614 MB; ``np.uint8`` a quarter).

    `path` is the folder ``cifar-10-batches-bin`` (``data_batch_1.bin`` .. ``data_batch_5.bin``,
    ``test_batch.bin``) or the directory that contains it: what extracting
    ``cifar-10-binary.tar.gz`` gives. Training batches are concatenated in order 1..5. The
    Python version (pickles) is refused: unpickling a file can run code from it.
    """
    root = _directory(path, "CIFAR-10")
    folder = root / _CIFAR_FOLDER if (root / _CIFAR_FOLDER).is_dir() else root
    missing = [name for name in (*_CIFAR_TRAIN, _CIFAR_TEST) if not (folder / name).is_file()]
    if missing:
        hint = ""
        if (root / "cifar-10-binary.tar.gz").is_file():
            hint = (f" {root / 'cifar-10-binary.tar.gz'} is there: extract it first "
                    f"(tar xzf cifar-10-binary.tar.gz -C {root}).")
        elif (root / "cifar-10-batches-py").is_dir() or (folder / "data_batch_1").is_file():
            hint = (" What is there is the Python (pickle) version (cifar-10-batches-py), which "
                    "graphc does not read because unpickling a file can run code from it; use "
                    "the binary version.")
        raise FileNotFoundError(
            f"CIFAR-10 binary files missing in {folder}{_absent(folder)}: "
            f"{', '.join(missing)}. Put "
            f"{', '.join(_CIFAR_TRAIN)} and {_CIFAR_TEST} in {root / _CIFAR_FOLDER} (or pass "
            f"that folder itself); they are what extracting {_CIFAR_URL} gives "
            f"(tar xzf cifar-10-binary.tar.gz -C {root}). graphc never downloads "
            f"anything.{hint}")
    out_dtype = _pixel_dtype(dtype)
    train = [_read_cifar_batch(folder / name) for name in _CIFAR_TRAIN]
    x_test, y_test = _read_cifar_batch(folder / _CIFAR_TEST)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    shape = (-1, 3 * 32 * 32) if flatten else (-1, 3, 32, 32)
    return ((x_train.reshape(shape).astype(out_dtype), y_train),
            (x_test.reshape(shape).astype(out_dtype), y_test))


def _directory(path: _PathLike, what: str) -> Path:
    root = Path(path).expanduser()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{what}: {root} is a file; pass the directory that holds "
                                 f"the {what} files")
    return root


def _absent(folder: Path) -> str:
    return "" if folder.is_dir() else " (no such directory yet)"


def _pixel_dtype(dtype: DTypeLike) -> np.dtype:
    out = np.dtype(dtype)
    if out.kind not in "uif" or not np.can_cast(np.uint8, out):
        raise ValueError(f"dtype must be a numeric type that holds 0..255, got {out}")
    return out


def _idx_set(what: str, path: _PathLike, torchvision_folder: str, source: str, flatten: bool,
             dtype: DTypeLike) -> Split:
    """The four IDX files of an MNIST-like set, checked against each other."""
    root = _directory(path, what)
    folders = [root, root / torchvision_folder / "raw"]
    found, missing = {}, []
    for role, name, _ in _IDX_FILES:
        # the standard name, gzipped as downloaded or not; Kaggle's copies say ".idx3-ubyte"
        variants = [name, name.replace("-idx", ".idx")]
        candidates = [folder / f"{v}{gz}" for folder in folders for v in variants
                      for gz in ("", ".gz")]
        file = next((c for c in candidates if c.is_file()), None)
        if file is None:
            missing.append(f"{name} ({role})")
        found[role] = file
    if missing:
        names = ", ".join(name for _, name, _ in _IDX_FILES)
        raise FileNotFoundError(
            f"{what} files missing in {root}{_absent(root)}: {'; '.join(missing)}. Put the "
            f"four files "
            f"{names} in {root}, as downloaded (gzipped, with .gz) or unpacked; get them from "
            f"{source}. graphc never downloads anything.")
    out_dtype = _pixel_dtype(dtype)
    # the headers first: a small gzip file that claims (and holds) millions of images must
    # not be decompressed before its count is compared with its labels'
    dims = {role: _idx_dims(found[role], ndim) for role, _, ndim in _IDX_FILES}
    for part in ("training", "test"):
        images, labels = found[f"{part} images"], found[f"{part} labels"]
        n_images, n_labels = dims[f"{part} images"][0], dims[f"{part} labels"][0]
        if n_images != n_labels:
            raise FormatError(f"{what}: {images} holds {n_images} images but {labels} holds "
                              f"{n_labels} labels")
    train, test = dims["training images"][1:], dims["test images"][1:]
    if train != test:
        raise FormatError(f"{what}: training images are {train[0]}x{train[1]} but test images "
                          f"{test[0]}x{test[1]}")
    def images(x: np.ndarray) -> np.ndarray:
        shape = (len(x), -1) if flatten else (len(x), 1, *x.shape[1:])
        return x.reshape(shape).astype(out_dtype)

    try:
        x_train, y_train, x_test, y_test = (_read_idx(found[role], ndim)
                                            for role, _, ndim in _IDX_FILES)
        for y, part in ((y_train, "training"), (y_test, "test")):
            _check_labels(y, found[f"{part} labels"])
        return ((images(x_train), y_train.astype(np.int64)),
                (images(x_test), y_test.astype(np.int64)))
    except MemoryError:  # (honest files can be large: say which, and what would help)
        n = dims["training images"][0] + dims["test images"][0]
        raise MemoryError(f"{what}: not enough memory for the {n:,} images of "
                          f"{train[0]}x{train[1]} pixels in {root} as {out_dtype} "
                          f"(dtype=np.uint8 takes the least)") from None


def _check_labels(y: np.ndarray, file: Path) -> None:
    if len(y) and int(y.max()) > 9:
        at = int(np.argmax(y > 9))
        raise FormatError(f"{file}: label {int(y[at])} at record {at} is not a class 0..9")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions (3: images, 1: labels), gzipped or
    not: magic ``00 00 08 ndim``, `ndim` big-endian uint32 sizes, then exactly the data."""
    kind = "images" if ndim == 3 else "labels"
    with _open_maybe_gzipped(path) as f:
        try:
            dims = _idx_header(f, path, ndim)
            size = math.prod(dims)  # Python ints: a lying header cannot overflow it
            data = _read_exactly(f, size, path, f"{kind} ({' x '.join(map(str, dims))} bytes)")
            if f.read(1):
                raise FormatError(f"{path} is longer than its header says "
                                  f"({' x '.join(map(str, dims))} bytes of {kind})")
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise FormatError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    return np.frombuffer(data, np.uint8).reshape(dims)


def _idx_dims(path: Path, ndim: int) -> tuple[int, ...]:
    """The sizes an IDX file's header gives (nothing past the header is read): the four files
    of a set are checked against each other before any data is decompressed."""
    with _open_maybe_gzipped(path) as f:
        try:
            return _idx_header(f, path, ndim)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise FormatError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def _idx_header(f: BinaryIO, path: Path, ndim: int) -> tuple[int, ...]:
    magic = (_IDX_UBYTE << 8) | ndim
    kind = "images" if ndim == 3 else "labels"
    got = struct.unpack(">I", _read_exactly(f, 4, path, "magic number"))[0]
    if got != magic:
        raise FormatError(
            f"{path} is not an IDX file of {kind}: magic number 0x{got:08x}, expected "
            f"0x{magic:08x}" + (" (a labels file?)" if got == 0x801 else
                                " (an images file?)" if got == 0x803 else ""))
    dims = struct.unpack(f">{ndim}I", _read_exactly(f, 4 * ndim, path, "sizes"))
    if dims[0] == 0 or 0 in dims[1:]:
        raise FormatError(f"{path}: the header says {' x '.join(map(str, dims))}: no {kind}")
    return dims


def _open_maybe_gzipped(path: Path) -> BinaryIO:
    """Sniff the gzip magic rather than trust the name: a file may have been unpacked in place."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _read_exactly(f: BinaryIO, size: int, path: Path, what: str) -> bytearray:
    data = bytearray()
    while len(data) < size:
        piece = f.read(min(_CHUNK, size - len(data)))
        if not piece:
            raise FormatError(f"{path} is truncated: its {what} take {size} bytes, only "
                              f"{len(data)} are there")
        data += piece
    return data


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(pixels as uint8 (n, 3072), labels int64) of one batch file of 3073-byte records."""
    size = path.stat().st_size
    if size == 0 or size % _CIFAR_RECORD:
        raise FormatError(
            f"{path} is not a CIFAR-10 binary batch: {size} bytes is not a whole number of "
            f"{_CIFAR_RECORD}-byte records (1 label byte + 3072 pixel bytes)"
            + (" — truncated?" if size > _CIFAR_RECORD else ""))
    records = np.fromfile(path, dtype=np.uint8)
    if len(records) != size:  # the file changed while we read it
        raise FormatError(f"{path} changed size while being read")
    records = records.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    _check_labels(labels, path)
    return records[:, 1:], labels
