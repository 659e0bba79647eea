"""ONNX Attention (opsets 23-25), composed from graphc's matmul, reductions and selects.

Why composed: every variant the op allows — 3-d inputs with head counts, grouped-query
heads, a past key/value cache, float or boolean masks shorter than the keys, causal and
sliding-window masks aligned to the cache (or, per batch, to ``nonpad_kv_seqlen``), softcap,
the four ``qk_matmul_output_mode`` outputs and ``softmax_precision`` — is a few tensors of
biases around two matmuls, and composition keeps it differentiable and native on every
backend. Fully masked rows give zeros, as ONNX's reference and function body.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..ir.tensor import Tensor
from . import dtypes
from .ops_math import const_like
from .table import onnx_op


def _heads(x: Tensor, heads: int) -> Tensor:
    """(B, S, H*D) -> (B, H, S, D)."""
    b, s, hidden = x.shape
    return ops.transpose(ops.reshape(x, (b, s, heads, hidden // heads)), (0, 2, 1, 3))


def _repeat_heads(x: Tensor, reps: int) -> Tensor:
    """np.repeat(x, reps, axis=1) for (B, H, S, D): each head `reps` times in a row."""
    b, h, s, d = x.shape
    wide = ops.broadcast_to(ops.reshape(x, (b, h, 1, s, d)), (b, h, reps, s, d))
    return ops.reshape(wide, (b, h * reps, s, d))


def _bias_of(allowed, dtype) -> Tensor:
    """0 where allowed, -inf elsewhere (a known bool array or a bool tensor)."""
    if isinstance(allowed, np.ndarray):
        return ops.constant(np.where(allowed, 0, -np.inf).astype(dtype), dtype=dtype)
    zero = ops.constant(np.zeros((), dtype), dtype=dtype)
    return ops.where(allowed, zero, ops.constant(np.asarray(-np.inf, dtype), dtype=dtype))


def _frontier(q: int, kv: int, offset, left: int, right: int, causal: bool):
    """Which key j a query i may see: j <= i + offset (causal) and the window around it.
    A scalar offset gives a known (q, kv) array; a per-batch offset tensor (B,) a bool
    tensor (B, 1, q, kv)."""
    i = np.arange(q).reshape(q, 1)
    j = np.arange(kv).reshape(1, kv)
    if not isinstance(offset, Tensor):
        diff = i + int(offset) - j
        allowed = np.ones((q, kv), dtype=bool)
    else:
        b = offset.shape[0]
        pos = ops.reshape(offset, (b, 1, 1, 1)) + ops.constant(i.reshape(1, 1, q, 1))
        diff = pos - ops.constant(j.reshape(1, 1, 1, kv))
        allowed = None
    conds = []
    if causal:
        conds.append((diff, ">=", 0))
    if left >= 0:
        conds.append((diff, "<=", left))
    if right >= 0:
        conds.append((diff, ">=", -right))
    for d, rel, bound in conds:
        if isinstance(d, np.ndarray):
            allowed &= (d >= bound) if rel == ">=" else (d <= bound)
        else:
            c = (ops.greater_equal(d, const_like(d, bound)) if rel == ">=" else
                 ops.less_equal(d, const_like(d, bound)))
            allowed = c if allowed is None else ops.where(allowed, c, ops.constant(
                np.asarray(False)))
    return allowed


@onnx_op("Attention")
def _attention(ctx, q, k, v, attn_mask=None, past_key=None, past_value=None,
               nonpad_kv_seqlen=None):
    q, k, v = ctx.tensor(q), ctx.tensor(k), ctx.tensor(v)
    for t in (q, k, v):
        if t.dtype.kind != "f":
            ctx.fail(f"input of type {t.dtype} is not supported (float32/float64 only)")
    dtype = q.dtype
    rank = q.ndim
    if (past_key is None) != (past_value is None):
        ctx.fail("past_key and past_value must be given together")
    if nonpad_kv_seqlen is not None and past_key is not None:
        ctx.fail("nonpad_kv_seqlen cannot be combined with a past cache")
    q_heads, kv_heads = ctx.attr("q_num_heads", None), ctx.attr("kv_num_heads", None)
    if rank == 3:
        if q_heads is None or kv_heads is None:
            ctx.fail("3-d inputs need q_num_heads and kv_num_heads")
        q, k, v = _heads(q, int(q_heads)), _heads(k, int(kv_heads)), _heads(v, int(kv_heads))
    elif rank != 4:
        ctx.fail(f"inputs of rank {rank} are not supported (3 or 4)")
    scale = ctx.attr("scale", None)
    scale = 1 / np.sqrt(q.shape[3]) if scale is None else float(scale)
    root = const_like(q, np.sqrt(scale))
    if past_key is not None:
        k = ops.concat([ctx.tensor(past_key), k], 2)
        v = ops.concat([ctx.tensor(past_value), v], 2)
    present_key, present_value = k, v
    nq, nkv = q.shape[2], k.shape[2]
    if not isinstance(nq, int) or not isinstance(nkv, int):
        ctx.fail("symbolic sequence lengths are not supported")

    # -- the bias: mask, causal frontier, sliding window, key padding -------------------
    is_causal = bool(ctx.attr("is_causal", 0))
    left, right = int(ctx.attr("left_window_size", -1)), int(ctx.attr("right_window_size", -1))
    bias = None
    if attn_mask is not None:
        mask = ctx.tensor(attn_mask)
        short = nkv - mask.shape[-1]
        if short > 0:  # keys past the mask are masked out
            widths = [(0, 0)] * (mask.ndim - 1) + [(0, short)]
            inside = np.pad(np.ones(tuple(mask.shape), dtype=bool), widths)
            mask = ops.where(ops.constant(inside), ops.pad(mask, widths),
                             ops.constant(np.asarray(False)) if mask.dtype == bool else
                             ops.constant(np.asarray(-np.inf, mask.dtype), dtype=mask.dtype))
        bias = _bias_of(mask, dtype) if mask.dtype == bool else (
            mask if mask.dtype == dtype else ops.cast(mask, dtype))
    nonpad = None
    if nonpad_kv_seqlen is not None:
        nonpad = ctx.tensor(nonpad_kv_seqlen)
        if nonpad.dtype.kind not in "iu":
            ctx.fail("nonpad_kv_seqlen must be an integer tensor")
    if is_causal or left >= 0 or right >= 0:
        if nonpad is not None:
            offset = nonpad - ops.constant(np.asarray(nq, nonpad.dtype))
        else:
            offset = 0 if past_key is None else ctx.tensor(past_key).shape[2]
        allowed = _frontier(nq, nkv, offset, left, right, is_causal)
        frontier = _bias_of(allowed, dtype)
        bias = frontier if bias is None else bias + frontier
    if nonpad is not None:
        b = nonpad.shape[0]
        keep = ops.less(ops.constant(np.arange(nkv, dtype=nonpad.dtype).reshape(1, 1, 1, nkv)),
                        ops.reshape(nonpad, (b, 1, 1, 1)))
        padding = _bias_of(keep, dtype)
        bias = padding if bias is None else bias + padding

    # -- grouped-query heads, scores, softmax ---------------------------------------------
    hq, hk = q.shape[1], k.shape[1]
    if hq != hk:
        if hq % hk or v.shape[1] != hk:
            ctx.fail(f"{hq} query heads do not group over {hk} key/value heads")
        k, v = _repeat_heads(k, hq // hk), _repeat_heads(v, hq // hk)
    scores = ops.matmul(q * root, ops.transpose(k * root, (0, 1, 3, 2)))
    softcap = float(ctx.attr("softcap", 0.0))
    if softcap > 0:
        scores = ops.tanh(scores / const_like(scores, softcap)) * const_like(scores, softcap)
    with_bias = scores if bias is None else scores + bias
    mode = int(ctx.attr("qk_matmul_output_mode", 0))
    if mode not in (0, 1, 2, 3):
        ctx.fail(f"qk_matmul_output_mode={mode} is not supported")
    qk_out = with_bias if mode == 2 else scores
    precision = ctx.attr("softmax_precision", None)
    x = with_bias
    if precision is not None:
        x = ops.cast(x, dtypes.to_numpy(int(precision), ctx.where()))
    # softmax whose fully masked rows (all -inf) give 0 rather than NaN
    top = ops.max(x, -1, keepdims=True)
    none_left = ops.less(top, const_like(top, np.finfo(top.dtype).min))  # top is -inf
    safe = ops.where(none_left, const_like(top, 0), top)
    e = ops.exp(x - safe)
    total = ops.sum(e, -1, keepdims=True)
    total = ops.where(ops.equal(total, const_like(total, 0)), const_like(total, 1), total)
    probs = e / total
    if bias is not None:
        bias_top = ops.max(bias, -1, keepdims=True)
        masked_row = ops.less(bias_top, const_like(bias_top, np.finfo(bias_top.dtype).min))
        probs = ops.where(masked_row, const_like(probs, 0), probs)
    if mode == 3:
        qk_out = probs
    if probs.dtype != dtype:
        probs = ops.cast(probs, dtype)
    if qk_out.dtype != dtype:
        qk_out = ops.cast(qk_out, dtype)
    y = ops.matmul(probs, v)
    if rank == 3:
        b, h, s, d = y.shape
        y = ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (b, s, h * d))
    return [y, present_key, present_value, qk_out]


@onnx_op("RotaryEmbedding")
def _rotary_embedding(ctx, x, cos_cache, sin_cache, position_ids=None):
    """Rotate the first ``rotary_embedding_dim`` features of every head by the cached angles
    (halves, or even/odd pairs when ``interleaved``), as ONNX's reference."""
    x = ctx.tensor(x)
    cos, sin = ctx.tensor(cos_cache), ctx.tensor(sin_cache)
    if x.dtype.kind != "f":
        ctx.fail(f"input of type {x.dtype} is not supported (float32/float64 only)")
    shape = tuple(x.shape)
    if x.ndim == 4:  # (B, H, S, D) -> (B, S, H, D)
        t = ops.transpose(x, (0, 2, 1, 3))
    elif x.ndim == 3:
        heads = int(ctx.attr("num_heads", 0))
        if not heads:
            ctx.fail("3-d inputs need num_heads")
        b, s, hidden = shape
        t = ops.reshape(x, (b, s, heads, hidden // heads))
    else:
        ctx.fail(f"inputs of rank {x.ndim} are not supported (3 or 4)")
    d = t.shape[3]
    rot = int(ctx.attr("rotary_embedding_dim", 0)) or d
    half = rot // 2
    if position_ids is not None:
        ids = ctx.tensor(position_ids)
        cos, sin = ops.take(cos, ids), ops.take(sin, ids)  # (B, S, rot/2)
    if cos.shape[-1] != half or sin.shape[-1] != half:
        ctx.fail(f"the caches' last dim must be rotary_embedding_dim/2 = {half}")
    cos = ops.reshape(cos, tuple(cos.shape[:2]) + (1, half))
    sin = ops.reshape(sin, tuple(sin.shape[:2]) + (1, half))
    interleaved = bool(ctx.attr("interleaved", 0))
    if interleaved:
        x1, x2 = t[..., 0:rot:2], t[..., 1:rot:2]
    else:
        x1, x2 = t[..., :half], t[..., half:rot]
    real = cos * x1 - sin * x2
    imag = sin * x1 + cos * x2
    if interleaved:
        turned = ops.reshape(ops.stack([real, imag], -1), tuple(t.shape[:3]) + (rot,))
    else:
        turned = ops.concat([real, imag], 3)
    out = turned if rot == d else ops.concat([turned, t[..., rot:]], 3)
    return ops.reshape(out, shape) if x.ndim == 3 else ops.transpose(out, (0, 2, 1, 3))
