"""``./dev gpu-check``: the CUDA path's checks on a machine with a GPU, in minutes, and one
report to paste into the README.

    python backends/cuda/gpucheck.py preflight [--wheels DIR]   # before graphc is installed
    python -m graphc.backends.cuda.gpucheck run [--no-bench]      # after

`preflight` uses the standard library only (it runs before graphc is installed): it names
every Python module the check needs that is missing, with the ``pip download`` command that
fetches their wheels on a machine with network, installs them from a folder of wheels when one
is given (``pip install --no-index --find-links DIR``), and looks for a CUDA device. Exit
status: 0 ready, 3 no CUDA device, 4 modules missing.

`run` runs the ``gpu`` tests of the CUDA test files (a timeout per test, a budget for all),
then, unless ``--no-bench``, times the benchmark workloads' training steps on llvm and on cuda
(cuBLAS and the tiled GEMM kernels), and prints the report. Exit status 1 if a test failed.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (an editable install runs here)
# module -> the distribution that provides it; what the gpu tests need to import
REQUIRED = {"numpy": "numpy", "sympy": "sympy", "networkx": "networkx", "llvmlite": "llvmlite",
            "scipy": "scipy", "tqdm": "tqdm", "threadpoolctl": "threadpoolctl",
            "graphviz": "graphviz", "pytest": "pytest"}
SETUPTOOLS = 77  # pyproject's build backend; the editable install runs it in this Python
# where the `gpu` tests are: the ops, kernels and training steps; the loops (scan, random draws
# in loop bodies) on the device
TEST_FILES = ("tests/backends/test_cuda.py", "tests/core/test_scan.py",
              "tests/core/test_scan_random.py")
TEST_BUDGET_S = 230  # the whole gpu test stage (the issue asks for under 4 minutes)
TEST_TIMEOUT_S = 60  # one test (needs pytest-timeout; without it only the budget applies)
NO_DEVICE, MISSING = 3, 4


# -- preflight (standard library only) ------------------------------------------------------


def missing_modules(python_has=None) -> list[str]:
    """Distributions to bring: required modules that do not import, and setuptools when it
    is older than the build backend pyproject asks for."""
    has = python_has or (lambda m: importlib.util.find_spec(m) is not None)
    missing = [dist for module, dist in REQUIRED.items() if not has(module)]
    try:  # (read from its metadata: an import would keep the old version after an upgrade)
        major = int(re.match(r"\d+", importlib.metadata.version("setuptools")).group())
    except (importlib.metadata.PackageNotFoundError, AttributeError, ValueError):
        major = 0
    if major < SETUPTOOLS:
        missing.append(f"setuptools>={SETUPTOOLS}")
    return missing


def download_command(dists: list[str]) -> str:
    """The pip command that fetches wheels for this Python on a machine with network."""
    v = sys.version_info
    platforms = " ".join(f"--platform {p}" for p in (
        "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"))
    names = " ".join(f"'{d}'" if ">" in d else d for d in dists)
    return (f"python3 -m pip download --no-deps --only-binary=:all: --python-version "
            f"{v.major}.{v.minor} --implementation cp {platforms} -d .whl {names}")


def cuda_device() -> tuple[str, list[str]]:
    """(what was found, device names) through the driver API; never raises."""
    name = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return "no CUDA driver (libcuda) on this machine", []
    if lib.cuInit(0) != 0:
        return "the CUDA driver is installed but cuInit failed (no usable device)", []
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "the CUDA driver is installed but reports no device", []
    names = []
    for i in range(count.value):
        dev, buf = ctypes.c_int(0), ctypes.create_string_buffer(256)
        lib.cuDeviceGet(ctypes.byref(dev), i)
        lib.cuDeviceGetName(buf, 256, dev)
        names.append(buf.value.decode(errors="replace"))
    return "CUDA driver found", names


def install_wheels(folder: str, dists: list[str]) -> bool:
    """pip install the missing distributions from a folder of wheels, no index."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", folder,
           *dists]
    print("[gpu-check] installing from", folder + ":", " ".join(dists), flush=True)
    return subprocess.run(cmd).returncode == 0


def preflight(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpucheck.py preflight")
    parser.add_argument("--wheels", help="a folder of wheels to install missing modules from")
    args = parser.parse_args(argv)
    print(f"[gpu-check] Python {platform.python_version()} at {sys.executable}")
    missing = missing_modules()
    if missing and args.wheels:
        if not Path(args.wheels).is_dir():
            print(f"[gpu-check] --wheels {args.wheels}: no such folder")
        elif install_wheels(args.wheels, missing):
            importlib.invalidate_caches()
            missing = missing_modules()
    status, devices = cuda_device()
    print(f"[gpu-check] {status}" + (f": {', '.join(devices)}" if devices else ""))
    if missing:
        print(f"[gpu-check] missing Python modules: {', '.join(missing)}. Without network here, "
              "fetch their wheels on a machine that has it, into the repository's .whl/ "
              "folder:\n    " + download_command(missing) +
              "\n  then run ./dev gpu-check again here (it installs from .whl/, or from "
              "--wheels DIR).")
    if not devices:
        print("[gpu-check] no CUDA device: this check needs a machine with an NVIDIA GPU and "
              "its driver. Without one, the CUDA path is checked by the ordinary test suite "
              "(./dev test: PTX accepted by ptxas, every kernel emulated on the CPU).")
        return NO_DEVICE
    return MISSING if missing else 0


# -- the run (graphc installed) -----------------------------------------------------------


def _run_tests(budget_s: float, log: Path) -> dict:
    """pytest -m gpu on the CUDA test files within `budget_s`; per-test results parsed from
    its verbose output (so a run cut short still reports what it did)."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", *TEST_FILES, "-v", "-p",
           "no:cacheprovider", "-o", "addopts=", "-rfE", "--durations=5"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd.append(f"--timeout={TEST_TIMEOUT_S}")
    print("[gpu-check] " + " ".join(cmd[1:]), flush=True)
    started = time.monotonic()
    outcomes: dict[str, str] = {}
    failures: list[str] = []
    line_re = re.compile(r"^(\S+::.+?) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b")
    final_re = re.compile(r"^=+ (.*\d+ (?:passed|failed|skipped|deselected|error).*) in "
                          r"[\d.]+s")
    final = None
    with open(log, "w") as out, subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True) as proc:
        stopped = []

        def stop():  # the budget is spent: end pytest and whatever it started
            stopped.append(True)
            os.killpg(proc.pid, 9)

        timer = threading.Timer(budget_s, stop)
        timer.start()
        echo = False  # from the durations / summary sections on, every line is shown
        try:
            for line in proc.stdout:
                out.write(line)
                m = line_re.match(line)
                if m:
                    outcomes[m.group(1)] = m.group(2)
                    if m.group(2) in ("FAILED", "ERROR"):
                        print("  " + line.rstrip(), flush=True)
                    elif len(outcomes) % 50 == 0:
                        print(f"  ... {len(outcomes)} tests, "
                              f"{time.monotonic() - started:.0f} s", flush=True)
                    continue
                if "ERROR collecting" in line or line.startswith("=") and any(
                        h in line for h in ("ERRORS", "slowest", "short test summary")):
                    echo = True
                if echo:
                    print("  " + line.rstrip(), flush=True)
                if line.startswith(("FAILED ", "ERROR ")):
                    failures.append(line.strip()[:300])
                m = final_re.match(line)
                if m:
                    final = m.group(1)
            proc.wait()
        finally:
            timer.cancel()
    timed_out = bool(stopped)
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    if final:  # pytest's own count, when it got to the end
        for n, what in re.findall(r"(\d+) (\w+)", final):
            key = {"passed": "PASSED", "failed": "FAILED", "skipped": "SKIPPED",
                   "error": "ERROR", "errors": "ERROR"}.get(what)
            if key:
                counts[key] = int(n)
    if not failures:
        failures = [f"{o} {t}" for t, o in outcomes.items() if o in ("FAILED", "ERROR")]
    return dict(counts=counts, failures=failures, seconds=time.monotonic() - started,
                timed_out=timed_out, returncode=proc.returncode, log=str(log))


def _bench(window_s: float = 0.2, rounds: int = 5) -> list[dict]:
    """ms/step of the benchmark workloads on llvm, cuda with cuBLAS and cuda with the tiled
    GEMM (each its own copy of the parameters, same initial values and batch), round-robin."""
    import statistics

    import numpy as np

    import graphc as gc

    sys.path.insert(0, str(ROOT))
    from bench.workloads import BENCHMARKS, lstm_classifier

    variants = {"llvm": ("llvm", None), "cuda cuBLAS": ("cuda", {"cublas": True}),
                "cuda tiled": ("cuda", {"cublas": False})}
    rows = []
    for name, (make, batch_size) in {**BENCHMARKS, "lstm": (lstm_classifier, 32)}.items():
        row: dict = {"workload": name, "batch": batch_size, "ms": {}, "compile": {},
                     "loss": {}}
        steps = {}
        for label, (backend, options) in variants.items():
            with gc.Graph(name):
                inputs, loss, updates, feed = make()
            try:
                start = time.perf_counter()
                fn = gc.compile(inputs, loss, updates=updates, backend=backend,
                                backend_options=options)
                row["compile"][label] = time.perf_counter() - start
                batch = feed(batch_size, np.random.default_rng(0))
                row["loss"][label] = float(fn(*batch))
                steps[label] = (fn, batch)
            except Exception as exc:  # a failing variant is reported, the others still run
                row.setdefault("errors", {})[label] = f"{type(exc).__name__}: {exc}"[:200]
        for fn, batch in steps.values():
            for _ in range(5):
                fn(*batch)
        samples: dict = {label: [] for label in steps}
        for _ in range(rounds):
            for label, (fn, batch) in steps.items():
                n, start = 0, time.perf_counter()
                while time.perf_counter() - start < window_s:
                    fn(*batch)
                    n += 1
                samples[label].append((time.perf_counter() - start) / n * 1000)
        row["ms"] = {label: statistics.median(v) for label, v in samples.items()}
        for fn, _ in steps.values():
            fn.close()
        rows.append(row)
        print(f"  {name}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in row["ms"].items()),
              flush=True)
    return rows


def _environment() -> list[tuple[str, str]]:
    import llvmlite
    import numpy as np

    import graphc as gc
    from graphc.sysinfo import libdevice_path, ptxas_path, ptxas_version

    from .runtime import cublas, driver

    rows = []
    try:
        info = driver().describe()
        rows.append(("device", f"{info['device']} ({info['compute capability']}, "
                               f"{info['memory']})"))
        rows.append(("driver", f"CUDA driver API {info['driver API version']}" +
                     _kernel_driver()))
    except Exception as exc:
        rows.append(("device", f"driver error: {exc}"))
    blas = cublas()
    rows.append(("cuBLAS", blas.version() if blas is not None else "not found (tiled GEMM)"))
    rows.append(("toolkit", f"ptxas: {ptxas_version() or 'not found'} ({ptxas_path()}); "
                            f"libdevice: {libdevice_path() or 'not found'}"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    rows.append(("software", f"graphc {gc.__version__}" + (f" ({commit})" if commit else "") +
                 f", Python {platform.python_version()}, llvmlite {llvmlite.__version__}, "
                 f"numpy {np.__version__}, {os.cpu_count()} CPUs"))
    return rows


def _kernel_driver(text: str | None = None) -> str:
    """The kernel module's version from /proc/driver/nvidia/version, where there is one.

    The line reads "NVIDIA UNIX x86_64 Kernel Module  580.95" on the proprietary module and
    "NVIDIA UNIX Open Kernel Module for x86_64  580.159.04" on the open one, so the version
    is the first dotted number after "Kernel Module", not the word that follows it.
    """
    if text is None:
        try:
            text = Path("/proc/driver/nvidia/version").read_text()
        except OSError:
            return ""
    m = re.search(r"Kernel Module\b.*?\b(\d+(?:\.\d+)+)\b", text)
    return f", kernel module {m.group(1)}" if m else ""


def report(env, tests, bench) -> str:
    """The Markdown block for the README."""
    lines = [f"#### `./dev gpu-check`, {time.strftime('%Y-%m-%d')}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in env]
    c = tests["counts"]
    done = ", ".join(f"{c.get(k, 0)} {k.lower()}" for k in ("PASSED", "FAILED", "ERROR",
                                                          "SKIPPED") if c.get(k) or k in
                     ("PASSED", "FAILED"))
    stopped = f", STOPPED at the {TEST_BUDGET_S} s budget" if tests["timed_out"] else ""
    lines.append(f"| gpu tests | {done} in {tests['seconds']:.0f} s{stopped} "
                 f"(`pytest -m gpu {' '.join(TEST_FILES)}`) |")
    if tests["failures"]:
        lines += ["", "Failures:", ""] + [f"- `{f}`" for f in tests["failures"][:30]]
    if bench:
        labels = ["llvm", "cuda cuBLAS", "cuda tiled"]
        lines += ["", "| workload (batch) | " + " | ".join(f"{x} ms/step" for x in labels) +
                  " | compile s (llvm / cuda) | first loss (llvm / cuda) |",
                  "|---|" + "---:|" * (len(labels) + 2)]
        for row in bench:
            cells = [f"{row['ms'][x]:.3f}" if x in row["ms"] else "—" for x in labels]
            comp = " / ".join(f"{row['compile'][x]:.2f}" for x in ("llvm", "cuda cuBLAS")
                              if x in row["compile"])
            loss = " / ".join(f"{row['loss'][x]:.5f}" for x in ("llvm", "cuda cuBLAS")
                              if x in row["loss"])
            lines.append(f"| {row['workload']} ({row['batch']}) | " + " | ".join(cells) +
                         f" | {comp} | {loss} |")
        errors = [f"- {row['workload']}, {label}: {err}" for row in bench
                  for label, err in row.get("errors", {}).items()]
        if errors:
            lines += ["", "Timing failures:", ""] + errors
    return "\n".join(lines)


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpucheck run")
    parser.add_argument("--no-bench", action="store_true", help="skip the timing stage")
    parser.add_argument("--budget", type=float, default=TEST_BUDGET_S,
                        help="seconds for the whole test stage")
    args = parser.parse_args(argv)
    out = ROOT / "out" / "gpu-check"
    out.mkdir(parents=True, exist_ok=True)
    print("[gpu-check] stage 1: the gpu tests", flush=True)
    tests = _run_tests(args.budget, out / "pytest.log")
    bench = []
    if not args.no_bench:
        print("[gpu-check] stage 2 (optional): ms/step on llvm and cuda", flush=True)
        try:
            bench = _bench()
        except Exception as exc:  # the report still comes
            print(f"[gpu-check] the timing stage failed: {type(exc).__name__}: {exc}")
    text = report(_environment(), tests, bench)
    (out / "report.md").write_text(text + "\n")
    print("\n[gpu-check] report (also in out/gpu-check/report.md; the tests' log in "
          "out/gpu-check/pytest.log):\n")
    print(text)
    failed = tests["counts"].get("FAILED", 0) + tests["counts"].get("ERROR", 0)
    if not tests["counts"].get("PASSED"):
        print("[gpu-check] no gpu test passed: were they all skipped (no device seen)?")
        return 1
    return 1 if failed or tests["timed_out"] or tests["returncode"] != 0 else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("preflight", "run"):
        print(__doc__)
        return 2
    return preflight(argv[1:]) if argv[0] == "preflight" else run(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
