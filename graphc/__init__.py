"""graphc: a symbolic, static-graph compiler for deep learning.

    import graphc as gc
    x = gc.placeholder("x", ("N", 4))
    W = gc.parameter("W", np.zeros((4, 3), np.float32))
    loss = gc.nn.functional.cross_entropy(x @ W, gc.placeholder("y", ("N",), "int64"))
    step = gc.compile([x, y], loss, updates={W: W - 0.1 * gc.grad(loss, W)})

Where things live: graphc/ir (graph, nodes, types), graphc/ops (every op: shape rule,
NumPy semantics, gradient), graphc/passes (autodiff + optimization), graphc/backends
(numpy, llvm, cuda), graphc/nn, graphc/optim, graphc/train (the training stack).
"""

# first, before anything imports NumPy: the BLAS threading policy must reach OpenBLAS's start
from . import blas_policy as blas_policy  # isort: skip

from . import (
    datasets,
    distributed,  # light: imports mpi4py only under mpiexec
    init,
    io,
    metrics,
    nn,
    onnx,  # light: imports the onnx package only when used
    ops,
    optim,
    passes,
    plot,
    random,
    train,
    viz,
)
from .errors import ArgumentError, BackendError, GraphError, ShapeError
from .function import Function, compile
from .gradcheck import check_grad, check_vjp, derivative, hessian_vector_product
from .io import load, save
from .ir import Graph, Tensor, get_default_graph, name_scope, reset_default_graph
from .ops import (
    abs,
    arange,
    arctan,
    argmax,
    cast,
    ceil,
    clip,
    concat,
    constant,
    cos,
    elu,
    equal,
    erf,
    exp,
    exp2,
    expm1,
    floor,
    floor_divide,
    full,
    full_like,
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
    log,
    log1p,
    log2,
    log10,
    log_softmax,
    logsumexp,
    manual_seed,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    not_equal,
    numel,
    one_hot,
    ones,
    ones_like,
    pad,
    parameter,
    placeholder,
    reciprocal,
    relu,
    remainder,
    reshape,
    rng_state,
    round,
    rsqrt,
    scan,
    sigmoid,
    sign,
    silu,
    sin,
    softmax,
    softplus,
    softsign,
    sqrt,
    square,
    stack,
    sum,
    take,
    tan,
    tanh,
    transpose,
    where,
    zeros,
    zeros_like,
)
from .passes import grad, optimize

__version__ = "0.1.0"

__all__ = [
    "ArgumentError", "BackendError", "Function", "Graph", "GraphError", "ShapeError", "Tensor",
    "check_grad", "check_vjp", "derivative", "hessian_vector_product", "abs", "argmax", "cast",
    "clip", "compile", "concat", "constant", "elu", "equal", "exp", "expm1", "floor_divide",
    "get_default_graph", "grad", "greater", "greater_equal", "isfinite", "isinf", "isnan",
    "leaky_relu", "less", "less_equal", "log", "log1p", "log_softmax", "logsumexp", "manual_seed",
    "matmul", "max", "maximum", "mean", "min", "minimum", "name_scope", "nn", "not_equal",
    "one_hot", "ops", "optimize", "pad", "passes", "parameter", "placeholder", "relu", "remainder",
    "reset_default_graph", "reshape", "rng_state", "scan", "sigmoid", "sign", "softmax", "softplus",
    "sqrt", "square", "stack", "sum", "take", "tanh", "transpose", "viz", "where", "datasets",
    "distributed", "init", "io", "load", "metrics", "onnx", "optim", "plot", "save", "train",
    "random",
    "arange", "arctan", "ceil", "cos", "erf", "exp2", "floor", "full", "full_like", "gelu",
    "hard_sigmoid", "log10", "log2", "numel", "ones", "ones_like", "reciprocal", "round", "rsqrt",
    "silu", "sin", "softsign", "tan", "zeros", "zeros_like",
]
