"""Exception types and the user source location carried by every node.

Errors in a graph compiler are most useful when they point at the line of *user* code that
created the offending node, not at a line inside graphc. `capture_location` walks up the
call stack to the first frame whose module is not part of graphc (graphc, graphc.passes,
graphc.backends all share the ``graphc`` module prefix once installed).
"""

from __future__ import annotations

import functools
import linecache
import os
import stat
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass


class GraphError(Exception):
    """Bad graph construction, a non-differentiable path, or a misuse of the graph API."""


class ShapeError(GraphError):
    """Incompatible shapes or dtypes, at construction time or at call time."""


class ArgumentError(GraphError, TypeError):
    """A compiled function was called with missing, unknown or duplicated arguments."""


class ScalarRangeError(GraphError, OverflowError):
    """A Python number that the dtype it meets cannot hold (``int32_tensor + 2**40``): an
    OverflowError, as NumPy raises for the same expression, rather than a wrapped value."""


class BackendError(Exception):
    """A backend cannot compile or run here: missing lowering, no device, missing toolchain."""


_MAX_SOURCE_BYTES = 16 << 20  # larger "source files" are not read for error messages


class IndexRangeError(IndexError):
    """An id or label outside its range, raised by an op's NumPy semantics (take, one_hot) and
    turned by every backend into the same BackendError (`index_error_message`)."""

    def __init__(self, what: str, value: int, bound: int) -> None:
        super().__init__(f"{what} {value} is outside [0, {bound})")
        self.what, self.value, self.bound = what, int(value), int(bound)


#: the kind of index each op checks, by op name (the native kernels report a code)
INDEX_KINDS = {"take": "id", "scatter_add": "id", "one_hot": "label"}


def index_error_message(node, value: int, bound: int) -> str:
    """The one message for an index out of range, on every backend: op, value, bounds, line."""
    what = INDEX_KINDS.get(node.op.name, "index")
    return (f"the compiled step failed: {node.op.name}: {what} {value} is outside "
            f"[0, {bound}){at(node.loc)}\n  no parameter was updated")


@dataclass(frozen=True)
class SourceLocation:
    """Where in user code a node was created."""

    filename: str
    lineno: int
    function: str

    @property
    def line(self) -> str:
        """The text of the line, when the filename names a source file that can be read
        (locations can come from a saved file: a device, a pipe or a huge file is not read)."""
        if self.filename not in linecache.cache:
            try:
                info = os.stat(self.filename)
            except (OSError, ValueError):
                return ""
            if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_SOURCE_BYTES:
                return ""
        return linecache.getline(self.filename, self.lineno).strip()

    def short(self) -> str:
        name = self.filename.rsplit("/", 1)[-1]
        return f"{name}:{self.lineno}"

    def __str__(self) -> str:
        text = self.line
        where = f"{self.filename}:{self.lineno}"
        return f"{where} ({text})" if text else where


_INTERNAL_PREFIXES = ("graphc", "sympy", "numpy", "networkx", "contextlib", "functools")


def capture_location() -> SourceLocation | None:
    """Return the first stack frame outside graphc (the user's line), or None."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        # (a package and its modules: the user's graphc_models.py is the user's code)
        if module.partition(".")[0] not in _INTERNAL_PREFIXES:
            code = frame.f_code
            return SourceLocation(code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return None


def at(loc: SourceLocation | None) -> str:
    """Format a location suffix for error messages."""
    return f"\n  created at {loc}" if loc is not None else ""


_calls = threading.local()


def user_facing(name: str) -> Callable[[Callable], Callable]:
    """Decorate a DSL function so that a GraphError raised anywhere beneath it names the
    function the user called (``conv2d: ...``, not the internal ``conv``) and the user's line.

    Only the outermost decorated call rewrites the message: `F.mse_loss` calling `sub` reports
    ``mse_loss: sub: cannot broadcast ...``.
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            depth = getattr(_calls, "depth", 0)
            _calls.depth = depth + 1
            try:
                return fn(*args, **kwargs)
            except GraphError as exc:
                if depth:
                    raise
                message = str(exc)
                if not message.startswith((f"{name}:", f"{name} ")):
                    message = f"{name}: {message}"
                if "created at" not in message:
                    message += at(capture_location())
                raise type(exc)(message) from None
            finally:
                _calls.depth = depth

        return wrapper

    return decorate
