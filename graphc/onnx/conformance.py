"""ONNX's node cases (``onnx.backend.test``) run through graphc: which op each case tests,
which cases graphc claims, and a runner that reports pass / fail / excluded per case.

Used by tests/onnx/test_node_cases.py (through ``onnx.backend.test.BackendTest``) and by
``python -m graphc.onnx.conformance`` (the table in docs/onnx.md and the README).
"""

from __future__ import annotations

import functools
import re
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

# Whole dtype families graphc's IR does not have (issue 17 allows excluding them as families).
_FAMILIES = [
    (r"(u?int8|u?int16|uint32|uint64|uint4|int4|int2|uint2)", "integer types graphc lacks"),
    (r"(float16|fp16|bf16|half|bfloat16|float8|e4m3|e5m2|float4|e2m1|FLOAT16|BFLOAT16)",
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
    "test_lppool_2d_dilations": _DILATED_POOL,
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
    **{f"test_reduce_{n}_empty_set": _EMPTY for n in (
        "l1", "l2", "log_sum", "log_sum_exp", "sum_square", "prod")},
    "test_split_zero_size_splits_opset13": _EMPTY, "test_split_zero_size_splits_opset18": _EMPTY,
    "test_triu_zero": _EMPTY, "test_tril_zero": _EMPTY,
    "test_reduce_max_bool_inputs": "boolean reductions (graphc reduces numbers)",
    "test_reduce_min_bool_inputs": "boolean reductions (graphc reduces numbers)",
    "test_attention_24_qk_matmul_output_mode3_softmax_precision": "float16 inputs (a float "
                                                                  "type graphc lacks)",
    "test_identity_opt": "optional values", "test_identity_sequence": "sequence values",
    # cases of If/Loop (graphc/onnx/ops_control.py), for when table.py loads that module
    "test_if_opt": "optional and sequence values", "test_if_seq": "sequence values",
    "test_loop13_seq": "sequence values", "test_loop16_seq_none": "optional sequence values",
    "test_loop11": "a Slice inside the body bounded by the iteration counter (a data-dependent "
                   "slice; graphc's slices are static)",
    "test_pow_types_int32_float32": "integer base with a float exponent (not yet)",
    "test_pow_types_int64_float32": "integer base with a float exponent (not yet)",
    "test_convtranspose_output_shape": "ConvTranspose output_shape beyond the stride's reach "
                                       "(not yet)",
    "test_range_float_type_positive_delta_expanded": "the function body is a Loop "
                                                     "(graphc/onnx/ops_control.py)",
    "test_range_int32_type_negative_delta_expanded": "the function body is a Loop "
                                                     "(graphc/onnx/ops_control.py)",
}


# Cases a backend gets wrong today (graphc bugs found by the suite, to be fixed in the
# backend, not here): name -> what goes wrong. Empty: the llvm Mod bug
# (test_mod_mixed_sign_float32/64, a select fed an i1 by the fused where(c, a != b, False)
# group) was fixed in backends/kernelgen/emitter.py; tests/onnx/test_node_cases.py keeps a
# direct regression test for it.
LLVM_KNOWN_BUGS: dict[str, str] = {}

_EXPANDED = re.compile(r"_expanded(_ver\d+)?$")


def base_name(name: str) -> str:
    """The node case an expanded case expands (``test_elu_expanded_ver18`` -> ``test_elu``)."""
    return _EXPANDED.sub("", re.sub(r"_(cpu|cuda)$", "", name))


def is_expanded(case) -> bool:
    """A function op's body expanded into primitive nodes (``test_x_expanded``)."""
    return bool(_EXPANDED.search(case.name))


def family_reason(name: str) -> str | None:
    for pattern, reason in _FAMILIES:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return reason
    return None


def exclusion(name: str) -> str | None:
    """Why a case is not claimed (a dtype family or an explicit entry), or None. An expanded
    case shares the exclusion of the case it expands."""
    base = re.sub(r"_(cpu|cuda)$", "", name)
    return (EXCLUDED.get(base) or EXCLUDED.get(base_name(base)) or family_reason(base))


@functools.cache
def _all_cases() -> tuple:
    from onnx.backend.test.loader import load_node_model_tests

    with warnings.catch_warnings():  # the generators' own overflow warnings
        warnings.simplefilter("ignore")
        return tuple(load_node_model_tests())


@functools.cache
def _ops_by_name() -> dict[str, str]:
    """Case name -> the op type it tests: a plain case's last node, an expanded case's base
    case's op (its own nodes are the function body)."""
    plain = {c.name: (c.model.graph.node[-1].op_type if c.model.graph.node else "?")
             for c in _all_cases() if not is_expanded(c)}
    out = dict(plain)
    for c in _all_cases():
        if is_expanded(c):
            out[c.name] = plain.get(base_name(c.name), "?")
    return out


def op_of(case) -> str:
    """The op type a node case tests (an expanded case: the op its body defines)."""
    name = case if isinstance(case, str) else case.name
    return _ops_by_name().get(re.sub(r"_(cpu|cuda)$", "", name), "?")


def node_cases(claimed: set[str] | None = None) -> list:
    """The node cases of ONNX's suite (loaded once per process), optionally only those of
    `claimed` op types — plain and expanded cases alike."""
    cases = list(_all_cases())
    if claimed is not None:
        cases = [c for c in cases if op_of(c) in claimed]
    return cases


def _array(value):
    import onnx

    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return np.asarray(value)


def _failure(exc: BaseException) -> str:
    """A one-line reason for a case that failed with `exc`."""
    text = str(exc).strip()
    if isinstance(exc, AssertionError):
        return "wrong: " + text.splitlines()[0][:160] if text else "wrong"
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _compare(case, expected, outputs) -> None:
    from onnx.backend.test.runner import Runner

    Runner.assert_similar_outputs([_array(e) for e in expected], list(outputs),
                                  rtol=case.rtol, atol=case.atol)


def run_case(backend, case) -> str | None:
    """Run one case through `backend` (an ``onnx.backend.base.Backend`` module): None when
    it passes, else a one-line reason."""
    try:
        rep = backend.prepare(case.model, "CPU")
        for inputs, expected in case.data_sets:
            _compare(case, expected, rep.run([_array(i) for i in inputs]))
    except Exception as exc:  # noqa: BLE001 - a report, not control flow
        return _failure(exc)
    return None


def backend_module(backend: str):
    """``graphc.onnx.backend`` for "numpy", ``graphc.onnx.backend_llvm`` for "llvm"."""
    import importlib

    return importlib.import_module("graphc.onnx.backend" + ("_llvm" if backend == "llvm"
                                                             else ""))


def _import_case(model, arrays: dict, prefix: str):
    """Import `model` into the current graph for one data set (`arrays` by input name):
    (placeholders, outputs). As ``GraphcRep`` does, inputs graphc must know at import
    (shape arguments, size-0 inputs) are given as their values: first none but the empty
    ones, then the integer and boolean inputs, then also the scalars."""
    from .. import ops
    from ..ir.graph import name_scope
    from .errors import StaticValueNeeded

    types = model.input_types()
    empty = {n for n, a in arrays.items() if 0 in a.shape}
    levels = [empty, empty | {n for n, _, dt in types if dt.kind in "iub"},
              empty | {n for n, shape, dt in types if dt.kind in "iub" or not shape}]
    for level, known in enumerate(levels):
        if level and known == levels[level - 1]:
            continue
        try:
            with name_scope(prefix):
                phs = [ops.placeholder(f"{prefix}__{name}", shape, dtype)
                       for name, shape, dtype in types if name not in known]
                outs = model(**{p.name.split("__", 1)[1]: p for p in phs},
                             **{n: arrays[n] for n in known})
            return phs, outs
        except StaticValueNeeded:
            if level == len(levels) - 1:
                raise
    raise AssertionError("unreachable")


def run_batch(backend: str, cases) -> dict[str, str | None]:
    """Run `cases` on graphc backend `backend` ("numpy" or "llvm") as one compiled function:
    {case name: None when it passes, else a one-line reason}.

    Why: compiling costs the llvm backend a fixed ~0.2 s per module (LLVM's pass pipeline
    and machine code setup), more than a node case's own code; one module holding forty
    cases runs the suite several times faster. Every case is imported into the shared graph
    under its own placeholders, as ``prepare`` imports it alone (inputs that must be known at
    import given as the data set's values, as ``GraphcRep.run`` does). A case that cannot
    join (several data sets, an import error) runs alone through the ``Backend`` interface;
    so does the whole batch if it fails to compile or run, and so does a case the batch gets
    wrong (the reason then is the one from running alone; a case right alone but wrong in
    the batch is reported as such — a graphc bug either way).
    """
    from ..function import compile as gc_compile
    from ..ir.graph import Graph
    from ..ir.tensor import Tensor
    from .importer import OnnxModel

    module = backend_module(backend)
    results: dict[str, str | None] = {}
    members, alone = [], []
    graph = Graph("onnx_node_cases")
    with graph:
        for i, case in enumerate(cases):
            if len(case.data_sets) != 1:
                alone.append(case)
                continue
            inputs, expected = case.data_sets[0]
            try:
                model = OnnxModel(case.model)
                arrays = dict(zip(model.input_names, (_array(a) for a in inputs)))
                phs, outs = _import_case(model, arrays, f"case{i}")
            except Exception:  # noqa: BLE001 - it runs alone, which reports why
                alone.append(case)
                continue
            outs = [outs] if isinstance(outs, Tensor) else list(outs)
            members.append((case, phs, outs, [arrays[p.name.split("__", 1)[1]] for p in phs],
                            expected))
    if members:
        try:
            fn = gc_compile([p for m in members for p in m[1]], [o for m in members
                                                                  for o in m[2]],
                            backend=backend)
            values = list(fn(*[a for m in members for a in m[3]]))
        except Exception:  # noqa: BLE001 - each case alone says which fails and why
            alone.extend(m[0] for m in members)
            members = []
    at = 0
    for case, _, outs, _, expected in members:
        got = tuple(np.asarray(v, dtype=o.dtype) for v, o in zip(values[at:at + len(outs)],
                                                               outs))
        at += len(outs)
        try:
            _compare(case, expected, got)
            results[case.name] = None
        except AssertionError as exc:
            err = run_case(module, case)
            results[case.name] = err or f"wrong in a batch only: {_failure(exc)}"
    for case in alone:
        results[case.name] = run_case(module, case)
    return results


def batches(cases, size: int = 40) -> list[list]:
    """`cases` in runs of `size` (in order: cases of one op tend to share code)."""
    cases = list(cases)
    return [cases[i:i + size] for i in range(0, len(cases), size)]


def report(backend: str, claimed: set[str], batch: int = 40) -> dict:
    """Run every case of the claimed ops: {case name: (op, status, detail)}."""
    results = {}
    llvm = backend == "llvm"
    running = []
    for case in node_cases(claimed):
        why = exclusion(case.name) or (LLVM_KNOWN_BUGS.get(case.name) if llvm else None)
        if why:
            results[case.name] = (op_of(case), "excluded", why)
        else:
            running.append(case)
    for chunk in batches(running, batch):
        if batch > 1:
            errors = run_batch(backend, chunk)
        else:
            errors = {c.name: run_case(backend_module(backend), c) for c in chunk}
        for case in chunk:
            err = errors[case.name]
            results[case.name] = (op_of(case), "pass" if err is None else "fail", err or "")
    return results


# Op types of the suite graphc does not import, grouped by why (the rest: "not translated
# yet"). Control flow and recurrent layers live in ops_control.py / ops_recurrent.py.
_UNCLAIMED_WHY = {
    "sequence, optional and map values (graphc has tensors only)": (
        "SequenceInsert", "SequenceMap", "SplitToSequence", "ConcatFromSequence",
        "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceLength",
        "OptionalHasElement", "OptionalGetElement", "Optional"),
    "control flow: graphc/onnx/ops_control.py, not loaded by the table yet": (
        "If", "Loop", "Scan"),
    "quantized integer types graphc lacks (int8/uint8)": (
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
        "QLinearMatMul", "ConvInteger", "MatMulInteger"),
    "strings and text": ("StringNormalizer", "StringConcat", "StringSplit", "RegexFullMatch",
                         "TfIdfVectorizer", "LabelEncoder", "ImageDecoder"),
    "data-dependent output shapes (graphc's shapes are known when compiled)": (
        "NonZero", "Unique", "Compress", "NonMaxSuppression"),
    "random draws (graphc imports inference graphs)": ("Bernoulli",),
    "recurrent layers: graphc/onnx/ops_recurrent.py, not loaded by the table yet": (
        "LSTM", "GRU", "RNN"),
    "training optimizers (graphc trains with gc.optim)": ("Adagrad", "Adam", "Momentum"),
    "bitwise ops on unsigned types graphc lacks": ("BitShift", "BitCast"),
    "ONNX-ML (traditional ML) domain": ("TreeEnsemble", "ArrayFeatureExtractor", "Binarizer"),
}


def unclaimed_reason(op: str) -> str:
    for why, op_types in _UNCLAIMED_WHY.items():
        if op in op_types:
            return why
    return "not translated yet"


def counts(results: dict) -> dict:
    """Per op type: cases, passing, failing, excluded and the reasons of the exclusions."""
    table: dict[str, dict] = {}
    for _, (op, status, detail) in sorted(results.items()):
        row = table.setdefault(op, {"cases": 0, "pass": 0, "fail": 0, "excluded": 0,
                                    "why": Counter()})
        row["cases"] += 1
        row[status] += 1
        if status == "excluded":
            row["why"][detail] += 1
    return table


GENERATED_BEGIN = "<!-- generated: python -m graphc.onnx.conformance --counts README.md -->"
GENERATED_END = "<!-- end generated -->"


def write_counts(path: Path, block: str) -> None:
    """Write the counts block to `path`; a file that already has the generated markers (the
    README) gets only the text between them replaced, so the counts there are never typed."""
    text = path.read_text() if path.exists() else ""
    if GENERATED_BEGIN in text and GENERATED_END in text:
        head, rest = text.split(GENERATED_BEGIN, 1)
        tail = rest.split(GENERATED_END, 1)[1]
        text = f"{head}{GENERATED_BEGIN}\n{block.strip()}\n{GENERATED_END}{tail}"
    else:
        text = block
    path.write_text(text)


def counts_block(by_backend: dict[str, dict]) -> str:
    """The README's few lines: the counts per backend, generated from a run."""
    lines = []
    for backend, results in by_backend.items():
        c = Counter(status for _, status, _ in results.values())
        ops_passing = {op for op, status, _ in results.values() if status == "pass"}
        ops_all = {op for op, _, _ in results.values()}
        lines.append(f"- **{backend}**: {c['pass']} node cases pass, {c['fail']} fail, "
                     f"{c['excluded']} excluded; {len(ops_passing)} of {len(ops_all)} "
                     "claimed op types have passing cases")
    return "\n".join(lines) + "\n"


def markdown(by_backend: dict[str, dict], unclaimed: dict[str, int] | None = None) -> str:
    """docs/onnx.md: per claimed op type its cases, how many pass on each backend, how many
    are excluded and why; then the op types graphc does not import, with why."""
    names = list(by_backend)
    tables = {b: counts(r) for b, r in by_backend.items()}
    first = tables[names[0]]
    out = ["# ONNX node conformance",
           "",
           "Generated by `python -m graphc.onnx.conformance --markdown docs/onnx.md "
           "--counts <file>` from a run of ONNX's own node cases (`onnx.backend.test`, "
           "plain and `_expanded` function-body cases) on each backend; do not edit by hand.",
           "",
           counts_block(by_backend),
           "Every case not excluded runs in CI (tests/onnx/test_node_cases.py) on both "
           "backends. Whole dtype families graphc's IR does not have are excluded as "
           "families; every other exclusion is named in `graphc/onnx/conformance.py`.",
           "",
           "| op | cases | " + " | ".join(f"pass {b}" for b in names) +
           " | excluded | why excluded |",
           "|---|---:|" + "---:|" * len(names) + "---:|---|"]
    for op in sorted(first):
        row = first[op]
        why = "; ".join(f"{reason} ({n})" if len(row["why"]) > 1 else reason
                        for reason, n in row["why"].most_common())
        passes = " | ".join(str(tables[b].get(op, {"pass": 0})["pass"]) for b in names)
        out.append(f"| {op} | {row['cases']} | {passes} | {row['excluded']} | {why} |")
    failing = {b: sorted(n for n, (_, st, _) in r.items() if st == "fail")
               for b, r in by_backend.items()}
    if any(failing.values()):
        out += ["", "## Failing cases", ""]
        for b, cases in failing.items():
            for name in cases:
                out.append(f"- {b}: `{name}` — {by_backend[b][name][2]}")
    if unclaimed:
        out += ["", "## Op types graphc does not import", "",
                "| op | cases | why |", "|---|---:|---|"]
        for op in sorted(unclaimed):
            out.append(f"| {op} | {unclaimed[op]} | {unclaimed_reason(op)} |")
    return "\n".join(out) + "\n"


def unclaimed_ops(claimed: set[str]) -> dict[str, int]:
    """The suite's op types outside `claimed`, with their number of cases."""
    return dict(Counter(op_of(c) for c in node_cases() if op_of(c) not in claimed))


def main(argv=None) -> None:
    import argparse

    from .table import supported_ops

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "llvm", "both"])
    parser.add_argument("--ops", default="", help="comma-separated op types (default: all)")
    parser.add_argument("--failures", action="store_true", help="list failing cases")
    parser.add_argument("--batch", type=int, default=40,
                        help="cases compiled together (1: each through the Backend alone)")
    parser.add_argument("--markdown", default=None, metavar="PATH",
                        help="write the table (docs/onnx.md); runs both backends")
    parser.add_argument("--counts", default=None, metavar="PATH",
                        help="write the counts block to PATH (a file with the generated markers, "
                             "such as README.md, gets only its block replaced); runs both "
                             "backends")
    args = parser.parse_args(argv)
    claimed = set(args.ops.split(",")) if args.ops else set(supported_ops())
    backends = (["numpy", "llvm"] if args.backend == "both" or args.markdown or args.counts
                else [args.backend])
    by_backend = {}
    for backend in backends:
        start = time.perf_counter()
        results = by_backend[backend] = report(backend, claimed, batch=args.batch)
        elapsed = time.perf_counter() - start
        c = Counter(status for _, status, _ in results.values())
        if args.failures:
            for name, (op, status, detail) in sorted(results.items()):
                if status == "fail":
                    print(f"{name:60s} {op:20s} {detail}")
        ops_passing = {op for op, status, _ in results.values() if status == "pass"}
        print(f"backend {backend}: {c['pass']} pass, {c['fail']} fail, {c['excluded']} "
              f"excluded; {len(ops_passing)} op types with a passing case; {elapsed:.1f}s")
    if args.markdown:
        Path(args.markdown).write_text(markdown(by_backend, unclaimed_ops(claimed)))
    if args.counts:
        write_counts(Path(args.counts), counts_block(by_backend))


if __name__ == "__main__":
    main()
