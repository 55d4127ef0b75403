"""Neural operators for fields on a periodic 1-D grid: the Fourier Neural Operator and a plain
1-D convnet baseline. Both map (B, C_in, R) input functions to (B, num_classes, R) output
functions, one value per grid point and output channel.

``fno`` (Li et al. 2021, "Fourier Neural Operator for Parametric Partial Differential Equations",
ICLR, section 4 and their fourier_1d.py):

    v0 = P([a(x); x])                       lift: the input and the grid coordinate x_j = j / R,
                                            pointwise to `width` channels           (B, W, R)
    v_{l+1} = act(K_l v_l + W_l v_l)        `layers` Fourier layers: spectral conv K_l on the
                                            lowest `modes` modes + a pointwise linear W_l; no
                                            activation after the last (as Li et al.)
    u = fc(act(Q v_L))                      project pointwise: W -> `proj_width` -> num_classes

Every weight acts on Fourier modes or on single points, never on a span of grid points, so the
same weights run at any resolution R (with R // 2 + 1 >= modes): trained at 256 points, the model
is evaluated at 512 or 1024 (`layerwise eval RUN --data.resolution=1024`).

``cnn1d``: the same lift and projection around `depth` residual blocks h + conv(act(conv(h))) of
circularly padded 1-D convolutions (kernel `kernel_size`) at full resolution: a local operator
whose receptive field, 1 + 2 (kernel_size - 1) sum_i d_i points over the blocks' dilations d_i, is
fixed in points, not in x. Plain (`dilation_growth` 1): d_i = 1, 33 points for depth 4, kernel 5.
Dilated (`dilation_growth` 2, as WaveNet, van den Oord et al. 2016): d_i = 2^i, so 8 blocks of
kernel 5 see 2,041 points, the whole periodic domain at 256 points, at the same cost.

Cost: ``flops_per_example`` is counted at the resolution of ``in_shape`` (the training data's);
pointwise layers scale with R, the spectral convs do not (the FFTs are not counted).
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import (
    ACTIVATIONS,
    SpectralConv1d,
    get_activation,
    spectral_conv_cost,
    unknown_choice_error,
)
from .base import Model
from .registry import register_model

__all__ = ["FNO", "CNN1d", "cnn1d", "cnn1d_cost", "fno", "fno_cost"]


def _field_shape(name: str, in_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(in_shape) != 2:
        raise ValueError(f"{name} takes fields on a 1-D grid, in_shape (channels, points); got {tuple(in_shape)}")
    return int(in_shape[0]), int(in_shape[1])


def _head_cost(width: int, proj_width: int, num_classes: int, R: int) -> tuple[int, int]:
    """Q (width -> proj_width) and fc (proj_width -> num_classes), pointwise at R points."""
    params = width * proj_width + proj_width + (proj_width * num_classes + num_classes if num_classes else 0)
    return params, 2 * R * (width * proj_width + proj_width * num_classes)


def fno_cost(in_ch: int, R: int, num_classes: int, *, modes: int, width: int, layers: int, proj_width: int,
             grid: bool) -> tuple[int, int]:
    """(parameters, forward FLOPs per example at R points) of `FNO`, from its hyperparameters:
    lift (in_ch + grid) * W + W; per layer 2 W^2 modes (complex spectral weights) + W^2 + W
    (pointwise); Q W * P + P; fc P * K + K. FLOPs 2 per multiply-add; spectral 8 W^2 modes."""
    c0 = in_ch + int(grid)
    params, flops = c0 * width + width, 2 * R * c0 * width
    sp, sf = spectral_conv_cost(width, width, modes)
    params += layers * (sp + width * width + width)
    flops += layers * (sf + 2 * R * width * width)
    hp, hf = _head_cost(width, proj_width, num_classes, R)
    return params + hp, flops + hf


def cnn1d_cost(in_ch: int, R: int, num_classes: int, *, width: int, depth: int, kernel_size: int,
               proj_width: int) -> tuple[int, int]:
    """(parameters, forward FLOPs per example at R points) of `CNN1d`: lift in_ch * W + W; per
    block two convs of W^2 k + W; the same head as the FNO."""
    params, flops = in_ch * width + width, 2 * R * in_ch * width
    params += depth * 2 * (width * width * kernel_size + width)
    flops += depth * 2 * 2 * R * width * width * kernel_size
    hp, hf = _head_cost(width, proj_width, num_classes, R)
    return params + hp, flops + hf


class _FieldModel(Model):
    """The shared face: pointwise lift (a 1x1 conv), a trunk of `blocks`, a pointwise head.

    forward_features: (B, C_in, R) -> (B, width, R); forward_head: -> (B, num_classes, R), or
    the (B, proj_width, R) features fc reads with ``pre_logits``. ``fc`` is an nn.Linear applied
    at every point (channels last), so `reset_classifier` works as for every family."""

    def _build_head(self, width: int, proj_width: int, num_classes: int, activation: str) -> None:
        self.proj = nn.Conv1d(width, proj_width, 1)  # Q
        self.act = get_activation(activation)
        self.num_features, self.num_classes = proj_width, num_classes
        self.fc = nn.Linear(proj_width, num_classes) if num_classes else nn.Identity()

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        h = self.act(self.proj(feats))  # (B, P, R)
        if pre_logits:
            return h
        return self.fc(h.transpose(1, 2)).transpose(1, 2)  # (B, R, P) -> (B, R, K) -> (B, K, R)


class FNO(_FieldModel):
    """Fourier Neural Operator, 1-D; see the module docstring and `fno` for the arguments."""

    def __init__(self, *, in_shape: tuple[int, ...], num_classes: int, modes: int, width: int, layers: int,
                 proj_width: int, activation: str, grid: bool) -> None:
        super().__init__()
        self.in_ch, self.R = _field_shape("fno", in_shape)
        if modes < 1 or width < 1 or layers < 1 or proj_width < 1:
            raise ValueError(f"fno needs modes, width, layers and proj_width >= 1; got {modes}, {width}, {layers}, "
                             f"{proj_width}")
        if activation not in ACTIVATIONS:
            raise unknown_choice_error("activation", activation, ACTIVATIONS)
        self.in_shape = tuple(in_shape)
        self.modes, self.width, self.layers, self.proj_width, self.grid = modes, width, layers, proj_width, grid
        self.lift = nn.Conv1d(self.in_ch + int(grid), width, 1)  # P
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"spectral": SpectralConv1d(width, width, modes), "pointwise": nn.Conv1d(width, width, 1)})
            for _ in range(layers))
        self._build_head(width, proj_width, num_classes, activation)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_ch:
            raise ValueError(f"fno takes (B, {self.in_ch}, R) fields, got {tuple(x.shape)}")
        if self.grid:  # x_j = j / R on the periodic unit interval, whatever R is
            R = x.shape[-1]
            pos = torch.arange(R, device=x.device, dtype=x.dtype) / R
            x = torch.cat([x, pos.expand(x.shape[0], 1, R)], 1)  # (B, C_in + 1, R)
        h = self.lift(x)  # (B, W, R)
        for i, block in enumerate(self.blocks):
            h = block["spectral"](h).to(h.dtype) + block["pointwise"](h)
            if i < self.layers - 1:
                h = self.act(h)
        return h

    def num_params(self) -> int:
        return self._cost()[0]

    def flops_per_example(self) -> int:
        return self._cost()[1]

    def _cost(self) -> tuple[int, int]:
        return fno_cost(self.in_ch, self.R, self.num_classes, modes=self.modes, width=self.width,
                        layers=self.layers, proj_width=self.proj_width, grid=self.grid)


class CNN1d(_FieldModel):
    """Residual 1-D convnet at full resolution, circular padding; see the module docstring."""

    def __init__(self, *, in_shape: tuple[int, ...], num_classes: int, width: int, depth: int, kernel_size: int,
                 proj_width: int, activation: str, dilation_growth: int = 1) -> None:
        super().__init__()
        self.in_ch, self.R = _field_shape("cnn1d", in_shape)
        if width < 1 or depth < 0 or proj_width < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"cnn1d needs width, proj_width >= 1, depth >= 0 and an odd kernel_size; got {width}, "
                             f"{proj_width}, {depth}, {kernel_size}")
        if dilation_growth < 1:
            raise ValueError(f"cnn1d needs dilation_growth >= 1 (1: plain convolutions), got {dilation_growth}")
        if activation not in ACTIVATIONS:
            raise unknown_choice_error("activation", activation, ACTIVATIONS)
        self.in_shape = tuple(in_shape)
        self.width, self.depth, self.kernel_size, self.proj_width = width, depth, kernel_size, proj_width
        self.dilations = [dilation_growth ** i for i in range(depth)]
        self.lift = nn.Conv1d(self.in_ch, width, 1)

        def conv(d: int) -> nn.Conv1d:  # periodic domain: circular padding keeps the length
            return nn.Conv1d(width, width, kernel_size, padding=d * (kernel_size // 2), dilation=d,
                             padding_mode="circular")

        self.blocks = nn.ModuleList(nn.Sequential(conv(d), get_activation(activation), conv(d))
                                    for d in self.dilations)
        self._build_head(width, proj_width, num_classes, activation)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_ch:
            raise ValueError(f"cnn1d takes (B, {self.in_ch}, R) fields, got {tuple(x.shape)}")
        h = self.lift(x)  # (B, W, R)
        for block in self.blocks:
            h = self.act(h + block(h))
        return h

    @property
    def receptive_field(self) -> int:
        """Grid points an output value depends on (on a line; the periodic domain wraps it)."""
        return 1 + 2 * (self.kernel_size - 1) * sum(self.dilations)

    def num_params(self) -> int:
        return self._cost()[0]

    def flops_per_example(self) -> int:
        return self._cost()[1]

    def _cost(self) -> tuple[int, int]:
        return cnn1d_cost(self.in_ch, self.R, self.num_classes, width=self.width, depth=self.depth,
                          kernel_size=self.kernel_size, proj_width=self.proj_width)


@register_model("fno")
def fno(*, in_shape: tuple[int, ...], num_classes: int, modes: int = 16, width: int = 64, layers: int = 4,
        proj_width: int = 128, activation: str = "gelu", grid: bool = True) -> FNO:
    """1-D Fourier Neural Operator (Li et al. 2021) on fields (B, C, R); Li et al.'s Burgers
    settings are the defaults.

    Args:
        modes: Fourier modes each spectral conv keeps (16); inputs need R // 2 + 1 >= modes.
        width: channels of the Fourier layers (64).
        layers: Fourier layers (4).
        proj_width: channels of the pointwise projection before the output (128).
        activation: one of `ACTIVATIONS` (gelu, as Li et al.).
        grid: append the coordinate x_j = j / R as an input channel (Li et al. do).
    """
    return FNO(in_shape=in_shape, num_classes=num_classes, modes=modes, width=width, layers=layers,
               proj_width=proj_width, activation=activation, grid=grid)


@register_model("cnn1d")
def cnn1d(*, in_shape: tuple[int, ...], num_classes: int, width: int = 64, depth: int = 4, kernel_size: int = 5,
          proj_width: int = 128, activation: str = "gelu", dilation_growth: int = 1) -> CNN1d:
    """Plain residual 1-D convnet on fields (B, C, R), circular padding: the local baseline of
    the FNO.

    Args:
        width: channels (64).
        depth: residual blocks of two convolutions (4).
        kernel_size: odd kernel size in grid points (5).
        proj_width: channels of the pointwise projection before the output (128).
        activation: one of `ACTIVATIONS`.
        dilation_growth: block i's convolutions are dilated by dilation_growth^i (1: plain, a
            receptive field of 1 + 2 depth (kernel_size - 1) points; 2: it doubles per block and
            spans 256 points after 7 blocks of kernel 5). The FLOPs do not change.
    """
    return CNN1d(in_shape=in_shape, num_classes=num_classes, width=width, depth=depth, kernel_size=kernel_size,
                 proj_width=proj_width, activation=activation, dilation_growth=dilation_growth)
