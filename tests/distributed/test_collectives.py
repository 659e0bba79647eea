"""gc.distributed in one process (what every laptop and most of the suite sees): the ops'
shape rules and identities on every backend, their gradients, the buckets and their place in the
schedule, the wrapper, sharding, SyncBatchNorm, pictures, `graphc info`. The multi-process
behaviour is tests/distributed/test_mpi.py's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import graphc as gc
from graphc import distributed as D
from graphc import nn
from graphc.distributed import runtime
from graphc.distributed.sampler import shard_indices

BACKENDS = [("numpy", None), ("llvm", None), ("cuda", {"emulate": True})]


def test_one_process_is_rank_zero_of_one():
    assert (D.rank(), D.size(), D.is_main()) == (0, 1, True)


@pytest.mark.parametrize("backend, options", BACKENDS, ids=["numpy", "llvm", "cuda-emulated"])
def test_collectives_are_identities_alone(backend, options):
    x = gc.placeholder("x", ("N", 2), "float32")
    outs = [D.allreduce(x), D.allreduce(x, "mean"), D.allreduce(x * 2, "max"), D.broadcast(x),
            D.reduce_root(x + 1)]
    fn = gc.compile([x], outs, backend=backend, backend_options=options)
    assert fn.distributed
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    for got, want in zip(fn(a), [a, a, 2 * a, a, a + 1]):
        np.testing.assert_array_equal(got, want)


def test_shape_rules_and_errors():
    x = gc.placeholder("x", ("N", 3), "float64")
    i = gc.placeholder("i", (4,), "int64")
    assert D.allreduce(x).shape == x.shape and D.allreduce(x).dtype == np.float64
    assert D.broadcast(i, 1).dtype == np.int64 and D.allreduce(i, "max").shape == (4,)
    with pytest.raises(gc.GraphError, match="op must be one of"):
        D.allreduce(x, "prod")
    with pytest.raises(gc.GraphError, match="float tensor"):
        D.allreduce(i, "mean")
    with pytest.raises(gc.GraphError, match="numbers"):
        D.allreduce(x > 0)
    with pytest.raises(gc.GraphError, match="process rank"):
        D.broadcast(x, -1)
    with pytest.raises(gc.GraphError, match="process rank"):
        D.reduce_root(x, 1.5)


def test_root_beyond_the_job_is_a_compile_error_on_llvm():
    x = gc.placeholder("x", (2,), "float64")
    fn = gc.compile([x], D.broadcast(x, 0), backend="llvm")  # root 0 always exists
    np.testing.assert_array_equal(fn(np.ones(2)), np.ones(2))


def test_host_collectives_keep_a_scalar_scalar():
    for got in (D.allreduce_array(np.float64(2)), D.broadcast_array(np.float64(2)),
                runtime.reduce_array(np.int64(3)), D.allreduce_array(np.ones(0), "max")):
        assert got.shape == (() if got.size else (0,))


def test_sample_count_is_the_symbolic_batch_dim_or_an_error():
    """The weight of a process is the batch: the symbolic leading dim its inputs share (a
    fixed-size placeholder built first is not it); different leading dims are ambiguous."""
    from graphc.distributed.data_parallel import sample_count

    s = gc.placeholder("s", (2,), "float64")
    x = gc.placeholder("x", ("N", 3), "float64")
    fn = gc.compile([s, x], sample_count(gc.sum(x) * gc.sum(s)))
    assert float(fn(np.ones(2), np.ones((5, 3)))) == 5.0
    a = gc.placeholder("a", (4, 3), "float64")
    assert float(gc.compile([a], sample_count(gc.sum(a)))(np.ones((4, 3)))) == 4.0
    seq = gc.placeholder("seq", ("T", "N", 3), "float64")
    lab = gc.placeholder("lab", ("N",), "float64")
    with pytest.raises(gc.GraphError, match=r"ambiguous.*samples="):
        sample_count(gc.sum(seq) + gc.sum(lab))
    with pytest.raises(gc.GraphError, match=r"ambiguous.*samples="):
        sample_count(gc.sum(a) + gc.sum(s))  # static leading sizes 4 and 2
    v = gc.parameter("v", np.ones(3))
    opt = D.DataParallel(gc.optim.SGD([v], lr=0.1), samples=gc.numel(seq, axis=1),
                         build_alone=True)
    opt.updates(gc.mean((gc.sum(seq * v, 0)[:, 0] - lab) ** 2))  # samples= settles it


def test_gradients_alone_are_the_identity_rules():
    """One process: sum/mean/max/broadcast/reduce are identities, and so are their gradients
    (max's with itself as the only holder); check_grad by finite differences."""
    a = np.array([0.3, -1.2, 2.0])
    for f in (lambda xs: gc.sum(gc.tanh(D.allreduce(xs[0] * xs[0]))),
              lambda xs: gc.sum(D.allreduce(xs[0], "mean") ** 3),
              lambda xs: gc.sum(D.allreduce(xs[0], "max") * gc.constant(np.array([1., 2., 3.]))),
              lambda xs: gc.sum(D.broadcast(xs[0]) ** 2),
              lambda xs: gc.sum(gc.exp(D.reduce_root(xs[0])))):
        assert gc.check_grad(f, [a]) < 1e-6


def test_gradient_graphs_are_collectives_too():
    """allreduce-sum's gradient is an allreduce-sum; broadcast's a reduce to the root, whose
    own gradient is a broadcast (the family is closed under differentiation)."""
    x = gc.placeholder("x", (3,), "float64")
    ops = {n.op.name for n in gc.optimize(gc.grad(gc.sum(D.allreduce(x) ** 2), x))[0].nodes}
    assert "allreduce" in ops
    g = gc.grad(gc.sum(D.broadcast(x, 0) ** 2), x)
    assert g.op == "reduce_root" or "reduce_root" in {
        n.op.name for n in gc.optimize(g)[0].nodes}
    gg = gc.grad(gc.sum(D.reduce_root(x) * x), x)
    assert "broadcast" in {n.op.name for n in gc.optimize(gg)[0].nodes}


def test_collectives_are_never_folded():
    c = gc.constant(np.array([1.0, 2.0]))
    graph, _ = gc.optimize(D.allreduce(c) * 2)
    assert "allreduce" in {n.op.name for n in graph.nodes}


def _mlp_step(distributed, bucket_mb=200 / 2**20, backend="numpy"):
    gc.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8, dtype="float64"), nn.Tanh(),
                          nn.Linear(8, 8, dtype="float64"), nn.ReLU(),
                          nn.Linear(8, 3, dtype="float64"))
    x = gc.placeholder("x", ("N", 6), "float64")
    y = gc.placeholder("y", ("N",), "int64")
    loss = nn.functional.cross_entropy(model(x), y)
    opt = gc.optim.Adam(model.parameters(), lr=0.01, clip_norm=1.0)
    if distributed:
        opt = D.DataParallel(opt, bucket_mb=bucket_mb, build_alone=True)
    return gc.compile([x, y], loss, updates=opt.updates(loss), backend=backend), model, opt


def test_buckets_are_placed_as_early_as_their_gradients():
    """The schedule starts each bucket's allreduce right after its last gradient (before the
    backward pass of the first layer is done) and waits only before the update reads it."""
    fn, _, _ = _mlp_step(True)
    nodes = fn.graph.nodes
    names = [n.op.name for n in nodes]
    starts = [k for k, n in enumerate(names) if n == "allreduce_start"]
    waits = [k for k, n in enumerate(names) if n == "allreduce_wait"]
    gemms = [k for k, n in enumerate(names) if n == "matmul"]
    assert len(starts) == len(waits) >= 3  # 200-byte buckets: several collectives
    assert starts[0] < gemms[-1] and max(starts) < min(waits)
    for k in starts:  # right after the packing of its last gradient
        packed = nodes[k].inputs[0]
        assert names.index("concat", 0) <= k and nodes[k - 1].uid == packed.uid
    stats = {s.name: s for s in fn.stats["passes"]}
    assert stats["collectives"].details["moved"] > 0
    # one bucket when they fit: one collective for the whole model
    one, _, _ = _mlp_step(True, bucket_mb=25)
    assert [n.op.name for n in one.graph.nodes].count("allreduce_start") == 1


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_bucketed_steps_match_plain_steps(backend, rng):
    """Alone, the buckets (scale by n, pack, allreduce, unpack, divide) change nothing."""
    plain, m1, _ = _mlp_step(False, backend=backend)
    bucketed, m2, _ = _mlp_step(True, backend=backend)
    x, y = rng.normal(size=(7, 6)), rng.integers(0, 3, size=7)
    for _ in range(3):
        plain(x, y)
        bucketed(x, y)
    for p, q in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(p.value, q.value, rtol=0, atol=1e-12)


def test_distributed_updates_alone_build_the_plain_step():
    """opt.updates(cost, distributed=True) outside mpiexec: no collective in the graph."""
    gc.manual_seed(0)
    lin = nn.Linear(3, 2, dtype="float64")
    x = gc.placeholder("x", ("N", 3), "float64")
    loss = gc.mean(lin(x) ** 2)
    opt = gc.optim.SGD(lin.parameters(), lr=0.1)
    fn = gc.compile([x], loss, updates=opt.updates(loss, distributed=True))
    assert not fn.distributed


def test_data_parallel_wrapper():
    gc.manual_seed(0)
    lin = nn.Linear(3, 2)
    opt = gc.optim.SGD(lin.parameters(), lr=0.1)
    dp = D.DataParallel(opt, bucket_mb=1)
    assert dp.lr == opt.lr and dp.state().keys() == opt.state().keys()
    assert D.DataParallel(dp).optimizer is opt
    with pytest.raises(gc.GraphError, match="bucket_mb"):
        D.DataParallel(opt, bucket_mb=0)
    with pytest.raises(gc.GraphError, match="wraps a gc.optim optimizer"):
        D.DataParallel(object())
    x = gc.placeholder("x", (), "float32")
    with pytest.raises(gc.GraphError, match="no batched placeholder"):
        D.DataParallel(opt, build_alone=True).updates(gc.sum(lin(gc.reshape(x, (1, 1)) *
                                                                 gc.ones((1, 3)))))


@pytest.mark.parametrize("n, size", [(10, 2), (11, 2), (7, 3), (1, 4), (22, 2)])
def test_shards_cover_the_epoch_and_have_equal_lengths(n, size):
    order = np.random.default_rng(n).permutation(n)
    shards = [shard_indices(order, r, size) for r in range(size)]
    assert len({len(s) for s in shards}) == 1  # every process: as many steps
    assert set(np.concatenate(shards)) == set(range(n))
    assert sum(len(s) for s in shards) - n < size  # padding: fewer than `size` repeats
    if n % size == 0:  # step k of the processes with batch b = one process's batch p*b
        b = 2
        for k in range(0, n // size, b):
            together = np.sort(np.concatenate([s[k:k + b] for s in shards]))
            np.testing.assert_array_equal(together, np.sort(order[size * k:size * (k + b)]))
    with pytest.raises(ValueError):
        shard_indices(order, size, size)


def test_sync_batch_norm_alone_is_batch_norm(rng):
    x = rng.normal(size=(6, 3, 4, 4))
    outs = []
    for cls in (nn.BatchNorm2d, nn.SyncBatchNorm):
        gc.manual_seed(0)
        bn = cls(3, dtype="float64")
        t = gc.placeholder("t", ("N", 3, 4, 4), "float64")
        y = bn(t)
        g = gc.grad(gc.sum(y * y * gc.constant(np.arange(3.0).reshape(1, 3, 1, 1))), t)
        fn = gc.compile([t], [y, g])
        outs.append((*fn(x), bn.state()["running_var"].copy()))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(gc.ShapeError, match="rank 2 to 5"):
        nn.SyncBatchNorm(3)(gc.placeholder("v", (3,)))


def test_pictures_and_source_name_the_collective(tmp_path):
    x = gc.placeholder("x", ("N",), "float64")
    y = D.allreduce(x, "mean")
    dot = gc.viz.to_dot([y, D.broadcast(x, 0)]).source
    assert "allreduce mean" in dot and "broadcast (root 0)" in dot and "hexagon" in dot
    fn = gc.compile([x], y)
    assert "K.allreduce(" in fn.source and "reduction='mean'" in fn.source
    assert "graphc_MPI" not in gc.compile([x], y, backend="llvm").source  # alone: a copy


def test_info_says_whether_mpi_is_usable():
    lines = dict(runtime.describe())
    assert "available" in lines
    if "library" in lines:
        assert "MPI" in lines["library"] or "mpi" in lines["library"]


def test_importing_graphc_does_not_import_mpi4py():
    code = "import sys, graphc; graphc.distributed.size(); print('mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_launch_detection_and_timeout_option(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    assert runtime.launched()
    monkeypatch.setenv("GRAPHC_MPI", "0")
    assert not runtime.launched()
    with pytest.raises(ValueError, match="> 0"):
        D.set_timeout(0)
    D.set_timeout(5)
    assert runtime.timeout() == 5.0
    D.set_timeout(None)
    monkeypatch.setenv("GRAPHC_MPI_TIMEOUT", "7.5")
    assert runtime.timeout() == 7.5
    with pytest.raises(ValueError, match="at most"):
        D.set_timeout(float("inf"))
    for bad in ("-5", "0", "nan", "inf", "abc", "1e300"):  # (-5 aborted the job at once)
        monkeypatch.setenv("GRAPHC_MPI_TIMEOUT", bad)
        with pytest.raises(ValueError, match="GRAPHC_MPI_TIMEOUT must be a finite number"):
            runtime.timeout()
