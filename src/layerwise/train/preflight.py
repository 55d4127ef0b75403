"""Checks that belong before a run starts: what would otherwise fail in the middle of an epoch,
after the run directory was written, is refused here with the setting to change.

A BatchNorm layer in training mode needs at least two examples per batch to estimate a variance;
with one it fails ("Expected more than 1 value per channel when training"), and only when that
batch comes, at the end of the first epoch. Which batches a run sees is known before it starts:
each of the ``dp`` data-parallel ranks reads ``ceil(N / dp)`` examples per epoch (the order is
padded by wrapping around, as torch's DistributedSampler), cut into micro-batches of
``batch_size / (grad_accum * dp)``; the last one holds the remainder.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batch_statistics_layers(model: nn.Module) -> list[str]:
    """Names of the layers whose training-mode output depends on batch statistics (BatchNorm of
    any dimension, SyncBatchNorm)."""
    return [name for name, m in model.named_modules() if isinstance(m, _BatchNorm) and m.training
            and (m.track_running_stats or m.running_mean is None)]


def micro_batch_sizes(per_rank: int, micro: int, drop_last: bool) -> set[int]:
    """The distinct sizes of one rank's training micro-batches in an epoch of ``per_rank``
    examples cut into batches of ``micro`` (the last one short unless ``drop_last``)."""
    sizes = {micro} if per_rank >= micro else set()
    tail = per_rank % micro
    if tail and not drop_last:
        sizes.add(tail)
    return sizes


def check_training_batches(loader: Any, model: nn.Module, cfg: Any, dp: int) -> None:
    """Raise ConfigError when the training loader yields no batch, or a one-example batch to a
    model with batch statistics. ``loader`` has ``examples_per_rank``, ``batch_size`` and
    ``drop_last`` (BatchLoader, StreamLoader, TokenLoader)."""
    from layerwise.config import ConfigError  # config sits above train; import late

    d, t = cfg.data, cfg.train
    per_rank, micro, drop = loader.examples_per_rank, loader.batch_size, loader.drop_last
    if t.grad_accum == 1 and dp == 1:
        split = f"data.batch_size={d.batch_size} gives training batches of {micro}"
    else:
        split = (f"data.batch_size={d.batch_size} over train.grad_accum={t.grad_accum} micro-batches"
                 f"{f' on each of {dp} data-parallel ranks' if dp > 1 else ''} gives micro-batches of {micro}")
    sizes = micro_batch_sizes(per_rank, micro, drop)
    if not sizes:
        raise ConfigError(
            f"{split}, but each rank has only {per_rank} training examples per epoch, and data.drop_last=true "
            f"drops the short batch they would make: training would see no batch at all. Set "
            f"--data.drop_last=false or a smaller data.batch_size (at most {per_rank * t.grad_accum * dp}).")
    bn = batch_statistics_layers(model)
    if 1 not in sizes or not bn:
        return
    unit = t.grad_accum * dp  # data.batch_size must stay a multiple of this
    good = [b for b in range(unit, unit * (per_rank + 1) + 1, unit)
            if b != d.batch_size and 1 not in micro_batch_sizes(per_rank, b // unit, False)]
    good.sort(key=lambda b: (abs(b - d.batch_size), b))
    where = ("every micro-batch holds one example" if micro == 1 else
             "each rank's one batch holds its one training example" if per_rank == 1 else
             f"the last micro-batch of every epoch holds one example ({per_rank} training examples per rank = "
             f"{per_rank // micro} x {micro} + 1)")
    fixes = []
    # drop_last helps only when it leaves batches of two or more (not with one-example micro-batches,
    # nor when the single example is all the rank has)
    if micro >= 2 and per_rank >= micro:
        fixes.append("set --data.drop_last=true (that one example is left out of each epoch, a different one "
                     "each time since the order is shuffled)")
    if good:
        fixes.append("choose a batch size that leaves no single example, e.g. "
                     + " or ".join(f"--data.batch_size={b}" for b in good[:2]))
    if not fixes:
        fixes.append(f"use more training data (each rank has {per_rank} example{'s' if per_rank != 1 else ''}), "
                     f"or a model without batch statistics")
    raise ConfigError(
        f"{split}, and {where}. Model '{cfg.model.name}' normalizes with batch statistics ({bn[0]}"
        f"{f' and {len(bn) - 1} more' if len(bn) > 1 else ''} are BatchNorm layers), which need at least 2 "
        f"examples per batch in training, so the run would fail in its first epoch. To fix it, "
        f"{'; or '.join(fixes)}.")
