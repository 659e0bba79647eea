"""gc.datasets.mnist / fashion_mnist / cifar10 on small files written here in the exact
distribution formats (IDX, gzipped or not; CIFAR-10 binary records): layout, dtype, the files'
own split and order, where files are looked for, and every malformed file refused with
gc.io.FormatError rather than read wrongly."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

import graphc as gc

D = gc.datasets
FormatError = gc.io.FormatError
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
CIFAR_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: 00 00 08 ndim, big-endian uint32 sizes, the data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data, compresslevel=1)
    path.write_bytes(data)
    return path


def mnist_like(rng, n_train=7, n_test=4, side=28):
    return (rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
            rng.integers(0, 10, n_train, dtype=np.uint8),
            rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
            rng.integers(0, 10, n_test, dtype=np.uint8))


def write_idx_set(folder: Path, arrays, gz=(False, False, False, False), names=IDX_NAMES):
    return [write(folder / name, idx_bytes(a), z) for name, a, z in zip(names, arrays, gz)]


def cifar_batch(rng, n: int):
    pixels = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    records = np.concatenate([labels[:, None], pixels.reshape(n, -1)], axis=1)
    return pixels, labels, records.tobytes()


def write_cifar(folder: Path, rng, sizes=(2, 1, 3, 1, 2), n_test=3):
    """Batch files of a few records each; returns (x_train, y_train, x_test, y_test)."""
    xs, ys = [], []
    for name, n in zip(CIFAR_TRAIN, sizes):
        pixels, labels, data = cifar_batch(rng, n)
        write(folder / name, data)
        xs.append(pixels)
        ys.append(labels)
    x_test, y_test, data = cifar_batch(rng, n_test)
    write(folder / "test_batch.bin", data)
    return np.concatenate(xs), np.concatenate(ys), x_test, y_test


# -- MNIST / Fashion-MNIST ---------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_mnist_reads_idx_files_in_order_like_digits(tmp_path, rng, gz):
    arrays = mnist_like(rng)
    write_idx_set(tmp_path, arrays, gz=(gz,) * 4)
    (xtr, ytr), (xte, yte) = D.mnist(tmp_path)
    # digits()' form: float32 features (n, pixels) in the original scale, int64 labels
    assert xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert xtr.shape == (7, 784) and xte.shape == (4, 784) and ytr.shape == (7,)
    np.testing.assert_array_equal(xtr, arrays[0].reshape(7, 784))  # the files' order, 0..255
    np.testing.assert_array_equal(ytr, arrays[1])
    np.testing.assert_array_equal(xte, arrays[2].reshape(4, 784))
    np.testing.assert_array_equal(yte, arrays[3])
    assert xtr.flags.writeable

    (img, _), (img_test, _) = D.mnist(str(tmp_path), flatten=False)  # NCHW for a CNN
    assert img.shape == (7, 1, 28, 28) and img_test.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(img[:, 0], arrays[0])


def test_literal_headers_as_published(tmp_path):
    """Headers spelled out byte by byte as in the MNIST page (train-images starts 00 00 08 03
    00 00 ea 60 00 00 00 1c 00 00 00 1c), so the helper above cannot drift from the format."""
    pixels = bytes(range(256)) * 6 + bytes(range(32))  # 2 images x 784 bytes
    write(tmp_path / IDX_NAMES[0], bytes.fromhex("00000803 00000002 0000001c 0000001c") + pixels)
    write(tmp_path / IDX_NAMES[1], bytes.fromhex("00000801 00000002 07 03"))
    write(tmp_path / IDX_NAMES[2], bytes.fromhex("00000803 00000001 0000001c 0000001c")
          + pixels[:784], gz=True)
    write(tmp_path / IDX_NAMES[3], bytes.fromhex("00000801 00000001 09"), gz=True)
    (xtr, ytr), (xte, yte) = D.mnist(tmp_path, flatten=False)
    assert xtr.shape == (2, 1, 28, 28) and xtr[0, 0, 0, 5] == 5 and xtr[0, 0, 9, 4] == 0
    assert xtr[1, 0, 27, 27] == 31 and xtr.max() == 255
    assert ytr.tolist() == [7, 3] and yte.tolist() == [9] and xte[0, 0, 1, 0] == 28
    assert idx_bytes(np.zeros((2, 28, 28), np.uint8))[:16] == bytes.fromhex(
        "00000803 00000002 0000001c 0000001c")


def test_fashion_mnist_finds_torchvision_layout_mixed_compression_and_uint8(tmp_path, rng):
    arrays = mnist_like(rng, n_train=3, n_test=2)
    write_idx_set(tmp_path / "FashionMNIST" / "raw", arrays, gz=(True, False, False, True))
    (xtr, ytr), (xte, yte) = D.fashion_mnist(tmp_path, dtype=np.uint8)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int64
    np.testing.assert_array_equal(xtr.reshape(3, 28, 28), arrays[0])
    np.testing.assert_array_equal(yte, arrays[3])
    assert len(D.FASHION_MNIST_CLASSES) == 10 and D.FASHION_MNIST_CLASSES[9] == "Ankle boot"


def test_idx_files_are_sniffed_not_named_and_kaggle_names_are_found(tmp_path, rng):
    arrays = mnist_like(rng, n_train=2, n_test=2)
    names = [n.replace("-idx", ".idx") for n in IDX_NAMES]  # Kaggle's copies are named so
    files = write_idx_set(tmp_path, arrays, names=names)
    # a plain file that kept its .gz name (unpacked in place by some tools) still reads
    files[0].rename(files[0].with_name(files[0].name + ".gz"))
    (xtr, _), _ = D.mnist(tmp_path)
    np.testing.assert_array_equal(xtr.reshape(2, 28, 28), arrays[0])


def test_missing_idx_files_say_which_where_and_where_to_get_them(tmp_path, rng):
    arrays = mnist_like(rng)
    write_idx_set(tmp_path, arrays[:2], gz=(True, True))  # only the training files
    with pytest.raises(FileNotFoundError) as info:
        D.mnist(tmp_path)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte (test images)" in message
    assert "t10k-labels-idx1-ubyte (test labels)" in message
    assert "train-images-idx3-ubyte (" not in message  # present files are not listed missing
    assert str(tmp_path) in message and "ossci-datasets.s3.amazonaws.com/mnist" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="fashion-mnist.s3"):
        D.fashion_mnist(tmp_path / "empty", flatten=False)
    with pytest.raises(FileNotFoundError, match=r"nowhere \(no such directory yet\): train-"):
        D.mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"nowhere \(no such directory yet\): data_"):
        D.cifar10(tmp_path / "nowhere")
    with pytest.raises(NotADirectoryError, match="pass the directory"):
        D.mnist(tmp_path / "train-images-idx3-ubyte.gz")


def _idx_set_with(tmp_path, rng, which: int, data: bytes, gz: bool = False) -> Path:
    arrays = mnist_like(rng, n_train=3, n_test=2)
    files = write_idx_set(tmp_path, arrays)
    files[which].unlink()
    write(tmp_path / IDX_NAMES[which], data, gz)
    return tmp_path


@pytest.mark.parametrize("case,message", [
    ("swapped", r"magic number 0x00000801, expected 0x00000803 \(a labels file\?\)"),
    ("foreign", "is not an IDX file of images: magic number 0x89504e47"),
    ("short_header", "is truncated: its sizes take 12 bytes, only 2"),
    ("truncated", r"is truncated: its images \(3 x 28 x 28 bytes\) take 2352 bytes, only 2000"),
    ("truncated_gz", "corrupt or truncated gzip data"),
    ("huge_claim", "holds 4294967295 images but"),  # the headers are compared first
    ("trailing", "is longer than its header says"),
    ("empty", "no images"),
    ("bad_gzip", "corrupt or truncated gzip data"),
    ("count", "holds 3 images but .* holds 4 labels"),
    ("label", "label 10 at record 2 is not a class 0..9"),
    ("side", "training images are 28x28 but test images 14x14"),
])
def test_malformed_idx_files_raise_format_error(tmp_path, rng, case, message):
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    good = idx_bytes(images)
    which, data, gz = 0, good, False
    if case == "swapped":
        data = idx_bytes(np.zeros(3, np.uint8))
    elif case == "foreign":
        data = b"\x89PNG\r\n\x1a\n" + bytes(100)
    elif case == "short_header":
        data = good[:6]
    elif case == "truncated":
        data = good[:16 + 2000]
    elif case == "truncated_gz":
        data, gz = good, True
    elif case == "huge_claim":
        data = struct.pack(">4I", 0x803, 0xFFFFFFFF, 0xFFFF, 0xFFFF) + bytes(50)
    elif case == "trailing":
        data = good + b"\0"
    elif case == "empty":
        data = struct.pack(">4I", 0x803, 0, 28, 28)
    elif case == "count":
        which, data = 1, idx_bytes(np.zeros(4, np.uint8))
    elif case == "label":
        which, data = 1, idx_bytes(np.array([1, 9, 10], np.uint8))
    elif case == "side":
        which, data = 2, idx_bytes(np.zeros((2, 14, 14), np.uint8))
    folder = _idx_set_with(tmp_path, rng, which, data, gz)
    if case == "truncated_gz":  # cut the compressed stream short
        path = folder / (IDX_NAMES[0] + ".gz")
        path.write_bytes(path.read_bytes()[:-30])
    elif case == "bad_gzip":
        (folder / IDX_NAMES[0]).write_bytes(b"\x1f\x8b" + bytes(40))
    with pytest.raises(FormatError, match=message) as info:
        D.mnist(folder)
    assert isinstance(info.value, gc.GraphError)


# -- CIFAR-10 ----------------------------------------------------------------------------------


def test_cifar10_binary_records_as_nchw_rgb(tmp_path, rng):
    x_train, y_train, x_test, y_test = write_cifar(tmp_path / "cifar-10-batches-bin", rng)
    for path in (tmp_path, str(tmp_path / "cifar-10-batches-bin")):  # parent or the folder
        (xtr, ytr), (xte, yte) = D.cifar10(path, flatten=False)
        assert xtr.dtype == np.float32 and ytr.dtype == np.int64
        assert xtr.shape == (9, 3, 32, 32) and xte.shape == (3, 3, 32, 32)
        np.testing.assert_array_equal(xtr, x_train)  # batches 1..5 concatenated in order
        np.testing.assert_array_equal(ytr, y_train)
        np.testing.assert_array_equal(xte, x_test)
        np.testing.assert_array_equal(yte, y_test)
    # record layout: byte 1 + 32*r + c is red at (r, c), + 1024 green, + 2048 blue
    raw = (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").read_bytes()
    assert xtr[0, 1, 2, 3] == raw[1 + 1024 + 32 * 2 + 3]
    # by default flat, the same form as digits() and mnist() (API.md)
    (flat, _), (flat_test, _) = D.cifar10(tmp_path, dtype=np.uint8)
    assert flat.shape == (9, 3072) and flat.dtype == np.uint8 and flat_test.shape == (3, 3072)
    np.testing.assert_array_equal(flat, x_train.reshape(9, -1))
    assert D.CIFAR10_CLASSES[0] == "airplane" and len(D.CIFAR10_CLASSES) == 10


def test_missing_cifar_files_say_which_where_and_refuse_the_pickle_version(tmp_path, rng):
    write_cifar(tmp_path / "cifar-10-batches-bin", rng)
    (tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError) as info:
        D.cifar10(tmp_path)
    message = str(info.value)
    assert "missing in" in message and ": data_batch_3.bin." in message
    assert "cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in message

    pickles = tmp_path / "py"
    write(pickles / "cifar-10-batches-py" / "data_batch_1", b"\x80\x04not read")
    with pytest.raises(FileNotFoundError, match="pickle"):
        D.cifar10(pickles)
    archive = tmp_path / "tar"
    write(archive / "cifar-10-binary.tar.gz", b"\x1f\x8b")
    with pytest.raises(FileNotFoundError, match="extract it first"):
        D.cifar10(archive)


@pytest.mark.parametrize("case,message", [
    ("truncated", r"not a whole number of 3073-byte records .*truncated"),
    ("empty", "0 bytes is not a whole number"),
    ("label", "label 200 at record 1 is not a class 0..9"),
])
def test_malformed_cifar_batches_raise_format_error(tmp_path, rng, case, message):
    write_cifar(tmp_path, rng)
    path = tmp_path / "data_batch_4.bin"
    data = bytearray(path.read_bytes() + cifar_batch(rng, 2)[2])
    if case == "truncated":
        data = data[:-1]
    elif case == "empty":
        data = b""
    else:
        data[3073] = 200
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=message):
        D.cifar10(tmp_path)


def test_pixel_dtype_must_hold_0_to_255(tmp_path, rng):
    write_cifar(tmp_path, rng)
    for bad in (np.int8, np.bool_, np.complex64):
        with pytest.raises(ValueError, match="holds 0..255"):
            D.cifar10(tmp_path, dtype=bad)
    (x, _), _ = D.cifar10(tmp_path, dtype=np.float64)
    assert x.dtype == np.float64


def test_the_headers_are_compared_before_any_data_is_decompressed(tmp_path, rng):
    """A 150 kB gzip file that claims and holds 200,000 images (157 MB) beside 3 labels: the
    counts differ, which the headers say; the images were decompressed first (1.6 GB peak
    for 2,000,000 of them). Counted with tracemalloc, not timed."""
    import tracemalloc
    import zlib

    folder = _idx_set_with(tmp_path, rng, 0, b"")
    (folder / IDX_NAMES[0]).unlink()
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip framing
    parts = [packer.compress(struct.pack(">4I", 0x803, 200_000, 28, 28))]
    parts += [packer.compress(bytes(28 * 28 * 1000)) for _ in range(200)]
    (folder / (IDX_NAMES[0] + ".gz")).write_bytes(b"".join(parts) + packer.flush())
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="holds 200000 images but .* holds 3 labels"):
            D.mnist(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak


def test_running_out_of_memory_names_the_set_and_what_would_help(tmp_path, rng, monkeypatch):
    """Consistent files of huge images (30000 x 30000 from 4 MB of gzip) ended in NumPy's own
    MemoryError; the error says which set, how many images of what size, and dtype=np.uint8."""
    write_idx_set(tmp_path, mnist_like(rng))

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate")

    monkeypatch.setattr(D, "_read_idx", no_memory)
    with pytest.raises(MemoryError, match=r"MNIST: not enough memory for the 11 images of "
                                          r"28x28 pixels in .* \(dtype=np.uint8"):
        D.mnist(tmp_path)
