"""Sympy expressions as JSON trees, rebuilt by dispatch over a whitelist of node types.

Symbolic shapes (``floor((H - 3)/2) + 1``) and the ``expr`` of elementwise nodes must survive
a save/load round trip, but a file must never make us run code: no ``sympify``, ``eval`` or
pickle. An expression is written as nested ``{"t": TYPE, ...}`` objects; loading looks TYPE
up in the table below and calls that class on the rebuilt arguments. Anything not in the
table — on save or on load — is an error.

A file is data, so everything in a tree is checked, not trusted:

* symbols are never free text. Their names become code in every backend (a variable of the
  NumPy program, a value of the LLVM module), so a symbol must be one that graphc itself
  makes: in an elementwise expression over n inputs, ``x0 .. x{n-1}`` (exactly
  ``graphc.ops.expr.sym_input``); anywhere else, a dimension (an ASCII identifier, exactly
  ``graphc.ir.shapes.sym``). The file's assumptions must agree with that symbol's, and the
  symbol graphc makes is what comes back;
* literals are bounded: integers (and each side of a rational) fit in 64 bits, a float is a
  decimal literal with a precision of at most 4096 bits, a numeric power has a small exponent
  (sympy would evaluate ``10**(10**18)`` while simplifying);
* trees are bounded: at most `MAX_DEPTH` levels and `MAX_NODES` nodes (the rebuilding
  recursion never reaches Python's limit).

``to_json`` applies the same rules, so whatever ``gc.save`` writes, ``gc.load`` accepts.
"""

from __future__ import annotations

import re

import sympy
from sympy.core import relational
from sympy.core.assumptions import _assume_defined
from sympy.functions.elementary.piecewise import ExprCondPair

from ..errors import GraphError
from ..ir.shapes import sym
from ..ir.text import MAX_IDENTIFIER, is_identifier
from ..ops import expr as E

#: Sympy classes built from their rebuilt args: ``cls(*args)``.
_COMPOUND: dict[str, type] = {
    cls.__name__: cls for cls in (
        sympy.Add, sympy.Mul, sympy.Pow, sympy.exp, sympy.log, sympy.tanh, sympy.Abs,
        sympy.sign, sympy.sin, sympy.cos, sympy.tan, sympy.atan, sympy.erf, sympy.floor,
        sympy.ceiling, sympy.Max, sympy.Min, sympy.Mod,
        sympy.Piecewise, ExprCondPair, sympy.And, sympy.Or, sympy.Not,
        relational.Equality, relational.Unequality, relational.StrictLessThan,
        relational.LessThan, relational.StrictGreaterThan, relational.GreaterThan,
        *E.CUSTOM_FUNCTIONS,
    )
}
_ATOMS = {"true": sympy.true, "false": sympy.false, "oo": sympy.oo, "-oo": -sympy.oo,
          "nan": sympy.nan, "zoo": sympy.zoo, "E": sympy.E, "pi": sympy.pi}
_ASSUMPTIONS = frozenset(_assume_defined)

MAX_DEPTH = 300  # levels of one tree (fused trees that compile: about 250; JSON: 2 per level)
MAX_NODES = 100_000  # nodes of one tree
MAX_INT_BITS = 64  # an Integer, and the numerator and denominator of a Rational
MAX_FLOAT_PRECISION = 4096  # bits of a Float
MAX_POWER = 1024  # |numerator| and denominator of the exponent of a numeric power
_INTEGER = re.compile(r"-?[0-9]{1,40}")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,4})?|-?inf|nan")
_INPUT = re.compile(r"x(0|[1-9][0-9]{0,5})")
_FIELDS = {"atom": {"t", "v"}, "Integer": {"t", "v"}, "Rational": {"t", "p", "q"},
           "Float": {"t", "v", "p"}, "Symbol": {"t", "name", "assumptions"}}
_COMPOUND_FIELDS = {"t", "args"}


def _symbol(name, inputs: int | None) -> sympy.Symbol:
    """The symbol graphc makes for `name` where it appears: the input symbol x<i> (i <
    `inputs`) of an elementwise expression, or else a dimension (GraphError otherwise)."""
    if inputs is not None:
        match = _INPUT.fullmatch(name) if isinstance(name, str) else None
        if match is None or int(match.group(1)) >= inputs:
            names = f"x0 .. x{inputs - 1}" if inputs > 1 else "x0" if inputs else "none"
            raise GraphError(f"an elementwise expression over {inputs} input(s) uses the symbol "
                             f"{short(name)}; its symbols are {names}")
        return E.sym_input(int(match.group(1)))
    if not is_identifier(name):
        raise GraphError(f"bad dimension name {short(name)} (an ASCII identifier of at most "
                         f"{MAX_IDENTIFIER} characters)")
    return sym(name)


def _check_literal(e) -> None:
    if isinstance(e, sympy.Rational):  # (Integers are Rationals with q = 1)
        if max(abs(int(e.p)).bit_length(), int(e.q).bit_length()) > MAX_INT_BITS:
            raise GraphError(f"the number {e} does not fit in {MAX_INT_BITS} bits")
    elif isinstance(e, sympy.Float) and not 1 <= e._prec <= MAX_FLOAT_PRECISION:
        raise GraphError(f"a float of {e._prec} bits of precision")
    elif type(e) is sympy.Pow and e.base.is_number and e.exp.is_number:
        # a power of numbers is evaluated exactly (Python integers) when the code is made:
        # its base must be a number written out and its exponent a bounded rational, or
        # ((2**1024)**1024)**1024 would take the loader minutes and gigabytes
        if not (e.base.is_Number and e.exp.is_Rational):
            raise GraphError(f"a power of numbers {short(e)} whose base or exponent is itself "
                             "computed")
        if abs(int(e.exp.p)) > MAX_POWER or int(e.exp.q) > MAX_POWER:
            raise GraphError(f"the numeric power {e.base}**{e.exp} has too large an exponent "
                             f"(at most {MAX_POWER})")


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0

    def enter(self, depth: int) -> None:
        self.nodes += 1
        if depth > MAX_DEPTH:
            raise GraphError(f"an expression nested more than {MAX_DEPTH} levels deep")
        if self.nodes > MAX_NODES:
            raise GraphError(f"an expression of more than {MAX_NODES} nodes")


def to_json(e, inputs: int | None = None) -> dict:
    """A JSON-ready tree of a sympy expression: an elementwise expression over `inputs`
    inputs, or (None) a dimension expression. Raises GraphError for what `from_json` would
    refuse: an unsupported type, a symbol graphc does not make, a literal or tree too large."""
    return _to_json(e, inputs, _Budget(), 0)


def _to_json(e, inputs, budget: _Budget, depth: int) -> dict:
    budget.enter(depth)
    for name, atom in _ATOMS.items():
        if e is atom:  # sympy's singletons
            return {"t": "atom", "v": name}
    _check_literal(e)
    if isinstance(e, sympy.Integer):
        return {"t": "Integer", "v": str(int(e))}
    if isinstance(e, sympy.Rational):
        return {"t": "Rational", "p": str(e.p), "q": str(e.q)}
    if isinstance(e, sympy.Float):  # the double's value and the Float's precision
        return {"t": "Float", "v": repr(float(e)), "p": int(e._prec)}
    if isinstance(e, sympy.Symbol) and type(e) is sympy.Symbol:
        if _symbol(e.name, inputs) != e:
            kind = "an elementwise input" if inputs is not None else "a dimension"
            raise GraphError(f"cannot save the symbol {short(e.name)} with assumptions "
                             f"{e.assumptions0}: it is not {kind} symbol")
        return {"t": "Symbol", "name": e.name,
                "assumptions": {k: v for k, v in e.assumptions0.items() if v is not None}}
    name = type(e).__name__
    if _COMPOUND.get(name) is type(e):
        return {"t": name, "args": [_to_json(a, inputs, budget, depth + 1) for a in e.args]}
    raise GraphError(f"cannot save the sympy expression {e} (type {name} is not supported)")


def from_json(tree, inputs: int | None = None) -> sympy.Basic:
    """Rebuild an expression written by `to_json` with the same `inputs` (the number of
    inputs of the elementwise node whose expression it is, or None for dimensions); anything
    unexpected — a type, a symbol, a literal, a size — is a GraphError."""
    return _from_json(tree, inputs, _Budget(), 0)


def _from_json(tree, inputs, budget: _Budget, depth: int) -> sympy.Basic:
    budget.enter(depth)
    if not isinstance(tree, dict) or not isinstance(tree.get("t"), str):
        raise GraphError(f"bad expression node {short(tree)}")
    t = tree["t"]
    fields = _FIELDS.get(t, _COMPOUND_FIELDS)
    if set(tree) != fields:
        raise GraphError(f"a {short(t)} expression node has the fields {sorted(fields)}, not "
                         f"{short(sorted(tree))}")
    if t == "atom":
        v = tree.get("v")
        if not isinstance(v, str) or v not in _ATOMS:
            raise GraphError(f"unknown sympy constant {short(v)}")
        return _ATOMS[v]
    if t == "Integer":
        return _checked(sympy.Integer(_integer(tree.get("v"))))
    if t == "Rational":
        p, q = _integer(tree.get("p")), _integer(tree.get("q"))
        if q <= 0:
            raise GraphError(f"bad rational {p}/{q}")
        return _checked(sympy.Rational(p, q))
    if t == "Float":
        v, prec = tree.get("v"), tree.get("p")
        if not isinstance(v, str) or _FLOAT.fullmatch(v) is None or len(v) > 40:
            raise GraphError(f"bad float literal {short(v)}")
        if type(prec) is not int or not 1 <= prec <= MAX_FLOAT_PRECISION:
            raise GraphError(f"bad float precision {short(prec)}")
        return sympy.Float(float(v), precision=prec)
    if t == "Symbol":
        name, assumptions = tree["name"], tree["assumptions"]
        symbol = _symbol(name, inputs)
        known = symbol.assumptions0
        if not isinstance(assumptions, dict) or not all(
                k in _ASSUMPTIONS and isinstance(v, bool) and known.get(k) in (None, v)
                for k, v in assumptions.items()):
            raise GraphError(f"bad assumptions for the symbol {name!r}: {short(assumptions)}")
        return symbol
    cls = _COMPOUND.get(t)
    args = tree.get("args")
    if cls is None or not isinstance(args, list):
        raise GraphError(f"unsupported sympy node type {short(t)}")
    rebuilt = [_from_json(a, inputs, budget, depth + 1) for a in args]
    try:
        # exactly the saved computation: sympy's automatic rewriting would turn x0/2.0 into
        # 0.5*x0, x > 0.0 into x > 0 or y - y into 0 (fused expressions are composed
        # unevaluated)
        _check_structure(cls, rebuilt)
        built = E.unevaluated(cls, tuple(rebuilt))
        _check_literal(built)  # (a numeric power)
    except GraphError:
        raise
    except Exception as exc:  # sympy refused the arguments (arity, types): the file is bad
        raise GraphError(f"bad {t} node: {type(exc).__name__}: {short(str(exc))}") from None
    return built


def _check_structure(cls: type, args: list) -> None:
    """What the constructors of the node types built without evaluation would have checked:
    a Piecewise of (expression, condition) pairs, conditions and logic over booleans. (An
    input symbol is a sympy Boolean too: a condition may be an input itself, `where`'s mask,
    which every backend reads as nonzero, as NumPy reads a mask.)"""
    boolean = sympy.logic.boolalg.Boolean
    if cls is sympy.Piecewise:
        ok = bool(args) and all(isinstance(a, ExprCondPair) for a in args)
    elif cls is ExprCondPair:
        ok = len(args) == 2 and isinstance(args[0], sympy.Expr) and isinstance(args[1], boolean)
    elif cls in (sympy.And, sympy.Or):
        ok = len(args) >= 2 and all(isinstance(a, boolean) for a in args)
    elif cls is sympy.Not:
        ok = len(args) == 1 and isinstance(args[0], boolean)
    else:
        return
    if not ok:
        raise GraphError(f"bad {cls.__name__} node: its arguments are "
                         f"{short([type(a).__name__ for a in args])}")


def _checked(e):
    _check_literal(e)
    return e


def _integer(v) -> int:
    if not isinstance(v, str) or _INTEGER.fullmatch(v) is None:
        raise GraphError(f"bad integer literal {short(v)}")
    value = int(v)
    if abs(value).bit_length() > MAX_INT_BITS:
        raise GraphError(f"the integer {short(v)} does not fit in {MAX_INT_BITS} bits")
    return value


def short(value, limit: int = 80) -> str:
    """A bounded repr of a value read from a file, for messages (its strings may be huge)."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."
