"""FGSM and PGD mechanics on tiny synthetic models (insight/attack.py), the adversarial-training
perturbation of normalized batches, and the bad-argument errors of `layerwise attack` and
train.adversarial."""

from __future__ import annotations

import pytest
import torch

from layerwise.config import ConfigError, load_config
from layerwise.data import DatasetInfo
from layerwise.insight.attack import (
    AdversarialTraining,
    accuracy_under_attack,
    fgsm,
    pgd,
)
from layerwise.insight.attack_report import attack, parse_eps


def _linear(seed: int = 0, d: int = 12, k: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, k))


def _data(n: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 3, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("linf", 0.5), ("l2", 0.3), ("l2", 2.0)])
def test_pgd_stays_in_the_ball_and_the_pixel_range(norm, eps):
    model, (x, y) = _linear(), _data()
    adv = pgd(model, x, y, eps, norm=norm, steps=7, generator=torch.Generator().manual_seed(0))
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5)
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert float(size.max()) > 0.5 * eps  # it moved: the ball's size is used, not 0


def test_fgsm_is_one_signed_gradient_step_of_eps_clipped():
    model, (x, y) = _linear(), _data()
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xg), y, reduction="sum").backward()
    expected = (x + 0.2 * xg.grad.sign()).clamp(0, 1)
    assert torch.equal(fgsm(model, x, y, 0.2), expected)
    # L2: a step of length eps along the gradient (before clipping); unbounded inputs keep it whole
    adv = fgsm(model, x, y, 0.5, norm="l2", bounds=None)
    assert torch.allclose((adv - x).flatten(1).norm(dim=1), torch.full((len(x),), 0.5), atol=1e-5)


def test_unbounded_inputs_may_leave_the_unit_range_and_eps_zero_changes_nothing():
    model, (x, y) = _linear(), _data()
    assert float((pgd(model, x, y, 0.5, steps=3, bounds=None) - x).abs().max()) == pytest.approx(0.5, abs=1e-6)
    assert (pgd(model, x, y, 0.5, steps=3, bounds=None).max() > 1).item()
    assert torch.equal(pgd(model, x, y, 0.0), x)


def test_pgd_raises_the_loss_more_than_fgsm_and_restarts_only_help():
    model, (x, y) = _linear(seed=3), _data(256)
    rows_f = accuracy_under_attack(model, x, y, [0.05, 0.1], method="fgsm", bounds=None)
    rows_p = accuracy_under_attack(model, x, y, [0.05, 0.1], method="pgd", steps=10, bounds=None)
    rows_r = accuracy_under_attack(model, x, y, [0.05, 0.1], method="pgd", steps=10, restarts=3, bounds=None)
    clean = accuracy_under_attack(model, x, y, [0.0])[0]["accuracy"]
    for f, p, r in zip(rows_f, rows_p, rows_r):
        assert r["correct"] <= p["correct"] <= f["correct"] < clean * len(x)
    assert rows_p[1]["correct"] < rows_p[0]["correct"]


def test_bad_attack_settings_raise():
    model, (x, y) = _linear(), _data(4)
    with pytest.raises(ValueError, match="norm must be linf or l2"):
        pgd(model, x, y, 0.1, norm="l1")
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        pgd(model, x, y, float("nan"))
    with pytest.raises(ValueError, match="steps and restarts must be >= 1"):
        pgd(model, x, y, 0.1, steps=0)
    with pytest.raises(ValueError, match="method must be fgsm or pgd"):
        accuracy_under_attack(model, x, y, [0.1], method="cw")
    assert parse_eps("0, 0.1,0.3") == [0.0, 0.1, 0.3]
    for bad in ("0,abc", "-0.1", "", "inf"):
        with pytest.raises(ConfigError, match="--eps"):
            parse_eps(bad)


def _info(in_shape=(1, 3, 4), **extra) -> DatasetInfo:
    return DatasetInfo(name="toy", in_shape=in_shape, num_classes=3, classes=["a", "b", "c"], scale=1.0,
                       mean=[0.4] * in_shape[0], std=[0.2] * in_shape[0], extra=extra)


def _train_cfg(*args: str):
    return load_config(None, list(args)).train


@pytest.mark.parametrize("method", ["fgsm-rs", "pgd"])
def test_adversarial_training_perturbs_in_pixel_space_and_repeats_by_step(method):
    t = _train_cfg(f"--train.adversarial={method}", "--train.adversarial_eps=0.1", "--train.adversarial_steps=3")
    adv = AdversarialTraining(t, _info(), lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="sum"),
                              torch.device("cpu"))
    assert adv.alpha == pytest.approx(0.125 if method == "fgsm-rs" else 2.5 * 0.1 / 3)
    model, (pix, y) = _linear(), _data()
    x = (pix - 0.4) / 0.2  # the Trainer's normalized batch
    out = adv.perturb(model, x, y, step=5)
    p_out = out * 0.2 + 0.4
    assert float((p_out - pix).abs().max()) <= 0.1 + 1e-5 and float(p_out.min()) >= -1e-6
    assert float(p_out.max()) <= 1 + 1e-6 and float((p_out - pix).abs().max()) > 0.05
    assert torch.equal(out, adv.perturb(model, x, y, step=5))  # the same step: the same random start
    assert not torch.equal(out, adv.perturb(model, x, y, step=6))


def test_adversarial_training_refuses_token_ids_and_bad_keys():
    t = _train_cfg("--train.adversarial=pgd", "--train.adversarial_eps=0.3")
    with pytest.raises(ConfigError, match="token ids or indices.*--train.adversarial=none"):
        AdversarialTraining(t, _info((64,), tokenizer={"kind": "char"}), None, torch.device("cpu"))
    with pytest.raises(ConfigError, match="train.adversarial must be none, pgd or fgsm-rs, got 'fgsm'"):
        load_config(None, ["--train.adversarial=fgsm", "--train.adversarial_eps=0.3"])
    with pytest.raises(ConfigError, match="needs train.adversarial_eps > 0"):
        load_config(None, ["--train.adversarial=fgsm-rs"])
    with pytest.raises(ConfigError, match="train.adversarial_steps must be >= 1"):
        load_config(None, ["--train.adversarial=pgd", "--train.adversarial_eps=0.3", "--train.adversarial_steps=0"])
    assert load_config(None, []).train.adversarial == "none"  # the default: no change to any run


def test_attack_refuses_a_language_model_and_bad_arguments(tmp_path):
    from layerwise.models.pretrained import resolve_pretrained

    gpt = resolve_pretrained("pretrained:shakespeare-gpt")
    with pytest.raises(ConfigError, match="token ids or indices.*a token id has no small change"):
        attack(gpt, eps=[0, 0.1], device="cpu", out=tmp_path)
    with pytest.raises(ConfigError, match="--method must be fgsm or pgd"):
        attack(gpt, method="cw", device="cpu")
    with pytest.raises(ConfigError, match="--steps, --restarts"):
        attack(gpt, steps=0, device="cpu")
    assert not any(tmp_path.iterdir())  # nothing written
