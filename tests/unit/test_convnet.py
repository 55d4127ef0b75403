"""The airbench-style convnet: patch whitening, BatchNorm details, shapes, analytic costs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from layerwise.models import ConvNet, create_model, model_args
from layerwise.models.convnet import BiasOnlyBatchNorm2d, WhiteningConv2d


def _numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _images(n: int, c: int = 3, hw: int = 16) -> torch.Tensor:
    """Images with correlated neighbouring pixels and channels (like natural images), unit scale."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, hw + 1, hw + 1, generator=g)
    x = (x[..., 1:, 1:] + x[..., :-1, 1:] + x[..., 1:, :-1]) / 3  # spatial correlation
    mix = torch.eye(c) + 0.5  # channel correlation
    return torch.einsum("dc,nchw->ndhw", mix, x)


def _patches(x: torch.Tensor, k: int) -> torch.Tensor:
    # (N, C, H, W) -> (P, C k k) in the conv weight's (C, kh, kw) order
    c = x.shape[1]
    return x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)


# --- whitening -----------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 3])
def test_whitening_gives_identity_second_moment(k: int) -> None:
    torch.manual_seed(0)
    model = create_model("convnet", in_shape=(3, 16, 16), num_classes=10, widths=(8, 8), whiten_kernel=k)
    x = _images(200)
    model.init_from_data(x)
    stem = model.stem
    assert isinstance(stem, WhiteningConv2d) and stem.out_channels == 2 * 3 * k * k
    with torch.no_grad():
        y = nn.functional.conv2d(x.double(), stem.weight.double())  # (N, 2 C k k, H', W'), no bias
    half = 3 * k * k
    pos = y[:, :half].permute(0, 2, 3, 1).reshape(-1, half)  # (P, C k k)
    torch.testing.assert_close(y[:, half:], -y[:, :half])  # the second half is the negatives
    moment = pos.T @ pos / pos.shape[0]
    # exactly diag(L / (L + eps)) by construction; ~identity because L >> eps = 5e-4
    p = _patches(x.double(), k)
    eigenvalues = torch.linalg.eigvalsh(p.T @ p / p.shape[0]).flip(0)
    torch.testing.assert_close(moment, torch.diag(eigenvalues / (eigenvalues + 5e-4)), atol=1e-5, rtol=1e-5)
    assert eigenvalues.min() > 0.05
    torch.testing.assert_close(moment, torch.eye(half, dtype=moment.dtype), atol=1e-2, rtol=0)


def test_whitening_weight_is_a_saved_buffer_and_bias_trains() -> None:
    torch.manual_seed(0)
    model = create_model("convnet", in_shape=(3, 16, 16), num_classes=10, widths=(8, 8))
    model.init_from_data(_images(50))
    names = dict(model.named_parameters())
    assert "stem.weight" not in names and "stem.bias" in names
    assert "stem.weight" in model.state_dict() and not model.stem.weight.requires_grad
    before = model.stem.weight.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(_images(8)).logsumexp(1).mean().backward()
    opt.step()
    assert torch.equal(model.stem.weight, before)
    assert model.stem.bias.abs().sum() > 0  # started at 0, moved
    # the whitening survives a state_dict round trip into a fresh model
    fresh = create_model("convnet", in_shape=(3, 16, 16), num_classes=10, widths=(8, 8))
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.stem.weight, before)


def test_init_from_data_without_whitening_is_a_no_op() -> None:
    torch.manual_seed(0)
    model = create_model("convnet", in_shape=(3, 16, 16), num_classes=10, widths=(8, 8), whiten=False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_from_data(_images(20))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model.stem.weight.requires_grad and model.stem.kernel_size == (3, 3)
    assert model.stem.out_channels == 24  # same width as the whitening stem it replaces


def test_init_from_data_checks_channels() -> None:
    model = create_model("convnet", in_shape=(3, 16, 16), num_classes=10, widths=(8, 8))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model.init_from_data(torch.randn(4, 1, 16, 16))


# --- structure -----------------------------------------------------------------------------------
def test_airbench_batchnorm_and_dirac_init() -> None:
    torch.manual_seed(0)
    model = create_model("convnet", in_shape=(3, 32, 32), num_classes=10)
    bn = model.blocks[0].norm1
    assert isinstance(bn, BiasOnlyBatchNorm2d)
    assert bn.momentum == 0.4 and bn.eps == 1e-12  # airbench: momentum=1-0.6 in PyTorch's terms
    assert bn.weight is None and [n for n, _ in bn.named_parameters()] == ["bias"]
    # running mean moves 40% of the way to the batch mean
    x = torch.randn(16, 64, 4, 4) + 2.0
    bn.train()(x)
    torch.testing.assert_close(bn.running_mean, 0.4 * x.mean(dim=(0, 2, 3)))
    # implicit residual: the first `in` output channels of each conv3x3 start as the identity
    conv = model.blocks[1].conv1  # 64 -> 256
    dirac = torch.zeros(64, 64, 3, 3)
    dirac[torch.arange(64), torch.arange(64), 1, 1] = 1
    assert torch.equal(conv.weight[:64], dirac)
    assert conv.weight[64:].abs().sum() > 0 and conv.bias is None
    assert model.fc.bias is None and model.logit_scale == pytest.approx(1 / 9)


def test_logit_scale_and_global_max_pool() -> None:
    torch.manual_seed(0)
    model = create_model("convnet", in_shape=(3, 32, 32), num_classes=10, widths=(8, 16, 16)).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 16, 3, 3)  # 31 -> 15 -> 7 -> 3
    pooled = model.forward_head(feats, pre_logits=True)
    torch.testing.assert_close(pooled, nn.functional.max_pool2d(feats, 3).flatten(1))  # airbench's MaxPool2d(3)
    torch.testing.assert_close(model(x), model.fc(pooled) / 9)


@pytest.mark.parametrize(
    ("in_shape", "whiten", "map_hw"),
    [((3, 32, 32), True, 3), ((1, 28, 28), True, 3), ((1, 28, 28), False, 3), ((3, 32, 32), False, 4)],
)
def test_shapes(in_shape: tuple[int, ...], whiten: bool, map_hw: int) -> None:
    torch.manual_seed(0)
    model = create_model("convnet-half", in_shape=in_shape, num_classes=10, whiten=whiten)
    x = torch.randn(2, *in_shape)
    model.init_from_data(x)
    assert model.forward_features(x).shape == (2, 128, map_hw, map_hw)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()


# --- strided stem (stem_stride) --------------------------------------------------------------------
@pytest.mark.parametrize(("whiten", "k", "map_hw"), [(True, 2, (14, 7, 3, 1)), (True, 3, (13, 6, 3, 1)),
                                                     (False, 2, (14, 7, 3, 1))])
def test_strided_stem_shapes_and_cost(whiten: bool, k: int, map_hw: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    kw = {"widths": (16, 32, 64), "whiten": whiten, "whiten_kernel": k}
    model = create_model("convnet", in_shape=(1, 28, 28), num_classes=10, stem_stride=2, **kw)
    x = torch.randn(2, 1, 28, 28)
    model.init_from_data(x)
    h = model.stem_act(model.stem(x))
    sizes = [h.shape[-1]]
    for group in model.blocks:
        h = group(h)
        sizes.append(h.shape[-1])
    assert tuple(sizes) == map_hw
    assert model(x).shape == (2, 10)
    # every group sees ~1/4 of the pixels (or fewer: 13x13 of 26x26 ends at a 1x1 map): ~1/4 of the FLOPs
    full = create_model("convnet", in_shape=(1, 28, 28), num_classes=10, **kw)
    assert 0.2 < model.flops_per_example() / full.flops_per_example() < 0.26  # 0.256, 0.230, 0.216
    assert model.num_params() == full.num_params()


def test_strided_whitening_is_the_full_one_subsampled() -> None:
    # same filters, set from every patch offset; stride 2 keeps every second output pixel
    torch.manual_seed(0)
    x = _images(40, c=1, hw=15)
    full = create_model("convnet", in_shape=(1, 15, 15), num_classes=10, widths=(8,), whiten_kernel=3)
    strided = create_model("convnet", in_shape=(1, 15, 15), num_classes=10, widths=(8,), whiten_kernel=3,
                           stem_stride=2)
    full.init_from_data(x)
    strided.init_from_data(x)
    torch.testing.assert_close(strided.stem.weight, full.stem.weight)
    with torch.no_grad():
        y_full, y_strided = full.stem(x), strided.stem(x)  # (40, 18, 13, 13), (40, 18, 7, 7)
    assert y_strided.shape == (40, 18, 7, 7)
    torch.testing.assert_close(y_strided, y_full[..., ::2, ::2])


# --- analytic costs ------------------------------------------------------------------------------
def test_airbench94_param_count_by_hand() -> None:
    with torch.device("meta"):
        model = create_model("convnet", in_shape=(3, 32, 32), num_classes=10)
    stem = 24  # whitening bias only (its 24 x 3 x 2 x 2 weights are a buffer)
    g1 = 9 * 24 * 64 + 9 * 64 * 64 + 2 * 64  # two convs + two BN betas
    g2 = 9 * 64 * 256 + 9 * 256 * 256 + 2 * 256
    g3 = 9 * 256 * 256 * 2 + 2 * 256
    assert model.num_params() == _numel(model) == stem + g1 + g2 + g3 + 256 * 10 == 1_971_352


@pytest.mark.parametrize(
    ("in_shape", "kw"),
    [
        ((3, 32, 32), {}),
        ((1, 28, 28), {"widths": (32, 128, 128)}),
        ((3, 32, 32), {"whiten": False, "widths": (16, 32)}),
        ((3, 20, 24), {"whiten_kernel": 3, "widths": (8, 8, 8, 8)}),
        ((1, 28, 28), {"whiten_kernel": 3, "stem_stride": 2, "widths": (16, 32, 64)}),  # recipes/mnist-fast
        ((3, 29, 31), {"whiten": False, "stem_stride": 3, "widths": (8, 16)}),
    ],
)
def test_params_and_flops_match_torch(in_shape: tuple[int, ...], kw: dict) -> None:
    with torch.device("meta"):
        model = create_model("convnet", in_shape=in_shape, num_classes=10, **kw).eval()  # BN on 1x1 maps
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.empty(1, *in_shape))
    assert model.num_params() == _numel(model)
    assert model.flops_per_example() == counter.get_total_flops()


def test_reset_classifier_keeps_bias_free_head() -> None:
    torch.manual_seed(0)
    model = create_model("convnet", in_shape=(3, 16, 16), num_classes=10, widths=(8, 16)).double()
    model.reset_classifier(3)
    assert model.fc.bias is None and model.fc.weight.dtype == torch.float64
    assert model.num_params() == _numel(model)
    assert model(torch.randn(2, 3, 16, 16, dtype=torch.float64)).shape == (2, 3)
    rebuilt = create_model(**json.loads(json.dumps(model.config)))
    assert isinstance(rebuilt, ConvNet) and rebuilt.fc.weight.shape == (3, 16)
    model.reset_classifier(0)
    assert model(torch.randn(2, 3, 16, 16, dtype=torch.float64)).shape == (2, 16)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = create_model("convnet", in_shape=(1, 16, 16), num_classes=4, widths=(8, 8))
    model.init_from_data(torch.randn(16, 1, 16, 16))
    model(torch.randn(4, 1, 16, 16)).logsumexp(1).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("in_shape", "kw", "match"),
    [
        ((3, 8, 8), {}, r"needs H, W >= 9"),
        ((784,), {}, r"\(C, H, W\)"),
        ((3, 32, 32), {"widths": ()}, "non-empty"),
        ((3, 32, 32), {"activation": "gelo"}, "did you mean 'gelu'"),
        ((3, 32, 32), {"whiten_kernel": 0}, "whiten_kernel"),
        ((3, 32, 32), {"stem_stride": 0}, "stem_stride must be a positive int"),
        ((1, 15, 15), {"stem_stride": 2, "widths": (8, 8, 8)}, r"stride 2; it needs H, W >= 16"),
    ],
)
def test_bad_arguments(in_shape: tuple, kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_model("convnet", in_shape=in_shape, num_classes=10, **kw)


def test_presets() -> None:
    assert model_args("convnet") == {
        "widths": (64, 256, 256),
        "whiten": True,
        "whiten_kernel": 2,
        "activation": "gelu",
        "logit_scale": 1 / 9,
        "stem_stride": 1,  # airbench: no downsampling before the first group
        "ensemble": 1,  # every family's (models/ensemble.py)
    }
    assert model_args("convnet-half")["widths"] == (32, 128, 128)
