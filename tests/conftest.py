import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import graphc as gc

# Small matrix products throughout: one BLAS thread is faster, and does not stall when the
# machine's cores are shared.
threadpool_limits(1, user_api="blas")


@pytest.fixture(autouse=True)
def _fresh_default_graph():
    """Each test starts with an empty default graph and the same global seed."""
    gc.reset_default_graph()
    gc.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
