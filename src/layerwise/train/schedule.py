"""Learning-rate schedules as pure functions of the step counter.

`lr_multiplier(step, total_steps, schedule=...)` gives the factor applied to every group's
"base_lr" for the optimizer step about to be taken (0-based); `apply_lr(optimizer, factor)`
writes it. Because a schedule is stateless, resuming a run needs only the step counter: no
scheduler state_dict, no risk of a scheduler and an optimizer disagreeing after a load, and the
same code drives torch optimizers and `optim.CombinedOptimizer` alike. The Trainer does, per step:

    apply_lr(optimizer, lr_multiplier(step, total_steps, schedule=cfg.schedule, ...))
    optimizer.step()

Conventions (T = total_steps, W = warmup_steps):
  - Warmup: factor (step + 1) / W for step < W, so step 0 takes a small but nonzero step and
    step W - 1 reaches exactly 1 (Goyal et al. 2017, "Accurate, Large Minibatch SGD",
    arXiv:1706.02677).
  - Decay runs from 1 at step W to min_ratio at step T (progress = (step - W) / (T - W)), as
    torch's CosineAnnealingLR with T_max = T - W. The last step taken, T - 1, therefore uses a
    factor just above min_ratio: with min_ratio = 0 no step is wasted at lr = 0. Steps >= T hold
    min_ratio.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from layerwise.choices import unknown_choice_error

__all__ = ["SCHEDULES", "EarlyEpochs", "apply_lr", "lr_multiplier"]

SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear", "onecycle", "triangle")

# OneCycle starts at max_lr / 25 (Smith & Topin's div_factor, torch OneCycleLR's default).
_ONECYCLE_DIV = 25.0


def _lerp(a: float, b: float, t: float) -> float:
    # Exact at both ends (t=0 -> a, t=1 -> b), the trick torch.lerp uses: a + (b-a)*1 can miss b.
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1.0 - t)


def _cosine(progress: float, min_ratio: float) -> float:
    # Half-period cosine from 1 (progress 0) to min_ratio (progress 1): SGDR without restarts
    # (Loshchilov & Hutter 2017, arXiv:1608.03983).
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_multiplier(
    step: int,
    total_steps: int,
    *,
    schedule: str,
    warmup_steps: int = 0,
    min_ratio: float = 0.0,
    pct_start: float = 0.25,
    start_ratio: float = 0.0,
) -> float:
    """Factor applied to base_lr at optimizer step `step` (0-based, the step about to be taken).

    schedule:
      - "constant": linear warmup over warmup_steps, then 1.
      - "cosine":   linear warmup, then cosine decay from 1 to min_ratio at step total_steps.
      - "linear":   linear warmup, then linear decay from 1 to min_ratio at step total_steps.
      - "onecycle": Smith & Topin 2017, "Super-Convergence" (arXiv:1708.07120), in the variant
        that ramps *linearly* from 1/25 at step 0 to 1 at step pct_start * total_steps (as in
        the paper's triangular cycle), then anneals with a *cosine* to min_ratio at step
        total_steps (as fastai / torch OneCycleLR's anneal_strategy="cos"). There is no third
        "annihilation" phase: min_ratio is the end value (torch's default end is 1/(25 * 1e4)).
        warmup_steps is ignored (the ramp-up is the warmup).
      - "triangle": airbench's piecewise-linear cycle: start_ratio at step 0, 1 at warmup_steps,
        min_ratio at total_steps (airbench94: 0.2 -> 1 at 23% -> 0.07).
    See the module docstring for the step conventions. Steps >= total_steps hold min_ratio.
    """
    if schedule not in SCHEDULES:
        raise unknown_choice_error("schedule", schedule, SCHEDULES)
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}"
        )

    if schedule == "onecycle":
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
        peak = pct_start * total_steps  # may be fractional; the ramp is continuous in step
        if abs(peak - round(peak)) < 1e-9:
            # 0.3 * 100 = 30.000000000000004: snap float noise so the peak step gets exactly 1
            peak = float(round(peak))
        start = 1.0 / _ONECYCLE_DIV
        if step <= peak:
            return _lerp(start, 1.0, step / peak)
        return _cosine(min((step - peak) / (total_steps - peak), 1.0), min_ratio)

    if schedule == "triangle":
        if not 0.0 <= start_ratio <= 1.0:
            raise ValueError(f"start_ratio must be in [0, 1], got {start_ratio}")
        if step < warmup_steps:
            return _lerp(start_ratio, 1.0, step / warmup_steps)
        rest = total_steps - warmup_steps
        return _lerp(1.0, min_ratio, 1.0 if rest == 0 else min((step - warmup_steps) / rest, 1.0))

    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    decay_steps = total_steps - warmup_steps
    progress = 1.0 if decay_steps == 0 else min((step - warmup_steps) / decay_steps, 1.0)
    if schedule == "cosine":
        return _cosine(progress, min_ratio)
    # "linear"
    return min_ratio + (1.0 - min_ratio) * (1.0 - progress)


def apply_lr(optimizer: Any, factor: float) -> float:
    """Set group["lr"] = group["base_lr"] * factor for every param group; return the first's.

    Works on any object with torch's `param_groups` layout (torch optimizers and
    `optim.CombinedOptimizer`). lr stays a python float -- fused/foreach kernels accept both,
    and a float never silently moves to another device. The one exception: a group built with a
    tensor lr (capturable / CUDA-graph setups) is updated in place so captured graphs see it.
    """
    if not math.isfinite(factor) or factor < 0:
        raise ValueError(f"lr factor must be finite and >= 0, got {factor}")
    first: float | None = None
    for i, group in enumerate(optimizer.param_groups):
        if "base_lr" not in group:
            raise KeyError(
                f"param group {i} ({group.get('name', 'unnamed')}) has no 'base_lr'; build the "
                f"optimizer with layerwise.train.optim.build_optimizer or set group['base_lr']"
            )
        lr = float(group["base_lr"]) * factor
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
        if first is None:
            first = lr
    if first is None:
        raise ValueError("optimizer has no param groups")
    return first


class EarlyEpochs:
    """What the first epochs do differently, like the LR a pure function of the step counter (a
    resumed run needs no state):

    - ``data.low_res_size`` / ``data.low_res_epochs``: each micro-batch is one random size x size
      crop (``data.augment.random_crop``, seeded by the run's seed and the step), so the steps
      cost about (size/H)^2 of a full one while the network learns coarse features;
    - ``train.freeze_stem_after``: the model's ``stem_parameters()`` (convnet: the whitening
      bias) train for that many epochs, then get no gradient, so the optimizer leaves them alone
      and the backward pass skips the stem;
    - ``train.freeze_body_epochs`` / ``train.unfreeze``: fine-tuning from ``model.init_from``
      trains only the head for that many epochs, with the body's BatchNorm statistics fixed, then
      the whole body or, gradually, one more layer from the top each epoch
      (``finetune.BodyFreezing``).

    Bad settings raise ConfigError here, before the run directory exists.
    """

    def __init__(self, cfg: Any, model: torch.nn.Module, in_shape: tuple[int, ...], is_image: bool,
                 steps_per_epoch: int):
        from layerwise.config import ConfigError  # config sits above train; import late

        d, t = cfg.data, cfg.train
        self.size, self.seed = d.low_res_size, t.seed
        if self.size and not (is_image and self.size <= min(in_shape[1:])):
            raise ConfigError(f"data.low_res_size={self.size} crops images to {self.size}x{self.size}; dataset "
                              f"'{d.name}' has inputs of shape {tuple(in_shape)}. Choose a size no larger than "
                              f"the images or set --data.low_res_size=0.")
        if t.freeze_stem_after and not hasattr(model, "stem_parameters"):
            raise ConfigError(f"train.freeze_stem_after={t.freeze_stem_after} freezes a model's stem (convnet's "
                              f"whitening layer), but model '{cfg.model.name}' has none. Set "
                              f"--train.freeze_stem_after=0.")
        self.stem = list(model.stem_parameters()) if t.freeze_stem_after else []
        self.low_res_steps = round(d.low_res_epochs * steps_per_epoch) if self.size else 0
        self.stem_steps = round(t.freeze_stem_after * steps_per_epoch)
        self.body = None
        if t.freeze_body_epochs or t.unfreeze == "gradual":
            from layerwise.train.finetune import BodyFreezing

            self.body = BodyFreezing(model, round(t.freeze_body_epochs * steps_per_epoch), steps_per_epoch,
                                     gradual=t.unfreeze == "gradual")
        self._stem_on: bool | None = None

    def before_step(self, step: int, micro: list) -> list:
        """Set the stem's and the body's requires_grad (and the frozen body's norms to eval mode)
        for optimizer step ``step`` (0-based) and return its micro-batches, cropped while in the
        low-resolution epochs."""
        stem_on = step < self.stem_steps
        if stem_on != self._stem_on:
            for p in self.stem:
                p.requires_grad_(stem_on)
            self._stem_on = stem_on
            if self.body is not None:
                self.body.invalidate()
        if self.body is not None:
            self.body.apply(step, keep_off=set() if stem_on else {id(p) for p in self.stem})
        if step >= self.low_res_steps:
            return micro
        from layerwise.data.augment import random_crop

        return [(random_crop(x, self.size, torch.Generator().manual_seed(self.seed * 1_000_003 + step * 64 + i)), y)
                for i, (x, y) in enumerate(micro)]
