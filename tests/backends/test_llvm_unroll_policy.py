"""Which loops LLVM may unroll: those of a known count only (backends/kernelgen/irutil.loop)."""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

import graphc as gc
from graphc.backends.kernelgen import toolchain
from graphc.backends.kernelgen.irutil import F64, I64, PTR, i64, loop


def _sum_module(count_is_constant: bool, unroll: bool = True) -> str:
    """double total(double* x, i64 n): a sequential sum (LLVM may not reorder it, so it
    can only unroll it, never vectorize it)."""
    module = ir.Module("unroll_policy")
    fn = ir.Function(module, ir.FunctionType(F64, [PTR, I64]), "total")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    acc = b.alloca(F64)
    b.store(ir.Constant(F64, 0.0), acc)
    count = i64(64) if count_is_constant else fn.args[1]
    with loop(b, count, unroll=unroll) as i:
        x = b.load(b.gep(fn.args[0], [i], source_etype=F64), typ=F64)
        b.store(b.fadd(b.load(acc, typ=F64), x), acc)
    b.ret(b.load(acc, typ=F64))
    return str(module)


def _fadds_after_o2(text: str) -> int:
    mod = toolchain.parse(text)
    tm = toolchain.host_target_machine()
    mod.triple, mod.data_layout = tm.triple, str(tm.target_data)
    toolchain.optimize(mod, tm)
    return str(mod.get_function("total")).count(" fadd ")


def test_a_loop_of_run_time_count_is_marked_not_to_be_unrolled_and_llvm_keeps_it_rolled():
    text = _sum_module(count_is_constant=False)
    assert '!"llvm.loop.unroll.disable"' in text
    assert "!llvm.loop" in text
    assert _fadds_after_o2(text) == 1


def test_a_loop_of_known_count_keeps_llvm_s_unrolling():
    text = _sum_module(count_is_constant=True)
    assert "llvm.loop" not in text
    assert _fadds_after_o2(text) > 1  # 64 iterations: fully unrolled


def test_a_loop_of_known_count_can_be_kept_rolled():
    text = _sum_module(count_is_constant=True, unroll=False)
    assert '!"llvm.loop.unroll.disable"' in text
    assert _fadds_after_o2(text) == 1


def test_a_step_with_a_symbolic_batch_marks_its_batch_loops_and_still_matches_numpy():
    x = gc.placeholder("x", ("N", 5))
    w = gc.parameter("w", np.linspace(-1, 1, 15).reshape(5, 3))
    loss = gc.sum(gc.tanh(gc.matmul(x, w)) ** 2)
    data = np.random.default_rng(0).normal(size=(7, 5))
    results = {}
    for backend in ("numpy", "llvm"):
        fn = gc.compile([x], [loss, gc.grad(loss, [w])[0]], backend=backend,
                        backend_options={"cache": False} if backend == "llvm" else None)
        results[backend] = fn(data)
        if backend == "llvm":
            ir_text = fn.source
            assert ir_text.count('!"llvm.loop.unroll.disable"') == 1  # one shared node
            assert "!llvm.loop" in ir_text
            llvm.parse_assembly(ir_text).verify()
    for a, b in zip(results["numpy"], results["llvm"]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
