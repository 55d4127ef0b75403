"""ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition").

    x (B, C, H, W) -> stem -> stage 1 .. stage S (blocks) -> global avg pool -> dropout -> fc

Stems: "cifar" = 3x3 conv, stride 1 (paper sec. 4.2); "imagenet" = 7x7 conv, stride 2, then 3x3
max pool, stride 2 (paper table 1). The stem outputs widths[0] channels. Stage i has layers[i]
blocks of width widths[i]; its first block has stride 2 for i > 0 (stride 1 for i == 0).
Blocks:
  basic       3x3 conv-norm-act, 3x3 conv-norm, add shortcut, act        (out = width)
  bottleneck  1x1 conv-norm-act, 3x3 conv-norm-act (stride here, as torchvision's "ResNet v1.5"),
              1x1 conv-norm, add shortcut, act                          (out = 4 * width)
When a block changes the shape, the shortcut is a 1x1 conv + norm projection ("option B");
otherwise it is the identity. The paper's CIFAR nets use zero-padding shortcuts ("option A"),
so our resnet20 has 272,474 parameters rather than the paper's ~0.27M = 269,722.

All blocks of all stages sit in one flat `blocks` ModuleList, so per-block activation
checkpointing, compile or FSDP wrapping is one loop.

Presets (each overridable, e.g. create_model("resnet20", widths=[32, 64, 128])):
  resnet, resnet8 .. resnet110   CIFAR-style 6n+2: basic, 3 stages of n blocks, widths 16/32/64
  resnet18, resnet34             ImageNet-style basic [2,2,2,2] / [3,4,6,3], widths 64..512
  resnet50                       ImageNet-style bottleneck [3,4,6,3], widths 64..512 (x4 out)
  resnet-digits                  tiny net for 8x8 single-channel images (scikit-learn digits)
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..nn import ACTIVATIONS, NORMS, ConvNormAct, Residual, conv_cost, get_activation, unknown_choice_error
from .base import Model
from .registry import register_model

__all__ = ["BLOCKS", "STEMS", "BasicBlock", "Bottleneck", "ResNet", "resnet", "resnet_cost"]

HW = tuple[int, int]


def _shortcut(in_ch: int, out_ch: int, stride: int, norm: str) -> ConvNormAct | None:
    """Projection shortcut (1x1 conv + norm) when the block changes shape, else None (identity)."""
    if stride == 1 and in_ch == out_ch:
        return None
    return ConvNormAct(in_ch, out_ch, 1, stride, act="identity", norm=norm)


def _shortcut_cost(in_ch: int, out_ch: int, stride: int, hw: HW, norm: str) -> tuple[int, int]:
    if stride == 1 and in_ch == out_ch:
        return 0, 0
    params, flops, _ = conv_cost(in_ch, out_ch, 1, stride, hw, norm=norm)
    return params, flops


class BasicBlock(nn.Module):
    """y = act(norm(conv3x3(act(norm(conv3x3(x))))) + shortcut(x)), out channels = width."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, *, act: str, norm: str) -> None:
        super().__init__()
        fn = nn.Sequential(
            ConvNormAct(in_ch, width, 3, stride, act=act, norm=norm),
            ConvNormAct(width, width, 3, 1, act="identity", norm=norm),  # no act before the add
        )
        self.residual = Residual(fn, _shortcut(in_ch, width, stride, norm))
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, in_ch, H, W) -> (B, width, H / stride, W / stride)
        return self.act(self.residual(x))

    @staticmethod
    def cost(in_ch: int, width: int, stride: int, hw: HW, norm: str) -> tuple[int, int, HW]:
        """(parameters, forward FLOPs per example, output (H, W)) of this block."""
        p1, f1, hw1 = conv_cost(in_ch, width, 3, stride, hw, norm=norm)
        p2, f2, hw2 = conv_cost(width, width, 3, 1, hw1, norm=norm)
        ps, fs = _shortcut_cost(in_ch, width, stride, hw, norm)
        return p1 + p2 + ps, f1 + f2 + fs, hw2


class Bottleneck(nn.Module):
    """y = act(1x1 expand(3x3(1x1 reduce(x))) + shortcut(x)), out channels = 4 * width."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, *, act: str, norm: str) -> None:
        super().__init__()
        out_ch = width * self.expansion
        fn = nn.Sequential(
            ConvNormAct(in_ch, width, 1, 1, act=act, norm=norm),
            ConvNormAct(width, width, 3, stride, act=act, norm=norm),
            ConvNormAct(width, out_ch, 1, 1, act="identity", norm=norm),
        )
        self.residual = Residual(fn, _shortcut(in_ch, out_ch, stride, norm))
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, in_ch, H, W) -> (B, 4 * width, H / stride, W / stride)
        return self.act(self.residual(x))

    @staticmethod
    def cost(in_ch: int, width: int, stride: int, hw: HW, norm: str) -> tuple[int, int, HW]:
        """(parameters, forward FLOPs per example, output (H, W)) of this block."""
        out_ch = width * Bottleneck.expansion
        p1, f1, hw1 = conv_cost(in_ch, width, 1, 1, hw, norm=norm)
        p2, f2, hw2 = conv_cost(width, width, 3, stride, hw1, norm=norm)
        p3, f3, hw3 = conv_cost(width, out_ch, 1, 1, hw2, norm=norm)
        ps, fs = _shortcut_cost(in_ch, out_ch, stride, hw, norm)
        return p1 + p2 + p3 + ps, f1 + f2 + f3 + fs, hw3


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
STEMS: tuple[str, ...] = ("cifar", "imagenet")


def _stage_plan(layers: tuple[int, ...], widths: tuple[int, ...]) -> list[tuple[int, int]]:
    """(width, stride) of every block in order: stride 2 on the first block of stages > 0."""
    return [
        (width, 2 if (i > 0 and j == 0) else 1)
        for i, (n, width) in enumerate(zip(layers, widths))
        for j in range(n)
    ]


def resnet_cost(
    *,
    in_shape: tuple[int, ...],
    num_classes: int,
    block: str,
    layers: tuple[int, ...],
    widths: tuple[int, ...],
    stem: str,
    norm: str,
) -> tuple[int, int]:
    """(parameters, forward FLOPs per example) of a ResNet, from its hyperparameters alone.

    Walks the same plan as `ResNet.__init__` with arithmetic only (no modules are built), so it
    also sizes models too big to instantiate (scaling sweeps).
    """
    c, h, w = in_shape
    block_cls = BLOCKS[block]
    if stem == "cifar":
        params, flops, hw = conv_cost(c, widths[0], 3, 1, (h, w), norm=norm)
    else:
        params, flops, hw = conv_cost(c, widths[0], 7, 2, (h, w), norm=norm)
        hw = ((hw[0] - 1) // 2 + 1, (hw[1] - 1) // 2 + 1)  # maxpool k=3, s=2, p=1
    in_ch = widths[0]
    for width, stride in _stage_plan(layers, widths):
        p, f, hw = block_cls.cost(in_ch, width, stride, hw, norm)
        params, flops, in_ch = params + p, flops + f, width * block_cls.expansion
    return params + (in_ch + 1) * num_classes, flops + 2 * in_ch * num_classes


class ResNet(Model):
    """Residual CNN; see the module docstring and `resnet` for the arguments."""

    def __init__(
        self,
        *,
        in_shape: tuple[int, ...],
        num_classes: int,
        block: str,
        layers: tuple[int, ...],
        widths: tuple[int, ...],
        stem: str,
        activation: str,
        norm: str,
        dropout: float,
        zero_init_residual: bool,
    ) -> None:
        super().__init__()
        layers, widths = tuple(layers), tuple(widths)
        self._validate(in_shape, block, layers, widths, stem, activation, norm, dropout)
        self.in_shape = tuple(in_shape)
        self.block, self.layers, self.widths, self.stem_name, self.norm = block, layers, widths, stem, norm
        self.num_classes = num_classes
        block_cls = BLOCKS[block]

        in_ch = self.in_shape[0]
        if stem == "cifar":
            self.stem = nn.Sequential(ConvNormAct(in_ch, widths[0], 3, 1, act=activation, norm=norm))
        else:
            self.stem = nn.Sequential(
                ConvNormAct(in_ch, widths[0], 7, 2, act=activation, norm=norm),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        blocks: list[nn.Module] = []
        in_ch = widths[0]
        for width, stride in _stage_plan(layers, widths):
            blocks.append(block_cls(in_ch, width, stride, act=activation, norm=norm))
            in_ch = width * block_cls.expansion
        self.blocks = nn.ModuleList(blocks)
        self.num_features = in_ch
        self.head_drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_ch, num_classes) if num_classes else nn.Identity()
        self._init_weights(zero_init_residual)

    @staticmethod
    def _validate(
        in_shape: tuple[int, ...],
        block: str,
        layers: tuple[int, ...],
        widths: tuple[int, ...],
        stem: str,
        activation: str,
        norm: str,
        dropout: float,
    ) -> None:
        if len(in_shape) != 3:
            raise ValueError(f"resnet expects in_shape (C, H, W), got {tuple(in_shape)!r}")
        if block not in BLOCKS:
            raise unknown_choice_error("resnet block", block, BLOCKS)
        if stem not in STEMS:
            raise unknown_choice_error("resnet stem", stem, STEMS)
        if activation not in ACTIVATIONS:
            raise unknown_choice_error("activation", activation, ACTIVATIONS)
        if norm not in NORMS:
            raise unknown_choice_error("norm", norm, NORMS)
        if len(layers) != len(widths) or not layers:
            raise ValueError(
                f"resnet needs one width per stage: got layers={layers} ({len(layers)} stages) "
                f"and widths={widths} ({len(widths)})"
            )
        for key, values in (("layers", layers), ("widths", widths)):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
                raise ValueError(f"resnet {key} must be positive ints, got {values!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")

    def _init_weights(self, zero_init_residual: bool) -> None:
        # Kaiming-normal, fan_out (He et al. 2015; torchvision's choice); norms start as identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.RMSNorm)):
                nn.init.ones_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        if zero_init_residual:
            # gamma = 0 in each block's last norm: every block starts as (act of) its shortcut,
            # which trains deep nets faster (Goyal et al. 2017, "ImageNet in 1 hour"). With
            # norm="none" there is no gamma and the block keeps its random init.
            for blk in self.blocks:
                last_norm = blk.residual.fn[-1].norm
                for name, p in last_norm.named_parameters():
                    if name.endswith("weight"):
                        nn.init.zeros_(p)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, C, H, W) -> (B, widths[0], H', W')
        for blk in self.blocks:
            x = blk(x)
        return x  # (B, num_features, h, w)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = feats.mean(dim=(2, 3))  # global average pool: (B, F, h, w) -> (B, F)
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)  # (B, num_classes)

    def _cost(self) -> tuple[int, int]:
        return resnet_cost(
            in_shape=self.in_shape,
            num_classes=self.num_classes,
            block=self.block,
            layers=self.layers,
            widths=self.widths,
            stem=self.stem_name,
            norm=self.norm,
        )

    def num_params(self) -> int:
        return self._cost()[0]

    def flops_per_example(self) -> int:
        return self._cost()[1]


@register_model("resnet")
def resnet(
    *,
    in_shape: tuple[int, ...],
    num_classes: int,
    block: str = "basic",
    layers: tuple[int, ...] = (1, 1, 1),
    widths: tuple[int, ...] = (16, 32, 64),
    stem: str = "cifar",
    activation: str = "relu",
    norm: str = "batch",
    dropout: float = 0.0,
    zero_init_residual: bool = True,
) -> ResNet:
    """Generic ResNet (defaults: CIFAR-style resnet8) on (C, H, W) inputs.

    Args:
        block: "basic" or "bottleneck" (output channels 4 * width).
        layers: blocks per stage. widths: channels per stage (len(widths) == len(layers)).
        stem: "cifar" (3x3, stride 1) or "imagenet" (7x7 stride 2 + 3x3 max pool stride 2).
        activation: one of `ACTIVATIONS`. norm: one of `NORMS` (default "batch").
        dropout: dropout probability on the pooled features before the classifier.
        zero_init_residual: start each block's last norm gamma at 0 (block = shortcut at init).
    """
    return ResNet(
        in_shape=in_shape,
        num_classes=num_classes,
        block=block,
        layers=layers,
        widths=widths,
        stem=stem,
        activation=activation,
        norm=norm,
        dropout=dropout,
        zero_init_residual=zero_init_residual,
    )


def _register_preset(name: str, **defaults: object) -> None:
    """Register `name` as `resnet` with other defaults (still overridable by the caller)."""
    register_model(name)(functools.partial(resnet, **defaults))


# CIFAR-style 6n+2 nets (paper sec. 4.2): 3 stages of n basic blocks, 16/32/64 channels.
for _n in (1, 2, 3, 5, 7, 9, 18):
    _register_preset(f"resnet{6 * _n + 2}", layers=(_n, _n, _n))

_IMAGENET = {"stem": "imagenet", "widths": (64, 128, 256, 512)}
_register_preset("resnet18", layers=(2, 2, 2, 2), **_IMAGENET)
_register_preset("resnet34", layers=(3, 4, 6, 3), **_IMAGENET)
_register_preset("resnet50", block="bottleneck", layers=(3, 4, 6, 3), **_IMAGENET)

# Small and fast for scikit-learn's 8x8 digits: 8x8 -> stage 1 (8x8) -> stage 2 (4x4).
_register_preset("resnet-digits", layers=(1, 1), widths=(32, 64))
