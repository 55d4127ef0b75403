"""The Trainer's promises, each asserted on real (small) runs on the digits dataset."""

import json
import math

import pytest
import torch

from layerwise.config import load_config
from layerwise.train.inference import evaluate_run
from layerwise.train.precision import PrecisionError
from layerwise.train.schedule import lr_multiplier
from layerwise.train.trainer import Trainer, TrainingDiverged

MLP = ["--model.name=mlp", "--model.depth=2", "--model.width=64", "--train.eval_every=0"]


def _trainer(overrides_for, *args: str) -> Trainer:
    return Trainer(load_config(None, overrides_for(*MLP, *args)), show_progress=False)


def _weights(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in t.model.state_dict().items()}


def test_grad_accumulation_equals_one_big_batch(overrides_for):
    # 2 micro-batches of 32 accumulated == one batch of 64, step after step (no batch norm here)
    a = _trainer(overrides_for, "--data.batch_size=64", "--train.grad_accum=1", "--train.max_steps=5")
    b = _trainer(overrides_for, "--data.batch_size=64", "--train.grad_accum=2", "--train.max_steps=5")
    assert b.train_loader.batch_size == 32
    a.fit(), b.fit()
    wa, wb = _weights(a), _weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-6


def test_same_seed_same_metrics_and_weights(overrides_for):
    runs = []
    for _ in range(2):
        t = _trainer(overrides_for, "--train.epochs=2", "--model.dropout=0.1", "--data.augment_translate=1",
                     "--train.log_every=5")
        t.fit()
        losses = [r["loss"] for r in t.log.records]
        runs.append((losses, _weights(t)))
    assert runs[0][0] == runs[1][0] and len(runs[0][0]) > 5
    assert all(runs[0][1][k].equal(runs[1][1][k]) for k in runs[0][1])
    other = _trainer(overrides_for, "--train.epochs=2", "--model.dropout=0.1", "--data.augment_translate=1",
                     "--train.log_every=5", "--train.seed=1")
    other.fit()
    assert [r["loss"] for r in other.log.records] != runs[0][0]


def test_lr_schedule_is_applied(overrides_for):
    t = _trainer(overrides_for, "--train.epochs=2", "--train.log_every=1", "--optim.schedule=cosine",
                 "--optim.warmup_steps=5", "--optim.lr=0.2", "--optim.min_lr_ratio=0.1")
    t.fit()
    lrs = [r["lr"] for r in t.log.records if r["kind"] == "train"]
    expected = [0.2 * lr_multiplier(s, t.total_steps, schedule="cosine", warmup_steps=5, min_ratio=0.1)
                for s in range(t.total_steps)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert max(lrs) == pytest.approx(0.2, rel=0.02) and lrs[-1] == pytest.approx(0.02, rel=0.05)


def test_one_bad_step_is_skipped_and_counted(overrides_for):
    t = _trainer(overrides_for, "--train.epochs=3")
    inner, calls = t.forward, {"n": 0}

    def flaky(x):
        calls["n"] += 1
        out = inner(x)
        return out * float("nan") if calls["n"] == 10 else out
    t.forward = flaky

    summary = t.fit()
    assert summary["skipped_steps"] == 1
    assert summary["test_accuracy"] >= 0.9  # training went on normally
    assert json.loads((t.run_dir / "summary.json").read_text())["skipped_steps"] == 1
    # the skipped step's NaN loss stays out of the logged averages; its interval says it skipped one
    train = [r for r in t.log.records if r["kind"] == "train"]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["accuracy"]) for r in train)
    assert [r["skipped"] for r in train].count(1) == 1 and sum(r["skipped"] for r in train) == 1
    hit = next(r for r in train if r["skipped"])
    assert hit["step"] == 20 and hit["skipped_steps"] == 1  # step 10 of 23 per epoch, logged at step 20


@pytest.mark.parametrize("which", ["large", "small"])  # the probe's two ways: a sum, a norm
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_gradient_under_a_finite_loss_is_skipped(overrides_for, which, bad):
    """With clipping off the CPU's finiteness probe (sums of large gradients, norms of small ones)
    still sees one bad element in one parameter's gradient: the step is skipped and no weight moves."""
    from layerwise.train.trainer import SMALL_GRAD
    t = _trainer(overrides_for, "--train.max_steps=6", "--model.width=200")
    params = dict(t.model.named_parameters())
    name = next(n for n, p in params.items() if (p.numel() >= SMALL_GRAD) == (which == "large"))
    calls = {"n": 0}

    def poison(g):
        calls["n"] += 1
        if calls["n"] != 4:
            return g
        g = g.clone()
        g.view(-1)[g.numel() // 3] = bad
        return g
    params[name].register_hook(poison)
    seen = {}
    step = t._optimizer_step

    def record(loss, norm):
        seen[t.step] = _weights(t)
        step(loss, norm)
    t._optimizer_step = record
    summary = t.fit()
    assert summary["skipped_steps"] == 1
    assert t.skipped_steps == 1 and t.overflow_steps == 0
    assert all(math.isfinite(v.abs().sum().item()) for v in _weights(t).values())
    # the poisoned step (0-based 3) moved nothing: the weights before step 4 are those before step 3
    assert all(seen[3][k].equal(seen[4][k]) for k in seen[3])
    assert not all(seen[2][k].equal(seen[3][k]) for k in seen[2])


def test_finiteness_probe_is_finite_exactly_when_every_gradient_is():
    from layerwise.train.trainer import SMALL_GRAD, finiteness_probe
    g = torch.Generator().manual_seed(0)
    shapes = [(SMALL_GRAD + 5,), (300, 200), (7,), (1,), (3, 3)]
    grads = [torch.randn(s, generator=g) for s in shapes]
    assert math.isfinite(finiteness_probe(grads).item())
    assert math.isfinite(finiteness_probe(grads[:1]).item()) and math.isfinite(finiteness_probe(grads[2:]).item())
    for i in range(len(grads)):
        for bad in (float("nan"), float("inf"), -float("inf")):
            poisoned = [x.clone() for x in grads]
            poisoned[i].view(-1)[-1] = bad
            assert not math.isfinite(finiteness_probe(poisoned).item()), (shapes[i], bad)
    mixed = [x.clone() for x in grads]
    mixed[0][0], mixed[0][1] = float("inf"), -float("inf")  # one tensor's sum is NaN: still caught
    assert not math.isfinite(finiteness_probe(mixed).item())


def _overflowing_scaler(monkeypatch, init_scale: float = 2.0**127):
    """fp16's loss scaler on the CPU, starting so high that the scaled gradients overflow fp32:
    the first steps overflow and are skipped while the scale halves, as fp16 on a GPU does."""
    import layerwise.train.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "grad_scaler",
                        lambda device, precision: torch.amp.GradScaler("cpu", init_scale=init_scale))


def _large_gradients(t: Trainer) -> None:
    """Logits x 1000: finite losses, gradients large enough that 2^127 x them overflows."""
    inner = t.forward
    t.forward = lambda x: inner(x) * 1000.0


def test_fp16_overflow_steps_are_counted_and_touch_no_weight_average(overrides_for, monkeypatch):
    _overflowing_scaler(monkeypatch)
    t = _trainer(overrides_for, "--train.max_steps=12", "--train.log_every=1", "--train.ema_decay=0.9",
                 "--train.lookahead_every=1", "--train.lookahead_start=0")
    _large_gradients(t)
    calls = {"lookahead": 0}
    after = t.lookahead.after_step
    t.lookahead.after_step = lambda step: (calls.__setitem__("lookahead", calls["lookahead"] + 1), after(step))
    before = {"w": _weights(t)}
    unchanged = []
    step = t._optimizer_step

    def watched(step_loss, grad_norm):
        w0 = _weights(t)
        step(step_loss, grad_norm)
        unchanged.append(all(w0[k].equal(v) for k, v in _weights(t).items()))
    t._optimizer_step = watched
    summary = t.fit()
    halvings = round(math.log2(2.0**127 / t.scaler.get_scale()))
    assert summary["skipped_steps"] == summary["overflow_steps"] == halvings >= 1
    assert unchanged[:halvings] == [True] * halvings and not any(unchanged[halvings:])
    assert t.ema.updates == 12 - halvings and calls["lookahead"] == 12 - halvings
    train = [r for r in t.log.records if r["kind"] == "train"]
    assert [r["skipped"] for r in train] == [1] * halvings + [0] * (12 - halvings)
    assert all(r["loss"] is None for r in train[:halvings])  # nothing was learned in those steps
    assert all(math.isfinite(r["loss"]) for r in train[halvings:])
    assert before["w"].keys() == _weights(t).keys()


def test_fp16_overflow_counts_survive_resume(overrides_for, monkeypatch, tmp_path):
    _overflowing_scaler(monkeypatch)
    args = ("--train.max_steps=12", "--run.checkpoint_every=1", "--run.keep_checkpoints=20", "--train.ema_decay=0.9")
    full = _trainer(overrides_for, *args)
    _large_gradients(full)
    full.fit()
    run = tmp_path / "cut"
    cut = Trainer(load_config(None, overrides_for(*MLP, *args, f"--run.dir={run}")), show_progress=False)
    _large_gradients(cut)
    cut.fit()
    # keep the checkpoint of step 1 (inside the overflow phase), as if the run had been killed there
    for f in (run / "checkpoints").glob("step_*"):
        if not f.name.startswith("step_00000001"):
            f.unlink()
    (run / "summary.json").unlink()
    resumed = Trainer(load_config(run / "config.yaml"), run, resume=True, show_progress=False)
    assert resumed.step == 1 and resumed.skipped_steps == 1
    _large_gradients(resumed)
    summary = resumed.fit()
    assert summary["skipped_steps"] == full.skipped_steps and summary["overflow_steps"] == full.overflow_steps
    assert resumed.scaler.get_scale() == full.scaler.get_scale()
    wf, wr = _weights(full), _weights(resumed)
    assert all(wf[k].equal(wr[k]) for k in wf)


def test_diverging_run_stops_with_a_clear_error(overrides_for):
    t = _trainer(overrides_for, "--optim.lr=1e12", "--optim.schedule=constant", "--train.max_bad_steps=3",
                 "--train.epochs=2", "--optim.weight_decay=0")
    with pytest.raises(TrainingDiverged, match="3 consecutive steps") as e:
        t.fit()
    assert "optim.lr" in str(e.value) and t.skipped_steps >= 3


def test_bf16_autocast_trains_on_cpu(overrides_for):
    summary = _trainer(overrides_for, "--train.precision=bf16", "--train.epochs=4").fit()
    assert summary["test_accuracy"] >= 0.93 and summary["precision"] == "bf16"


def test_fp16_is_refused_on_cpu(overrides_for):
    with pytest.raises(PrecisionError, match="bf16"):
        _trainer(overrides_for, "--train.precision=fp16", "--train.device=cpu")


def test_ema_weights_are_evaluated_and_saved(overrides_for):
    t = _trainer(overrides_for, "--train.epochs=6", "--train.ema_decay=0.95")
    summary = t.fit()
    raw = _weights(t)
    assert any(not raw[k].equal(t.ema.shadow[k]) for k in raw)  # EMA really differs from raw weights
    again = evaluate_run(t.run_dir)  # loads model.safetensors
    assert again["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-9)
    assert summary["test_accuracy"] >= 0.93


def test_compile_matches_eager(overrides_for):
    pytest.importorskip("torch._inductor")
    eager = _trainer(overrides_for, "--train.max_steps=3", "--train.log_every=1", "--optim.name=adamw",
                     "--optim.lr=1e-3")
    compiled = _trainer(overrides_for, "--train.max_steps=3", "--train.log_every=1", "--optim.name=adamw",
                        "--optim.lr=1e-3", "--train.compile=true")
    eager.fit(), compiled.fit()
    le = [r["loss"] for r in eager.log.records if r["kind"] == "train"]
    lc = [r["loss"] for r in compiled.log.records if r["kind"] == "train"]
    assert lc == pytest.approx(le, rel=1e-4)


def test_label_smoothing_caps_confidence(overrides_for):
    # with smoothing eps the optimal prediction puts 1 - eps + eps/K on the label: no more
    def confidence(*extra: str) -> float:
        t = _trainer(overrides_for, "--train.epochs=15", "--optim.lr=0.01", *extra)
        t.fit()
        t.model.eval()
        with torch.no_grad():
            x = t.train_loader.normalize(t.train_loader.x)
            return torch.softmax(t.model(x), -1).max(-1).values.mean().item()
    sharp, smooth = confidence(), confidence("--train.label_smoothing=0.3")
    assert sharp > 0.97, sharp
    assert smooth < 0.3 * 0.1 + 0.7 + 0.03, smooth  # optimum 0.73


def test_muon_trains_through_the_trainer(overrides_for):
    t = _trainer(overrides_for, "--optim.name=muon", "--optim.lr=0.003", "--train.epochs=4")
    summary = t.fit()
    assert summary["test_accuracy"] >= 0.93, summary
    assert {g["name"] for g in t.optimizer.param_groups} >= {"muon"}


def test_grad_scaling_path_is_exact_for_power_of_two_scales(overrides_for):
    # fp16 needs CUDA, but the loop's GradScaler path (scale, backward, unscale, clip, step,
    # update) is device-independent: with fp32 math a power-of-two scale is exact, so the
    # scaled run must end bit-identical to the plain one. CPU GradScaler exists in torch >= 2.3.
    args = ("--train.epochs=2", "--optim.clip_grad_norm=1.0")
    plain = _trainer(overrides_for, *args)
    scaled = _trainer(overrides_for, *args)
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=10)
    plain.fit(), scaled.fit()
    assert scaled.scaler.get_scale() == 2.0**14  # grew once per 10 good steps: 46 steps -> 4 doublings
    wp, ws = _weights(plain), _weights(scaled)
    assert all(wp[k].equal(ws[k]) for k in wp)


def test_python_api_fit(tmp_path):
    import layerwise
    from layerwise.config import Config
    summary = layerwise.fit(None, "--model.name=mlp", "--train.max_steps=30", run_dir=tmp_path / "a",
                            show_progress=False)
    assert summary["steps"] == 30 and (tmp_path / "a" / "model.safetensors").is_file()
    again = layerwise.fit(Config(), "--model.name=mlp", "--train.max_steps=30", run_dir=tmp_path / "b",
                          show_progress=False)
    assert again["test_loss"] == summary["test_loss"]  # same config and seed, same result


# airbench's training tricks on a small convnet over the digits (8x8 -> 7x7 -> 3x3 -> 1x1)
AIRBENCH = ["--model.name=convnet", "--model.widths=[16,32]", "--optim.name=sgd", "--optim.lr=0.3",
            "--data.batch_size=64", "--data.augment_translate=1", "--data.translate_pad=reflect",
            "--train.lookahead_every=3", "--train.lookahead_start=1", "--train.freeze_stem_after=1",
            "--train.epochs=3", "--train.eval_every=0", "--run.keep_checkpoints=100"]
FLIPS = ["--data.augment_flip=true", "--data.flip_mode=alternate"]  # (mirrored digits hurt accuracy)
# airbench94_muon: Muon on the conv filters at a fixed norm, Nesterov SGD on the rest, linear decay
MUON_SGD = ["--optim.name=muon", "--optim.muon_rest=sgd", "--optim.muon_lr=0.24", "--optim.muon_momentum=0.6",
            "--optim.muon_normalize=true", "--optim.muon_ns_steps=3", "--optim.schedule=linear"]


def test_stem_freezes_after_its_epochs_and_lookahead_ends_at_the_slow_weights(overrides_for):
    t = Trainer(load_config(None, overrides_for(*AIRBENCH)), show_progress=False)
    summary = t.fit()
    spe = t.steps_per_epoch  # 1437 // 64 = 22 full batches plus a short one
    first = torch.load(t.ckpt_dir / f"step_{spe:08d}.pt", weights_only=False)["model"]["stem.bias"]
    assert first.abs().sum() > 0  # the whitening bias (zero at init) trained in epoch 1 ...
    assert t.model.stem.bias.equal(first) and not t.model.stem.bias.requires_grad  # ... and not after
    assert t.lookahead.started
    live = t.model.state_dict()
    assert all(live[k].equal(v) for k, v in t.lookahead.slow.items())  # synced at the end
    assert summary["test_accuracy"] >= 0.9  # 0.93 here


def test_muon_on_conv_filters_with_sgd_for_the_rest(overrides_for):
    t = Trainer(load_config(None, overrides_for(*AIRBENCH, *MUON_SGD)), show_progress=False)
    summary = t.fit()
    assert [g["name"] for g in t.optimizer.param_groups] == ["muon", "sgd_decay", "sgd_no_decay"]
    convs = [p for p in t.model.parameters() if p.ndim == 4 and p.requires_grad]
    assert {id(p) for p in t.optimizer.param_groups[0]["params"]} == {id(p) for p in convs}
    for p in convs:  # rescaled to sqrt(rows) before every step; the last step moves it by < 0.1%
        assert abs(p.norm().item() / p.size(0) ** 0.5 - 1) < 1e-3, p.norm()
    assert summary["test_accuracy"] >= 0.93  # 0.947 here; SGD + lookahead: 0.93


@pytest.mark.parametrize("optim", [[], MUON_SGD], ids=["sgd", "muon-sgd"])
def test_resume_with_lookahead_alternate_flips_and_frozen_stem_is_exact(overrides_for, tmp_path, optim):
    from safetensors.torch import load_file

    from layerwise.train.trainer import resume

    cfg = load_config(None, overrides_for(*AIRBENCH, *FLIPS, *optim, "--run.checkpoint_every=10"))
    full = Trainer(cfg, tmp_path / "full", show_progress=False)
    full.fit()
    part = tmp_path / "part"  # the same run stopped at step 30: inside epoch 2, stem frozen, lookahead on
    part.mkdir()
    for f in ("config.yaml", "env.json", "metrics.jsonl"):
        (part / f).write_bytes((full.run_dir / f).read_bytes())
    (part / "checkpoints").mkdir()
    for step in (10, 20, 30):
        for suffix in (".pt", ".json"):
            name = f"step_{step:08d}{suffix}"
            (part / "checkpoints" / name).write_bytes((full.ckpt_dir / name).read_bytes())
    resume(part, show_progress=False)
    a, b = load_file(str(full.run_dir / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_freeze_stem_needs_a_model_with_a_stem(overrides_for):
    from layerwise.config import ConfigError

    with pytest.raises(ConfigError, match="has none"):
        _trainer(overrides_for, "--train.freeze_stem_after=1")


def test_low_res_epochs_train_on_crops_then_full_images(overrides_for):
    def run(*extra: str) -> tuple[Trainer, dict, list]:  # convnet 16/32 on digits, 3 epochs
        t = Trainer(load_config(None, overrides_for("--model.name=convnet", "--model.widths=[16,32]",
                                                    "--optim.name=sgd", "--optim.lr=0.3", "--data.batch_size=64",
                                                    "--train.epochs=3", "--train.eval_every=0", *extra)),
                    show_progress=False)
        sizes = []
        t.model.register_forward_pre_hook(lambda m, a: sizes.append(tuple(a[0].shape[-2:])) if m.training else None)
        return t, t.fit(), sizes

    t, summary, sizes = run("--data.low_res_size=6", "--data.low_res_epochs=1")
    spe = t.steps_per_epoch
    assert sizes == [(6, 6)] * spe + [(8, 8)] * (2 * spe)  # 8x8 digits: 6x6 crops in epoch 1 only
    # evaluated on whole 8x8 images after one epoch of 6x6 crops: 0.85 (0.98 without the crops;
    # a 6x6 crop of a digit loses a quarter of each side, a 24x24 crop of CIFAR far less)
    assert summary["test_accuracy"] >= 0.8


def test_low_res_larger_than_the_images_is_refused(overrides_for):
    from layerwise.config import ConfigError

    cfg = load_config(None, overrides_for("--model.name=convnet", "--model.widths=[16,32]",
                                          "--data.low_res_size=9", "--data.low_res_epochs=1"))
    with pytest.raises(ConfigError, match=r"low_res_size=9 crops images to 9x9; dataset 'digits' has inputs "
                                          r"of shape \(1, 8, 8\)"):
        Trainer(cfg, show_progress=False)
