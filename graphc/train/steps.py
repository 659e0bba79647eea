"""Compiling the functions ``fit`` trains with, for the common case of (x, y) pairs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..function import Function
from ..function import compile as compile_fn
from ..ir.graph import Graph
from ..ops.sources import placeholder


def supervised(model, loss_fn: Callable, optimizer, x_shape: Sequence, y_shape: Sequence = ("N",),
               y_dtype: str = "int64", *, penalty: Callable | None = None,
               backend: str = "numpy", distributed: bool = False) -> tuple[Function, Function]:
    """Compile the two functions ``fit`` wants for a model trained on (x, y) pairs.

    The training step (model in train mode) returns ``[loss, predictions]`` and applies
    ``optimizer.updates(loss + penalty())`` plus the default updates (batch-norm statistics,
    dropout states); the evaluation function (model in eval mode) returns
    ``[loss, predictions]`` and updates nothing. The model is left in eval mode.
    `penalty` is called inside the training graph, e.g.
    ``lambda: gc.optim.l2_penalty(model, 1e-4)``. `distributed`: the step averages its
    gradients across MPI processes (``optimizer.updates(cost, distributed=True)``); compiling
    it is then collective.
    """
    functions = []
    for training in (True, False):
        model.train(training)
        with Graph("train_step" if training else "evaluate"):
            x = placeholder("x", x_shape)
            y = placeholder("y", y_shape, y_dtype)
            pred = model(x)
            loss = loss_fn(pred, y)
            updates = None
            if training:
                cost = loss + penalty() if penalty is not None else loss
                updates = optimizer.updates(cost, distributed=distributed) if distributed \
                    else optimizer.updates(cost)
            functions.append(compile_fn([x, y], [loss, pred], updates=updates,
                                        backend=backend))
    return functions[0], functions[1]
