"""LR schedules: exact values at landmark steps, monotonicity, apply_lr."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layerwise.train.optim import build_optimizer
from layerwise.train.schedule import SCHEDULES, apply_lr, lr_multiplier

T, W = 110, 10  # total steps, warmup steps: decay spans steps 10..110, midpoint at step 60


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_linear_warmup(schedule: str) -> None:
    f = [lr_multiplier(s, T, schedule=schedule, warmup_steps=W, min_ratio=0.25) for s in range(W)]
    assert f == [(s + 1) / W for s in range(W)]  # 0.1, 0.2, ..., exactly 1.0 at step W-1
    assert f[-1] == 1.0
    assert lr_multiplier(W, T, schedule=schedule, warmup_steps=W) == 1.0  # decay starts at 1


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decay_midpoint_and_end(schedule: str) -> None:
    kw = dict(schedule=schedule, warmup_steps=W, min_ratio=0.25)
    assert lr_multiplier(60, T, **kw) == (1 + 0.25) / 2  # exactly 0.625 for both shapes
    assert lr_multiplier(T, T, **kw) == 0.25
    assert lr_multiplier(T + 50, T, **kw) == 0.25  # past the end holds min_ratio
    assert 0.25 < lr_multiplier(T - 1, T, **kw) < 0.26  # last step taken: just above min


def test_cosine_quarter_point_and_no_warmup() -> None:
    # step 35 is 1/4 of the decay: 0.5 * (1 + cos(pi/4)) with min_ratio 0
    assert lr_multiplier(35, T, schedule="cosine", warmup_steps=W) == pytest.approx(
        0.5 * (1 + 2**-0.5), abs=1e-15
    )
    assert lr_multiplier(0, 100, schedule="cosine") == 1.0  # no warmup: first step at full lr
    assert lr_multiplier(50, 100, schedule="linear") == 0.5


def test_constant() -> None:
    assert {lr_multiplier(s, T, schedule="constant", warmup_steps=W) for s in range(W, T + 5)} == {1.0}


@pytest.mark.parametrize("schedule", ["cosine", "linear", "onecycle"])
def test_monotonic_decay_after_peak(schedule: str) -> None:
    total = 120  # onecycle's default pct_start=0.25 puts its peak on step 30
    f = [lr_multiplier(s, total, schedule=schedule, warmup_steps=W, min_ratio=0.1) for s in range(total + 1)]
    assert max(f) == 1.0
    peak = max(i for i, v in enumerate(f) if v == 1.0)  # warmup: steps W-1 and W are both 1
    assert peak == (30 if schedule == "onecycle" else W)
    assert all(a < b for a, b in zip(f[:peak], f[1:peak]))  # rises to the peak
    assert all(a > b for a, b in zip(f[peak:], f[peak + 1 :]))  # then strictly decays
    assert f[-1] == 0.1


def test_onecycle_landmarks() -> None:
    kw = dict(schedule="onecycle", pct_start=0.3, min_ratio=0.0)
    assert lr_multiplier(0, 100, **kw) == 1 / 25
    assert lr_multiplier(15, 100, **kw) == pytest.approx(1 / 25 + (1 - 1 / 25) / 2, abs=1e-15)
    assert lr_multiplier(30, 100, **kw) == 1.0  # peak at pct_start * total
    f = [lr_multiplier(s, 100, **kw) for s in range(101)]
    assert f.index(max(f)) == 30
    assert lr_multiplier(65, 100, **kw) == pytest.approx(0.5, abs=1e-15)  # cosine midpoint
    assert lr_multiplier(100, 100, **kw) == 0.0
    # warmup_steps does not change onecycle (its ramp is the warmup)
    assert lr_multiplier(5, 100, warmup_steps=50, **kw) == lr_multiplier(5, 100, **kw)


def test_unknown_schedule_names_closest() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'cosine'\?") as err:
        lr_multiplier(0, 10, schedule="cosin")
    assert all(n in str(err.value) for n in SCHEDULES)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(step=0, total_steps=0), "total_steps must be > 0"),
        (dict(step=-1, total_steps=10), "step must be >= 0"),
        (dict(step=0, total_steps=10, min_ratio=1.5), "min_ratio must be in"),
        (dict(step=0, total_steps=10, warmup_steps=11), "warmup_steps must be in"),
        (dict(step=0, total_steps=10, schedule="onecycle", pct_start=0.0), "pct_start"),
    ],
)
def test_argument_validation(kwargs: dict, match: str) -> None:
    kwargs.setdefault("schedule", "cosine")
    with pytest.raises(ValueError, match=match):
        lr_multiplier(**kwargs)


def test_apply_lr_scales_base_lr_without_compounding() -> None:
    opt = build_optimizer(nn.Linear(3, 2), "sgd", lr=0.1, weight_decay=0.1)
    assert apply_lr(opt, 0.5) == 0.05
    assert apply_lr(opt, 0.5) == 0.05  # from base_lr each time, never lr * factor * factor
    assert all(g["lr"] == 0.05 and g["base_lr"] == 0.1 for g in opt.param_groups)
    with pytest.raises(ValueError, match="finite"):
        apply_lr(opt, float("nan"))
    with pytest.raises(KeyError, match="base_lr"):
        apply_lr(torch.optim.SGD(nn.Linear(3, 2).parameters(), lr=0.1), 0.5)


def test_apply_lr_keeps_tensor_lr_object() -> None:
    p = nn.Parameter(torch.zeros(2))
    lr_t = torch.tensor(0.1)
    opt = torch.optim.SGD([{"params": [p], "base_lr": 0.1}], lr=lr_t)
    apply_lr(opt, 0.25)
    assert opt.param_groups[0]["lr"] is lr_t and lr_t.item() == pytest.approx(0.025)


def test_apply_lr_reaches_muon_children_after_resume() -> None:
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = build_optimizer(m, "muon", lr=1e-3, muon_lr=0.02)
    m(torch.randn(2, 4)).sum().backward()
    opt.step()
    resumed = build_optimizer(m, "muon", lr=1e-3, muon_lr=0.02)
    resumed.load_state_dict(opt.state_dict())  # replaces the children's group dicts
    # a resumed run needs only its step counter to get the same lr
    factor = lr_multiplier(7, 20, schedule="cosine", warmup_steps=2)
    assert apply_lr(resumed, factor) == apply_lr(opt, factor) == pytest.approx(0.02 * factor)
    assert resumed["muon"].param_groups[0]["lr"] == 0.02 * factor
    assert resumed["adamw"].param_groups[0]["lr"] == 1e-3 * factor


def test_triangle_is_airbench94s_cycle():
    from layerwise.train.schedule import lr_multiplier
    kw = dict(total_steps=100, schedule="triangle", warmup_steps=23, min_ratio=0.07, start_ratio=0.2)
    assert lr_multiplier(0, **kw) == pytest.approx(0.2)
    assert lr_multiplier(23, **kw) == pytest.approx(1.0)
    assert lr_multiplier(100, **kw) == pytest.approx(0.07)
    assert lr_multiplier(12, **kw) == pytest.approx(0.2 + 0.8 * 12 / 23)
    assert lr_multiplier(60, **kw) == pytest.approx(1.0 - 0.93 * 37 / 77)
