"""Attention: ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention`` (PyTorch's
semantics), plus the sinusoidal position table a Transformer adds to its inputs.

Everything here is a composition of graphc's primitives — batched ``matmul`` (over any leading
axes, on every backend), the max-subtracted ``softmax``, ``where`` — so gradients come from
theirs and the graph shows the computation (scores, masked softmax, weighted sum).

Masks. A mask says which (query, key) pairs take part. Two kinds are accepted, as PyTorch:
a boolean mask and an additive float mask (added to the scores; ``-inf`` removes a pair).
Internally both become a *keep* pattern and a finite *bias*: a removed pair's score is
replaced (``where``) by the dtype's most negative finite number, never ``-inf``, so the
softmax never computes ``inf - inf``. A row whose keys are *all* removed would then get
uniform weights; instead its weights are set to exactly 0, so that

* its weights are 0, its output row is 0 (``MultiheadAttention``: the output projection's
  bias), and no gradient flows through it (the gradient w.r.t. its scores, queries, keys and
  values is 0) — no NaN anywhere, forward or backward, on every backend;
* every row with at least one key left computes exactly PyTorch's values and gradients.

PyTorch's ``scaled_dot_product_attention`` gives the same zeros since version 2.5 (its
"safe softmax"); its ``MultiheadAttention`` with ``need_weights=True``, and older versions,
give NaN. The zeroing costs one ``where`` and is left out when the mask is a NumPy constant
(or ``is_causal``) with no empty row.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import init, ops
from ..arguments import fraction, maybe_equal, shape_of
from ..errors import GraphError, ShapeError, user_facing
from ..ir.graph import name_scope
from ..ir.tensor import Tensor
from ..ops.sources import parameter
from . import functional as F
from .layers import Linear
from .module import Module

__all__ = ["MultiheadAttention", "attention", "scaled_dot_product_attention",
           "sinusoidal_positional_encoding"]


# -- masks -------------------------------------------------------------------------------------


class Mask(NamedTuple):
    """A mask in the form the attention computation uses.

    ``keep``: bool, True where a (query, key) pair takes part, broadcastable to the scores'
    (..., L, S) — a NumPy array (known while the graph is built), a tensor, or None (all).
    ``bias``: float, added to the scores where ``keep`` — array, tensor or None.
    """

    keep: np.ndarray | Tensor | None = None
    bias: np.ndarray | Tensor | None = None


def as_mask(mask, dtype, what: str, true_means: str = "keep") -> Mask:
    """Read a user's mask: a bool array/tensor (``true_means`` "keep" as
    ``scaled_dot_product_attention``'s, or "masked" as ``MultiheadAttention``'s), or a float one
    that is added to the scores (``-inf`` entries remove their pair; a NaN is kept, and its
    row's weights are NaN, as PyTorch's: never erased). NumPy masks are resolved
    now, so no -inf enters the graph."""
    if mask is None:
        return Mask()
    if isinstance(mask, Tensor):
        if mask.dtype == np.bool_:
            return Mask(mask if true_means == "keep" else ops.equal(mask, False))
        if mask.dtype.kind == "f":
            bias = mask if mask.dtype == dtype else ops.cast(mask, dtype)
            return Mask(ops.not_equal(bias, -np.inf), bias)  # (in the scores' dtype, as below)
        raise GraphError(f"{what} must be a bool or float mask, got dtype {mask.dtype}")
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        keep = arr if true_means == "keep" else ~arr
        return Mask(None if keep.all() else keep)
    if arr.dtype.kind == "f":
        with np.errstate(over="ignore"):  # in the scores' dtype first: -1e39 is -inf in float32
            arr = arr.astype(dtype)
        keep = arr != -np.inf  # -inf removes its pair; a NaN stays, and makes its row NaN
        bias = np.where(keep, arr, 0).astype(dtype)  # (as PyTorch: a NaN is not erased)
        return Mask(None if keep.all() else keep, bias if bias.any() else None)
    raise GraphError(f"{what} must be a bool or float mask, got dtype {arr.dtype}")


def _both(a, b):
    """Logical and of two keep patterns (None: everything kept)."""
    if a is None or b is None:
        return b if a is None else a
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a & b
    if isinstance(a, np.ndarray):
        a, b = b, a
    return ops.where(a, b, False)


def _sum(a, b):
    if a is None or b is None:
        return b if a is None else a
    return a + b


def combine(a: Mask, b: Mask) -> Mask:
    """Both masks at once: a pair takes part if both keep it; their biases add."""
    return Mask(_both(a.keep, b.keep), _sum(a.bias, b.bias))


def causal_mask(length: int, source_length: int) -> Mask:
    """Query i sees keys 0..i (PyTorch's ``is_causal``: the lower triangle, top-left
    aligned)."""
    for d in (length, source_length):
        if not isinstance(d, (int, np.integer)):
            raise ShapeError(f"is_causal needs static sequence lengths, got L={length}, "
                             f"S={source_length}")
    return Mask(np.tril(np.ones((int(length), int(source_length)), bool)))


def _may_have_empty_rows(keep) -> bool:
    if keep is None:
        return False
    if isinstance(keep, np.ndarray):
        return bool((~keep.any(axis=-1)).any()) if keep.ndim else not bool(keep)
    return True


def _pad_keys(mask: Mask) -> Mask:
    """One more key that every query may see (``add_bias_kv``/``add_zero_attn``)."""
    def pad(part, fill):
        if part is None:
            return None
        if isinstance(part, np.ndarray):
            if part.ndim == 0:
                return part
            column = np.full(part.shape[:-1] + (1,), fill, part.dtype)
            return np.concatenate([part, column], axis=-1)
        column = ops.broadcast_to(ops.constant(np.array(fill, part.dtype), graph=part.graph),
                                  tuple(part.shape[:-1]) + (1,))
        return ops.concat([part, column], axis=-1)

    return Mask(pad(mask.keep, True), pad(mask.bias, 0))


# -- the computation -------------------------------------------------------------------------




def _check_broadcasts(mask, target: tuple, what: str) -> None:
    """A mask must broadcast to the scores' shape `target` (NumPy's rules, as PyTorch asks):
    checked on the mask as given, before a mask that removes nothing is dropped."""
    shape = shape_of(mask)
    fits = len(shape) <= len(target) and all(
        m == 1 or maybe_equal(m, t) for m, t in zip(shape[::-1], target[::-1]))
    if not fits:
        raise ShapeError(f"{what} of shape {shape} does not broadcast to the attention "
                         f"scores' shape {tuple(target)} (..., L, S)")


def _broadcast_dims(a: tuple, b: tuple) -> tuple:
    """The leading dims of the scores of q (*a, L, E) and k (*b, S, E): a dim of 1 takes the
    other's (whether they broadcast is the matmul's check)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    return tuple(y if _is_one(x) else x for x, y in zip(a, b))


def _is_one(d) -> bool:
    return isinstance(d, (int, np.integer)) and d == 1


def _same_batch(a, b) -> bool:
    """Could two batch sizes be equal? Known ones must be; a known 1 against a symbolic size
    would broadcast silently (symbolic against symbolic is the call's check)."""
    return maybe_equal(a, b) and (_is_one(a) == _is_one(b) or a == b)


def _require(shape: tuple, expected: tuple, what: str) -> None:
    """`shape` must be `expected` (dims equal where both are known: no broadcasting)."""
    if len(shape) != len(expected) or not all(maybe_equal(a, b)
                                               for a, b in zip(shape, expected)):
        raise ShapeError(f"MultiheadAttention: {what} must have shape {tuple(expected)}, got "
                         f"{tuple(shape)}")


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Mask | None = None,
              scale: float | None = None,
              dropout_p: float = 0.0, dropout_state: Tensor | None = None
              ) -> tuple[Tensor, Tensor]:
    """``(softmax(q kᵀ · scale + bias, masked) @ v, weights)`` for q (..., L, E),
    k (..., S, E), v (..., S, Ev), leading axes broadcast; returns the output (..., L, Ev)
    and the weights (..., L, S) (after dropout, as PyTorch's ``MultiheadAttention``).

    The building block of ``scaled_dot_product_attention`` and ``MultiheadAttention``;
    `mask` is a ``Mask`` (see ``as_mask``). Fully masked rows: see the module docstring.
    """
    mask = Mask() if mask is None else mask
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ShapeError(f"attention needs q (..., L, E), k (..., S, E), v (..., S, Ev); got "
                         f"shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not maybe_equal(q.shape[-1], k.shape[-1]) or not maybe_equal(k.shape[-2],
                                                                         v.shape[-2]):
        raise ShapeError(f"attention: q (..., L, E) and k (..., S, E) must share E, and k and "
                         f"v (..., S, Ev) must share S; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.dtype.kind != "f":
        raise GraphError(f"attention needs float tensors, got {q.dtype}")
    if scale is None:
        if not isinstance(q.shape[-1], (int, np.integer)):
            raise ShapeError(f"attention: the default scale 1/sqrt(E) needs a static E, got "
                             f"{q.shape[-1]}; pass scale=")
        scale = 1.0 / math.sqrt(int(q.shape[-1]))
    with name_scope("attention"):
        scores = ops.matmul_t(q, k, tb=True) * float(scale)
        if mask.bias is not None:
            scores = scores + mask.bias
        if mask.keep is not None:
            scores = ops.where(mask.keep, scores, float(np.finfo(scores.dtype).min))
        weights = ops.softmax(scores, axis=-1)
        if _may_have_empty_rows(mask.keep):
            weights = ops.where(mask.keep, weights, 0.0)  # a fully masked row: 0, not uniform
        if dropout_p > 0.0:
            weights = F.dropout(weights, dropout_p, True, state=dropout_state)
        return ops.matmul(weights, v), weights


@user_facing("scaled_dot_product_attention")
def scaled_dot_product_attention(q, k, v, mask=None, is_causal: bool = False,
                                 dropout_p: float = 0.0, scale: float | None = None, *,
                                 attn_mask=None, dropout_state: Tensor | None = None) -> Tensor:
    """``softmax(q kᵀ / sqrt(E) + mask) @ v`` — PyTorch's ``F.scaled_dot_product_attention``.

    q (..., L, E), k (..., S, E), v (..., S, Ev) with broadcasting leading axes (batch, heads);
    returns (..., L, Ev). `mask` (PyTorch's ``attn_mask``), broadcastable to (..., L, S): bool
    with True where a query may attend to a key, or float, added to the scores (``-inf``
    removes the pair). `is_causal`: query i attends to keys 0..i (static L and S); with a
    `mask` too, both apply (PyTorch refuses the pair). `scale` defaults to 1/sqrt(E).
    `dropout_p` > 0 drops attention weights (always, as PyTorch: pass 0 in evaluation),
    drawing from `dropout_state` (a ``gc.rng_state``) or a fresh state.

    `attn_mask=` is accepted as PyTorch's name for `mask`. Note the order: PyTorch's fifth
    positional argument is ``dropout_p``, graphc's is `is_causal` (which must be a bool).

    A query whose keys are all masked gets weights 0 and output 0 (as PyTorch 2.5+); see the
    module docstring of ``graphc.nn.attention``.
    """
    if not isinstance(is_causal, (bool, np.bool_)):
        raise GraphError(f"scaled_dot_product_attention: is_causal must be a bool, got "
                         f"{is_causal!r} (PyTorch's fifth positional argument is dropout_p; "
                         f"pass dropout_p= by name)")
    if attn_mask is not None:
        if mask is not None:
            raise GraphError("scaled_dot_product_attention: give mask= or attn_mask=, not both")
        mask = attn_mask
    q, k, v = (x if isinstance(x, Tensor) else ops.constant(np.asarray(x)) for x in (q, k, v))
    if mask is not None and q.ndim >= 2 and k.ndim >= 2:
        scores = _broadcast_dims(tuple(q.shape[:-2]), tuple(k.shape[:-2])) + \
            (q.shape[-2], k.shape[-2])
        _check_broadcasts(mask, scores, "the mask")
    m = as_mask(mask, q.dtype, "scaled_dot_product_attention's mask")
    if is_causal:
        m = combine(m, causal_mask(q.shape[-2], k.shape[-2]))
    with name_scope("sdpa"):
        return attention(q, k, v, m, scale, dropout_p, dropout_state)[0]


def sinusoidal_positional_encoding(length: int, d_model: int, base: float = 10000.0,
                                   dtype="float32") -> np.ndarray:
    """The fixed position table of "Attention is all you need" (Vaswani et al. 2017), a NumPy
    array (length, d_model): ``pe[p, 2i] = sin(p / base^(2i/d))``, ``pe[p, 2i+1] =
    cos(p / base^(2i/d))``.

    It depends on sizes only, so it is computed here, while the graph is built, and enters
    the graph as a constant (``x + pe`` lifts it): nothing to train, nothing to save.
    """
    if int(length) < 0 or int(d_model) < 1:
        raise ShapeError(f"positional encoding needs length >= 0 and d_model >= 1, got "
                         f"{length}, {d_model}")
    position = np.arange(int(length), dtype=np.float64)[:, None]
    freq = np.exp(np.arange(0, d_model, 2, dtype=np.float64) * (-math.log(base) / d_model))
    table = np.zeros((int(length), int(d_model)))
    table[:, 0::2] = np.sin(position * freq)
    table[:, 1::2] = np.cos(position * freq[: d_model // 2])
    return table.astype(init.float_dtype(dtype))


# -- the layer ---------------------------------------------------------------------------------


class MultiheadAttention(Module):
    """Multi-head attention, PyTorch's ``nn.MultiheadAttention``: arguments, layouts, state keys
    (``in_proj_weight``, ``in_proj_bias``, ``out_proj.weight``, ``out_proj.bias``; with
    ``kdim``/``vdim`` other than ``embed_dim``, ``q_proj_weight``, ``k_proj_weight``,
    ``v_proj_weight``; ``bias_k``, ``bias_v``) and initialization (Xavier-uniform projections,
    zero biases). Weights are stored for ``x @ W``, the transpose of PyTorch's:
    ``in_proj_weight`` is (embed_dim, 3·embed_dim), its column blocks the q, k, v projections.

    ``layer(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` returns ``(output, weights)``: query (L, N, E)
    — (N, L, E) with ``batch_first`` — or unbatched (L, E); key/value (S, N, kdim/vdim).
    Output as the query; weights (N, L, S) averaged over heads, (N, H, L, S) without
    averaging, None unless ``need_weights``. Masks as PyTorch's: bool ``True`` = *not*
    allowed (the opposite of ``scaled_dot_product_attention``), or float added to the scores;
    ``attn_mask`` (L, S) or (N·num_heads, L, S), ``key_padding_mask`` (N, S). ``is_causal``
    without ``attn_mask`` applies the causal mask (PyTorch asks for the mask as well and
    treats the flag as a hint; with a mask, the mask is used). Dropout (on the attention
    weights, training mode only) draws from the buffer ``rng``, present when ``dropout > 0``.
    A query whose keys are all masked attends to nothing: its attention output is 0 (the
    layer's output there is ``out_proj.bias``) and its weights are 0, where PyTorch gives NaN.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False,
                 kdim: int | None = None, vdim: int | None = None, batch_first: bool = False,
                 rng: init.RngLike = None, *, dtype="float32") -> None:
        super().__init__()
        rng, dt = init.as_rng(rng), init.float_dtype(dtype)
        E, H = int(embed_dim), int(num_heads)
        if E < 1 or H < 1 or E % H:
            raise GraphError(f"MultiheadAttention: embed_dim ({embed_dim}) must be a positive "
                             f"multiple of num_heads ({num_heads})")
        fraction(dropout, "dropout probability")
        self.embed_dim, self.num_heads, self.head_dim = E, H, E // H
        self.kdim = E if kdim is None else int(kdim)
        self.vdim = E if vdim is None else int(vdim)
        self.dropout, self.batch_first = float(dropout), bool(batch_first)
        self.add_zero_attn = bool(add_zero_attn)
        self._qkv_same_embed_dim = self.kdim == E and self.vdim == E
        if self._qkv_same_embed_dim:
            self.in_proj_weight = parameter("in_proj_weight",
                                            init.glorot_uniform((E, 3 * E), rng, dtype=dt))
        else:
            self.q_proj_weight = parameter("q_proj_weight", init.glorot_uniform((E, E), rng,
                                                                                dtype=dt))
            self.k_proj_weight = parameter("k_proj_weight",
                                           init.glorot_uniform((self.kdim, E), rng, dtype=dt))
            self.v_proj_weight = parameter("v_proj_weight",
                                           init.glorot_uniform((self.vdim, E), rng, dtype=dt))
        self.in_proj_bias = parameter("in_proj_bias", init.zeros(3 * E, dtype=dt)) if bias \
            else None
        if add_bias_kv:  # xavier_normal_ of a (1, 1, E) tensor: std sqrt(1/E)
            std = math.sqrt(1.0 / E)
            self.bias_k = parameter("bias_k", init.normal((1, 1, E), rng, std, dtype=dt))
            self.bias_v = parameter("bias_v", init.normal((1, 1, E), rng, std, dtype=dt))
        else:
            self.bias_k = self.bias_v = None
        self.out_proj = Linear(E, E, bias=bias, rng=rng, dtype=dt)
        if bias:
            self.out_proj.bias.value = init.zeros(E, dtype=dt)
        if self.dropout > 0.0:
            self.register_buffer("rng", ops.rng_state(int(rng.integers(0, 2**62)), name="rng"))

    def _projections(self) -> list[tuple[Tensor, Tensor | None]]:
        """(weight, bias) of the q, k and v projections: column blocks of the packed ones."""
        E = self.embed_dim
        biases = ([self.in_proj_bias[i * E:(i + 1) * E] for i in range(3)]
                  if self.in_proj_bias is not None else [None] * 3)
        if self._qkv_same_embed_dim:
            weights = [self.in_proj_weight[:, i * E:(i + 1) * E] for i in range(3)]
        else:
            weights = [self.q_proj_weight, self.k_proj_weight, self.v_proj_weight]
        return list(zip(weights, biases))

    def _batch_first(self, x: Tensor, what: str, width: int, batched: bool) -> Tensor:
        """x as (N, T, width)."""
        if x.ndim != (3 if batched else 2) or not maybe_equal(x.shape[-1], width):
            layout = ("(N, T, {})" if self.batch_first else "(T, N, {})") if batched else "(T, {})"
            raise ShapeError(f"MultiheadAttention: {what} must be {layout.format(width)} like the "
                             f"query's layout, got {tuple(x.shape)}")
        if not batched:
            return ops.reshape(x, (1,) + tuple(x.shape))
        return x if self.batch_first else ops.transpose(x, (1, 0, 2))

    def _heads(self, x: Tensor) -> Tensor:
        """(N, T, E) -> (N, H, T, E/H)."""
        n, t = x.shape[0], x.shape[1]
        return ops.transpose(ops.reshape(x, (n, t, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def _masks(self, attn_mask, key_padding_mask, is_causal, n, L, S, dtype,
               batched: bool) -> Mask:
        """Both masks as one Mask broadcastable to (N, H, L, S)."""
        m = as_mask(attn_mask, dtype, "attn_mask", true_means="masked")
        H, batch = self.num_heads, (n if batched else 1)
        if attn_mask is not None:
            shape = shape_of(attn_mask)
            if len(shape) == 3:  # (N * heads, L, S) -> (N, heads, L, S)
                _require(shape, (batch * H, L, S), "a 3-d attn_mask (N*num_heads, L, S)")

                def split(part):
                    if part is None:
                        return None
                    if isinstance(part, np.ndarray) and isinstance(batch, (int, np.integer)):
                        return part.reshape((batch, H) + part.shape[1:])
                    if isinstance(part, np.ndarray):  # N symbolic: N * H == shape[0]
                        part = ops.constant(part)  # is the call's check, after the reshape
                    return ops.reshape(part, (batch, H) + shape[1:])
                m = Mask(split(m.keep), split(m.bias))
            elif len(shape) == 2:
                _require(shape, (L, S), "a 2-d attn_mask (L, S)")
            else:
                raise ShapeError(f"attn_mask must be (L, S) or (N*num_heads, L, S), got {shape}")
        elif is_causal:
            m = causal_mask(L, S)
        if key_padding_mask is not None:
            _require(shape_of(key_padding_mask), (n, S) if batched else (S,),
                     "key_padding_mask (N, S), or (S,) for an unbatched query,")
            kpm = as_mask(key_padding_mask, dtype, "key_padding_mask", true_means="masked")
            if batched:  # (N, S) -> (N, 1, 1, S)

                def widen(part):
                    if part is None or (isinstance(part, np.ndarray) and part.ndim != 2):
                        return part
                    shape = (part.shape[0], 1, 1, part.shape[1])
                    return (part.reshape(shape) if isinstance(part, np.ndarray)
                            else ops.reshape(part, shape))
                kpm = Mask(widen(kpm.keep), widen(kpm.bias))
            m = combine(m, kpm)
        return m

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask=None,
                need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False):
        """Returns ``(output, weights)``; see the class docstring."""
        batched = query.ndim == 3
        q_in = self._batch_first(query, "query", self.embed_dim, batched)
        k_in = self._batch_first(key, "key", self.kdim, batched)
        v_in = self._batch_first(value, "value", self.vdim, batched)
        for given, x, what in ((key, k_in, "key"), (value, v_in, "value")):
            if not _same_batch(x.shape[0], q_in.shape[0]):  # PyTorch's check: no broadcasting
                raise ShapeError(f"MultiheadAttention: the {what}'s batch size {x.shape[0]} "
                                 f"differs from the query's {q_in.shape[0]} (shapes "
                                 f"{tuple(query.shape)} and {tuple(given.shape)})")
        if not maybe_equal(k_in.shape[1], v_in.shape[1]):
            raise ShapeError(f"MultiheadAttention: key and value must have the same length S, "
                             f"got shapes {tuple(key.shape)} and {tuple(value.shape)}")
        (wq, bq), (wk, bk), (wv, bv) = self._projections()
        q, k, v = F.linear(q_in, wq, bq), F.linear(k_in, wk, bk), F.linear(v_in, wv, bv)
        n, L, S = q.shape[0], q.shape[1], k.shape[1]
        mask = self._masks(attn_mask, key_padding_mask, is_causal, n, L, S, q.dtype, batched)
        if self.bias_k is not None:  # one more key and value, learned
            k = ops.concat([k, ops.broadcast_to(self.bias_k, (n, 1, self.embed_dim))], axis=1)
            v = ops.concat([v, ops.broadcast_to(self.bias_v, (n, 1, self.embed_dim))], axis=1)
            mask = _pad_keys(mask)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if self.add_zero_attn:  # one more key and value, zero
            zeros = ops.broadcast_to(ops.constant(np.zeros((1, 1, 1, self.head_dim), q.dtype),
                                                  graph=q.graph),
                                     (n, self.num_heads, 1, self.head_dim))
            k, v = ops.concat([k, zeros], axis=2), ops.concat([v, zeros], axis=2)
            mask = _pad_keys(mask)
        p = self.dropout if self.training else 0.0
        out, weights = attention(q, k, v, mask, dropout_p=p,
                                 dropout_state=getattr(self, "rng", None))
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (n, L, self.embed_dim))
        out = self.out_proj(out)
        if not batched:
            out = ops.reshape(out, tuple(out.shape[1:]))
        elif not self.batch_first:
            out = ops.transpose(out, (1, 0, 2))
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = ops.mean(weights, axis=1)
        return out, (weights if batched else ops.reshape(weights, tuple(weights.shape[1:])))

    def extra_repr(self) -> str:
        extra = f", dropout={self.dropout}" if self.dropout else ""
        extra += ", batch_first=True" if self.batch_first else ""
        return f"{self.embed_dim}, num_heads={self.num_heads}{extra}"
