"""Evaluation pieces shared by the Trainer, `layerwise eval` and the benchmarks: targets of every
task in one shape, test-time augmentation, and one pass over a (possibly rank-sharded) loader."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from layerwise.train.metrics import Accumulator
from layerwise.train.precision import autocast


def lm_eval_batch(d) -> int:
    """data.eval_batch_size counts images; a text evaluation batch is kept at <= 64k tokens."""
    return max(1, min(d.eval_batch_size, 65536 // d.block_size))


def is_image(info) -> bool:
    return info.task == "classify" and len(info.in_shape) == 3 and "audio" not in info.extra


def num_targets(y: torch.Tensor) -> int:
    """Predictions a batch is scored on: examples for (B,) ids or (B, C) soft targets,
    tokens for a language model's (B, T) next-token ids."""
    return y.shape[0] if y.is_floating_point() else y.numel()


def flatten_targets(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A language model's (B, T, V) logits and (B, T) targets -> (B*T, V), (B*T,); others unchanged."""
    if logits.dim() == 3:
        return logits.flatten(0, 1), y.flatten()
    return logits, y


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
def evaluate_loader(forward, loader, device: torch.device, precision: str = "fp32",
                    tta: str = "none", reduce=None) -> dict[str, float]:
    """Mean cross-entropy and accuracy (per token for a language model) of ``forward`` over one
    full pass of ``loader``, with optional test-time augmentation (:func:`tta_logits`).

    A loader sharded over W data-parallel ranks pads its order by wrapping around (so every rank
    runs the same number of batches, which FSDP and TP need); the padded repeats are masked out
    here (target -100) and ``reduce`` sums the totals over the ranks: every example counts once.
    """
    acc = Accumulator(device, reduce)
    loader.epoch, loader.position = 0, 0
    n, w, r, per_batch = loader.num_examples, loader.world_size, loader.rank, loader.batch_size
    for b, (x, y) in enumerate(loader):
        count = None
        if w > 1:  # this batch's positions in the padded global order are r + i*w
            i = torch.arange(b * per_batch, b * per_batch + len(y))
            keep = (r + i * w) < n  # (B,) on the host: no device sync
            if not bool(keep.all()):
                y = y.clone()
                y[(~keep).to(y.device)] = -100
            count = int(keep.sum()) * (y[0].numel() if y.dim() > 1 else 1)
        with autocast(device.type, precision):
            logits = tta_logits(forward, x, tta)
        logits, y = flatten_targets(logits, y)
        acc.add(F.cross_entropy(logits.float(), y, reduction="sum"), logits, y, count)
    return acc.read()
