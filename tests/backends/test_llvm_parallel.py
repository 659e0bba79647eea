"""Parallel host loops (backends/llvm/threads.py, nest.splits_by_outer_index): a nest's
outermost loop runs in chunks on every thread when it has enough points. The results must be
the same bits on any thread count, equal to the NumPy backend's, and the compiled program the
same on any machine; nests whose chunks could interfere (a check that stops the step, a
scatter, a buffer read and written) stay on one thread."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import threads
from graphc.nn import functional as F

BIG = threads.PARALLEL_MIN_POINTS  # a nest of at least this many points runs in parallel


def _conv_step(dtype):
    """A CNN training step whose convolutions, pooling, ReLUs and their gradients are all
    worth BIG points or more at batch 32: every kernel kind with a parallel part."""
    rng = np.random.default_rng(0)
    x = gc.placeholder("x", ("N", 3, 32, 32), dtype)
    y = gc.placeholder("y", ("N",), "int64")
    w1 = gc.parameter("w1", (rng.normal(size=(32, 3, 3, 3)) * 0.2).astype(dtype))
    w2 = gc.parameter("w2", (rng.normal(size=(32, 32, 3, 3)) * 0.06).astype(dtype))
    v = gc.parameter("v", (rng.normal(size=(32 * 16 * 16, 10)) * 0.01).astype(dtype))
    h = gc.relu(F.conv2d(x, w1, padding=1))
    h = F.max_pool2d(gc.relu(F.conv2d(h, w2, padding=1)), 2)
    loss = F.cross_entropy(h.reshape(-1, 32 * 16 * 16) @ v, y)
    outputs = [loss, *gc.grad(loss, [w1, w2, v])]
    feed = [rng.normal(size=(32, 3, 32, 32)).astype(dtype), rng.integers(0, 10, size=32)]
    return [x, y], outputs, feed


def _wide_step(dtype):
    """Elementwise groups, softmax, reductions and a broadcast over 512 x 1024."""
    rng = np.random.default_rng(1)
    x = gc.placeholder("x", ("N", 1024), dtype)
    b = gc.parameter("b", rng.normal(size=1024).astype(dtype))
    h = gc.tanh(x * 1.5 + b) * gc.sigmoid(x)
    soft = F.softmax(h, axis=1)
    loss = (soft * h).sum() + gc.log(gc.exp(h).sum(axis=0)).sum()
    outputs = [loss, soft, *gc.grad(loss, [b])]
    return [x], outputs, [rng.normal(size=(512, 1024)).astype(dtype)]


def _per_sample_step(dtype):
    """LeNet-5's second layer and its gradients at batch 64: the input gradient runs a
    sample at a time (an independent Repeat, its columns on each thread's stack)."""
    from graphc.ops import conv as conv_module

    rng = np.random.default_rng(2)
    x = gc.placeholder("x", ("N", 6, 12, 12), dtype)
    w = gc.parameter("w", (rng.normal(size=(16, 6, 5, 5)) * 0.1).astype(dtype))
    y = F.conv2d(x, w)
    loss = (gc.tanh(y) * y).sum()
    gx, gw = gc.grad(loss, [x, w])
    if dtype == np.float32:  # (float64 rows of 12 are three whole vectors: direct)
        assert not conv_module.direct(gx.node) and not conv_module.whole_batch(gx.node)
    return [x], [loss, gx, gw], [rng.normal(size=(64, 6, 12, 12)).astype(dtype)]


def _strided_step(dtype):
    """A stride-2 convolution and its gradients at batch 48: the forward (an im2col into each
    thread's own columns and a GEMM) and the input gradient run a sample at a time on every
    thread."""
    from graphc.ops import conv as conv_module

    rng = np.random.default_rng(3)
    x = gc.placeholder("x", ("N", 8, 24, 24), dtype)
    w = gc.parameter("w", (rng.normal(size=(16, 8, 3, 3)) * 0.1).astype(dtype))
    y = F.conv2d(x, w, stride=2, padding=1)
    loss = (gc.tanh(y) * y).sum()
    gx, gw = gc.grad(loss, [x, w])
    for node in (y.node, gx.node):
        assert not conv_module.direct(node) and not conv_module.whole_batch(node)
    return [x], [loss, y, gx, gw], [rng.normal(size=(48, 8, 24, 24)).astype(dtype)]


@pytest.mark.parametrize("make", [_conv_step, _wide_step, _per_sample_step, _strided_step],
                         ids=["conv", "wide", "per-sample", "strided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_thread_count_gives_the_same_bits_as_one_thread(make, dtype):
    if not threads.runtime().openmp:
        pytest.skip("no libgomp here: every nest runs on the calling thread")
    inputs, outputs, feed = make(dtype)
    fn = gc.compile(inputs, outputs, backend="llvm")
    reference = gc.compile(inputs, outputs, backend="numpy")
    assert re.search(r'define internal i32 @"k\d+\.\w+\.part', fn.source)
    previous = threads.set_threads(1)
    try:
        serial = [np.array(o) for o in fn(*feed)]
        for count in (2, 3, 8):
            threads.set_threads(count)
            for _ in range(2):
                got = fn(*feed)
                for a, b in zip(got, serial):
                    assert a.tobytes() == b.tobytes()
    finally:
        threads.set_threads(previous)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)
    for a, b in zip(serial, reference(*feed)):
        np.testing.assert_allclose(a, b, **tol)


def _parts(fn) -> set[str]:
    """The ops of the kernels with a parallel part."""
    return set(re.findall(r'define internal i32 @"k\d+\.(\w+)\.part', fn.source))


def test_nests_that_could_interfere_stay_on_one_thread():
    n = BIG // 4  # (x and its ReLU: BIG points)
    labels = gc.placeholder("labels", ("N",), "int64")
    ids = gc.placeholder("ids", ("N",), "int64")
    table = gc.parameter("table", np.ones((50, 4), np.float32))
    x = gc.placeholder("x", ("N", 4))
    rows = gc.take(table, ids)  # a check per id; its gradient scatters rows into the table
    loss = (rows * x).sum() + (gc.one_hot(labels, 10) * 2.0).sum()
    outputs = [loss, gc.relu(x), *gc.grad(loss, [table])]
    fn = gc.compile([labels, ids, x], outputs, backend="llvm")
    parts = _parts(fn)
    assert "relu" in parts  # (the positive case in the same program)
    assert not parts & {"take", "one_hot", "scatter_add"}
    rng = np.random.default_rng(2)
    feed = [rng.integers(0, 10, n), rng.integers(0, 50, n),
            rng.normal(size=(n, 4)).astype(np.float32)]
    want = gc.compile([labels, ids, x], outputs, backend="numpy")(*feed)
    for a, b in zip(fn(*feed), want):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-3)
    bad = [feed[0].copy(), feed[1], feed[2]]
    bad[0][n // 2] = 10  # an out-of-range label is still reported, whatever the threads
    with pytest.raises(gc.BackendError, match="label"):
        fn(*bad)


PROBE = r"""
import ctypes, hashlib, sys
if sys.argv[1] == "no-openmp":  # a machine without libgomp
    real = ctypes.CDLL
    def refuse(name, *a, **k):
        if name and "gomp" in str(name):
            raise OSError("no libgomp here")
        return real(name, *a, **k)
    ctypes.CDLL = refuse
import numpy as np
import graphc as gc
from graphc.backends.llvm import threads
x = gc.placeholder("x", ("N", 512))
# small whole numbers: every partial sum of the product is exact in float32, so its bits do
# not depend on the BLAS's order of summation (OpenBLAS's sgemm on its Haswell kernels, as
# on a Zen 5, rounds differently on one thread and on two); the nests after it are graphc's
w = gc.parameter("w", (np.arange(512 * 512) % 7 - 3).reshape(512, 512).astype(np.float32))
y = gc.relu(x @ w) * gc.tanh(x * 0.37)
fn = gc.compile([x], [y.sum(axis=1), y], backend="llvm", backend_options={"cache": False})
out = fn((np.arange(512 * 512) % 5 - 2).reshape(512, 512).astype(np.float32))
print(threads.runtime().threads)
print(hashlib.sha256(fn.source.encode()).hexdigest())
print(hashlib.sha256(b"".join(o.tobytes() for o in out)).hexdigest())
"""


def test_the_program_and_its_results_do_not_depend_on_the_machine_threads():
    """The same IR and the same bits with libgomp and all cores, with GRAPHC_NUM_THREADS=1,
    and without libgomp (the regions never start)."""
    runs = {}
    for case, env in (("default", {}), ("one", {"GRAPHC_NUM_THREADS": "1"}),
                      ("no-openmp", {})):
        environ = {k: v for k, v in os.environ.items() if k != "GRAPHC_NUM_THREADS"}
        environ.update(env)
        out = subprocess.run([sys.executable, "-c", PROBE, case], env=environ, text=True,
                             capture_output=True, timeout=300, check=True).stdout.split()
        runs[case] = out
    assert runs["one"][0] == "1" and runs["no-openmp"][0] == "1"
    assert len({r[1] for r in runs.values()}) == 1  # one program
    assert len({r[2] for r in runs.values()}) == 1  # the same results


BLAS_SPY = r"""
import ctypes, sys
import numpy as np
import graphc as gc
from graphc.backends.llvm import blas, threads
from graphc.backends.kernelgen.toolchain import add_symbol

if not blas.blas().local_threads:
    print("none"); sys.exit()
threads.runtime()
asked, held = [], [4]  # the spy's BLAS holds 4 threads for this thread

@ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)
def spy(count):
    asked.append(count)
    previous, held[0] = held[0], count
    return previous

add_symbol("graphc_blas_threads", ctypes.cast(spy, ctypes.c_void_p).value)
x = gc.placeholder("x", ("N", 256))
w = gc.parameter("w", np.ones((256, 256), np.float32))
small = gc.placeholder("s", (4, 4))
fn = gc.compile([x, small], [x @ w, small @ small], backend="llvm",
                backend_options={"cache": False})
for team in ((1, 3, 4, 8) if sys.argv[1] == "set" else (None,)):
    if team is not None:
        threads.set_threads(team)
    del asked[:]
    fn(np.ones((64, 256), np.float32), np.ones((4, 4), np.float32))
    print(team, threads.runtime().threads, *asked)
"""


def test_a_step_s_products_use_no_more_blas_threads_than_the_runtime():
    """GRAPHC_NUM_THREADS (or set_threads) bounds the BLAS's threads in a step's large
    products too, never raising them above what the BLAS had; small products run on the
    calling thread alone; each product puts the BLAS's count back. A spy stands in for
    OpenBLAS's per-thread count (in a subprocess: the symbol is the process's)."""
    out = subprocess.run([sys.executable, "-c", BLAS_SPY, "set"], text=True,
                         capture_output=True, timeout=300, check=True).stdout.split("\n")
    if out[0] == "none":
        pytest.skip("this BLAS has no per-thread thread count")
    # the 64x256x256 product: ask 1 (reading the count), set min(team, 4), put 4 back;
    # the 4x4 product is written as a loop (no BLAS); nothing else calls the BLAS
    assert [line.split(" ", 2)[::2] for line in out[:4]] == [
        ["1", "1 1 4"], ["3", "1 3 4"], ["4", "1 4 4"], ["8", "1 4 4"]], out


def test_regions_kept_on_one_thread_leave_the_blas_its_threads():
    """libgomp loaded with spinning workers (here the user's OMP_WAIT_POLICY=ACTIVE; PyTorch
    imported first is the same) keeps every nest on one thread, which says nothing of the
    BLAS's own threads: the products still take the user's count (once they took the
    regions' 1, and a PyTorch imported first made mlp_784's step 2.4 -> 4.4 ms)."""
    environ = dict(os.environ, OMP_WAIT_POLICY="ACTIVE", GRAPHC_NUM_THREADS="3")
    environ.pop("GOMP_SPINCOUNT", None)
    out = subprocess.run([sys.executable, "-c", BLAS_SPY, "guard"], env=environ, text=True,
                         capture_output=True, timeout=300, check=True).stdout.split("\n")
    if out[0] == "none":
        pytest.skip("this BLAS has no per-thread thread count")
    assert out[0] == "None 1 1 3 4", out  # regions on 1 thread; the product asks 3


SPINNING_BLAS = r"""
import sys
if sys.argv[1] == "numpy-first":
    import numpy
import graphc as gc
import ctypes
import numpy as np
from graphc.backends.llvm import blas, threads
from graphc.backends.kernelgen.toolchain import add_symbol

found = blas.blas()
if not found.local_threads or not threads.runtime().openmp:
    print("skip"); sys.exit()
asked, held = [], [4]  # the spy's BLAS holds 4 threads for this thread

def record(count):
    asked.append(count)
    previous, held[0] = held[0], count
    return previous

spy = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)(record)
add_symbol("graphc_blas_threads", ctypes.cast(spy, ctypes.c_void_p).value)
threads.set_threads(2)
x = gc.placeholder("x", ("N", 1024))
w = gc.parameter("w", np.ones((1024, 64), np.float32))
fn = gc.compile([x], gc.relu(x) @ w, backend="llvm", backend_options={"cache": False})
for n in (1024, 4):  # a region (2^20 points) before a threaded product; neither
    del asked[:]
    fn(np.ones((n, 1024), np.float32))
    print(*asked, "|", held[0])
held[0] = 4  # a failed step puts the count back too (an index out of range, after a region)
ids = gc.placeholder("ids", ("M",), "int64")
failing = gc.compile([x, ids], gc.take(gc.relu(x) @ w, ids), backend="llvm",
                     backend_options={"cache": False})
del asked[:]
try:
    failing(np.ones((1024, 1024), np.float32), np.array([5000]))
except gc.BackendError:
    print(*asked, "|", held[0])
"""


@pytest.mark.parametrize("order", ["numpy-first", "graphc-first"])
def test_a_region_puts_later_products_on_one_blas_thread_while_blas_workers_spin(order):
    """NumPy imported before graphc leaves OpenBLAS's workers spinning after a product
    (blas_policy.BLAS_SPINS); one woken in a step would spin through its parallel nests on
    the core they need. So a region, as it starts, lowers the thread's BLAS count to one
    for the products after it, and the step puts the count back as it returns, a failed
    step too; a step whose regions do not start leaves the count alone. With graphc
    imported first the workers sleep, and nothing changes. A spy stands in for OpenBLAS's
    per-thread count (a subprocess: the symbol is the process's)."""
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", SPINNING_BLAS, order], env=environ, text=True,
                         capture_output=True, timeout=300, check=True).stdout.split("\n")
    if out[0] == "skip":
        pytest.skip("no per-thread BLAS count or no OpenMP runtime")
    if order == "numpy-first":
        # the region asks 1 (finding 4), the product finds 1 and keeps it, the step puts 4
        # back; with no region nor threaded product, only the small product's own 1 and 4;
        # the failing step (its gather fails after the product) the same as the first
        assert out[:3] == ["1 1 1 1 4 | 4", "1 4 | 4", "1 1 1 1 4 | 4"], out
    else:
        assert out[:3] == ["1 2 4 | 4", "1 4 | 4", "1 2 4 | 4"], out


@pytest.mark.parametrize("count", ["two", "99999999999", "4294967296", "\u00b2", "\u0663"])
def test_a_thread_count_that_is_not_a_number_of_threads_is_an_error(count):
    """Not a number, or more threads than libgomp could start (99999999999 asked it for 272
    GB and ended the process; 2^32 wrapped to 0; a superscript or Arabic-Indic digit, which
    isdigit() accepts and int() refuses or reads): a BackendError, and `graphc info` says it
    in one line, not a traceback."""
    environ = dict(os.environ, GRAPHC_NUM_THREADS=count)
    done = subprocess.run([sys.executable, "-c", "from graphc.backends.llvm import threads; "
                           "threads.runtime()"], env=environ, text=True, capture_output=True,
                          timeout=120)
    assert done.returncode != 0
    assert "GRAPHC_NUM_THREADS must be a whole number of threads, 1 to 4096" in done.stderr
    info = subprocess.run([sys.executable, "-m", "graphc", "info"], env=environ, text=True,
                          capture_output=True, timeout=120)
    assert info.returncode == 1 and "Traceback" not in info.stderr
    assert info.stderr.startswith("graphc info: GRAPHC_NUM_THREADS must be"), info.stderr


@pytest.mark.parametrize("policy", ["unset", "PASSIVE", "ACTIVE"])
def test_a_spinning_openmp_loaded_first_keeps_the_regions_off_unless_it_is_libgomp_s_own(
        policy):
    """PyTorch imported before graphc loads libgomp under the policy of its environment.
    With the user's spinning one (ACTIVE) every nest stays on one thread, since workers that
    never sleep would take the BLAS's cores, and graphc says why. With libgomp's own default
    (a spin of milliseconds) the regions run, and a step's products after a region run on
    one BLAS thread (cnn32 30-32 ms against 51-55 with the nests on one thread); graphc
    says so. A passive policy changes nothing."""
    pytest.importorskip("torch")
    environ = {k: v for k, v in os.environ.items()
               if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "GRAPHC_NUM_THREADS")}
    if policy != "unset":
        environ["OMP_WAIT_POLICY"] = policy
    code = ("import torch, graphc\nfrom graphc.backends.llvm import threads, blas\n"
            "print(blas.blas().local_threads, threads.runtime().source)")
    source = subprocess.run([sys.executable, "-c", code], env=environ, text=True,
                            capture_output=True, timeout=300, check=True).stdout
    if policy == "ACTIVE":
        assert "1 thread: libgomp was loaded before graphc" in source
    elif policy == "unset" and source.startswith("True"):
        assert "1 thread:" not in source
        assert "loaded before graphc (by PyTorch?): a step's products after a region run " \
               "on one BLAS thread" in source
    elif policy == "unset":  # no per-thread BLAS count to lower: the nests stay on one
        assert "1 thread: libgomp was loaded before graphc" in source
    else:
        assert "libgomp was loaded before graphc" not in source


REGIONS = r"""
import ctypes
import numpy as np
import graphc as gc
from graphc.backends.kernelgen.toolchain import add_symbol
from graphc.backends.llvm import threads
from graphc.nn import functional as F

threads.runtime()
threads.set_threads(2)
REGION = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32,
                          ctypes.c_uint32)
gomp = ctypes.CDLL("libgomp.so.1")
real = REGION(ctypes.cast(gomp.GOMP_parallel, ctypes.c_void_p).value)
started = []

@REGION
def counting(fn, data, team, flags):
    started.append(team)
    real(fn, data, team, flags)

add_symbol("graphc_parallel", ctypes.cast(counting, ctypes.c_void_p).value)
BIG, CALL, MACS = threads.PARALLEL_MIN_POINTS, threads.MATH_CALL_POINTS, threads.MACS_PER_POINT

def regions(build, *shapes):
    xs = [gc.placeholder(f"x{i}", ("N", *s[1:])) for i, s in enumerate(shapes)]
    fn = gc.compile(xs, build(*xs), backend="llvm", backend_options={"cache": False})
    data = [np.ones(s, np.float32) for s in shapes]
    fn(*data)
    started.clear()
    fn(*data)
    return len(started)

rows = BIG // 64
w = gc.parameter("w", np.full((16, 48, 3, 3), 0.01, np.float32))
conv = lambda x: F.conv2d(x, w, padding=1)
# a sample: 16 channels in three tiles of 6, 18 x 4 x 16 outputs of 48 x 9 multiply-adds
per_sample = 18 * 64 * 48 * 9
under, over = BIG * MACS // per_sample, BIG * MACS // per_sample + 2
assert under * per_sample < BIG * MACS <= over * per_sample
# rows of 8 positions: channels last, one tile of 16 channels, 16 x 8 x 8 outputs
per_sample_last = 16 * 64 * 48 * 9
under_last, over_last = BIG * MACS // per_sample_last, BIG * MACS // per_sample_last + 2
assert under_last * per_sample_last < BIG * MACS <= over_last * per_sample_last
# LeNet-5's second input gradient, a sample at a time (Repeat.independent): a sample is
# worth its 16x150x64 product over MACS and its col2im's 6x5x5x8x8 points
v = gc.parameter("v", np.full((16, 6, 5, 5), 0.01, np.float32))
g = gc.placeholder("g", ("N", 16, 8, 8))

def input_gradient(x):
    return gc.grad((F.conv2d(x, v) * g).sum(), [x])[0]

def repeat_regions(batch):
    x = gc.placeholder("x", ("N", 6, 12, 12))
    fn = gc.compile([x, g], input_gradient(x), backend="llvm", backend_options={"cache": False})
    data = [np.ones((batch, 6, 12, 12), np.float32), np.ones((batch, 16, 8, 8), np.float32)]
    fn(*data)
    started.clear()
    fn(*data)
    return len(started)

sample = 16 * 150 * 64 // MACS + 6 * 25 * 64
print(repeat_regions(BIG // sample), repeat_regions(BIG // sample + 1), end=" ")
print(regions(lambda x: gc.relu(x) * 2.0, (rows, 32)),  # half the bar: no region
      regions(lambda x: gc.relu(x) * 2.0, (rows, 64)),  # the bar
      regions(lambda x: gc.tanh(x) * 2.0, (rows, 64 // (1 + CALL) + 1)),  # tanh: 1 + CALL
      regions(lambda x: x * 2.0, (rows, 64 // (1 + CALL) + 1)),
      regions(lambda x: gc.sum(x, axis=1), (rows, 64)),  # a row of 64: 64 points
      regions(conv, (under, 48, 4, 16)),
      regions(conv, (over, 48, 4, 16)),
      regions(conv, (under_last, 48, 8, 8)),
      regions(conv, (over_last, 48, 8, 8)))
"""


def test_the_threshold_weighs_what_a_point_costs():
    """A region starts only when a nest's points, weighted by what each costs, reach the bar
    (a fixed rule of the sizes): a plain point counts one, a costly math function adds
    MATH_CALL_POINTS, a reduction multiplies by its length, and a direct or channels-last
    convolution's output counts its multiply-adds over MACS_PER_POINT; an independent
    Repeat's iteration (a convolution's input gradient, a sample at a time) counts its
    nests' points and its products' multiply-adds over MACS_PER_POINT. Counted by wrapping
    libgomp's entry point, in a process of its own."""
    if not threads.runtime().openmp:
        pytest.skip("no libgomp here: every nest runs on the calling thread")
    out = subprocess.run([sys.executable, "-c", REGIONS], text=True, capture_output=True,
                         timeout=300, check=True).stdout.split()
    assert out == ["0", "1", "0", "1", "1", "0", "1", "0", "1", "0", "1"]


@pytest.mark.parametrize("count", [1.5, "2", True, 0, 5000])
def test_set_threads_refuses_what_the_environment_variable_refuses(count):
    with pytest.raises(gc.BackendError, match="set_threads: a count of threads"):
        threads.set_threads(count)


FORK = r"""
import hashlib, os, signal, sys
import numpy as np
import graphc as gc
x = gc.placeholder("x", (2048, 1024))
# small whole numbers: the product's partial sums are exact, so its bits do not depend on
# who computes it (the BLAS's threads or graphc's)
w = gc.parameter("w", (np.arange(1024 * 256) % 7 - 3).reshape(1024, 256).astype(np.float32))
outputs = [gc.tanh(x) * 2.0, (x @ w).sum()]
a = (np.arange(2048 * 1024) % 5 - 2).reshape(2048, 1024).astype(np.float32)

def digest():
    f = gc.compile([x], outputs, backend="llvm", backend_options={"cache": False})
    return hashlib.sha256(b"".join(o.tobytes() for o in f(a))).hexdigest()

if sys.argv[1] == "torch-first":  # PyTorch's regions start libgomp's team, graphc has not
    import torch  # compiled anything before the fork
    torch.set_num_threads(2)
    torch.tanh(torch.ones(1 << 22)).sum()
else:  # graphc's own regions start the team
    digest()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    signal.alarm(60)  # a hang is killed, and reported by the exit status
    os.write(write, digest().encode())
    os._exit(0)
code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
child = os.read(read, 64).decode() if code == 0 else ""
print(code, child == digest())
"""


@pytest.mark.parametrize("first", ["graphc", "torch-first"])
def test_a_forked_child_runs_its_regions_on_one_thread(first):
    """libgomp's team does not survive fork: a child's first region of two threads waited
    forever for the parent's workers, whether graphc's regions or PyTorch's had started
    the team. A forked child runs every region on its calling thread, with the same bits
    (a process of its own, under a timeout)."""
    if not threads.runtime().openmp:
        pytest.skip("no libgomp here: every nest runs on the calling thread")
    if first == "torch-first":
        pytest.importorskip("torch")
    env = dict(os.environ, GRAPHC_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", FORK, first], text=True, capture_output=True,
                         timeout=300, check=True, env=env).stdout.split()
    assert out == ["0", "True"]
