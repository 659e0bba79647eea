"""bench/flops.py counts a step's products: the GFLOP/s the benchmark reports rest on it."""

from __future__ import annotations

import os

import numpy as np

import graphc as gc
from bench.flops import step_flops


def test_products_of_a_training_step_are_counted_at_the_batch_size():
    x = gc.placeholder("x", ("N", 3, 8, 8))
    w = gc.parameter("w", np.zeros((4, 3, 3, 3), np.float32))
    v = gc.parameter("v", np.zeros((4 * 6 * 6, 5), np.float32))
    h = gc.nn.functional.conv2d(x, w)  # (N, 4, 6, 6): 4*6*6 * 3*3*3 multiply-adds a sample
    loss = (h.reshape((-1, 4 * 6 * 6)) @ v).sum()
    fn = gc.compile([x], [loss, *gc.grad(loss, [w, v])], backend="numpy", optimize=[])
    conv = 4 * 36 * 27
    dense = 144 * 5
    # forward conv and matmul, the matmul's two gradients, the conv's weight gradient (the
    # input gradient is not asked for)
    per_sample = conv + dense + 2 * dense + conv
    assert step_flops(fn, {"N": 7}) == 2 * 7 * per_sample
    assert step_flops(fn, {"N": 1}) == 2 * per_sample


def test_llvm_work_counts_the_parts_a_cold_compile_hands_llvm():
    """bench/llvm_work.py counts LLVM's instructions over a workload's module parts (under
    valgrind, not run here): the parts are those of the compile, complete modules that the
    child script's own call compiles."""
    from bench.llvm_work import module_parts
    from graphc.backends.kernelgen import toolchain

    parts = module_parts("tiny_mlp")
    assert parts and all("\ndefine " in text for text in parts)  # each defines functions
    assert sum('define i32 @"graphc_step"(' in text for text in parts) == 1
    assert all(toolchain.compile_object(text) for text in parts)  # object code for each


def test_compare_builds_gives_an_older_build_this_trees_workloads(tmp_path):
    """bench/compare_builds.py times two builds on the same steps: the revision's graphc
    (with its passes and backends inside the package) and this tree's bench/workloads.py."""
    from pathlib import Path

    from bench.compare_builds import ROOT, _layout

    layout = _layout("HEAD", Path(tmp_path))
    assert (layout / "graphc" / "passes" / "memory.py").is_file()
    assert (layout / "graphc" / "backends" / "llvm" / "codegen.py").is_file()
    assert (layout / "bench" / "workloads.py").read_bytes() == \
        (ROOT / "bench" / "workloads.py").read_bytes()


def test_an_unknown_workload_is_refused_before_the_benchmark_starts(capsys):
    """`graphc bench --workloads nope`: an argparse error listing the workloads, at once (not
    a KeyError after the sgemm peak and the backends' start-up)."""
    import pytest

    from bench.bench_backends import WORKLOADS, _parse
    from bench.workloads import BENCHMARKS
    from graphc.cli import build_parser, main

    assert WORKLOADS == tuple(BENCHMARKS)  # --help and the check name the real workloads
    assert _parse(["--workloads", "lenet5, tiny_mlp"]).workloads == "lenet5,tiny_mlp"
    with pytest.raises(SystemExit) as exc:
        _parse(["--workloads", "tiny_mlp,nope"])
    assert exc.value.code == 2
    assert "unknown workload(s) 'nope'; choose from tiny_mlp, mlp_784" in capsys.readouterr().err
    assert main(["bench", "--workloads", "nope"]) == 2
    err = capsys.readouterr().err
    assert "choose from" in err and err.startswith("usage: graphc bench ")  # not the script's
    bench_help = build_parser()._subparsers._group_actions[0].choices["bench"].format_help()
    assert all(name in bench_help for name in BENCHMARKS)


def test_the_thread_count_reaches_graphc_and_a_blas_that_had_loaded(monkeypatch):
    """--threads sets graphc's own count with the BLAS's: before anything loads (the
    variables) and, under `graphc bench`, where graphc and NumPy had loaded (the runtime
    count and threadpoolctl's limit). A report says how its numbers were taken."""
    from threadpoolctl import threadpool_info

    from bench import timing
    from graphc.backends.llvm import threads

    for var in timing.THREAD_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    timing.threads_before_loading(3)
    assert all(os.environ[var] == "3" for var in timing.THREAD_VARIABLES)
    previous = threads.set_threads(2)
    limiter = timing.threads_now(1)
    try:
        assert threads.set_threads(1) == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info()
                   if pool["user_api"] == "blas")
    finally:
        limiter.restore_original_limits()
        threads.set_threads(previous)
    note = timing.timing_note(0.3, 9)
    assert "median of 9 round-robin windows of 0.3 s" in note
