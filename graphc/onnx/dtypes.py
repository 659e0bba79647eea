"""ONNX element types <-> graphc dtypes (bool, int32, int64, float32, float64)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

ONNX_TO_NUMPY = {
    TensorProto.BOOL: np.dtype(bool),
    TensorProto.INT32: np.dtype(np.int32),
    TensorProto.INT64: np.dtype(np.int64),
    TensorProto.FLOAT: np.dtype(np.float32),
    TensorProto.DOUBLE: np.dtype(np.float64),
}
NUMPY_TO_ONNX = {v: k for k, v in ONNX_TO_NUMPY.items()}


def type_name(elem_type: int) -> str:
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"element type {elem_type}"


def to_numpy(elem_type: int, where: str) -> np.dtype:
    """The NumPy dtype of an ONNX element type graphc supports; UnsupportedError otherwise."""
    from .errors import UnsupportedError

    try:
        return ONNX_TO_NUMPY[elem_type]
    except KeyError:
        raise UnsupportedError(
            f"{where}: ONNX type {type_name(elem_type)} is not supported by graphc "
            "(supported: BOOL, INT32, INT64, FLOAT, DOUBLE)") from None


def array_of(tensor: TensorProto, where: str) -> np.ndarray:
    """A tensor's values from the file, refused unless they are booleans or numbers: a STRING
    tensor would carry Python strings into the importer's shape arithmetic, where sympy
    parses (evaluates) strings, and graphc has no string tensors to give it anyway."""
    from onnx import numpy_helper

    from .errors import UnsupportedError

    if tensor.data_type in (TensorProto.STRING, TensorProto.COMPLEX64, TensorProto.COMPLEX128):
        raise UnsupportedError(f"{where}: ONNX tensor {tensor.name!r} holds "
                               f"{type_name(tensor.data_type)} values, which graphc does not "
                               "support (supported: BOOL, INT32, INT64, FLOAT, DOUBLE)")
    if tensor.data_location == TensorProto.EXTERNAL:
        # (onnx.load of a path reads external data, inside the model's folder only; handed
        # bytes or a proto, numpy_helper would read the location from the current directory)
        raise UnsupportedError(f"{where}: ONNX tensor {tensor.name!r} keeps its data in an "
                               "external file; load the model from its path, which reads it")
    if any(d < 0 for d in tensor.dims):
        raise UnsupportedError(f"{where}: ONNX tensor {tensor.name!r} has a negative dim in "
                               f"{list(tensor.dims)}")
    try:
        values = numpy_helper.to_array(tensor)
    except (ValueError, TypeError, MemoryError) as exc:
        raise UnsupportedError(f"{where}: ONNX tensor {tensor.name!r} of dims "
                               f"{list(tensor.dims)} does not hold its values "
                               f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if values.dtype.kind in "OSUc":  # (bfloat16 and the float8 types come as NumPy's
        # extension dtypes, numbers a Cast can take; strings and objects never reach sympy)
        raise UnsupportedError(f"{where}: ONNX tensor {tensor.name!r} holds {values.dtype} "
                               "values, which graphc does not support")
    return values


def to_onnx(dtype) -> int:
    from .errors import UnsupportedError

    try:
        return NUMPY_TO_ONNX[np.dtype(dtype)]
    except KeyError:
        raise UnsupportedError(f"dtype {dtype} has no ONNX export") from None
