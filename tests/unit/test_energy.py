"""Energy metering (layerwise.insight.energy): RAPL on a fake powercap tree (package zones only,
wrap-around), NVML through a fake pynvml, the CPU-time estimate and its label, and the energy of a
tiny real run in summary.json and metrics.jsonl, carried across a resume."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch

from layerwise.config import ConfigError, load_config, with_defaults
from layerwise.insight import energy as E

MAX_UJ = 262_143_328_850  # a real package's max_energy_range_uj


def _zone(root: Path, name: str, label: str, uj: int, max_uj: int = MAX_UJ) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


@pytest.fixture
def powercap(tmp_path, monkeypatch) -> Path:
    """Two packages, package 0's core and dram sub-zones, a psys zone and the mmio twin of package 0,
    laid out as /sys/class/powercap shows them (every zone at the top level)."""
    root = tmp_path / "powercap"
    _zone(root, "intel-rapl:0", "package-0", 1_000_000)
    _zone(root, "intel-rapl:0:0", "core", 500_000)
    _zone(root, "intel-rapl:0:1", "dram", 200_000)
    _zone(root, "intel-rapl:1", "package-1", MAX_UJ - 1_000_000)
    _zone(root, "intel-rapl:2", "psys", 9_000_000)
    _zone(root, "intel-rapl-mmio:0", "package-0", 1_000_000)
    monkeypatch.setattr(E, "POWERCAP", str(root))
    return root


def _set(root: Path, zone: str, uj: int) -> None:
    (root / zone / "energy_uj").write_text(f"{uj}\n")


def test_rapl_sums_package_zones_only_and_counts_a_wrap(powercap):
    rapl = E.RaplSource()
    assert [f.parent.name for f, _ in rapl.zones] == ["intel-rapl:0", "intel-rapl:1"]
    assert rapl.detail == "2 packages"
    _set(powercap, "intel-rapl:0", 4_000_000)  # +3 J
    _set(powercap, "intel-rapl:0:0", 2_000_000)  # a sub-zone: already inside package 0's figure
    _set(powercap, "intel-rapl:2", 90_000_000)  # psys: the platform, packages included
    _set(powercap, "intel-rapl:1", 500_000)  # wrapped: 1 J to the top, then 0.5 J
    assert rapl.read() == pytest.approx(3.0 + 1.0 + 0.5, abs=1e-9)
    _set(powercap, "intel-rapl:0", 6_000_000)  # +2 J
    assert rapl.read() == pytest.approx(6.5, abs=1e-9)  # cumulative since construction
    assert rapl.read() == pytest.approx(6.5, abs=1e-9)  # an unchanged counter adds nothing


def test_amd_rapl_naming(tmp_path, monkeypatch):
    _zone(tmp_path, "amd-rapl:0", "package-0", 10)
    _set(tmp_path, "amd-rapl:0", 2_500_010)
    monkeypatch.setattr(E, "POWERCAP", str(tmp_path))
    rapl = E.RaplSource()
    _set(tmp_path, "amd-rapl:0", 5_000_010)
    assert rapl.read() == pytest.approx(2.5)


def test_meter_uses_rapl_on_local_rank0_only(powercap):
    m = E.EnergyMeter.for_device("cpu").start()
    assert (m.method, m.measured) == ("rapl", True)
    _set(powercap, "intel-rapl:0", 8_000_000)
    assert m.read() == {"cpu": pytest.approx(7.0)}
    # another rank of the same node: the sockets are rank 0's to count, or they would count twice
    other = E.EnergyMeter.for_device("cpu", local_rank=1).start()
    assert other.sources == [] and other.total() == 0.0


def test_no_rapl_is_an_estimate_labelled_estimated(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "POWERCAP", str(tmp_path / "absent"))
    clock = iter([100.0, 100.0, 104.0, 110.0])
    monkeypatch.setattr(E, "cpu_seconds", lambda: next(clock))
    m = E.EnergyMeter.for_device("cpu", cpu_watts_per_core=12.5).start()
    assert (m.method, m.measured) == ("estimated", False)
    assert "RAPL" in m.reasons[0]
    assert m.read() == {"cpu": pytest.approx(4 * 12.5)}
    assert m.total() == pytest.approx(10 * 12.5)
    assert m.describe() == "cpu: estimated (CPU time x 12.5 W per core)"


def test_unreadable_rapl_falls_back_to_the_estimate(powercap, monkeypatch):
    def denied(_f):
        raise PermissionError("Permission denied: energy_uj")  # root-only since CVE-2020-8694

    monkeypatch.setattr(E.RaplSource, "_raw", staticmethod(denied))
    m = E.EnergyMeter.for_device("cpu")
    assert m.method == "estimated" and "Permission denied" in m.reasons[0]


def _fake_pynvml(counters_mj: dict[int, int], broken: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    mod.nvmlInit = lambda: None

    def by_bus(_bus):
        raise RuntimeError("NVML_ERROR_NOT_FOUND")

    def energy(handle):
        if broken:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")  # a GPU older than Volta
        return counters_mj[handle]

    mod.nvmlDeviceGetHandleByPciBusId = by_bus
    mod.nvmlDeviceGetHandleByIndex = lambda i: i
    mod.nvmlDeviceGetTotalEnergyConsumption = energy
    return mod


def test_nvml_reads_this_process_device_in_joules(powercap, monkeypatch):
    counters = {2: 5_000_000, 5: 1_000_000}  # mJ since the driver loaded, per NVML index
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(counters))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")  # cuda:1 is NVML's device 5
    m = E.EnergyMeter.for_device(torch.device("cuda", 1)).start()
    assert (m.method, m.measured) == ("nvml+rapl", True)
    assert m.describe() == "gpu: nvml (cuda:1); cpu: rapl (2 packages)"
    counters[5] += 2_500  # 2.5 J on our GPU
    counters[2] += 99_000  # another process's GPU
    _set(powercap, "intel-rapl:1", MAX_UJ - 500_000)  # +0.5 J
    assert m.read() == {"gpu": pytest.approx(2.5), "cpu": pytest.approx(0.5)}


def test_nvml_unreadable_gpu_is_estimated(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "POWERCAP", str(tmp_path / "absent"))
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml({0: 0}, broken=True))
    m = E.EnergyMeter.for_device(torch.device("cuda", 0), gpu_watts=200.0)
    assert m.method == "estimated" and not m.measured
    assert m.describe().startswith("gpu: estimated (wall time x 200 W)")
    assert "NOT_SUPPORTED" in m.reasons[1]


class _Fake:
    """A source that adds what the test says."""
    name, method, detail = "cpu", "rapl", "fake"

    def __init__(self):
        self.j = 0.0

    def read(self) -> float:
        return self.j


def test_phases_split_training_and_evaluation_and_carry_a_checkpoint():
    cfg = load_config(None, ["--run.grid_gco2_per_kwh=400"]).run
    te = E.TrainingEnergy(cfg, "cpu")
    src = _Fake()
    te.meter = E.EnergyMeter([src])
    te.load_state_dict({"train": 1000.0, "eval": 10.0})  # an earlier session's joules
    te.start()
    src.j += 30.0  # training
    with te.phase("eval"):
        src.j += 5.0
        with te.phase("eval"):  # nested: counted once
            src.j += 1.0
    src.j += 4.0
    assert te.log_fields() == {"energy_train_j": 1034.0, "energy_eval_j": 16.0}
    assert te.state_dict() == {"train": 1034.0, "eval": 16.0, "unmetered_examples": 0}
    s = te.summary_fields(examples_seen=517)
    assert s["energy_method"] == "rapl" and s["energy_per_example_j"] == pytest.approx(2.0)
    assert s["energy_train_kwh"] == pytest.approx(1034 / 3.6e6)
    assert s["energy_train_gco2"] == pytest.approx(1034 / 3.6e6 * 400)
    assert s["energy_eval_gco2"] == pytest.approx(16 / 3.6e6 * 400)


def test_config_keys_validate_and_fill_old_checkpoints():
    with pytest.raises(ConfigError, match="run.cpu_watts_per_core"):
        load_config(None, ["--run.cpu_watts_per_core=-1"])
    run = load_config(None).run  # the documented defaults are the module's
    assert (run.energy, run.cpu_watts_per_core, run.gpu_watts, run.grid_gco2_per_kwh) == (
        True, E.DEFAULT_CPU_WATTS_PER_CORE, E.DEFAULT_GPU_WATTS, E.DEFAULT_GRID_GCO2_PER_KWH)
    old = load_config(None).to_dict()
    for k in ("energy", "cpu_watts_per_core", "gpu_watts", "grid_gco2_per_kwh"):
        del old["run"][k]
    assert with_defaults(old)["run"]["grid_gco2_per_kwh"] == 480.0


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_reports_its_energy_and_a_resumed_run_adds_to_it(tmp_path, monkeypatch):
    from layerwise.train.trainer import fit, resume

    monkeypatch.setattr(E, "POWERCAP", str(tmp_path / "absent"))  # the estimate, on any machine
    run_dir = tmp_path / "run"
    cfg = load_config(None, ["--model.name=mlp", "--train.max_steps=10", "--run.checkpoint_every=5",
                             "--train.log_every=2", "--train.eval_every_steps=4", "--optim.schedule=constant",
                             "--run.plots=false", "--run.tensorboard=false", "--data.batch_size=32"])
    s = fit(cfg, run_dir, show_progress=False)
    assert s == json.loads((run_dir / "summary.json").read_text())
    assert s["energy_method"] == "estimated" and s["energy_sources"].startswith("cpu: estimated")
    assert s["energy_train_j"] > 0 and s["energy_eval_j"] > 0
    # the three figures agree to the digit, however few joules a ten-step run spends
    assert s["energy_train_kwh"] == pytest.approx(s["energy_train_j"] / 3.6e6, rel=1e-12)
    assert s["energy_eval_kwh"] == pytest.approx(s["energy_eval_j"] / 3.6e6, rel=1e-12)
    assert s["energy_train_gco2"] == pytest.approx(s["energy_train_kwh"] * 480)
    assert s["energy_per_example_j"] == pytest.approx(s["energy_train_j"] / (10 * 32), rel=1e-5)
    lines = _lines(run_dir)
    train = [r["energy_train_j"] for r in lines if r["kind"] == "train"]
    evals = [r["energy_eval_j"] for r in lines if r["kind"] == "test"]
    assert len(train) == 5 and train == sorted(train) and train[-1] <= s["energy_train_j"]
    assert len(evals) == 3 and evals == sorted(evals) and evals[0] > 0 and evals[-1] == s["energy_eval_j"]

    # the run stopped after its step-5 checkpoint: a resumed run adds its own joules to the saved ones
    saved = torch.load(run_dir / "checkpoints" / "step_00000005.pt", weights_only=False)["energy"]
    assert 0 < saved["train"] < s["energy_train_j"] and 0 < saved["eval"] < s["energy_eval_j"]
    (run_dir / "summary.json").unlink()
    (run_dir / "model.safetensors").unlink()
    seconds = {"t": 50.0}  # a CPU clock that moves only while the model is evaluated: 2 s per evaluation
    monkeypatch.setattr(E, "cpu_seconds", lambda: seconds["t"])
    from layerwise.train import trainer
    real_evaluate = trainer.evaluate_loader

    def evaluate_loader(*a, **k):
        seconds["t"] += 2.0
        return real_evaluate(*a, **k)

    monkeypatch.setattr(trainer, "evaluate_loader", evaluate_loader)
    r = resume(run_dir, show_progress=False)
    evaluations = 2  # at step 8 and the final one
    assert r["energy_train_j"] == pytest.approx(saved["train"], abs=1e-3)
    assert r["energy_eval_j"] == pytest.approx(saved["eval"] + evaluations * 2.0 * 7.5, abs=1e-3)
    assert r["examples_seen"] == 10 * 32
    # energy_train_j is rounded to the millijoule, energy_per_example_j computed before rounding
    assert r["energy_per_example_j"] == pytest.approx(r["energy_train_j"] / 320, rel=1e-3, abs=0.0005 / 320)
    assert math.isclose(_lines(run_dir)[-1]["energy_eval_j"], r["energy_eval_j"], abs_tol=1e-3)



class _TwoRanks:
    """A Parallel stand-in: this rank and one more whose joules are ``other``; guard sums them."""
    enabled, world_size, device, local_rank = True, 2, torch.device("cpu"), 0

    def __init__(self, rank: int, other: list[float]):
        self.is_rank0, self.other, self.calls = rank == 0, other, 0

    def guard(self, fn, t):
        assert fn.__name__ == "all_reduce"
        self.calls += 1
        t += torch.tensor(self.other, dtype=t.dtype)


def test_ranks_are_summed_once_per_report_and_a_checkpoint_is_carried_by_rank0():
    cfg = load_config(None).run
    par = _TwoRanks(rank=1, other=[100.0, 7.0])  # rank 0 spent 100 J training, 7 J evaluating
    te = E.TrainingEnergy(cfg, "cpu", par)
    src = _Fake()
    te.meter = E.EnergyMeter([src])
    te.load_state_dict({"train": 1e6, "eval": 1e6})  # rank 0's to carry: this rank ignores it
    te.start()
    src.j += 20.0
    with te.phase("eval"):
        src.j += 3.0
    assert te.log_fields() == {"energy_train_j": 120.0, "energy_eval_j": 10.0} and par.calls == 1
    assert te.summary_fields(examples_seen=60)["energy_per_example_j"] == pytest.approx(2.0) and par.calls == 2


def test_an_rl_run_reports_energy_and_carries_it_across_resume(tmp_path, monkeypatch):
    pytest.importorskip("gymnasium")
    import layerwise.rl.trainer as rl
    from layerwise.rl.config import RLConfig

    monkeypatch.setattr(E, "POWERCAP", str(tmp_path / "absent"))
    run_dir = tmp_path / "rl"
    cfg = load_config(None, ["--ppo.total_steps=1024", "--run.checkpoint_every=1", "--run.plots=false",
                             "--run.tensorboard=false", "--eval.episodes=2", "--eval.random_baseline=false"],
                      cls=RLConfig)
    s = rl.train_rl(cfg, run_dir, show_progress=False)
    assert s["energy_method"] == "estimated" and s["energy_train_j"] > 0 and s["energy_eval_j"] > 0
    assert s["energy_per_example_j"] == pytest.approx(s["energy_train_j"] / 1024, rel=1e-3)  # per env step
    saved = torch.load(run_dir / "checkpoints" / "step_00000001.pt", weights_only=False)["energy"]
    assert 0 < saved["train"] < s["energy_train_j"] and saved["eval"] == 0

    (run_dir / "summary.json").unlink()
    seconds = {"t": 7.0}  # still while training; 1 s per evaluation
    monkeypatch.setattr(E, "cpu_seconds", lambda: seconds["t"])
    real = rl.evaluate_policy

    def evaluate_policy(*a, **k):
        seconds["t"] += 1.0
        return real(*a, **k)

    monkeypatch.setattr(rl, "evaluate_policy", evaluate_policy)
    r = rl.resume_rl(run_dir, show_progress=False)
    assert r["energy_train_j"] == pytest.approx(saved["train"], abs=1e-3)
    assert r["energy_eval_j"] == pytest.approx(7.5, abs=1e-3)


def test_metered_block_and_energy_off(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "POWERCAP", str(tmp_path / "absent"))
    clock = iter([10.0, 10.0, 13.0])  # construction, start, the end of the block
    monkeypatch.setattr(E, "cpu_seconds", lambda: next(clock))
    with E.metered("cpu", load_config(None, ["--run.grid_gco2_per_kwh=100"]).run) as e:
        assert e == {}  # filled when the block ends
    assert e == {"energy_j": 22.5, "energy_kwh": pytest.approx(22.5 / 3.6e6),
                 "energy_gco2": pytest.approx(22.5 / 3.6e6 * 100), "energy_method": "estimated"}
    off = load_config(None, ["--run.energy=false"]).run
    with E.metered("cpu", off) as e:
        pass
    te = E.TrainingEnergy(off, "cpu")
    te.start()
    with te.phase("eval"):
        pass
    assert e == {} and te.meter is None and te.log_fields() == {} and te.summary_fields(10) == {}


def test_a_checkpoint_without_joules_leaves_its_examples_unmetered_and_says_so():
    """A checkpoint from before metering (or run.energy=false) has no joules: the summary must not
    pass the resumed session's joules off as the whole run's, nor divide them by every example."""
    cfg = load_config(None).run
    te = E.TrainingEnergy(cfg, "cpu")
    src = _Fake()
    te.meter = E.EnergyMeter([src])
    te.load_state_dict(None, examples_seen=300)  # an old checkpoint: 300 examples of unknown joules
    te.start()
    src.j += 50.0
    s = te.summary_fields(examples_seen=500)
    assert s["energy_train_j"] == 50.0 and s["energy_per_example_j"] == pytest.approx(50.0 / 200)
    assert s["energy_unmetered_examples"] == 300 and "first 300 training examples" in s["energy_note"]
    saved = te.state_dict()
    assert saved == {"train": 50.0, "eval": 0.0, "unmetered_examples": 300}
    again = E.TrainingEnergy(cfg, "cpu")  # resumed once more: still known to be partial
    again.meter = E.EnergyMeter([_Fake()])
    again.load_state_dict(saved, examples_seen=500)
    again.start()
    s = again.summary_fields(examples_seen=600)
    assert s["energy_train_j"] == 50.0 and s["energy_per_example_j"] == pytest.approx(50.0 / 300)
    assert s["energy_unmetered_examples"] == 300
    # metering off: the checkpoint holds no joules (not zero joules), so a metered resume knows
    off = E.TrainingEnergy(load_config(None, ["--run.energy=false"]).run, "cpu")
    assert off.state_dict() is None and off.summary_fields(10) == {}
    full = E.TrainingEnergy(cfg, "cpu")
    full.meter = E.EnergyMeter([_Fake()])
    full.load_state_dict({"train": 10.0, "eval": 1.0}, examples_seen=100)  # a metered checkpoint
    full.start()
    s = full.summary_fields(examples_seen=100)
    assert "energy_note" not in s and s["energy_per_example_j"] == pytest.approx(0.1)


def test_resuming_a_checkpoint_saved_without_energy_reports_the_part_it_metered(tmp_path, monkeypatch):
    from layerwise.train import checkpoint as ckpt
    from layerwise.train.trainer import fit, resume

    monkeypatch.setattr(E, "POWERCAP", str(tmp_path / "absent"))
    run_dir = tmp_path / "run"
    cfg = load_config(None, ["--model.name=mlp", "--train.max_steps=4", "--run.checkpoint_every=2",
                             "--train.eval_every_steps=0", "--train.eval_every=0", "--optim.schedule=constant",
                             "--run.plots=false", "--run.tensorboard=false", "--data.batch_size=32"])
    fit(cfg, run_dir, show_progress=False)
    path = run_dir / "checkpoints" / "step_00000002.pt"
    state = torch.load(path, weights_only=False)
    del state["energy"]  # as layerwise wrote it before energy metering
    for p in (path, path.with_suffix(".json"), run_dir / "summary.json", run_dir / "model.safetensors"):
        p.unlink()
    ckpt.save_checkpoint(run_dir / "checkpoints", 2, state, keep=5)
    r = resume(run_dir, show_progress=False)
    assert r["examples_seen"] == 4 * 32 and r["energy_unmetered_examples"] == 2 * 32
    # energy_train_j is rounded to the mJ: the per-example figure is within 0.5 mJ / 64 of it
    assert r["energy_per_example_j"] == pytest.approx(r["energy_train_j"] / (2 * 32), abs=5e-4 / 64)
    assert "first 64 training examples" in r["energy_note"]



def test_eval_takes_the_energy_keys_of_the_machine_it_runs_on(tmp_path, monkeypatch):
    from layerwise.config import ConfigError
    from layerwise.train.inference import evaluate_run
    from layerwise.train.trainer import fit

    monkeypatch.setattr(E, "POWERCAP", str(tmp_path / "absent"))
    run_dir = tmp_path / "run"
    fit(load_config(None, ["--model.name=mlp", "--train.max_steps=2", "--run.plots=false", "--run.tensorboard=false",
                           "--train.eval_every=0"]), run_dir, show_progress=False)
    r = evaluate_run(run_dir, overrides=["--run.grid_gco2_per_kwh=100", "--run.cpu_watts_per_core=2"])
    assert r["energy_j"] > 0 and r["energy_gco2"] == pytest.approx(r["energy_kwh"] * 100)
    assert "energy_j" not in evaluate_run(run_dir, overrides=["--run.energy=false"])
    with pytest.raises(ConfigError, match=r"--run.grid_gco2_per_kwh; got --run.plots=false"):
        evaluate_run(run_dir, overrides=["--run.plots=false"])
    with pytest.raises(ConfigError, match="must be >= 0"):
        evaluate_run(run_dir, overrides=["--run.gpu_watts=-1"])


@pytest.mark.parametrize("override, message", [
    ("--run.cpu_watts_per_core=1e308", "more than any CPU core draws"),  # made the joules infinite
    ("--run.gpu_watts=20000", "more than any GPU board draws"),
    ("--run.grid_gco2_per_kwh=480000", "is it in g per MWh"),  # 480 g/kWh typed in g/MWh
])
def test_implausible_energy_keys_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
    assert load_config(None, ["--run.cpu_watts_per_core=1000", "--run.gpu_watts=10000",
                              "--run.grid_gco2_per_kwh=2000"]).run.gpu_watts == 10000


def test_cross_validation_sums_the_folds_energy():
    from layerwise.train.crossval import summarize_folds

    folds = [{"headline": "test_accuracy", "test_accuracy": a, "train_seconds": 1.0, "energy_method": "estimated",
              **E.carbon_fields("energy_train", j, 480.0), **E.carbon_fields("energy_eval", j / 10, 480.0)}
             for a, j in ((0.9, 36.0), (0.8, 72.0))]
    out = summarize_folds(folds)
    assert out["energy_train_total_j"] == 108.0 and out["energy_eval_total_j"] == pytest.approx(10.8)
    assert out["energy_train_total_kwh"] == pytest.approx(108 / 3.6e6)
    assert out["energy_train_total_gco2"] == pytest.approx(108 / 3.6e6 * 480)
    assert out["energy_method"] == "estimated" and "energy_note" not in out
    for f in folds:  # as fit writes them: one grid, so the totals are those of the summed joules
        f["grid_gco2_per_kwh"] = 480.0
    out = summarize_folds(folds)
    assert out["energy_train_total_j"] == 108.0 and out["energy_train_total_kwh"] == 108.0 / 3.6e6
    folds[1] |= E.carbon_fields("energy_train", 72.0, 100.0) | {"grid_gco2_per_kwh": 100.0}  # another grid
    assert summarize_folds(folds)["energy_train_total_gco2"] == pytest.approx((36 * 480 + 72 * 100) / 3.6e6)
    folds[1]["energy_unmetered_examples"] = 64
    assert summarize_folds(folds)["energy_note"].startswith("fold 1 metered only part")
    del folds[0]["energy_train_j"]  # a fold trained with run.energy=false: no total to give
    assert not any(k.startswith("energy") for k in summarize_folds(folds))



def test_small_and_large_energies_keep_six_significant_figures_and_agree_across_units():
    # a 0.155443 J run once printed 0.155 J beside 4.3178e-08 kWh (computed from the unrounded
    # joules): the fields disagreed in the third figure; a gigajoule run kept noise decimals
    small = E.carbon_fields("e", 0.15544289123, 480.0)
    assert small["e_j"] == 0.155443 and small["e_kwh"] == 0.155443 / 3.6e6
    assert small["e_gco2"] == pytest.approx(0.155443 / 3.6e6 * 480.0, rel=1e-15)
    assert E.carbon_fields("e", 3.2e-4, 480.0)["e_j"] == 3.2e-4  # millijoules are not rounded away
    assert E.carbon_fields("e", 1234567890.123, 480.0)["e_j"] == 1234570000.0
    assert E.significant(0.0) == 0.0
