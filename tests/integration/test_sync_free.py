"""The Trainer's sync-free step (the skip decision on the device, the counters read at log
intervals), run on the CPU with LAYERWISE_SYNC_FREE=1 (fused CPU kernels) against the synced
step with the same optimizers: the same numbers, bit for bit, with and without bad steps."""

import math

import pytest
import torch

from layerwise.config import ConfigError, load_config
from layerwise.train.trainer import Trainer, TrainingDiverged

MLP = ["--model.name=mlp", "--model.depth=2", "--model.width=32", "--train.eval_every=0", "--data.batch_size=64"]


@pytest.fixture(autouse=True)
def sync_free(monkeypatch):
    monkeypatch.setenv("LAYERWISE_SYNC_FREE", "1")


def _trainer(overrides_for, device_guard: bool, *args: str, run_dir=None) -> Trainer:
    t = Trainer(load_config(None, overrides_for(*MLP, *args)), run_dir, show_progress=False)
    assert t._device_guard  # fused SGD/AdamW and Muon all skip on the device
    t._device_guard = device_guard  # False: the synced step, with the same (fused) optimizer
    return t


def _nan_at(t: Trainer, bad: set[int]) -> None:
    """The model's outputs are NaN at the given optimizer steps (0-based; one micro-batch each)."""
    inner, calls = t.forward, {"n": 0}

    def flaky(x):
        out = inner(x)
        calls["n"] += 1
        return out * float("nan") if calls["n"] - 1 in bad else out
    t.forward = flaky


def _state(t: Trainer) -> dict[str, torch.Tensor]:
    """Weights, EMA, lookahead's slow weights and every optimizer state tensor, flattened."""
    out = {f"w.{k}": v for k, v in t.model.state_dict().items()}
    out |= {f"ema.{k}": v for k, v in (t.ema.shadow.items() if t.ema else ())}
    out |= {f"slow.{k}": v for k, v in (t.lookahead.slow.items() if t.lookahead else ())}
    opt = t.optimizer.state_dict()
    for name, part in (opt.items() if "state" not in opt else [("", opt)]):
        for i, s in part["state"].items():
            out |= {f"opt.{name}.{i}.{k}": torch.as_tensor(v) for k, v in s.items()}
    return {k: v.detach().clone() for k, v in out.items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_records(t: Trainer) -> list[tuple]:
    return [(r["step"], r["loss"], r["accuracy"], r["skipped"], r["skipped_steps"])
            for r in t.log.records if r["kind"] == "train"]


@pytest.mark.parametrize("opt", [
    ["--optim.name=adamw", "--optim.lr=0.003", "--train.ema_decay=0.9", "--train.lookahead_every=2",
     "--train.lookahead_start=0", "--train.grad_accum=2", "--optim.clip_grad_norm=1.0"],
    ["--optim.name=muon", "--optim.muon_rest=sgd", "--optim.momentum=0.9", "--optim.nesterov=true",
     "--train.ema_decay=0.8"],
], ids=["adamw-ema-lookahead-accum", "muon-sgd-ema"])
def test_device_step_equals_the_synced_step_bit_for_bit(overrides_for, opt):
    # steps 3 and 11-12 have NaN outputs: skipped on the device, as the host skips them
    bad = {3, 11, 12} if "--train.grad_accum=2" not in opt else {6, 7, 22, 23, 24, 25}  # micro-batches
    runs = []
    for guard in (False, True):
        t = _trainer(overrides_for, guard, "--train.max_steps=20", "--train.log_every=5", *opt)
        _nan_at(t, bad)
        s = t.fit()
        runs.append((t, s))
    (host, hs), (dev, ds) = runs
    assert hs["skipped_steps"] == ds["skipped_steps"] == 3 and dev.bad_steps == host.bad_steps == 0
    assert _same(_state(host), _state(dev))
    assert _train_records(host) == _train_records(dev)
    assert [r[3] for r in _train_records(dev)] == [1, 0, 2, 0]  # skipped per interval of 5 steps
    assert all(math.isfinite(r[1]) for r in _train_records(dev))  # the NaN losses never reach the sums
    assert dev.ema.updates == host.ema.updates == 17
    assert hs["test_loss"] == ds["test_loss"] and hs["test_accuracy"] == ds["test_accuracy"]
    if opt[0] == "--optim.name=adamw":  # Adam's step counters count taken steps only
        assert {int(s["step"]) for s in dev.optimizer.state.values()} == {17}
    assert not dev._pending  # every flag was read by the end


def test_device_step_reads_no_flag_between_log_intervals(overrides_for):
    t = _trainer(overrides_for, True, "--train.max_steps=9", "--train.log_every=4")
    pending = []
    read = t._read_guard

    def watched():
        pending.append(len(t._pending))
        read()
    t._read_guard = watched
    t.fit()
    # step 1 is synced (the optimizer's state does not exist yet), then 3 + 4 device steps wait for
    # the reads at steps 4 and 8, and one for the end
    assert [n for n in pending if n] == [3, 4, 1]


def test_diverging_device_run_stops_late_naming_the_first_bad_step(overrides_for, tmp_path):
    run = tmp_path / "diverged"
    t = _trainer(overrides_for, True, "--train.max_steps=30", "--train.log_every=20", "--train.max_bad_steps=3",
                 "--run.checkpoint_every=5", "--run.keep_checkpoints=10", f"--run.dir={run}")
    _nan_at(t, set(range(5, 30)))
    with pytest.raises(TrainingDiverged) as e:
        t.fit()
    msg = str(e.value)
    # bad from step 5 on: the third in a row is step 7, read before the checkpoint after step 9
    assert "3 consecutive steps" in msg and "steps 5 to 7" in msg and "went on to step 10" in msg
    assert "optim.lr" in msg and t.step == 10 and t.skipped_steps == 3 and t.bad_steps == 3
    assert {p.name.split(".")[0] for p in (run / "checkpoints").iterdir()} == {"step_00000005"}


def test_device_counters_survive_resume_exactly(overrides_for, tmp_path):
    args = ("--train.max_steps=16", "--train.log_every=3", "--optim.name=adamw", "--optim.lr=0.003",
            "--train.ema_decay=0.9", "--run.checkpoint_every=5", "--run.keep_checkpoints=10")
    full = _trainer(overrides_for, True, *args)
    _nan_at(full, {2, 7, 8})
    full.fit()
    run = tmp_path / "cut"
    cut = _trainer(overrides_for, True, *args, f"--run.dir={run}")
    _nan_at(cut, {2, 7, 8})
    cut.fit()
    for f in (run / "checkpoints").iterdir():  # killed after step 10, mid-way through the run
        if not f.name.startswith("step_00000010"):
            f.unlink()
    (run / "summary.json").unlink()
    resumed = Trainer(load_config(run / "config.yaml"), run, resume=True, show_progress=False)
    assert resumed._device_guard and resumed._state_ready
    assert resumed.step == 10 and resumed.skipped_steps == 3 and resumed.ema.updates == 7
    _nan_at(resumed, set())  # the bad steps were before the checkpoint
    summary = resumed.fit()
    assert summary["skipped_steps"] == full.skipped_steps == 3
    assert _same(_state(full), _state(resumed))
    assert [r for r in _train_records(resumed)] == [r for r in _train_records(full)]


def test_fp16_overflow_on_the_device_counts_as_the_host_does(overrides_for, monkeypatch):
    import layerwise.train.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "grad_scaler",
                        lambda device, precision: torch.amp.GradScaler("cpu", init_scale=2.0**127))
    runs = []
    for guard in (False, True):
        t = _trainer(overrides_for, guard, "--train.max_steps=12", "--train.log_every=4", "--train.ema_decay=0.9",
                     "--optim.name=adamw", "--optim.lr=0.003")
        inner = t.forward
        t.forward = lambda x, inner=inner: inner(x) * 1000.0  # finite losses, gradients that overflow at 2^127
        t._state_ready = True  # the device path from the first step (Adam's skipped state is exact)
        runs.append((t, t.fit()))
    (host, hs), (dev, ds) = runs
    halvings = round(math.log2(2.0**127 / dev.scaler.get_scale()))
    assert halvings >= 1 and ds["skipped_steps"] == ds["overflow_steps"] == hs["overflow_steps"] == halvings
    assert dev.scaler.get_scale() == host.scaler.get_scale() and dev.bad_steps == 0
    assert dev.ema.updates == 12 - halvings
    assert _same(_state(host), _state(dev))


def test_a_bad_sync_free_setting_is_a_config_error(overrides_for, monkeypatch):
    monkeypatch.setenv("LAYERWISE_SYNC_FREE", "sometimes")
    with pytest.raises(ConfigError, match="LAYERWISE_SYNC_FREE"):
        Trainer(load_config(None, overrides_for(*MLP)), show_progress=False)
