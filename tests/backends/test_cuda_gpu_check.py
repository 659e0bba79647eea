"""`./dev gpu-check` (backends/cuda/gpucheck.py) where it can be checked without a GPU: it
says there is no device and stops before installing anything; it names the wheels to bring;
its report says what failed and what was cut short."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from graphc.backends.cuda import gpucheck
from graphc.sysinfo import cuda_devices

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(bool(cuda_devices()[1]), reason="a CUDA device is present")
def test_dev_gpu_check_without_a_device_says_so_and_installs_nothing():
    env = {**os.environ, "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(ROOT / "dev"), "gpu-check"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == gpucheck.NO_DEVICE, res.stdout + res.stderr
    assert "no CUDA device" in res.stdout
    assert "installing graphc" not in res.stdout  # stopped before pip


def test_dev_gpu_check_refuses_unknown_arguments():
    res = subprocess.run(["bash", str(ROOT / "dev"), "gpu-check", "--bogus"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "usage" in res.stderr


def test_missing_modules_are_named_with_the_command_that_fetches_them():
    missing = gpucheck.missing_modules(lambda m: m not in ("graphviz", "networkx"))
    assert [m for m in missing if not m.startswith("setuptools")] == ["networkx", "graphviz"]
    command = gpucheck.download_command(["graphviz", "setuptools>=77"])
    assert command.startswith("python3 -m pip download --no-deps --only-binary=:all:")
    assert f"--python-version {sys.version_info.major}.{sys.version_info.minor}" in command
    assert command.endswith("-d .whl graphviz 'setuptools>=77'")


def test_the_report_shows_failures_timeouts_and_timings():
    tests = dict(counts={"PASSED": 10, "FAILED": 1, "SKIPPED": 3}, seconds=42.0,
                 timed_out=True, returncode=-9,
                 failures=["FAILED tests/backends/test_cuda.py::test_x - AssertionError"])
    bench = [dict(workload="tiny_mlp", batch=16, ms={"llvm": 0.01, "cuda cuBLAS": 0.2},
                  compile={"llvm": 0.8, "cuda cuBLAS": 1.1}, loss={"llvm": 1.1, "cuda cuBLAS":
                                                                    1.1},
                  errors={"cuda tiled": "BackendError: boom"})]
    text = gpucheck.report([("device", "NVIDIA Test (sm_90, 1.0 GiB)")], tests, bench)
    assert "| device | NVIDIA Test (sm_90, 1.0 GiB) |" in text
    assert "10 passed, 1 failed, 3 skipped in 42 s, STOPPED" in text
    assert "test_x - AssertionError" in text
    assert "| tiny_mlp (16) | 0.010 | 0.200 | — |" in text
    assert "cuda tiled: BackendError: boom" in text


@pytest.mark.parametrize("line, version", [
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build",
     "580.159.04"),
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023",
     "535.104.05"),
])
def test_the_kernel_module_version_is_the_number_not_the_next_word(line, version):
    # the open module's line has "for x86_64" after "Kernel Module": the report once read "for"
    assert gpucheck._kernel_driver(line + "\nGCC version: gcc 12\n") == f", kernel module {version}"
    assert gpucheck._kernel_driver("no such line") == ""
