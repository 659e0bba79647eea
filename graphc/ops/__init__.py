"""The op library: every op's definition (shape rule, NumPy semantics, gradient) and its DSL.

Where is op X defined? ``graphc/ops/<family>.py``, found by ``REGISTRY[X]``:
elementwise (sympy expressions), cast, reduce, shape_ops, linalg, conv, pool, indexing, random,
sources (placeholder/parameter/constant), collective (MPI allreduce/broadcast).
"""

from . import (
    collective,  # noqa: F401  (allreduce, broadcast: graphc.distributed's ops)
    scan_grad,  # noqa: F401  (gives the scan op its gradient rule)
)
from .cast import cast
from .conv import conv_op, conv_transpose_op, conv_weight_grad
from .creation import arange, full, full_like, ones, ones_like, zeros, zeros_like
from .elementwise import (
    abs,
    add,
    arctan,
    ceil,
    clip,
    cos,
    div,
    elemwise,
    elu,
    equal,
    erf,
    exp,
    exp2,
    expm1,
    floor,
    floor_divide,
    from_expr,
    gelu,
    greater,
    greater_equal,
    hard_sigmoid,
    isfinite,
    isinf,
    isnan,
    leaky_relu,
    less,
    less_equal,
    lift,
    log,
    log1p,
    log2,
    log10,
    maximum,
    minimum,
    mul,
    neg,
    not_equal,
    pow,
    reciprocal,
    relu,
    remainder,
    round,
    rsqrt,
    sigmoid,
    sign,
    silu,
    sin,
    softplus,
    softsign,
    sqrt,
    square,
    sub,
    tan,
    tanh,
    where,
)
from .indexing import one_hot, scatter_add, take
from .linalg import matmul, matmul_t
from .pool import avg_pool, avg_pool_grad, max_pool, max_pool_grad, max_pool_select
from .random import manual_seed, random_uniform, rng_state
from .reduce import argmax, log_softmax, logsumexp, max, mean, min, numel, softmax, sum
from .registry import BLOCKED, REGISTRY, ZERO, OpDef, all_ops, get_op
from .scan import scan
from .shape_ops import (
    broadcast_to,
    concat,
    expand_dims,
    flatten,
    getitem,
    pad,
    reshape,
    slice_op,
    stack,
    sum_to_shape,
    transpose,
    unslice,
)
from .sources import constant, parameter, placeholder

__all__ = [
    "BLOCKED", "REGISTRY", "ZERO", "OpDef", "abs", "add", "all_ops", "argmax", "avg_pool",
    "avg_pool_grad", "broadcast_to", "cast", "clip", "concat", "constant", "conv_op",
    "conv_transpose_op", "conv_weight_grad", "div", "elemwise", "elu", "equal", "exp",
    "expand_dims", "expm1", "flatten", "floor_divide", "from_expr", "get_op", "getitem", "greater",
    "greater_equal", "leaky_relu", "isfinite", "isinf", "isnan", "less", "less_equal", "lift",
    "log", "log1p", "log_softmax", "logsumexp", "manual_seed", "matmul", "matmul_t", "max",
    "max_pool", "max_pool_grad", "max_pool_select", "maximum", "mean", "min", "minimum", "mul",
    "neg", "not_equal", "numel", "one_hot", "pad", "parameter", "placeholder", "pow",
    "random_uniform", "relu", "remainder", "reshape", "rng_state", "scatter_add", "sigmoid",
    "scan", "sign", "slice_op", "softmax", "softplus", "sqrt", "square", "stack", "sub", "sum",
    "sum_to_shape", "take", "tanh", "transpose", "unslice", "where",
    # the course's math and constructors
    "arange", "arctan", "ceil", "cos", "erf", "exp2", "floor", "full", "full_like", "gelu",
    "hard_sigmoid", "log10", "log2", "ones", "ones_like", "reciprocal", "round", "rsqrt", "silu",
    "sin", "softsign", "tan", "zeros", "zeros_like",
]


def _user_facing_entry_points() -> None:
    """gc.<op> and the Tensor methods (which call through this module) report errors under
    the name the user called, at the user's line (see errors.user_facing)."""
    from ..errors import user_facing

    internal = {"BLOCKED", "REGISTRY", "ZERO", "OpDef", "all_ops", "get_op", "lift",
                "from_expr", "manual_seed"}
    module = globals()
    for name in __all__:
        if name not in internal and callable(module[name]):
            module[name] = user_facing(name)(module[name])


_user_facing_entry_points()
