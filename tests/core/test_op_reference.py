"""Every op on the NumPy backend against an independent NumPy reference."""

import numpy as np
import pytest

from graphc.ops import REGISTRY
from tests.helpers import build_case, case_arrays, run_case
from tests.op_cases import CASES


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_reference_float64(case):
    got, arrays, _ = run_case(case, dtype=np.float64, optimize=False)
    want = case.expect(*arrays)
    np.testing.assert_allclose(got, want, rtol=case.rtol, atol=1e-12)
    assert np.shape(got) == np.shape(want)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_float32_stays_float32(case):
    got, arrays, fn = run_case(case, dtype=np.float32, optimize=False)
    want = case.expect(*[a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays])
    floats_in = any(a.dtype.kind == "f" for a in arrays)
    if np.asarray(want).dtype.kind == "f" and floats_in and "explicit_dtype" not in case.tags:
        assert got.dtype == np.float32, f"{case.name} returned {got.dtype}"
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)
    else:
        np.testing.assert_array_equal(got, want)


def test_every_registered_op_has_a_case():
    seen = set()
    for case in CASES:
        _, _, out = build_case(case, case_arrays(case))
        stack, done = [out.node], set()
        while stack:
            n = stack.pop()
            if n.uid in done:
                continue
            done.add(n.uid)
            seen.add(n.op.name)
            stack.extend(n.inputs)
    missing = sorted(set(REGISTRY) - seen)
    assert not missing, f"ops without a test case in tests/op_cases.py: {missing}"
