"""ONNX's own node cases (onnx.backend.test) on graphc's numpy and llvm backends: every case
of every op type graphc imports, except the exclusions of graphc.onnx.conformance (dtype
families graphc lacks, named unsupported cases, each with its reason)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("onnx")

import onnx.backend.test  # noqa: E402

import graphc.onnx.backend as numpy_backend  # noqa: E402
import graphc.onnx.backend_llvm as llvm_backend  # noqa: E402
from graphc.onnx import conformance  # noqa: E402
from graphc.onnx.table import supported_ops  # noqa: E402

_CLAIMED = [c.name for c in conformance.node_cases(set(supported_ops()))]


def _suite(backend, known_bugs: dict[str, str]):
    suite = onnx.backend.test.BackendTest(backend, __name__)
    for name in _CLAIMED:
        if conformance.exclusion(name) is None and name not in known_bugs:
            suite.include(rf"^{re.escape(name)}_cpu$")
    return suite


_numpy = _suite(numpy_backend, {})
_llvm = _suite(llvm_backend, conformance.LLVM_KNOWN_BUGS)

# one unittest class per backend and kind (only node cases are included)
globals().update({f"{k}Numpy": v for k, v in _numpy.test_cases.items()})
globals().update({f"{k}LLVM": v for k, v in _llvm.test_cases.items()})


def test_claims_are_large_enough():
    claimed_ops = {conformance.op_of(c) for c in conformance.node_cases(set(supported_ops()))}
    running = [n for n in _CLAIMED if conformance.exclusion(n) is None]
    assert len(claimed_ops) >= 80 and len(running) >= 380, (len(claimed_ops), len(running))
