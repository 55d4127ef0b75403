"""Parallelism applied to a model from outside (torchtitan's habit): model code never imports
``torch.distributed``; :func:`parallelize` rewrites a built model for the run's strategy.

Order (as torchtitan): tensor parallel, then activation checkpointing, then FSDP or DDP.

- ``tp``: every :class:`~layerwise.nn.transformer.TransformerBlock` is split over the tp ranks
  with DTensor ``parallelize_module``: the attention's fused qkv and the MLP's w1/w3 column-wise
  (each rank holds whole heads: the qkv rows are laid out head by head), the output projections
  row-wise. With sequence parallel (on when the context length divides by tp) the norms and the
  residual stream between blocks are sharded over the sequence too: blocks[0] slices its input,
  the last block gathers its output, so embeddings, final norm and head stay replicated.
- ``fsdp``: FSDP2 ``fully_shard`` on each block and on the root, with a mixed-precision policy
  (bf16 parameters, fp32 gradient reduction under train.precision=bf16) and optional CPU offload;
  on a 2-D (dp_replicate, dp_shard) mesh this is HSDP.
- ``ddp``: DistributedDataParallel over the data-parallel ranks.
- activation checkpointing: each block's forward is recomputed in the backward pass
  (``torch.utils.checkpoint``, non-reentrant); parameter names do not change.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from layerwise.config import ConfigError
from layerwise.distributed.parallel import Parallel
from layerwise.nn.transformer import TransformerBlock


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a model: its TransformerBlocks, else the entries of ``model.blocks``
    (or ``model.layers``, or an ensemble's ``members``) when it has such a list, else none."""
    found = [m for m in model.modules() if isinstance(m, TransformerBlock)]
    if found:
        return found
    for name in ("blocks", "layers", "members"):  # an ensemble: one shard unit per member
        seq = getattr(model, name, None)
        if isinstance(seq, (nn.ModuleList, nn.Sequential)):
            return [m for m in seq if any(p.requires_grad for p in m.parameters())]
    return []


def parallelize(model: nn.Module, par: Parallel, dist_cfg: Any, precision: str, model_name: str = "model",
                seq_len: int | None = None) -> nn.Module:
    """Apply the run's strategy to ``model`` in place; returns the module to call in training
    (a DDP wrapper for ddp, the model itself otherwise). The caller builds the optimizer after."""
    dims = par.dims
    if dims.tp > 1:
        apply_tp(model, par.submesh("tp"), dims.tp, dist_cfg.sequence_parallel, model_name, seq_len)
    if dist_cfg.activation_checkpointing:
        apply_activation_checkpointing(model, model_name)
    if dims.uses_fsdp:
        mesh = par.submesh("dp_replicate", "dp_shard") if dims.dp_replicate > 1 else par.submesh("dp_shard")
        apply_fsdp(model, mesh, precision, dist_cfg.cpu_offload and par.device.type == "cuda")
        return model
    if dims.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[par.device.index] if par.device.type == "cuda" else None,
                   process_group=par.submesh("dp_replicate").get_group())
    return model


def check_supported(par: Parallel, dist_cfg: Any, cfg: Any) -> None:
    """Refuse combinations this release does not train correctly, before anything is built."""
    s = par.dims.strategy
    if s in ("fsdp", "tp", "fsdp+tp"):
        if cfg.train.precision == "fp16":
            raise ConfigError(f"train.precision=fp16 needs a gradient scaler that understands sharded "
                              f"gradients; dist.strategy={s} trains in bf16 instead (--train.precision=bf16).")
        if cfg.train.ema_decay > 0:
            raise ConfigError(f"train.ema_decay averages whole weights; with dist.strategy={s} they are "
                              f"sharded. Use dist.strategy=ddp for EMA, or set --train.ema_decay=0.")
        if cfg.train.lookahead_every > 0:
            raise ConfigError(f"train.lookahead_every averages whole weights; with dist.strategy={s} they are "
                              f"sharded. Use dist.strategy=ddp for lookahead, or set --train.lookahead_every=0.")
        if cfg.optim.name == "muon":
            raise ConfigError(f"optim.name=muon orthogonalizes whole matrices; with dist.strategy={s} they "
                              f"are sharded. Use dist.strategy=ddp with Muon, or optim.name=adamw/sgd.")
    t = cfg.train
    for key, on, off in (("freeze_stem_after", t.freeze_stem_after > 0, "0"),
                         ("freeze_body_epochs", t.freeze_body_epochs > 0, "0"),
                         ("unfreeze", t.unfreeze != "all", "all")):
        if on and par.enabled:
            raise ConfigError(f"train.{key} changes which parameters train in the middle of a run; the "
                              f"data-parallel wrappers (dist.strategy={s}) fix that set when they are built. "
                              f"Set --train.{key}={off} for runs on several processes.")
    if dist_cfg.cpu_offload and (not par.dims.uses_fsdp or par.device.type != "cuda"):
        raise ConfigError("dist.cpu_offload keeps FSDP's parameters and optimizer state in CPU memory while a "
                          "GPU computes; it needs dist.strategy=fsdp (or fsdp+tp) on CUDA. Leave it false here.")


# ---------------------------------------------------------------------------------------- tensor parallel
def apply_tp(model: nn.Module, tp_mesh: Any, tp: int, sequence_parallel: bool, model_name: str,
             seq_len: int | None) -> bool:
    """Split every TransformerBlock over ``tp_mesh``; returns whether sequence parallel is on."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, PrepareModuleOutput,
                                                   RowwiseParallel, SequenceParallel, parallelize_module)

    blocks = [m for m in model.modules() if isinstance(m, TransformerBlock)]
    if not blocks:
        raise ConfigError(f"dist.strategy=tp splits transformer blocks, and model '{model_name}' has none. "
                          f"Use dist.strategy=ddp or fsdp for it.")
    attn, mlp = blocks[0].attn, blocks[0].mlp
    hidden = mlp.w1.out_features
    if attn.n_head % tp or hidden % tp:
        raise ConfigError(f"dist.tp={tp} must divide the attention heads ({attn.n_head}) and the MLP width "
                          f"({hidden}) of model '{model_name}'. Choose a tp that divides both.")
    sp = bool(sequence_parallel and seq_len and seq_len % tp == 0)
    out_layout = Shard(1) if sp else Replicate()
    for blk in blocks:
        plan: dict[str, Any] = {
            "attn.wqkv": ColwiseParallel(),  # whole heads per rank (head-major qkv rows)
            "attn.proj": RowwiseParallel(output_layouts=out_layout),
            "mlp.w1": ColwiseParallel(),
            "mlp.w2": RowwiseParallel(output_layouts=out_layout),
        }
        if blk.mlp.w3 is not None:
            plan["mlp.w3"] = ColwiseParallel()
        if sp:
            gather = PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),),
                                        use_local_output=True)
            plan |= {"norm1": SequenceParallel(), "norm2": SequenceParallel(), "attn": gather, "mlp": gather}
        parallelize_module(blk, tp_mesh, plan)
    if sp:  # the residual stream is sequence-sharded from the first block's input to the last's output
        parallelize_module(blocks[0], tp_mesh, PrepareModuleInput(
            input_layouts=(Replicate(),), desired_input_layouts=(Shard(1),), use_local_output=True))
        parallelize_module(blocks[-1], tp_mesh, PrepareModuleOutput(
            output_layouts=(Shard(1),), desired_output_layouts=(Replicate(),), use_local_output=True))
    return sp


# ---------------------------------------------------------------------------------------- FSDP2
def apply_fsdp(model: nn.Module, mesh: Any, precision: str, cpu_offload: bool) -> None:
    """FSDP2: ``fully_shard`` each block (its own all-gather / reduce-scatter unit), then the root
    (embeddings, norms and head; tied weights stay one parameter there)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    kw: dict[str, Any] = {"mesh": mesh}
    if precision == "bf16":
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if cpu_offload:
        kw["offload_policy"] = CPUOffloadPolicy()
    blocks = blocks_of(model)
    for i, blk in enumerate(blocks):
        # the last block's parameters are needed again at once by the backward pass: keep them
        fully_shard(blk, reshard_after_forward=i < len(blocks) - 1, **kw)
    fully_shard(model, **kw)


# ---------------------------------------------------------------------------------------- activation checkpointing
def apply_activation_checkpointing(model: nn.Module, model_name: str) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them."""
    from torch.utils.checkpoint import checkpoint

    blocks = blocks_of(model)
    if not blocks:
        raise ConfigError(f"dist.activation_checkpointing recomputes a model's blocks, and model '{model_name}' "
                          f"has no list of blocks. Set --dist.activation_checkpointing=false.")
    for blk in blocks:
        inner = blk.forward

        @functools.wraps(inner)
        def forward(*args, _inner=inner, **kwargs):
            return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

        blk.forward = forward


# ---------------------------------------------------------------------------------------- gradients
def clip_grad_norm_(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """The global gradient norm (and clipping to ``max_norm`` when finite) for parameters that mix
    plain tensors and DTensors on different meshes (tp, fsdp+tp): each group's norm is completed
    over its mesh, plain tensors are replicated. Returns a plain 0-dim tensor."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    groups: dict[Any, list[torch.Tensor]] = {}
    for g in grads:
        groups.setdefault(g.device_mesh if isinstance(g, DTensor) else None, []).append(g)
    total_sq = None
    for mesh, gs in groups.items():
        norms = [torch.linalg.vector_norm(g, dtype=torch.float32) for g in gs]
        sq = sum((n.full_tensor() if isinstance(n, DTensor) else n) ** 2 for n in norms)
        total_sq = sq if total_sq is None else total_sq + sq
    total = total_sq.sqrt() if total_sq is not None else torch.zeros(())
    if max_norm != float("inf") and max_norm > 0:
        coef = float((max_norm / (total + 1e-6)).clamp(max=1.0))
        if coef < 1.0:
            for g in grads:
                g.mul_(coef)
    return total
