"""graphc's BLAS threading policy: worker threads sleep as soon as their product is done.

OpenBLAS (the BLAS NumPy ships, which the llvm backend calls too) keeps its worker threads
spinning for about 2^28 cycles (~0.1 s) after every threaded product, waiting for the next
one. In a training step the next thing is usually not a product but an elementwise kernel, a
pooling loop, or another framework, and a spinning worker takes a core from it: measured on
this project's 2-core machine (README, "The BLAS threading policy"), the cnn32 llvm step went
from 162-248 ms to 123-140 ms beside one busy process, the mlp_784 step from 5.5 to 3.0 ms on
a quiet machine, and PyTorch eager ran 2.4x slower right after a NumPy step. The price is a
worker's wake-up at the next threaded product: a step of many mid-sized products (the LSTM
benchmark) is about 10% slower quiet.

The timeout can only be set before OpenBLAS is loaded, i.e. before NumPy is first imported:
`apply` sets ``OPENBLAS_THREAD_TIMEOUT=4`` (OpenBLAS's minimum, 2^4 cycles) when it still
can and the user has not chosen a value. `STATUS` says what happened (``graphc info`` prints
it). Small products are a separate matter: the llvm backend runs them on the calling thread
alone (backends/llvm/kernels_linalg.THREADED_GEMM).
"""

from __future__ import annotations

import os
import sys

TIMEOUT_VARIABLE = "OPENBLAS_THREAD_TIMEOUT"
#: log2 of the cycles a worker spins before it sleeps; 4 is the smallest OpenBLAS accepts
QUICK_SLEEP = "4"


def apply() -> str:
    """Set the BLAS workers' spin timeout if NumPy has not loaded OpenBLAS yet; say how the
    timeout stands."""
    chosen = os.environ.get(TIMEOUT_VARIABLE)
    if chosen is not None:
        return f"{TIMEOUT_VARIABLE}={chosen} (set before graphc was imported)"
    if "numpy" in sys.modules:
        return (f"OpenBLAS's default (workers spin ~0.1 s after each product): NumPy was "
                f"imported before graphc; import graphc first or set {TIMEOUT_VARIABLE}="
                f"{QUICK_SLEEP} to have them sleep at once")
    os.environ[TIMEOUT_VARIABLE] = QUICK_SLEEP
    return f"{TIMEOUT_VARIABLE}={QUICK_SLEEP} (set by graphc: workers sleep after each product)"


STATUS = apply()
