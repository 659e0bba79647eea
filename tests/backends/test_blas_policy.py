"""graphc's BLAS threading policy (graphc/blas_policy.py): OpenBLAS's workers sleep after each
product, set before NumPy loads OpenBLAS, never over the user's own choice, and reported
truthfully when NumPy was imported first. Each case is a fresh interpreter (the policy acts
once, at import)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = ("import os, sys\n{first}\nimport graphc\n"
         "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))\nprint(graphc.blas_policy.STATUS)\n")


def _run(first: str, **env: str) -> tuple[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE.format(first=first)], env=environ,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    value, status = out.strip().splitlines()[-2:]
    return value, status


@pytest.mark.parametrize("case", ["graphc-first", "numpy-first", "user-choice"])
def test_the_spin_timeout_is_set_only_when_it_can_reach_openblas(case):
    if case == "graphc-first":
        value, status = _run("")
        assert value == "4" and "set by graphc" in status
    elif case == "numpy-first":
        value, status = _run("import numpy")
        assert value == "None"
        assert "NumPy was imported before graphc" in status
        assert "OPENBLAS_THREAD_TIMEOUT=4" in status  # says how to get the policy
    else:
        value, status = _run("", OPENBLAS_THREAD_TIMEOUT="12")
        assert value == "12" and "OPENBLAS_THREAD_TIMEOUT=12" in status


def test_graphc_info_reports_the_policy():
    from graphc import blas_policy
    from graphc.sysinfo import report

    lines = dict(report()[1][1])
    assert lines["BLAS workers"] == blas_policy.STATUS


OPENMP_PROBE = ("import os\nimport graphc\nfrom graphc.backends.llvm import threads\n"
                "print(threads.runtime().source)\n"
                "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))\n")


@pytest.mark.parametrize("chosen, expected", [
    ({}, "PASSIVE 100"),  # graphc's: sleep after a brief spin
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE None"),  # the user's policy, untouched
    ({"OMP_WAIT_POLICY": "PASSIVE"}, "PASSIVE None"),  # (passive without any spin)
    ({"GOMP_SPINCOUNT": "50"}, "None 50"),
], ids=["unset", "active", "passive", "spincount"])
def test_openmp_workers_spin_briefly_unless_the_user_chose(chosen, expected):
    """libgomp reads its policy once, when it loads: graphc sets a brief spin before a sleep
    (GOMP_SPINCOUNT wins over OMP_WAIT_POLICY in libgomp) only when the user set neither."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    environ.update(chosen)
    out = subprocess.run([sys.executable, "-c", OPENMP_PROBE], env=environ, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    source, variables = out.strip().splitlines()[-2:]
    assert variables == expected
    if "OpenMP (libgomp)" in source:  # (graphc info's line says how the workers wait)
        assert ("set by graphc: workers spin briefly" in source) == (not chosen)
        for name, value in chosen.items():
            assert f"{name}={value}" in source
        # workers that spin without end would take the BLAS's cores: one thread, and why
        active = chosen.get("OMP_WAIT_POLICY") == "ACTIVE"
        assert ("1 thread: with OMP_WAIT_POLICY=ACTIVE, libgomp's workers would spin" in
                source) == active


@pytest.mark.parametrize("environ, keeps", [
    ({}, "no OMP_WAIT_POLICY"),  # libgomp's default: 300000 spins
    ({"OMP_WAIT_POLICY": "active"}, "OMP_WAIT_POLICY=active"),
    ({"OMP_WAIT_POLICY": "PASSIVE"}, ""),
    ({"GOMP_SPINCOUNT": "100", "OMP_WAIT_POLICY": "PASSIVE"}, ""),  # graphc's own
    ({"GOMP_SPINCOUNT": "10000"}, ""),  # a count wins over the policy in libgomp
    ({"GOMP_SPINCOUNT": "10000", "OMP_WAIT_POLICY": "ACTIVE"}, ""),
    ({"GOMP_SPINCOUNT": "299999"}, ""),
    ({"GOMP_SPINCOUNT": "300000", "OMP_WAIT_POLICY": "PASSIVE"}, "GOMP_SPINCOUNT=300000"),
    ({"GOMP_SPINCOUNT": "1M"}, "GOMP_SPINCOUNT=1M"),
    ({"GOMP_SPINCOUNT": "300k"}, "GOMP_SPINCOUNT=300k"),
    ({"GOMP_SPINCOUNT": "Infinity"}, "GOMP_SPINCOUNT=Infinity"),
    ({"GOMP_SPINCOUNT": "lots"}, "no OMP_WAIT_POLICY"),  # libgomp ignores what won't parse
    ({"GOMP_SPINCOUNT": "lots", "OMP_WAIT_POLICY": "PASSIVE"}, ""),
    ({"GOMP_SPINCOUNT": "\u00b2", "OMP_WAIT_POLICY": "PASSIVE"}, ""),  # (int() refuses '²')
    ({"GOMP_SPINCOUNT": "\u00b2k"}, "no OMP_WAIT_POLICY"),
])
def test_which_openmp_settings_keep_a_core_between_regions(environ, keeps):
    from graphc.blas_policy import workers_keep_a_core

    found = workers_keep_a_core(environ)
    assert found.startswith(keeps) if keeps else found == ""


@pytest.mark.parametrize("value, spins", [
    (None, True),  # NumPy imported first: OpenBLAS's default, 2^28 cycles
    ("4", False),  # graphc's own
    ("16", False),
    ("19", False),
    ("20", True),  # LONG_TIMEOUT: about 0.3 ms
    ("28", True),
    ("99", True),  # clamped to 30
    ("1", False),  # clamped to 4
    ("0", True),  # 0 or less: OpenBLAS's default
    ("-5", True),
    ("lots", True),  # atoi gives 0
    (" 8", False),
    ("12ms", False),  # atoi stops at the first non-digit
])
def test_which_openblas_timeouts_leave_its_workers_spinning(value, spins):
    """Read as OpenBLAS reads it (blas_policy.blas_workers_spin)."""
    from graphc.blas_policy import blas_workers_spin

    environ = {} if value is None else {"OPENBLAS_THREAD_TIMEOUT": value}
    assert blas_workers_spin(environ) is spins
