"""The ONNX errors: what graphc cannot translate, named precisely (never approximated)."""

from __future__ import annotations

from ..errors import GraphError


class UnsupportedError(GraphError):
    """An ONNX op, attribute, input or dtype graphc does not support (import), or a graphc op
    that has no ONNX form (export). The message names the node, the op type and the opset."""


class StaticValueNeeded(UnsupportedError):
    """A computed tensor is used where graphc needs a value known at import (a shape, axes,
    slice bounds). The ONNX backend answers it by specializing on integer inputs' values."""
