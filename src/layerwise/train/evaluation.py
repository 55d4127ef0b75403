"""Evaluation pieces shared by the Trainer, `layerwise eval` and the benchmarks: test-time
augmentation, and one pass of a task's metrics over a (possibly rank-sharded) loader."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from layerwise.train.metrics import Accumulator
from layerwise.train.precision import autocast


def is_image(info) -> bool:
    """Whether a dataset's inputs are images (N, C, H, W): not token ids, not spectrograms."""
    return info.task != "lm" and len(info.in_shape) == 3 and "audio" not in info.extra


def tta_logits(forward, x: torch.Tensor, mode: str = "none") -> torch.Tensor:
    """Test-time augmentation for images (airbench's): ``flip`` averages the logits of x and its
    mirror image; ``flip-translate`` adds the flip-averaged logits of x shifted one pixel up-left
    and one down-right (reflect padding), weighted 1/2, 1/4, 1/4. Other inputs pass unchanged."""
    if mode == "none" or x.dim() != 4:
        return forward(x)

    def flip_avg(z: torch.Tensor) -> torch.Tensor:
        return 0.5 * (forward(z).float() + forward(z.flip(-1)).float())

    if mode == "flip":
        return flip_avg(x)
    pad = F.pad(x, (1, 1, 1, 1), mode="reflect")  # (B, C, H+2, W+2)
    up_left, down_right = pad[..., :-2, :-2], pad[..., 2:, 2:]
    return 0.5 * flip_avg(x) + 0.25 * flip_avg(up_left) + 0.25 * flip_avg(down_right)


@torch.no_grad()
def evaluate_loader(forward, loader, task, device: torch.device, precision: str = "fp32",
                    tta: str = "none", reduce=None) -> dict[str, Any]:
    """The task's metrics (:meth:`layerwise.tasks.Task.metrics`) of ``forward`` over one full pass
    of ``loader``, with optional test-time augmentation (:func:`tta_logits`).

    A loader sharded over W data-parallel ranks pads its order by wrapping around (so every rank
    runs the same number of batches, which FSDP and TP need); the padded repeats are left out
    (``keep``) and ``reduce`` sums the totals over the ranks: every example counts once. A task
    that needs every output at once (``task.collects``, e.g. mean average precision) gets them
    placed at their examples' positions and summed over the ranks, so each example appears once.
    """
    acc = Accumulator(task.stats_size, device, reduce)
    loader.epoch, loader.position = 0, 0
    n, w, r, per_batch = loader.num_examples, loader.world_size, loader.rank, loader.batch_size
    outs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for b, (x, y) in enumerate(loader):
        keep = None
        pos = torch.arange(b * per_batch, b * per_batch + len(y))  # this rank's positions, on the host
        if w > 1:  # this batch's positions in the padded global order are r + i*w
            kept = (r + pos * w) < n  # (B,) on the host: no device sync
            keep = None if bool(kept.all()) else kept.to(y.device)
        with autocast(device.type, precision):
            out = tta_logits(forward, x, tta)
        loss_sum = task.loss(out, y, keep)
        # targets counted: all of the batch's, or those of its kept examples (tokens for an LM)
        count = task.count(y) if keep is None else task.count(y) // len(y) * int(kept.sum())
        acc.add(task.stats(out, y, loss_sum, keep), count)
        if task.collects:
            outs.append(out.float())
            ys.append(y)
    sums, count, _ = acc.read()
    metrics = task.metrics(sums, count)
    if task.collects and outs:
        out, y = torch.cat(outs), torch.cat(ys)
        if w > 1:  # every rank's outputs at their global example index, summed over the ranks
            idx = r + torch.arange(len(out)) * w
            keep = idx < n
            full_out = out.new_zeros((n, *out.shape[1:]))
            full_y = y.new_zeros((n, *y.shape[1:]), dtype=torch.float32)
            full_out[idx[keep].to(out.device)] = out[keep.to(out.device)]
            full_y[idx[keep].to(out.device)] = y[keep.to(out.device)].float()
            out, y = reduce(full_out), reduce(full_y)
        metrics |= task.final_metrics(out, y)
    return metrics | {"examples": count}
