"""Fast CIFAR network in the style of airbench94 (Jordan 2024, KellerJordan/cifar10-airbench).

    x (B, C, H, W) -> stem -> act -> group x len(widths) -> global max pool -> fc -> * logit_scale
    group(in, out) = conv3x3(in, out) -> maxpool 2 -> BN -> act -> conv3x3(out, out) -> BN -> act

With the defaults this is airbench94's net (94% on CIFAR-10 in ~4 s on an A100 with its recipe):
widths 64/256/256, GELU, a bias-free head whose logits are multiplied by 1/9.

Stem. whiten=True (airbench): a 2x2 conv, padding 0, C -> 2 C k^2 channels, whose weights are
not trained but set from the data by `init_from_data` (patch whitening: the eigenvectors of the
k x k patch second-moment matrix scaled by 1/sqrt(eigenvalue + eps), followed by their
negatives, so that after GELU both signs of every whitened direction survive). Its bias is
trained. The weights are a buffer, so they are saved in state_dict but no optimizer sees them.
whiten=False: an ordinary trainable conv3x3 (padding 1, with bias) with the same 2 C k^2 output
channels, so the two variants differ only in the stem (32x32 -> 32x32 instead of 31x31).
stem_stride=s > 1 (not in airbench) downsamples in the stem: the whitening filters step over the
image s pixels at a time (s = k: non-overlapping k x k patches, a ViT-style "patchify" stem), the
plain conv3x3 likewise, so the first group runs at 1/s^2 of the pixels. For small images whose
classes need little spatial detail (MNIST 28x28 -> 14x14) this cuts the FLOPs ~4x (the first
group's conv1 at full resolution is most of the network's cost).

airbench details kept: conv3x3 layers have no bias and start with a Dirac (identity) kernel in
their first `in` output channels, an implicit residual ("Create an implicit residual via
identity initialization"); BatchNorm with momentum 0.6 in airbench's convention, i.e. PyTorch
momentum 1 - 0.6 = 0.4, eps 1e-12, no learnable scale (gamma fixed at 1: not a parameter at
all here), learnable beta. The final MaxPool2d(3) on the 3x3 map is a global max pool here, so
other input sizes work (MNIST 28x28: 27 -> 13 -> 6 -> 3 with whitening, 28 -> 14 -> 7 -> 3 without).
Training tricks of airbench's recipe (label smoothing, lookahead, training the whitening bias for
the first 3 epochs only: `stem_parameters`, a 64x learning rate on BN biases, alternating flips)
belong to the Trainer and the data pipeline, not here.

Presets: convnet (airbench94, widths 64/256/256), convnet-half (32/128/128).
"""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import ACTIVATIONS, get_activation, unknown_choice_error
from .base import Model
from .registry import register_model

__all__ = ["BiasOnlyBatchNorm2d", "ConvGroup", "ConvNet", "WhiteningConv2d", "convnet", "convnet_cost"]

HW = tuple[int, int]

BN_MOMENTUM = 0.4  # PyTorch's convention: running = (1 - m) running + m batch; airbench's 0.6
BN_EPS = 1e-12  # airbench's value: BN statistics are kept in float32 even under fp16/bf16
WHITEN_EPS = 5e-4  # airbench's eps added to the patch eigenvalues (normalized inputs)


class BiasOnlyBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with gamma fixed at 1 and a learnable beta (airbench's BatchNorm).

    Built with affine=False so no weight exists (nothing for an optimizer, weight decay or a
    parameter count to trip over), then given a `bias` parameter, which nn.BatchNorm2d's own
    forward passes to F.batch_norm (weight=None means a scale of 1).
    """

    def __init__(self, num_features: int, *, momentum: float = BN_MOMENTUM, eps: float = BN_EPS) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False)
        self.bias = nn.Parameter(torch.zeros(num_features))
        # cuDNN's batch norm refuses weight=None next to a bias ("tensor does not have a device"
        # forward, an invalid weight gradient backward), so the fixed scale of 1 is a real tensor
        self.register_buffer("scale", torch.ones(num_features), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W); batch statistics in training, running statistics in eval
        return F.batch_norm(x, self.running_mean, self.running_var, self.scale, self.bias,
                            self.training, self.momentum, self.eps)


class WhiteningConv2d(nn.Conv2d):
    """kxk conv, padding 0, with a fixed (buffer) weight set by `init_from_data` and a trainable bias.

    Out channels = 2 C k^2: the C k^2 whitening filters and their negatives. Before
    `init_from_data` the weight keeps PyTorch's random conv init, so the module still runs.
    """

    def __init__(self, in_ch: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(in_ch, 2 * in_ch * kernel_size**2, kernel_size, stride=stride, padding=0, bias=True)
        weight = self.weight.detach()
        del self.weight  # a buffer, not a parameter: saved in state_dict, never optimized
        self.register_buffer("weight", weight)
        nn.init.zeros_(self.bias)  # as airbench's Conv.reset_parameters

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, eps: float = WHITEN_EPS) -> None:
        """Set the filters from images x (N, C, H, W): W = [V / sqrt(L + eps); -V / sqrt(L + eps)]
        with V, L the eigenvectors/values of the (uncentered, as airbench) second moment
        E[p p^T] of all k x k patches p (every offset, whatever the stride), largest eigenvalue first."""
        c, k = self.in_channels, self.kernel_size[0]
        if x.dim() != 4 or x.shape[1] != c:
            raise ValueError(f"init_from_data expects images (N, {c}, H, W), got {tuple(x.shape)}")
        # float64 for the eigendecomposition (cheap: the matrix is C k^2 square); MPS has none.
        work = x.device if x.device.type in ("cpu", "cuda") else torch.device("cpu")
        xd = x.detach().to(work, torch.float64)
        patches = xd.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)  # (P, C k k), conv order
        moment = patches.T @ patches / patches.shape[0]  # (C k k, C k k)
        eigenvalues, eigenvectors = torch.linalg.eigh(moment)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)  # largest first
        filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)).T  # (C k k, C k k)
        filters = filters.reshape(-1, c, k, k)
        self.weight.copy_(torch.cat((filters, -filters)).to(self.weight))


class ConvGroup(nn.Module):
    """conv3x3 -> maxpool 2 -> BN -> act -> conv3x3 -> BN -> act: (B, in, H, W) -> (B, out, H/2, W/2)."""

    def __init__(self, in_ch: int, out_ch: int, *, act: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BiasOnlyBatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = BiasOnlyBatchNorm2d(out_ch)
        self.act = get_activation(act)
        for conv in (self.conv1, self.conv2):
            w = conv.weight.data  # keep the random init elsewhere, identity on the first `in` outputs
            nn.init.dirac_(w[: w.size(1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))  # (B, out, H/2, W/2)
        return self.act(self.norm2(self.conv2(x)))  # (B, out, H/2, W/2)

    @staticmethod
    def cost(in_ch: int, out_ch: int, hw: HW) -> tuple[int, int, HW]:
        """(parameters, forward FLOPs per example, output (H, W)); conv1 runs before the pool."""
        out_hw = (hw[0] // 2, hw[1] // 2)
        params = 9 * in_ch * out_ch + out_ch + 9 * out_ch * out_ch + out_ch  # convs + 2 betas
        flops = 2 * 9 * in_ch * out_ch * hw[0] * hw[1] + 2 * 9 * out_ch * out_ch * out_hw[0] * out_hw[1]
        return params, flops, out_hw


def _stem_plan(
    in_shape: tuple[int, ...], whiten: bool, whiten_kernel: int, stem_stride: int = 1
) -> tuple[int, int, int, HW]:
    """(stem out channels, trainable params, FLOPs, output (H, W)) of the stem."""
    c, h, w = in_shape
    out, s = 2 * c * whiten_kernel**2, stem_stride
    if whiten:  # weight is a buffer: only the bias is learnable; padding 0
        k = whiten_kernel
        hw = ((h - k) // s + 1, (w - k) // s + 1)
        return out, out, 2 * c * k * k * out * hw[0] * hw[1], hw
    hw = ((h - 1) // s + 1, (w - 1) // s + 1)  # conv3x3, padding 1
    return out, 9 * c * out + out, 2 * 9 * c * out * hw[0] * hw[1], hw


def convnet_cost(
    *,
    in_shape: tuple[int, ...],
    num_classes: int,
    widths: tuple[int, ...],
    whiten: bool,
    whiten_kernel: int,
    stem_stride: int = 1,
) -> tuple[int, int]:
    """(learnable parameters, forward FLOPs per example) of a ConvNet, from hyperparameters alone."""
    in_ch, params, flops, hw = _stem_plan(in_shape, whiten, whiten_kernel, stem_stride)
    for width in widths:
        p, f, hw = ConvGroup.cost(in_ch, width, hw)
        params, flops, in_ch = params + p, flops + f, width
    return params + in_ch * num_classes, flops + 2 * in_ch * num_classes


class ConvNet(Model):
    """airbench-style CIFAR network; see the module docstring and `convnet` for the arguments."""

    def __init__(
        self,
        *,
        in_shape: tuple[int, ...],
        num_classes: int,
        widths: tuple[int, ...],
        whiten: bool,
        whiten_kernel: int,
        activation: str,
        logit_scale: float,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        self._validate(in_shape, widths, whiten, whiten_kernel, activation, stem_stride)
        self.in_shape = tuple(in_shape)
        self.widths, self.whiten, self.whiten_kernel = widths, whiten, whiten_kernel
        self.stem_stride = stem_stride
        self.logit_scale = logit_scale
        self.num_classes = num_classes

        c = self.in_shape[0]
        stem_ch = 2 * c * whiten_kernel**2
        if whiten:
            self.stem: nn.Conv2d = WhiteningConv2d(c, whiten_kernel, stem_stride)
        else:
            self.stem = nn.Conv2d(c, stem_ch, 3, stride=stem_stride, padding=1, bias=True)
        self.stem_act = get_activation(activation)
        chans = (stem_ch, *widths)
        self.blocks = nn.ModuleList(ConvGroup(i, o, act=activation) for i, o in itertools.pairwise(chans))
        self.num_features = widths[-1]
        self.fc = nn.Linear(widths[-1], num_classes, bias=False) if num_classes else nn.Identity()

    @staticmethod
    def _validate(
        in_shape: tuple[int, ...],
        widths: tuple[int, ...],
        whiten: bool,
        whiten_kernel: int,
        activation: str,
        stem_stride: int = 1,
    ) -> None:
        if len(in_shape) != 3:
            raise ValueError(f"convnet expects in_shape (C, H, W), got {tuple(in_shape)!r}")
        if not widths or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in widths):
            raise ValueError(f"convnet widths must be a non-empty tuple of positive ints, got {widths!r}")
        if whiten_kernel < 1:
            raise ValueError(f"whiten_kernel must be >= 1, got {whiten_kernel}")
        if isinstance(stem_stride, bool) or not isinstance(stem_stride, int) or stem_stride < 1:
            raise ValueError(f"convnet stem_stride must be a positive int (1 = no downsampling in the stem), "
                             f"got {stem_stride!r}")
        if activation not in ACTIVATIONS:
            raise unknown_choice_error("activation", activation, ACTIVATIONS)
        hw = _stem_plan(in_shape, whiten, whiten_kernel, stem_stride)[3]
        for _ in widths:
            hw = (hw[0] // 2, hw[1] // 2)
        if min(hw) < 1:
            need = stem_stride * (2 ** len(widths) - 1) + (whiten_kernel if whiten else 1)
            raise ValueError(f"convnet: input {tuple(in_shape[1:])} is too small for {len(widths)} "
                             f"pooling groups after a stem of stride {stem_stride}; it needs H, W >= {need} "
                             f"(or fewer widths, or a smaller model.stem_stride)")

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, eps: float = WHITEN_EPS) -> None:
        """Set the whitening stem from normalized training images x (N, C, H, W), N up to a few
        thousand (airbench uses 5000). A no-op when whiten=False."""
        if isinstance(self.stem, WhiteningConv2d):
            self.stem.init_from_data(x, eps)

    def stem_parameters(self) -> list[nn.Parameter]:
        """The stem's trainable parameters (the whitening bias; a plain stem's weight and bias),
        which train.freeze_stem_after stops training (airbench: after 3 epochs)."""
        return list(self.stem.parameters())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem(x))  # (B, C, H, W) -> (B, 2 C k^2, H', W')
        for group in self.blocks:
            x = group(x)  # halves H and W
        return x  # (B, widths[-1], h, w)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = feats.amax(dim=(2, 3))  # global max pool: (B, F, h, w) -> (B, F)
        return x if pre_logits else self.fc(x) * self.logit_scale  # (B, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """Fresh bias-free head with `num_classes` outputs (0 removes it), as the original."""
        super().reset_classifier(num_classes)
        if num_classes:
            old = self.fc.weight
            self.fc = nn.Linear(self.num_features, num_classes, bias=False, device=old.device, dtype=old.dtype)

    def _cost(self) -> tuple[int, int]:
        return convnet_cost(
            in_shape=self.in_shape,
            num_classes=self.num_classes,
            widths=self.widths,
            whiten=self.whiten,
            whiten_kernel=self.whiten_kernel,
            stem_stride=self.stem_stride,
        )

    def num_params(self) -> int:
        """Learnable parameters (the whitening weights are a buffer and not counted)."""
        return self._cost()[0]

    def flops_per_example(self) -> int:
        return self._cost()[1]


@register_model("convnet")
def convnet(
    *,
    in_shape: tuple[int, ...],
    num_classes: int,
    widths: tuple[int, ...] = (64, 256, 256),
    whiten: bool = True,
    whiten_kernel: int = 2,
    activation: str = "gelu",
    logit_scale: float = 1 / 9,
    stem_stride: int = 1,
) -> ConvNet:
    """airbench94's network (the defaults) on (C, H, W) inputs.

    Args:
        widths: channels of each conv group; each group halves H and W.
        whiten: fixed patch-whitening stem set by `init_from_data` (else a trainable conv3x3).
        whiten_kernel: k of the k x k whitening patches; the stem has 2 C k^2 channels.
        activation: one of `ACTIVATIONS` (airbench: exact GELU).
        logit_scale: fixed factor on the logits (airbench: 1/9, a temperature for the loss).
        stem_stride: stride of the stem (1 = airbench; 2 on 28x28 digits: the groups start at 14x14,
            ~1/4 of the FLOPs). ValueError if the input is then too small for the groups.
    """
    return ConvNet(
        in_shape=in_shape,
        num_classes=num_classes,
        widths=widths,
        whiten=whiten,
        whiten_kernel=whiten_kernel,
        activation=activation,
        logit_scale=logit_scale,
        stem_stride=stem_stride,
    )


register_model("convnet-half")(functools.partial(convnet, widths=(32, 128, 128)))
