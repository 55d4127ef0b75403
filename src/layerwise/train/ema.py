"""Exponential moving average of weights (Polyak averaging), evaluated in place of the raw weights."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


def _storage_key(t: torch.Tensor) -> tuple:
    """Identifies the memory a tensor views: ``state_dict()`` gives a new tensor object per name,
    so two names of one tied parameter are told apart only by where their data lives."""
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()),
            t.dtype)


def distinct_state(model: nn.Module) -> list[tuple[list[str], torch.Tensor, bool]]:
    """The model's state, one entry per distinct tensor: (its names in ``state_dict()`` order, the
    live tensor, whether it is a parameter). A tied weight (a language model's embedding and
    output matrix) has two names and one entry; ``named_parameters()`` lists it once, under its
    first name only, so classifying state by name alone would take its other name for a buffer."""
    param_keys = {_storage_key(p.detach()) for p in model.parameters()}
    groups: dict[tuple, tuple[list[str], torch.Tensor]] = {}
    for name, t in model.state_dict().items():  # tensors that share storage with the model's
        groups.setdefault(_storage_key(t), ([], t))[0].append(name)
    return [(names, t, key in param_keys) for key, (names, t) in groups.items()]


class EMA:
    """shadow <- d * shadow + (1 - d) * weights after each optimizer step.

    The effective decay ramps up as min(decay, (1 + n) / (10 + n)) (TensorFlow's
    ExponentialMovingAverage with num_updates) so early averages are not dominated by the random
    init. Buffers (BatchNorm running statistics) are copied, not averaged. Each distinct tensor is
    averaged once, whatever names it has: the names of a tied weight share one shadow tensor, so
    the averaged model keeps the tie (:func:`distinct_state`).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow: dict[str, torch.Tensor] = {}
        avg_dst, avg_src, copy_dst, copy_src = [], [], [], []
        self._groups: list[list[str]] = []
        for names, live, is_param in distinct_state(model):
            shadow = live.detach().clone()
            for n in names:
                self.shadow[n] = shadow  # aliases of one tensor share one average
            self._groups.append(names)
            if is_param and live.is_floating_point():
                avg_dst.append(shadow)
                avg_src.append(live)
            else:  # buffers (BN statistics, counters) and integer parameters are copied
                copy_dst.append(shadow)
                copy_src.append(live)
        # resolved once: update() runs every step and must not rebuild the state dict
        self._avg, self._copy = (avg_dst, avg_src), (copy_dst, copy_src)

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights of the model given at init into the average (its tensors were
        resolved there; ``load_state_dict`` copies in place, so they stay valid). Call it after an
        optimizer step that was taken, never after a skipped one."""
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
        """Restore :meth:`state_dict`; each distinct tensor is read from the first of its names that
        the state holds (an older checkpoint kept a separate, unaveraged copy under a tied weight's
        second name: it is ignored)."""
        self.updates = int(state["updates"])
        saved = state["shadow"]
        for names in self._groups:
            name = next((n for n in names if n in saved), None)
            if name is None:
                raise KeyError(f"the saved weight average has no tensor named {names[0]}")
            self.shadow[names[0]].copy_(saved[name])


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
        # one slow tensor per distinct floating-point tensor; the names of a tied weight share it
        self.slow: dict[str, torch.Tensor] = {}
        self._live, self._slow = [], []
        for names, live, _is_param in distinct_state(model):
            if not live.is_floating_point():
                continue
            slow = live.detach().clone()
            self.slow.update({n: slow for n in names})
            self._live.append(live)
            self._slow.append(slow)
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
            self.slow[k].copy_(v)  # a tied weight's names hold the same values
