"""The training loop (``gc.train``): ``fit`` with its progress bar, validation, early stopping
and checkpoints; ``evaluate``, ``predict`` and ``batches``; ``supervised`` to compile a model's
training step and evaluation function; ``cross_validate`` and ``search`` (with their
``Results`` table) for model selection. The contract between ``fit`` and the compiled
functions is in loop.py's docstring.
"""

from .checkpoints import Checkpoint
from .evaluation import batches, evaluate, predict
from .history import EarlyStopping, History
from .loop import epoch_order, fit, function_parameters
from .selection import Results, cross_validate, search
from .steps import supervised

__all__ = ["fit", "evaluate", "predict", "batches", "supervised", "History", "EarlyStopping",
           "Checkpoint", "function_parameters", "epoch_order", "cross_validate", "search",
           "Results"]
