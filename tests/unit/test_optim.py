"""Optimizers and param groups: who gets weight decay, exact update rules, Muon."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from layerwise.train.optim import (
    OPTIMIZERS,
    CombinedOptimizer,
    Muon,
    _impl_kwargs,
    build_optimizer,
    muon_param_split,
    param_groups,
    zeropower_via_newtonschulz5,
)


class Toy(nn.Module):
    """One of each layer kind the grouping rules care about."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.ln = nn.LayerNorm(8)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(12, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens_BT: torch.Tensor, img_B1HW: torch.Tensor) -> torch.Tensor:
        e_BD = self.ln(self.embed(tokens_BT)).mean(1)  # (B, 8)
        c_BC = self.bn(self.conv(img_B1HW)).mean((2, 3))  # (B, 4)
        return self.head(torch.relu(self.fc1(torch.cat([e_BD, c_BC], 1))))  # (B, 3)


def toy_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 10, (4, 5), generator=g), torch.randn(4, 1, 6, 6, generator=g)


def ids(params) -> set[int]:
    return {id(p) for p in params}


# --- param groups -----------------------------------------------------------------------------


def test_param_groups_decay_only_linear_and_conv_weights() -> None:
    m = Toy()
    groups = param_groups(m, 0.1)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    decay, no_decay = groups[0]["params"], groups[1]["params"]
    assert ids(decay) == ids([m.conv.weight, m.fc1.weight, m.head.weight])
    assert ids(no_decay) == ids([
        m.embed.weight, m.ln.weight, m.ln.bias, m.conv.bias, m.bn.weight, m.bn.bias,
        m.fc1.bias, m.head.bias,
    ])
    assert len(decay) + len(no_decay) == len(list(m.parameters()))


def test_param_groups_tied_frozen_and_no_weight_decay_hook() -> None:
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))  # 3-D, excluded by the hook
            self.frozen = nn.Linear(8, 8).requires_grad_(False)
            self.mlp = nn.Linear(8, 8)
            self.head = nn.Linear(8, 10, bias=False)  # registered first, before the embedding
            self.embed = nn.Embedding(10, 8)
            self.head.weight = self.embed.weight  # tied: the embedding owner must win

        def no_weight_decay(self) -> set[str]:
            return {"pos_embed"}

    m = LM()
    decay, no_decay = (g["params"] for g in param_groups(m, 0.1))
    assert ids(decay) == {id(m.mlp.weight)}
    assert ids(no_decay) == ids([m.pos_embed, m.mlp.bias, m.embed.weight])
    assert len(no_decay) == 3  # the tied weight appears once; frozen params not at all

    m.frozen.requires_grad_(True)
    m.mlp.requires_grad_(False)
    m.pos_embed.requires_grad_(False)
    m.embed.requires_grad_(False)
    # only the frozen->trainable Linear is left: no empty groups are returned
    assert [g["name"] for g in param_groups(m, 0.1)] == ["decay", "no_decay"]
    m.frozen.bias.requires_grad_(False)
    assert [g["name"] for g in param_groups(m, 0.1)] == ["decay"]


def _zero_grad_step(m: Toy, opt) -> None:
    tokens_BT, img_B1HW = toy_inputs()
    out = m(tokens_BT, img_B1HW.double())
    (0 * out.sum()).backward()  # every parameter gets an exactly-zero gradient
    opt.step()


def test_adamw_decay_shrinks_weights_by_exactly_one_minus_lr_wd() -> None:
    torch.manual_seed(0)
    m = Toy().double()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = build_optimizer(m, "adamw", lr=0.1, weight_decay=0.5)
    _zero_grad_step(m, opt)
    # AdamW: p *= 1 - lr*wd, then the Adam update is 0 / (0 + eps) = 0 -> bitwise exact
    decayed = {"conv.weight", "fc1.weight", "head.weight"}
    for n, p in m.named_parameters():
        expected = before[n] * (1 - 0.1 * 0.5) if n in decayed else before[n]
        assert torch.equal(p.detach(), expected), n


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_coupled_decay_exact(nesterov: bool) -> None:
    torch.manual_seed(0)
    m = Toy().double()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    lr, wd, mu = 0.1, 0.5, 0.9
    opt = build_optimizer(m, "sgd", lr=lr, weight_decay=wd, momentum=mu, nesterov=nesterov)
    _zero_grad_step(m, opt)
    # torch SGD: g = grad + wd*p = wd*p; first step buf = g; Nesterov uses g + mu*buf.
    factor = 1 - lr * wd * ((1 + mu) if nesterov else 1.0)
    for n, p in m.named_parameters():
        if n in {"conv.weight", "fc1.weight", "head.weight"}:
            torch.testing.assert_close(p.detach(), before[n] * factor, rtol=1e-14, atol=0)
        else:
            assert torch.equal(p.detach(), before[n]), n


@pytest.mark.parametrize(("momentum", "nesterov"), [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_hand_written_update(momentum: float, nesterov: bool) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    lr, wd = 0.05, 0.1
    ref = {n: p.detach().clone() for n, p in m.named_parameters()}
    bufs: dict[str, torch.Tensor] = {}
    opt = build_optimizer(m, "sgd", lr=lr, weight_decay=wd, momentum=momentum, nesterov=nesterov)
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(m(x), y).backward()
        opt.step()

        leaves = {n: t.requires_grad_(True) for n, t in ref.items()}
        loss = nn.functional.mse_loss(functional_call(m, leaves, (x,)), y)
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
        for n, p in leaves.items():
            g = grads[n] + (wd * p.detach() if n.endswith("weight") else 0.0)
            if momentum:
                bufs[n] = g if n not in bufs else momentum * bufs[n] + g
                g = g + momentum * bufs[n] if nesterov else bufs[n]
            ref[n] = p.detach() - lr * g
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.detach(), ref[n], rtol=0, atol=1e-6)


def test_unknown_optimizer_lists_names_and_closest() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'adamw'\?") as err:
        build_optimizer(Toy(), "adamww", lr=0.1)
    assert all(n in str(err.value) for n in OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_group_has_float_base_lr_and_cpu_fused(name: str) -> None:
    opt = build_optimizer(Toy(), name, lr=0.003, weight_decay=0.1, muon_lr=0.02)
    for g in opt.param_groups:
        want = 0.02 if g["name"] == "muon" else 0.003
        assert g["base_lr"] == g["lr"] == want and isinstance(g["lr"], float)
        if g["name"] != "muon":  # SGD, Adam/AdamW: torch's fused CPU kernels (faster than foreach)
            assert g["fused"] is True and not g.get("foreach"), (name, g)


def test_fused_on_cuda_foreach_on_cpu_and_device_check() -> None:
    assert _impl_kwargs(torch.optim.AdamW, "cuda") == {"fused": True}
    assert _impl_kwargs(torch.optim.SGD, "cuda") == {"fused": True}  # torch >= 2.3 has it
    assert _impl_kwargs(torch.optim.AdamW, "cpu") == {"fused": True}  # torch's CPU kernel: 3.5x faster
    assert _impl_kwargs(torch.optim.SGD, "cpu") == {"fused": True}  # one pass per tensor: 619 vs 826 us (MNIST MLP)
    assert _impl_kwargs(torch.optim.SGD, "cpu", fused=False) == {"foreach": True}
    assert _impl_kwargs(torch.optim.SGD, "cpu", per_param=True) == {"foreach": False}
    assert _impl_kwargs(torch.optim.AdamW, "cpu", fused=False) == {"foreach": True}
    assert _impl_kwargs(torch.optim.AdamW, "mps") == {}
    with pytest.raises(ValueError, match="move the model"):
        build_optimizer(Toy(), "adamw", lr=0.1, device_type="cuda")


# --- Muon -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(64, 32), (32, 64)])
def test_newton_schulz_singular_values_near_one(shape: tuple[int, int], dtype: torch.dtype) -> None:
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    O = zeropower_via_newtonschulz5(G, dtype=dtype)
    assert O.shape == G.shape and O.dtype == dtype
    s = torch.linalg.svdvals(O.float())
    assert s.min() >= 0.5 and s.max() <= 1.5, s


def test_muon_split_hidden_weights_vs_adamw() -> None:
    m = Toy()
    hidden, rest = muon_param_split(m)
    assert ids(hidden) == ids([m.conv.weight, m.fc1.weight])  # head is the last Linear
    opt = build_optimizer(m, "muon", lr=1e-3, weight_decay=0.1)
    assert isinstance(opt, CombinedOptimizer)
    names = {g["name"]: g for g in opt.param_groups}
    assert list(names) == ["muon", "adamw_decay", "adamw_no_decay"]
    assert ids(names["muon"]["params"]) == ids(hidden)
    assert ids(names["adamw_decay"]["params"]) == {id(m.head.weight)}
    assert names["adamw_decay"]["weight_decay"] == 0.1
    assert ids(names["adamw_no_decay"]["params"]) == ids(
        p for p in m.parameters() if p.ndim == 1 or p is m.embed.weight
    )
    assert isinstance(opt["muon"], Muon) and isinstance(opt["adamw"], torch.optim.AdamW)
    # NS dtype is a device choice (fp32 on CPU), kept out of the saved hyperparameters
    assert opt["muon"].ns_dtype == torch.float32
    assert "ns_dtype" not in opt.state_dict()["muon"]["param_groups"][0]


@pytest.mark.parametrize("shape", [(64, 16), (8, 3, 3, 3)])  # tall Linear; conv (8, 27)
def test_muon_step_matches_formula(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(*shape))
    p.grad = torch.randn(*shape)
    p0, g0 = p.detach().clone(), p.grad.clone()
    lr, wd, beta = 0.02, 0.1, 0.95
    Muon([p], lr=lr, momentum=beta, weight_decay=wd).step()
    assert torch.equal(p.grad, g0)  # the gradient is not modified in place
    buf = torch.zeros_like(g0).lerp(g0, 1 - beta)
    u_2d = g0.lerp(buf, beta).reshape(shape[0], -1)
    scale = math.sqrt(max(1.0, u_2d.size(0) / u_2d.size(1)))  # 2 for (64, 16), 1 for conv
    expected = p0 * (1 - lr * wd) - lr * scale * zeropower_via_newtonschulz5(u_2d).float().reshape(shape)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)


def test_muon_normalize_rescales_the_weight_before_the_step() -> None:
    # airbench94_muon: p <- p * sqrt(rows) / ||p||, then the orthogonalized step; 3 NS steps
    torch.manual_seed(0)
    p = nn.Parameter(5.0 * torch.randn(8, 4, 3, 3))
    p.grad = torch.randn(8, 4, 3, 3)
    p0, g0 = p.detach().clone(), p.grad.clone()
    lr, beta = 0.24, 0.6
    Muon([p], lr=lr, momentum=beta, normalize=True, ns_steps=3).step()
    buf = torch.zeros_like(g0).lerp(g0, 1 - beta)
    u_2d = g0.lerp(buf, beta).reshape(8, -1)
    expected = p0 * (8**0.5 / p0.norm()) - lr * zeropower_via_newtonschulz5(u_2d, 3).float().reshape(p0.shape)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)
    # the steps change the weight's direction, the rescale pins its norm: over many steps with
    # the same lr the norm stays near sqrt(rows) instead of growing with every step
    for _ in range(50):
        p.grad = torch.randn(8, 4, 3, 3)
        Muon([p], lr=lr, momentum=beta, normalize=True).step()
    assert abs(p.norm().item() - 8**0.5) < lr * 3, p.norm()


def test_muon_with_sgd_for_the_rest() -> None:
    # airbench94_muon's split: Muon on the hidden weights, Nesterov SGD (coupled decay, the
    # no-decay lr multiplier) on the head, biases and norms
    m = Toy()
    opt = build_optimizer(m, "muon", lr=0.5, weight_decay=0.01, momentum=0.85, nesterov=True,
                          muon_lr=0.24, muon_momentum=0.6, muon_rest="sgd", muon_normalize=True,
                          muon_ns_steps=3, no_decay_lr_scale=64)
    names = {g["name"]: g for g in opt.param_groups}
    assert list(names) == ["muon", "sgd_decay", "sgd_no_decay"]
    assert isinstance(opt["sgd"], torch.optim.SGD)
    assert ids(names["sgd_decay"]["params"]) == {id(m.head.weight)}
    assert names["sgd_decay"]["lr"] == 0.5 and names["sgd_no_decay"]["lr"] == 32.0
    assert names["sgd_decay"]["momentum"] == 0.85 and names["sgd_decay"]["nesterov"]
    assert names["muon"]["lr"] == 0.24 and names["muon"]["momentum"] == 0.6
    assert names["muon"]["normalize"] and names["muon"]["ns_steps"] == 3
    # the head's SGD step is torch's: coupled decay through Nesterov momentum
    m.head.weight.grad = torch.ones_like(m.head.weight)
    w0 = m.head.weight.detach().clone()
    opt["sgd"].step()
    g = 1 + 0.01 * w0
    torch.testing.assert_close(m.head.weight.detach(), w0 - 0.5 * (g + 0.85 * g))
    with pytest.raises(ValueError, match="did you mean 'sgd'"):
        build_optimizer(m, "muon", lr=0.5, muon_rest="sdg")


def _mlp_task(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x = torch.randn(256, 8)
    y = torch.sin(x @ torch.randn(8, 1))  # smooth non-linear target, (256, 1)
    m = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    return m, x, y


def _train(m: nn.Module, opt, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(m(x), y)
        loss.backward()
        opt.step()
    return loss.item()


def test_muon_trains_mlp() -> None:
    m, x, y = _mlp_task()
    opt = build_optimizer(m, "muon", lr=3e-3, muon_lr=0.02)
    with torch.no_grad():
        start = nn.functional.mse_loss(m(x), y).item()
    end = _train(m, opt, x, y, steps=60)
    # seeds 0-3 on torch 2.13 CPU end at 0.03-0.045x the start loss (AdamW alone: 0.05-0.14x)
    assert end < 0.1 * start, (start, end)


def test_muon_state_dict_roundtrip_bitwise() -> None:
    m, x, y = _mlp_task()
    opt = build_optimizer(m, "muon", lr=3e-3, weight_decay=0.01)
    _train(m, opt, x, y, steps=3)
    saved = copy.deepcopy(opt.state_dict())
    m2 = copy.deepcopy(m)
    opt2 = build_optimizer(m2, "muon", lr=3e-3, weight_decay=0.01)
    opt2.load_state_dict(saved)
    assert [g["base_lr"] for g in opt2.param_groups] == [g["base_lr"] for g in opt.param_groups]
    _train(m, opt, x, y, steps=2)
    _train(m2, opt2, x, y, steps=2)
    for (n, p), p2 in zip(m.named_parameters(), m2.parameters()):
        assert torch.equal(p, p2), n
    with pytest.raises(ValueError, match="expected"):
        opt2.load_state_dict({"muon": saved["muon"]})


def test_combined_optimizer_with_grad_scaler_skips_inf_steps() -> None:
    # The Trainer's fp16 path: GradScaler.unscale_/step only need param_groups and step().
    m, x, y = _mlp_task()
    opt = build_optimizer(m, "muon", lr=3e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = [p.detach().clone() for p in m.parameters()]
    scaler.scale(nn.functional.mse_loss(m(x), y)).backward()
    m[0].bias.grad[0] = float("inf")
    scaler.step(opt)  # found inf: skipped, scale halved
    scaler.update()
    assert scaler.get_scale() == 2.0**9
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))
    opt.zero_grad(set_to_none=True)
    scaler.scale(nn.functional.mse_loss(m(x), y)).backward()
    scaler.step(opt)
    assert all(not torch.equal(p, b) for p, b in zip(m.parameters(), before))


def test_no_decay_lr_scale_speeds_up_only_biases_and_norms():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=0.01, no_decay_lr_scale=64.0)
    lrs = {g["name"]: (g["lr"], g["base_lr"]) for g in opt.param_groups}
    assert lrs["decay"] == (pytest.approx(0.1), pytest.approx(0.1))
    assert lrs["no_decay"] == (pytest.approx(6.4), pytest.approx(6.4))
    with pytest.raises(ValueError, match="no_decay_lr_scale"):
        build_optimizer(model, "sgd", lr=0.1, no_decay_lr_scale=0.0)


def _muon_step(found_inf: float | None, grad_scale: float | None = None, normalize: bool = True):
    """One Muon step after two plain ones, with the flags set as GradScaler / the Trainer set them."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(6, 4))
    opt = Muon([w], lr=0.05, momentum=0.9, weight_decay=0.1, ns_dtype=torch.float32, normalize=normalize)
    for _ in range(2):
        w.grad = torch.randn(6, 4)
        opt.step()
    w.grad = torch.randn(6, 4) * (grad_scale or 1.0)
    if found_inf is not None:
        opt.found_inf = torch.tensor(found_inf)
    if grad_scale is not None:
        opt.grad_scale = torch.tensor(grad_scale)
    before = (w.detach().clone(), opt.state[w]["momentum_buffer"].clone())
    opt.step()
    return before, (w.detach().clone(), opt.state[w]["momentum_buffer"].clone())


def test_muon_skips_on_the_device_when_found_inf_is_set():
    before, after = _muon_step(1.0)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])  # weights and momentum untouched
    # found_inf = 0 is the same step, bit for bit, as no flag at all (the update computed out of place)
    _, plain = _muon_step(None)
    _, flagged = _muon_step(0.0)
    assert not torch.equal(plain[0], before[0])
    assert torch.equal(plain[0], flagged[0]) and torch.equal(plain[1], flagged[1])
    # grad_scale divides the gradients first (a power of two: exact)
    _, scaled = _muon_step(0.0, grad_scale=1024.0)
    assert torch.equal(plain[0], scaled[0]) and torch.equal(plain[1], scaled[1])


def test_combined_optimizer_hands_found_inf_to_every_child():
    m, x, y = _mlp_task()
    cpu_fused = build_optimizer(m, "muon", lr=3e-3, fused=True)
    assert cpu_fused._step_supports_amp_scaling  # Muon + fused AdamW (torch's CPU kernels) skip on the device
    assert not build_optimizer(m, "muon", lr=3e-3, fused=False)._step_supports_amp_scaling  # foreach AdamW cannot
    before = [p.detach().clone() for p in m.parameters()]
    nn.functional.mse_loss(m(x), y).backward()
    cpu_fused.found_inf = torch.tensor(1.0)
    cpu_fused.step()
    del cpu_fused.found_inf
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))
    assert {int(s["step"]) for s in cpu_fused["adamw"].state.values()} == {0}  # Adam's step count unchanged
    assert not any(hasattr(o, "found_inf") for o in cpu_fused.optimizers)  # nothing left behind
    cpu_fused.step()
    assert all(not torch.equal(p, b) for p, b in zip(m.parameters(), before))
    assert {int(s["step"]) for s in cpu_fused["adamw"].state.values()} == {1}
