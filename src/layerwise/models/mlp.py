"""Multi-layer perceptron: the seed's h_l = f(W_l h_{l-1} + b_l), stacked `depth` times.

    x (B, *in_shape) -> flatten (B, D) -> Dense x depth (B, width) -> fc (B, num_classes)

With residual=True every hidden layer after the first becomes h_l = h_{l-1} + Dense(h_{l-1})
(He et al. 2016), the variant a depth experiment compares with the plain stack (e.g. 40 layers):
the identity path lets gradients reach early layers that the plain stack starves.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nn import ACTIVATIONS, NORMS, Dense, Residual, dense_cost, unknown_choice_error
from .base import Model
from .registry import register_model

__all__ = ["MLP", "mlp", "mlp_cost"]


def mlp_cost(in_features: int, num_classes: int, *, depth: int, width: int, norm: str) -> tuple[int, int]:
    """(parameters, forward FLOPs per example) of an MLP, from its hyperparameters alone.

    params = sum over hidden layers of (d_in * width + width + norm) + (d_last + 1) * num_classes,
    FLOPs  = 2 * (D * width + (depth - 1) * width^2 + d_last * num_classes),
    with d_in = D for the first layer, width after, d_last = width (D when depth == 0).
    Residual wrappers add no parameters (identity shortcut) and their adds are not counted.
    """
    params = flops = 0
    d_in = in_features
    for _ in range(depth):
        p, f = dense_cost(d_in, width, norm=norm)
        params, flops, d_in = params + p, flops + f, width
    return params + (d_in + 1) * num_classes, flops + 2 * d_in * num_classes


class MLP(Model):
    """Fully connected classifier; see the module docstring and `mlp` for the arguments."""

    def __init__(
        self,
        *,
        in_shape: tuple[int, ...],
        num_classes: int,
        depth: int,
        width: int,
        activation: str,
        norm: str,
        dropout: float,
        residual: bool,
    ) -> None:
        super().__init__()
        if depth < 0 or width < 1:
            raise ValueError(f"mlp needs depth >= 0 and width >= 1, got depth={depth}, width={width}")
        if activation not in ACTIVATIONS:
            raise unknown_choice_error("activation", activation, ACTIVATIONS)
        if norm not in NORMS:
            raise unknown_choice_error("norm", norm, NORMS)
        self.in_shape = tuple(in_shape)
        self.in_features = math.prod(self.in_shape)  # D: the input is flattened
        self.depth, self.width, self.norm = depth, width, norm
        self.num_classes = num_classes

        blocks: list[nn.Module] = []
        d_in = self.in_features
        for i in range(depth):
            dense = Dense(d_in, width, act=activation, norm=norm, dropout=dropout)
            # The first layer changes D -> width, so it cannot be an identity-shortcut residual.
            blocks.append(Residual(dense) if residual and i > 0 else dense)
            d_in = width
        self.blocks = nn.ModuleList(blocks)
        self.num_features = d_in
        self.fc = nn.Linear(d_in, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)  # (B, *in_shape) -> (B, D)
        for block in self.blocks:
            h = block(h)  # (B, width)
        return h

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return feats if pre_logits else self.fc(feats)  # (B, num_classes)

    def num_params(self) -> int:
        return mlp_cost(
            self.in_features, self.num_classes, depth=self.depth, width=self.width, norm=self.norm
        )[0]

    def flops_per_example(self) -> int:
        return mlp_cost(
            self.in_features, self.num_classes, depth=self.depth, width=self.width, norm=self.norm
        )[1]


@register_model("mlp")
def mlp(
    *,
    in_shape: tuple[int, ...],
    num_classes: int,
    depth: int = 2,
    width: int = 256,
    activation: str = "relu",
    norm: str = "none",
    dropout: float = 0.0,
    residual: bool = False,
) -> MLP:
    """MLP on inputs of any shape (flattened to prod(in_shape) features).

    Args:
        depth: number of hidden layers (0: a linear classifier on the raw input).
        width: units per hidden layer.
        activation: f, one of `ACTIVATIONS`.
        norm: norm of each pre-activation, one of `NORMS` ("none", "batch", "layer", "rms").
        dropout: inverted-dropout probability after each hidden activation.
        residual: wrap every hidden layer after the first as h + Dense(h).
    """
    return MLP(in_shape=in_shape, num_classes=num_classes, depth=depth, width=width, activation=activation,
               norm=norm, dropout=dropout, residual=residual)
