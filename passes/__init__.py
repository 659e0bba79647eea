"""Graph transformations (installed as graphc.passes): autodiff and the optimization pipeline."""

from .autodiff import grad

__all__ = ["grad"]
