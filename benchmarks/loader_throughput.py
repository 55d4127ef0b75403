"""On-device batched loading + augmentation vs the usual torch DataLoader pipeline.

Both produce one epoch of normalized, randomly translated (+-2 px) MNIST-shaped batches of 128:
  baseline: DataLoader(TensorDataset) with a per-example transform (pad + random crop), the
            pattern most Lightning/Keras-style scripts use for in-memory data (num_workers=0)
  layerwise: BatchLoader, which indexes the on-device tensor and augments the whole batch at once
Prints examples/s for each and the ratio, with hardware and versions.

    python benchmarks/loader_throughput.py [--device cpu|cuda] [--n 60000]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from layerwise.data import BatchLoader, BatchTransform, DatasetInfo


class PerExample(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, shift: int):
        self.x, self.y, self.s = x, y, shift

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        img = (self.x[i].float() / 255 - 0.1307) / 0.3081  # (1, 28, 28)
        s = self.s
        p = F.pad(img, (s, s, s, s))
        dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
        return p[:, dy:dy + 28, dx:dx + 28], self.y[i]


def epoch_rate(batches, n: int, device: torch.device) -> float:
    start = time.perf_counter()
    for x, y in batches:
        x = x.to(device, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    dev = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (a.n, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (a.n,), generator=g)
    info = DatasetInfo("mnist-shaped", (1, 28, 28), 10, [str(i) for i in range(10)], 255.0, [0.1307], [0.3081])

    base = DataLoader(PerExample(x, y, 2), batch_size=128, shuffle=True, num_workers=0)
    ours = BatchLoader(x.to(dev), y.to(dev), 128, BatchTransform(info, dev, translate=2), shuffle=True,
                       augment=True)
    r_base = max(epoch_rate(base, a.n, dev) for _ in range(a.repeats))
    r_ours = max(epoch_rate(ours, a.n, dev) for _ in range(a.repeats))
    print(f"hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"baseline DataLoader + per-example transform: {r_base:12,.0f} examples/s")
    print(f"layerwise BatchLoader, batched on device:    {r_ours:12,.0f} examples/s")
    print(f"ratio (layerwise / baseline): {r_ours / r_base:.1f}x")


if __name__ == "__main__":
    main()
