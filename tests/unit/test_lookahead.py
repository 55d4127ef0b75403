"""airbench's lookahead (train/ema.py: Lookahead), against the formula computed by hand."""

import pytest
import torch
from torch import nn

from layerwise.train.ema import Lookahead


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def _float_state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items() if v.is_floating_point()}


def test_lookahead_follows_the_formula_and_resets_the_live_weights():
    m = _model()
    every, start, decay, total = 2, 3, 0.9, 10
    la = Lookahead(m, every=every, start_step=start, decay=decay, total_steps=total)
    slow = None
    for step in range(1, total + 1):
        with torch.no_grad():  # a stand-in optimizer step: every float tensor moves, buffers too
            for v in m.state_dict().values():
                if v.is_floating_point():
                    v.add_(torch.randn_like(v))
            m[1].num_batches_tracked += 1
        live = _float_state(m)
        la.after_step(step)
        due = step >= start and step % every == 0
        if due and slow is None:  # step 4: the slow copy starts at the live weights, nothing moves
            slow = live
        elif due:
            rho = decay**every * (step / total) ** 3
            slow = {k: rho * slow[k] + (1 - rho) * live[k] for k in live}
        expect = slow if due else live
        for k, v in _float_state(m).items():
            torch.testing.assert_close(v, expect[k], rtol=0, atol=1e-6)
    assert la.started and int(m[1].num_batches_tracked) == total  # integer buffers are left alone
    assert "1.running_mean" in la.slow and "1.num_batches_tracked" not in la.slow


def test_lookahead_does_nothing_before_its_start_and_sync_resets():
    m = _model()
    la = Lookahead(m, every=1, start_step=5, decay=0.95, total_steps=10)
    before = _float_state(m)
    la.after_step(4)
    la.sync()  # not started: a no-op
    assert not la.started and all(v.equal(before[k]) for k, v in _float_state(m).items())
    la.after_step(5)
    with torch.no_grad():
        m[0].weight.add_(1.0)
    la.sync()  # back to the slow copy taken at step 5
    assert m[0].weight.equal(before["0.weight"])


def test_lookahead_state_round_trips():
    m = _model()
    la = Lookahead(m, every=1, start_step=1, decay=0.9, total_steps=4)
    la.after_step(1)
    with torch.no_grad():
        m[0].weight.add_(2.0)
    la.after_step(2)
    other = Lookahead(_model(), every=1, start_step=1, decay=0.9, total_steps=4)
    other.load_state_dict(la.state_dict())
    assert other.started and all(other.slow[k].equal(v) for k, v in la.slow.items())


@pytest.mark.parametrize("kw", [{"every": 0}, {"decay": 1.0}, {"total_steps": 0}])
def test_lookahead_refuses_bad_settings(kw):
    args = {"every": 5, "start_step": 0, "decay": 0.95, "total_steps": 10} | kw
    with pytest.raises(ValueError, match="Lookahead needs"):
        Lookahead(_model(), **args)


def test_lookahead_on_the_device_matches_the_host_and_skips_exactly():
    # the Trainer's sync-free step: after_step(step, taken) for every step, decided on the device
    host_m, dev_m = _model(), _model()
    host = Lookahead(host_m, every=2, start_step=2, decay=0.9, total_steps=12)
    dev = Lookahead(dev_m, every=2, start_step=2, decay=0.9, total_steps=12)
    flags = [True, True, False, True, True, False, True, True, True, True, False, True]
    g = torch.Generator().manual_seed(3)
    for step, taken in enumerate(flags, start=1):
        if taken:  # a skipped step changes no weight
            delta = [torch.randn(p.shape, generator=g) for p in host_m.parameters()]
            with torch.no_grad():
                for m in (host_m, dev_m):
                    for p, d in zip(m.parameters(), delta):
                        p.add_(d)
        before = _float_state(dev_m), {k: v.clone() for k, v in dev.slow.items()}
        if taken:
            host.after_step(step)
        dev.after_step(step, torch.tensor(taken))
        if not taken:
            assert all(torch.equal(before[0][k], v) for k, v in _float_state(dev_m).items())
            assert all(torch.equal(before[1][k], v) for k, v in dev.slow.items())
    assert dev.started and host.started  # step 2 (taken) started it; step 3's skip did not matter
    host.sync(), dev.sync()
    assert all(torch.equal(v, _float_state(dev_m)[k]) for k, v in _float_state(host_m).items())
    assert all(torch.equal(host.slow[k], dev.slow[k]) for k in host.slow)
