"""Sympy expressions as JSON trees, rebuilt by dispatch over a whitelist of node types.

Symbolic shapes (``floor((H - 3)/2) + 1``) and the ``expr`` of elementwise nodes must survive
a save/load round trip, but a file must never make us run code: no ``sympify``, ``eval`` or
pickle. An expression is written as nested ``{"t": TYPE, ...}`` objects; loading looks TYPE
up in the table below and calls that class on the rebuilt arguments. Anything not in the
table — on save or on load — is an error.
"""

from __future__ import annotations

import sympy
from sympy.core import relational
from sympy.core.assumptions import _assume_defined
from sympy.functions.elementary.piecewise import ExprCondPair

from ..errors import GraphError
from ..ops import expr as E

#: Sympy classes built from their rebuilt args: ``cls(*args)``.
_COMPOUND: dict[str, type] = {
    cls.__name__: cls for cls in (
        sympy.Add, sympy.Mul, sympy.Pow, sympy.exp, sympy.log, sympy.tanh, sympy.Abs,
        sympy.sign, sympy.floor, sympy.ceiling, sympy.Max, sympy.Min, sympy.Mod,
        sympy.Piecewise, ExprCondPair, sympy.And, sympy.Or, sympy.Not,
        relational.Equality, relational.Unequality, relational.StrictLessThan,
        relational.LessThan, relational.StrictGreaterThan, relational.GreaterThan,
        *E.CUSTOM_FUNCTIONS,
    )
}
_ATOMS = {"true": sympy.true, "false": sympy.false, "oo": sympy.oo, "-oo": -sympy.oo,
          "nan": sympy.nan, "zoo": sympy.zoo, "E": sympy.E, "pi": sympy.pi}
_ASSUMPTIONS = frozenset(_assume_defined)


def to_json(e) -> dict:
    """A JSON-ready tree of a sympy expression (raises GraphError for unsupported types)."""
    for name, atom in _ATOMS.items():
        if e is atom:  # sympy's singletons
            return {"t": "atom", "v": name}
    if isinstance(e, sympy.Integer):
        return {"t": "Integer", "v": str(int(e))}
    if isinstance(e, sympy.Rational):
        return {"t": "Rational", "p": str(e.p), "q": str(e.q)}
    if isinstance(e, sympy.Float):  # the double's value and the Float's precision
        return {"t": "Float", "v": repr(float(e)), "p": int(e._prec)}
    if isinstance(e, sympy.Symbol) and type(e) is sympy.Symbol:
        return {"t": "Symbol", "name": e.name,
                "assumptions": {k: v for k, v in e.assumptions0.items() if v is not None}}
    name = type(e).__name__
    if _COMPOUND.get(name) is type(e):
        return {"t": name, "args": [to_json(a) for a in e.args]}
    raise GraphError(f"cannot save the sympy expression {e} (type {name} is not supported)")


def from_json(tree) -> sympy.Basic:
    """Rebuild an expression written by `to_json`; anything unexpected is a GraphError."""
    if not isinstance(tree, dict) or not isinstance(tree.get("t"), str):
        raise GraphError(f"bad expression node {tree!r}")
    t = tree["t"]
    if t == "atom":
        if tree.get("v") not in _ATOMS:
            raise GraphError(f"unknown sympy constant {tree.get('v')!r}")
        return _ATOMS[tree["v"]]
    if t == "Integer":
        return sympy.Integer(int(_digits(tree.get("v"))))
    if t == "Rational":
        return sympy.Rational(int(_digits(tree.get("p"))), int(_digits(tree.get("q"))))
    if t == "Float":
        prec = tree.get("p")
        value = float(tree.get("v"))
        return sympy.Float(value, precision=prec) if isinstance(prec, int) and 1 < prec < 4096 \
            else sympy.Float(value)
    if t == "Symbol":
        name, assumptions = tree.get("name"), tree.get("assumptions", {})
        if not isinstance(name, str) or not isinstance(assumptions, dict) or not all(
                k in _ASSUMPTIONS and isinstance(v, bool) for k, v in assumptions.items()):
            raise GraphError(f"bad symbol {tree!r}")
        return sympy.Symbol(name, **assumptions)
    cls = _COMPOUND.get(t)
    args = tree.get("args")
    if cls is None or not isinstance(args, list):
        raise GraphError(f"unsupported sympy node type {t!r}")
    rebuilt = [from_json(a) for a in args]
    # exactly the saved computation: sympy's automatic rewriting would turn x0/2.0 into 0.5*x0,
    # x > 0.0 into x > 0 or y - y into 0 (fused expressions are composed unevaluated)
    if cls in (ExprCondPair, sympy.And, sympy.Or, sympy.Not):
        return cls(*rebuilt)
    return cls(*rebuilt, evaluate=False)


def _digits(v) -> str:
    if not isinstance(v, str) or not v.lstrip("-").isdigit() or len(v) > 4000:
        raise GraphError(f"bad integer literal {v!r}")
    return v
