"""Building blocks: Dense (h = f(norm(W x + b))), ConvNormAct, Residual (y = F(x) + x), Dropout.

Next to each block sits its analytic cost (`dense_cost`, `conv_cost`), so model families can
count parameters and FLOPs from hyperparameters alone (as nanoGPT's `estimate_mfu` does).

FLOP convention (used across layerwise): one multiply-add = 2 FLOPs, counted for linear and conv
layers only. Bias adds, norms, activations, pooling, dropout and residual adds are ignored: they
are O(activations) rather than O(weights x activations), typically < 1% of a ResNet's total, and
this is the convention of torch.utils.flop_counter.FlopCounterMode, which the tests compare to.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import get_activation
from .norms import get_norm, norm_num_params

__all__ = ["Dense", "ConvNormAct", "Residual", "Dropout", "dense_cost", "conv_cost"]

# Inverted dropout (Srivastava et al. 2014), PyTorch's module re-exported as is: in training each
# entry is zeroed with probability p and the survivors are scaled by 1 / (1 - p), so the expected
# activation is unchanged and eval mode is the identity (no rescaling at test time).
Dropout = nn.Dropout


class Dense(nn.Module):
    """Fully connected layer h = dropout(f(norm(W x + b))).

    Args:
        in_features, out_features: sizes of x (B, in_features) and h (B, out_features).
        act: activation name (see `ACTIVATIONS`).
        norm: norm name (see `NORMS`), applied to the pre-activation W x + b.
        dropout: drop probability p after the activation (inverted dropout; 0 disables it).
        bias: whether the linear map has b.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        act: str = "relu",
        norm: str = "none",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.norm = get_norm(norm, out_features, kind="1d")
        self.act = get_activation(act)
        # Identity when p == 0: nn.Dropout(0.0) would still draw a mask in training.
        self.drop = Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, in_features) -> (B, out_features)
        return self.drop(self.act(self.norm(self.linear(x))))


class ConvNormAct(nn.Module):
    """conv (padding kernel_size // 2) -> norm -> act, the unit of every CNN here.

    The conv has no bias when a norm follows: the norm's mean subtraction (batch, layer) would
    cancel it, and its beta plays the same role. With norm="none" the conv keeps its bias.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        act: str = "relu",
        norm: str = "batch",
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_ch,
            out_ch,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=norm == "none",
        )
        self.norm = get_norm(norm, out_ch, kind="2d")
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, in_ch, H, W) -> (B, out_ch, H', W'), H' = (H + 2 * (k // 2) - k) // stride + 1
        return self.act(self.norm(self.conv(x)))


class Residual(nn.Module):
    """y = fn(x) + shortcut(x), shortcut = proj(x) if given else x (He et al. 2016).

    Pass `proj` (e.g. a 1x1 ConvNormAct or a Linear) when fn changes the shape of x. Shapes are
    checked rather than left to broadcasting, which could silently add a (B, 1) to a (B, F).
    """

    def __init__(self, fn: nn.Module, proj: nn.Module | None = None) -> None:
        super().__init__()
        self.fn = fn
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fn(x)
        shortcut = x if self.proj is None else self.proj(x)
        if y.shape != shortcut.shape:
            raise ValueError(
                f"Residual: fn(x) has shape {tuple(y.shape)} but the shortcut has "
                f"{tuple(shortcut.shape)}; pass proj= to map x to fn's output shape"
            )
        return y + shortcut


def dense_cost(in_features: int, out_features: int, *, norm: str, bias: bool = True) -> tuple[int, int]:
    """(parameters, forward FLOPs per example) of `Dense(in_features, out_features, ...)`."""
    params = in_features * out_features + (out_features if bias else 0)
    params += norm_num_params(norm, out_features)
    return params, 2 * in_features * out_features


def conv_cost(
    in_ch: int,
    out_ch: int,
    kernel_size: int,
    stride: int,
    hw: tuple[int, int],
    *,
    norm: str,
    groups: int = 1,
) -> tuple[int, int, tuple[int, int]]:
    """(parameters, forward FLOPs per example, output (H, W)) of a `ConvNormAct` on an (H, W) map.

    FLOPs = 2 * k^2 * (in_ch / groups) * out_ch * H_out * W_out.
    """
    pad = kernel_size // 2
    h_out = (hw[0] + 2 * pad - kernel_size) // stride + 1
    w_out = (hw[1] + 2 * pad - kernel_size) // stride + 1
    weights = kernel_size * kernel_size * (in_ch // groups) * out_ch
    params = weights + (out_ch if norm == "none" else 0) + norm_num_params(norm, out_ch)
    return params, 2 * weights * h_out * w_out, (h_out, w_out)
