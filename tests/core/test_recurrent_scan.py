"""gc.nn.RNN/LSTM/GRU on gc.scan: outputs, final states and every gradient equal PyTorch's
(same weights, float64, 1e-10) — single and stacked layers, both layouts, with and without
per-sequence lengths (PyTorch's packed sequences); a symbolic sequence length served by one
compiled function; the unrolled form (unroll=True) still agrees; finite differences."""

import numpy as np
import pytest
import torch

import graphc as gc

nn = gc.nn
T, N, D, H = 5, 4, 3, 6
LENGTHS = np.array([3, 5, 1, 4])  # unsorted, one full-length and one length-1 sequence
WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
CELLS = {  # name -> (graphc constructor, torch constructor)
    "rnn_tanh": (lambda *a, **k: nn.RNN(*a, nonlinearity="tanh", **k),
                 lambda *a, **k: torch.nn.RNN(*a, nonlinearity="tanh", **k)),
    "rnn_relu": (lambda *a, **k: nn.RNN(*a, nonlinearity="relu", **k),
                 lambda *a, **k: torch.nn.RNN(*a, nonlinearity="relu", **k)),
    "lstm": (nn.LSTM, torch.nn.LSTM),
    "gru": (nn.GRU, torch.nn.GRU),
}


def make(cell: str, layers: int, batch_first: bool, **kwargs):
    """A float64 graphc layer and a PyTorch layer holding the same weights."""
    ours = CELLS[cell][0](D, H, num_layers=layers, batch_first=batch_first, rng=7,
                          dtype="float64", **kwargs)
    theirs = CELLS[cell][1](D, H, num_layers=layers, batch_first=batch_first).double()
    with torch.no_grad():
        for k in range(layers):
            for w in WEIGHTS:  # ours are stored (in, gates * hidden): PyTorch's transpose
                getattr(theirs, f"{w}_l{k}").copy_(torch.from_numpy(
                    getattr(ours, f"{w}_l{k}").value.T.copy()))
    return ours, theirs


def arrays(cell: str, layers: int, batch_first: bool, steps: int = T, seed: int = 0):
    """Input, initial state(s) and the cotangents that weight each result in the loss."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, steps, D) if batch_first else (steps, N, D))
    states = [rng.standard_normal((layers, N, H)) * 0.5
              for _ in range(2 if cell == "lstm" else 1)]
    cot = [rng.standard_normal(x.shape[:2] + (H,))] + [rng.standard_normal((layers, N, H))
                                                         for _ in states]
    return x, states, cot


def torch_reference(theirs, x, states, lengths, cot, batch_first):
    """PyTorch's results and gradients: pack_padded_sequence(enforce_sorted=False) -> layer ->
    pad_packed_sequence when `lengths` is given."""
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states] if states is not None else None
    arg = None if st is None else (tuple(st) if len(st) == 2 else st[0])
    inp = xt
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    out, final = theirs(inp, arg)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first,
                                                        total_length=x.shape[1 if batch_first
                                                                             else 0])
    finals = list(final) if isinstance(final, tuple) else [final]
    results = [out] + finals
    loss = sum((r * torch.from_numpy(c)).sum() for r, c in zip(results, cot))
    theirs.zero_grad()
    loss.backward()
    grads = {"x": xt.grad.numpy()}
    for i, s in enumerate(st or []):
        grads[f"state{i}"] = s.grad.numpy()
    for name, p in theirs.named_parameters():
        grads[name] = p.grad.numpy().T
    return [r.detach().numpy() for r in results], grads


def graphc_results(ours, x, states, lengths, cot, *, backend="numpy", optimize=True,
                   lengths_as_input=True):
    """Our results and gradients (w.r.t. the input, the initial states and every weight), as
    one compiled function; returns (results, grads, the function)."""
    steps = x.shape[1 if ours.batch_first else 0]
    with gc.Graph():
        xp = gc.placeholder("x", ("N", steps, D) if ours.batch_first else (steps, "N", D),
                            "float64")
        sp = [gc.placeholder(f"state{i}", (ours.num_layers, "N", H), "float64")
              for i in range(len(states or []))]
        inputs = [xp, *sp]
        lp = None
        if lengths is not None:
            lp = gc.placeholder("lengths", ("N",), "int64") if lengths_as_input else lengths
            if lengths_as_input:
                inputs.append(lp)
        state = None if not sp else (tuple(sp) if len(sp) == 2 else sp[0])
        out, final = ours(xp, state, lengths=lp)
        results = [out] + (list(final) if isinstance(final, tuple) else [final])
        loss = sum((r * gc.constant(c)).sum() for r, c in zip(results, cot))
        names, params = zip(*ours.named_parameters())
        wrt = [xp, *sp, *params]
        fn = gc.compile(inputs, results + gc.grad(loss, wrt), backend=backend,
                        optimize=optimize)
    args = [x, *(states or [])] + ([lengths] if lengths is not None and lengths_as_input
                                   else [])
    got = fn(*args)
    keys = ["x"] + [f"state{i}" for i in range(len(sp))] + list(names)
    return got[:len(results)], dict(zip(keys, got[len(results):])), fn


def assert_match(got, grads, want, want_grads, tol=1e-10):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=0, atol=tol, err_msg=f"result {i}")
    assert set(grads) == set(want_grads), (set(grads), set(want_grads))
    for key in want_grads:
        np.testing.assert_allclose(grads[key], want_grads[key], rtol=0, atol=tol,
                                   err_msg=f"gradient for {key}")


# layers, batch_first, lengths, initial state: each dimension crosses the others
CONFIGS = {
    "1layer": (1, False, False, False),
    "1layer-batch_first-lengths-h0": (1, True, True, True),
    "2layers-lengths-h0": (2, False, True, True),
    "2layers-batch_first-h0": (2, True, False, True),
}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("cell", list(CELLS))
def test_matches_pytorch_outputs_states_and_gradients(cell, config):
    layers, batch_first, use_lengths, use_state = CONFIGS[config]
    ours, theirs = make(cell, layers, batch_first)
    x, states, cot = arrays(cell, layers, batch_first)
    states = states if use_state else None
    lengths = LENGTHS if use_lengths else None
    want, want_grads = torch_reference(theirs, x, states, lengths, cot, batch_first)
    # the whole pass pipeline for the LSTM (the body optimized); the bare graph for the rest,
    # which keeps the 16 compilations of this test cheap
    got, grads, fn = graphc_results(ours, x, states, lengths, cot, optimize=cell == "lstm")
    assert_match(got, grads, want, want_grads)
    assert any(n.op.name == "scan" for n in fn.graph.nodes)  # a loop, not T copies of the cell
    if lengths is not None:  # padded outputs are exactly zero
        out = got[0] if not batch_first else np.swapaxes(got[0], 0, 1)
        for j, n in enumerate(LENGTHS):
            assert not out[n:, j].any()


@pytest.mark.parametrize("cell,unroll,backend", [
    ("lstm", False, "numpy"), ("gru", False, "numpy"), ("rnn_tanh", True, "numpy"),
    ("lstm", True, "numpy"), ("lstm", False, "llvm")])
def test_nan_and_inf_in_the_padding_are_never_read(cell, unroll, backend):
    """PyTorch's packed sequences never read past a sequence's length. The masked
    recurrence did (the input projection over all steps, the gradient's xs^T @ g): a NaN
    in the padding made every weight gradient NaN, though the outputs were right."""
    ours, theirs = make(cell, 2, False, unroll=unroll)
    x, states, cot = arrays(cell, 2, False, seed=3)
    for j, n in enumerate(LENGTHS):
        x[n:, j] = [np.nan, np.inf, -np.inf][j % 3]
    want, want_grads = torch_reference(theirs, x, states, LENGTHS, cot, False)
    got, grads, _ = graphc_results(ours, x, states, LENGTHS, cot, backend=backend)
    assert_match(got, grads, want, want_grads)
    for key, g in grads.items():
        assert np.isfinite(g).all(), key


def test_lengths_as_a_constant_array():
    ours, theirs = make("gru", 2, True)
    x, states, cot = arrays("gru", 2, True, seed=1)
    want, want_grads = torch_reference(theirs, x, None, LENGTHS, cot, True)
    got, grads, _ = graphc_results(ours, x, None, LENGTHS, cot, optimize=False,
                                   lengths_as_input=False)
    assert_match(got, grads, want, want_grads)


def test_llvm_lstm_with_lengths_forward_and_gradients():
    ours, theirs = make("lstm", 2, True)
    x, states, cot = arrays("lstm", 2, True, seed=2)
    want, want_grads = torch_reference(theirs, x, states, LENGTHS, cot, True)
    got, grads, fn = graphc_results(ours, x, states, LENGTHS, cot, backend="llvm")
    assert_match(got, grads, want, want_grads)
    assert fn.backend == "llvm"


def test_symbolic_length_two_lengths_through_one_function():
    """One compiled function with T symbolic serves sequences of 2 and 7 steps, with lengths."""
    ours, theirs = make("lstm", 2, False)
    with gc.Graph():
        xp = gc.placeholder("x", ("T", "N", D), "float64")
        lp = gc.placeholder("lengths", ("N",), "int64")
        ap = gc.placeholder("a", ("T", "N", H), "float64")  # the output's cotangent
        out, (h_n, c_n) = ours(xp, lengths=lp)
        assert str(out.shape[0]) == "T" and h_n.shape[0] == 2
        loss = (out * ap).sum() + h_n.sum() + (c_n * c_n).sum()
        params = ours.parameters()
        fn = gc.compile([xp, lp, ap], [out, h_n, c_n, *gc.grad(loss, [xp, *params])])
    for steps, lengths in ((2, np.array([2, 1, 2, 2])), (7, np.array([3, 7, 1, 6]))):
        x, _, _ = arrays("lstm", 2, False, steps=steps, seed=steps)
        a = np.random.default_rng(steps).standard_normal((steps, N, H))
        got = fn(x, lengths, a)
        # the cost above in PyTorch: out·a + sum(h_n) + |c_n|^2
        xt = torch.tensor(x, requires_grad=True)
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths),
                                                         enforce_sorted=False)
        o, (h, c) = theirs(packed)
        o, _ = torch.nn.utils.rnn.pad_packed_sequence(o, total_length=steps)
        theirs.zero_grad()
        ((o * torch.from_numpy(a)).sum() + h.sum() + (c * c).sum()).backward()
        want = [o.detach().numpy(), h.detach().numpy(), c.detach().numpy(), xt.grad.numpy()]
        want += [p.grad.numpy().T for p in theirs.parameters()]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell,lengths,with_state", [
    ("lstm", None, True), ("lstm", LENGTHS, False), ("gru", LENGTHS, True),
    ("rnn_relu", LENGTHS, True)])
def test_unroll_true_matches_the_scan(cell, lengths, with_state):
    scanned, _ = make(cell, 2, True)
    unrolled, _ = make(cell, 2, True, unroll=True)
    assert "unroll=True" in repr(unrolled)
    assert scanned.state().keys() == unrolled.state().keys()
    x, states, cot = arrays(cell, 2, True, seed=3)
    states = states if with_state else None  # unrolled: the first step has no state at all
    got, grads, fn = graphc_results(scanned, x, states, lengths, cot, optimize=False)
    want, want_grads, fn_unrolled = graphc_results(unrolled, x, states, lengths, cot,
                                                   optimize=False)
    assert_match(got, grads, want, want_grads, tol=1e-12)
    assert not any(n.op.name == "scan" for n in fn_unrolled.graph.nodes)
    scopes = {n.scope.split("/", 1)[-1] for n in fn_unrolled.graph.nodes}
    assert {"l0/t0", "l1/t4"} <= scopes  # each step a name scope (after the module's)


def test_check_grad_small_lstm_with_lengths():
    """Finite differences through the masked loop, every weight, the input and the state."""
    lstm = nn.LSTM(2, 2, rng=0, dtype="float64")
    lengths = np.array([2, 3, 1])

    def cost(ps):
        x, h0, c0, *weights = ps
        for name, w in zip(WEIGHTS, weights):  # the weights as the checked inputs
            setattr(lstm, f"{name}_l0", w)
        out, (h_n, c_n) = lstm(x, (h0, c0), lengths=lengths)
        return (out * out).sum() + (h_n * c_n).sum()

    rng = np.random.default_rng(4)
    inputs = [rng.standard_normal((3, 3, 2)), rng.standard_normal((1, 3, 2)),
              rng.standard_normal((1, 3, 2)), rng.standard_normal((2, 8)) * 0.5,
              rng.standard_normal((2, 8)) * 0.5, rng.standard_normal(8) * 0.1,
              rng.standard_normal(8) * 0.1]
    assert gc.check_grad(cost, inputs, shapes=[("T", "N", 2), None, None, None, None, None,
                                               None]) < 1e-4


def test_a_symbolic_length_needs_the_scan_and_lengths_are_checked():
    with gc.Graph():
        x = gc.placeholder("x", ("T", "N", 2))
        with pytest.raises(gc.GraphError, match="static sequence length"):
            nn.RNN(2, 3, unroll=True)(x)
        out, h_n = nn.RNN(2, 3)(x)  # the default loops: any T
        assert str(out.shape[0]) == "T" and h_n.shape == (1, x.shape[1], 3)
        with pytest.raises(gc.GraphError, match="lengths must be an int tensor"):
            nn.GRU(2, 3)(x, lengths=gc.placeholder("l", ("N",)))
        with pytest.raises(gc.GraphError, match="lengths must be integers"):
            nn.GRU(2, 3)(x, lengths=[1.5, 2.0])
        with pytest.raises(gc.ShapeError, match=r"lengths must have shape \(N,\)"):
            nn.LSTM(2, 3)(gc.placeholder("y", (4, 3, 2)), lengths=np.array([1, 2]))


def test_state_keys_and_files_keep_their_form(tmp_path):
    """The loop changes no parameter: PyTorch's keys and layout; unroll= survives a file."""
    lstm = nn.LSTM(D, H, num_layers=2, rng=0, unroll=True)
    assert set(lstm.state()) == {f"{w}_l{k}" for w in WEIGHTS for k in (0, 1)}
    assert lstm.weight_ih_l0.shape == (D, 4 * H) and lstm.weight_hh_l1.shape == (H, 4 * H)
    back = gc.load(gc.save(lstm, tmp_path / "lstm.gcm"))
    assert back.unroll and back.num_layers == 2
    for key, value in lstm.state().items():
        np.testing.assert_array_equal(back.state()[key], value)
