"""Checks that need several MPI processes: ``mpiexec -n 2 python tests/distributed/mpi_checks.py
CASE [OUT]``. Each case checks several things and exits non-zero (MPI_Abort through graphc's
excepthook) at the first failure; tests/distributed/test_mpi.py launches them.

Cases: ``train`` (data-parallel steps equal one process's steps, numpy and llvm; the ops'
values and gradients; the schedule; fit's shards, metrics, checkpoints), ``raise`` (one rank
raises), ``bad-input`` (one rank feeds a wrong shape), ``timeout`` (one rank never reaches the
collective; the timeout aborts the job), ``audit`` (the fixes of the distributed audit:
processes that skip together, mismatched collectives and bad roots refused on every process,
scan bodies' collectives, sample weights, fit's global skip decision, scalar shapes).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # (tests.distributed.models)

import graphc as gc  # noqa: E402
from graphc import distributed as D  # noqa: E402
from graphc import nn  # noqa: E402

RANK, SIZE = D.rank(), D.size()


def compile_on(backend: str, *args, **kwargs):
    """gc.compile on "numpy", "llvm" or "cuda-emulated" (the GPU kernels run on the host)."""
    if backend == "cuda-emulated":
        return gc.compile(*args, backend="cuda", backend_options={"emulate": True}, **kwargs)
    return gc.compile(*args, backend=backend, **kwargs)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(f"rank {RANK}: {what}")


# -- the ops ------------------------------------------------------------------------------------

def ops_values(backend: str) -> None:
    """Values of every collective, float and int, on this backend."""
    for dtype in ("float64", "float32", "int64"):
        x = gc.placeholder("x", ("N",), dtype)
        outs = [D.allreduce(x), D.allreduce(x, "max"), D.broadcast(x, 1), D.reduce_root(x, 1)]
        if dtype != "int64":
            outs.append(D.allreduce(x, "mean"))
        fn = compile_on(backend, [x], outs)
        check(fn.distributed, "a function with collectives is distributed")
        mine = np.array([RANK + 1, -3 * RANK, 7], dtype=dtype)
        every = [np.array([r + 1, -3 * r, 7], dtype=dtype) for r in range(SIZE)]
        got = fn(mine)
        want = [sum(every), np.max(every, axis=0), every[1],
                sum(every) if RANK == 1 else np.zeros(3, dtype)]
        if dtype != "int64":
            want.append(sum(every) / SIZE)
        for g, w in zip(got, want):
            check(g.dtype == np.dtype(dtype) and np.array_equal(g, w),
                  f"{backend} {dtype}: {got} != {want}")


def ops_gradients() -> None:
    """check_grad under MPI: every process's share of the total cost, differenced one process
    at a time (graphc's check_grad does that when the function communicates)."""
    rng = np.random.default_rng(RANK)
    a = rng.normal(size=(3,))
    w = np.array([1.0, -2.0, 0.5])
    gc.check_grad(lambda xs: gc.sum(gc.tanh(D.allreduce(xs[0] * xs[0])) * w), [a])
    gc.check_grad(lambda xs: gc.sum(D.allreduce(xs[0], "mean") ** 3), [a])
    gc.check_grad(lambda xs: gc.sum(D.broadcast(xs[0], 1) ** 2 * w), [a])
    gc.check_grad(lambda xs: gc.sum(D.reduce_root(xs[0], 0) ** 2), [a])
    # max: distinct values (a tie is a kink, where differences do not converge)
    b = np.array([1.0, 5.0, -2.0]) if RANK == 0 else np.array([3.0, 4.0, -1.0])
    gc.check_grad(lambda xs: gc.sum(D.allreduce(xs[0], "max") * w), [b])
    # ties share: both processes hold the maximum 2.0 of element 0
    x = gc.placeholder("x", (3,), "float64")
    g = gc.grad(gc.sum(D.allreduce(x, "max") * w), x)
    got = gc.compile([x], g)(np.array([2.0, RANK, -RANK], dtype=np.float64))
    check(np.allclose(got, [SIZE * w[0] / SIZE, w[1] * SIZE if RANK == SIZE - 1 else 0,
                            w[2] * SIZE if RANK == 0 else 0]), f"max ties: {got}")


# -- data-parallel steps -------------------------------------------------------------------------

def _mlp(dtype, sync=False):
    gc.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8, dtype=dtype), nn.Tanh(), nn.Linear(8, 8, dtype=dtype),
                          nn.ReLU(), nn.Linear(8, 3, dtype=dtype))
    x = gc.placeholder("x", ("N", 6), dtype)
    return model, x, np.random.default_rng(1).normal(size=(11, 6))


def _cnn(dtype, sync=False):
    """Batch norm synchronized across the processes (plain batch norm for the one-process
    reference): the whole batch's statistics, running ones included."""
    gc.manual_seed(0)
    norm = nn.SyncBatchNorm if sync else nn.BatchNorm2d
    model = nn.Sequential(nn.Conv2d(1, 3, 3, dtype=dtype), norm(3, dtype=dtype),
                          nn.ReLU(), nn.Flatten(), nn.Linear(27, 3, dtype=dtype))
    x = gc.placeholder("x", ("N", 1, 5, 5), dtype)
    return model, x, np.random.default_rng(1).normal(size=(11, 1, 5, 5))


def _step(build, dtype, backend, make_opt, distributed):
    model, x, data = build(dtype, sync=bool(distributed))
    y = gc.placeholder("y", ("N",), "int64")
    loss = nn.functional.cross_entropy(model(x), y)
    opt = make_opt(model.parameters())
    if distributed == "wrapper":  # small buckets: several collectives, placed early
        updates = D.DataParallel(opt, bucket_mb=200 / 2**20).updates(loss)
    else:
        updates = opt.updates(loss, distributed=bool(distributed))
    fn = compile_on(backend, [x, y], loss, updates=updates)
    return fn, model, data


def data_parallel(backend: str, build, dtype: str, make_opt, tol: float, how) -> float:
    """Two processes with their parts of each batch (5 and 3 examples: unequal, the
    weighting matters) reach, step by step, the parameters one process reaches with the
    whole batch. Returns the largest difference seen."""
    ref, ref_model, data = _step(build, dtype, backend, make_opt, False)
    fn, model, _ = _step(build, dtype, backend, make_opt, how)
    check(fn.distributed and not ref.distributed, "which steps communicate")
    labels = np.random.default_rng(2).integers(0, 3, size=len(data))
    cut = [0, 5, 8]  # rank 0: 5 examples, rank 1: 3 examples of each batch of 8
    worst = 0.0
    for step in range(3):
        rows = (np.arange(8) + 3 * step) % len(data)
        ref(data[rows], labels[rows])
        mine = rows[cut[RANK]:cut[RANK + 1]]
        fn(data[mine], labels[mine])
        mine_state, ref_state = model.state(), ref_model.state()
        check(list(mine_state) == list(ref_state), "the same state keys")
        for name in ref_state:  # weights, running statistics
            p, q = mine_state[name], ref_state[name]
            scale = max(1.0, float(np.max(np.abs(q))))
            diff = float(np.max(np.abs(p - q))) / scale
            worst = max(worst, diff)
            check(diff <= tol, f"{backend} {dtype} step {step}: {name} differs by {diff:.3g} "
                               f"> {tol:g}")
    return worst


def schedule() -> None:
    """Each bucket's allreduce starts right after its last gradient, before the backward
    pass is over, and is waited for only before the update reads it."""
    fn, model, _ = _step(_mlp, "float64", "numpy", lambda p: gc.optim.SGD(p, lr=0.1), "wrapper")
    names = [n.op.name for n in fn.graph.nodes]
    starts = [k for k, n in enumerate(names) if n == "allreduce_start"]
    waits = [k for k, n in enumerate(names) if n == "allreduce_wait"]
    gemms = [k for k, n in enumerate(names) if n == "matmul"]
    check(len(starts) >= 2 and len(starts) == len(waits), f"buckets: {starts} {waits}")
    check(starts[0] < gemms[-1], f"first start {starts[0]} after the backward's last gemm")
    check(max(starts) < min(waits), "every start comes before the first wait")


def compile_broadcasts() -> None:
    """Compiling a distributed step gives every process rank 0's parameters and optimizer
    state, whatever each process initialized."""
    gc.manual_seed(100 + RANK)  # different weights on each process
    lin = nn.Linear(3, 2, dtype="float64")
    x = gc.placeholder("x", ("N", 3), "float64")
    loss = gc.mean(lin(x) ** 2)
    opt = gc.optim.Adam(lin.parameters(), lr=0.1)
    opt.load_state({k: v + RANK for k, v in opt.state().items()})
    mine = lin.weight.value.copy()
    gc.compile([x], loss, updates=opt.updates(loss, distributed=True))
    everyone = D.broadcast_object(lin.weight.value, root=0)
    check(np.array_equal(lin.weight.value, everyone), "weights equal after compiling")
    check(RANK == 0 or not np.array_equal(mine, lin.weight.value), "rank 1's were replaced")
    state = D.broadcast_object(opt.state(), root=0)
    check(all(np.array_equal(v, state[k]) for k, v in opt.state().items()), "optimizer state")


# -- fit -----------------------------------------------------------------------------------------

def fit_run(out: Path) -> None:
    """fit with batch 4 per process: the metrics are the average, only rank 0 prints and
    writes the checkpoint; the parameters and history go to `out` for the test (which resumes
    the checkpoint in one process with batch 8 and compares)."""
    from tests.distributed.models import fit_model

    step, model, (xs, ys) = fit_model(distributed=True)
    ckpt = out / "ckpt-{epoch}.graphc"
    history = gc.train.fit(step, (xs, ys), epochs=3, batch_size=4, seed=3,
                           checkpoint=gc.train.Checkpoint(ckpt, every=1), verbose=2)
    losses = D.allreduce_array(np.array(history["loss"]), "max")
    check(np.allclose(losses, history["loss"]), "every process has the same history")
    D.barrier()
    written = sorted(p.name for p in out.glob("ckpt-*.graphc"))
    check(written == [f"ckpt-{e}.graphc" for e in (1, 2, 3)], f"checkpoints {written}")
    if RANK == 0:  # (the test checks that rank 0 alone printed)
        np.savez(out / "fit.npz", *[p.value for p in model.parameters()],
                 loss=np.array(history["loss"]))


def train(out: Path) -> None:
    started = time.perf_counter()
    seconds, worst = {}, {}

    def timed(name, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        seconds[name] = round(time.perf_counter() - t, 2)
        return result

    adam = lambda p: gc.optim.Adam(p, lr=0.05, clip_norm=1.0)  # noqa: E731
    sgd = lambda p: gc.optim.SGD(p, lr=0.1, momentum=0.9)  # noqa: E731
    # (the GPU kernels run on the host; compiling a whole training step for the emulator
    # takes a minute, so the cuda target's collectives are checked on their own)
    timed("ops cuda-emulated", ops_values, "cuda-emulated")
    for backend in ("numpy", "llvm"):
        timed(f"ops {backend}", ops_values, backend)
        cases = [("mlp64", _mlp, "float64", adam, 1e-12, "wrapper"),
                 ("cnn64", _cnn, "float64", sgd, 1e-12, True)]
        if backend == "llvm":  # (native float32: its own summation orders)
            cases.append(("mlp32", _mlp, "float32", adam, 1e-6, True))
        for name, build, dtype, opt, tol, how in cases:
            worst[f"{name} {backend}"] = timed(f"{name} {backend}", data_parallel, backend, build,
                                               dtype, opt, tol, how)
    timed("gradients", ops_gradients)
    timed("schedule", schedule)
    timed("compile broadcasts", compile_broadcasts)
    timed("fit", fit_run, out)
    if RANK == 0:
        (out / "train.json").write_text(json.dumps(
            {"seconds": time.perf_counter() - started, "parts": seconds, "worst": worst}))
    print(f"rank {RANK}: train checks passed", flush=True)


# -- the audit's defects (one launch: every expected error is raised on every process, so
# each is caught and the next check runs) -----------------------------------------------------

def refused(kind, fn, *args, must=(), **kwargs) -> str:
    """fn(...) raises `kind` on this process; the message contains every string of `must`."""
    try:
        fn(*args, **kwargs)
    except kind as exc:
        text = str(exc)
        check(all(m in text for m in must), f"{kind.__name__} without {must}: {text}")
        return text
    raise AssertionError(f"rank {RANK}: {fn} did not raise {kind.__name__}")


def same_everywhere(value, what: str) -> None:
    every = D.broadcast_object(value, root=0)
    check(np.array_equal(np.asarray(every), np.asarray(value), equal_nan=True)
          if not isinstance(value, (dict, str)) else every == value, f"{what}: {value} vs {every}")


def skip_nonfinite_together() -> None:
    """Defect 1: skip_nonfinite + distributed with rank 1's batch empty (its mean cost is NaN):
    both processes update, as one process with the whole batch does; a NaN cost on a process
    with samples makes both skip."""
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    for backend in ("numpy", "llvm"):
        gc.reset_default_graph()
        w = gc.parameter("w", np.ones((3, 2)))
        x = gc.placeholder("x", ("N", 3), "float64")
        y = gc.placeholder("y", ("N", 2), "float64")
        loss = gc.mean((x @ w - y) ** 2)
        opt = gc.optim.SGD([w], lr=0.1)
        step = gc.compile([x, y], loss, backend=backend,
                          updates=opt.updates(loss, skip_nonfinite=True, distributed=True))
        mine = slice(0, 8) if RANK == 0 else slice(8, 8)
        step(xs[mine], ys[mine])
        want = np.ones((3, 2)) - 0.1 * 2 * xs.T @ (xs @ np.ones((3, 2)) - ys) / ys.size
        check(np.allclose(w.value, want, rtol=0, atol=1e-12), f"{backend}: updated {w.value}")
        check(int(opt.state()["nonfinite_steps"]) == 0, f"{backend}: nobody skips")
        bad = ys[:4].copy()
        bad[0, 0] = np.inf if RANK == 1 else 0.0  # a non-finite cost on rank 1 only
        before = w.value.copy()
        step(xs[:4], bad)
        check(np.array_equal(w.value, before), f"{backend}: both skip a bad global batch")
        check(int(opt.state()["nonfinite_steps"]) == 1, f"{backend}: counted once")
        same_everywhere(w.value, f"{backend} weights")


def mismatched_collectives() -> None:
    """Defect 2: processes whose collectives disagree get a BackendError on every process,
    naming the difference and the ranks, at compile time (op, dtype, kind, static shape,
    count; inside scans too) or, for symbolic sizes, at the call, before any data moves."""
    for backend in ("numpy", "llvm", "cuda-emulated"):
        gc.reset_default_graph()
        n = gc.placeholder("n", ("N",), "float64")
        fn = compile_on(backend, [n], D.allreduce(n))
        text = refused(gc.BackendError, fn, np.ones(3 + RANK),
                       must=("differ", "(3,) on rank 0", "(4,) on rank 1"))
        check("allreduce" in text, text)
        np.testing.assert_array_equal(fn(np.ones(2)), 2 * np.ones(2))  # still in step
        fb = compile_on(backend, [n], D.broadcast(n, 1))
        refused(gc.BackendError, fb, np.ones(3 + RANK), must=("broadcast",))
        if backend != "cuda-emulated":  # a symbolic loop length around a collective
            t = gc.placeholder("t", ("T", 2), "float64")
            c, _ = gc.scan(lambda c, v: (c + D.allreduce(v), c), gc.constant(np.zeros(2)), t)
            fs = compile_on(backend, [t], c)
            refused(gc.BackendError, fs, np.ones((2 + RANK, 2)),
                    must=("inside a scan of length T", "(2, 2) on rank 0", "(3, 2) on rank 1"))
    cases = {  # what rank 0 builds vs what rank 1 builds, from a float64 (3,) x
        "op": (lambda x: D.allreduce(x), lambda x: D.allreduce(x, "max"), "'max'"),
        "dtype": (lambda x: D.allreduce(x), lambda x: D.allreduce(gc.cast(x, "float32")),
                  "float32"),
        "kind": (lambda x: D.allreduce(x), lambda x: D.broadcast(x), "broadcast"),
        "shape": (lambda x: D.allreduce(x), lambda x: D.allreduce(gc.concat([x, x], 0)),
                  "(6,)"),
        "count": (lambda x: D.allreduce(x) + D.allreduce(x * 2),
                  lambda x: D.allreduce(x) * 2, "no more collectives"),
        "scan": (lambda x: gc.scan(lambda c, v: (c + D.allreduce(v), c), x, gc.stack([x, x]))[0],
                 lambda x: gc.scan(lambda c, v: (c + D.allreduce(v, "max"), c), x,
                                   gc.stack([x, x]))[0], "inside a scan"),
    }
    for backend in ("numpy", "llvm"):
        for zero, one, detail in cases.values():
            gc.reset_default_graph()
            x = gc.placeholder("x", (3,), "float64")
            out = (zero if RANK == 0 else one)(x)
            refused(gc.BackendError, compile_on, backend, [x], out,
                    must=("different collectives", "rank 0", "rank 1", detail))


def bad_roots() -> None:
    """Defect 7: a root that is not a process is a compile-time BackendError everywhere."""
    for backend in ("numpy", "llvm", "cuda-emulated"):
        for build in (lambda x: D.broadcast(x, 2), lambda x: D.reduce_root(x, 5)):
            gc.reset_default_graph()
            x = gc.placeholder("x", (3,), "float64")
            refused(gc.BackendError, compile_on, backend, [x], build(x),
                    must=("root", "size 2"))
    refused(gc.BackendError, D.broadcast_array, np.ones(2), 3, must=("root 3", "size 2"))


def scan_collectives_distribute() -> None:
    """Defect 3: a collective only inside a scan body makes a distributed function: compiling
    broadcasts rank 0's parameters, and check_grad perturbs one process at a time."""
    for backend in ("numpy", "llvm"):
        gc.reset_default_graph()
        xs = gc.placeholder("xs", (3, 2), "float64")
        w = gc.parameter("w", np.full(2, 1.0 + RANK))
        c, _ = gc.scan(lambda c, x, w=w: (c + D.allreduce(x * w), c), gc.constant(np.zeros(2)),
                       xs)
        fn = compile_on(backend, [xs], c)
        check(fn.distributed, f"{backend}: a scan's collective makes a distributed function")
        check(np.array_equal(w.value, np.ones(2)), f"{backend}: rank 0's parameter: {w.value}")
    a = 1.0 + 2.0 * RANK

    def f(v):
        c, _ = gc.scan(lambda c, x: (c + D.allreduce(x), c), gc.constant(np.zeros(2)), v[0])
        return gc.sum(c) * a

    check(gc.check_grad(f, [np.arange(6.0).reshape(3, 2)]) < 1e-6, "check_grad")


def sample_weights() -> None:
    """Defect 4: the weight is the batch (the symbolic leading dim), not a fixed-size
    placeholder built first; an ambiguous batch asks for samples=."""
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    w0, scale = rng.normal(size=(3, 2)), np.array([1.0, 3.0])
    gc.reset_default_graph()
    s = gc.placeholder("s", (2,), "float64")
    x = gc.placeholder("x", ("N", 3), "float64")
    y = gc.placeholder("y", ("N", 2), "float64")
    w = gc.parameter("w", w0.copy())
    loss = gc.mean(((x @ w - y) ** 2) * s)
    step = gc.compile([s, x, y], loss,
                      updates=gc.optim.SGD([w], lr=0.1).updates(loss, distributed=True))
    mine = slice(0, 5) if RANK == 0 else slice(5, 8)
    step(scale, xs[mine], ys[mine])
    r = (xs @ w0 - ys) * scale
    check(np.allclose(w.value, w0 - 0.1 * 2 * xs.T @ r / r.size, rtol=0, atol=1e-12),
          "weighted by 5 and 3")
    gc.reset_default_graph()
    v = gc.parameter("v", np.ones(3))
    seq = gc.placeholder("seq", ("T", "N", 3), "float64")
    lab = gc.placeholder("lab", ("N",), "float64")
    cost = gc.mean((gc.sum(seq * v, 0)[:, 0] - lab) ** 2)
    refused(gc.GraphError, gc.optim.SGD([v]).updates, cost, distributed=True,
            must=("ambiguous", "samples=", "seq", "lab"))


def _untimed(history) -> str:
    return repr({k: v for k, v in history.history.items() if k != "time"})


def fit_together(out: Path) -> None:
    """Defects 5 and 8: fit(on_nonfinite="skip") decides per batch for all processes
    (identical histories, stopping as one process with the whole batch); a step that is not
    distributed is refused."""
    gc.reset_default_graph()
    gc.manual_seed(0)
    model = nn.Linear(3, 2, dtype="float64")
    x = gc.placeholder("x", ("N", 3), "float64")
    y = gc.placeholder("y", ("N",), "int64")
    loss = nn.functional.cross_entropy(model(x), y)
    opt = gc.optim.SGD(model.parameters(), lr=0.1)
    step = gc.compile([x, y], [loss, model(x)],
                      updates=opt.updates(loss, skip_nonfinite=True, distributed=True))
    xs = np.random.default_rng(0).normal(size=(8, 3))
    ys = np.arange(8) % 2
    xs[1::2, 0] = np.nan  # rank 1's shard (shuffle=False: the odd rows) is all NaN
    h = gc.train.fit(step, (xs, ys), epochs=2, batch_size=2, shuffle=False, verbose=0,
                     on_nonfinite="skip")
    check(h.stop_reason == "every batch of epoch 1 had a non-finite loss", h.stop_reason)
    check(h["skipped_batches"] == [2], f"{h.history}")
    same_everywhere(_untimed(h), "fit history")
    xs[1::2, 0] = 0.0
    xs[5, 0] = np.nan  # one bad global batch of four
    h = gc.train.fit(step, (xs, ys), epochs=1, batch_size=2, shuffle=False, verbose=0,
                     on_nonfinite="skip")
    check(h["skipped_batches"] == [1] and np.isfinite(h["loss"][0]), f"{h.history}")
    same_everywhere(_untimed(h), "fit history with one bad batch")
    plain = gc.compile([x, y], loss, updates=gc.optim.SGD(model.parameters()).updates(loss))
    refused(gc.GraphError, gc.train.fit, plain, (xs, ys), epochs=1, batch_size=2, verbose=0,
            must=("distributed=True",))
    frozen = gc.compile([x, y], loss)  # updates nothing: nothing diverges, it may run
    gc.train.fit(frozen, (np.zeros((8, 3)), ys), epochs=1, batch_size=2, verbose=0)


def scalar_shapes() -> None:
    """Defect 6: a collective of a 0-d tensor keeps shape () on numpy too."""
    for backend in ("numpy", "llvm", "cuda-emulated"):
        gc.reset_default_graph()
        x = gc.placeholder("x", (), "float64")
        got = compile_on(backend, [x], [D.allreduce(x), D.broadcast(x), D.allreduce(x, "max")])(
            np.float64(RANK + 1))
        check([g.shape for g in got] == [()] * 3 and float(got[0]) == 3.0, f"{backend}: {got}")
    check(D.allreduce_array(np.float64(2)).shape == (), "host allreduce of a scalar")


def audit(out: Path) -> None:
    skip_nonfinite_together()
    mismatched_collectives()
    bad_roots()
    scan_collectives_distribute()
    sample_weights()
    fit_together(out)
    scalar_shapes()
    print(f"rank {RANK}: audit checks passed", flush=True)


def main() -> None:
    case = sys.argv[1]
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(".")
    check(SIZE == 2, f"run under mpiexec -n 2 (size is {SIZE})")
    x = gc.placeholder("x", ("N",), "float64")
    if case == "train":
        train(out)
    elif case == "audit":
        audit(out)
    elif case == "raise":
        fn = gc.compile([x], D.allreduce(x))
        fn(np.ones(2))
        if RANK == 1:
            raise RuntimeError("rank 1 fails on purpose")
        fn(np.ones(2))  # rank 0 waits here for rank 1, which is gone: MPI_Abort ends it
    elif case == "exit":
        fn = gc.compile([x], D.allreduce(x))
        fn(np.ones(2))
        if RANK == 1:
            sys.exit(3)  # SystemExit never reaches the excepthook: the exit guard aborts
        fn(np.ones(2))
    elif case == "bad-input":
        fn = gc.compile([x], D.allreduce(x))
        fn(np.ones(2) if RANK == 0 else np.ones((2, 2)))  # rank 1: a ShapeError
    elif case == "timeout":
        D.set_timeout(2.0)
        fn = gc.compile([x], D.allreduce(x), backend="llvm")
        if RANK == 1:
            time.sleep(60)  # never reaches the collective (and is ended by rank 0's abort)
        fn(np.ones(2))
    else:
        raise SystemExit(f"unknown case {case!r}")


if __name__ == "__main__":
    main()
