"""Round-robin timing shared by the benchmarks: a noisy moment of a shared machine hits every
contender alike, because they are sampled window after window, each in turn."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

#: what the benchmarks' --threads sets before anything loads: the BLAS's, OpenMP's (PyTorch
#: reads it too) and graphc's own count (its parallel loops and column panels)
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "GRAPHC_NUM_THREADS")


def threads_before_loading(count: int) -> None:
    """Set every thread variable to `count`; call it before graphc and NumPy load (the BLAS
    reads its variable once, when it loads)."""
    for var in THREAD_VARIABLES:
        os.environ[var] = str(count)


def threads_now(count: int):
    """The same count for what had loaded already (`graphc bench` runs a script in a process
    where graphc and NumPy are loaded): graphc's runtime count and the loaded BLAS's.
    Returns threadpoolctl's limiter (its ``restore_original_limits()`` undoes the BLAS's)."""
    from threadpoolctl import threadpool_limits

    from graphc.backends.llvm import threads

    threads.set_threads(count)
    return threadpool_limits(count, user_api="blas")


def timing_note(window: float, repeats: int) -> str:
    """How the numbers below were taken, for the report's header."""
    return (f"timing: ms per step, the median of {repeats} round-robin windows of {window} s "
            f"each (every contender in turn, window after window)")


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
    from graphc import blas_policy

    parts = [blas_policy.STATUS]
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        parts.append(f"{var}={os.environ[var]}" if var in os.environ else f"{var} unset")
    return "; ".join(parts)
