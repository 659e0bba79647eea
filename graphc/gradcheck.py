"""Checking gradients numerically, and seeing derivatives as formulas.

* `check_grad` compares gc.grad with central finite differences, element by element.
* `check_vjp` checks the identity <J t, c> = <t, J^T c> along random directions: one
  directional finite difference per direction, so it scales to ops whose full Jacobian is big.
* `hessian_vector_product` differentiates twice (gradients are graphs).
* `derivative` prints the sympy derivative an elementwise op's gradient is built from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import sympy

from .errors import GraphError
from .ir.graph import Graph
from .ir.tensor import Tensor
from .ops import REGISTRY, placeholder
from .ops import expr as E
from .ops import sum as reduce_sum


def _placeholders(arrays: Sequence[np.ndarray], shapes: Sequence | None = None) -> list[Tensor]:
    """One float64 placeholder per array, shaped as `shapes` says (an entry may hold symbolic
    dims such as "N"; None, or no `shapes` at all, means the array's own shape)."""
    if shapes is None:
        shapes = [None] * len(arrays)
    if len(shapes) != len(arrays):
        raise GraphError(f"shapes= gives {len(shapes)} shape(s) for {len(arrays)} input(s)")
    return [placeholder(f"x{i}", a.shape if s is None else tuple(s), "float64")
            for i, (a, s) in enumerate(zip(arrays, shapes))]


def _frozen_state(roots: Sequence[Tensor]) -> dict:
    """Identity updates for every parameter the roots use or would update by default: random
    states and batch-norm statistics must not advance between the many evaluations of a
    check (a training-mode batch norm never reads its running statistics, so they were
    missed and advanced at every evaluation)."""
    from .function import default_updates
    from .ir.graph import topological

    graph = roots[0].graph
    nodes = [r.node for r in roots]
    params = {n.uid: n for n in topological(nodes) if n.op.name == "parameter"}
    for param, _ in default_updates(graph, nodes):
        params.setdefault(param.uid, param)
    return {Tensor(p, graph): Tensor(p, graph) for p in params.values()}


def _compile_frozen(inputs, outputs):
    from .function import compile

    roots = outputs if isinstance(outputs, list) else [outputs]
    return compile(inputs, outputs, updates=_frozen_state(roots), optimize=False)


def relative_error(analytic, numeric, floor: float = 1e-3):
    """|a - n| / max(|a|, |n|, floor): relative for large values, absolute-ish near zero.

    Never NaN, so that a check cannot pass on a NaN (``err > rtol`` and Python's ``max`` are
    both false/blind for NaN): elements that agree exactly (the same infinity) or are both NaN
    have error 0; a NaN or infinity on one side only (NaN against inf, inf against -inf, a
    finite value against either) has error inf."""
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)
    agree = (a == n) | (np.isnan(a) & np.isnan(n))
    err = np.where(agree, 0.0, np.where(np.isfinite(a) & np.isfinite(n), err, np.inf))
    return err


def check_grad(f: Callable[[list[Tensor]], Tensor], inputs: Sequence, eps: float = 1e-6,
               rtol: float = 1e-4, shapes: Sequence | None = None) -> float:
    """Compare gc.grad of ``f(placeholders)`` with central differences, in float64.

    `f` maps a list of placeholders (one per array in `inputs`) to a scalar tensor. Returns the
    largest relative error (see `relative_error`); raises AssertionError with a report naming
    the input, the element, the analytic and numeric values when it exceeds `rtol`.

    `shapes` (one entry per input) declares the placeholders' shapes, which may hold symbolic
    dims (``("N", 3)``): the graph is then built and differentiated with symbolic shapes, as a
    user's graph is, and only the concrete arrays bind N. An entry of None takes the array's
    shape; without `shapes` every placeholder takes its array's shape.
    """
    from .passes.autodiff import grad

    arrays = [np.array(a, dtype=np.float64) for a in inputs]
    with Graph("check_grad"):
        xs = _placeholders(arrays, shapes)
        cost = f(xs)
        if not isinstance(cost, Tensor) or cost.ndim != 0:
            raise GraphError("check_grad: f must return a scalar tensor")
        grads = grad(cost, xs, allow_unused=True)  # an input f ignores: its gradient is 0
        analytic_fn = _compile_frozen(xs, grads)
        cost_fn = _compile_frozen(xs, cost)
    analytic = analytic_fn(*arrays)
    if getattr(cost_fn, "distributed", False):
        from .distributed import runtime

        if runtime.active():
            return _check_distributed(cost_fn, arrays, analytic, eps, rtol, runtime)
    numerics = []
    for a in arrays:
        numeric = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            saved = a[idx]
            a[idx] = saved + eps
            up = float(cost_fn(*arrays))
            a[idx] = saved - eps
            down = float(cost_fn(*arrays))
            a[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        numerics.append(numeric)
    return _report(*_disagreements(analytic, numerics, rtol), rtol)


def _disagreements(analytic, numerics, rtol) -> tuple[float, list]:
    """The worst relative error of the analytic gradients against the differences, and a row
    (error, input, index, analytic, numeric) for every element beyond `rtol`."""
    worst, rows = 0.0, []
    for i, numeric in enumerate(numerics):
        err = relative_error(analytic[i], numeric)
        if err.size:
            worst = max(worst, float(err.max()))
            for idx in np.argwhere(err > rtol):
                idx = tuple(idx)
                rows.append((float(err[idx]), i, idx, float(analytic[i][idx]), numeric[idx]))
    return worst, rows


def _check_distributed(cost_fn, arrays, analytic, eps, rtol, runtime) -> float:
    """check_grad's differences under MPI: process q's element idx moves alone, and the total
    cost Σ_r f_r (an allreduce of the processes' costs) is differenced."""
    me = runtime.rank()
    numerics = [np.zeros_like(a) for a in arrays]

    def total() -> float:
        return float(runtime.allreduce_array(np.array([float(cost_fn(*arrays))]), "sum")[0])

    for q in range(runtime.size()):
        shapes = runtime.broadcast_object([a.shape for a in arrays], root=q)
        for i, shape in enumerate(shapes):
            for idx in np.ndindex(shape):
                a = arrays[i]
                saved = a[idx] if me == q else None
                if me == q:
                    a[idx] = saved + eps
                up = total()
                if me == q:
                    a[idx] = saved - eps
                down = total()
                if me == q:
                    a[idx] = saved
                    numerics[i][idx] = (up - down) / (2 * eps)
    worst, rows = _disagreements(analytic, numerics, rtol)
    worst = float(runtime.allreduce_array(np.array([worst]), "max")[0])
    if worst > rtol and not rows:  # another process failed: fail here too, saying so
        raise AssertionError(f"gradient check failed on another process (max relative error "
                             f"{worst:.3g} > rtol {rtol:g})")
    return _report(worst, rows, rtol)


def _report(worst: float, rows: list, rtol: float) -> float:
    if rows:
        rows.sort(reverse=True)
        lines = [f"gradient check failed: max relative error {worst:.3g} > rtol {rtol:g} "
                 f"({len(rows)} element(s))",
                 f"  {'input':<6} {'element':<16} {'analytic':>14} {'numeric':>14} {'rel err':>9}"]
        for err, i, idx, a, n in rows[:10]:
            lines.append(f"  x{i:<5} {str(tuple(int(j) for j in idx)):<16} {a:>14.7g} {n:>14.7g} "
                         f"{err:>9.2g}")
        raise AssertionError("\n".join(lines))
    return worst


def _cotangent(shape) -> tuple[Tensor, Tensor]:
    """(placeholder, c): the output-space direction c of `check_vjp`. Placeholder dims are ints
    or plain symbols; an output of compound symbolic size (4*N, from a symbolic reshape) gets a
    flat placeholder of its own symbolic length, reshaped to the output's shape."""
    if all(isinstance(d, (int, sympy.Symbol)) for d in shape):
        c = placeholder("c", shape, "float64")
        return c, c
    flat = placeholder("c", ("VJP_C",), "float64")
    return flat, flat.reshape(shape)


def check_vjp(f: Callable[[list[Tensor]], Tensor], inputs: Sequence, directions: int = 3,
              eps: float = 1e-6, rtol: float = 1e-6, seed: int = 0,
              shapes: Sequence | None = None) -> float:
    """Check <J t, c> = <t, J^T c> for random t (input space) and c (output space).

    J t is a directional central difference, J^T c is gc.grad of sum(f(x) * c). Returns the
    largest relative mismatch; raises AssertionError when it exceeds `rtol`. `shapes` declares
    the placeholders' shapes, symbolic dims allowed, as in `check_grad`.
    """
    from .passes.autodiff import grad

    rng = np.random.default_rng(seed)
    arrays = [np.array(a, dtype=np.float64) for a in inputs]
    with Graph("check_vjp"):
        xs = _placeholders(arrays, shapes)
        out = f(xs)
        c_input, c = _cotangent(out.shape)
        vjps = grad(reduce_sum(out * c), xs)
        vjp_fn = _compile_frozen(xs + [c_input], vjps)
        out_fn = _compile_frozen(xs, out)
    worst = 0.0
    for _ in range(directions):
        t = [rng.standard_normal(a.shape) for a in arrays]
        cv = rng.standard_normal(np.shape(out_fn(*arrays)))
        up = out_fn(*[a + eps * d for a, d in zip(arrays, t)])
        down = out_fn(*[a - eps * d for a, d in zip(arrays, t)])
        lhs = float(np.sum((up - down) / (2 * eps) * cv))
        feed = cv.reshape(np.shape(cv) if c_input is c else -1)
        rhs = float(sum(np.sum(d * v) for d, v in zip(t, vjp_fn(*arrays, feed))))
        err = float(relative_error(lhs, rhs, floor=1e-8))  # (inf, never NaN, for NaN)
        worst = max(worst, err)
        if err > rtol:
            raise AssertionError(f"vector-Jacobian check failed: <J t, c> = {lhs:.10g} but "
                                 f"<t, J^T c> = {rhs:.10g} (relative error {err:.3g})")
    return worst


def hessian_vector_product(cost: Tensor, wrt, vectors):
    """H v for a scalar cost: the gradient of <grad(cost), v> (Pearlmutter's trick, as graphs).

    `wrt` and `vectors` are tensors (or lists of tensors) of matching shapes; returns tensors.
    """
    from .ops import mul
    from .passes.autodiff import grad

    single = isinstance(wrt, Tensor)
    wrt_list = [wrt] if single else list(wrt)
    vec_list = [vectors] if single else list(vectors)
    if len(wrt_list) != len(vec_list):
        raise GraphError("hessian_vector_product: one vector per tensor in wrt")
    grads = grad(cost, wrt_list)
    inner = None
    for g, v in zip(grads, vec_list):
        term = reduce_sum(mul(g, v))
        inner = term if inner is None else inner + term
    out = grad(inner, wrt_list, allow_unused=True)
    return out[0] if single else out


def derivative(op: str, wrt: int | str = 0, **attrs) -> sympy.Expr:
    """The derivative of an elementwise op as a formula, in its inputs x (and y, z), with
    respect to input `wrt` (0 or "x", 1 or "y", ...).

    >>> gc.derivative("sigmoid")
    (1 - sigmoid(x))*sigmoid(x)
    >>> gc.derivative("pow", "y")
    Piecewise((x**y*log(x), Ne(x, 0)), (0, y >= 0), (x**y*log(x), True))
    """
    from .ir.node import Attrs

    if op not in REGISTRY or not REGISTRY[op].is_elementwise:
        elementwise = sorted(n for n, o in REGISTRY.items() if o.is_elementwise)
        raise GraphError(f"{op!r} is not an elementwise op; choose one of {elementwise}")
    opdef = REGISTRY[op]
    arity = opdef.extra.get("arity", 1)
    names_of_inputs = "xyz"[:arity]
    index = names_of_inputs.find(wrt) if isinstance(wrt, str) else wrt
    if isinstance(wrt, bool) or not isinstance(index, int) or not 0 <= index < arity:
        raise GraphError(f"{op} has {arity} input(s) ({', '.join(names_of_inputs)}); wrt must "
                         f"name one of them (0..{arity - 1} or its letter), got {wrt!r}")
    wrt = index
    defaults = {"leaky_relu": {"alpha": 0.01}, "elu": {"alpha": 1.0}}.get(op, {})
    expr = opdef.expr(Attrs({**defaults, **attrs}))
    names = {E.sym_input(i): sympy.Symbol(n, real=True) for i, n in enumerate("xyz")}
    return E.derivative(expr, wrt).xreplace(names)
