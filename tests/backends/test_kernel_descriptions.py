"""The kernel descriptions and their two schedules (graphc/ops/loops.py, kernelgen/nest.py):
every op but the library kernels is described once and lowered by the one shared lowering on
both targets; the host schedule's transformations (collapsing loops, flat reductions,
no-overlap metadata) apply exactly where they are valid. Values on every backend are checked
by the op cases (test_llvm_ops.py, test_cuda.py); these tests check the structure."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import sympy

import graphc as gc
from graphc.backends.kernelgen import lowerings as shared
from graphc.backends.kernelgen.nest import collapse
from graphc.backends.kernelgen.registry import lowering_for
from graphc.ir.graph import Graph
from graphc.ops import REGISTRY
from graphc.ops import loops as L
from graphc.ops.collective import COLLECTIVES

ROOT = Path(__file__).resolve().parents[2]
# GEMM and the scatter with atomics are hand-written library kernels (the exception);
# leaves have no kernel
LIBRARY = {"matmul", "scatter_add"}
LEAVES = {"placeholder", "parameter", "constant"}
# a loop is control, not a kernel: its lowering repeats the body's kernels T times (the host
# calls them inside one kernel, the GPU repeats their launches), with the control shared in
# backends/kernelgen/loops.py (docs/scan-plan.md)
CONTROL = {"scan", "scan_output"}
# a collective is a call into MPI, not a kernel: the host step calls MPI itself
# (backends/llvm/collectives.py), the GPU target stages it through host memory
COMMUNICATION = set(COLLECTIVES)


class _Node:
    """What collapse() reads of a node: its shape and its inputs' shapes."""

    def __init__(self, shape, *inputs):
        self.shape = shape
        self.inputs = [_Node(s) for s in inputs]


def test_every_kernel_but_the_library_ones_comes_from_a_description():
    for name, op in REGISTRY.items():
        if name in LEAVES:
            continue
        if name in LIBRARY:
            assert op.loops is None, name
            continue
        if name in COMMUNICATION:
            from graphc.backends.cuda import collectives as gpu_collectives
            from graphc.backends.llvm import collectives as host_collectives

            node = type("N", (), {"op": op, "loc": None})()
            assert op.loops is None, name
            assert lowering_for(node, "llvm") is getattr(host_collectives, name), name
            assert lowering_for(node, "cuda") is gpu_collectives.host_step, name
            continue
        if name in CONTROL:
            from graphc.backends.cuda import loops as gpu_loops
            from graphc.backends.llvm import loops as host_loops

            node = type("N", (), {"op": op, "loc": None})()
            assert op.loops is None, name
            assert lowering_for(node, "llvm") in (host_loops.lower_scan,
                                                  host_loops.lower_scan_output), name
            assert lowering_for(node, "cuda") in (gpu_loops.lower_scan,
                                                  gpu_loops.lower_scan_output), name
            continue
        assert op.loops is not None, f"{name} has no loop-nest description"
        for target in ("llvm", "cuda"):
            node = type("N", (), {"op": op, "loc": None})()
            assert lowering_for(node, target) is shared.described, (name, target)


@pytest.mark.parametrize("package,other", [("llvm", "cuda"), ("cuda", "llvm")])
def test_the_targets_are_siblings(package, other):
    """llvm/ and cuda/ import kernelgen/, never each other."""
    for path in sorted((ROOT / "backends" / package).glob("*.py")):
        tree = ast.parse(path.read_text())
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom):
                module = ("." * n.level) + (n.module or "")
                assert other not in module.split("."), f"{path.name} imports {module}"
                assert not (n.level == 1 and n.module is None and any(
                    a.name == other for a in n.names)), path.name
            elif isinstance(n, ast.Import):
                for a in n.names:
                    assert f"backends.{other}" not in a.name, f"{path.name} imports {a.name}"


def _elementwise(out_shape, *in_shapes):
    i = L.index_symbols(" ".join(f"i{a}" for a in range(len(out_shape))))
    bufs = {"out": L.Buf(output=True)}
    values = []
    for j, shape in enumerate(in_shapes):
        lead = len(out_shape) - len(shape)
        index = [0 if d == 1 and out_shape[a + lead] != 1 else i[a + lead]
                 for a, d in enumerate(shape)]
        bufs[f"x{j}"] = L.Buf(input=j)
        values.append(L.load(f"x{j}", *index))
    nest = L.LoopNest(bufs, list(zip(i, out_shape)), [L.Store("out", i, L.Element(*values))],
                      hints={"host": "collapse"})
    return nest, _Node(out_shape, *in_shapes)


def _extents(nest):
    return [n for _, n in nest.domain]


N = sympy.Symbol("N", integer=True, positive=True)


@pytest.mark.parametrize("out,ins,expected", [
    ((N, 32), [(N, 32), (N, 32)], [32 * N]),          # same shape: one loop
    ((N, 32), [(N, 32), (32,)], [N, 32]),             # a row broadcast: two
    ((4, 5, 6), [(4, 5, 6), (4, 1, 6)], [4, 5, 6]),   # broadcast in the middle
    ((4, 5, 6), [(4, 5, 6), (1, 5, 6)], [4, 30]),     # the trailing two read alike
    ((1, 7, 1), [(1, 7, 1)], [7]),                    # static size-1 axes go
    ((3, 1), [(3, 1), (1, 1)], [3]),
])
def test_collapse_merges_axes_read_alike(out, ins, expected):
    nest, node = _elementwise(out, *ins)
    assert _extents(collapse(nest, node)) == expected


def test_collapsed_accesses_address_the_same_elements():
    """Render-free check: the collapsed nest's flat offsets equal the original's."""
    nest, node = _elementwise((4, 5, 6), (4, 5, 6), (1, 5, 6), (1, 1, 6))
    short = collapse(nest, node)
    assert _extents(short) == [4, 5, 6]  # nothing merges: three patterns
    nest, node = _elementwise((4, 5, 6), (4, 5, 6), (1, 5, 6))
    short = collapse(nest, node)
    assert _extents(short) == [4, 30]
    ranges = [range(int(e)) for e in _extents(nest)]
    got, want = set(), set()
    for point in np.ndindex(*[len(r) for r in ranges]):
        env = dict(zip([k for k, _ in nest.domain], point))
        for name, index in _accesses(nest).items():
            shape = _shape(nest, node, name)
            want.add((name, _flat([int(sympy.sympify(i).subs(env)) for i in index], shape)))
    short_ranges = [int(e) for e in _extents(short)]
    for point in np.ndindex(*short_ranges):
        env = dict(zip([k for k, _ in short.domain], point))
        for name, index in _accesses(short).items():
            shape = short.buffers[name].shape
            got.add((name, _flat([int(sympy.sympify(i).subs(env)) for i in index], shape)))
    assert got == want


def _accesses(nest):
    out = {}
    for st in nest.stores:
        out[st.buffer] = st.index
        for ld in sympy.sympify(st.value).atoms(L.Load):
            out[ld.args[0].name] = ld.args[1:]
    return out


def _shape(nest, node, name):
    spec = nest.buffers[name]
    return node.shape if spec.output else node.inputs[spec.input].shape


def _flat(index, shape):
    flat = 0
    for i, d in zip(index, shape):
        flat = flat * int(d) + i
    return flat


def test_collapse_leaves_other_nests_alone():
    i, j = L.index_symbols("i j")
    transpose = L.LoopNest({"x": L.Buf(input=0), "out": L.Buf(output=True)},
                           [(i, 3), (j, 4)], [L.Store("out", (i, j), L.load("x", j, i))])
    assert collapse(transpose, _Node((3, 4), (4, 3))) is transpose
    shifted = L.LoopNest({"x": L.Buf(input=0), "out": L.Buf(output=True)},
                         [(i, 3), (j, 4)], [L.Store("out", (i, j), L.load("x", i, j + 1))])
    assert collapse(shifted, _Node((3, 4), (3, 5))) is shifted
    # a size-1 input axis read by the loop index (not broadcast): a clamped load, kept
    clamped = L.LoopNest({"x": L.Buf(input=0), "out": L.Buf(output=True)},
                         [(i, 3), (j, 4)], [L.Store("out", (i, j), L.load("x", i, j))])
    assert collapse(clamped, _Node((3, 4), (3, 1))) is clamped
    accumulate = L.LoopNest({"x": L.Buf(input=0), "out": L.Buf(output=True)},
                            [(i, 3), (j, 4)], [L.Store("out", (i, j), L.load("x", i, j),
                                                       accumulate=True)])
    assert collapse(accumulate, _Node((3, 4), (3, 4))) is accumulate


def _module_text(fn_outputs, inputs):
    from graphc.backends.kernelgen.mathlib import host_math
    from graphc.backends.llvm.codegen import HostCodegen
    from graphc.function import build_program

    program, _ = build_program(inputs, fn_outputs)
    return str(HostCodegen(program, host_math()).build())


def test_distinct_buffers_get_noalias_scopes():
    with Graph():
        x, y = gc.placeholder("x", (8, 8)), gc.placeholder("y", (8, 8))
        text = _module_text([x * y], [x, y])
    assert "!alias.scope" in text and "!noalias" in text


def test_conv_schedules_share_their_pieces():
    """A large convolution runs on the host a sample at a time, the GPU the whole batch; both
    start from the same im2col description (the window formula). (A small one runs the
    whole batch on the host too: tests/backends/test_llvm_conv_schedules.py.)"""
    # (stride 2: not a direct convolution, tests/backends/test_llvm_direct_conv; sums of
    # 3 x 3 x 3 terms: not a channels-last one, test_llvm_channels_last_conv)
    with Graph():
        x = gc.placeholder("x", ("N", 3, 64, 64))
        w = gc.parameter("w", np.ones((64, 3, 3, 3), np.float32))
        y = gc.nn.functional.conv2d(x, w, padding=1, stride=2)
        node = y.node
        steps = node.op.loops(node, None)
    assert isinstance(steps, L.Schedules)
    (repeat,) = steps.host
    assert isinstance(repeat, L.Repeat)
    host_kinds = [type(s).__name__ for s in repeat.steps]
    gpu_kinds = [type(s).__name__ for s in steps.gpu]
    assert host_kinds == ["LoopNest", "Gemm"]
    assert gpu_kinds == ["LoopNest", "Gemm", "LoopNest"]
    assert repeat.steps[0].name == steps.gpu[0].name == "im2col"


def test_packing_the_weights_keeps_its_loops_rolled(monkeypatch):
    """A direct convolution's weight packing asks the host for rolled loops: each of its
    five loops of known count is marked not to be unrolled, and without the hint none is
    (the padding copy's loops are left to LLVM either way)."""
    from graphc.ops import conv as conv_module

    def marked_loops() -> int:
        with Graph():
            x = gc.placeholder("x", ("N", 3, 16, 16))
            w = gc.parameter("w", np.ones((8, 3, 3, 3), np.float32))
            y = gc.nn.functional.conv2d(x, w, padding=1)
            assert conv_module.direct(y.node)
            (pack,) = [s for s in y.node.op.loops(y.node, None).host
                       if isinstance(s, L.LoopNest) and s.name == "pack"]
            assert pack.hints == conv_module.PACK_HINTS
            return _module_text([y], [x]).count("!llvm.loop")

    rolled = marked_loops()
    monkeypatch.setattr(conv_module, "PACK_HINTS", {})
    assert rolled - marked_loops() == 5
