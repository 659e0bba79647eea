"""gc.compile / gc.Function: feeding, validation, atomic updates, default updates."""

import numpy as np
import pytest

import graphc as gc

F = gc.nn.functional


@pytest.fixture
def affine():
    x = gc.placeholder("x", ("N", 2))
    k = gc.placeholder("k", (), "int64")
    W = gc.parameter("W", np.eye(2, dtype=np.float32))
    return x, k, W


def test_positional_and_by_name(affine):
    x, k, W = affine
    fn = gc.compile([x, k], x @ W * k)
    a = np.ones((3, 2), np.float32)
    np.testing.assert_allclose(fn(a, 2), 2 * a)
    np.testing.assert_allclose(fn(x=a, k=3), 3 * a)
    np.testing.assert_allclose(fn(a, k=4), 4 * a)
    assert fn.input_names == ["x", "k"]


@pytest.mark.parametrize("call, match", [
    (lambda fn, a: fn(a), "missing"),
    (lambda fn, a: fn(a, 1, 2), "3 positional"),
    (lambda fn, a: fn(a, 1, z=1), "unknown input 'z'"),
    (lambda fn, a: fn(a, 1, x=a), "given twice"),
])
def test_argument_errors(affine, call, match):
    x, k, W = affine
    fn = gc.compile([x, k], x * k)
    with pytest.raises(gc.GraphError, match=match) as err:
        call(fn, np.ones((2, 2), np.float32))
    assert isinstance(err.value, TypeError)


def test_allowed_conversions(affine):
    x, k, W = affine
    fn = gc.compile([x, k], x * k)
    f64 = np.ones((2, 2), np.float64)
    assert fn(f64, 1).dtype == np.float32  # float64 -> float32: same kind
    assert fn(np.ones((2, 2), np.int64), np.int32(2)).dtype == np.float32  # int -> float
    np.testing.assert_allclose(fn([[1, 2], [3, 4]], True), [[1, 2], [3, 4]])  # lists, bool->int
    fortran = np.asfortranarray(np.arange(4.0, dtype=np.float32).reshape(2, 2))
    np.testing.assert_allclose(fn(fortran, 1), fortran)
    strided = np.arange(8.0, dtype=np.float32).reshape(2, 4)[:, ::2]
    np.testing.assert_allclose(fn(strided, 1), strided)


def test_rejected_inputs_name_placeholder_and_shapes(affine):
    x, k, W = affine
    fn = gc.compile([x, k], x * k)
    with pytest.raises(gc.ShapeError) as err:
        fn(np.ones((2, 3), np.float32), 1)
    assert "'x'" in str(err.value) and "(N, 2)" in str(err.value) and "(2, 3)" in str(err.value)
    with pytest.raises(gc.ShapeError, match="rank"):
        fn(np.ones(2, np.float32), 1)
    with pytest.raises(gc.ShapeError, match="'k'.*int64.*float64"):
        fn(np.ones((2, 2), np.float32), 1.5)  # floats into an int placeholder
    with pytest.raises(gc.ShapeError):
        fn(np.ones((2, 2), np.complex64), 1)
    with pytest.raises(gc.ShapeError):
        fn("hello", 1)


def test_updates_are_atomic_and_applied_after_outputs(affine):
    x, k, W = affine
    b = gc.parameter("b", np.zeros(2, np.float32))
    loss = ((x @ W + b) ** 2).sum()
    gW, gb = gc.grad(loss, [W, b])
    step = gc.compile([x], [loss, W], updates={W: W - 0.1 * gW, b: b - 0.1 * gb})
    a = np.ones((3, 2), np.float32)
    loss0, w_seen = step(a)
    np.testing.assert_allclose(w_seen, np.eye(2))  # the output is the value *before* the update
    assert not np.allclose(W.value, np.eye(2)) and not np.allclose(b.value, 0)
    before_W, before_b = W.value, b.value
    with pytest.raises(gc.ShapeError):
        step(np.ones((3, 5), np.float32))
    np.testing.assert_array_equal(W.value, before_W)  # nothing half-applied
    np.testing.assert_array_equal(b.value, before_b)
    assert step(a)[0] < loss0


def test_update_validation(affine):
    x, k, W = affine
    with pytest.raises(gc.GraphError, match="parameters"):
        gc.compile([x], x, updates={x: x})
    with pytest.raises(gc.ShapeError, match="shape"):
        gc.compile([x], x, updates={W: W.sum()})


def test_outputs_do_not_alias_parameters(affine):
    x, k, W = affine
    fn = gc.compile([x], [W, W.reshape(4)], updates={W: W * 2})
    w0, flat0 = fn(np.ones((1, 2), np.float32))
    fn(np.ones((1, 2), np.float32))
    np.testing.assert_allclose(w0, np.eye(2))
    np.testing.assert_allclose(flat0, np.eye(2).ravel())


def test_missing_input_placeholder_is_a_compile_error(affine):
    x, k, W = affine
    with pytest.raises(gc.GraphError, match="'k'"):
        gc.compile([x], x * k)


def test_batch_norm_default_updates_and_explicit_override():
    x = gc.placeholder("x", ("N", 3))
    rm = gc.parameter("rm", np.zeros(3, np.float32))
    rv = gc.parameter("rv", np.ones(3, np.float32))
    y = F.batch_norm(x, None, None, rm, rv, training=True, momentum=0.5)
    data = np.random.default_rng(0).normal(2.0, 3.0, (16, 3)).astype(np.float32)
    out = gc.compile([x], y)(data)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(rm.value, 0.5 * data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(rv.value, 0.5 + 0.5 * data.var(0, ddof=1), rtol=1e-5)
    # naming rm in updates replaces its default update; rv keeps its own
    rm.value, rv.value = np.zeros(3), np.ones(3)
    gc.compile([x], y, updates={rm: rm * 0 + 7})(data)
    np.testing.assert_allclose(rm.value, 7)
    np.testing.assert_allclose(rv.value, 0.5 + 0.5 * data.var(0, ddof=1), rtol=1e-5)
    # eval mode reads the running statistics and updates nothing
    y_eval = F.batch_norm(x, None, None, rm, rv, training=False)
    before = rv.value
    np.testing.assert_allclose(gc.compile([x], y_eval)(data), (data - 7) / np.sqrt(before + 1e-5),
                               rtol=1e-5)
    np.testing.assert_array_equal(rv.value, before)


def test_dropout_masks_advance_and_replay_with_seed():
    x = gc.placeholder("x", (1000,))
    y = F.dropout(x, 0.25, training=True, seed=42)
    fn = gc.compile([x], y)
    ones = np.ones(1000, np.float32)
    m1, m2 = fn(ones), fn(ones)
    assert not np.array_equal(m1, m2)  # the state advanced
    assert abs((m1 == 0).mean() - 0.25) < 0.05
    np.testing.assert_allclose(np.unique(m1), [0.0, 1 / 0.75], rtol=1e-6)
    again = gc.compile([x], F.dropout(x, 0.25, training=True, seed=42))
    np.testing.assert_array_equal(again(ones), m1)  # same seed, same first mask
    assert F.dropout(x, 0.25, training=False) is x
    two = gc.compile([x], [F.dropout(x, 0.5, True, state=(s := gc.rng_state(3))),
                           F.dropout(x, 0.5, True, state=s)])(ones)
    assert not np.array_equal(two[0], two[1])  # one state, two independent streams


def test_function_exposes_graph_and_source(affine):
    x, k, W = affine
    fn = gc.compile([x], gc.relu(x @ W))
    assert isinstance(fn.graph, gc.Graph)
    assert [n.op.name for n in fn.graph.outputs] == ["relu"]
    src = fn.source
    assert "def step" in src and "@" in src and "_select(" in src
    assert "test_function.py" in src  # each line names the user's source line


BACKENDS = [("numpy", None), ("llvm", None), ("cuda", {"emulate": True})]


@pytest.mark.parametrize("backend,options", BACKENDS, ids=[b for b, _ in BACKENDS])
def test_updates_read_the_old_values_even_when_they_alias(backend, options):
    """{a: b, b: a} swaps; a value that *is* (or views) an updated parameter is its old value;
    a parameter may be written without being read."""
    a = gc.parameter("a", np.array([1.0, 2.0], np.float32))
    b = gc.parameter("b", np.array([3.0, 4.0], np.float32))
    p = gc.parameter("p", np.array([1.0], np.float32))
    q = gc.parameter("q", np.zeros(1, np.float32))
    m = gc.parameter("m", np.array([[1.0, 2.0]], np.float32))
    v = gc.parameter("v", np.zeros(2, np.float32))
    x = gc.placeholder("x", (1,))
    w = gc.parameter("w", np.zeros(1, np.float32))
    fn = gc.compile([x], [a.sum(), m, p], backend=backend, backend_options=options,
                    updates={a: b, b: a, p: p + 1, q: p * 1.0, m: m + 1, v: m.reshape(2),
                             w: x * 2})
    _, m_out, p_out = fn(np.array([5.0], np.float32))
    np.testing.assert_array_equal(m_out, [[1, 2]])  # outputs are the values before the update
    np.testing.assert_array_equal(p_out, [1])
    np.testing.assert_array_equal(a.value, [3, 4])
    np.testing.assert_array_equal(b.value, [1, 2])
    np.testing.assert_array_equal(q.value, [1])
    np.testing.assert_array_equal(p.value, [2])
    np.testing.assert_array_equal(v.value, [1, 2])
    np.testing.assert_array_equal(m.value, [[2, 3]])
    np.testing.assert_array_equal(w.value, [10])


def test_a_symbolic_update_that_does_not_fit_fails_before_anything_is_applied():
    x = gc.placeholder("x", ("N",))
    p = gc.parameter("p", np.zeros(1, np.float32))
    a = gc.parameter("a", np.zeros(2, np.float32))
    fn = gc.compile([x], x.sum(), updates={p: p + 1, a: x + a.sum()})
    for n in (1, 3):
        with pytest.raises(gc.ShapeError, match="new value of 'a'"):
            fn(np.ones(n, np.float32))
    assert p.value[0] == 0
    fn(np.ones(2, np.float32))
    np.testing.assert_array_equal(a.value, [1, 1])


def test_outputs_never_alias_the_callers_inputs(affine):
    x, k, W = affine
    fn = gc.compile([x], [x * 1, x.reshape(4), x.T, x[:, 1:]])
    a = np.ones((2, 2), np.float32)
    for out in fn(a):
        assert not np.shares_memory(out, a)


def test_signed_unsigned_inputs_only_when_every_value_fits():
    ids = gc.placeholder("ids", (2,), "int64")
    fn = gc.compile([ids], ids * 2)
    np.testing.assert_array_equal(fn(np.array([1, 2], np.uint8)), [2, 4])
    with pytest.raises(gc.ShapeError, match="'ids'.*uint64"):
        fn(np.array([1, 2], np.uint64))


@pytest.mark.parametrize("dim", ["K", "np", "lambda", "inputs", "_sigmoid"])
def test_any_dim_or_input_name_works_in_the_numpy_program(dim):
    x = gc.placeholder(dim, (dim, "C"))
    fn = gc.compile([x], [gc.softmax(x), gc.logsumexp(x, 1), gc.sigmoid(x) + gc.softplus(x)])
    out = fn(np.zeros((2, 3), np.float32))
    np.testing.assert_allclose(out[1], np.log(3), rtol=1e-6)
    np.testing.assert_allclose(out[2], 0.5 + np.log(2), rtol=1e-6)


def test_infinite_and_nan_constants():
    x = gc.placeholder("x", (3,))
    mask = gc.placeholder("mask", (3,), "bool")
    for optimize in (True, False):
        fn = gc.compile([x, mask], [x + float("inf"), gc.clip(x, -np.inf, 1.0),
                                    gc.softmax(gc.where(mask, x, float("-inf"))),
                                    x * float("nan")], optimize=optimize)
        inf, clipped, soft, nan = fn(np.array([-5, 0, 5], np.float32),
                                     np.array([True, False, True]))
        assert np.isposinf(inf).all() and np.isnan(nan).all()
        np.testing.assert_array_equal(clipped, [-5, 0, 1])
        assert soft[1] == 0 and soft.sum() == pytest.approx(1)


@pytest.mark.parametrize("backend,options", BACKENDS, ids=[b for b, _ in BACKENDS])
def test_out_of_range_labels_and_ids_fail_the_same_way_everywhere(backend, options):
    z = gc.placeholder("z", ("N", 3))
    y = gc.placeholder("y", ("N",), "int64")
    W = gc.parameter("W", np.ones(3, np.float32))
    loss = F.cross_entropy(z * W, y) + F.embedding(y, gc.parameter("t", np.eye(3))).sum()
    fn = gc.compile([z, y], loss, updates={W: W - 0.1 * gc.grad(loss, W)}, backend=backend,
                    backend_options=options)
    fn(np.zeros((2, 3), np.float32), np.array([0, 2]))
    before = W.value
    for labels, bad in (([0, 3], 3), ([-1, 0], -1)):
        # the op, the value, the bounds and the user's line, the same words on every backend
        with pytest.raises(gc.BackendError, match=rf"(one_hot: label|take: id) {bad} is "
                                                  rf"outside \[0, 3\)\n  created at .*"
                                                  rf"test_function.py:\d+ .*\n  no parameter"):
            fn(np.zeros((2, 3), np.float32), np.array(labels))
    np.testing.assert_array_equal(W.value, before)


def test_narrowing_integer_inputs_must_fit():
    ids = gc.placeholder("ids", (2,), "int32")
    fn = gc.compile([ids], ids * 2)
    np.testing.assert_array_equal(fn(np.array([1, 2], np.int64)), [2, 4])
    with pytest.raises(gc.ShapeError, match="'ids'.*outside int32's range"):
        fn(np.array([2**32 + 1, 0], np.int64))


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_one_function_called_from_two_threads(backend):
    """The native step reuses its buffers: calls are serialized, results stay right."""
    import threading

    x = gc.placeholder("x", ("N", 8))
    W = gc.parameter("W", np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32))
    fn = gc.compile([x], gc.tanh(x @ W) + x, backend=backend)
    inputs = [np.random.default_rng(k).standard_normal((64, 8)).astype(np.float32)
              for k in range(2)]
    want = [np.tanh(a @ W.value) + a for a in inputs]
    wrong = []

    def work(k):
        for _ in range(300):
            if not np.allclose(fn(inputs[k]), want[k], rtol=1e-5, atol=1e-6):
                wrong.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_threads_calling_with_a_size_none_has_run_yet(backend):
    """A thread that finds a new size's shape facts already checked (by another thread,
    still waiting for the lock) must not leave the executable without the sizes: the
    numpy backend raised KeyError((1017,)) here (found by an audit)."""
    import sys
    import threading

    x = gc.placeholder("x", ("N", 64))
    fn = gc.compile([x], gc.tanh(x * 2.0).sum(axis=1), backend=backend)
    errors = []

    def work(n, barrier):
        a = np.ones((n, 64), np.float32)
        barrier.wait()
        for _ in range(5):
            try:
                np.testing.assert_allclose(fn(a), np.full(n, 64 * np.tanh(2.0)), rtol=1e-5)
            except Exception as exc:  # noqa: BLE001 -- every failure is the finding
                errors.append(repr(exc))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for n in range(1000, 1100):
            barrier = threading.Barrier(6)
            threads = [threading.Thread(target=work, args=(n, barrier)) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[:3]


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_close_frees_the_function_and_keeps_the_parameters(backend):
    import gc as python_gc
    import weakref

    x = gc.placeholder("x", ("N", 3))
    W = gc.parameter("W", np.ones((3, 3), np.float32))
    loss = gc.sum(x @ W)
    fn = gc.compile([x], loss, updates={W: W - 0.1 * gc.grad(loss, W)}, backend=backend)
    fn(np.ones((2, 3), np.float32))
    assert [p.name for p in fn.parameters()] == ["W"]
    fn.close()
    if backend == "llvm":
        assert fn._exe.engine is None and not fn._exe._bindings  # machine code, buffers freed
    with pytest.raises(gc.BackendError, match="closed"):
        fn(np.ones((2, 3), np.float32))
    again = gc.compile([x], loss, backend=backend)  # the parameter lives on
    np.testing.assert_allclose(again(np.ones((1, 3), np.float32)), W.value.sum(), rtol=1e-6)
    executable = weakref.ref(again._exe)
    del again
    python_gc.collect()
    assert executable() is None  # garbage collection frees an unclosed one


def test_native_buffers_are_kept_for_a_bounded_number_of_batch_sizes():
    from graphc.backends.kernelgen.binding import MAX_BINDINGS

    x = gc.placeholder("x", ("N", 4))
    fn = gc.compile([x], gc.sum(gc.tanh(x), 1), backend="llvm")
    for n in list(range(1, 3 * MAX_BINDINGS)) + [1, 2]:  # evicted sizes come back
        a = np.full((n, 4), 0.5, np.float32)
        np.testing.assert_allclose(fn(a), np.full(n, 4 * np.tanh(0.5)), rtol=1e-6)
    assert len(fn._exe._bindings) <= MAX_BINDINGS


def _sgd_step(rng_seed: int, outputs_weight: bool = False):
    """A small llvm training step of its own parameters (the same values for the same seed)."""
    rng = np.random.default_rng(rng_seed)
    x = gc.placeholder("x", ("N", 5))
    W = gc.parameter("W", rng.standard_normal((5, 3)).astype(np.float32))
    loss = gc.mean(gc.square(gc.tanh(x @ W)))
    outputs = [loss, W] if outputs_weight else loss
    return gc.compile([x], outputs, updates={W: W - 0.5 * gc.grad(loss, W)}, backend="llvm"), W


@pytest.mark.parametrize("outputs_weight", [False, True], ids=["loss", "loss-and-weight"])
def test_repeated_calls_take_the_short_path_and_match_the_full_one(outputs_weight):
    """Calls with the sizes of the last one go through the executable's lane
    (Executable.again_lane), which gc.Function keeps while the arrays keep their dtypes and
    shapes; they return and update exactly what the full path does, across batch sizes,
    converted inputs and an output that is an updated parameter (which has no lane)."""
    short, W_short = _sgd_step(0, outputs_weight)
    full, W_full = _sgd_step(0, outputs_weight)
    full._again = False  # every call the full way
    served, declined = [], []
    again_lane = short._exe.again_lane

    def spy(key, inputs):  # every call a lane serves, or that asked for one and got none
        lane = again_lane(key, inputs)
        if lane is None:
            served.append(False)
            return None

        def counted(arrays):
            out = lane(arrays)
            (served if out is not None else declined).append(True)
            return out

        return counted

    short._exe.again_lane = spy
    rng = np.random.default_rng(1)
    for n in (4, 4, 4, 3, 3, 4, 4):
        a = rng.standard_normal((n, 5)).astype(np.float32)
        for arg in (a, a.astype(np.float64), np.asfortranarray(a)):  # the last two converted
            got, want = short(arg), full(arg)
            for g, w in zip(*(v if outputs_weight else [v] for v in (got, want))):
                np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(W_short.value, W_full.value)
    if outputs_weight:  # the output is the weight before the update: the full path's work
        assert served and not any(served)
    else:
        # the float32 arrays of each repeat of the last call's sizes (the first call of a
        # size, and a return to a size after another, go the full way, as do conversions)
        assert served == [True, True, True, False, True]
        # a kept lane answers None to arrays of another form (the float64 array after
        # each served call): they go the full way, and the lane is dropped
        assert len(declined) == len(served) - served.count(False)


def test_the_short_path_still_checks_every_input():
    fn, W = _sgd_step(0)
    a = np.ones((4, 5), np.float32)
    fn(a)
    fn(a)
    before = W.value
    with pytest.raises(gc.ShapeError, match="'x'"):
        fn(np.ones((4, 6), np.float32))
    with pytest.raises(gc.ArgumentError):
        fn(a, a)
    np.testing.assert_array_equal(W.value, before)
    fn.close()
    with pytest.raises(gc.BackendError, match="closed"):
        fn(a)


def test_a_parameter_with_a_device_copy_takes_the_full_path():
    """While another function holds a parameter on a device, its copy may be newer and must
    hear of every host update: the kept lane steps aside for the full path, which pulls the
    newer copy first and tells the device after the step."""

    class Device:  # what a device backend registers in `storage.devices`
        newer = False
        changes = 0

        def pull(self, storage):
            raise AssertionError("not newer: nothing to pull")

        def host_changed(self, storage):
            self.changes += 1

    fn, W = _sgd_step(0)
    a = np.ones((4, 5), np.float32)
    fn(a)
    fn(a)  # the short path, kept for the next calls
    assert fn._lane is not None
    device = Device()
    storage = W.node.attrs["storage"]
    storage.devices.append(device)
    try:
        fn(a)
        fn(a)
    finally:
        storage.devices.remove(device)
    assert device.changes == 2  # both updates reached the device copy
    reference, W_ref = _sgd_step(0)
    for _ in range(4):
        reference(a)
    np.testing.assert_array_equal(W.value, W_ref.value)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("form", ["reshape", "zeros", "through a product"])
def test_a_size_no_input_binds_is_refused_at_compile_time(backend, form):
    """A dimension that only the graph names ("M", with inputs of N) has no size at a call:
    the numpy backend raised KeyError 'M' from its generated program, llvm a ShapeError
    about a buffer's byte size (found by an audit)."""
    x = gc.placeholder("x", ("N",))
    W = gc.parameter("W", np.ones((3, 2), np.float32))
    out = {"reshape": lambda: x.reshape(("M",)),
           "zeros": lambda: x.sum() + gc.zeros(("M",)),
           "through a product": lambda: gc.zeros(("M", 3)) @ W}[form]()
    with pytest.raises(gc.ShapeError, match=r"dimension\(s\) M, which no input's shape binds "
                                            r"\(inputs: x\)"):
        gc.compile([x], out, backend=backend)


@pytest.mark.parametrize("backend,options", [("numpy", None), ("llvm", None),
                                             ("cuda", {"emulate": True})],
                         ids=["numpy", "llvm", "cuda"])
def test_a_default_update_of_another_dtype_is_cast_to_its_parameter(backend, options):
    """A float32 batch norm fed float64 computes its running statistics in float64: the
    default update is cast to the parameter's dtype, as an explicit one is (the native
    backends wrote the float64 values over the float32 buffer: garbage statistics, then a
    corrupted heap)."""
    bn = gc.nn.BatchNorm1d(2)
    x = gc.placeholder("x", ("N", 2), "float64")
    fn = gc.compile([x], gc.sum(bn(x)), backend=backend, backend_options=options)
    xs = np.random.default_rng(0).normal(size=(16, 2))
    fn(xs)
    assert bn.running_mean.value.dtype == np.float32
    np.testing.assert_allclose(bn.running_mean.value, 0.1 * xs.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.value, 0.9 + 0.1 * xs.var(axis=0, ddof=1),
                               rtol=1e-5)


def test_an_update_must_have_its_parameters_shape_and_kind():
    w = gc.parameter("w", np.zeros(4, np.float32))
    x = gc.placeholder("x", ("N",))
    with pytest.raises(gc.ShapeError, match=r"value has shape \(3,\), parameter has \(4,\)"):
        y = gc.placeholder("y", (3,))
        gc.compile([y], gc.sum(y), updates={w: y})
    with pytest.raises(gc.GraphError, match="value is int64, parameter is float32"):
        gc.compile([x], gc.sum(x), updates={w: gc.cast(w, "int64")})


@pytest.mark.parametrize("backend,options", [("numpy", None), ("llvm", None),
                                             ("cuda", {"emulate": True})])
def test_functions_sharing_a_parameter_run_one_at_a_time_across_threads(backend, options):
    """Two steps updating one parameter, called from two threads: each call sees the other's
    whole update (every function sharing a parameter takes one lock, call_groups.py). Each
    function had its own lock: 300 + 300 increments ended anywhere from 300 to 600."""
    import threading

    P = gc.parameter("P", np.zeros(100_000, np.float32))
    steps = [gc.compile([], [], updates={P: P + 1.0}, backend=backend, backend_options=options)
             for _ in range(2)]
    threads = [threading.Thread(target=lambda f=f: [f() for _ in range(150)]) for f in steps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(P.value, np.full(100_000, 300, np.float32))


def test_call_groups_merge_and_a_waiting_call_follows_the_merge():
    import threading

    from graphc.call_groups import group_for
    from graphc.ir.node import ParamStorage

    a, b, c = (ParamStorage(n, np.zeros(1)) for n in "abc")
    first, second = group_for([a]), group_for([b])
    assert first is not second
    held = second.acquire()  # a call of b's function in flight
    merging = threading.Thread(target=group_for, args=([a, b, c],))
    merging.start()
    merging.join(0.5)
    assert merging.is_alive()  # the merge waits for the call in flight (never ends before it)
    assert second.merged_into is None
    held.lock.release()
    merging.join()
    assert second.merged_into is first
    assert {s.call_group.root() for s in (a, b, c)} == {first}
    locked = second.acquire()  # b's function, called again: under the merged group's lock
    assert locked is first and not _free_elsewhere(first.lock) and _free_elsewhere(second.lock)
    first.lock.release()


def _free_elsewhere(lock) -> bool:
    """Whether another thread could take `lock` now (the group locks are re-entrant, so
    this thread would)."""
    import threading

    got = []

    def attempt():
        got.append(lock.acquire(blocking=False))
        if got[0]:
            lock.release()

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    return got[0]


def test_inputs_that_would_silently_change_are_shape_errors():
    """A finite float64 beyond float32's range became inf (a parameter's write refuses the
    same conversion); a masked array lost its mask."""
    x = gc.placeholder("x", (3,))
    f = gc.compile([x], x * 2)
    with pytest.raises(gc.ShapeError, match="1e\\+300 overflows float32"):
        f(np.array([1e300, 1.0, 2.0]))
    with pytest.raises(gc.ShapeError, match="masked array"):
        f(np.ma.masked_array([1.0, 2.0, 3.0], [0, 1, 0]))
    out = f(np.array([np.inf, 1.0, 2.0]))  # an infinity fed is an infinity
    np.testing.assert_array_equal(out, [np.inf, 2.0, 4.0])


@pytest.mark.parametrize("backend", ["numpy", "llvm", "cuda"])
def test_backend_switches_must_be_bools(backend):
    x = gc.placeholder("x", (3,))
    with pytest.raises(gc.BackendError, match="'check_finite' must be True or False"):
        gc.compile([x], x * 2, backend=backend, backend_options={"check_finite": "no"})
    for options in ("check_finite", [("check_finite", True)]):
        with pytest.raises(gc.GraphError, match="backend_options must be a dict"):
            gc.compile([x], x * 2, backend=backend, backend_options=options)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_a_call_needing_more_memory_than_there_is_is_a_backend_error(backend):
    """A broadcast to 2**40 elements (a shape a file may declare) raised NumPy's raw
    MemoryError from the call; it is graphc's error, and nothing was updated."""
    w = gc.parameter("w", np.ones(3, np.float32))
    x = gc.placeholder("x", (3, 1))
    huge = x + gc.zeros((1, 2**40))
    fn = gc.compile([x], gc.sum(huge), updates={w: w + 1.0}, backend=backend)
    with pytest.raises(gc.BackendError, match="not enough memory for a call"):
        fn(np.ones((3, 1), np.float32))
    np.testing.assert_array_equal(w.value, np.ones(3))


OUT_OF_MEMORY = r"""
import resource, sys
import numpy as np
import graphc as gc
backend, lane = sys.argv[1], sys.argv[2] == "lane"
x = gc.placeholder("x", ("N",))
P = gc.parameter("P", np.zeros(4, np.float32))
f = gc.compile([x], x * 2, updates={P: P + 1}, backend=backend,
               backend_options={"emulate": True} if backend == "cuda" else None)
X = np.ones(1 << 26, np.float32)  # 256 MiB
f(X)
if lane:  # the sizes seen before: the repeated call's short path
    f(X)
def address_space():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize"):
            return int(line.split()[1]) * 1024
# room for the buffers of the call, not for the array it returns
resource.setrlimit(resource.RLIMIT_AS, (address_space() + X.nbytes // 2, resource.RLIM_INFINITY))
before = P.value.copy()
try:
    f(X)
    print("ran")
except gc.BackendError as exc:
    print("refused" if "no parameter was changed" in str(exc) else f"other {exc}")
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
print("unchanged" if np.array_equal(P.value, before) else f"changed {before} -> {P.value}")
"""


@pytest.mark.parametrize("backend", ["llvm", "cuda"])
@pytest.mark.parametrize("path", ["run", "lane"])
def test_out_of_memory_for_the_returned_arrays_changes_no_parameter(backend, path):
    """The native backends update parameters in place; the arrays a call returns were
    copied out afterwards, so running out of memory there raised "no parameter was changed"
    (or a raw MemoryError) after the step had moved them, and a retry stepped twice."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY, backend, path],
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["refused", "unchanged"], out.stdout + out.stderr[-2000:]


def test_an_input_named_self_is_fed_by_name_and_a_lone_placeholder_compiles():
    """``f(self=...)`` clashed with __call__'s own self; ``gc.compile(x, ...)`` compiled
    everything and then failed iterating the tensor."""
    s, k = gc.placeholder("self", (2,)), gc.placeholder("k", (2,))
    f = gc.compile([s, k], s + k)
    np.testing.assert_array_equal(f(self=np.ones(2), k=np.full(2, 2.0)), [3.0, 3.0])
    x = gc.placeholder("x", ("N",))
    np.testing.assert_array_equal(gc.compile(x, x * 2)(np.ones(3)), [2.0] * 3)


def test_shapes_are_tuples_an_int_is_one_dimension():
    with pytest.raises(gc.ShapeError, match="placeholder 'x': a shape is a tuple or list"):
        gc.placeholder("x", "batch")  # (was a 5-d input: b, a, t, c, h)
    assert gc.placeholder("x", 3).shape == (3,) and gc.zeros(np.int64(2)).shape == (2,)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_inputs_that_are_not_arrays_are_shape_errors(backend):
    import torch

    x = gc.placeholder("x", ("N",))
    f = gc.compile([x], x * 2, backend=backend)
    with pytest.raises(gc.ShapeError, match="input 'x': got the symbolic tensor 'x'"):
        f(x)
    with pytest.raises(gc.ShapeError, match="input 'x': cannot turn Tensor into an array"):
        f(torch.ones(2, requires_grad=True))  # (a raw RuntimeError from np.asarray)
    with np.errstate(all="raise"):  # float64 -> float32 rounds 1e-50 to 0: not an error
        np.testing.assert_array_equal(f(np.array([1e-50, 1.0])), [0.0, 2.0])


@pytest.mark.parametrize("backend", ["llvm", "cuda"])
def test_buffers_past_what_numpy_can_index_are_a_backend_error(backend):
    """The arena's np.zeros raised a raw ValueError ("Maximum allowed dimension exceeded")."""
    x, y, z = (gc.placeholder(n, s) for n, s in (("x", ("N", 1, 1)), ("y", (1, "M", 1)),
                                                  ("z", (1, 1, "K"))))
    W = gc.parameter("W", np.ones((1,), np.float32))
    f = gc.compile([x, y, z], ((x * y * z) * W).sum(), updates={W: W + 1}, backend=backend,
                   backend_options={"emulate": True} if backend == "cuda" else None)
    n = 1 << 21
    with pytest.raises(gc.BackendError, match="not enough memory.*no parameter was changed"):
        f(np.ones((n, 1, 1), np.float32), np.ones((1, n, 1), np.float32),
          np.ones((1, 1, n), np.float32))
    np.testing.assert_array_equal(W.value, [1.0])


def test_gc_optimize_takes_a_re_run_notebook_cell_and_refuses_nothing_clearly():
    """Two placeholders named x (a cell run twice) raised a plain ValueError; an empty
    graph or list an IndexError; ``passes="cse"`` was three unknown passes c, s, e."""
    G = gc.Graph("nb")
    for _ in range(2):
        with G:
            x = gc.placeholder("x", ("N", 3))
            y = (gc.exp(x) * 2).sum()
    graph, _ = gc.optimize(G)
    assert [n.name for n in graph.inputs] == ["x", "x"]
    for nothing in ([], gc.Graph("empty")):
        with pytest.raises(gc.GraphError, match="nothing to optimize"):
            gc.optimize(nothing)
    graph, stats = gc.optimize(y, passes="cse")
    assert [s.name for s in stats] == ["cse"]


def test_an_error_names_the_line_in_a_user_module_whose_name_starts_like_a_library(tmp_path,
                                                                                 monkeypatch):
    """Any module whose name began with graphc, numpy, sympy, ... counted as internal."""
    (tmp_path / "graphc_models.py").write_text(
        "import graphc as gc\n\n\ndef build(x):\n    return x + gc.placeholder('y', (4,))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import graphc_models

    with pytest.raises(gc.ShapeError, match=r"graphc_models\.py:5"):
        graphc_models.build(gc.placeholder("x", ("N", 3)))


def test_function_parameters_are_tensors_of_the_declared_graph():
    """They were tensors of the optimized program: an op on one added nodes to
    Function.graph, and an update built from one could not mix with the user's graph."""
    x = gc.placeholder("x", ("N", 3))
    W = gc.parameter("W", np.ones(3, np.float32))
    f = gc.compile([x], (x * W).sum(), updates={W: W + 1})
    nodes = len(f.graph.nodes)
    (p,) = f.parameters()
    assert p.graph is W.graph and p.node is W.node
    double = gc.compile([x], (x * W).sum(), updates={p: p * 2})
    assert len(f.graph.nodes) == nodes
    double(np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(W.value, [2.0] * 3)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_reading_and_writing_a_parameter_waits_for_the_step_in_another_thread(backend):
    """Tensor.value did not take the calls' lock: a logging thread read half-updated
    parameters, and a write during a step was partly lost."""
    import threading

    P = gc.parameter("P", np.zeros(1 << 20, np.float32))
    f = gc.compile([], P[:4], updates={P: P + 1}, backend=backend)
    done = threading.Event()
    torn = []

    def monitor():
        while not done.is_set():
            v = P.value
            torn.append(v.min() != v.max())

    reader = threading.Thread(target=monitor)
    reader.start()
    for _ in range(60):
        f()
    done.set()
    reader.join()
    assert not any(torn)
    writer = threading.Thread(target=lambda: setattr(P, "value", np.full(1 << 20, -5.0)))
    stepper = threading.Thread(target=lambda: [f() for _ in range(20)])
    stepper.start()
    writer.start()
    stepper.join()
    writer.join()
    value = P.value
    assert value.min() == value.max()  # the write landed whole, between two steps


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_values_past_the_address_space_are_out_of_memory_before_anything_runs(backend):
    """A value of T*N elements with T*N*4 past 2^63 bytes: NumPy raised a raw ValueError
    ("iterator is too large") from inside the numpy program."""
    a, b = gc.placeholder("a", ("T", 0)), gc.placeholder("b", ("N", 0))
    W = gc.parameter("W", np.zeros(1, np.float32))
    f = gc.compile([a, b], gc.ones(("T", "N")) * 2.0, updates={W: W + 1}, backend=backend)
    with pytest.raises(gc.BackendError, match="not enough memory.*no parameter was changed"):
        f(np.zeros((2**40, 0), np.float32), np.zeros((2**24, 0), np.float32))
    np.testing.assert_array_equal(W.value, [0.0])
    np.testing.assert_array_equal(f(np.zeros((2, 0), np.float32), np.zeros((3, 0), np.float32)),
                                  np.full((2, 3), 2.0))


def test_a_placeholder_shape_is_ints_and_names_not_expressions():
    """``gc.placeholder("z", y.shape)`` with y of shape (2*N, 3) was accepted, and compile
    raised a raw ValueError on it."""
    x = gc.placeholder("x", ("N", 3))
    y = gc.concat([x, x], 0)
    with pytest.raises(gc.ShapeError, match="placeholder 'z': shape entry 2\\*N is an expr"):
        gc.placeholder("z", y.shape)
