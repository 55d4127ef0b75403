"""`layerwise probe` on a CUDA GPU against the CPU, for the shipped MNIST and CIFAR-10 convnets.

The features are collected on the device (the probes themselves are scikit-learn, on the CPU); the
per-depth test accuracies on the GPU must match the CPU's within half a point (only float rounding
of the features differs), and the feature collection time on each is reported.

    PYTHONPATH=src python benchmarks/probe_gpu.py --data-root DIR [--out FILE.json]

DIR holds mnist/ and cifar10/ (as the workplace's shared data). One JSON object per model goes to
stdout and to $OUT/probe_gpu.jsonl when OUT is set (else --out). Exit status 1 when a GPU figure
differs from the CPU's by more than the tolerance, 2 when there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from layerwise.insight.probe import probe

TOLERANCE = 0.005  # test accuracy, fraction


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--out", default="")
    ap.add_argument("--train-n", type=int, default=5000)
    ap.add_argument("--test-n", type=int, default=2000)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check", file=sys.stderr)
        return 2
    out = Path(os.environ["OUT"]) / "probe_gpu.jsonl" if os.environ.get("OUT") else Path(args.out or "probe_gpu.jsonl")
    ok = True
    needs = {"mnist-convnet": "mnist/mnist_train.npz", "cifar10-convnet": "cifar10/cifar10_train_jpeg.npz"}
    for name, data in needs.items():
        if not (Path(args.data_root) / data).is_file():
            print(json.dumps({"model": f"pretrained:{name}", "skipped": f"no {data} under --data-root"}), flush=True)
            continue
        row: dict = {"model": f"pretrained:{name}", "gpu": torch.cuda.get_device_name(0),
                     "torch": torch.__version__}
        for device in ("cuda", "cpu"):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                r = probe(f"pretrained:{name}", args.train_n, args.test_n, out=tmp, device=device,
                          data_root=args.data_root)
                row[f"{device}_seconds"] = round(time.perf_counter() - t0, 2)
            row[f"{device}_test_accuracy"] = [d["test_accuracy"] for d in r["depths"]]
        diff = max(abs(a - b) for a, b in zip(row["cuda_test_accuracy"], row["cpu_test_accuracy"], strict=True))
        row["max_abs_difference"] = diff
        row["ok"] = diff <= TOLERANCE
        ok &= row["ok"]
        print(json.dumps(row), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
