"""Optimizers as update graphs (``gc.optim``), learning-rate schedules, ``ReduceLROnPlateau``,
clipping, penalties.

    opt = gc.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = gc.compile([x, y], loss, updates=opt.updates(loss))
"""

from . import schedules
from .clip import clip_by_global_norm, clip_by_value, global_norm
from .optimizers import SGD, Adadelta, Adagrad, Adam, AdamW, NAdam, Optimizer, RMSprop
from .plateau import ReduceLROnPlateau
from .regularizers import l1_penalty, l2_penalty, weights

__all__ = [
    "SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "NAdam", "Optimizer", "RMSprop",
    "ReduceLROnPlateau",
    "clip_by_global_norm", "clip_by_value", "global_norm", "l1_penalty", "l2_penalty",
    "schedules", "weights",
]
