"""The face every layerwise model shows (after timm): features, head, analytic costs, config.

    logits = model(x) = model.forward_head(model.forward_features(x))

A subclass builds its trunk (a `blocks` ModuleList, looped over in `forward_features`) and a
classifier `fc` on `num_features` inputs, and counts its own parameters and FLOPs analytically
from its hyperparameters. `create_model` fills `config` with the registered name and the resolved
arguments, so `create_model(**model.config)` rebuilds the same architecture.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Model"]


class Model(nn.Module):
    """Base class of every registered model.

    Attributes:
        num_classes: outputs of the classifier; 0 means no classifier (forward gives features).
        num_features: size of the pooled feature vector that the classifier reads.
        fc: the classifier, nn.Linear(num_features, num_classes) (nn.Identity when 0 classes).
        config: {"name": ..., "in_shape": ..., "num_classes": ..., **family args}, set by
            `create_model`; empty for a model constructed directly.
    """

    num_classes: int
    num_features: int
    fc: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}

    # --- forward ----------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk: input (B, *in_shape) -> features before the head (family-specific shape)."""
        raise NotImplementedError

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Head: features -> logits (B, num_classes), or the pooled (B, num_features) vector
        the classifier reads when `pre_logits` (for probes and transfer learning)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, *in_shape) -> (B, num_classes)
        return self.forward_head(self.forward_features(x))

    # --- transfer learning ------------------------------------------------------------------
    def head_names(self) -> tuple[str, ...]:
        """Names of the modules and parameters that make up the head: what `reset_classifier`
        replaces, and what fine-tuning rebuilds when the classes differ. A state-dict key is part
        of the head when it equals one of these or starts with one plus ".". Everything else is
        the body (e.g. `fc` -> `fc.weight`, `fc.bias`)."""
        return ("fc",)

    def get_classifier(self) -> nn.Module:
        """The final classifier module (`fc`)."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialized one with `num_classes` outputs
        (0 removes it). The new head is on the old head's device and dtype; the trunk is kept."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        ref = next(self.parameters(), None)
        factory = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
        self.fc = nn.Linear(self.num_features, num_classes, **factory) if num_classes else nn.Identity()
        self.num_classes = num_classes
        if self.config:
            self.config["num_classes"] = num_classes

    # --- analytic costs ---------------------------------------------------------------------
    def num_params(self) -> int:
        """Number of learnable parameters, computed from the hyperparameters (not by summing
        `p.numel()`; the tests check the two agree)."""
        raise NotImplementedError

    def flops_per_example(self) -> int:
        """Forward FLOPs for one example, 2 per multiply-add of linear/conv layers; bias adds,
        norms, activations, pooling and residual adds are ignored (see `layerwise.nn.layers`).
        Training (forward + backward) costs about 3x this."""
        raise NotImplementedError
