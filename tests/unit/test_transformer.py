"""Transformer blocks and the gpt / vit / audio-transformer models: shapes, causality, RoPE,
analytic costs against numel and FlopCounterMode, sampling, and a tiny overfitting run."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from layerwise.models import GPT, ViT, create_model, model_args
from layerwise.nn import (
    FeedForward,
    RotaryEmbedding,
    SelfAttention,
    TransformerBlock,
    feedforward_hidden,
    transformer_block_cost,
)

V = 11  # vocabulary of the tiny LMs
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 16}


def _numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _gpt(block_size: int = 8, **kw: object) -> GPT:
    torch.manual_seed(0)
    model = create_model("gpt", in_shape=(block_size,), num_classes=V, **{**TINY, **kw})
    assert isinstance(model, GPT)
    return model.eval()


def _meta_flops(model: nn.Module, x: torch.Tensor) -> int:
    # On the meta device SDPA decomposes into two bmm's that the counter sees; on CPU the fused
    # kernel has no formula in FlopCounterMode and would count 0.
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


# --- shapes --------------------------------------------------------------------------------------
def test_gpt_shapes() -> None:
    m = _gpt(block_size=8)
    idx = torch.randint(0, V, (3, 8))
    assert m(idx).shape == (3, 8, V)
    assert m(idx[:, :5]).shape == (3, 5, V)  # shorter than block_size is fine
    feats = m.forward_features(idx)
    assert feats.shape == (3, 8, 16)
    assert m.forward_head(feats, pre_logits=True).shape == (3, 8, 16)
    assert isinstance(m.blocks, nn.ModuleList) and len(m.blocks) == 2
    assert all(isinstance(b, TransformerBlock) and b.attn.causal for b in m.blocks)


@pytest.mark.parametrize(("pool", "tokens"), [("mean", 64), ("cls", 65)])
def test_vit_shapes(pool: str, tokens: int) -> None:
    m = create_model("vit", in_shape=(3, 32, 32), num_classes=7, pool=pool, **TINY)
    x = torch.randn(2, 3, 32, 32)
    assert m.forward_features(x).shape == (2, tokens, 16)  # (32 / 4)^2 patches (+ [CLS])
    assert m(x).shape == (2, 7)
    assert not any(b.attn.causal for b in m.blocks)


def test_vit_whole_axis_patches() -> None:
    # patch_h=0: one patch spans the whole height -> 1 x (20 / 5) = 4 tokens
    m = create_model("vit", in_shape=(2, 12, 20), num_classes=3, patch_h=0, patch_w=5, **TINY)
    assert m.patch_embed.kernel_size == (12, 5)
    assert m.forward_features(torch.randn(2, 2, 12, 20)).shape == (2, 4, 16)


def test_audio_transformer_is_the_vit_block() -> None:
    assert set(model_args("audio-transformer")) == set(model_args("vit"))
    assert model_args("audio-transformer")["patch_h"] == 0 and model_args("audio-transformer")["patch_w"] == 1
    m = create_model("audio-transformer", in_shape=(1, 16, 21), num_classes=5, n_layer=1)
    assert isinstance(m, ViT) and isinstance(m.blocks[0], TransformerBlock)
    assert m.patch_embed.kernel_size == (16, 1)  # all 16 mel bands x 1 frame
    x = torch.randn(3, 1, 16, 21)  # an odd frame count (a 1 s clip at a 10 ms hop has 101)
    assert m.forward_features(x).shape == (3, 21, 128)  # one token per frame
    assert m(x).shape == (3, 5)


# --- causality and positions ---------------------------------------------------------------------
@pytest.mark.parametrize("rotary", [False, True])
def test_gpt_is_causal(rotary: bool) -> None:
    m = _gpt(block_size=8, rotary=rotary)
    idx = torch.randint(0, V, (2, 8))
    t = 4
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1) % V
    a, b = m(idx), m(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=0)  # the past cannot see t
    assert (a[:, t:] - b[:, t:]).abs().amax(dim=-1).min() > 1e-6  # every later position does


def test_rope_scores_depend_on_relative_position_only() -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(8)
    q = torch.randn(1, 1, 1, 8).expand(1, 1, 12, 8)  # the same vector at every position
    k = torch.randn(1, 1, 1, 8).expand(1, 1, 12, 8)
    qr, kr = rope(q, k)
    scores = (qr @ kr.transpose(-1, -2))[0, 0]  # (T, T)
    for shift in (1, 3):
        torch.testing.assert_close(scores[shift:, shift:], scores[:-shift, :-shift])
    assert not torch.allclose(scores[0, 1], scores[0, 2])  # but they do depend on m - n
    # norms are preserved (a rotation) and position 0 is not rotated
    torch.testing.assert_close(qr.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(qr[..., 0, :], q[..., 0, :])
    # tables: non-persistent, grown to a power of two on demand
    assert rope.state_dict() == {} and rope.cos.shape == (16, 4)
    rope(torch.randn(1, 1, 20, 8), torch.randn(1, 1, 20, 8))
    assert rope.cos.shape == (32, 4)


def test_rope_tables_rebuilt_after_meta_init() -> None:
    # Built on the meta device then materialized with to_empty (the FSDP/large-model path), the
    # tables hold garbage; RoPE must notice the device change and recompute them.
    with torch.device("meta"):
        rope = RotaryEmbedding(8)
        rope(torch.empty(1, 1, 4, 8), torch.empty(1, 1, 4, 8))
    rope = rope.to_empty(device="cpu")
    q, k = torch.randn(2, 1, 4, 8), torch.randn(2, 1, 4, 8)
    for got, want in zip(rope(q, k), RotaryEmbedding(8)(q, k)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("rotary", [False, True])
def test_attention_position_sensitivity(rotary: bool) -> None:
    # Without positions, non-causal attention is permutation-equivariant; RoPE breaks that.
    torch.manual_seed(0)
    attn = SelfAttention(16, 2, causal=False, rotary=rotary).eval()
    x = torch.randn(2, 6, 16)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    permuted_out = attn(x[:, perm])
    if rotary:
        assert (permuted_out - attn(x)[:, perm]).abs().max() > 1e-3
    else:
        torch.testing.assert_close(permuted_out, attn(x)[:, perm])


def test_gpt_rotary_has_no_position_table() -> None:
    m = _gpt(rotary=True)
    assert m.wpe is None
    assert not any("wpe" in k or k.endswith((".cos", ".sin")) for k in m.state_dict())
    assert m.num_params() == _numel(m)
    assert m(torch.randint(0, V, (2, 8))).shape == (2, 8, V)
    # Without positions, the last position of a one-layer causal model sees its prefix as a set:
    # permuting the earlier tokens leaves its output alone (checked with wpe zeroed). RoPE sees order.
    idx = torch.tensor([[1, 2, 3, 4, 5, 6]])
    swapped = torch.tensor([[3, 1, 2, 5, 4, 6]])
    one, no_pos = _gpt(rotary=True, n_layer=1), _gpt(n_layer=1)
    with torch.no_grad():
        no_pos.wpe.weight.zero_()
        for model in (one, no_pos):  # sharpen attention: at init (std 0.02) it is near uniform
            model.blocks[0].attn.wqkv.weight.mul_(30)
    assert (one(idx)[0, -1] - one(swapped)[0, -1]).abs().max() > 1e-2
    torch.testing.assert_close(no_pos(idx)[0, -1], no_pos(swapped)[0, -1])


# --- parameters ---------------------------------------------------------------------------------
def test_tied_embeddings_share_storage() -> None:
    m = _gpt()
    assert m.fc.weight is m.wte.weight
    assert m.fc.weight.data_ptr() == m.wte.weight.data_ptr()
    assert m.num_params() == _numel(m)  # counted once
    untied = _gpt(tie_embeddings=False)
    assert untied.fc.weight.data_ptr() != untied.wte.weight.data_ptr()
    assert untied.num_params() == _numel(untied) == m.num_params() + V * 16


def test_gpt_param_counts_by_hand() -> None:
    # d = 16, 2 layers, GELU hidden 64, biases, LayerNorm (gain + bias), V = 11, T = 8
    block = 4 * 16 * 16 + 2 * 16 * 64 + (3 * 16 + 16) + (64 + 16) + 2 * (2 * 16)  # 3280
    non_embedding = 2 * block + 2 * 16  # + ln_f
    m = _gpt()
    assert m.num_params(non_embedding=True) == non_embedding == 6592
    assert m.num_params() == non_embedding + V * 16 + 8 * 16 == _numel(m)
    # untied: the head is not an embedding; RoPE: no position table
    u = _gpt(tie_embeddings=False, rotary=True)
    assert u.num_params(non_embedding=True) == non_embedding + V * 16
    assert u.num_params() == _numel(u) == non_embedding + 2 * V * 16
    # SwiGLU (hidden 8 * ceil(24 / 3) = 64), RMSNorm, no biases, d = 24
    s = _gpt(n_embd=24, mlp="swiglu", norm="rmsnorm", bias=False)
    assert s.blocks[0].mlp.w1.out_features == 64
    assert s.num_params(non_embedding=True) == 2 * (4 * 24 * 24 + 3 * 24 * 64 + 2 * 24) + 24


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"rotary": True, "mlp": "swiglu", "norm": "rmsnorm", "bias": False},
        {"tie_embeddings": False, "dropout": 0.1},
    ],
)
def test_gpt_num_params_matches_numel(kw: dict) -> None:
    with torch.device("meta"):
        m = create_model("gpt", in_shape=(8,), num_classes=V, **{**TINY, **kw})
    assert m.num_params() == _numel(m)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"pool": "cls"},
        {"rotary": True, "mlp": "swiglu", "norm": "rmsnorm"},
        {"patch_h": 0, "patch_w": 8, "pool": "cls", "rotary": True},
    ],
)
def test_vit_num_params_and_flops(kw: dict) -> None:
    with torch.device("meta"):
        m = create_model("vit", in_shape=(3, 16, 24), num_classes=5, **{**TINY, **kw})
        flops = _meta_flops(m, torch.empty(1, 3, 16, 24))
    assert m.num_params() == _numel(m)
    assert m.flops_per_example() == flops


def test_feedforward_hidden_sizes() -> None:
    assert feedforward_hidden(128, "gelu") == 512
    assert feedforward_hidden(128, "swiglu") == 344  # LLaMA: int(2 * 4 * 128 / 3) = 341 -> 344
    assert feedforward_hidden(384, "swiglu") == 1024
    assert feedforward_hidden(128, "swiglu", hidden=100) == 100
    ff = FeedForward(32, kind="swiglu")
    assert ff.w3 is not None and ff.w1.out_features == 88 == ff.w2.in_features
    assert FeedForward(32).w3 is None


# --- FLOPs --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"rotary": True, "mlp": "swiglu", "norm": "rmsnorm", "bias": False},
        {"tie_embeddings": False},
    ],
)
def test_gpt_flops_match_flop_counter(kw: dict) -> None:
    with torch.device("meta"):
        m = create_model("gpt", in_shape=(12,), num_classes=V, **{**TINY, **kw})
        flops = _meta_flops(m, torch.zeros(1, 12, dtype=torch.long))
    assert m.flops_per_example() == flops


def test_gpt_flops_formula() -> None:
    L, d, T = 2, 16, 8
    m = _gpt(block_size=T, bias=False)
    per_layer = 2 * T * (4 * d * d + 2 * d * 4 * d) + 4 * T * T * d
    assert m.flops_per_example() == L * per_layer + 2 * T * d * V
    # nanoGPT's estimate_mfu: 6 N + 12 L T d per token, N = the matmul weights (incl. the head)
    norms = (2 * L + 1) * d  # LayerNorm gains (bias=False)
    n_matmul = m.num_params(non_embedding=True) - norms + V * d
    assert m.flops_per_token() == 6 * n_matmul + 12 * L * T * d
    assert transformer_block_cost(d, T, mlp="gelu", norm="layernorm", bias=False)[1] == per_layer


def test_audio_transformer_flops() -> None:
    with torch.device("meta"):
        m = create_model("audio-transformer", in_shape=(1, 8, 12), num_classes=4, n_layer=1, n_embd=32)
        flops = _meta_flops(m, torch.empty(1, 1, 8, 12))
    assert m.num_params() == _numel(m)
    assert m.flops_per_example() == flops


# --- sampling -----------------------------------------------------------------------------------
def test_generate_length_and_determinism() -> None:
    m = _gpt(block_size=8)
    prompt = torch.randint(0, V, (2, 6))
    out = m.generate(prompt, 10, generator=torch.Generator().manual_seed(1))  # crosses block_size
    assert out.shape == (2, 16) and out.dtype == torch.long
    assert torch.equal(out[:, :6], prompt)
    assert int(out.min()) >= 0 and int(out.max()) < V
    again = m.generate(prompt, 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    other = m.generate(prompt, 10, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(out, other)
    assert m.generate(prompt, 0).shape == (2, 6)


def test_generate_greedy_is_argmax_rollout() -> None:
    m = _gpt(block_size=8)
    m.train()  # generate must switch to eval itself and restore the mode afterwards
    prompt = torch.randint(0, V, (2, 3))
    greedy = m.generate(prompt, 7, temperature=0.0)
    assert m.training
    m.eval()
    idx = prompt
    with torch.no_grad():
        for _ in range(7):
            nxt = m(idx[:, -8:])[:, -1].argmax(-1, keepdim=True)
            idx = torch.cat((idx, nxt), dim=1)
    assert torch.equal(greedy, idx)
    # top_k=1 sampling is greedy too, whatever the temperature
    top1 = m.generate(prompt, 7, temperature=2.0, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(top1, idx)


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"max_new_tokens": -1}, "max_new_tokens"), ({"temperature": -0.5}, "temperature"), ({"top_k": 0}, "top_k")],
)
def test_generate_rejects_bad_arguments(kw: dict, match: str) -> None:
    m = _gpt()
    args = {"max_new_tokens": 2, **kw}
    with pytest.raises(ValueError, match=match):
        m.generate(torch.zeros(1, 2, dtype=torch.long), **args)


# --- learning -----------------------------------------------------------------------------------
def test_tiny_gpt_overfits_a_sequence() -> None:
    torch.manual_seed(0)
    m = create_model("gpt", in_shape=(16,), num_classes=8, n_layer=2, n_head=2, n_embd=32).train()
    seq = torch.randint(0, 8, (17,))
    x, y = seq[:-1].expand(4, 16), seq[1:].expand(4, 16)  # (B, T) inputs and next-token targets
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        loss = nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 1.8  # ~log(8) = 2.08 at init
    assert loss.item() < 0.05
    assert torch.equal(m.generate(seq[:1].view(1, 1), 15, temperature=0.0)[0], seq[:16])


@pytest.mark.parametrize(
    ("name", "in_shape", "kw"),
    [
        ("gpt", (8,), {}),
        ("gpt", (8,), {"rotary": True, "mlp": "swiglu", "norm": "rmsnorm", "tie_embeddings": False}),
        ("vit", (3, 8, 8), {"pool": "cls"}),
        ("audio-transformer", (1, 8, 6), {}),
    ],
)
def test_gradients_reach_every_parameter(name: str, in_shape: tuple[int, ...], kw: dict) -> None:
    torch.manual_seed(0)
    m = create_model(name, in_shape=in_shape, num_classes=V, **{**TINY, **kw})
    x = torch.randint(0, V, (2, *in_shape)) if name == "gpt" else torch.randn(2, *in_shape)
    m(x).logsumexp(-1).mean().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_dropout_only_in_training() -> None:
    m = _gpt(dropout=0.3)
    idx = torch.randint(0, V, (2, 8))
    torch.testing.assert_close(m(idx), m(idx), rtol=0, atol=0)
    m.train()
    assert not torch.equal(m(idx), m(idx))


# --- init, transfer, config ---------------------------------------------------------------------
def test_gpt_init_scales_residual_projections() -> None:
    torch.manual_seed(0)
    m = create_model("gpt", in_shape=(8,), num_classes=V, n_layer=8, n_embd=256, n_head=4)
    assert abs(m.blocks[0].attn.wqkv.weight.std().item() - 0.02) < 1e-3
    assert abs(m.blocks[0].mlp.w2.weight.std().item() - 0.02 / 4) < 2e-4  # 0.02 / sqrt(2 * 8)
    assert abs(m.blocks[0].attn.proj.weight.std().item() - 0.02 / 4) < 2e-4
    assert torch.equal(m.blocks[0].attn.wqkv.bias, torch.zeros(3 * 256))


def test_gpt_reset_classifier_keeps_config_rebuildable() -> None:
    m = _gpt()
    m.config = {"name": "gpt", "in_shape": (8,), "num_classes": V, **model_args("gpt"), **TINY}
    m.reset_classifier(3)
    assert m.fc.weight.shape == (3, 16) and m.fc.bias is None
    assert m.fc.weight.data_ptr() != m.wte.weight.data_ptr()
    assert m.num_params() == _numel(m)
    assert m(torch.randint(0, V, (2, 8))).shape == (2, 8, 3)
    rebuilt = create_model(**json.loads(json.dumps(m.config)))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="head over the vocabulary"):
        m.generate(torch.zeros(1, 1, dtype=torch.long), 1)
    m.reset_classifier(0)
    assert m(torch.randint(0, V, (2, 8))).shape == (2, 8, 16)
    assert m.num_params() == _numel(m)


def test_vit_reset_classifier_and_no_weight_decay() -> None:
    m = create_model("vit", in_shape=(3, 8, 8), num_classes=10, pool="cls", **TINY)
    assert m.no_weight_decay() == {"cls_token", "pos_embed"}
    assert m.no_weight_decay() <= dict(m.named_parameters()).keys()
    m.reset_classifier(4)
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 4) and m.num_params() == _numel(m)


@pytest.mark.parametrize(
    ("name", "in_shape", "kw", "match"),
    [
        ("gpt", (8,), {"n_head": 3}, "n_head must divide n_embd"),
        ("gpt", (8,), {"norm": "layer"}, "did you mean 'layernorm'"),
        ("gpt", (8,), {"mlp": "swiglo"}, "did you mean 'swiglu'"),
        ("gpt", (3, 8, 8), {}, r"\(block_size,\)"),
        ("vit", (3, 30, 32), {}, "patch_h=4 does not divide the input height 30"),
        ("vit", (3, 32, 32), {"pool": "max"}, "unknown pool"),
        ("vit", (32, 32), {}, r"\(C, H, W\)"),
        ("vit", (3, 32, 32), {"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments(name: str, in_shape: tuple, kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_model(name, in_shape=in_shape, num_classes=V, **{**TINY, **kw})


def test_gpt_rejects_bad_inputs() -> None:
    m = _gpt(block_size=8)
    with pytest.raises(ValueError, match="exceeds block_size 8"):
        m(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        m(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="tie_embeddings=True needs"):
        create_model("gpt", in_shape=(8,), num_classes=V, vocab_size=V + 1)


def test_presets() -> None:
    small = model_args("gpt-small")
    assert (small["n_layer"], small["n_head"], small["n_embd"], small["dropout"]) == (6, 6, 384, 0.2)
    tiny = model_args("gpt-tiny")
    assert (tiny["n_layer"], tiny["n_head"], tiny["n_embd"], tiny["bias"]) == (4, 4, 128, False)
    assert model_args("vit-tiny")["n_layer"] == 4 and model_args("vit-tiny")["patch_h"] == 4
    with torch.device("meta"):
        m = create_model("gpt-small", in_shape=(256,), num_classes=65)
    # nanoGPT prints "number of parameters: 10.65M" for shakespeare_char: its count leaves out
    # wpe (256 x 384) but keeps the tied wte (65 x 384)
    assert m.num_params() == _numel(m) == 10_745_088
    assert m.num_params() - 256 * 384 == 10_646_784
