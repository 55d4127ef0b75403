"""benchmarks/transfer.py's helpers: the fine-tuned arm's overrides (head-only steps as epochs of
each label count) and where scratch catches up. The curve itself comes from the benchmark run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import transfer


@pytest.mark.parametrize("labels, epochs", [(10, "25"), (100, "6.25"), (1000, "0.625")])
def test_head_only_steps_become_epochs_of_each_count(labels, epochs):
    # 250 steps of 100: 10% = 25 head-only steps; 4 classes x labels images = ceil(4 labels / 100) steps an epoch
    got = transfer.finetune_overrides("runs/animals", labels, steps=250, batch=100, freeze_fraction=0.1,
                                      body_lr_scale=0.1)
    assert got == ["--model.init_from=runs/animals", f"--train.freeze_body_epochs={epochs}",
                   "--optim.body_lr_scale=0.1"]


def test_the_default_fine_tuned_arm_only_changes_the_starting_weights():
    assert transfer.finetune_overrides("a.safetensors", 10, steps=200, batch=100, freeze_fraction=0.0,
                                       body_lr_scale=1.0) == ["--model.init_from=a.safetensors"]


def test_shipped_source_resolves_to_its_file():
    from layerwise.models.pretrained import PRETRAINED

    assert transfer.source_path("pretrained:cifar10-animals-convnet") == str(PRETRAINED["cifar10-animals-convnet"].path)


def test_catch_up_is_the_first_count_from_which_scratch_stays_close():
    curve = {"finetune": {10: 0.70, 30: 0.75, 100: 0.80, 300: 0.84, 1000: 0.88},
             "scratch": {10: 0.50, 30: 0.74, 100: 0.70, 300: 0.835, 1000: 0.885}}
    assert transfer.catch_up(curve, 1.0) == 300  # 30 is close, but 100 falls behind again
    assert transfer.catch_up(curve, 0.1) == 1000
    curve["scratch"][1000] = 0.80
    assert transfer.catch_up(curve, 1.0) is None


def test_scratch_equivalent_interpolates_in_log_count():
    curve = {"finetune": {10: 0.60, 100: 0.80, 1000: 0.90},
             "scratch": {10: 0.40, 100: 0.70, 1000: 0.85}}
    got = transfer.scratch_equivalent(curve)
    # 0.60 lies 2/3 of the way from 0.40 (10) to 0.70 (100) in log10: 10^(1 + 2/3) = 46.4
    assert got[10] == pytest.approx(46.4, abs=0.05)
    assert got[100] == pytest.approx(10 ** (2 + 2 / 3), abs=0.05)  # 0.80: 2/3 from 0.70 to 0.85
    assert got[1000] is None  # beyond the grid
