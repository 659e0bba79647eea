"""Reductions' identities and combiners, shared by every target: sum, and max/min that
propagate NaN (as numpy.max)."""

from __future__ import annotations

from llvmlite import ir

from .irutil import const, float_intrinsic, is_float_type

__all__ = ["combine", "identity"]


def identity(op: str, ty: ir.Type) -> ir.Constant:
    if op == "sum":
        return const(ty, 0)
    if is_float_type(ty):
        return ir.Constant(ty, float("-inf") if op == "max" else float("inf"))
    bits = ty.width
    return ir.Constant(ty, -(1 << (bits - 1)) if op == "max" else (1 << (bits - 1)) - 1)


def combine(b: ir.IRBuilder, module, op: str, ty: ir.Type, acc, v, reassoc: bool = False):
    if op == "sum":
        if is_float_type(ty):
            return b.fadd(acc, v, flags=("reassoc", "nsz") if reassoc else ())
        return b.add(acc, v)
    if is_float_type(ty):  # NaN-propagating, as numpy.max
        name = "maximum" if op == "max" else "minimum"
        return b.call(float_intrinsic(module, name, ty, 2), [acc, v])
    cmp = ">" if op == "max" else "<"
    return b.select(b.icmp_signed(cmp, acc, v), acc, v)
