"""Two processes under ``mpiexec -n 2`` (tests/distributed/mpi_checks.py runs in them): data-
parallel steps equal one process's steps, the collectives' values and gradients, the schedule,
fit under MPI and its resume in one process, and failures that end the job instead of hanging.
Few launches, each checking several things: a launch costs about a second."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc as gc

pytest.importorskip("mpi4py")
HERE = Path(__file__).resolve().parent
CHECKS = HERE / "mpi_checks.py"


def _mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec (pip install 'graphc[mpi]' brings MPICH's)")
    return found


def launch(case: str, out: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """mpiexec -n 2 on one case; a job that hangs fails the test (TimeoutExpired)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCAL"))}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", GRAPHC_MPI="")
    return subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(CHECKS), case, str(out)],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def test_two_processes_train_as_one_and_resume_in_one(tmp_path):
    run = launch("train", tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rank 0: train checks passed" in run.stdout
    assert "rank 1: train checks passed" in run.stdout
    report = json.loads((tmp_path / "train.json").read_text())
    # float64: the same parameters to 1e-12 (seen: ~1e-16); float32: 1e-6 relative
    assert all(v <= (1e-6 if "32" in k else 1e-12) for k, v in report["worst"].items())
    # only rank 0 printed fit's epochs (three lines, not six)
    assert run.stdout.count("epoch 3/3") == 1
    # the checkpoint of epoch 2, written by 2 processes with batch 4, resumed by one process
    # with batch 8: the same epoch 3 (the same shuffled batches, the same averages)
    from tests.distributed.models import fit_model

    step, model, data = fit_model(distributed=True)  # (one process: plain gradients)
    assert not step.distributed
    history = gc.train.fit(step, data, epochs=3, batch_size=8, seed=3, verbose=0,
                           resume=tmp_path / "ckpt-2.graphc")
    saved = np.load(tmp_path / "fit.npz")
    for k, p in enumerate(model.parameters()):
        np.testing.assert_allclose(p.value, saved[f"arr_{k}"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(history["loss"], saved["loss"], rtol=1e-12)


def test_audit_fixes_hold_on_two_processes(tmp_path):
    """One launch (mpi_checks.py audit): skip_nonfinite decided together (an empty batch on
    one process), mismatched collectives (op, dtype, kind, shape, count, inside a scan, and
    symbolic sizes at the call) and bad roots refused on every process with a BackendError,
    a scan body's collective makes a distributed function, sample weights from the batch
    dim, fit's global skip decision and its refusal of a non-distributed step, scalar
    shapes. Every expected error is raised on both processes, so each is caught there."""
    run = launch("audit", tmp_path, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert "rank 0: audit checks passed" in run.stdout
    assert "rank 1: audit checks passed" in run.stdout


@pytest.mark.parametrize("case, message", [
    ("raise", "RuntimeError: rank 1 fails on purpose"),
    ("exit", "sys.exit(3): aborting the MPI job"),
    ("bad-input", "ShapeError"),
    ("timeout", "did not complete within 2 s"),
])
def test_a_failing_process_ends_the_job(tmp_path, case, message):
    run = launch(case, tmp_path, timeout=90)
    assert run.returncode != 0
    assert message in run.stderr, run.stderr[-3000:]
    if case != "timeout":  # the failing rank names itself
        assert "[graphc rank 1 of 2]" in run.stderr


def test_the_readme_command_trains_the_digits_cnn_on_two_processes(tmp_path):
    """`mpiexec -n 2 python examples/data_parallel.py` (quick): it learns, and rank 0 alone
    prints the epochs and writes the curves."""
    example = HERE.parents[1] / "examples" / "data_parallel.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_"))}
    env.update(OPENBLAS_NUM_THREADS="1", GRAPHC_QUICK="1")
    run = subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(example)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env=env,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "2 process(es), batch 32 per process (64 per step)" in out
    assert out.count("epoch 2/2") == 1 and out.count("[quick mode]") == 1
    accuracy = float(out.split("test accuracy: ")[1].split()[0])
    assert accuracy > 0.85, out
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["data_parallel_curves.png"]
