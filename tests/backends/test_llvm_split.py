"""A module cut into parts that compile on several threads (backends/kernelgen/split.py).

The cut must not change what runs: each part is a valid module, every function is defined
in exactly one part, the parts link into a step that computes the same bits as the uncut
module, and the same module gives the same parts and the same machine code however many
threads compile them.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import graphc as gc
from graphc.backends.kernelgen import split, toolchain
from graphc.backends.kernelgen.mathlib import host_math
from graphc.backends.llvm import codegen
from graphc.backends.llvm import threads as llvm_threads

F = gc.nn.functional


def _mlp_step():
    rng = np.random.default_rng(0)
    x = gc.placeholder("x", ("N", 12))
    y = gc.placeholder("y", ("N",), "int64")
    params, h = [], x
    for i, (a, b) in enumerate([(12, 16), (16, 16), (16, 5)]):
        W = gc.parameter(f"W{i}", rng.normal(size=(a, b)).astype(np.float32) * 0.3)
        c = gc.parameter(f"c{i}", np.zeros(b, np.float32))
        params += [W, c]
        h = F.linear(h, W, c)
        if i < 2:
            h = gc.tanh(h)
    loss = F.cross_entropy(h, y)
    grads = gc.grad(loss, params)
    updates = {p: p - 0.1 * g for p, g in zip(params, grads)}
    batch = [rng.normal(size=(9, 12)).astype(np.float32), rng.integers(0, 5, 9)]
    return [x, y], loss, updates, params, batch


def _module():
    with gc.Graph("split"):
        inputs, loss, updates, _, _ = _mlp_step()
        fn = gc.compile(inputs, loss, updates=updates, backend="llvm")
    return codegen.HostCodegen(fn.graph, host_math()).build()


def _defined(text: str) -> list[str]:
    return re.findall(r'^define [^@]*@"([^"]+)"', text, re.M)


def test_the_module_text_is_llvmlites():
    module = _module()
    assert split.module_text(module, split.global_texts(module)) == str(module)


@pytest.mark.parametrize("parts", [2, 3, 4])
def test_every_function_is_defined_once_and_every_part_is_a_module(parts):
    module = _module()
    pieces = split.global_texts(module)
    texts = split.split(module, pieces, parts, "graphc_step")
    assert len(texts) == parts
    defined = [_defined(t) for t in texts]
    assert "graphc_step" in defined[0]
    inline = {f.name for f in module.functions if "alwaysinline" in f.attributes}
    owned = [name for names in defined for name in names if name not in inline]
    whole = [name for name in _defined(str(module)) if name not in inline]
    assert sorted(owned) == sorted(whole)  # each function in one part, none lost
    for text in texts:
        toolchain.parse(text).close()  # parses and verifies on its own
    assert split.split(module, pieces, parts, "graphc_step") == texts  # a rule, not luck


def test_the_part_count_is_a_rule_of_the_size():
    assert split.part_count(1000) == 1
    assert split.part_count(split.PART_BYTES * 2) == 2
    assert split.part_count(10**9) == split.MAX_PARTS


@pytest.mark.parametrize(("linkage", "constant"), [("internal", False), ("", False),
                                                   ("", True)])
def test_a_module_with_a_variable_of_its_own_is_not_cut(linkage, constant):
    """A variable (internal or exported) or an exported constant would be several variables,
    or one symbol defined in several parts: such a module stays whole."""
    from llvmlite import ir

    module = _module()
    state = ir.GlobalVariable(module, ir.IntType(32), "graphc_test_state")
    state.linkage = linkage
    state.global_constant = constant
    state.initializer = ir.Constant(ir.IntType(32), 0)
    pieces = split.global_texts(module)
    assert split.split(module, pieces, 3, "graphc_step") == [str(module)]


def test_internal_constants_and_declared_globals_are_copied_into_every_part():
    module = _module()
    constants = [line for line in str(module).splitlines() if " = internal constant " in line]
    declared = '@"graphc_num_threads" = external global i32'
    assert constants and declared in str(module)
    for text in split.split(module, split.global_texts(module), 3, "graphc_step"):
        assert declared in text and all(c in text for c in constants)


def test_parts_compile_to_the_same_code_on_any_number_of_threads():
    from concurrent.futures import ThreadPoolExecutor

    module = _module()
    texts = split.split(module, split.global_texts(module), 3, "graphc_step")
    serial = [toolchain.compile_object(t) for t in texts]
    with ThreadPoolExecutor(3) as pool:
        threaded = list(pool.map(toolchain.compile_object, texts))
    assert threaded == serial


@pytest.mark.parametrize("workers", [1, 2])
def test_a_cut_step_trains_exactly_like_the_uncut_one(monkeypatch, workers):
    """Outputs and updated parameters after three steps, bit for bit: one part against
    three, compiled on one thread or two, and with llvmlite's own (locked) calls."""
    results = []
    for parts, unlocked in ((1, True), (3, True), (3, False)):
        monkeypatch.setattr(split, "part_count", lambda size, parts=parts: parts)
        if not unlocked:
            monkeypatch.setattr(toolchain, "_unlocked", lambda function: function)
        with gc.Graph("cut"):
            inputs, loss, updates, params, batch = _mlp_step()
            chosen = dataclasses.replace(llvm_threads.runtime(), threads=workers)
            monkeypatch.setattr(llvm_threads, "runtime", lambda chosen=chosen: chosen)
            fn = gc.compile(inputs, loss, updates=updates, backend="llvm",
                            backend_options={"cache": False})
            monkeypatch.undo()
            assert fn.stats["llvm_parts"] == parts
            losses = [fn(*batch) for _ in range(3)]
            results.append((losses, [p.value.copy() for p in params]))
    for losses, values in results[1:]:
        assert losses == results[0][0]
        for a, b in zip(values, results[0][1]):
            np.testing.assert_array_equal(a, b)


def test_each_part_is_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(split, "part_count", lambda size: 3)
    stats = []
    for _ in range(2):
        with gc.Graph("cached"):
            inputs, loss, updates, _, batch = _mlp_step()
            fn = gc.compile(inputs, loss, updates=updates, backend="llvm",
                            backend_options={"cache": True})
            fn(*batch)
            stats.append(fn.stats)
    assert [s["llvm_cache_hit"] for s in stats] == [False, True]
    assert len(list((tmp_path / "llvm").glob("*.o"))) == 3


def test_a_function_weighs_its_text_and_each_inlined_helper_call():
    """The parts are balanced by _weight: a function's text and FUNCTION_BYTES, with an
    inline helper's weight added at each call (LLVM works on its body once per call site);
    a mention that is not a call (a declaration's name) adds nothing."""
    helper = 'define internal float @"h"(float %"x") alwaysinline\n{\n  ret float %"x"\n}\n'
    plain = 'define i32 @"f"()\n{\n  ret i32 0\n}\n'
    two = ('define float @"g"(float %"x")\n{\n  %"a" = call float @"h"(float %"x")\n'
           '  %"b" = call float @"h"(float %"a")\n  ret float %"b"\n}\n')
    pieces = {"h": helper, "f": plain, "g": two}
    inline = {"h"}
    h_weight = split._weight("h", pieces, inline)
    assert h_weight == len(helper) + split.FUNCTION_BYTES
    assert split._weight("f", pieces, inline) == len(plain) + split.FUNCTION_BYTES
    assert split._weight("g", pieces, inline) == len(two) + split.FUNCTION_BYTES + 2 * h_weight
