"""The pieces of layerwise.distributed that need no second process: degrees, launcher arguments,
failure messages, the tensor-parallel-ready attention layout, and the layering rule."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from layerwise.config import ConfigError, load_config
from layerwise.distributed.launch import describe_failures, torchrun_args
from layerwise.distributed.parallel import DistributedError, ParallelDims
from layerwise.distributed.parallelize import clip_grad_norm_
from layerwise.nn.transformer import SelfAttention

SRC = Path(__file__).resolve().parents[2] / "src" / "layerwise"


@pytest.mark.parametrize("strategy, world, tp, rep, expect", [
    ("auto", 1, 0, 1, ("none", 1, 1, 1)),
    ("auto", 4, 0, 1, ("ddp", 4, 1, 1)),
    ("ddp", 2, 0, 1, ("ddp", 2, 1, 1)),
    ("fsdp", 4, 0, 1, ("fsdp", 1, 4, 1)),
    ("fsdp", 4, 0, 2, ("fsdp", 2, 2, 1)),  # HSDP: 2 replicas of 2 shards
    ("tp", 2, 0, 1, ("tp", 1, 1, 2)),
    ("fsdp+tp", 4, 0, 1, ("fsdp+tp", 1, 2, 2)),
    ("fsdp+tp", 8, 4, 1, ("fsdp+tp", 1, 2, 4)),
])
def test_degrees_multiply_to_the_world(strategy, world, tp, rep, expect):
    d = ParallelDims.build(strategy, world, tp, rep)
    assert (d.strategy, d.dp_replicate, d.dp_shard, d.tp) == expect
    assert d.dp_replicate * d.dp_shard * d.tp == world
    assert d.dp == world // d.tp


@pytest.mark.parametrize("strategy, world, tp, rep, message", [
    ("tp", 2, 3, 1, "dp_replicate 1 x dp_shard 1 x tp 3 = 3 ranks, but the run has 2"),
    ("fsdp+tp", 6, 4, 1, "tp 4 = 4 ranks, but the run has 6"),
    ("none", 2, 0, 1, "dist.strategy=none runs one process, but 2 were launched"),
    ("ddp", 2, 2, 1, "dist.tp=2 needs dist.strategy=tp or fsdp+tp"),
    ("fsdp", 4, 0, 3, "dist.dp_replicate=3 does not divide the 4 ranks"),
    ("tp", 2, 0, 2, "it needs dist.strategy=fsdp"),
    ("fsdp+tp", 2, 1, 1, "needs dist.tp >= 2"),
    ("pipeline", 2, 0, 1, "dist.strategy must be auto or one of"),
])
def test_bad_degrees_are_refused_with_the_fix(strategy, world, tp, rep, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ParallelDims.build(strategy, world, tp, rep)


def test_dist_section_is_validated():
    assert load_config(None, ["--dist.strategy=fsdp", "--dist.tp=2"]).dist.tp == 2
    with pytest.raises(ConfigError, match="Did you mean 'strategy'"):
        load_config(None, ["--dist.stratgy=fsdp"])
    with pytest.raises(ConfigError, match="dist.strategy must be one of"):
        load_config(None, ["--dist.strategy=zero3"])


def test_torchrun_arguments():
    one = torchrun_args(2, ["train", "r.yaml"])
    assert one[:2] == ["--nproc-per-node", "2"] and "--standalone" in one
    assert one[-4:] == ["-m", "layerwise", "train", "r.yaml"]
    multi = torchrun_args(8, ["train"], nnodes="2", node_rank=1, rdzv_endpoint="node0:29500", rdzv_id="42",
                          max_restarts=3)
    assert "--standalone" not in multi
    for flag, value in (("--nnodes", "2"), ("--node-rank", "1"), ("--rdzv-endpoint", "node0:29500"),
                        ("--rdzv-id", "42"), ("--max-restarts", "3"), ("--rdzv-backend", "c10d")):
        assert multi[multi.index(flag) + 1] == value
    with pytest.raises(DistributedError, match="needs --rdzv-endpoint"):
        torchrun_args(8, ["train"], nnodes="2")


def test_failure_message_names_the_rank_that_failed_first():
    failures = {
        0: SimpleNamespace(exitcode=-signal.SIGTERM, local_rank=0, pid=11, timestamp=105),
        1: SimpleNamespace(exitcode=-signal.SIGKILL, local_rank=1, pid=12, timestamp=100),
    }
    msg = describe_failures(failures, 0, "runs/x", 2)
    assert msg.startswith("the distributed job failed: rank 1 (local rank 1, pid 12) was killed by signal SIGKILL; "
                          "then rank 0 was killed by signal SIGTERM.")
    assert "layerwise train --resume runs/x --nproc 2" in msg
    crash = {3: SimpleNamespace(exitcode=1, local_rank=1, pid=9, timestamp=1)}
    assert "rank 3 (local rank 1, pid 9) exited with code 1" in describe_failures(crash, 2)
    assert "after 2 restart(s)" in describe_failures(crash, 2)


def test_models_and_nn_never_import_torch_distributed():
    offenders = [str(p.relative_to(SRC)) for folder in ("models", "nn") for p in (SRC / folder).rglob("*.py")
                 if re.search(r"torch\.distributed|from torch import distributed|layerwise\.distributed",
                              p.read_text())]
    assert offenders == []


def _old_attention(attn: SelfAttention, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The attention as layerwise computed it before the head-major layout: rows (q | k | v)."""
    B, T, C = x.shape
    q, k, v = torch.nn.functional.linear(x, w, b).split(C, dim=2)
    q, k, v = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k, v))
    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=attn.causal)
    return attn.proj(y.transpose(1, 2).reshape(B, T, C))


def test_files_with_the_old_qkv_layout_load_into_the_head_major_one():
    torch.manual_seed(0)
    attn = SelfAttention(32, 4, causal=True)
    old_w, old_b = torch.randn(96, 32) * 0.1, torch.randn(96) * 0.1
    state = {"qkv.weight": old_w, "qkv.bias": old_b, "proj.weight": attn.proj.weight.detach().clone(),
             "proj.bias": attn.proj.bias.detach().clone()}
    attn.load_state_dict(state)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(attn(x), _old_attention(attn, old_w, old_b, x))
    assert set(attn.state_dict()) == {"wqkv.weight", "wqkv.bias", "proj.weight", "proj.bias"}


def test_head_major_rows_give_each_slice_whole_heads():
    """The first half of wqkv's rows is heads 0-1 (q, k, v each): what tensor parallelism hands rank 0."""
    torch.manual_seed(0)
    attn = SelfAttention(32, 4)
    x = torch.randn(2, 5, 32)
    half = torch.nn.functional.linear(x, attn.wqkv.weight[:48], attn.wqkv.bias[:48]).view(2, 5, 2, 3, 8)
    full = attn.wqkv(x).view(2, 5, 4, 3, 8)
    torch.testing.assert_close(half, full[:, :, :2])


def test_clip_grad_norm_for_plain_tensors_matches_torch():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 4)
    for m in (a, b):
        (m(x) ** 2).sum().backward()
    ref = torch.nn.utils.clip_grad_norm_(list(a.parameters()), 0.5)
    got = clip_grad_norm_(list(b.parameters()), 0.5)
    torch.testing.assert_close(got, ref)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_sharded_evaluation_counts_every_example_once(world):
    """Each rank evaluates its share of the test set, padded so that all run the same number of
    batches; the padding is masked, so the rank totals add up to the unsharded evaluation."""
    from layerwise.data import BatchLoader, DatasetInfo
    from layerwise.data.augment import BatchTransform
    from layerwise.data.text import TokenLoader
    from layerwise.tasks import create_task
    from layerwise.train.evaluation import evaluate_loader

    torch.manual_seed(0)
    info = DatasetInfo("t", (4,), 3, ["a", "b", "c"], 1.0, [0.0] * 4, [1.0] * 4)
    x, y, tf = torch.randn(11, 4), torch.randint(0, 3, (11,)), BatchTransform(info, "cpu")
    model = torch.nn.Linear(4, 3)
    task = create_task(info)
    whole = evaluate_loader(model, BatchLoader(x, y, 3, tf), task, torch.device("cpu"))
    parts = [evaluate_loader(model, BatchLoader(x, y, 3, tf, rank=r, world_size=world), task, torch.device("cpu"))
             for r in range(world)]
    assert len({len(BatchLoader(x, y, 3, tf, rank=r, world_size=world)) for r in range(world)}) == 1
    assert sum(p["examples"] for p in parts) == 11
    assert sum(p["loss"] * p["examples"] for p in parts) == pytest.approx(whole["loss"] * 11, rel=1e-6)
    assert sum(p["accuracy"] * p["examples"] for p in parts) == pytest.approx(whole["accuracy"] * 11)

    # a language model's windows: the same, counted in tokens
    emb = torch.nn.Embedding(7, 7)
    tokens = torch.randint(0, 7, (50,))
    lm = create_task(DatasetInfo("t", (4,), 7, [], 1.0, [], [], task="lm"))
    whole = evaluate_loader(emb, TokenLoader(tokens, 2, 4), lm, torch.device("cpu"))
    parts = [evaluate_loader(emb, TokenLoader(tokens, 2, 4, rank=r, world_size=world), lm, torch.device("cpu"))
             for r in range(world)]
    assert sum(p["examples"] for p in parts) == whole["examples"] == (50 - 1) // 4 * 4
    assert sum(p["loss"] * p["examples"] for p in parts) == pytest.approx(whole["loss"] * whole["examples"], rel=1e-6)


def test_cpu_offload_without_fsdp_on_cuda_is_refused(tmp_path):
    from layerwise.train.trainer import Trainer

    cfg = load_config(None, ["--dist.cpu_offload=true", f"--run.root={tmp_path}", "--train.device=cpu"])
    with pytest.raises(ConfigError, match="dist.cpu_offload .* needs dist.strategy=fsdp"):
        Trainer(cfg, show_progress=False)
    assert not any(tmp_path.iterdir())


def test_tensor_parallel_needs_transformer_blocks_and_divisible_heads():
    from layerwise.distributed.parallelize import apply_tp
    from layerwise.models import create_model

    mlp = create_model("mlp", in_shape=(4,), num_classes=3)
    with pytest.raises(ConfigError, match="dist.strategy=tp splits transformer blocks, and model 'mlp' has none"):
        apply_tp(mlp, None, 2, True, "mlp", None)
    gpt = create_model("gpt", in_shape=(16,), num_classes=11, n_layer=1, n_head=3, n_embd=24)
    with pytest.raises(ConfigError, match=r"dist.tp=2 must divide the attention heads \(3\)"):
        apply_tp(gpt, None, 2, True, "gpt", 16)
