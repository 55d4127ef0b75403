"""Transformers: one pre-norm block (`layerwise.nn.TransformerBlock`) used three ways.

    gpt                idx (B, T) -> wte (+ wpe) -> blocks (causal) -> ln_f -> fc -> (B, T, vocab)
    vit                x (B, C, H, W) -> patch conv -> (+ pos_embed) -> blocks -> ln_f -> pool -> fc
    audio-transformer  the `vit` factory on log-mel inputs (1, n_mels, frames): a patch is all
                       mel bands of one frame, so the tokens are time steps (patch_h=0, patch_w=1;
                       any clip length works, e.g. the 101 frames of a 1 s clip at a 10 ms hop)

`gpt` follows nanoGPT (karpathy/nanoGPT, model.py): GPT-2 layout, init normal(0, 0.02) with the
residual output projections scaled by 1/sqrt(2 n_layer), head tied to the token embedding.
`vit` follows Dosovitskiy et al. 2021 ("An Image is Worth 16x16 Words") with a mean-pooled or
[CLS] head. The trunk of every model is `blocks`, a ModuleList looped over in
`forward_features`, so per-block FSDP, activation checkpointing or compile is one loop.

Presets (each overridable, e.g. create_model("gpt-small", in_shape=(256,), num_classes=65, n_layer=4)):
  gpt, gpt-tiny      4 layers, 4 heads, 128 wide (nanoGPT README's CPU run)
  gpt-small          6 layers, 6 heads, 384 wide, dropout 0.2 (nanoGPT's shakespeare_char)
  vit                6 layers, 4 heads, 128 wide, 4x4 patches
  vit-tiny           4 layers, 4 heads, 128 wide, 4x4 patches
  vit-ti16, -s16, -b16  ViT-Ti/S/B/16: 12 layers, 3/6/12 heads, 192/384/768 wide, 16x16 patches, [CLS]
                     pool, LayerNorm eps 1e-6: timm's vit_*_patch16_224 (their weights: models/hub.py)
  audio-transformer  4 layers, 4 heads, 128 wide, patches of all mel bands x 1 frame
The GPT presets use bias=False, as nanoGPT's train.py does; the `gpt` family default keeps
GPT-2's biases (bias=True).

FLOPs: `flops_per_example` counts every matmul (2 per multiply-add), including attention's
q k^T and att v in full (T^2 pairs, causal or not), which is what FlopCounterMode reports for
SDPA on CUDA and on the meta device. (On CPU, torch 2.13's FlopCounterMode has no formula for
the fused CPU attention kernel and reports 0 for it; the tests count on the meta device.)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import nn

from ..nn import (
    FEEDFORWARDS,
    NORM_EPS,
    TRANSFORMER_NORMS,
    TransformerBlock,
    make_transformer_norm,
    transformer_block_cost,
    transformer_norm_params,
    unknown_choice_error,
)
from .base import Model
from .registry import register_model

__all__ = ["GPT", "POOLS", "ViT", "gpt", "vit"]

POOLS: tuple[str, ...] = ("mean", "cls")


def _check_trunk(n_layer: int, n_head: int, n_embd: int, mlp: str, norm: str, dropout: float) -> None:
    """The argument checks `gpt` and `vit` share (SelfAttention re-checks n_head | n_embd)."""
    for key, value in (("n_layer", n_layer), ("n_head", n_head), ("n_embd", n_embd)):
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    if n_embd % n_head:
        raise ValueError(f"n_head must divide n_embd: got n_embd={n_embd}, n_head={n_head}; "
                         f"choose n_head among the divisors of {n_embd}")
    if mlp not in FEEDFORWARDS:
        raise unknown_choice_error("mlp", mlp, FEEDFORWARDS)
    if norm not in TRANSFORMER_NORMS:
        raise unknown_choice_error("norm", norm, TRANSFORMER_NORMS)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def _init_transformer(model: Model, n_layer: int) -> None:
    """nanoGPT's init: Linear and Embedding weights normal(0, 0.02), biases 0; the two residual
    output projections of each block normal(0, 0.02 / sqrt(2 n_layer)) (GPT-2 paper: the
    residual stream sums 2 n_layer branches, so each is scaled to keep its variance fixed).
    Norms keep PyTorch's init (gain 1, bias 0); conv patch embeddings keep theirs."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
    for blk in model.blocks:
        for proj in (blk.attn.proj, blk.mlp.w2):
            nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))


# --------------------------------------------------------------------------------------------
# GPT: causal language model


class GPT(Model):
    """Causal language model; see the module docstring and `gpt` for the arguments.

    Input idx (B, T) int64 token ids, T <= block_size; output logits (B, T, num_classes) for the
    next token at every position. `num_features` = n_embd; `forward_head(.., pre_logits=True)`
    gives the final hidden states (B, T, n_embd).
    """

    def __init__(
        self,
        *,
        in_shape: tuple[int, ...],
        num_classes: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        mlp: str,
        norm: str,
        rotary: bool,
        dropout: float,
        bias: bool,
        tie_embeddings: bool,
        vocab_size: int,
    ) -> None:
        super().__init__()
        if len(in_shape) != 1:
            raise ValueError(f"gpt expects in_shape (block_size,), got {tuple(in_shape)!r}")
        _check_trunk(n_layer, n_head, n_embd, mlp, norm, dropout)
        vocab_size = vocab_size or num_classes  # 0: the vocabulary is the output classes
        if vocab_size < 1:
            raise ValueError("gpt needs a vocabulary: give num_classes = vocabulary size (or vocab_size > 0)")
        if tie_embeddings and num_classes != vocab_size:
            raise ValueError(f"tie_embeddings=True needs num_classes == vocab_size, got {num_classes} "
                             f"and {vocab_size}; pass tie_embeddings=False for a different head")
        self.in_shape = tuple(in_shape)
        self.block_size = in_shape[0]
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.mlp, self.norm, self.rotary, self.bias = mlp, norm, rotary, bias
        self.vocab_size, self.num_classes, self.num_features = vocab_size, num_classes, n_embd
        self.tie_embeddings = tie_embeddings

        self.wte = nn.Embedding(vocab_size, n_embd)  # token embedding
        # learned absolute positions (GPT-2); with RoPE the attention carries the positions
        self.wpe = None if rotary else nn.Embedding(self.block_size, n_embd)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.blocks = nn.ModuleList(
            TransformerBlock(n_embd, n_head, causal=True, rotary=rotary, mlp=mlp, norm=norm, dropout=dropout, bias=bias)
            for _ in range(n_layer)
        )
        self.ln_f = make_transformer_norm(norm, n_embd, bias=bias)
        # The LM head has no bias (nanoGPT); tied, it is the embedding matrix itself (Press &
        # Wolf 2017): one (vocab, n_embd) tensor, one set of gradients, counted once.
        self.fc = nn.Linear(n_embd, num_classes, bias=False) if num_classes else nn.Identity()
        if tie_embeddings:
            self.fc.weight = self.wte.weight
        _init_transformer(self, n_layer)

    def forward_features(self, x: torch.Tensor, cache: list[dict] | None = None) -> torch.Tensor:
        """x (B, T) token ids -> final hidden states (B, T, n_embd). ``cache``: one dict per block,
        the KV cache of sampling (empty dicts for the prompt, then one token per call); x then
        holds the positions after the cached ones."""
        if x.dim() != 2 or x.is_floating_point():
            raise ValueError(f"gpt expects token ids (B, T) of an integer dtype, got {x.dtype} "
                             f"{tuple(x.shape)}")
        past = cache[0]["k"].shape[2] if cache and "k" in cache[0] else 0
        T = x.shape[1]
        if past + T > self.block_size:
            raise ValueError(f"sequence length {past + T} exceeds block_size {self.block_size}; "
                             f"crop the input to its last {self.block_size} tokens")
        h = self.wte(x)  # (B, T, C)
        if self.wpe is not None:
            h = h + self.wpe(torch.arange(past, past + T, device=x.device))  # + (T, C)
        h = self.drop(h)
        for i, blk in enumerate(self.blocks):
            h = blk(h) if cache is None else blk(h, cache=cache[i])  # (B, T, C)
        return self.ln_f(h)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return feats if pre_logits else self.fc(feats)  # (B, T, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """New bias-free head with `num_classes` outputs (0: forward gives hidden states), untied
        from the embedding. `config` records vocab_size and tie_embeddings=False, so
        `create_model(**model.config)` still rebuilds this architecture."""
        vocab = self.vocab_size
        super().reset_classifier(num_classes)
        if num_classes:
            ref = self.wte.weight
            self.fc = nn.Linear(self.n_embd, num_classes, bias=False, device=ref.device, dtype=ref.dtype)
            nn.init.normal_(self.fc.weight, mean=0.0, std=0.02)
        self.tie_embeddings = False
        if self.config:
            self.config.update(vocab_size=vocab, tie_embeddings=False)

    # --- analytic costs ---------------------------------------------------------------------
    def _block_cost(self) -> tuple[int, int]:
        return transformer_block_cost(self.n_embd, self.block_size, mlp=self.mlp, norm=self.norm, bias=self.bias)

    def num_params(self, non_embedding: bool = False) -> int:
        """Learnable parameters. non_embedding=True leaves out the token and position embeddings
        (Kaplan et al. 2020's N); a tied head is the token embedding, so it is left out too,
        while an untied head counts as non-embedding."""
        d = self.n_embd
        embedding = self.vocab_size * d + (0 if self.rotary else self.block_size * d)
        head = 0 if self.tie_embeddings else self.num_classes * d
        rest = self.n_layer * self._block_cost()[0] + transformer_norm_params(self.norm, d, bias=self.bias) + head
        return rest if non_embedding else rest + embedding

    def flops_per_example(self) -> int:
        """Forward FLOPs for one sequence of block_size tokens: every matmul (qkv, proj, MLP,
        head) at 2 per multiply-add, plus attention's 4 T^2 d per layer. Embedding lookups are
        gathers, not matmuls, and count 0."""
        head = 2 * self.block_size * self.n_embd * self.num_classes
        return self.n_layer * self._block_cost()[1] + head

    def flops_per_token(self) -> int:
        """Training (forward + backward) FLOPs per token: 3x forward, i.e. 6 N + 12 n_layer T d
        with N the matmul parameters (Kaplan et al. 2020; nanoGPT's estimate_mfu)."""
        return 3 * self.flops_per_example() // self.block_size

    # --- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        finished: Callable[[torch.Tensor], torch.Tensor] | None = None,
        use_cache: bool = True,
        first_allowed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Extend idx (B, T) by up to `max_new_tokens` sampled tokens -> (B, T + n), n <= max_new_tokens.

        The context is cropped to the last block_size tokens. temperature 0 is greedy (argmax);
        otherwise logits / temperature, keep the `top_k` largest (if given), sample with
        torch.multinomial(generator=generator). Runs in eval mode (no dropout) and restores the
        previous mode. ``finished(idx)``, if given, is called after each new token with idx
        (B, T + i) and returns a (B,) bool tensor; sampling ends early once every row is finished
        (callers cut each row at its own end, e.g. a stop string). With ``use_cache`` the keys and
        values of earlier positions are kept (a KV cache), so a step costs one token's forward
        pass; while the sequence fits in block_size this gives the same tokens as recomputing
        (up to float rounding). Past block_size, a RoPE model keeps the last block_size - 1
        positions' keys and values (sliding-window attention, as Mistral 7B: each kept key was
        computed with its own full context, where recomputation would re-read the cropped window
        from its first token), and a model with learned positions recomputes the cropped context
        every step, as ``use_cache=False`` does throughout.
        ``first_allowed`` (vocab,) bool: the only tokens the first new token may be (token healing:
        a caller that backed up a prompt's last token allows the tokens that extend it).
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None (no filtering), got {top_k}")
        if self.num_classes != self.vocab_size:
            raise ValueError(f"generate needs a head over the vocabulary ({self.vocab_size} outputs); "
                             f"this model's head has {self.num_classes}")
        was_training = self.training
        self.eval()
        cache = [{} for _ in self.blocks] if use_cache and idx.shape[1] <= self.block_size else None
        try:
            for _ in range(max_new_tokens):
                if cache is not None and "k" in cache[0] and cache[0]["k"].shape[2] >= self.block_size:
                    if self.wpe is not None:  # learned positions cannot slide: recompute from here on
                        cache = None
                    else:  # RoPE: keep the last block_size - 1 positions (a sliding window)
                        for c in cache:
                            c["k"], c["v"] = c["k"][:, :, 1 - self.block_size:], c["v"][:, :, 1 - self.block_size:]
                if cache is None:
                    feats = self.forward_features(idx[:, -self.block_size :])  # (B, <= block_size, C)
                else:  # the prompt once, then only the newest token
                    feats = self.forward_features(idx if "k" not in cache[0] else idx[:, -1:], cache=cache)
                logits = self.fc(feats[:, -1, :]).float()  # (B, vocab)
                if first_allowed is not None:
                    logits = logits.masked_fill(~first_allowed.to(logits.device), float("-inf"))
                    first_allowed = None
                if temperature == 0:
                    nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1)
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    probs = torch.softmax(logits, dim=-1)
                    nxt = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
                idx = torch.cat((idx, nxt), dim=1)
                if finished is not None and bool(finished(idx).all()):
                    break
        finally:
            self.train(was_training)
        return idx


@register_model("gpt")
def gpt(
    *,
    in_shape: tuple[int, ...],
    num_classes: int,
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 128,
    mlp: str = "gelu",
    norm: str = "layernorm",
    rotary: bool = False,
    dropout: float = 0.0,
    bias: bool = True,
    tie_embeddings: bool = True,
    vocab_size: int = 0,
) -> GPT:
    """GPT-style causal language model on (block_size,) token sequences.

    Args:
        in_shape: (block_size,), the longest context. num_classes: vocabulary size (the head).
        n_layer, n_head, n_embd: depth, heads, width (n_head must divide n_embd).
        mlp: "gelu" (4 d hidden) or "swiglu" (8/3 d). norm: "layernorm" or "rmsnorm".
        rotary: RoPE in attention instead of the learned position table `wpe`.
        dropout: on embeddings, attention weights and residual branches (training only).
        bias: biases in Linears and LayerNorms (GPT-2: True; a bit faster and better: False).
        tie_embeddings: the head's weight is the token embedding's (needs num_classes == vocab).
        vocab_size: rows of the token embedding; 0 means num_classes. Only differs from
            num_classes after `reset_classifier` gave the model a new head.
    """
    return GPT(
        in_shape=in_shape,
        num_classes=num_classes,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        mlp=mlp,
        norm=norm,
        rotary=rotary,
        dropout=dropout,
        bias=bias,
        tie_embeddings=tie_embeddings,
        vocab_size=vocab_size,
    )


# --------------------------------------------------------------------------------------------
# ViT: images (and spectrograms) as sequences of patches


class ViT(Model):
    """Vision transformer; see the module docstring and `vit` for the arguments.

    Input (B, C, H, W); output (B, num_classes). `forward_features` gives the normalized tokens
    (B, L, n_embd), L = number of patches (+1 with the [CLS] token); `forward_head` pools them.
    """

    def __init__(
        self,
        *,
        in_shape: tuple[int, ...],
        num_classes: int,
        patch_h: int,
        patch_w: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        mlp: str,
        norm: str,
        norm_eps: float,
        rotary: bool,
        pool: str,
        dropout: float,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"vit expects in_shape (C, H, W), got {tuple(in_shape)!r}")
        _check_trunk(n_layer, n_head, n_embd, mlp, norm, dropout)
        if not norm_eps > 0:
            raise ValueError(f"norm_eps must be > 0, got {norm_eps!r}")
        if pool not in POOLS:
            raise unknown_choice_error("pool", pool, POOLS)
        c, h, w = in_shape
        ph, pw = patch_h or h, patch_w or w  # 0: the whole height / width
        for key, p, size, what in (("patch_h", patch_h, h, "height"), ("patch_w", patch_w, w, "width")):
            if p < 0 or (p and size % p):
                raise ValueError(f"vit: {key}={p} does not divide the input {what} {size}; choose a "
                                 f"divisor of {size}, or 0 for the whole {what}")
        self.in_shape = tuple(in_shape)
        self.patch = (ph, pw)
        self.num_patches = (h // ph) * (w // pw)
        self.seq_len = self.num_patches + (1 if pool == "cls" else 0)
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.mlp, self.norm, self.rotary, self.pool = mlp, norm, rotary, pool
        self.num_classes, self.num_features = num_classes, n_embd

        # A (ph, pw) conv with stride (ph, pw) = one Linear(C ph pw, d) per non-overlapping patch.
        self.patch_embed = nn.Conv2d(c, n_embd, kernel_size=self.patch, stride=self.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, n_embd)) if pool == "cls" else None
        self.pos_embed = None if rotary else nn.Parameter(torch.zeros(1, self.seq_len, n_embd))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.blocks = nn.ModuleList(
            TransformerBlock(n_embd, n_head, causal=False, rotary=rotary, mlp=mlp, norm=norm, norm_eps=norm_eps,
                             dropout=dropout)
            for _ in range(n_layer)
        )
        self.ln_f = make_transformer_norm(norm, n_embd, eps=norm_eps)
        self.fc = nn.Linear(n_embd, num_classes) if num_classes else nn.Identity()
        _init_transformer(self, n_layer)
        for p in (self.cls_token, self.pos_embed):
            if p is not None:
                nn.init.normal_(p, mean=0.0, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameters the optimizer must not decay (timm's convention; read by param_groups)."""
        return {n for n in ("cls_token", "pos_embed") if getattr(self, n) is not None}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, C, H, W) -> (B, d, H / ph, W / pw)
        x = x.flatten(2).transpose(1, 2)  # (B, N, d): patches in row-major order
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)  # (B, 1 + N, d)
        if self.pos_embed is not None:
            x = x + self.pos_embed  # (B, L, d)
        x = self.drop(x)
        for blk in self.blocks:
            x = blk(x)  # (B, L, d)
        return self.ln_f(x)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = feats[:, 0] if self.pool == "cls" else feats.mean(dim=1)  # (B, L, d) -> (B, d)
        return x if pre_logits else self.fc(x)  # (B, num_classes)

    def _cost(self) -> tuple[int, int]:
        c, d = self.in_shape[0], self.n_embd
        patch_weights = c * self.patch[0] * self.patch[1] * d
        params = patch_weights + d
        params += (0 if self.rotary else self.seq_len * d) + (d if self.pool == "cls" else 0)
        p_blk, f_blk = transformer_block_cost(d, self.seq_len, mlp=self.mlp, norm=self.norm, bias=True)
        params += self.n_layer * p_blk + transformer_norm_params(self.norm, d) + (d + 1) * self.num_classes
        flops = 2 * patch_weights * self.num_patches + self.n_layer * f_blk + 2 * d * self.num_classes
        return params, flops

    def num_params(self) -> int:
        return self._cost()[0]

    def flops_per_example(self) -> int:
        """Forward FLOPs: patch embedding, every block's matmuls and attention (4 L^2 d), head."""
        return self._cost()[1]


@register_model("vit")
def vit(
    *,
    in_shape: tuple[int, ...],
    num_classes: int,
    patch_h: int = 4,
    patch_w: int = 4,
    n_layer: int = 6,
    n_head: int = 4,
    n_embd: int = 128,
    mlp: str = "gelu",
    norm: str = "layernorm",
    norm_eps: float = NORM_EPS,
    rotary: bool = False,
    pool: str = "mean",
    dropout: float = 0.0,
) -> ViT:
    """Vision transformer on (C, H, W) inputs: images, or log-mel spectrograms (1, n_mels, frames).

    Args:
        patch_h, patch_w: patch size; 0 means the whole input height / width (must divide H, W).
            patch_h=0 on a spectrogram makes each token a slice of frames over all mel bands.
        n_layer, n_head, n_embd: depth, heads, width. mlp: "gelu" or "swiglu".
        norm: "layernorm" or "rmsnorm". norm_eps: the norms' eps (timm's ViTs: 1e-6).
        rotary: RoPE over the patch sequence (row-major order, 1-d) instead of a learned table.
        pool: "mean" over the tokens, or "cls" (a learned [CLS] token prepended, its output read).
        dropout: on embeddings, attention weights and residual branches (training only).
    """
    return ViT(
        in_shape=in_shape,
        num_classes=num_classes,
        patch_h=patch_h,
        patch_w=patch_w,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        mlp=mlp,
        norm=norm,
        norm_eps=norm_eps,
        rotary=rotary,
        pool=pool,
        dropout=dropout,
    )


# --- presets ------------------------------------------------------------------------------------
# nanoGPT's train.py runs with bias=False; its README CPU run is 4 layers x 4 heads x 128 wide,
# config/train_shakespeare_char.py is 6 x 6 x 384 with dropout 0.2.
register_model("gpt-tiny")(functools.partial(gpt, n_layer=4, n_head=4, n_embd=128, bias=False))
register_model("gpt-small")(functools.partial(gpt, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=False))
register_model("vit-tiny")(functools.partial(vit, n_layer=4, n_head=4, n_embd=128))
# Dosovitskiy et al. 2021 table 1 (B/16) and Touvron et al. 2021, DeiT (Ti, S), as timm builds them
# (vision_transformer.py: a [CLS] token with its own position, LayerNorm eps 1e-6, exact GELU).
_VIT16 = {"patch_h": 16, "patch_w": 16, "n_layer": 12, "pool": "cls", "norm_eps": 1e-6}
for _name, _heads, _width in (("vit-ti16", 3, 192), ("vit-s16", 6, 384), ("vit-b16", 12, 768)):
    register_model(_name)(functools.partial(vit, n_head=_heads, n_embd=_width, **_VIT16))
# The same ViT factory and block on log-mel spectrograms (1, n_mels, frames): a token is 2 frames
# across all mel bands (frames must be even), so attention runs over time.
register_model("audio-transformer")(functools.partial(vit, patch_h=0, patch_w=1, n_layer=4, n_head=4, n_embd=128))
