"""The training loop (``gc.train``): ``fit`` with its progress bar, validation, early stopping
and checkpoints; ``evaluate``, ``predict`` and ``batches``; ``supervised`` to compile a model's
training step and evaluation function. The contract between ``fit`` and the compiled functions
is in loop.py's docstring.
"""

from .checkpoints import Checkpoint
from .evaluation import batches, evaluate, predict
from .history import EarlyStopping, History
from .loop import epoch_order, fit, function_parameters
from .steps import supervised

__all__ = ["fit", "evaluate", "predict", "batches", "supervised", "History", "EarlyStopping",
           "Checkpoint", "function_parameters", "epoch_order"]
