"""Layer norm, attention and the Transformer encoder against PyTorch (float64, same weights,
dropout 0): outputs and gradients w.r.t. inputs and every parameter on the numpy backend,
outputs on llvm; finite differences; fully masked rows (no NaN, documented zeros)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

torch = pytest.importorskip("torch")
nn, F = gc.nn, gc.nn.functional
TF = torch.nn.functional
TOL = dict(rtol=1e-9, atol=1e-11)


# -- helpers ----------------------------------------------------------------------------------


def run(build, arrays, params=(), backend="numpy", grads=True, seed=1, shapes=None):
    """Feed `arrays` to placeholders, call `build(*placeholders)` (a tensor or a tuple whose
    first entry is the output) and return (outputs, gradients of sum(out * R) w.r.t. the
    inputs that are float and every parameter), R a fixed random array."""
    with gc.Graph("t"):
        phs = [gc.placeholder(f"x{i}", a.shape if shapes is None or shapes[i] is None
                              else shapes[i], a.dtype) for i, a in enumerate(arrays)]
        outs = build(*phs)
        outs = [o for o in (outs if isinstance(outs, tuple) else (outs,)) if o is not None]
        wrt = [p for p in phs if p.dtype.kind == "f"] + list(params)
        r = np.random.default_rng(seed).standard_normal(tuple(int(d) for d in
                                                              _concrete(outs[0], arrays, phs)))
        gs = gc.grad((outs[0] * r).sum(), wrt, allow_unused=True) if grads else []
        fn = gc.compile(phs, outs + gs, backend=backend)
    values = fn(*arrays)
    return values[:len(outs)], values[len(outs):], r


def _concrete(out, arrays, phs):
    """The output's shape with symbolic dims bound by the arrays."""
    binding = {}
    for p, a in zip(phs, arrays):
        for d, n in zip(p.shape, a.shape):
            if not isinstance(d, int):
                binding[d] = n
    return tuple(int(d.subs(binding)) if not isinstance(d, int) else d for d in out.shape)


MATMUL_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                  "out_proj.weight", "linear1.weight", "linear2.weight")


def to_graphc(key, value):
    """A PyTorch value in graphc's layout: matmul weights transposed (for ``x @ W``); the rest
    (biases, layer-norm scales of any rank) as they are."""
    return value.T if key.endswith(MATMUL_WEIGHTS) else value


def torch_grads(out, r, inputs, module=None):
    """Gradients of sum(out * r) in PyTorch: inputs, then {key: grad} of the module's
    parameters with 2-d weights transposed to graphc's layout."""
    (out * torch.tensor(r)).sum().backward()
    got = [t.grad.numpy() for t in inputs]
    params = {}
    if module is not None:
        for key, p in module.named_parameters():
            params[key] = to_graphc(key, p.grad.numpy())
    return got, params


def copy_weights(torch_module, module):
    """PyTorch's state into a graphc module (2-d weights transposed); checks that the keys
    are PyTorch's, apart from graphc's random-state buffers."""
    state = {k: to_graphc(k, v.numpy()) for k, v in torch_module.state_dict().items()}
    ours = {k for k in module.state() if not k.endswith("rng")}
    assert ours == set(state), (sorted(ours), sorted(state))
    module.load_state(state, strict=False)


def tensors(*arrays):
    return [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]


def assert_close(got, want, rows=None, **tol):
    got, want = np.asarray(got), np.asarray(want)
    if rows is not None:
        got, want = got[rows], want[rows]
    np.testing.assert_allclose(got, want, **{**TOL, **tol})


# -- layer norm --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, normalized, affine", [
    ((3, 4, 6), 6, True), ((2, 3, 4, 5), (4, 5), True), ((5, 7), (7,), False)])
def test_layer_norm_matches_torch(shape, normalized, affine, rng):
    x = rng.standard_normal(shape) * 3 + 1
    ln = nn.LayerNorm(normalized, elementwise_affine=affine, dtype="float64")
    ref = torch.nn.LayerNorm(normalized, elementwise_affine=affine, dtype=torch.float64)
    if affine:
        with torch.no_grad():
            ref.weight.copy_(torch.tensor(rng.standard_normal(ref.weight.shape)))
            ref.bias.copy_(torch.tensor(rng.standard_normal(ref.bias.shape)))
        copy_weights(ref, ln)
    (out,), grads, r = run(ln, [x], ln.parameters())
    tx, = tensors(x)
    want = ref(tx)
    (gx,), gp = torch_grads(want, r, [tx], ref)
    assert_close(out, want.detach().numpy())
    assert_close(grads[0], gx)
    for (key, _), g in zip(ln.named_parameters(), grads[1:]):
        assert_close(g, gp[key])
    (llvm,), _, _ = run(ln, [x], backend="llvm", grads=False)
    assert_close(llvm, want.detach().numpy())


def test_layer_norm_gradient_by_finite_differences(rng):
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal(5), rng.standard_normal(5)
    r = rng.standard_normal((3, 5))
    err = gc.check_grad(lambda v: (F.layer_norm(v[0], 5, v[1], v[2]) * r).sum(), [x, w, b])
    assert err < 1e-6


def test_layer_norm_errors():
    x = gc.placeholder("x", ("N", 4, 6))
    with pytest.raises(gc.ShapeError, match=r"last 1 axes must be normalized_shape \(5,\)"):
        F.layer_norm(x, 5)
    with pytest.raises(gc.ShapeError, match="weight must have shape"):
        F.layer_norm(x, 6, gc.constant(np.ones(5, np.float32)))
    with pytest.raises(gc.ShapeError, match="positive int"):
        nn.LayerNorm(0)


# -- scaled dot-product attention --------------------------------------------------------------

L, S, E = 4, 5, 6
_pattern = np.random.default_rng(3).random((L, S)) > 0.4
_pattern[:, 0] = True  # every row keeps a key: comparable with PyTorch everywhere
_additive = np.where(_pattern, np.random.default_rng(4).standard_normal((L, S)), -np.inf)

SDPA_MASKS = {
    "none": dict(),
    "causal": dict(is_causal=True),
    "bool constant": dict(mask=_pattern),
    "bool fed": dict(mask=_pattern, fed=True),
    "float constant with -inf": dict(mask=_additive),
    "float fed with -inf": dict(mask=_additive, fed=True),
    "bool broadcast over queries": dict(mask=_pattern[:1], fed=True),
}


@pytest.mark.parametrize("case", list(SDPA_MASKS), ids=list(SDPA_MASKS))
def test_sdpa_matches_torch(case, rng):
    spec = SDPA_MASKS[case]
    q, k, v = (rng.standard_normal((2, 3, n, d)) for n, d in ((L, E), (S, E), (S, 7)))
    mask = spec.get("mask")
    fed = spec.get("fed", False)
    arrays = [q, k, v] + ([mask] if fed else [])

    def build(Q, K, V, M=None):
        if case == "bool fed":  # PyTorch's name for the mask
            return F.scaled_dot_product_attention(Q, K, V, attn_mask=M)
        return F.scaled_dot_product_attention(Q, K, V, mask=M if fed else mask,
                                              is_causal=spec.get("is_causal", False))

    (out,), grads, r = run(build, arrays)
    tq, tk, tv = tensors(q, k, v)
    want = TF.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=None if mask is None else torch.tensor(mask),
        is_causal=spec.get("is_causal", False))
    want_grads, _ = torch_grads(want, r, [tq, tk, tv])
    assert_close(out, want.detach().numpy())
    for g, w in zip(grads, want_grads):
        assert_close(g, w)
    if case in ("causal", "float fed with -inf"):
        (llvm,), _, _ = run(build, arrays, backend="llvm", grads=False)
        assert_close(llvm, want.detach().numpy())


def test_sdpa_gradient_by_finite_differences(rng):
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), \
        rng.standard_normal((2, 5, 3))
    additive = rng.standard_normal((3, 5))
    r = rng.standard_normal((2, 3, 3))
    err = gc.check_grad(lambda t: (F.scaled_dot_product_attention(
        t[0], t[1], t[2], mask=t[3]) * r).sum(), [q, k, v, additive])
    assert err < 1e-6
    err = gc.check_grad(lambda t: (F.scaled_dot_product_attention(
        t[0], t[1], t[2], is_causal=True, scale=0.3) * r).sum(), [q, k, v])
    assert err < 1e-6


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("kind", ["bool fed", "float fed", "bool constant"])
def test_fully_masked_rows_give_zeros_not_nan(kind, backend, rng):
    """A query that may attend to no key: weights 0, output 0, gradient 0 — and every other
    row exactly as PyTorch. (PyTorch's SDPA gives 0 for the empty row too since 2.5; older
    versions, and its MultiheadAttention with need_weights, give NaN.)"""
    q, k, v = rng.standard_normal((2, L, E)), rng.standard_normal((2, S, E)), \
        rng.standard_normal((2, S, 3))
    keep = _pattern.copy()
    keep[2] = False  # query 2 sees nothing
    mask = keep if kind.startswith("bool") else np.where(keep, 0.5, -np.inf)
    fed = kind.endswith("fed")

    def build(Q, K, V, M=None):
        out, weights = gc.nn.attention.attention(
            Q, K, V, gc.nn.attention.as_mask(M if fed else mask, Q.dtype, "mask"))
        return out, weights

    (out, weights), grads, r = run(build, [q, k, v] + ([mask] if fed else []), backend=backend)
    for a in [out, weights] + grads:
        assert np.isfinite(a).all()
    assert (out[:, 2] == 0).all() and (weights[:, 2] == 0).all() and (grads[0][:, 2] == 0).all()
    np.testing.assert_allclose(weights[:, [0, 1, 3]].sum(-1), 1.0, rtol=1e-12)
    assert (weights[:, ~keep] == 0).all()
    tq, tk, tv = tensors(q, k, v)
    want = TF.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.tensor(mask))
    empty = want.detach().numpy()[:, 2]
    assert np.isnan(empty).all() or (empty == 0).all()  # PyTorch: NaN, or 0 since 2.5
    # the other rows, and the gradients: PyTorch on the problem without the empty query
    rows = [0, 1, 3]
    tq, tk, tv = tensors(q[:, rows], k, v)
    want = TF.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.tensor(mask[rows]))
    (gq, gk, gv), _ = torch_grads(want, r[:, rows], [tq, tk, tv])
    assert_close(out[:, rows], want.detach().numpy())
    assert_close(grads[0][:, rows], gq)
    assert_close(grads[1], gk)
    assert_close(grads[2], gv)


def test_sdpa_errors():
    q = gc.placeholder("q", (2, 4, 6))
    with pytest.raises(gc.ShapeError, match="must share E"):
        F.scaled_dot_product_attention(q, gc.placeholder("k", (2, 5, 3)),
                                       gc.placeholder("v", (2, 5, 3)))
    with pytest.raises(gc.GraphError, match="bool or float mask"):
        F.scaled_dot_product_attention(q, q, q, mask=np.ones((4, 4), np.int64))
    with pytest.raises(gc.GraphError, match="is_causal must be a bool"):
        F.scaled_dot_product_attention(q, q, q, None, 0.1)  # PyTorch's order: dropout_p
    with pytest.raises(gc.GraphError, match="not both"):
        F.scaled_dot_product_attention(q, q, q, mask=np.ones((4, 4), bool),
                                       attn_mask=np.ones((4, 4), bool))
    sym = gc.placeholder("s", ("N", "T", 6))
    with pytest.raises(gc.ShapeError, match="is_causal needs static"):
        F.scaled_dot_product_attention(sym, sym, sym, is_causal=True)


# -- multi-head attention ----------------------------------------------------------------------

N, EMB, HEADS = 2, 8, 2


def _mha_masks(spec, rng, n, l, s):
    """(graphc attn_mask, torch attn_mask, graphc key_padding_mask, torch key_padding_mask,
    which of them are fed) for a case."""
    keep = rng.random((l, s)) > 0.3
    keep[:, 0] = True  # no query loses every key
    am = spec.get("attn_mask")
    if am == "causal bool":
        ours = ~np.tril(np.ones((l, s), bool))
    elif am == "bool2d":
        ours = ~keep
    elif am == "float2d":
        ours = np.where(keep, rng.standard_normal((l, s)), -np.inf)
    elif am == "float3d":
        ours = np.where(keep, rng.standard_normal((n * HEADS, l, s)), -np.inf)
    else:
        ours = None
    kp = spec.get("kpm")
    pad = np.zeros((n, s), bool)
    pad[0, -2:] = True  # the first sample's last two keys are padding
    kpm = {"bool": pad, "float": np.where(pad, -np.inf, 0.25)}.get(kp)
    return ours, kpm


MHA_CASES = {
    "seq-first, no mask": dict(),
    "batch_first, causal bool mask, weights per head": dict(batch_first=True,
                                                            attn_mask="causal bool",
                                                            average=False),
    "padding mask fed": dict(kpm="bool"),
    "float masks fed, (N*H, L, S) and padding": dict(attn_mask="float3d", kpm="float"),
    "kdim and vdim": dict(kdim=5, vdim=3, attn_mask="bool2d"),
    "bias_kv and zero_attn with masks": dict(add_bias_kv=True, add_zero_attn=True, kpm="bool",
                                             attn_mask="bool2d"),
    "unbatched, float mask": dict(unbatched=True, attn_mask="float2d"),
    "is_causal without a mask": dict(is_causal=True, batch_first=True),
    "no bias": dict(bias=False, kpm="bool"),
}
LLVM_MHA = ("float masks fed, (N*H, L, S) and padding", "bias_kv and zero_attn with masks")


@pytest.mark.parametrize("case", list(MHA_CASES), ids=list(MHA_CASES))
def test_multihead_attention_matches_torch(case, rng):
    spec = MHA_CASES[case]
    kw = {k: spec[k] for k in ("kdim", "vdim", "add_bias_kv", "add_zero_attn", "bias",
                               "batch_first") if k in spec}
    mha = nn.MultiheadAttention(EMB, HEADS, dtype="float64", **kw)
    ref = torch.nn.MultiheadAttention(EMB, HEADS, dtype=torch.float64, **kw)
    with torch.no_grad():  # non-zero biases, so that every gradient is exercised
        for p in ref.parameters():
            p.copy_(torch.tensor(rng.standard_normal(p.shape)) * 0.5)
    copy_weights(ref, mha)
    l, s = 4, 5
    dims = (EMB, kw.get("kdim", EMB), kw.get("vdim", EMB))
    if spec.get("unbatched"):
        shapes = [(l, dims[0]), (s, dims[1]), (s, dims[2])]
    elif spec.get("batch_first"):
        shapes = [(N, l, dims[0]), (N, s, dims[1]), (N, s, dims[2])]
    else:
        shapes = [(l, N, dims[0]), (s, N, dims[1]), (s, N, dims[2])]
    q, k, v = (rng.standard_normal(sh) for sh in shapes)
    attn_mask, kpm = _mha_masks(spec, rng, N, l, s)
    if spec.get("unbatched"):
        kpm = None
    fed = [m for m in (attn_mask, kpm) if m is not None and (m.ndim == 3 or m is kpm)]
    average = spec.get("average", True)

    def build(Q, K, V, *masks):
        masks = iter(masks)
        am = next(masks) if attn_mask is not None and attn_mask.ndim == 3 else attn_mask
        pm = next(masks) if kpm is not None else None
        return mha(Q, K, V, key_padding_mask=pm, attn_mask=am, average_attn_weights=average,
                   is_causal=spec.get("is_causal", False))

    (out, weights), grads, r = run(build, [q, k, v] + fed, mha.parameters())
    tq, tk, tv = tensors(q, k, v)
    t_mask = attn_mask
    if spec.get("is_causal"):  # PyTorch wants the mask itself too
        t_mask = ~np.tril(np.ones((l, s), bool))
    want, want_w = ref(tq, tk, tv, key_padding_mask=None if kpm is None else torch.tensor(kpm),
                       attn_mask=None if t_mask is None else torch.tensor(t_mask),
                       average_attn_weights=average, is_causal=spec.get("is_causal", False))
    (gq, gk, gv), gp = torch_grads(want, r, [tq, tk, tv], ref)
    assert_close(out, want.detach().numpy())
    assert_close(weights, want_w.detach().numpy())
    for g, w in zip(grads, [gq, gk, gv]):
        assert_close(g, w)
    names = [key for key, _ in mha.named_parameters()]
    assert sorted(names) == sorted(gp)
    n_inputs = sum(a.dtype.kind == "f" for a in [q, k, v] + fed)  # float masks have grads too
    for key, g in zip(names, grads[n_inputs:], strict=True):
        assert_close(g, gp[key], err_msg=key)
    if case in LLVM_MHA:
        (llvm, llvm_w), _, _ = run(build, [q, k, v] + fed, backend="llvm", grads=False)
        assert_close(llvm, want.detach().numpy())
        assert_close(llvm_w, want_w.detach().numpy())


def test_multihead_attention_symbolic_batch_and_need_weights(rng):
    """One compiled function for any batch size N; need_weights=False gives no weights."""
    mha = nn.MultiheadAttention(EMB, HEADS, batch_first=True, dtype="float64")
    ref = torch.nn.MultiheadAttention(EMB, HEADS, batch_first=True, dtype=torch.float64)
    copy_weights(ref, mha)
    with gc.Graph("t"):
        x = gc.placeholder("x", ("N", 6, EMB), "float64")
        pad = gc.placeholder("pad", ("N", 6), "bool")
        out, weights = mha(x, x, x, key_padding_mask=pad, need_weights=False)
        assert weights is None
        fn = gc.compile([x, pad], out)
    for n in (1, 3):
        xs = rng.standard_normal((n, 6, EMB))
        pads = np.zeros((n, 6), bool)
        pads[:, 4:] = True
        want = ref(*tensors(xs, xs, xs), key_padding_mask=torch.tensor(pads))[0]
        assert_close(fn(xs, pads), want.detach().numpy())


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_multihead_attention_fully_padded_sample(backend, rng):
    """A sample whose keys are all padding: its output is out_proj.bias, its weights 0, no
    NaN in any gradient; the other sample as PyTorch (which gives NaN for the first)."""
    mha = nn.MultiheadAttention(EMB, HEADS, dtype="float64")
    ref = torch.nn.MultiheadAttention(EMB, HEADS, dtype=torch.float64)
    with torch.no_grad():
        ref.out_proj.bias.copy_(torch.tensor(rng.standard_normal(EMB)))
    copy_weights(ref, mha)
    x = rng.standard_normal((5, N, EMB))
    pad = np.zeros((N, 5), bool)
    pad[0] = True
    (out, weights), grads, _ = run(lambda X, P: mha(X, X, X, key_padding_mask=P), [x, pad],
                                   mha.parameters(), backend=backend)
    assert all(np.isfinite(a).all() for a in [out, weights] + grads)
    assert_close(out[:, 0], np.broadcast_to(mha.out_proj.bias.value, (5, EMB)))
    assert (weights[0] == 0).all() and (grads[0][:, 0] == 0).all()
    tx, = tensors(x)
    want, want_w = ref(tx, tx, tx, key_padding_mask=torch.tensor(pad))
    assert np.isnan(want_w.detach().numpy()[0]).all()
    assert_close(out[:, 1], want.detach().numpy()[:, 1])
    assert_close(weights[1], want_w.detach().numpy()[1])


def test_multihead_attention_errors():
    with pytest.raises(gc.GraphError, match="multiple of num_heads"):
        nn.MultiheadAttention(10, 3)
    mha = nn.MultiheadAttention(8, 2)
    x = gc.placeholder("x", (4, 2, 6))
    with pytest.raises(gc.ShapeError, match=r"query must be \(T, N, 8\)"):
        mha(x, x, x)
    y = gc.placeholder("y", (4, 2, 8))
    with pytest.raises(gc.ShapeError, match=r"attn_mask must be \(L, S\)"):
        mha(y, y, y, attn_mask=np.zeros((1, 1, 4, 4), bool))


# -- the Transformer encoder -------------------------------------------------------------------

D_MODEL, NHEAD, FF, T = 8, 2, 16, 5


def _sigmoid_activation(x):
    return gc.sigmoid(x)


ACTIVATIONS = {"relu": ("relu", "relu"), "gelu": ("gelu", "gelu"),
               "callable": (_sigmoid_activation, torch.sigmoid)}
ENCODER_CASES = {
    "post-LN, relu, causal float mask and padding": dict(activation="relu", mask="causal float",
                                                         kpm=True),
    "pre-LN, gelu, batch_first, bool mask": dict(activation="gelu", norm_first=True,
                                                 batch_first=True, mask="bool"),
    "pre-LN, callable, is_causal": dict(activation="callable", norm_first=True, is_causal=True),
}


def _encoder_inputs(spec, rng):
    shape = (N, T, D_MODEL) if spec.get("batch_first") else (T, N, D_MODEL)
    x = rng.standard_normal(shape)
    mask = None
    if spec.get("mask") == "causal float" or spec.get("is_causal"):
        mask = np.triu(np.full((T, T), -np.inf), 1)  # generate_square_subsequent_mask
    elif spec.get("mask") == "bool":
        mask = rng.random((T, T)) > 0.7
        np.fill_diagonal(mask, False)
    pad = None
    if spec.get("kpm"):
        pad = np.zeros((N, T), bool)
        pad[1, -2:] = True
        if mask is not None and mask.dtype.kind == "f":  # PyTorch wants both of one kind
            pad = np.where(pad, -np.inf, 0.0)
    return x, mask, pad


def _layer_pair(spec, rng):
    ours_act, torch_act = ACTIVATIONS[spec["activation"]]
    if ours_act == "gelu" and not hasattr(gc.ops, "gelu"):
        pytest.skip("gc.ops.gelu is not in this build")
    kw = dict(dim_feedforward=FF, dropout=0.0, batch_first=spec.get("batch_first", False),
              norm_first=spec.get("norm_first", False))
    layer = nn.TransformerEncoderLayer(D_MODEL, NHEAD, activation=ours_act, dtype="float64", **kw)
    ref = torch.nn.TransformerEncoderLayer(D_MODEL, NHEAD, activation=torch_act,
                                           dtype=torch.float64, **kw)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p + torch.tensor(rng.standard_normal(p.shape)) * 0.2)
    copy_weights(ref, layer)
    return layer, ref


@pytest.mark.parametrize("case", list(ENCODER_CASES), ids=list(ENCODER_CASES))
def test_transformer_encoder_layer_matches_torch(case, rng):
    spec = ENCODER_CASES[case]
    layer, ref = _layer_pair(spec, rng)
    x, mask, pad = _encoder_inputs(spec, rng)
    causal = spec.get("is_causal", False)

    def build(X, *fed):
        return layer(X, src_mask=None if causal else mask,
                     src_key_padding_mask=fed[0] if fed else None, is_causal=causal)

    arrays = [x] + ([pad] if pad is not None else [])
    (out,), grads, r = run(build, arrays, layer.parameters())
    tx, = tensors(x)
    want = ref(tx, src_mask=None if mask is None else torch.tensor(mask),
               src_key_padding_mask=None if pad is None else torch.tensor(pad), is_causal=causal)
    (gx,), gp = torch_grads(want, r, [tx], ref)
    assert_close(out, want.detach().numpy())
    assert_close(grads[0], gx)
    names = [key for key, _ in layer.named_parameters()]
    assert sorted(names) == sorted(gp)
    n_inputs = sum(a.dtype.kind == "f" for a in arrays)  # a float padding mask has one too
    for key, g in zip(names, grads[n_inputs:], strict=True):
        assert_close(g, gp[key], err_msg=key)
    if case.startswith("post-LN"):
        (llvm,), _, _ = run(build, arrays, backend="llvm", grads=False)
        assert_close(llvm, want.detach().numpy())


def test_transformer_encoder_stack_matches_torch_and_round_trips(rng, tmp_path):
    layer, ref_layer = _layer_pair(dict(activation="relu", norm_first=True), rng)
    encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(D_MODEL, dtype="float64"))
    ref = torch.nn.TransformerEncoder(ref_layer, 2, norm=torch.nn.LayerNorm(
        D_MODEL, dtype=torch.float64), enable_nested_tensor=False)
    with torch.no_grad():  # the copies start equal; make them differ
        for p in ref.layers[1].parameters():
            p.mul_(0.9)
    copy_weights(ref, encoder)
    assert not np.array_equal(encoder.layers[0].linear1.weight.value,
                              encoder.layers[1].linear1.weight.value)
    x, mask, _ = _encoder_inputs(dict(mask="causal float"), rng)
    (out,), grads, r = run(lambda X: encoder(X, mask=mask), [x], encoder.parameters())
    tx, = tensors(x)
    want = ref(tx, mask=torch.tensor(mask))
    (gx,), gp = torch_grads(want, r, [tx], ref)
    assert_close(out, want.detach().numpy())
    assert_close(grads[0], gx)
    for (key, _), g in zip(encoder.named_parameters(), grads[1:], strict=True):
        assert_close(g, gp[key], err_msg=key)
    gc.save(encoder, tmp_path / "encoder.graphc")
    loaded = gc.load(tmp_path / "encoder.graphc")
    (again,), _, _ = run(lambda X: loaded(X, mask=mask), [x], grads=False)
    assert_close(again, out, rtol=0, atol=0)


def test_encoder_layer_state_keys_and_activations():
    layer = nn.TransformerEncoderLayer(D_MODEL, NHEAD, FF)
    ref = torch.nn.TransformerEncoderLayer(D_MODEL, NHEAD, FF)
    shapes = {k: to_graphc(k, v.numpy()).shape for k, v in ref.state_dict().items()}
    ours = {k: v.shape for k, v in layer.state().items() if not k.endswith("rng")}
    assert ours == shapes
    assert [k for k in layer.state() if k.endswith("rng")] == [
        "self_attn.rng", "dropout.rng", "dropout1.rng", "dropout2.rng"]
    with pytest.raises(gc.GraphError, match="activation should be"):
        nn.TransformerEncoderLayer(D_MODEL, NHEAD, activation="swish")


def test_gelu_activation_needs_the_op(monkeypatch):
    monkeypatch.delattr(gc.ops, "gelu", raising=False)
    with pytest.raises(gc.GraphError, match="needs gc.ops.gelu"):
        nn.TransformerEncoderLayer(D_MODEL, NHEAD, activation="gelu")


def test_encoder_layer_trains_with_dropout_and_evaluates_deterministically(rng):
    """Dropout (attention weights, feed-forward, residual branches) changes the training
    step's output from call to call; eval mode is deterministic and dropout-free."""
    layer = nn.TransformerEncoderLayer(D_MODEL, NHEAD, FF, dropout=0.3, batch_first=True)
    x = rng.standard_normal((N, T, D_MODEL)).astype(np.float32)
    with gc.Graph("train"):
        X = gc.placeholder("x", ("N", T, D_MODEL))
        train = gc.compile([X], layer(X, is_causal=True))
    layer.eval()
    with gc.Graph("eval"):
        X = gc.placeholder("x", ("N", T, D_MODEL))
        evaluate = gc.compile([X], layer(X, is_causal=True))
    a, b = train(x), train(x)
    assert np.isfinite(a).all() and not np.allclose(a, b)
    np.testing.assert_array_equal(evaluate(x), evaluate(x))


# -- positional encoding -----------------------------------------------------------------------


def test_sinusoidal_positional_encoding():
    table = F.sinusoidal_positional_encoding(7, 6, dtype="float64")
    for pos in range(7):
        for i in range(6):
            angle = pos / 10000 ** (2 * (i // 2) / 6)
            want = np.sin(angle) if i % 2 == 0 else np.cos(angle)
            assert abs(table[pos, i] - want) < 1e-12
    assert F.sinusoidal_positional_encoding(3, 5).shape == (3, 5)  # odd width
    pe = nn.PositionalEncoding(6, dropout=0.0, max_len=10, batch_first=True)
    x = np.random.default_rng(0).standard_normal((2, 7, 6)).astype(np.float32)
    (out,), _, _ = run(pe, [x], grads=False)
    np.testing.assert_allclose(out, x + table.astype(np.float32), rtol=1e-6)
    with pytest.raises(gc.ShapeError, match="at most max_len=4"):
        nn.PositionalEncoding(6, max_len=4)(gc.placeholder("x", (7, 2, 6)))


def test_encoder_converted_to_float64_is_rebuilt_in_float64(tmp_path):
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(D_MODEL, NHEAD, FF), 2)
    encoder.to("float64")
    gc.save(encoder, tmp_path / "e.graphc")
    loaded = gc.load(tmp_path / "e.graphc")
    assert {p.dtype for p in loaded.parameters()} == {np.dtype(np.float64)}
    assert set(loaded.state()) == set(encoder.state())
    for key, value in encoder.state().items():
        np.testing.assert_array_equal(loaded.state()[key], value)


def test_encoder_copies_draw_their_own_dropout_masks():
    layer = nn.TransformerEncoderLayer(D_MODEL, NHEAD, FF, dropout=0.2, rng=5)
    encoder = nn.TransformerEncoder(layer, 2)
    seeds = {int(b.value[0]) for key, b in encoder.named_buffers() if key.endswith("rng")}
    assert len(seeds) == 8  # 4 random states per layer, all different
    np.testing.assert_array_equal(encoder.layers[1].linear2.weight.value,
                                  layer.linear2.weight.value)


_BAD_MASKS = {  # for batch_first MultiheadAttention(8, 2) on (3, 5, 8): PyTorch refuses each
    "3-d, not N*heads": {"attn_mask": np.zeros((5, 5, 5), bool)},
    "3-d, one head's": {"attn_mask": np.zeros((2, 5, 5), bool)},
    "3-d, one": {"attn_mask": np.zeros((1, 5, 5), bool)},
    "2-d (1, S)": {"attn_mask": np.array([[0, 0, 0, 0, 1]], bool)},
    "padding (S,)": {"key_padding_mask": np.array([0, 0, 0, 0, 1], bool)},
    "padding (1, S)": {"key_padding_mask": np.array([[0, 0, 0, 0, 1]], bool)},
    "padding removing nothing": {"key_padding_mask": np.zeros((7, 9), bool)},
    "float, removing nothing": {"attn_mask": np.zeros((7, 9), np.float32)},
}


@pytest.mark.parametrize("kwargs", list(_BAD_MASKS.values()), ids=list(_BAD_MASKS))
def test_multihead_masks_of_the_wrong_shape_are_shape_errors(kwargs):
    """No broadcasting of a mask the layer's contract does not allow (a per-head mask was
    applied to every batch element; a NumPy error, or a mask removing nothing was dropped
    before any check)."""
    m = gc.nn.MultiheadAttention(8, 2, batch_first=True)
    x = gc.placeholder("x", (3, 5, 8))
    with pytest.raises(gc.ShapeError, match="must have shape"):
        m(x, x, x, **kwargs)


def test_multihead_batch_sizes_must_agree():
    m = gc.nn.MultiheadAttention(8, 2)
    q, kv = gc.placeholder("q", (5, 3, 8)), gc.placeholder("kv", (6, 1, 8))
    with pytest.raises(gc.ShapeError, match="the key's batch size 1 differs"):
        m(q, kv, kv)
    with pytest.raises(gc.ShapeError, match="same length S"):
        m(q, gc.placeholder("k", (6, 3, 8)), gc.placeholder("v", (4, 3, 8)))
    y = gc.placeholder("y", (5, "N", 8))  # a known 1 against a symbolic batch: refused too
    with pytest.raises(gc.ShapeError, match="batch size 1 differs from the query's N"):
        m(y, kv, kv)


def test_a_per_sample_mask_with_a_symbolic_batch_is_checked_at_the_call():
    m = gc.nn.MultiheadAttention(8, 2, batch_first=True)
    y = gc.placeholder("y", ("N", 5, 8))
    mask = np.zeros((6, 5, 5), bool)
    mask[0, :, -1] = True
    fn = gc.compile([y], m(y, y, y, attn_mask=mask)[0])
    assert fn(np.ones((3, 5, 8), np.float32)).shape == (3, 5, 8)
    with pytest.raises(gc.ShapeError, match="N=2"):
        fn(np.ones((2, 5, 8), np.float32))


@pytest.mark.parametrize("mask", [np.ones((7, 9), bool), np.zeros((7, 9), np.float32),
                                  np.ones((2, 1, 5, 5), bool)])
def test_an_attention_mask_must_broadcast_to_the_scores(mask):
    x = gc.placeholder("x", (3, 5, 8))
    with pytest.raises(gc.ShapeError, match="does not broadcast"):
        F.scaled_dot_product_attention(x, x, x, mask=mask)
    for fine in (np.ones((1, 5, 1), bool), np.ones(5, bool), np.zeros((3, 5, 5), np.float32)):
        F.scaled_dot_product_attention(x, x, x, mask=fine)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("as_tensor", [False, True], ids=["numpy-mask", "tensor-mask"])
def test_a_nan_in_a_float_mask_makes_its_row_nan_as_in_pytorch(backend, as_tensor):
    """A NaN in an additive mask once removed its pair (erasing the NaN); -inf removes it."""
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 3, 4))
    mask = np.zeros((3, 3))
    mask[1, 2], mask[0, 1] = np.nan, -np.inf
    want = TF.scaled_dot_product_attention(*(torch.tensor(q),) * 3,
                                           attn_mask=torch.tensor(mask)).numpy()
    x = gc.placeholder("x", (2, 3, 4), "float64")
    m = gc.constant(mask) if as_tensor else mask
    got = gc.compile([x], F.scaled_dot_product_attention(x, x, x, mask=m), backend=backend)(q)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[:, 1]).all() and not np.isnan(got[:, [0, 2]]).any()
    np.testing.assert_allclose(got[:, [0, 2]], want[:, [0, 2]], **TOL)
