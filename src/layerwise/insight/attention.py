"""Attention patterns of a transformer's heads: softmax(q k^T / sqrt(hs)) for one forward pass.

The blocks compute attention with ``F.scaled_dot_product_attention``, which never materializes
the weights; here a forward pre-hook catches the normalized input of the chosen block's
attention (and its padding mask), and the weights are recomputed from the same ``wqkv``
projection, the same RoPE rotation and the same causal/padding masks, so they are exactly the
ones the fused kernel applied (tests check this against the module's own output).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["attention_weights"]


def _weights(attn: nn.Module, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    B, T, _ = h.shape
    qkv = attn.wqkv(h).view(B, T, -1, 3, attn.head_dim)  # (B, T, nh, 3, hs): head-major rows
    q, k, _v = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # 3 x (B, nh, T, hs)
    if attn.rotary is not None:
        q, k = attn.rotary(q, k, offset=0)
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(attn.head_dim)  # (B, nh, T, T)
    if attn.causal:
        future = torch.ones(T, T, dtype=torch.bool, device=h.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))  # keys that are padding
    return scores.softmax(-1)


@torch.no_grad()
def attention_weights(model: nn.Module, forward: Any, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """Attention weights of every head of block ``layer`` of ``model.blocks`` on inputs x.

    ``forward(x)`` runs the model (e.g. the run's PixelModel for a ViT). Returns (B, n_head, T, T)
    float32: row t is how query t spreads its attention over the keys (rows sum to 1; zeros on
    masked keys and, for a causal model, on future positions). Raises ValueError when the model
    has no transformer blocks or ``layer`` is out of range (the message gives the valid range)."""
    blocks = getattr(model, "blocks", None)
    if not blocks or not all(hasattr(b, "attn") and hasattr(b.attn, "wqkv") for b in blocks):
        raise ValueError(f"a {type(model).__name__} model has no attention blocks: attention patterns are drawn "
                         f"for transformers (vit, audio-transformer, text-transformer, gpt).")
    if not -len(blocks) <= layer < len(blocks):
        raise ValueError(f"--layer {layer} is out of range: the model has {len(blocks)} blocks (0 .. "
                         f"{len(blocks) - 1}).")
    attn = blocks[layer].attn
    caught: dict[str, Any] = {}

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        caught["h"], caught["mask"] = args[0], kwargs.get("mask")

    handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        forward(x)
    finally:
        handle.remove()
    return _weights(attn, caught["h"], caught["mask"])
