"""Neural-network building blocks: ``gc.nn.functional`` (ops) and modules."""

from . import functional

__all__ = ["functional"]
