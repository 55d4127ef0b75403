"""Normalization layers by name, built from PyTorch's own modules.

  batch  BatchNorm (Ioffe & Szegedy 2015): per feature/channel, statistics over the batch (and
         H, W for maps); running statistics (momentum 0.1) are used in eval mode.
  layer  LayerNorm (Ba et al. 2016): per example, statistics over the feature/channel dim.
  rms    RMSNorm (Zhang & Sennrich 2019): x / sqrt(mean(x^2) + eps) * gamma, no centering, no bias.
  none   identity.

For 2-d feature maps (B, C, H, W), "layer" and "rms" normalize over the C channels at each pixel
(as ConvNeXt's LayerNorm2d does), by moving channels last around nn.LayerNorm / nn.RMSNorm
(`ChannelsLastNorm`). We do not use GroupNorm(1, C) for "layer": it normalizes over C, H and W
together, which is a different operation with the same name.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .activations import unknown_choice_error

__all__ = ["NORMS", "NORM_EPS", "ChannelsLastNorm", "get_norm", "norm_num_params"]

NORMS: tuple[str, ...] = ("batch", "layer", "rms", "none")
NORM_KINDS: tuple[str, ...] = ("1d", "2d")
# One eps for every norm, so "batch" vs "layer" vs "rms" comparisons differ only in the statistic.
# (nn.RMSNorm's own default, eps=None -> finfo(dtype).eps, would make it depend on the dtype.)
NORM_EPS = 1e-5


class ChannelsLastNorm(nn.Module):
    """Apply a last-dim norm (nn.LayerNorm / nn.RMSNorm) over dim 1 (channels) of x.

    Works for (B, C, H, W) and any other (B, C, ...) layout. The permutes are views; the wrapped
    norm kernel makes the input contiguous itself.
    """

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, H, W, C) -> normalize over C -> (B, C, H, W)
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def get_norm(name: str, num_features: int, *, kind: Literal["1d", "2d"] = "1d") -> nn.Module:
    """Return a new norm module for `name` (one of `NORMS`).

    Args:
        name: "batch", "layer", "rms" or "none".
        num_features: F for (B, F) inputs (kind="1d"), C for (B, C, H, W) inputs (kind="2d").
        kind: "1d" for feature vectors in the last dim, "2d" for channel-first feature maps.

    Raises:
        ValueError: unknown `name` or `kind` (the message suggests the closest valid one).
    """
    if kind not in NORM_KINDS:
        raise unknown_choice_error("norm kind", kind, NORM_KINDS)
    if name == "batch":
        bn = nn.BatchNorm1d if kind == "1d" else nn.BatchNorm2d
        return bn(num_features, eps=NORM_EPS)
    if name == "layer":
        norm: nn.Module = nn.LayerNorm(num_features, eps=NORM_EPS)
    elif name == "rms":
        norm = nn.RMSNorm(num_features, eps=NORM_EPS)
    elif name == "none":
        return nn.Identity()
    else:
        raise unknown_choice_error("norm", name, NORMS)
    return norm if kind == "1d" else ChannelsLastNorm(norm)


def norm_num_params(name: str, num_features: int) -> int:
    """Learnable parameters of `get_norm(name, num_features)` (same for "1d" and "2d").

    batch/layer: gamma and beta (2F); rms: gamma only (F); none: 0. BatchNorm's running
    statistics are buffers, not parameters.
    """
    per_feature = {"batch": 2, "layer": 2, "rms": 1, "none": 0}
    if name not in per_feature:
        raise unknown_choice_error("norm", name, NORMS)
    return per_feature[name] * num_features
