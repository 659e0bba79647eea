import os

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import graphc as gc

# Small matrix products throughout: one BLAS thread is faster, and does not stall when the
# machine's cores are shared.
threadpool_limits(1, user_api="blas")
# The same for the llvm backend's parallel loops: pytest-xdist already runs a worker per core,
# and a region's second thread would wait for a core at every barrier (the suite took 9
# minutes instead of 6). tests/backends/test_llvm_parallel.py sets its own counts.
os.environ.setdefault("GRAPHC_NUM_THREADS", "1")
# The direct convolution tiles' vector: 64 bytes on a CPU with full-width AVX-512, else 32.
# The schedule tests pick their sizes for 32-byte vectors (8 floats a vector); the suite runs
# them so on every machine, and tests/backends/test_llvm_wide_vectors.py runs the convolution
# cases again with 64-byte vectors, where the CPU has AVX-512.
os.environ.setdefault("GRAPHC_VECTOR_BYTES", "32")


@pytest.fixture(autouse=True)
def _fresh_default_graph():
    """Each test starts with an empty default graph and the same global seed."""
    gc.reset_default_graph()
    gc.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
