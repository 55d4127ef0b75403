"""The pre-norm transformer block (Vaswani et al. 2017; pre-norm as GPT-2), and its parts.

    x = x + attn(norm1(x))     SelfAttention: fused qkv, F.scaled_dot_product_attention, proj
    x = x + mlp(norm2(x))      FeedForward: GELU (4d hidden) or SwiGLU (~8/3 d hidden)

One block serves three models (layerwise.models.transformer): a causal language model (`gpt`),
a vision transformer over image patches (`vit`) and the same ViT over log-mel spectrogram
patches (`audio-transformer`). Only the attention mask (causal or not) and the position code
(learned table in the model, or RoPE inside attention) differ between them.

Costs sit next to the blocks (`transformer_block_cost`), under the convention of
`layerwise.nn.layers`: 2 FLOPs per multiply-add of every matmul. Attention adds the score and
value matmuls, 2 * 2 * T^2 * d per layer, counted in full even when causal (FlopCounterMode
counts SDPA the same way: it does not know about the mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .activations import get_activation, unknown_choice_error
from .norms import NORM_EPS

__all__ = [
    "FEEDFORWARDS",
    "TRANSFORMER_NORMS",
    "FeedForward",
    "RotaryEmbedding",
    "SelfAttention",
    "TransformerBlock",
    "feedforward_hidden",
    "make_transformer_norm",
    "qkv_to_head_major",
    "transformer_block_cost",
    "transformer_norm_params",
]

TRANSFORMER_NORMS: tuple[str, ...] = ("layernorm", "rmsnorm")
FEEDFORWARDS: tuple[str, ...] = ("gelu", "swiglu")


def make_transformer_norm(name: str, d_model: int, *, bias: bool = True, eps: float = NORM_EPS) -> nn.Module:
    """A norm over the last dim: "layernorm" (Ba et al. 2016; `bias` toggles its beta, as
    nanoGPT's `bias` flag does) or "rmsnorm" (Zhang & Sennrich 2019; gain only). `eps` is added
    to the variance (NORM_EPS = 1e-5, PyTorch's default; timm's ViTs use 1e-6).
    """
    if name == "layernorm":
        return nn.LayerNorm(d_model, eps=eps, bias=bias)
    if name == "rmsnorm":
        return nn.RMSNorm(d_model, eps=eps)
    raise unknown_choice_error("transformer norm", name, TRANSFORMER_NORMS)


def transformer_norm_params(name: str, d_model: int, *, bias: bool = True) -> int:
    """Learnable parameters of `make_transformer_norm(name, d_model, bias=bias)`."""
    if name not in TRANSFORMER_NORMS:
        raise unknown_choice_error("transformer norm", name, TRANSFORMER_NORMS)
    return d_model * (2 if name == "layernorm" and bias else 1)


def feedforward_hidden(d_model: int, kind: str, hidden: int | None = None) -> int:
    """Hidden width of a FeedForward: `hidden` if given, else 4 d (GELU) or 8/3 d rounded up to
    a multiple of 8 (SwiGLU: three matrices instead of two, so about the same parameters as
    4 d with two; Shazeer 2020, LLaMA)."""
    if kind not in FEEDFORWARDS:
        raise unknown_choice_error("feed-forward kind", kind, FEEDFORWARDS)
    if hidden is not None:
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1 (or None for the default), got {hidden}")
        return hidden
    if kind == "gelu":
        return 4 * d_model
    return 8 * -(-d_model // 3)  # = 8 * ceil(8 d / 3 / 8), in integers


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021), applied to q and k inside attention.

    Channel pairs (i, i + hs/2) of each head are rotated by the angle pos * base^(-2i/hs) (the
    "rotate half" layout of GPT-NeoX / LLaMA), so q.k depends on the relative position only.
    The cos/sin tables are non-persistent buffers (not in state_dict), built on demand for the
    longest sequence seen, and rebuilt when the device changes: after `to_empty` from the meta
    device their contents would otherwise be garbage.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head size, got {head_dim}; "
                             f"choose n_embd / n_head even")
        self.head_dim, self.base = head_dim, base
        self.register_buffer("cos", torch.empty(0, head_dim // 2), persistent=False)
        self.register_buffer("sin", torch.empty(0, head_dim // 2), persistent=False)
        self._built_on: torch.device | None = None  # device the tables were computed on

    def _tables(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        stale = self._built_on != device or self.cos.device != device or self.cos.dtype != torch.float32
        if stale or self.cos.shape[0] < seq_len:
            n = 1 << max(seq_len - 1, 0).bit_length()  # next power of 2: generate() grows T by 1
            half = self.head_dim // 2
            inv_freq = self.base ** (-torch.arange(half, device=device, dtype=torch.float32) / half)
            angles = torch.outer(torch.arange(n, device=device, dtype=torch.float32), inv_freq)
            self.cos, self.sin = angles.cos(), angles.sin()  # (n, hs/2)
            self._built_on = device
        return self.cos[:seq_len], self.sin[:seq_len]

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        # q, k: (B, nh, T, hs) at positions offset .. offset + T - 1 -> rotated, same shape and
        # dtype (rotation computed in float32); offset > 0 when earlier positions are in a KV cache
        T = q.shape[-2]
        cos, sin = self._tables(offset + T, q.device)
        cos, sin = cos[offset:], sin[offset:]
        return _rotate_half(q, cos, sin), _rotate_half(k, cos, sin)


def _rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


def qkv_to_head_major(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder a fused qkv weight (3 d, d_in) or bias (3 d,) from rows (all q | all k | all v),
    the layout of timm's ViT `attn.qkv` and of layerwise files before head-major `wqkv`, to the
    head-major rows of `SelfAttention.wqkv` (head 0: q k v, head 1: q k v, ...). Returns a new
    contiguous tensor of the same shape.

    Raises:
        ValueError: the first dim is not 3 * n_head * head_size for some head size.
    """
    rows = t.shape[0]
    if n_head < 1 or rows % (3 * n_head):
        raise ValueError(f"a fused qkv tensor of shape {tuple(t.shape)} cannot hold 3 x {n_head} heads: "
                         f"its first dim must be a multiple of 3 * n_head = {3 * n_head}")
    hs = rows // (3 * n_head)
    # (3, nh, hs, ...) -> (nh, 3, hs, ...) -> back to (3 d, ...)
    return t.reshape(3, n_head, hs, *t.shape[1:]).transpose(0, 1).reshape(t.shape).contiguous()


class SelfAttention(nn.Module):
    """Multi-head self-attention: fused qkv Linear (wqkv) -> (RoPE) -> SDPA -> output projection.

    Args:
        d_model: width d of x (B, T, d); n_head must divide it (head size hs = d / n_head).
        n_head: number of heads.
        causal: position t attends to positions <= t only (language models).
        rotary: apply RoPE to q and k (then the model needs no position table).
        dropout: on the attention weights and on the output (the residual branch), training only.
        bias: bias in the qkv and output Linears.
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        *,
        causal: bool = False,
        rotary: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if n_head < 1 or d_model % n_head:
            raise ValueError(f"n_head must divide n_embd: got n_embd={d_model}, n_head={n_head}; "
                             f"choose n_head among the divisors of {d_model}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.n_head, self.causal, self.dropout = n_head, causal, dropout
        self.head_dim = d_model // n_head
        # rows head-major: (head 0: q k v, head 1: q k v, ...), so a contiguous slice of heads is
        # a contiguous slice of rows (what tensor parallelism's column split hands each rank)
        self.wqkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)  # residual output projection
        self.rotary = RotaryEmbedding(d_model // n_head) if rotary else None
        self.resid_drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, T, d); ``mask`` (B, T) bool, True for the positions that take part as keys (the
        real tokens of padded sequences), or None for all of them.

        ``cache`` (causal attention, inference): a dict this layer keeps its keys and values in,
        "k" and "v" (B, nh, T_past, hs), and "pos", the position of the next token. An empty dict
        takes a whole prompt (T tokens); after that, one new token per call (T = 1) attends to
        the cached positions and itself, and its key and value are appended: sampling costs one
        token's work per step instead of the whole context's (the KV cache of Pope et al. 2022,
        "Efficiently Scaling Transformer Inference"). A caller may drop the oldest cached
        positions (a sliding window); "pos" keeps counting, so RoPE angles stay those of the
        true positions."""
        B, T, _ = x.shape
        if mask is not None and self.causal:
            raise ValueError("a causal attention takes no padding mask (its sequences are never padded)")
        past = 0 if cache is None or "k" not in cache else cache["k"].shape[2]
        pos = 0 if cache is None else int(cache.get("pos", 0))  # RoPE position of x's first token
        if cache is not None and (not self.causal or (past and T != 1)):
            raise ValueError("a KV cache serves causal attention, filled by a prompt and then one token per "
                             f"call; got {T} tokens after {past} cached ones")
        # -1 heads: all of them, or this rank's share when tensor parallelism split wqkv
        qkv = self.wqkv(x).view(B, T, -1, 3, self.head_dim)  # (B, T, nh, 3, hs)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # 3 x (B, nh, T, hs)
        if self.rotary is not None:
            q, k = self.rotary(q, k, offset=pos)
        if cache is not None:
            if past:
                k, v = torch.cat((cache["k"], k), dim=2), torch.cat((cache["v"], v), dim=2)  # (B, nh, past+1, hs)
            cache["k"], cache["v"], cache["pos"] = k, v, pos + T
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if mask is None else mask[:, None, None, :],  # (B, 1, 1, T): keys
            # one new query after cached keys sees them all: no causal mask (it would hide them)
            dropout_p=self.dropout if self.training else 0.0, is_causal=self.causal and not past
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, -1)  # re-assemble the heads: (B, T, nh * hs)
        return self.resid_drop(self.proj(y))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # files from earlier layerwise versions hold `qkv` with rows (all q | all k | all v):
        # reorder them head-major into `wqkv`, so old models load unchanged
        for kind in ("weight", "bias"):
            old = state_dict.pop(f"{prefix}qkv.{kind}", None)
            if old is not None:
                state_dict[f"{prefix}wqkv.{kind}"] = qkv_to_head_major(old, self.n_head)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class FeedForward(nn.Module):
    """Position-wise feed-forward network (the transformer's "MLP").

    kind="gelu":   w2(gelu(w1 x))              hidden 4 d by default (GPT-2)
    kind="swiglu": w2(silu(w1 x) * w3 x)       hidden 8/3 d rounded up to a multiple of 8
    Dropout on the output (the residual branch). Named FeedForward rather than MLP so it is not
    confused with the `mlp` model (layerwise.models.MLP).
    """

    def __init__(
        self,
        d_model: int,
        hidden: int | None = None,
        *,
        kind: str = "gelu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        hidden = feedforward_hidden(d_model, kind, hidden)
        self.kind = kind
        self.w1 = nn.Linear(d_model, hidden, bias=bias)
        self.w3 = nn.Linear(d_model, hidden, bias=bias) if kind == "swiglu" else None
        self.w2 = nn.Linear(hidden, d_model, bias=bias)  # residual output projection
        self.act = get_activation("silu" if kind == "swiglu" else "gelu")
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.w1(x))  # (B, T, hidden)
        if self.w3 is not None:
            h = h * self.w3(x)  # gated linear unit (Shazeer 2020)
        return self.drop(self.w2(h))  # (B, T, d)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)); (B, T, d) -> (B, T, d).

    Args:
        d_model, n_head, causal, rotary, dropout, bias: see `SelfAttention` (bias also toggles
            the FeedForward biases and the LayerNorm betas).
        mlp: "gelu" or "swiglu" (see `FeedForward`); hidden: its width (None: the default).
        norm: "layernorm" or "rmsnorm"; norm_eps: its eps (see `make_transformer_norm`).
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        *,
        causal: bool = False,
        rotary: bool = False,
        mlp: str = "gelu",
        hidden: int | None = None,
        norm: str = "layernorm",
        norm_eps: float = NORM_EPS,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = make_transformer_norm(norm, d_model, bias=bias, eps=norm_eps)
        self.attn = SelfAttention(d_model, n_head, causal=causal, rotary=rotary, dropout=dropout, bias=bias)
        self.norm2 = make_transformer_norm(norm, d_model, bias=bias, eps=norm_eps)
        self.mlp = FeedForward(d_model, hidden, kind=mlp, dropout=dropout, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, T, d) -> (B, T, d); ``mask`` (B, T) bool marks the real tokens of padded sequences;
        ``cache``: the attention's KV cache when sampling (see `SelfAttention.forward`)."""
        # the mask and cache go by keyword, and only when there is one: tensor parallelism's input
        # hooks count the positional inputs (one: x)
        h = self.norm1(x)
        if cache is not None:
            x = x + self.attn(h, cache=cache)
        else:
            x = x + (self.attn(h) if mask is None else self.attn(h, mask=mask))  # (B, T, d)
        return x + self.mlp(self.norm2(x))  # (B, T, d)


def transformer_block_cost(
    d_model: int,
    seq_len: int,
    *,
    mlp: str,
    norm: str,
    bias: bool,
    hidden: int | None = None,
) -> tuple[int, int]:
    """(parameters, forward FLOPs for one sequence of `seq_len` tokens) of a TransformerBlock.

    params = 4 d^2 (qkv, proj) + m d h (m = 2 GELU, 3 SwiGLU) + biases + 2 norms,
    FLOPs  = 2 T (4 d^2 + m d h) + 4 T^2 d   (the last term: q k^T and att v, all T^2 pairs).
    Neither depends on n_head or on RoPE (which has no parameters and no matmul).
    """
    d, t = d_model, seq_len
    h = feedforward_hidden(d, mlp, hidden)
    n_mats = 3 if mlp == "swiglu" else 2
    weights = 4 * d * d + n_mats * d * h
    biases = (3 * d + d) + ((n_mats - 1) * h + d) if bias else 0
    params = weights + biases + 2 * transformer_norm_params(norm, d, bias=bias)
    return params, 2 * t * weights + 4 * t * t * d
