"""Seconds per 1024 CIFAR-sized images of one convnet-half training step on this CPU, for the
choices recipes/cifar10-cpu.yaml makes, each against its baseline in the same run.

    python benchmarks/cifar_cpu_step.py [--reps 3]

Every variant runs in a fresh process (the allocator setting cannot be undone in one), on random
data with the recipe's model (fp32, channels_last, Nesterov SGD); the best of --reps timings of
8 steps is reported, after 2 warm-up steps. Results go to stdout as a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

VARIANTS = {  # name: (micro-batch, stem bias frozen, crop side, keep_freed_memory)
    "batch 1024": (1024, False, 32, False),
    "micro 256": (256, False, 32, False),
    "micro 256 + allocator": (256, False, 32, True),
    "micro 256 + allocator + stem frozen": (256, True, 32, True),
    "micro 256 + allocator + stem frozen, 24x24 crops": (256, True, 24, True),
}

CHILD = """
import json, sys, time, torch, torch.nn.functional as F
micro, frozen, side, keep, reps = json.loads(sys.argv[1])
if keep:
    from layerwise.train.cpu import keep_freed_memory
    keep_freed_memory()
from layerwise.models.convnet import convnet
torch.manual_seed(0)
m = convnet(in_shape=(3, 32, 32), num_classes=10, widths=(32, 128, 128))
m.init_from_data(torch.randn(512, 3, 32, 32))
m.stem.bias.requires_grad_(not frozen)
m = m.to(memory_format=torch.channels_last)
x = torch.randn(4096, 3, side, side).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (4096,))
opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01, momentum=0.85, nesterov=True)
def step(i):
    lo = (i * micro) % 4096
    F.cross_entropy(m(x[lo:lo + micro]), y[lo:lo + micro], label_smoothing=0.2).backward()
    if (i + 1) * micro % 1024 == 0:
        opt.step(); opt.zero_grad(set_to_none=True)
for i in range(2 * 1024 // micro):
    step(i)
best = float("inf")
for _ in range(reps):
    t = time.perf_counter()
    n = 8 * 1024 // micro
    for i in range(n):
        step(i)
    best = min(best, (time.perf_counter() - t) / 8)
print(best)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    import torch

    results = {}
    for name, spec in VARIANTS.items():
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([*spec, args.reps])],
                             capture_output=True, text=True, check=True)
        results[name] = float(out.stdout.split()[-1])
        print(f"{name:52s} {results[name]:.3f} s per 1024 images "
              f"({results['batch 1024'] / results[name]:.2f}x batch 1024)", flush=True)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "seconds_per_1024": results}))


if __name__ == "__main__":
    main()
