"""Batched on-device augmentation: whole-batch tensor ops, no per-image Python loop.

Random numbers come from a CPU ``torch.Generator`` seeded by (seed, epoch, batch index), so a
resumed run draws exactly the augmentation it would have drawn (no RNG state to save), and the
result does not depend on the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_translate(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by an independent (dy, dx) in [-max_shift, max_shift], zero fill.

    x: (B, C, H, W). One gather over a zero-padded copy: out[b, c, i, j] = pad[b, c, i+s+dy_b, j+s+dx_b].
    """
    if max_shift <= 0:
        return x
    B, C, H, W = x.shape
    s = max_shift
    d = torch.randint(-s, s + 1, (B, 2), generator=gen).to(x.device, non_blocking=True)  # (B, 2)
    pad = F.pad(x, (s, s, s, s))  # (B, C, H+2s, W+2s)
    iy = torch.arange(H, device=x.device)[None, :] + s + d[:, :1]  # (B, H)
    ix = torch.arange(W, device=x.device)[None, :] + s + d[:, 1:]  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None, None]
    c = torch.arange(C, device=x.device)[None, :, None, None]
    return pad[b, c, iy[:, None, :, None], ix[:, None, None, :]]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2. x: (B, C, H, W)."""
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device, non_blocking=True)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
