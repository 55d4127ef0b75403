"""The figure of README's "Per-step cost on a GPU" section, from the recorded H200 runs of
benchmarks/gpu.py (main before the sync-free step, the branch after; one machine, one session).

    python benchmarks/plot_sync_free.py   # writes benchmarks/sync_free/h200_before_after.png
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def main() -> None:
    before = json.loads((RESULTS / "gpu_bench_h200_nosync_before_2026-11-30.json").read_text())["parts"]
    after = json.loads((RESULTS / "gpu_bench_h200_nosync_after_2026-11-30.json").read_text())["parts"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    o = after["overhead"]
    names = ["plain loop", "plain +\nhost sync", "Trainer\nbefore", "Trainer\nafter"]
    ms = [o["plain"]["ms_per_step"], o["plain_host_sync"]["ms_per_step"],
          before["overhead"]["layerwise"]["ms_per_step"], o["layerwise"]["ms_per_step"]]
    a.bar(names, ms, color=["0.6", "0.8", "tab:red", "tab:green"])
    for i, v in enumerate(ms):
        a.text(i, v, f"{v:.2f}", ha="center", va="bottom")
    a.set_ylabel("ms per step (median of 5 epochs)")
    a.set_title("convnet (cifar10-gpu recipe), batch 2000, bf16, eager")
    g0, g1 = before["gpt"], after["gpt"]
    names = ["plain loop", "Trainer\nbefore", "Trainer\nafter"]
    tps = [g1["plain"]["tokens_per_second"] / 1e3, g0["layerwise"]["tokens_per_second"] / 1e3,
           g1["layerwise"]["tokens_per_second"] / 1e3]
    mem = [g1["plain"]["peak_memory_gb"], g0["layerwise"]["peak_memory_gb"], g1["layerwise"]["peak_memory_gb"]]
    b.bar(names, tps, color=["0.6", "tab:red", "tab:green"])
    for i, (v, m) in enumerate(zip(tps, mem)):
        b.text(i, v, f"{v:.0f}k\n{m:.1f} GB peak", ha="center", va="bottom")
    b.set_ylabel("tokens per second (thousands)")
    b.set_ylim(0, max(tps) * 1.25)
    b.set_title("GPT-124M, batch 32 x 1024, bf16, torch.compile")
    fig.suptitle("Trainer vs plain loop on an NVIDIA H200 (torch 2.11.0+cu130), before and after the sync-free step")
    fig.tight_layout()
    out = REPO / "benchmarks" / "sync_free" / "h200_before_after.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
