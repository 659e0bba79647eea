"""graphc's BLAS threading policy: worker threads sleep as soon as their product is done
(and the OpenMP workers of its parallel loops wait passively, see the end of this module).

OpenBLAS (the BLAS NumPy ships, which the llvm backend calls too) keeps its worker threads
spinning for about 2^28 cycles (~0.1 s) after every threaded product, waiting for the next
one. In a training step the next thing is usually not a product but an elementwise kernel, a
pooling loop, or another framework, and a spinning worker takes a core from it. On this
project's 2-core machine (docs/performance.md, "The BLAS threading policy"), with one busy
process beside the step, LeNet-5's llvm step went from 9.9 to 3.4 ms, cnn32's from 255 to
171 ms, and mlp_784's from 15.1 to 10.7 ms. PyTorch eager ran 2.4x slower right after a NumPy step.
The price is a worker's wake-up at each threaded product: on a quiet machine, a step of a
few large products is slower (mlp_784: 2.85 -> 3.84 ms, LeNet-5 10%, the LSTM 7%).

The timeout can only be set before OpenBLAS is loaded, i.e. before NumPy is first imported:
`apply` sets ``OPENBLAS_THREAD_TIMEOUT=4`` (OpenBLAS's minimum, 2^4 cycles) when it still
can and the user has not chosen a value. `STATUS` says what happened (``graphc info`` prints
it). Small products are a separate matter: the llvm backend runs them on the calling thread
alone (backends/llvm/kernels_linalg.THREADED_GEMM). Where the workers do spin (`BLAS_SPINS`:
NumPy first, or a long timeout of the user's), the llvm backend puts a step's products after
its first parallel region on one BLAS thread (kernels_linalg.blas_to_one_thread_if_workers_spin).
"""

from __future__ import annotations

import os
import re
import sys

TIMEOUT_VARIABLE = "OPENBLAS_THREAD_TIMEOUT"
#: log2 of the cycles a worker spins before it sleeps; 4 is the smallest OpenBLAS accepts
QUICK_SLEEP = "4"


def apply() -> str:
    """Set the BLAS workers' spin timeout if NumPy has not loaded OpenBLAS yet; say how the
    timeout stands."""
    chosen = os.environ.get(TIMEOUT_VARIABLE)
    if chosen is not None:
        return f"{TIMEOUT_VARIABLE}={chosen} (set before graphc was imported)"
    if "numpy" in sys.modules:
        return (f"OpenBLAS's default (workers spin ~0.1 s after each product): NumPy was "
                f"imported before graphc; import graphc first or set {TIMEOUT_VARIABLE}="
                f"{QUICK_SLEEP} to have them sleep at once (meanwhile the llvm backend runs a "
                f"step's products after a parallel loop on one BLAS thread)")
    os.environ[TIMEOUT_VARIABLE] = QUICK_SLEEP
    return f"{TIMEOUT_VARIABLE}={QUICK_SLEEP} (set by graphc: workers sleep after each product)"


STATUS = apply()

#: OpenBLAS's timeout (log2 of cycles) from which a worker outspins the kernels between two
#: products: 2^20 cycles is about 0.3 ms, OpenBLAS's default is 2^28 (~0.1 s)
LONG_TIMEOUT = 20


def blas_workers_spin(environ=os.environ) -> bool:
    """Do OpenBLAS's workers spin on after a product, long enough to take a core from the
    kernels that follow it? True under OpenBLAS's default (NumPy imported before graphc, the
    variable unset) and for a timeout of LONG_TIMEOUT or more. The value is read as OpenBLAS
    reads it: atoi, 0 or less meaning the default, the rest clamped to [4, 30]."""
    number = re.match(r"\s*([+-]?\d+)", environ.get(TIMEOUT_VARIABLE, ""))
    value = int(number.group(1)) if number else 0
    if value <= 0:
        return True
    return min(max(value, 4), 30) >= LONG_TIMEOUT


#: checked once: OpenBLAS reads its timeout when NumPy loads it, which has happened by now
#: or happens under the variable `apply` set
BLAS_SPINS = blas_workers_spin()

#: The same for the OpenMP runtime (libgomp) of the llvm backend's parallel loops
#: (backends/llvm/threads.py): its workers must not keep a core, which libgomp reads once,
#: when the first library that uses OpenMP (PyTorch, for one) loads it.
OPENMP_WAIT_VARIABLE = "OMP_WAIT_POLICY"
#: ... but a worker that sleeps the moment a region ends costs each region a wake-up, and a
#: woken vCPU is slow: an empty region of two threads took 30-77 µs with passive workers on
#: the 2-core Zen 4 VM, 0.7-1.4 µs when they spin for about 20 µs first. libgomp's workers,
#: and the thread that waits for them at a region's end, spin this many times (a few µs)
#: and then sleep: the threads of a region that end together meet without a wake-up. With
#: 100 spins LeNet-5's three parallel convolution kernels took 5-28% fewer cycles than
#: passive (three alternating runs; 1000 spins were no better), and with one busy process
#: beside the step it ran as fast as passive, within the VM's noise. 1000 spins (10-20 µs)
#: made that busy step 13% slower (medians of six alternating runs): a spin that bridges
#: the gaps between regions takes a core a busy machine needs.
OPENMP_SPIN_VARIABLE = "GOMP_SPINCOUNT"
BRIEF_SPINS = "100"


#: Workers that spin this many times or more before they sleep (libgomp's own default when
#: no policy is set) keep a core between regions: cnn32's step took 105 ms on two threads
#: against 66 on one on the 2-core VM. ``OMP_WAIT_POLICY=ACTIVE`` spins without end: on the
#: 16-CPU GPU machine it made mlp_784's step 86 ms against 1.1 and cnn32's 109 against 16,
#: the BLAS's 16 threads sharing cores with 15 spinning OpenMP workers.
LONG_SPINS = 300_000
_SPIN_SUFFIXES = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def _spin_count(text: str) -> float:
    """GOMP_SPINCOUNT as libgomp reads it: a count with an optional k, M, G or T, or
    "infinite"/"infinity"; what does not parse counts as no count (libgomp ignores it)."""
    text = text.strip().lower()
    if text in ("infinite", "infinity"):
        return float("inf")
    scale = _SPIN_SUFFIXES.get(text[-1:], 1) if text else 1
    digits = text[:-1] if scale != 1 else text
    # (ASCII digits only: isdigit() is True for '²', which int() refuses)
    return float(int(digits) * scale) if digits.isascii() and digits.isdigit() else -1.0


def workers_keep_a_core(environ=os.environ) -> str:
    """Why libgomp's workers, under the policy in `environ`, would spin on between regions
    (the setting that makes them), or "" when they sleep after at most a brief spin."""
    count = _spin_count(environ.get(OPENMP_SPIN_VARIABLE, ""))
    if count >= LONG_SPINS:
        return f"{OPENMP_SPIN_VARIABLE}={environ[OPENMP_SPIN_VARIABLE]}"
    if count >= 0:  # a count the user chose wins over the policy's
        return ""
    policy = environ.get(OPENMP_WAIT_VARIABLE, "").strip().lower()
    if policy == "passive":
        return ""
    return (f"{OPENMP_WAIT_VARIABLE}={environ[OPENMP_WAIT_VARIABLE]}" if policy == "active"
            else f"no {OPENMP_WAIT_VARIABLE} (libgomp's default: a spin of milliseconds)")


def _openmp_loaded() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
        return True
    except (OSError, AttributeError):
        return False


def apply_openmp() -> str:
    """Ask for OpenMP workers that sleep after a brief spin (passive, spinning BRIEF_SPINS
    times) while libgomp is not loaded and the user chose no policy. Returns why the
    workers will spin on between regions anyway ("" when they will not): the user chose
    so, or another library loaded libgomp before graphc without a passive policy. Then
    every nest stays on the calling thread (backends/llvm/threads.py), since workers that
    spin on take the BLAS's cores; except under libgomp's own default loaded first
    (`OPENMP_DEFAULT_FIRST`), where the products after a region go to one BLAS thread
    instead."""
    global OPENMP_STATUS, OPENMP_DEFAULT_FIRST
    chosen = ", ".join(f"{name}={os.environ[name]}" for name in
                       (OPENMP_WAIT_VARIABLE, OPENMP_SPIN_VARIABLE) if name in os.environ)
    OPENMP_STATUS = f"{chosen} (set before graphc was imported)" if chosen else \
        "libgomp's default (spin, then sleep)"
    loaded = _openmp_loaded()
    OPENMP_DEFAULT_FIRST = loaded and not chosen
    if not loaded and not chosen:
        os.environ[OPENMP_WAIT_VARIABLE] = "PASSIVE"
        os.environ[OPENMP_SPIN_VARIABLE] = BRIEF_SPINS  # (libgomp: this wins over PASSIVE)
        OPENMP_STATUS = (f"{OPENMP_SPIN_VARIABLE}={BRIEF_SPINS} (set by graphc: workers "
                         f"spin briefly, then sleep)")
        return ""
    setting = workers_keep_a_core()
    if not setting:
        return ""
    if loaded:
        return (f"libgomp was loaded before graphc (by PyTorch?) with spinning workers "
                f"({setting}); import graphc first or set {OPENMP_WAIT_VARIABLE}=PASSIVE")
    return (f"with {setting}, libgomp's workers would spin between regions and take the "
            f"BLAS's cores; unset {OPENMP_WAIT_VARIABLE} and {OPENMP_SPIN_VARIABLE} to have "
            f"graphc choose (a brief spin, then sleep)")


#: libgomp was loaded before graphc (by PyTorch) with its default policy, which nobody
#: chose: a spin of milliseconds after each region. Unlike a spin the user asked for, the
#: llvm backend still runs regions then, with a step's products after a region on one BLAS
#: thread (`ONE_BLAS_THREAD_AFTER_A_REGION`), so the spinning workers take no BLAS worker's
#: core: cnn32 30-36 ms a step so, against 51-54 on one thread (PyTorch imported first).
OPENMP_DEFAULT_FIRST = False

#: how libgomp's workers wait, for ``graphc info``
OPENMP_STATUS = ""
#: why libgomp's workers will spin on between regions ("" when they will not): every nest
#: then stays on the calling thread, except under OPENMP_DEFAULT_FIRST (threads.runtime)
OPENMP_SPINS = apply_openmp()

#: a parallel region puts a step's later products on one BLAS thread (the llvm backend,
#: kernels_linalg.blas_to_one_thread_if_workers_spin) when some workers spin on after their
#: work: OpenBLAS's (NumPy imported first) or libgomp's (loaded first with its default)
ONE_BLAS_THREAD_AFTER_A_REGION = BLAS_SPINS or OPENMP_DEFAULT_FIRST


#: set in a child forked from a process that had loaded libgomp: its team does not survive
#: fork (GCC's libgomp is not fork-safe: the child's first region of more than one thread
#: waits forever for workers left in the parent, graphc's or PyTorch's), so the child runs
#: every region on its calling thread (backends/llvm/threads.py). Registered at ``import
#: graphc``, so a fork before graphc's first compile is seen too.
FORKED_AFTER_OPENMP = False


def _in_forked_child() -> None:
    global FORKED_AFTER_OPENMP
    FORKED_AFTER_OPENMP = FORKED_AFTER_OPENMP or _openmp_loaded()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_forked_child)
