"""benchmarks/gpu.py and its helpers on the CPU: the peak table, time to target, the energy meter
without a GPU, the airbench94_muon baseline's whitening and crops, and the GPT part end to end at
tiny size (--smoke --only gpt). The GPU figures themselves come from the benchmark run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import _airbench
import gpu
from _energy import EnergyMeter, EnergyWindow


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                        ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                        ("Tesla T4", None)])
def test_peak_table_by_device_name(name, peak):
    assert gpu.peak_tflops(name) == peak


def test_time_to_target_needs_the_mean_accuracy():
    runs = [{"accuracy": 0.945, "train_seconds": 3.0}, {"accuracy": 0.937, "train_seconds": 5.0}]
    s = gpu.summarize_runs(runs, 0.94)
    assert s["accuracy"]["mean"] == pytest.approx(0.941)
    assert s["time_to_target_seconds"] == pytest.approx(4.0)
    assert s["runs_reaching_target"] == 1
    assert gpu.summarize_runs(runs, 0.95)["time_to_target_seconds"] is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the meter where there is no GPU")
def test_energy_meter_without_gpu_reads_none():
    meter = EnergyMeter(0)
    assert not meter.available and meter.read() is None and meter.reason
    with EnergyWindow(meter) as w:
        pass
    assert w.joules is None


def test_baseline_whitening_makes_patch_moment_identity():
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.5, 0.2], [0.0, 1.0, 0.7], [0.0, 0.0, 0.3]])
    x = torch.einsum("dc,nchw->ndhw", mix, torch.randn(64, 3, 16, 16, generator=g))  # correlated channels
    net = _airbench.AirbenchNet(_airbench.Hyper(widths=(8, 8, 8)), torch.float32)
    net.reset()
    net.init_whiten(x, eps=0.0)
    w = net.whiten.weight.detach().reshape(24, 12).double()
    patches = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    moment = patches.T @ patches / len(patches)
    white = w[:12] @ moment @ w[:12].T
    assert torch.allclose(white, torch.eye(12, dtype=torch.float64), atol=1e-3)
    assert torch.equal(w[12:], -w[:12])  # the negated copies


def test_baseline_translate_is_a_crop_within_the_shift():
    g = torch.Generator().manual_seed(0)
    padded = torch.randn(40, 3, 12, 12, generator=g)
    torch.manual_seed(0)
    out = _airbench._translate(padded, 8, 2)
    for i in range(len(out)):
        crops = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert sum(torch.equal(out[i], c) for c in crops) >= 1


def test_baseline_epoch_sees_every_image_once():
    hp = _airbench.Hyper(batch_size=10)
    x = torch.randint(0, 256, (35, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(35)
    batches = _airbench.TrainBatches(x, y, hp, torch.float32)
    seen = torch.cat([yb for _, yb in batches])
    assert len(batches) == 3 and len(seen) == 30 and len(set(seen.tolist())) == 30  # last 5 dropped


def test_smoke_gpt_part_writes_json(tmp_path, monkeypatch):
    from layerwise.data import datasets

    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setitem(datasets._REGISTRY, "random-tokens", None)  # the part registers it; undone after
    threads = torch.get_num_threads()
    try:
        assert gpu.main(["--smoke", "--only", "gpt"]) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.loads((tmp_path / "gpu_bench.json").read_text())
    g = res["parts"]["gpt"]
    assert "error" not in g
    d, L, T, V = 64, 2, 64, 512  # the smoke shape: 6 N + 12 L T d with N = 12 d^2 per block + the tied head
    assert g["flops_per_token"] == 6 * (L * 12 * d * d + V * d) + 12 * L * T * d
    for side in ("layerwise", "plain"):
        assert g[side]["tokens_per_second"] > 0 and g[side]["timed_steps"] == 4
    assert 0 < g["ratio_layerwise_over_plain_tokens_per_second"] < 10


def test_stats_sync_check_says_when_it_has_no_gpu(capsys, monkeypatch):
    """benchmarks/stats_sync_gpu.py (issue 14's check that the classification step's sums do not
    sync on CUDA) runs in gpu_check.sh; without CUDA it says so and passes."""
    import stats_sync_gpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["stats_sync_gpu.py"])
    assert stats_sync_gpu.main() == 0
    assert json.loads(capsys.readouterr().out) == {"check": "stats_sync_gpu", "skipped": "no CUDA device"}
