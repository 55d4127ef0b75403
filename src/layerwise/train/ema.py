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


class Lookahead:
    """airbench's lookahead: every ``every`` steps from ``start_step`` on, the slow weights move
    toward the live ones and the live ones are reset to them (Zhang et al. 2019's Lookahead
    optimizer, with an averaging strength that grows during training):

        slow <- rho * slow + (1 - rho) * live;  live <- slow,   rho = decay^every * (step / total)^3

    so early on it barely averages (training moves fast) and near the end it averages strongly.
    Every floating-point tensor of the state dict takes part, BatchNorm running statistics
    included, as in airbench. ``sync()`` (at each epoch's end and at the end of training) resets
    the live weights to the slow ones once more. The slow copy exists from the start (so
    checkpoints always have the same tensors) and is set from the live weights at ``start_step``.
    """

    def __init__(self, model: nn.Module, *, every: int, start_step: int, decay: float, total_steps: int):
        if every < 1 or not 0 < decay < 1 or total_steps < 1:
            raise ValueError(f"Lookahead needs every >= 1, 0 < decay < 1 and total_steps >= 1; got {every}, "
                             f"{decay}, {total_steps}")
        self.every, self.start_step, self.decay, self.total_steps = every, start_step, decay, total_steps
        state = model.state_dict()  # tensors that share storage with the model's
        names = [k for k, v in state.items() if v.is_floating_point()]
        self._live = [state[k] for k in names]
        self.slow = {k: state[k].detach().clone() for k in names}
        self._slow = list(self.slow.values())
        self.started = False

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Call after optimizer step number ``step`` (1-based: steps done so far)."""
        if step < self.start_step or step % self.every:
            return
        if not self.started:  # the slow weights begin where the live ones are now
            torch._foreach_copy_(self._slow, self._live)
            self.started = True
            return
        rho = self.decay ** self.every * min(step / self.total_steps, 1.0) ** 3
        torch._foreach_lerp_(self._slow, self._live, 1.0 - rho)
        self.sync()

    @torch.no_grad()
    def sync(self) -> None:
        """live <- slow (a no-op before the start)."""
        if self.started:
            torch._foreach_copy_(self._live, self._slow)

    def state_dict(self) -> dict:
        return {"started": self.started, "slow": self.slow}

    def load_state_dict(self, state: dict) -> None:
        self.started = bool(state["started"])
        for k, v in state["slow"].items():
            self.slow[k].copy_(v)
