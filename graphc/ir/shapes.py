"""Symbolic dimensions: how shapes are written, compared, broadcast and checked.

A dimension is a Python ``int`` or a sympy expression over named positive-integer symbols
(``"N"`` -> ``Symbol("N", positive=True, integer=True)``). Shape rules decide what they can at
construction time. When a rule needs a fact that sympy cannot decide yet (``N == 5``,
``H - 4 >= 1``), the fact is recorded on the node as an *assumption* and checked at call time,
once the placeholders have bound every symbol to a size.

Symbolic dims never broadcast: a dim only broadcasts when it is literally ``1``. So
``(N, 3) + (5, 3)`` assumes ``N == 5`` rather than guessing that N might be 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Union

import numpy as np
import sympy

Dim = Union[int, sympy.Expr]  # noqa: UP007 - a runtime alias, kept readable
Shape = tuple[Dim, ...]


#: The assumptions of every dimension symbol (what `sym` gives a name; what a file must say).
DIM_ASSUMPTIONS = {"positive": True, "integer": True}


def check_dim_name(name) -> str:
    """`name` if it may name a symbolic dimension: an ASCII identifier (``[A-Za-z_][A-Za-z0-9_]*``,
    at most ``graphc.ir.text.MAX_IDENTIFIER`` characters). Dimension names become variables
    in generated code and are written to files, so nothing else is accepted (ShapeError)."""
    from ..errors import ShapeError
    from .text import MAX_IDENTIFIER, is_identifier

    if not is_identifier(name):
        raise ShapeError(f"symbolic dimension name {name!r} must be an ASCII identifier "
                         f"(letters, digits and _, not starting with a digit, at most "
                         f"{MAX_IDENTIFIER} characters), e.g. 'N' or 'batch_size'")
    return name


@cache
def sym(name: str) -> sympy.Symbol:
    """The symbol for a named dimension; the same name is the same symbol everywhere."""
    return sympy.Symbol(check_dim_name(name), **DIM_ASSUMPTIONS)


def as_dim(d) -> Dim:
    """Normalize one shape entry: int-like -> int, str -> symbol, sympy integer -> int."""
    from ..errors import ShapeError

    if isinstance(d, (bool, np.bool_)):
        raise ShapeError(f"shape entry {d!r} must be an int or a dimension name")
    if isinstance(d, (int, np.integer)):
        if d < 0:
            raise ShapeError(f"shape entry {d} is negative")
        return int(d)
    if isinstance(d, str):
        return sym(d)
    if isinstance(d, sympy.Expr):
        if d.is_Integer:
            return int(d)
        for s in d.free_symbols:  # the symbols of a dimension are named dimensions only
            if type(s) is not sympy.Symbol or s != sym(s.name):
                raise ShapeError(f"shape entry {d!r}: {s!r} is not a dimension symbol (write "
                                 f"dimensions as names, e.g. 'N', or build them with "
                                 f"graphc.ir.shapes.sym)")
        return d
    raise ShapeError(f"shape entry {d!r} must be an int or a dimension name (str)")


def normalize_shape(shape: Iterable) -> Shape:
    """A shape as a tuple of dims. A bare int is a 1-d shape, as NumPy reads it; a bare str
    is refused (it was split into its letters: "batch" made a 5-d shape)."""
    if isinstance(shape, (str, bytes)):
        from ..errors import ShapeError

        raise ShapeError(f"a shape is a tuple or list of ints and dimension names, got the "
                         f"str {shape!r} (one symbolic dimension: ({shape!r},))")
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        return (as_dim(shape),)
    return tuple(as_dim(d) for d in shape)


def format_dim(d: Dim) -> str:
    return str(d)


def format_shape(shape: Sequence[Dim]) -> str:
    inner = ", ".join(format_dim(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def dims_equal(a: Dim, b: Dim) -> bool | None:
    """True/False when decidable now, None when it depends on the symbols' values."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    diff = sympy.expand(sympy.sympify(a, strict=True) - sympy.sympify(b, strict=True))
    if diff == 0:
        return True
    if diff.is_number:
        return False
    rel = sympy.Eq(a, b)
    if rel is sympy.true:
        return True
    if rel is sympy.false:
        return False
    return None


def _with_zero_allowed(relation):
    """`relation` with its dimension symbols nonnegative rather than positive."""
    zero_allowed = {s: sympy.Dummy(s.name, integer=True, nonnegative=True)
                    for s in relation.free_symbols}
    return relation.xreplace(zero_allowed)


def _evaluated(relation):
    """`relation` (a relation, or And/Or/Not of relations, built unevaluated) evaluated
    with the assumptions of its symbols: True, False, or a relation sympy cannot settle."""
    if isinstance(relation, (sympy.Rel, sympy.And, sympy.Or, sympy.Not)):
        return type(relation)(*(_evaluated(a) for a in relation.args))
    return relation


def decide(relation) -> bool | None:
    """Decide a sympy relation (or a plain bool) now, if possible."""
    if isinstance(relation, (bool, np.bool_)):
        return bool(relation)
    if relation is sympy.true:
        return True
    if relation is sympy.false:
        return False
    return None


def prod(dims: Iterable[Dim]) -> Dim:
    out: Dim = 1
    for d in dims:
        out = out * d
    return as_dim(sympy.sympify(out, strict=True)) if not isinstance(out, int) else out


def is_one(d: Dim) -> bool:
    return isinstance(d, int) and d == 1


class ShapeChecks:
    """Collects the facts a shape rule needed but could not decide (checked at call time).

    Every ``ShapeError`` raised here has a message without the op name or source line; the
    graph adds those when it builds the node.
    """

    def __init__(self) -> None:
        self.assumptions: list[tuple[sympy.Basic, str]] = []

    def equal(self, a: Dim, b: Dim, what: str) -> Dim:
        """Require a == b; return the more concrete of the two."""
        from ..errors import ShapeError

        verdict = dims_equal(a, b)
        if verdict is False:
            raise ShapeError(f"{what}: {format_dim(a)} != {format_dim(b)}")
        if verdict is None:
            self.assumptions.append((sympy.Eq(a, b), what))
        return a if isinstance(a, int) or not isinstance(b, int) else b

    def holds(self, relation, what: str) -> None:
        """Require a relation (e.g. ``out_size >= 1``) to hold. Give it unevaluated
        (``sympy.Ge(a, b, evaluate=False)``): a relation sympy settles with the symbols
        positive, as they are declared, is checked again with them allowed to be 0, since a
        call may bind a batch to 0 (``x[-1]`` of an empty batch read before its data); if
        it may fail then, it is checked at call time."""
        from ..errors import ShapeError

        verdict = decide(relation)
        if verdict is None and isinstance(relation, (sympy.Rel, sympy.And, sympy.Or)):
            verdict = decide(_evaluated(relation))  # with the symbols positive
            if verdict is True and decide(_evaluated(_with_zero_allowed(relation))) is not True:
                verdict = None  # it may fail for a size of 0: checked at the call
        if verdict is False:
            raise ShapeError(what)
        if verdict is None:
            self.assumptions.append((relation, what))

    def not_empty(self, size: Dim, empty: str, needed: str) -> None:
        """Require a size of 1 or more: a ShapeError saying `empty` now for a fixed size of
        0; for a symbolic one, the fact (`needed`) checked at call time and never decided
        here: the symbols are positive for simplification, but a batch may be bound to 0."""
        from ..errors import ShapeError

        if isinstance(size, (int, sympy.Integer)):
            if int(size) < 1:
                raise ShapeError(empty)
            return
        self.assumptions.append((sympy.Ge(size, 1, evaluate=False), needed))

    def broadcast(self, *shapes: Shape) -> Shape:
        """NumPy broadcasting over possibly symbolic shapes."""
        from ..errors import ShapeError

        ndim = max((len(s) for s in shapes), default=0)
        padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
        out: list[Dim] = []
        for axis in range(ndim):
            dim: Dim = 1
            for s in padded:
                d = s[axis]
                if is_one(d):
                    continue
                if is_one(dim):
                    dim = d
                    continue
                verdict = dims_equal(dim, d)
                if verdict is False:
                    listed = " and ".join(format_shape(s) for s in shapes)
                    raise ShapeError(f"cannot broadcast shapes {listed} (axis {axis - ndim})")
                if verdict is None:
                    self.assumptions.append(
                        (sympy.Eq(dim, d), f"broadcast needs {format_dim(dim)} == {format_dim(d)}")
                    )
                    if isinstance(d, int):
                        dim = d
            out.append(dim)
        return tuple(out)


def evaluate_dim(d: Dim, binding: dict) -> int:
    """The concrete size of a dim once the symbols are bound."""
    if isinstance(d, (int, np.integer)):
        return int(d)
    value = sympy.sympify(sympy.sympify(d).xreplace(binding), strict=True)
    if not value.is_Integer:
        from ..errors import ShapeError

        raise ShapeError(f"dimension {d} is not an integer for {_fmt_binding(binding)} ({value})")
    return int(value)


def evaluate_shape(shape: Sequence[Dim], binding: dict) -> tuple[int, ...]:
    return tuple(evaluate_dim(d, binding) for d in shape)


def evaluate_attr(value, binding: dict):
    """Substitute bound sizes into an attribute value (ints, exprs, nested tuples)."""
    if isinstance(value, sympy.Expr):
        return evaluate_dim(value, binding)
    if isinstance(value, tuple):
        return tuple(evaluate_attr(v, binding) for v in value)
    return value


def attr_has_symbols(value) -> bool:
    if isinstance(value, sympy.Expr):
        return bool(value.free_symbols)
    if isinstance(value, tuple):
        return any(attr_has_symbols(v) for v in value)
    return False


def _fmt_binding(binding: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(binding.items(), key=lambda kv: str(kv[0])))
