"""A small model both the 2-process fit and its 1-process resume build identically."""

from __future__ import annotations

import numpy as np

import graphc as gc
from graphc import nn


def fit_model(distributed: bool):
    gc.reset_default_graph()
    gc.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7, dtype="float64"), nn.Tanh(),
                          nn.Linear(7, 3, dtype="float64"))
    x = gc.placeholder("x", ("N", 5), "float64")
    y = gc.placeholder("y", ("N",), "int64")
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    opt = gc.optim.SGD(model.parameters(), lr=0.2, momentum=0.5)
    step = gc.compile([x, y], [loss, logits], updates=opt.updates(loss, distributed=distributed))
    rng = np.random.default_rng(7)
    xs = rng.normal(size=(22, 5))
    ys = (xs[:, 0] > 0).astype(np.int64) + (xs[:, 1] > 0.5)
    return step, model, (xs, ys)
