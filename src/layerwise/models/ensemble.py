"""An ensemble of M independently initialized copies of one model, trained side by side
(``model.ensemble=M``, an argument of every family: ``create_model`` builds the members).

    training:   out = model(x)   (B, M, K)   one output per member; each member learns from its
                                             own loss (Task.member_loss), so members stay diverse
    evaluation: out = model(x)   (B, K)      the mean of the members' outputs (logits, or
                                             standardized regression targets)

A deep ensemble (Lakshminarayanan, Pritzel & Blundell 2017, "Simple and Scalable Predictive
Uncertainty Estimation using Deep Ensembles") in one run, one optimizer and one model file: the
"MLP^k" of Gorishniy et al. 2024 (TabM, "Advancing Tabular Deep Learning with
Parameter-Efficient Ensembling"), who show such ensembles close most of the gap between MLPs
and gradient-boosted trees on tables. It costs M times the parameters and FLOPs of one member.
Averaging logits is the geometric mean of the members' probabilities (renormalized); averaging
standardized log targets (task.target_transform=log) is the geometric mean of their predictions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Model

__all__ = ["Ensemble"]


class Ensemble(Model):
    """M members of one family; `members[i]` is a complete model with its own head."""

    def __init__(self, members: list[Model]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)
        for m in members:
            # a member that applies a penalty in backward (mf, neumf) scales it by its share of the
            # training loss, which Task.member_loss makes 1/M: penalty and data term keep their ratio
            if hasattr(m, "loss_share"):
                m.loss_share = 1.0 / len(members)
        self.num_members = len(members)
        self.num_classes, self.num_features = members[0].num_classes, members[0].num_features
        self.in_shape = getattr(members[0], "in_shape", None)
        if hasattr(members[0], "init_from_data"):  # e.g. convnet's whitening, ngram-bag's NB ratios
            self.init_from_data = self._init_members_from_data

    def _init_members_from_data(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> None:
        """Each member's ``init_from_data`` on the same training sample."""
        import inspect

        for m in self.members:
            if "targets" in inspect.signature(m.init_from_data).parameters:
                m.init_from_data(x, targets=targets)
            else:
                m.init_from_data(x)

    def forward(self, x: Any) -> torch.Tensor:
        # each member's own forward (whatever its features are: tensors, (tokens, mask) pairs, graphs).
        # Not forward_head over slices of one stacked feature tensor: backward would then build a full
        # (B, M, F) gradient per member, memory ~ M^2 (4.8 GB instead of 0.9 GB at M=250, width 256)
        out = torch.stack([m(x) for m in self.members], 1)  # (B, M, K)
        return out if self.training else out.mean(1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.forward_features(x) for m in self.members], 1)  # (B, M, num_features)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, M, F) -> (B, M, K) in training, their mean (B, K) in evaluation; with
        ``pre_logits`` the members' mean feature vector (B, F)."""
        if pre_logits:
            return feats.mean(1)
        out = torch.stack([m.forward_head(feats[:, i]) for i, m in enumerate(self.members)], 1)
        return out if self.training else out.mean(1)

    def head_names(self) -> tuple[str, ...]:
        """Every member's head, e.g. ``members.0.fc``, ``members.1.fc``."""
        return tuple(f"members.{i}.{h}" for i, m in enumerate(self.members) for h in m.head_names())

    def get_classifier(self) -> nn.Module:
        return nn.ModuleList([m.get_classifier() for m in self.members])

    def reset_classifier(self, num_classes: int) -> None:
        for m in self.members:
            m.reset_classifier(num_classes)
        self.num_classes = num_classes
        if self.config:
            self.config["num_classes"] = num_classes

    def num_params(self) -> int:
        return sum(m.num_params() for m in self.members)

    def flops_per_example(self) -> int:
        return sum(m.flops_per_example() for m in self.members)
