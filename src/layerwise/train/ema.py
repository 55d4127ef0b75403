"""Exponential moving average of weights (Polyak averaging), evaluated in place of the raw weights."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class EMA:
    """shadow <- d * shadow + (1 - d) * weights after each optimizer step.

    The effective decay ramps up as min(decay, (1 + n) / (10 + n)) (TensorFlow's
    ExponentialMovingAverage with num_updates) so early averages are not dominated by the random
    init. Buffers (BatchNorm running statistics) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        params = {name for name, p in model.named_parameters() if p.is_floating_point()}
        self.averaged = [k for k in self.shadow if k in params]  # the rest (buffers) is copied
        self.copied = [k for k in self.shadow if k not in params]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        state = model.state_dict()
        if self.averaged:
            torch._foreach_lerp_([self.shadow[k] for k in self.averaged],
                                 [state[k] for k in self.averaged], 1.0 - d)
        for k in self.copied:
            self.shadow[k].copy_(state[k])

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Temporarily load the averaged weights into ``model`` (e.g. to evaluate it)."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(backup)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
