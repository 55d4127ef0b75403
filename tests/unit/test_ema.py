"""Weight averages (EMA, lookahead) over models whose tensors have several names (tied weights)."""

from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import load_file

from layerwise.models import create_model
from layerwise.train.ema import EMA, Lookahead, distinct_state
from layerwise.train.run import load_model, save_model


def _gpt(tie: bool = True):
    torch.manual_seed(0)
    return create_model("gpt", in_shape=(8,), num_classes=32, n_layer=1, n_head=2, n_embd=16,
                        tie_embeddings=tie)


def _train(model, ema: EMA | None, steps: int = 30, lookahead: Lookahead | None = None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        x = torch.randint(0, 32, (4, 8), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.roll(-1, 1).flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update()
        if lookahead is not None:
            lookahead.after_step(step)


def _reference_average(model_fn, decay: float, steps: int) -> dict[str, torch.Tensor]:
    """The EMA recomputed by hand over every named parameter, from a second identical run."""
    model = model_fn()
    avg = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(1)
    for n_upd in range(1, steps + 1):
        x = torch.randint(0, 32, (4, 8), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.roll(-1, 1).flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        d = min(decay, (1 + n_upd) / (10 + n_upd))
        for n, p in model.named_parameters():
            avg[n] = d * avg[n] + (1 - d) * p.detach()
    return avg


def test_distinct_state_groups_the_names_of_a_tied_weight():
    groups = distinct_state(_gpt())
    tied = [names for names, _t, is_param in groups if len(names) > 1]
    assert len(tied) == 1 and set(tied[0]) == {"wte.weight", "fc.weight"}
    assert all(is_param for names, _t, is_param in groups if len(names) > 1)
    untied = distinct_state(_gpt(tie=False))
    assert all(len(names) == 1 for names, _t, _p in untied)


def test_ema_averages_a_tied_weight_once_and_evaluates_with_it():
    model = _gpt()
    ema = EMA(model, 0.9)
    _train(model, ema)
    ref = _reference_average(_gpt, 0.9, 30)
    tied = [n for n in model.state_dict() if model.state_dict()[n].data_ptr() == model.fc.weight.data_ptr()]
    assert len(tied) == 2
    with ema.swapped_in(model):
        for n, p in model.named_parameters():  # every weight, the shared matrix included, is the average
            torch.testing.assert_close(p.detach(), ref[n], rtol=0, atol=1e-6)
        assert model.fc.weight is model.wte.weight  # the tie survives the swap
    # the live model differs from the average (else the test proves nothing)
    live_minus_avg = (model.fc.weight.detach() - ref[tied[0]]).abs().max().item()
    assert live_minus_avg > 1e-3


def test_saved_model_keeps_the_tie_and_the_averaged_matrix(tmp_path):
    model = _gpt()
    ema = EMA(model, 0.9)
    _train(model, ema)
    ref = _reference_average(_gpt, 0.9, 30)
    with ema.swapped_in(model):
        save_model(tmp_path / "m.safetensors", model, {"model": model.config, "data": {}})
    stored = load_file(str(tmp_path / "m.safetensors"))
    assert len([k for k in stored if k in ("wte.weight", "fc.weight")]) == 1
    loaded, _meta = load_model(tmp_path / "m.safetensors")
    assert loaded.fc.weight is loaded.wte.weight
    name = next(n for n, _p in model.named_parameters() if n == "wte.weight")
    torch.testing.assert_close(loaded.wte.weight.detach(), ref[name], rtol=0, atol=1e-6)


def test_ema_state_round_trips_and_reads_older_checkpoints():
    model = _gpt()
    ema = EMA(model, 0.9)
    _train(model, ema, steps=5)
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    other = EMA(model, 0.9)
    other.load_state_dict(state)
    assert other.updates == 5
    for k, v in ema.shadow.items():
        torch.testing.assert_close(other.shadow[k], v, rtol=0, atol=0)
    # an older checkpoint held an unaveraged copy under the tied weight's second name: the first wins
    old = {"updates": 5, "shadow": {k: v.clone() for k, v in ema.shadow.items()}}
    second = [k for k in old["shadow"] if k == "fc.weight"][0]
    old["shadow"][second] += 1.0
    third = EMA(model, 0.9)
    third.load_state_dict(old)
    torch.testing.assert_close(third.shadow[second], ema.shadow[second], rtol=0, atol=0)


def test_lookahead_keeps_one_slow_copy_of_a_tied_weight():
    model = _gpt()
    la = Lookahead(model, every=2, start_step=0, decay=0.9, total_steps=10)
    assert len(la._slow) == len([g for g in distinct_state(model) if g[1].is_floating_point()])
    _train(model, None, steps=10, lookahead=la)
    assert la.slow["wte.weight"] is la.slow["fc.weight"]
    assert model.fc.weight is model.wte.weight


@pytest.mark.parametrize("name", ["resnet-digits", "mlp"])
def test_models_without_ties_average_every_parameter(name):
    model = create_model(name, in_shape=(1, 8, 8), num_classes=10)
    ema = EMA(model, 0.9)
    n_params = len(list(model.parameters()))
    assert len(ema._avg[0]) == n_params


def test_ema_update_on_the_device_is_the_host_update_bit_for_bit_and_skips_exactly():
    # the Trainer's sync-free step: update(taken) with a device flag, the count kept on the device
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    host, dev = EMA(model, 0.95), EMA(model, 0.95)
    flags = [True, True, False, True, False, False, True] + [True] * 30  # the ramp runs past 0.95
    for taken in flags:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
            model[1].num_batches_tracked.add_(1)
        before = {k: v.clone() for k, v in dev.shadow.items()}
        if taken:
            host.update()
        dev.update(torch.tensor(taken))
        if not taken:  # a skipped step leaves every shadow tensor, buffers included, as it was
            assert all(torch.equal(before[k], dev.shadow[k]) for k in before)
    assert dev.updates == host.updates == sum(flags)
    assert all(torch.equal(host.shadow[k], dev.shadow[k]) for k in host.shadow)
    dev.updates = 3  # loading a checkpoint moves the count back to the host
    assert dev.updates == 3 and dev._device_updates is None
