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
        state = model.state_dict()  # tensors that share storage with the model's
        self.shadow = {k: v.detach().clone() for k, v in state.items()}
        params = {name for name, p in model.named_parameters() if p.is_floating_point()}
        # resolved once: update() runs every step and must not rebuild the state dict
        self._avg = ([self.shadow[k] for k in state if k in params], [state[k] for k in state if k in params])
        self._copy = ([self.shadow[k] for k in state if k not in params],  # buffers: BN statistics
                      [state[k] for k in state if k not in params])

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights of the model given at init into the average (its tensors were
        resolved there; ``load_state_dict`` copies in place, so they stay valid)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        if self._avg[0]:
            torch._foreach_lerp_(self._avg[0], self._avg[1], 1.0 - d)
        for dst, src in zip(*self._copy):
            dst.copy_(src)

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
