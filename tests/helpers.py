"""Shared test helpers: run an op case on a backend."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.sysinfo import cuda_devices


def case_arrays(case, dtype=np.float64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.asarray(a).astype(dtype) if np.asarray(a).dtype.kind == "f" else np.asarray(a)
            for a in case.inputs(rng)]


def build_case(case, arrays):
    """(graph, placeholders, output) for a case fed with `arrays`."""
    graph = gc.Graph(case.name)
    with graph:
        shapes = case.shapes or [a.shape for a in arrays]
        phs = [gc.placeholder(f"x{i}", s, a.dtype) for i, (s, a) in enumerate(zip(shapes, arrays))]
        out = case.build(*phs)
    return graph, phs, out


def run_case(case, backend: str = "numpy", dtype=np.float64, optimize: bool = True, seed: int = 0,
             backend_options=None):
    arrays = case_arrays(case, dtype, seed)
    graph, phs, out = build_case(case, arrays)
    with graph:
        fn = gc.compile(phs, out, backend=backend, optimize=optimize,
                        backend_options=backend_options)
    return fn(*arrays), arrays, fn


def scan_nodes(graph) -> list:
    """The scan nodes of a program, outermost first, bodies included (depth first)."""
    out = []
    for n in graph.nodes:
        if n.op.name == "scan":
            out.append(n)
            out += scan_nodes(n.attrs["body"])
    return out


# the `gpu` tests: run on a real CUDA device (./dev gpu-check), skipped without one
ON_DEVICE = [pytest.mark.gpu,
             pytest.mark.skipif(not cuda_devices()[1], reason="no CUDA device")]
# the backends a loop test runs on: "cuda" is the emulation (the kernels and the launch plan
# run on the host); "cuda-device" the same compilation on a real device
LOOP_BACKENDS = ["numpy", "llvm", "cuda", pytest.param("cuda-device", marks=ON_DEVICE)]


def compile_on(*args, backend: str, **kwargs):
    """gc.compile on one of LOOP_BACKENDS."""
    if backend == "cuda":
        kwargs["backend_options"] = {"emulate": True}
    elif backend == "cuda-device":
        backend, kwargs["backend_options"] = "cuda", {"verify": False}
    return gc.compile(*args, backend=backend, **kwargs)

