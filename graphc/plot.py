"""Pictures of training: loss/accuracy curves (matplotlib, the optional ``plot`` extra) and
image grids (written as PNG by hand, no dependency).

``curves`` needs matplotlib (``pip install 'graphc[plot]'``, included in the ``dev`` extra);
without it, it raises ``MissingDependencyError`` saying so. ``image_grid`` always works.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .files import atomic_write

__all__ = ["MissingDependencyError", "curves", "image_grid", "write_png"]


class MissingDependencyError(ImportError):
    """An optional package needed by this helper is not installed."""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError(
            "drawing curves needs matplotlib, an optional extra: pip install 'graphc[plot]' "
            "(or .[dev] in a checkout)") from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def curves(history, path: str | os.PathLike, title: str | None = None) -> Path:
    """Write the loss curves (training and validation) and, when recorded, the accuracy
    curves of a ``gc.train.History`` (or a dict of per-epoch lists) to a PNG/SVG/PDF.

    A history with no loss or accuracy values (``fit`` for 0 epochs) is a GraphError saying
    so: there is nothing to draw, and an empty picture would hide that."""
    from .errors import GraphError

    plt = _pyplot()
    logs = history.history if hasattr(history, "history") else dict(history)
    logs = {k: v for k, v in logs.items() if len(v)}  # a key with no epochs draws nothing
    panels = [keys for keys in ([k for k in ("loss", "val_loss") if k in logs],
                                [k for k in ("accuracy", "val_accuracy") if k in logs]) if keys]
    if not panels:
        raise GraphError("gc.plot.curves: the history holds no loss or accuracy values (no "
                         "epoch was trained), so there are no curves to draw")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, keys in zip(axes[0], panels):
        for key in keys:
            epochs = np.arange(1, len(logs[key]) + 1)
            ax.plot(epochs, logs[key], marker="o", markersize=3,
                    label=key.replace("_", " "), linestyle="--" if key.startswith("val") else "-")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if "accuracy" in keys[0] else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buffer.getvalue())


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an 8-bit grayscale (H, W) or RGB (H, W, 3) uint8 image as a PNG file."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"an image is (H, W) or (H, W, 3), got shape {image.shape}")
    h, w = image.shape[:2]
    color = 2 if image.ndim == 3 else 0
    rows = image.reshape(h, -1)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return atomic_write(path, png)


def image_grid(images: np.ndarray, path: str | os.PathLike, ncols: int | None = None,
               scale: int = 4, pad: int = 1) -> Path:
    """Tile images (n, H, W) or (n, 1, H, W) into one grayscale PNG, each scaled up `scale`
    times (nearest neighbour). Values are mapped from their [min, max] range to 0..255."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"images must be (n, H, W) or (n, 1, H, W), got {images.shape}")
    lo, hi = images.min(), images.max()
    images = (images - lo) / (hi - lo) if hi > lo else np.zeros_like(images)
    n, h, w = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad))
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h,
             pad + c * (w + pad):pad + c * (w + pad) + w] = img
    grid = np.kron(grid, np.ones((scale, scale)))
    return write_png(path, np.round(grid * 255))
