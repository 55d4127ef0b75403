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

    ``update(taken)`` with a 0-d bool device tensor is the same update made conditional on the
    device (the Trainer's sync-free step): the count of updates then lives on the device too, and
    reading ``updates`` syncs.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self._updates = 0  # taken updates, on the host
        self._device_updates: torch.Tensor | None = None  # float64, on the device once update(taken) ran
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

    @property
    def updates(self) -> int:
        """Updates taken so far (a host sync when they are counted on the device)."""
        if self._device_updates is not None:
            return int(self._device_updates.item())
        return self._updates

    @updates.setter
    def updates(self, n: int) -> None:
        self._updates = int(n)
        self._device_updates = None

    @torch.no_grad()
    def update(self, taken: torch.Tensor | None = None) -> None:
        """Fold the current weights of the model given at init into the average (its tensors were
        resolved there; ``load_state_dict`` copies in place, so they stay valid). Call it after an
        optimizer step that was taken, never after a skipped one; or after every step with
        ``taken``, a 0-d bool tensor on the weights' device saying whether it was taken, and the
        decision stays on the device."""
        if taken is not None:
            return self._update_on_device(taken)
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        if self._avg[0]:
            torch._foreach_lerp_(self._avg[0], self._avg[1], 1.0 - d)
        for dst, src in zip(*self._copy):
            dst.copy_(src)

    def _update_on_device(self, taken: torch.Tensor) -> None:
        """:meth:`update` if ``taken``, else nothing, decided on the device. A taken update is
        bit-identical to the host's: the decay is computed in float64 as Python computes it
        (an integer count, IEEE division, min, 1 - d), rounded once to the weights' dtype as the
        scalar lerp rounds its weight, and the lerp runs with that weight (0 when skipped: the
        shadow stays exactly as it is)."""
        if self._device_updates is None:  # once: the host's count moves to the device
            self._device_updates = torch.tensor(float(self._updates), dtype=torch.float64, device=taken.device)
        n = self._device_updates
        n.add_(taken.to(torch.float64))
        weight = torch.where(taken, 1.0 - torch.clamp((1 + n) / (10 + n), max=self.decay), 0.0)
        if self._avg[0]:
            by_dtype = {t.dtype: weight.to(t.dtype) for t in self._avg[0]}
            # one 0-d weight per tensor: torch's foreach lerp has no single-tensor-weight form
            torch._foreach_lerp_(self._avg[0], self._avg[1], [by_dtype[t.dtype] for t in self._avg[0]])
        for dst, src in zip(*self._copy):
            dst.copy_(torch.where(taken, src, dst))

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
        self._started = False
        self._device_started: torch.Tensor | None = None  # 0-d bool, once after_step(step, taken) ran

    @property
    def started(self) -> bool:
        """Whether the slow weights have begun (a host sync when that was decided on the device)."""
        if self._device_started is not None:
            return bool(self._device_started.item())
        return self._started

    @started.setter
    def started(self, value: bool) -> None:
        self._started = bool(value)
        self._device_started = None

    @torch.no_grad()
    def after_step(self, step: int, taken: torch.Tensor | None = None) -> None:
        """Call after optimizer step number ``step`` (1-based: steps done so far) if it was taken;
        or after every step with ``taken``, a 0-d bool device tensor saying whether it was, and
        the decision stays on the device."""
        if step < self.start_step or step % self.every:
            return
        if taken is not None:
            return self._after_step_on_device(step, taken)
        if not self.started:  # the slow weights begin where the live ones are now
            torch._foreach_copy_(self._slow, self._live)
            self.started = True
            return
        torch._foreach_lerp_(self._slow, self._live, 1.0 - self._rho(step))
        self.sync()

    def _rho(self, step: int) -> float:
        return self.decay ** self.every * min(step / self.total_steps, 1.0) ** 3

    def _after_step_on_device(self, step: int, taken: torch.Tensor) -> None:
        """:meth:`after_step` when ``taken``, else nothing, decided on the device: the candidate
        values are computed with the same kernels as the host's path and selected with
        ``torch.where`` (bit-identical when taken, untouched when not)."""
        if self._device_started is None:
            self._device_started = torch.tensor(self._started, device=taken.device)
        started = self._device_started
        begin, moved = taken & ~started, taken & started
        mixed = torch._foreach_lerp(self._slow, self._live, 1.0 - self._rho(step))
        for slow, live, mix in zip(self._slow, self._live, mixed):
            new_slow = torch.where(begin, live, torch.where(moved, mix, slow))
            slow.copy_(new_slow)
            live.copy_(torch.where(moved, new_slow, live))  # sync(): live <- slow
        self._device_started = started | taken

    @torch.no_grad()
    def sync(self) -> None:
        """live <- slow (a no-op before the start)."""
        if self._device_started is not None:  # decided on the device: no host read
            for live, slow in zip(self._live, self._slow):
                live.copy_(torch.where(self._device_started, slow, live))
        elif self.started:
            torch._foreach_copy_(self._live, self._slow)

    def state_dict(self) -> dict:
        return {"started": self.started, "slow": self.slow}

    def load_state_dict(self, state: dict) -> None:
        self.started = bool(state["started"])
        for k, v in state["slow"].items():
            self.slow[k].copy_(v)  # a tied weight's names hold the same values
