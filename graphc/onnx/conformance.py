"""ONNX's node cases (``onnx.backend.test``) run through graphc: which op each case tests,
which cases graphc claims, and a runner that reports pass / fail / excluded per case.

Used by tests/onnx/test_node_cases.py (through ``onnx.backend.test.BackendTest``) and by
``python -m graphc.onnx.conformance`` (the table in docs/onnx.md and the README).
"""

from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np

# Whole dtype families graphc's IR does not have (issue 17 allows excluding them as families).
_FAMILIES = [
    (r"(u?int8|u?int16|uint32|uint64|uint4|int4|int2|uint2)", "integer types graphc lacks"),
    (r"(float16|fp16|half|bfloat16|float8|e4m3|e5m2|float4|e2m1|FLOAT16|BFLOAT16)",
     "float types graphc lacks (float16, bfloat16, float8, float4)"),
    (r"string", "strings"),
]

_DILATED_POOL = "pooling with dilations (graphc's pools have none)"
_EMPTY = "size-0 dims (graphc has no empty tensors)"
_BN_TRAIN = "training-mode batch norm (graphc imports inference graphs)"
_DROPOUT_TRAIN = "training-mode dropout draws random masks (graphc imports inference graphs)"
# Cases of claimed ops that graphc does not support, each with its reason.
EXCLUDED: dict[str, str] = {
    **{f"test_averagepool_{n}": _DILATED_POOL for n in (
        "2d_dilations", "3d_dilations_small",
        "3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False",
        "3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True",
        "3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False",
        "3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True")},
    **{f"test_maxpool_{n}": _DILATED_POOL for n in (
        "2d_dilations", "3d_dilations", "3d_dilations_use_ref_impl",
        "3d_dilations_use_ref_impl_large")},
    "test_maxpool_with_argmax_2d_precomputed_pads": "MaxPool's Indices output",
    "test_maxpool_with_argmax_2d_precomputed_strides": "MaxPool's Indices output",
    "test_batchnorm_epsilon_training_mode": _BN_TRAIN,
    "test_batchnorm_example_training_mode": _BN_TRAIN,
    **{f"test_training_dropout{n}": _DROPOUT_TRAIN for n in (
        "", "_default", "_default_mask", "_mask")},
    "test_constantofshape_int_shape_zero": _EMPTY,
    "test_reduce_max_empty_set": _EMPTY, "test_reduce_min_empty_set": _EMPTY,
    "test_reduce_sum_empty_set": _EMPTY, "test_reduce_sum_empty_set_non_reduced_axis_zero": _EMPTY,
    "test_reshape_allowzero_reordered": _EMPTY, "test_slice_start_out_of_bounds": _EMPTY,
    "test_reduce_max_empty_set_bool": _EMPTY,
    "test_reduce_max_bool_inputs": "boolean reductions (graphc reduces numbers)",
    "test_reduce_min_bool_inputs": "boolean reductions (graphc reduces numbers)",
    "test_identity_opt": "optional values", "test_identity_sequence": "sequence values",
    "test_mod_int64_fmod": "fmod=1 on integers (C's truncated remainder; not yet)",
    "test_pow_types_int32_float32": "integer base with a float exponent (not yet)",
    "test_pow_types_int64_float32": "integer base with a float exponent (not yet)",
    "test_range_float_type_positive_delta": "Range with float bounds given as model inputs",
    "test_training_dropout_zero_ratio": "Dropout's ratio given as a float model input",
    "test_training_dropout_zero_ratio_mask": "Dropout's ratio given as a float model input",
    "test_convtranspose_output_shape": "ConvTranspose output_shape beyond the stride's reach "
                                       "(not yet)",
}


# Cases the llvm backend gets wrong today (graphc bugs found by the suite, to be fixed in
# the backend, not here): name -> what goes wrong.
LLVM_KNOWN_BUGS: dict[str, str] = {
    "test_mod_mixed_sign_float32": "llvm: fused remainder/where group differs from numpy",
    "test_mod_mixed_sign_float64": "llvm: fused remainder/where group differs from numpy",
}


def op_of(case) -> str:
    """The op type a node case tests (its last node; expanded cases say so)."""
    nodes = case.model.graph.node
    return nodes[-1].op_type if nodes else "?"


def family_reason(name: str) -> str | None:
    for pattern, reason in _FAMILIES:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return reason
    return None


def exclusion(name: str) -> str | None:
    """Why a case is not claimed (a dtype family or an explicit entry), or None."""
    base = re.sub(r"_(cpu|cuda)$", "", name)
    return EXCLUDED.get(base) or family_reason(base)


def is_expanded(case) -> bool:
    """A function op's body expanded into primitive nodes (``test_x_expanded``)."""
    return "_expanded" in case.name


def node_cases(claimed: set[str] | None = None):
    """The node cases of ONNX's suite, optionally only those of `claimed` op types (one node
    of a claimed op type; expanded function bodies are not claimed yet)."""
    from onnx.backend.test.loader import load_node_model_tests

    cases = load_node_model_tests()
    if claimed is not None:
        cases = [c for c in cases if not is_expanded(c) and op_of(c) in claimed]
    return cases


def _array(value):
    import onnx

    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return np.asarray(value)


def run_case(backend, case) -> str | None:
    """None when the case passes, else a one-line reason."""
    from onnx.backend.test.runner import Runner

    try:
        rep = backend.prepare(case.model, "CPU")
        for inputs, expected in case.data_sets:
            outputs = rep.run([_array(i) for i in inputs])
            expected = [_array(e) for e in expected]
            Runner.assert_similar_outputs(expected, list(outputs), rtol=case.rtol,
                                          atol=case.atol)
    except AssertionError as exc:
        return "wrong: " + str(exc).strip().splitlines()[0][:160] if str(exc).strip() \
            else "wrong"
    except Exception as exc:  # noqa: BLE001 - a report, not control flow
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return None


def report(backend_module, claimed: set[str]) -> dict:
    """Run every case of the claimed ops: {case name: (op, status, detail)}."""
    results = {}
    llvm = backend_module.__name__.endswith("_llvm")
    for case in node_cases(claimed):
        why = exclusion(case.name) or (LLVM_KNOWN_BUGS.get(case.name) if llvm else None)
        if why:
            results[case.name] = (op_of(case), "excluded", why)
            continue
        start = time.perf_counter()
        err = run_case(backend_module, case)
        results[case.name] = (op_of(case), "pass" if err is None else "fail", err or
                              f"{time.perf_counter() - start:.2f}s")
    return results


def main(argv=None) -> None:
    import argparse
    import importlib

    from .table import supported_ops

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "llvm"])
    parser.add_argument("--ops", default="", help="comma-separated op types (default: all)")
    parser.add_argument("--failures", action="store_true", help="list failing cases")
    args = parser.parse_args(argv)
    module = importlib.import_module("graphc.onnx.backend" +
                                     ("_llvm" if args.backend == "llvm" else ""))
    claimed = set(args.ops.split(",")) if args.ops else set(supported_ops())
    start = time.perf_counter()
    results = report(module, claimed)
    elapsed = time.perf_counter() - start
    counts = Counter(status for _, status, _ in results.values())
    if args.failures:
        for name, (op, status, detail) in sorted(results.items()):
            if status == "fail":
                print(f"{name:60s} {op:20s} {detail}")
    ops_passing = {op for op, status, _ in results.values() if status == "pass"}
    print(f"backend {args.backend}: {counts['pass']} pass, {counts['fail']} fail, "
          f"{counts['excluded']} excluded; {len(ops_passing)} op types with a passing case; "
          f"{elapsed:.1f}s")


if __name__ == "__main__":
    main()
