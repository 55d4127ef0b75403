"""Blocks in layerwise.nn checked against their formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from layerwise.nn import (
    ACTIVATIONS,
    NORM_EPS,
    NORMS,
    ConvNormAct,
    Dense,
    Dropout,
    Residual,
    conv_cost,
    dense_cost,
    get_activation,
    get_norm,
    norm_num_params,
)

EPS = NORM_EPS


# --- activations -------------------------------------------------------------------------------
def _x() -> torch.Tensor:
    # float64 so the comparison checks the formula, not float32 rounding
    return torch.linspace(-6.0, 6.0, 2001, dtype=torch.float64)


ACT_FORMULAS = {
    "relu": lambda x: torch.clamp(x, min=0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "silu": lambda x: x * torch.sigmoid(x),
    "identity": lambda x: x,
    "tanh": lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
}


def test_activation_names() -> None:
    assert ACTIVATIONS == ("relu", "gelu", "gelu_tanh", "silu", "identity", "tanh")
    assert set(ACT_FORMULAS) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_formula(name: str) -> None:
    x = _x()
    torch.testing.assert_close(get_activation(name)(x), ACT_FORMULAS[name](x), atol=1e-6, rtol=0)


def test_gelu_variants_differ() -> None:
    # The exact and tanh forms agree closely but not exactly; a swapped mapping would pass the
    # formula test only by accident, so check they are distinct.
    x = _x()
    diff = (get_activation("gelu")(x) - get_activation("gelu_tanh")(x)).abs().max().item()
    assert 1e-5 < diff < 1e-2


@pytest.mark.parametrize(("bad", "closest"), [("gelu_tan", "gelu_tanh"), ("Relu", "relu"), ("silu6", "silu")])
def test_activation_unknown_name(bad: str, closest: str) -> None:
    with pytest.raises(ValueError) as e:
        get_activation(bad)
    msg = str(e.value)
    assert repr(bad) in msg and f"did you mean {closest!r}" in msg
    assert all(n in msg for n in ACTIVATIONS)


# --- norms -------------------------------------------------------------------------------------
def _set_affine(norm: nn.Module, c: int) -> None:
    """Non-trivial gamma (and beta where the norm has one) so the affine part is tested."""
    with torch.no_grad():
        for name, p in norm.named_parameters():
            if name.endswith("weight"):
                p.copy_(torch.linspace(0.5, 2.0, c))
            else:
                p.copy_(torch.linspace(-1.0, 1.0, c))


def _bshape(kind: str, c: int) -> tuple[int, ...]:
    return (1, c) if kind == "1d" else (1, c, 1, 1)


def _input(kind: str, c: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (16, c) if kind == "1d" else (8, c, 5, 6)
    return torch.randn(shape, generator=g) * 3.0 + 1.5


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_batchnorm_train_formula(kind: str) -> None:
    c = 5
    bn = get_norm("batch", c, kind=kind)
    assert isinstance(bn, nn.BatchNorm1d if kind == "1d" else nn.BatchNorm2d)
    _set_affine(bn, c)
    x = _input(kind, c)
    dims = (0,) if kind == "1d" else (0, 2, 3)
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)  # biased variance normalizes in training
    gamma, beta = bn.weight.view(_bshape(kind, c)), bn.bias.view(_bshape(kind, c))
    expected = gamma * (x - mean) / torch.sqrt(var + EPS) + beta
    torch.testing.assert_close(bn.train()(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_batchnorm_eval_uses_running_stats(kind: str) -> None:
    c, momentum = 4, 0.1
    bn = get_norm("batch", c, kind=kind)
    _set_affine(bn, c)
    dims = (0,) if kind == "1d" else (0, 2, 3)
    run_mean, run_var = torch.zeros(c), torch.ones(c)
    bn.train()
    for seed in range(3):
        x = _input(kind, c, seed)
        bn(x)
        # running stats use the *unbiased* batch variance (PyTorch and the BN paper)
        n = x.numel() // c
        run_mean = (1 - momentum) * run_mean + momentum * x.mean(dims)
        run_var = (1 - momentum) * run_var + momentum * x.var(dims, unbiased=False) * n / (n - 1)
    torch.testing.assert_close(bn.running_mean, run_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_var, run_var, atol=1e-5, rtol=1e-5)
    x = _input(kind, c, seed=10)
    s = _bshape(kind, c)
    x_hat = (x - run_mean.view(s)) / torch.sqrt(run_var.view(s) + EPS)
    expected = bn.weight.view(s) * x_hat + bn.bias.view(s)
    torch.testing.assert_close(bn.eval()(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_layernorm_formula(kind: str) -> None:
    c = 6
    ln = get_norm("layer", c, kind=kind)
    _set_affine(ln, c)
    x = _input(kind, c)
    # per example (and per pixel for maps), statistics over the channel dim 1
    mean = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    s = _bshape(kind, c)
    gamma = torch.linspace(0.5, 2.0, c).view(s)
    beta = torch.linspace(-1.0, 1.0, c).view(s)
    expected = gamma * (x - mean) / torch.sqrt(var + EPS) + beta
    torch.testing.assert_close(ln(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_rmsnorm_formula(kind: str) -> None:
    c = 6
    rms = get_norm("rms", c, kind=kind)
    _set_affine(rms, c)
    x = _input(kind, c)
    gamma = torch.linspace(0.5, 2.0, c).view(_bshape(kind, c))
    expected = gamma * x / torch.sqrt(x.pow(2).mean(1, keepdim=True) + EPS)
    torch.testing.assert_close(rms(x), expected, atol=1e-5, rtol=1e-5)


def test_layernorm_2d_is_per_pixel_not_groupnorm() -> None:
    # Channel LayerNorm: every pixel's channel vector has mean 0, var 1 (gamma=1, beta=0).
    y = get_norm("layer", 8, kind="2d")(_input("2d", 8))
    torch.testing.assert_close(y.mean(1), torch.zeros(8, 5, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), torch.ones(8, 5, 6), atol=1e-3, rtol=0)


@pytest.mark.parametrize("kind", ["1d", "2d"])
@pytest.mark.parametrize("name", NORMS)
def test_norm_param_count_and_shape(name: str, kind: str) -> None:
    norm = get_norm(name, 7, kind=kind)
    assert sum(p.numel() for p in norm.parameters()) == norm_num_params(name, 7)
    x = _input(kind, 7)
    assert norm(x).shape == x.shape
    if name == "none":
        assert torch.equal(norm(x), x)


def test_norm_unknown_name_and_kind() -> None:
    with pytest.raises(ValueError, match="did you mean 'batch'"):
        get_norm("bacth", 4)
    with pytest.raises(ValueError, match="did you mean 'rms'"):
        norm_num_params("rsm", 4)
    with pytest.raises(ValueError, match="did you mean '2d'"):
        get_norm("batch", 4, kind="2D")


# --- dropout -----------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_inverted_scaling(p: float) -> None:
    torch.manual_seed(0)
    x = torch.rand(100_000) + 0.5  # nonzero, so zeros in y are exactly the dropped entries
    drop = Dropout(p).train()
    y = drop(x)
    kept = y != 0
    assert abs((~kept).float().mean().item() - p) < 0.01
    # survivors are x / (1 - p); PyTorch multiplies by fl(1 / (1 - p)), so allow 1-2 ulp
    torch.testing.assert_close(y[kept], x[kept] / (1 - p), rtol=3e-7, atol=0)
    if p == 0.5:  # 1 / (1 - p) = 2 is exact in binary: bit-exact survivors
        assert torch.equal(y[kept], x[kept] / (1 - p))
    assert torch.equal(drop.eval()(x), x)


# --- Dense, ConvNormAct, Residual --------------------------------------------------------------
def test_dense_formula() -> None:
    torch.manual_seed(0)
    d = Dense(5, 3, act="gelu")
    assert isinstance(d.linear, nn.Linear) and isinstance(d.norm, nn.Identity)
    assert isinstance(d.act, nn.GELU) and isinstance(d.drop, nn.Identity)
    x = torch.randn(4, 5)
    expected = F.gelu(x @ d.linear.weight.T + d.linear.bias)
    torch.testing.assert_close(d(x), expected)


def test_dense_with_norm_and_dropout() -> None:
    torch.manual_seed(0)
    d = Dense(5, 3, act="silu", norm="layer", dropout=0.2, bias=False)
    assert d.linear.bias is None and isinstance(d.drop, nn.Dropout)
    x = torch.randn(4, 5)
    z = x @ d.linear.weight.T
    z_hat = (z - z.mean(1, keepdim=True)) / torch.sqrt(z.var(1, unbiased=False, keepdim=True) + EPS)
    expected = F.silu(z_hat)  # LayerNorm's gamma = 1, beta = 0 at init
    torch.testing.assert_close(d.eval()(x), expected, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in d.parameters()) == dense_cost(5, 3, norm="layer", bias=False)[0]
    with pytest.raises(ValueError, match="dropout"):
        Dense(5, 3, dropout=1.0)


def test_conv_norm_act_formula_and_bias_rule() -> None:
    torch.manual_seed(0)
    m = ConvNormAct(3, 8, 3, 2, act="relu", norm="batch").eval()
    assert m.conv.bias is None and m.conv.padding == (1, 1)
    x = torch.randn(2, 3, 9, 9)
    z = F.conv2d(x, m.conv.weight, stride=2, padding=1)
    bn = m.norm
    s = (1, 8, 1, 1)
    expected = F.relu(
        bn.weight.view(s) * (z - bn.running_mean.view(s)) / torch.sqrt(bn.running_var.view(s) + EPS)
        + bn.bias.view(s)
    )
    y = m(x)
    assert y.shape == (2, 8, 5, 5)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    assert ConvNormAct(3, 8, norm="none").conv.bias is not None


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("k", "stride", "groups"), [(3, 1, 1), (3, 2, 1), (1, 2, 1), (7, 2, 1), (3, 1, 4)])
def test_conv_cost_matches_module(norm: str, k: int, stride: int, groups: int) -> None:
    m = ConvNormAct(8, 12, k, stride, norm=norm, groups=groups)
    x = torch.randn(1, 8, 11, 10)
    with FlopCounterMode(display=False) as counter:
        y = m(x)
    params, flops, hw = conv_cost(8, 12, k, stride, (11, 10), norm=norm, groups=groups)
    assert params == sum(p.numel() for p in m.parameters())
    assert flops == counter.get_total_flops()
    assert hw == tuple(y.shape[2:])


def test_residual_identity_and_projection() -> None:
    torch.manual_seed(0)
    fn = nn.Linear(4, 4)
    x = torch.randn(3, 4)
    torch.testing.assert_close(Residual(fn)(x), fn(x) + x)

    fn, proj = nn.Linear(4, 6), nn.Linear(4, 6, bias=False)
    torch.testing.assert_close(Residual(fn, proj)(x), fn(x) + proj(x))
    with pytest.raises(ValueError, match="proj"):
        Residual(fn)(x)  # (3, 6) + (3, 4): a shape change needs a projection

    # conv block whose shortcut is a strided 1x1 projection
    conv = Residual(ConvNormAct(4, 8, 3, 2), ConvNormAct(4, 8, 1, 2, act="identity"))
    xc = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(conv(xc), conv.fn(xc) + conv.proj(xc))
