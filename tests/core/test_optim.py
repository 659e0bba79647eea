"""Optimizers: every formula step by step against an independent NumPy re-implementation of
torch.optim's documented algorithm, on a least-squares problem in float64."""

import math

import numpy as np
import pytest

import graphc as gc

S = gc.optim.schedules
STEPS = 6


def problem():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((16, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.standard_normal(16)
    return X, y


def np_grads(params, X, y):
    w, b = params
    r = X @ w + b - y
    return [2.0 / len(y) * X.T @ r, np.array(2.0 * r.mean())]


def build(make_opt):
    X, y = problem()
    x_ph = gc.placeholder("x", ("N", 3), "float64")
    y_ph = gc.placeholder("y", ("N",), "float64")
    w = gc.parameter("w", np.array([0.2, 0.1, -0.3]))
    b = gc.parameter("b", np.array(0.0))
    pred = gc.reshape(x_ph @ gc.reshape(w, (3, 1)), ("N",)) + b
    loss = gc.mean(gc.square(pred - y_ph))
    opt = make_opt([w, b])
    step = gc.compile([x_ph, y_ph], loss, updates=opt.updates(loss))
    return step, opt, [w, b], (X, y)


# -- independent references (torch.optim's documented algorithms) ------------------------------


def lr_at(lr, k):
    return lr.value(k) if isinstance(lr, S.Schedule) else lr


def clip(grads, clip_value=None, clip_norm=None):
    if clip_value is not None:
        grads = [np.clip(g, -clip_value, clip_value) for g in grads]
    if clip_norm is not None:
        norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
        grads = [g * min(1.0, clip_norm / (norm + 1e-6)) for g in grads]
    return grads


def ref_sgd(params, grads, st, k, lr, momentum=0.0, dampening=0.0, nesterov=False,
            weight_decay=0.0):
    out = []
    for i, (p, g) in enumerate(zip(params, grads)):
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if k == 0 else momentum * st[i] + (1 - dampening) * d
            st[i] = buf
            d = d + momentum * buf if nesterov else buf
        out.append(p - lr_at(lr, k) * d)
    return out


def ref_adagrad(params, grads, st, k, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
                initial_accumulator_value=0.0):
    out = []
    for i, (p, g) in enumerate(zip(params, grads)):
        g = g + weight_decay * p
        clr = lr_at(lr, k) / (1 + k * lr_decay)
        st[i] = st.get(i, np.full_like(p, initial_accumulator_value)) + g * g
        out.append(p - clr * g / (np.sqrt(st[i]) + eps))
    return out


def ref_adadelta(params, grads, st, k, lr, rho=0.9, eps=1e-6, weight_decay=0.0):
    out = []
    for i, (p, g) in enumerate(zip(params, grads)):
        g = g + weight_decay * p
        v, u = st.get(i, (np.zeros_like(p), np.zeros_like(p)))
        v = rho * v + (1 - rho) * g * g
        delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta * delta
        st[i] = (v, u)
        out.append(p - lr_at(lr, k) * delta)
    return out


def ref_rmsprop(params, grads, st, k, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False):
    out = []
    for i, (p, g) in enumerate(zip(params, grads)):
        g = g + weight_decay * p
        v, gavg, buf = st.get(i, (np.zeros_like(p),) * 3)
        v = alpha * v + (1 - alpha) * g * g
        avg = v
        if centered:
            gavg = alpha * gavg + (1 - alpha) * g
            avg = v - gavg * gavg
        if momentum > 0:
            buf = momentum * buf + g / (np.sqrt(avg) + eps)
            new = p - lr_at(lr, k) * buf
        else:
            new = p - lr_at(lr, k) * g / (np.sqrt(avg) + eps)
        st[i] = (v, gavg, buf)
        out.append(new)
    return out


def ref_adam(params, grads, st, k, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
             amsgrad=False, decoupled=False):
    b1, b2 = betas
    t = k + 1
    out = []
    for i, (p, g) in enumerate(zip(params, grads)):
        if decoupled:
            p = p * (1 - lr_at(lr, k) * weight_decay)
        else:
            g = g + weight_decay * p
        m, v, vmax = st.get(i, (np.zeros_like(p),) * 3)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        m_hat = m / (1 - b1 ** t)
        v_hat = (vmax if amsgrad else v) / (1 - b2 ** t)
        st[i] = (m, v, vmax)
        out.append(p - lr_at(lr, k) * m_hat / (np.sqrt(v_hat) + eps))
    return out


def ref_nadam(params, grads, st, k, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
              momentum_decay=4e-3):
    b1, b2 = betas
    t = k + 1
    mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    st["prod"] = st.get("prod", 1.0) * mu
    prod = st["prod"]
    out = []
    for i, (p, g) in enumerate(zip(params, grads)):
        g = g + weight_decay * p
        m, v = st.get(i, (np.zeros_like(p),) * 2)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        st[i] = (m, v)
        m_hat = mu_next * m / (1 - prod * mu_next) + (1 - mu) * g / (1 - prod)
        v_hat = v / (1 - b2 ** t)
        out.append(p - lr_at(lr, k) * m_hat / (np.sqrt(v_hat) + eps))
    return out


O = gc.optim
CASES = [
    ("sgd", O.SGD, ref_sgd, dict(lr=0.05)),
    ("sgd-momentum", O.SGD, ref_sgd, dict(lr=0.05, momentum=0.9)),
    ("sgd-dampening", O.SGD, ref_sgd, dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("sgd-nesterov-wd", O.SGD, ref_sgd, dict(lr=0.05, momentum=0.8, nesterov=True,
                                             weight_decay=0.1)),
    ("adagrad", O.Adagrad, ref_adagrad, dict(lr=0.1)),
    ("adagrad-decay-wd-init", O.Adagrad, ref_adagrad,
     dict(lr=0.1, lr_decay=0.2, weight_decay=0.05, initial_accumulator_value=0.5)),
    ("adadelta", O.Adadelta, ref_adadelta, dict()),
    ("adadelta-wd", O.Adadelta, ref_adadelta, dict(lr=0.5, rho=0.8, weight_decay=0.1)),
    ("rmsprop", O.RMSprop, ref_rmsprop, dict(lr=0.01)),
    ("rmsprop-centered-momentum", O.RMSprop, ref_rmsprop,
     dict(lr=0.01, centered=True, momentum=0.7, weight_decay=0.01)),
    ("adam", O.Adam, ref_adam, dict(lr=0.05)),
    ("adam-amsgrad-wd", O.Adam, ref_adam, dict(lr=0.05, amsgrad=True, weight_decay=0.1,
                                                betas=(0.8, 0.9))),
    ("nadam", O.NAdam, ref_nadam, dict()),
    ("nadam-wd", O.NAdam, ref_nadam, dict(lr=0.01, weight_decay=0.1, momentum_decay=0.01)),
]


def run_both(opt_cls, ref, kwargs, clip_kw=None):
    clip_kw = clip_kw or {}
    step, opt, params, (X, y) = build(lambda ps: opt_cls(ps, **kwargs, **clip_kw))
    ref_kwargs = dict(kwargs)
    if opt_cls is O.AdamW:
        ref_kwargs["decoupled"] = True
        ref_kwargs.setdefault("weight_decay", 1e-2)
    if ref is ref_adam or ref is ref_nadam or ref is ref_adadelta:
        defaults = {ref_adadelta: 1.0, ref_nadam: 2e-3, ref_adam: 1e-3}
        ref_kwargs.setdefault("lr", defaults[ref])
    values = [p.value for p in params]
    state: dict = {}
    for k in range(STEPS):
        grads = clip(np_grads(values, X, y), **clip_kw)
        values = ref(values, grads, state, k, **ref_kwargs)
        step(X, y)
        for p, v in zip(params, values):
            np.testing.assert_allclose(p.value, v, rtol=1e-10, atol=1e-12,
                                       err_msg=f"{opt_cls.__name__} step {k}: {p.name}")
    assert int(opt.step_count.value) == STEPS
    return values


@pytest.mark.parametrize("name,opt_cls,ref,kwargs", CASES, ids=[c[0] for c in CASES])
def test_optimizer_matches_reference_formula(name, opt_cls, ref, kwargs):
    run_both(opt_cls, ref, kwargs)


def test_adamw_decouples_weight_decay():
    run_both(O.AdamW, ref_adam, dict(lr=0.05, weight_decay=0.2))


@pytest.mark.parametrize("clip_kw", [dict(clip_value=0.5), dict(clip_norm=0.3),
                                     dict(clip_value=0.8, clip_norm=0.5)])
@pytest.mark.parametrize("opt_cls,ref,kwargs", [(O.SGD, ref_sgd, dict(lr=0.1, momentum=0.5)),
                                                (O.Adam, ref_adam, dict(lr=0.05))])
def test_gradient_clipping(opt_cls, ref, kwargs, clip_kw):
    run_both(opt_cls, ref, kwargs, clip_kw)


@pytest.mark.parametrize("schedule", [S.step(0.1, step_size=2, gamma=0.5),
                                      S.exponential(0.1, gamma=0.7),
                                      S.inverse_time(0.1, decay=0.5)])
@pytest.mark.parametrize("opt_cls,ref", [(O.SGD, ref_sgd), (O.Adam, ref_adam)])
def test_learning_rate_schedules(schedule, opt_cls, ref):
    run_both(opt_cls, ref, dict(lr=schedule))


def test_schedule_values():
    assert [S.step(1.0, 3, 0.1).value(k) for k in (0, 2, 3, 5, 6)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01])
    assert S.exponential(2.0, 0.5).value(3) == pytest.approx(0.25)
    assert S.inverse_time(1.0, 0.5).value(4) == pytest.approx(1 / 3)


def test_state_lives_in_parameters_and_round_trips():
    step, opt, params, (X, y) = build(lambda ps: O.Adam(ps, lr=0.05))
    for _ in range(3):
        step(X, y)
    saved = opt.state()
    assert set(saved) == {"step", "nonfinite_steps", "lr", "0.exp_avg", "0.exp_avg_sq",
                          "1.exp_avg", "1.exp_avg_sq", "0.step", "1.step"}
    assert saved["step"] == 3 and np.abs(saved["0.exp_avg"]).sum() > 0
    assert saved["0.step"] == saved["1.step"] == 3
    p_saved = [p.value for p in params]
    after = [float(step(X, y)) for _ in range(2)]
    opt.load_state(saved)
    for p, v in zip(params, p_saved):
        p.value = v
    assert [float(step(X, y)) for _ in range(2)] == after
    older = {k: v for k, v in saved.items() if k != "nonfinite_steps"}  # (before the counter)
    opt.load_state(older)
    # before the per-parameter counts: each parameter gets the optimizer's count
    opt.load_state({k: v for k, v in saved.items() if not k.endswith(".step")})
    assert opt.state()["0.step"] == opt.state()["1.step"] == 3
    for p, v in zip(params, p_saved):
        p.value = v
    assert [float(step(X, y)) for _ in range(2)] == after
    with pytest.raises(gc.GraphError, match="missing keys"):
        opt.load_state({"step": 0})


def test_updates_cover_parameters_state_and_counter():
    _, opt, params, _ = build(lambda ps: O.SGD(ps, lr=0.1, momentum=0.9))
    x = gc.placeholder("x2", (3,), "float64")
    cost = gc.sum(x * params[0]) + params[1]
    updates = opt.updates(cost)
    names = {p.name for p in updates}
    assert names == {"w", "b", "sgd.w.momentum_buffer", "sgd.b.momentum_buffer", "sgd.step"}


def test_bad_arguments_are_clear():
    w = gc.parameter("w", np.zeros(3, np.float32))
    with pytest.raises(gc.GraphError, match="Nesterov"):
        O.SGD([w], lr=0.1, nesterov=True)
    with pytest.raises(gc.GraphError, match="empty"):
        O.Adam([])
    with pytest.raises(gc.GraphError, match="only float parameters"):
        O.SGD([gc.parameter("i", np.zeros(2, np.int64))], lr=0.1)
    with pytest.raises(gc.GraphError, match="clip_norm"):
        O.SGD([w], lr=0.1, clip_norm=-1.0).updates(gc.sum(w * w))


def test_penalties_skip_biases():
    W = gc.parameter("W", np.array([[1.0, -2.0], [3.0, 0.5]]))
    b = gc.parameter("b", np.array([10.0, 10.0]))
    f = gc.compile([], [gc.optim.l2_penalty([W, b], 0.5), gc.optim.l1_penalty([W, b], 2.0)])
    l2, l1 = f()
    assert float(l2) == pytest.approx(0.5 * (1 + 4 + 9 + 0.25))
    assert float(l1) == pytest.approx(2.0 * 6.5)
    assert gc.optim.l2_penalty([b]) == 0.0


def test_l2_penalty_equals_weight_decay_on_weights():
    """coeff = weight_decay / 2 gives SGD's weight_decay step (for weight matrices)."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    results = []
    for use_penalty in (True, False):
        W = gc.parameter("W", np.ones((3, 2)))
        x, y = gc.placeholder("x", ("N", 3), "float64"), gc.placeholder("y", ("N", 2), "float64")
        loss = gc.mean(gc.square(x @ W - y))
        if use_penalty:
            cost, opt = loss + gc.optim.l2_penalty([W], 0.05), O.SGD([W], lr=0.1)
        else:
            cost, opt = loss, O.SGD([W], lr=0.1, weight_decay=0.1)
        step = gc.compile([x, y], cost, updates=opt.updates(cost))
        for _ in range(3):
            step(X, Y)
        results.append(W.value)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12)


def test_sgd_positional_arguments_follow_the_api():
    """SGD(params, lr, momentum, nesterov, weight_decay) as API.md writes it."""
    w = gc.parameter("w", np.zeros(2))
    opt = O.SGD([w], 0.1, 0.9, True, 0.01)
    assert (opt.lr, opt.momentum, opt.nesterov, opt.weight_decay, opt.dampening) == (
        0.1, 0.9, True, 0.01, 0.0)


def test_parameters_the_cost_does_not_use_are_left_alone():
    """As in PyTorch (p.grad is None): no update, no weight decay, no momentum step."""
    w = gc.parameter("w", np.ones(3))
    unused = gc.parameter("unused", np.ones(3))
    x = gc.placeholder("x", (3,), "float64")
    opt = gc.optim.SGD([w, unused], 0.1, momentum=0.9, weight_decay=0.1)
    cost = (w * x).sum()
    updates = opt.updates(cost)
    assert unused not in updates
    gc.compile([x], cost, updates=updates)(np.ones(3))
    np.testing.assert_allclose(w.value, 1 - 0.1 * (1 + 0.1))
    np.testing.assert_array_equal(unused.value, 1)
    with pytest.raises(gc.GraphError, match="depends on none of its parameters"):
        gc.optim.Adam([unused]).updates(cost)


@pytest.mark.parametrize("name", ["adam", "adamw", "nadam", "adagrad_decay", "sgd_dampening"])
def test_a_parameter_unfrozen_later_counts_its_own_steps_as_pytorch(name):
    """Fine-tuning with one optimizer (the README's freezing workflow): a parameter frozen
    for the first 20 steps starts its bias corrections, NAdam's momentum schedule,
    Adagrad's decay and dampened momentum's first step at its own first update, as
    PyTorch's per-parameter ``state["step"]``; the optimizer-wide count gave the layer
    1e-2 to 2e-1 errors after 3 more steps."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    W1, B1, W2, B2 = (rng.standard_normal(s) for s in ((3, 4), (4,), (4, 2), (2,)))
    X, Y = rng.standard_normal((16, 3)), rng.standard_normal((16, 2))
    ours, theirs = {
        "adam": (lambda p: O.Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
        "adamw": (lambda p: O.AdamW(p, lr=0.01), lambda p: torch.optim.AdamW(p, lr=0.01)),
        "nadam": (lambda p: O.NAdam(p, lr=0.01), lambda p: torch.optim.NAdam(p, lr=0.01)),
        "adagrad_decay": (lambda p: O.Adagrad(p, lr=0.1, lr_decay=0.5),
                          lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.5)),
        "sgd_dampening": (lambda p: O.SGD(p, lr=0.1, momentum=0.9, dampening=0.5),
                          lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.5)),
    }[name]
    with gc.Graph():
        model = gc.nn.Sequential(gc.nn.Linear(3, 4, dtype="float64"), gc.nn.Tanh(),
                                 gc.nn.Linear(4, 2, dtype="float64"))
        for p, v in zip(model.parameters(), (W1, B1, W2, B2)):
            p.value = v
        x, y = gc.placeholder("x", ("N", 3), "float64"), gc.placeholder("y", ("N", 2), "float64")
        opt = ours(model.parameters())
        model[0].requires_grad_(False)
        loss = gc.mean(gc.square(model(x) - y))
        frozen = gc.compile([x, y], loss, updates=opt.updates(loss))
        for _ in range(20):
            frozen(X, Y)
        model[0].requires_grad_(True)
        whole = gc.compile([x, y], loss, updates=opt.updates(loss))
        for _ in range(3):
            whole(X, Y)
    assert int(opt.state()["step"]) == 23 and int(opt.state()["0.step"]) == 3
    l1, l2 = torch.nn.Linear(3, 4).double(), torch.nn.Linear(4, 2).double()
    with torch.no_grad():
        for t, v in zip((l1.weight, l1.bias, l2.weight, l2.bias), (W1.T, B1, W2.T, B2)):
            t.copy_(torch.tensor(v))
    topt = theirs(list(l1.parameters()) + list(l2.parameters()))
    l1.requires_grad_(False)
    for i in range(23):
        if i == 20:
            l1.requires_grad_(True)
        topt.zero_grad(set_to_none=True)
        ((l2(torch.tanh(l1(torch.tensor(X)))) - torch.tensor(Y)) ** 2).mean().backward()
        topt.step()
    np.testing.assert_allclose(model[0].weight.value, l1.weight.detach().numpy().T,
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(model[2].weight.value, l2.weight.detach().numpy().T,
                               rtol=0, atol=1e-9)


BAD_HYPERPARAMETERS = [
    (O.SGD, {"momentum": -0.5}, "momentum"),
    (O.SGD, {"weight_decay": -0.1}, "weight_decay"),
    (O.SGD, {"dampening": float("nan")}, "dampening"),
    (O.SGD, {"lr": float("inf")}, "learning rate"),
    (O.SGD, {"lr": "0.1"}, "learning rate must be a number"),
    (O.SGD, {"clip_value": 0.0}, "clip_value"),
    (O.SGD, {"clip_value": "1"}, "clip_value must be a number"),
    (O.SGD, {"clip_norm": float("nan")}, "clip_norm"),
    (O.Adam, {"betas": (1.0, 0.999)}, r"betas\[0\]"),
    (O.Adam, {"betas": (0.9, 1.0)}, r"betas\[1\]"),
    (O.Adam, {"betas": (-0.1, 0.999)}, r"betas\[0\]"),
    (O.Adam, {"betas": 0.9}, "pair"),
    (O.Adam, {"eps": -1e-8}, "eps"),
    (O.Adam, {"eps": float("nan")}, "eps"),
    (O.AdamW, {"weight_decay": -0.1}, "weight_decay"),
    (O.RMSprop, {"alpha": -0.1}, "alpha"),
    (O.RMSprop, {"momentum": -0.1}, "momentum"),
    (O.RMSprop, {"eps": -1.0}, "eps"),
    (O.Adagrad, {"lr_decay": -0.1}, "lr_decay"),
    (O.Adagrad, {"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
    (O.Adadelta, {"rho": 1.5}, "rho"),
    (O.Adadelta, {"rho": -0.1}, "rho"),
    (O.NAdam, {"momentum_decay": -1.0}, "momentum_decay"),
    (O.NAdam, {"betas": (0.9, 1.5)}, r"betas\[1\]"),
]


@pytest.mark.parametrize("opt_cls,kwargs,message", BAD_HYPERPARAMETERS,
                         ids=[f"{c.__name__}-{next(iter(k))}-{i}"
                              for i, (c, k, _) in enumerate(BAD_HYPERPARAMETERS)])
def test_hyperparameters_torch_refuses_are_refused_at_construction(opt_cls, kwargs, message):
    """Values torch.optim refuses with a ValueError (a beta of 1 gives NaN at once, a negative
    weight decay grows unused weights) are GraphErrors naming the optimizer and argument."""
    w = gc.parameter("w", np.ones(2))
    with pytest.raises(gc.GraphError, match=f"{opt_cls.__name__}: .*{message}"):
        opt_cls([w], **{"lr": 0.1, **kwargs})


def test_edge_values_torch_accepts_are_accepted():
    w = gc.parameter("w", np.ones(2))
    O.Adam([w], lr=0.0, betas=(0.0, 0.0), eps=0.0, weight_decay=0.0)
    O.Adadelta([w], rho=1.0)
    O.SGD([w], lr=np.float32(0.1), momentum=np.float64(0.9), dampening=0.5)
    O.SGD([w], lr=0.1, clip_value=np.array(2.0), clip_norm=1)


def test_a_state_cannot_bring_in_a_rate_the_setter_refuses(tmp_path):
    w = gc.parameter("w", np.zeros(2))
    opt = O.SGD([w], lr=0.1)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(gc.GraphError, match="'lr'"):
            opt.load_state({**opt.state(), "lr": np.array(bad)})
        assert opt.lr == 0.1
    scaled = O.SGD([w], lr=gc.optim.schedules.step(0.1, 2))
    with pytest.raises(gc.GraphError, match="'lr_scale'"):
        scaled.load_state({**scaled.state(), "lr_scale": np.array(-2.0)})
    bad = O.SGD([w], lr=0.1)
    bad.lr_parameter.value = -1.0  # (as a hand-edited file would hold it)
    gc.save(bad, tmp_path / "opt.gco")
    with pytest.raises(gc.GraphError, match="'lr'"):
        gc.load(tmp_path / "opt.gco", into=opt)
    assert opt.lr == 0.1
    with pytest.raises(gc.GraphError, match="learning rate must be a number"):
        opt.lr = "x"


def test_a_learning_rate_of_any_numeric_kind_is_a_number():
    """torch.optim takes a 0-d tensor as lr; Fractions and Decimals are numbers too (the
    first version of the check refused them)."""
    import decimal
    import fractions

    torch = pytest.importorskip("torch")
    w = gc.parameter("w", np.ones(2))
    for lr in (torch.tensor(0.25), fractions.Fraction(1, 4), decimal.Decimal("0.25"),
               np.array(0.25), np.float32(0.25)):
        assert O.SGD([w], lr=lr, clip_norm=torch.tensor(1.0)).lr == 0.25
    for bad in (np.array([0.25]), torch.tensor([0.25, 0.5]), "0.25", True, np.array("0.25"),
                np.array(True), torch.tensor(True), np.complex128(0.25), 0.25 + 0j,
                fractions.Fraction(10**400)):
        with pytest.raises(gc.GraphError, match="must be a number"):
            O.SGD([w], lr=bad)
