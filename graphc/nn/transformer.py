"""The Transformer encoder: ``TransformerEncoderLayer`` and ``TransformerEncoder`` (PyTorch's
arguments, layouts, state keys and initialization) and ``PositionalEncoding``.

A layer is self-attention and a two-layer feed-forward block, each wrapped in a residual
connection and a layer norm — after the residual sum (``norm_first=False``, the original
"post-LN" layer) or before the block (``norm_first=True``, "pre-LN", which trains more
easily without a learning-rate warm-up). Weights are stored for ``x @ W`` (the transpose of
PyTorch's), like every graphc layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from .. import init, ops
from ..errors import GraphError, ShapeError
from ..ir.tensor import Tensor
from . import functional as F
from .attention import MultiheadAttention
from .layers import Dropout, Linear
from .module import Module, Sequential
from .norm import LayerNorm

__all__ = ["PositionalEncoding", "TransformerEncoder", "TransformerEncoderLayer"]


def _activation_function(activation) -> Callable[[Tensor], Tensor]:
    """"relu", "gelu" (the exact erf form, ``gc.ops.gelu``) or a callable on tensors."""
    if isinstance(activation, str):
        if activation == "relu":
            return ops.relu
        if activation == "gelu":
            gelu = getattr(ops, "gelu", None)
            if gelu is None:
                raise GraphError("activation='gelu' needs gc.ops.gelu, which this build of "
                                 "graphc lacks; pass 'relu' or a callable")
            return gelu
        raise GraphError(f"activation should be 'relu', 'gelu' or a callable, got "
                         f"{activation!r}")
    if callable(activation):
        return activation
    raise GraphError(f"activation should be 'relu', 'gelu' or a callable, got "
                     f"{type(activation).__name__}")


class TransformerEncoderLayer(Module):
    """One encoder layer, PyTorch's ``nn.TransformerEncoderLayer``::

        norm_first=False:  x = norm1(x + sa(x));        x = norm2(x + ff(x))
        norm_first=True:   x = x + sa(norm1(x));        x = x + ff(norm2(x))
        sa(x) = dropout1(self_attn(x, x, x)),  ff(x) = dropout2(linear2(dropout(act(linear1(x)))))

    ``layer(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``: src (T, N, d) —
    (N, T, d) with ``batch_first`` — or unbatched (T, d); the masks are
    ``MultiheadAttention``'s ``attn_mask`` and ``key_padding_mask`` (bool True = not
    allowed, or float added); ``is_causal`` without a mask applies the causal mask.
    `activation`: "relu", "gelu" (exact, when ``gc.ops`` has ``gelu``) or a callable (a
    function or a module; a module becomes the child ``activation``).

    State keys as PyTorch's (``self_attn.in_proj_weight``, ``linear1.weight``,
    ``norm1.weight``...) plus the dropout layers' random states (``dropout.rng``,
    ``dropout1.rng``, ``dropout2.rng``, and ``self_attn.rng`` when ``dropout > 0``): load a
    PyTorch ``state_dict`` (2-d weights transposed) with ``load_state(..., strict=False)``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1, activation: str | Callable = "relu",
                 layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, rng: init.RngLike = None, *,
                 dtype="float32") -> None:
        super().__init__()
        rng, dt = init.as_rng(rng), init.float_dtype(dtype)
        self._act = _activation_function(activation)
        self.d_model, self.nhead = int(d_model), int(nhead)
        self.dim_feedforward, self.batch_first = int(dim_feedforward), bool(batch_first)
        self.norm_first = bool(norm_first)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, rng=rng, dtype=dt)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, rng=rng, dtype=dt)
        self.dropout = Dropout(dropout, rng=rng)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, rng=rng, dtype=dt)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dt)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dt)
        self.dropout1 = Dropout(dropout, rng=rng)
        self.dropout2 = Dropout(dropout, rng=rng)
        if isinstance(activation, Module):
            self.activation = activation
        self.activation_name = activation if isinstance(activation, str) else \
            getattr(activation, "__name__", type(activation).__name__)

    def _sa_block(self, x: Tensor, attn_mask, key_padding_mask, is_causal: bool) -> Tensor:
        out, _ = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                need_weights=False, is_causal=is_causal)
        return self.dropout1(out)

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(self._act(self.linear1(x)))))

    def forward(self, src: Tensor, src_mask=None, src_key_padding_mask=None,
                is_causal: bool = False) -> Tensor:
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, nhead={self.nhead}, "
                f"dim_feedforward={self.dim_feedforward}, activation={self.activation_name}, "
                f"norm_first={self.norm_first}")


class TransformerEncoder(Module):
    """A stack of ``num_layers`` copies of `encoder_layer` (PyTorch's ``nn.TransformerEncoder``:
    the copies start with its weights; state keys ``layers.0.self_attn.in_proj_weight``...),
    then an optional final `norm` (a pre-LN stack needs one).

    Each copy is a new layer built with `encoder_layer`'s constructor arguments, its
    parameters set to `encoder_layer`'s; its dropout random states are its own, so the layers
    draw different masks. ``encoder(src, mask=None, src_key_padding_mask=None,
    is_causal=False)`` passes the masks to every layer.
    """

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int,
                 norm: Module | None = None) -> None:
        super().__init__()
        if not isinstance(encoder_layer, TransformerEncoderLayer):
            raise GraphError(f"TransformerEncoder takes a TransformerEncoderLayer, got "
                             f"{type(encoder_layer).__name__}")
        if int(num_layers) < 1:
            raise GraphError(f"num_layers must be at least 1, got {num_layers}")
        self.num_layers = int(num_layers)
        weights = {k: p.value for k, p in encoder_layer.named_parameters()}
        # the layer's arguments without its `rng`: each copy seeds its dropout states afresh
        # (from the gc.manual_seed sequence), then takes the layer's weights
        bound = inspect.signature(type(encoder_layer).__init__).bind(
            encoder_layer, *encoder_layer._config[0], **encoder_layer._config[1])
        bound.arguments.pop("rng", None)
        copies = [type(encoder_layer)(*bound.args[1:], **bound.kwargs)
                  .load_state(weights, strict=False) for _ in range(self.num_layers)]
        for c in copies:
            c.train(encoder_layer.training)
        self.layers = Sequential(*copies)
        self.norm = norm
        # a saved encoder is rebuilt from its first layer (in the tree, so ``.to`` updates it)
        self.__dict__["_config"] = ((copies[0], self.num_layers),
                                    {"norm": norm} if norm is not None else {})

    def forward(self, src: Tensor, mask=None, src_key_padding_mask=None,
                is_causal: bool = False) -> Tensor:
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=is_causal)
        return x if self.norm is None else self.norm(x)

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}"


class PositionalEncoding(Module):
    """Add the sinusoidal position table (``F.sinusoidal_positional_encoding``) to a sequence,
    then dropout — the module of PyTorch's Transformer tutorial, without its saved buffer.

    x (T, N, d_model) — (N, T, d_model) with ``batch_first`` — or (T, d_model); T must be static
    and at most `max_len`. The table is computed with NumPy while the graph is built and
    enters it as a constant: no parameter, and no state key (it depends only on the sizes).
    """

    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000,
                 batch_first: bool = False, rng: init.RngLike = None) -> None:
        super().__init__()
        self.d_model, self.max_len, self.batch_first = int(d_model), int(max_len), bool(batch_first)
        self.dropout = Dropout(dropout, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        axis = 1 if self.batch_first and x.ndim == 3 else 0
        if x.ndim not in (2, 3) or x.shape[-1] != self.d_model:
            raise ShapeError(f"PositionalEncoding expects (T, N, {self.d_model}), "
                             f"(N, T, {self.d_model}) with batch_first, or (T, {self.d_model}); "
                             f"got {tuple(x.shape)}")
        T = x.shape[axis]
        if not isinstance(T, int) or T > self.max_len:
            raise ShapeError(f"PositionalEncoding needs a static sequence length of at most "
                             f"max_len={self.max_len}, got {T}")
        table = F.sinusoidal_positional_encoding(T, self.d_model, dtype=x.dtype)
        if x.ndim == 3:
            table = table[:, None, :] if axis == 0 else table[None]
        return self.dropout(x + table)

    def extra_repr(self) -> str:
        return f"{self.d_model}, max_len={self.max_len}"
