"""ONNX in and out: ``gc.onnx.load`` imports a model into the current graph, ``gc.onnx.export``
writes a declared graph as an ONNX file, ``graphc.onnx.backend`` and ``backend_llvm`` run
ONNX models for ``onnx.backend.test``.

Importing this package does not import ``onnx``: the translation modules are loaded on the
first call, and without the ``onnx`` package installed that call raises an ImportError that
names the extra to install (``pip install 'graphc[onnx]'``).
"""

from __future__ import annotations

from typing import Any

from .errors import UnsupportedError

__all__ = ["load", "export", "UnsupportedError", "require_onnx"]

EXTRA_HINT = "graphc's ONNX support needs the onnx package: pip install 'graphc[onnx]'"


def require_onnx():
    """The ``onnx`` module, or an ImportError naming the extra that brings it."""
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - exercised with onnx hidden
        raise ImportError(EXTRA_HINT) from exc
    return onnx


def load(path_or_model: Any):
    """Read an ONNX model (a path or a ``ModelProto``) as a callable graphc model.

    ``model = gc.onnx.load("net.onnx")``; ``x = model.placeholders()`` (one placeholder per
    model input, ``dim_param``s as symbolic dims); ``y = model(*x)`` adds the model's ops to
    the current graph. Float initializers become parameters (``model.parameters()``, made once
    and shared by every graph the model is called in, as a module's), so the
    imported model can be differentiated, trained and compiled on every backend.
    """
    require_onnx()
    from .importer import load as _load

    return _load(path_or_model)


def export(outputs_or_fn, path, inputs=None, opset: int | None = None):
    """Write the declared graph of `outputs_or_fn` (a tensor, a list of tensors or a compiled
    ``gc.Function``) to `path` as an ONNX model and return the ``ModelProto``."""
    require_onnx()
    from .exporter import export as _export

    return _export(outputs_or_fn, path, inputs=inputs, opset=opset)
