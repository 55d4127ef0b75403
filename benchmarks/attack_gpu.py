"""`layerwise attack` and adversarial training on a CUDA GPU, against the CPU (issue 16).

1. The shipped MNIST convnet under FGSM and PGD-20 (L-inf, eps 0.1 and 0.3) on the same 512 test
   digits (the real MNIST test split with --data-root, else seeded noise digits) on the GPU and on
   the CPU: accuracies within 1 point (PGD's random starts are drawn on each device, so single
   examples may differ), every perturbation inside eps and inside [0, 1].
2. A short adversarial training run on the GPU (recipes/mnist-adversarial.yaml's settings with
   train.adversarial=pgd, 50 steps, bf16 autocast; with --data-root) that must finish with a finite
   loss, run twice: whether the two give the same test loss is reported (the random starts come
   from a generator on the device seeded by step; cuDNN's kernel choice may still differ).

    PYTHONPATH=src python benchmarks/attack_gpu.py [--data-root DIR] [--out FILE.json]

Exit status 0 when every check holds, 1 otherwise, 2 without a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def digits(root: str | None, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    path = Path(root or "") / "mnist" / "mnist_test.npz"
    if root and path.is_file():
        d = np.load(path)
        return torch.from_numpy(d["x"][:n]).float()[:, None] / 255, torch.from_numpy(d["y"][:n]).long()
    return (torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.8).float(), None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check", file=sys.stderr)
        return 2
    from layerwise.insight.attack import accuracy_under_attack
    from layerwise.insight.runs import open_run

    x, y = digits(args.data_root, 512)
    res: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "real_digits": y is not None}
    ok = True
    per_device = {}
    for dev in ("cuda", "cpu"):
        model = open_run("pretrained:mnist-convnet", dev).pixel_model()
        xd = x.to(dev)
        with torch.no_grad():
            labels = (y.to(dev) if y is not None else model(xd).argmax(1))
        rows = {}
        for method in ("fgsm", "pgd"):
            rows[method] = accuracy_under_attack(model, xd, labels, [0.1, 0.3], method=method, steps=20)
        per_device[dev] = rows
    for method in ("fgsm", "pgd"):
        for a, b in zip(per_device["cuda"][method], per_device["cpu"][method], strict=True):
            diff = abs(a["accuracy"] - b["accuracy"])
            inside = a["max_perturbation"] <= a["eps"] + 1e-6
            res[f"{method}_eps{a['eps']}"] = {"cuda": a["accuracy"], "cpu": b["accuracy"], "abs_diff": diff,
                                              "cuda_max_perturbation": a["max_perturbation"]}
            ok &= diff <= 0.01 and inside
    import layerwise

    with tempfile.TemporaryDirectory() as tmp:
        finals = []
        for k in range(2):
            s = layerwise.fit("recipes/mnist-adversarial.yaml", f"--data.root={args.data_root or '.'}",
                              "--train.adversarial=pgd", "--train.adversarial_steps=5", "--train.max_steps=50",
                              "--train.precision=bf16", "--train.device=cuda", "--run.plots=false",
                              "--run.tensorboard=false", run_dir=Path(tmp) / f"adv{k}", show_progress=False) \
                if args.data_root else None
            if s is None:
                break
            finals.append(s)
        if finals:
            res["adversarial_training"] = {k: finals[0].get(k) for k in ("test_accuracy", "test_loss", "steps",
                                                                         "train_seconds")}
            same = finals[0]["test_loss"] == finals[1]["test_loss"]
            res["adversarial_training"]["repeatable"] = same  # informational: cuDNN may pick other kernels
            ok &= bool(np.isfinite(finals[0]["test_loss"]))
    res["ok"] = ok
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
