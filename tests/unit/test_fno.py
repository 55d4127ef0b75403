"""The spectral conv block against a direct DFT, the FNO's resolution independence, the field
models' face, and the field task's relative L2 error on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerwise.data import DatasetInfo
from layerwise.models import create_model
from layerwise.nn import SpectralConv1d
from layerwise.tasks import FieldRegress, create_task
from layerwise.train.metrics import Accumulator


def test_spectral_conv_is_a_mode_wise_complex_matrix() -> None:
    torch.manual_seed(0)
    conv = SpectralConv1d(3, 2, modes=5).double()
    x = torch.randn(4, 3, 32, dtype=torch.float64)
    y = conv(x)
    # by hand: DFT of each channel, W_k (3 x 2) on modes 0..4, the rest zero, inverse real DFT
    xf = np.fft.rfft(x.numpy(), axis=-1)
    w = conv.weight.detach().numpy()
    W = w[..., 0] + 1j * w[..., 1]  # (3, 2, 5)
    out = np.zeros((4, 2, 17), np.complex128)
    for k in range(5):
        out[:, :, k] = xf[:, :, k] @ W[:, :, k]
    assert np.allclose(y.detach().numpy(), np.fft.irfft(out, n=32, axis=-1), atol=1e-12)
    with pytest.raises(ValueError, match="at least 8 points"):
        conv(torch.randn(1, 3, 6, dtype=torch.float64))


def test_fno_is_resolution_independent() -> None:
    torch.manual_seed(0)
    model = create_model("fno", in_shape=(1, 64), num_classes=1, modes=8, width=16).double().eval()
    # a band-limited input sampled at 64, 128 and 256 points: the same function, so the same output function
    coef = torch.randn(6, dtype=torch.complex128)

    def sample(R: int) -> torch.Tensor:
        x = torch.arange(R, dtype=torch.float64) / R
        return sum((coef[k] * torch.exp(2j * math.pi * (k + 1) * x)).real for k in range(6))[None, None]

    out = {R: model(sample(R))[0, 0] for R in (64, 128, 256)}
    # the pointwise GELUs make harmonics above the kept modes, which each grid aliases a little differently
    assert (out[256][::4] - out[64]).abs().max() / out[64].abs().max() < 2e-2
    assert (out[256][::2] - out[128]).abs().max() / out[128].abs().max() < 2e-2
    assert out[256].shape == (256,)


@pytest.mark.parametrize("name", ["fno", "cnn1d"])
def test_field_models_face(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_shape=(1, 32), num_classes=2)
    x = torch.randn(3, 1, 32)
    assert model(x).shape == (3, 2, 32) and model(torch.randn(3, 1, 48)).shape == (3, 2, 48)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (3, model.num_features, 32)
    model.reset_classifier(1)
    assert model(x).shape == (3, 1, 32)
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match=r"\(channels, points\)"):
        create_model(name, in_shape=(1, 8, 8), num_classes=1)
    with pytest.raises(ValueError, match=f"{name} takes"):
        model(torch.randn(3, 2, 32))


def test_fno_flops_by_hand() -> None:
    m = create_model("fno", in_shape=(1, 256), num_classes=1)  # Li et al.'s Burgers settings
    W, P, R, modes = 64, 128, 256, 16
    assert m.flops_per_example() == 2 * R * 2 * W + 4 * (8 * W * W * modes + 2 * R * W * W) + 2 * R * (W * P + P)
    assert m.num_params() == 549_569


def _info(points: int = 8) -> DatasetInfo:
    return DatasetInfo("f", (1, points), 1, ["u"], 1.0, [0.0], [1.0], task="regress", extra={"field": {}})


def test_rel_l2_by_hand_over_uneven_batches() -> None:
    task = create_task(_info(4))
    assert isinstance(task, FieldRegress) and task.headline == "rel_l2"
    y = torch.tensor([[3.0, 4.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 0.0]])
    task.fit(y)
    pred = torch.tensor([[3.0, 4.0, 0.0, 5.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    out = task.standardize(pred)[:, None]  # what the model would output: (B, 1, R) standardized
    acc = Accumulator(task.stats_size, torch.device("cpu"))
    for sl in (slice(0, 2), slice(2, 3)):
        acc.add(task.stats(out[sl], y[sl], task.loss(out[sl], y[sl])), len(y[sl]))
    sums, count, _ = acc.read()
    m = task.metrics(sums, count)
    # per example ||e|| / ||y||: 5 / 5, 0 / 2, 1 / 2 -> mean 0.5
    assert m["rel_l2"] == pytest.approx(0.5, abs=1e-6)
    assert m["rmse"] == pytest.approx(math.sqrt((25 + 1) / 12), abs=1e-6)
    assert m["mae"] == pytest.approx(6 / 12, abs=1e-6)
    sst = float(((y - y.mean()) ** 2).sum())
    assert m["r2"] == pytest.approx(1 - 26 / sst, abs=1e-6)
    # one global mean and std over every point, not one per grid point
    assert task.mean.shape == (1,) and float(task.mean) == pytest.approx(float(y.mean()))


def test_rel_l2_loss_and_mean_mse_loss() -> None:
    y = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    pred = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    cfg = type("C", (), {"task": type("T", (), {"loss": "rel_l2", "huber_delta": 1.0, "target_transform": "none",
                                                "clip_predictions": False, "threshold": 0.5})()})()
    task = create_task(_info(2), cfg)
    task.fit(y)
    loss = task.loss(task.standardize(pred), y)
    assert float(loss) == pytest.approx(4 / 5 + 1 / 2, abs=1e-6)  # summed over examples
    mse = create_task(_info(2))
    mse.fit(y)
    z = mse.standardize(y)
    # mean over the grid, summed over examples: the same size at any resolution
    assert float(mse.loss(z + 1.0, y)) == pytest.approx(2.0, abs=1e-6)
    assert float(mse.loss(torch.cat([z, z], 1) + 1.0, torch.cat([y, y], 1))) == pytest.approx(2.0, abs=1e-6)


def test_field_task_refuses_what_it_cannot_do() -> None:
    from layerwise.config import ConfigError, load_config

    cfg = load_config(None, ["--task.target_transform=log"])
    with pytest.raises(ConfigError, match="not available for a field"):
        create_task(_info(), cfg)
    plain = DatasetInfo("t", (3,), 1, ["y"], 1.0, [0.0] * 3, [1.0] * 3, task="regress")
    with pytest.raises(ConfigError, match="rel_l2.*for fields"):
        create_task(plain, load_config(None, ["--task.loss=rel_l2"]))
    task = create_task(_info(4))
    task.fit(torch.ones(2, 4))
    with pytest.raises(ValueError, match="one value per point"):
        task.loss(torch.zeros(2, 1), torch.ones(2, 4))
    r = task.present(torch.zeros(1, 1, 4))[0]
    assert r["points"] == 4 and r["field"] == [1.0] * 4 and r["quantity"] == "u"


def test_cnn1d_receptive_field_plain_and_dilated() -> None:
    torch.manual_seed(0)
    plain = create_model("cnn1d", in_shape=(1, 256), num_classes=1, width=8, depth=4, kernel_size=5)
    dilated = create_model("cnn1d", in_shape=(1, 256), num_classes=1, width=8, depth=8, kernel_size=5,
                           dilation_growth=2)
    assert plain.receptive_field == 33 and dilated.receptive_field == 2041
    assert dilated.num_params() == sum(p.numel() for p in dilated.parameters())  # dilation adds no weights
    x = torch.randn(1, 1, 256)
    for model, reaches in ((plain, False), (dilated, True)):
        y = x.clone()
        y[0, 0, 128] += 1.0  # a change half the domain away from point 0
        with torch.no_grad():
            moved = (model(y) - model(x))[0, 0, 0].abs().item()
        assert (moved > 1e-6) == reaches, (model.dilations, moved)
    with pytest.raises(ValueError, match="dilation_growth"):
        create_model("cnn1d", in_shape=(1, 32), num_classes=1, dilation_growth=0)
