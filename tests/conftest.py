import numpy as np
import pytest

import graphc as gc


@pytest.fixture(autouse=True)
def _fresh_default_graph():
    """Each test starts with an empty default graph and the same global seed."""
    gc.reset_default_graph()
    gc.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
