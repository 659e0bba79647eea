"""Round-robin timing shared by the benchmarks: a noisy moment of a shared machine hits every
contender alike, because they are sampled window after window, each in turn."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def round_robin(steps: dict[str, Callable], batch, window: float, repeats: int,
                warmup: int = 5) -> dict[str, float]:
    """Median milliseconds per call of each ``step(*batch)``: `warmup` calls each, then
    `repeats` rounds in which every step runs for about `window` seconds in turn."""
    for step in steps.values():
        for _ in range(warmup):
            step(*batch)
    samples: dict = {label: [] for label in steps}
    for _ in range(repeats):
        for label, step in steps.items():
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < window:
                step(*batch)
                n += 1
            samples[label].append((time.perf_counter() - start) / n)
    return {label: statistics.median(v) * 1000 for label, v in samples.items()}


def blas_settings() -> str:
    """How OpenBLAS was configured for this run: its workers' spin timeout (graphc's policy,
    graphc/blas_policy.py) and the variables that pick its kernel and blocking
    (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE: they change NumPy's and graphc's GEMMs, not
    PyTorch's own BLAS)."""
    import os

    from graphc import blas_policy

    parts = [blas_policy.STATUS]
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        parts.append(f"{var}={os.environ[var]}" if var in os.environ else f"{var} unset")
    return "; ".join(parts)
