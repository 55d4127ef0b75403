"""`layerwise explain` on a CUDA GPU: the same attributions as on the CPU, and IG's chunking
(internal_batch_size) bounding the GPU memory. Not yet run (written on a machine without a GPU).

For each method on the shipped MNIST convnet (64 digits: the real test split with --data-root,
else seeded noise digits), the largest |CPU - GPU| difference as a fraction of the largest |CPU|
attribution; IG's completeness gap on the GPU; a tiny text-transformer (IG on its embeddings)
and a vit's Grad-CAM on the GPU against the CPU; and the peak GPU memory of IG on 256 digits x
200 steps with internal_batch_size 512 against one pass of all 51,200 rows.

    PYTHONPATH=src python benchmarks/explain_gpu.py [--data-root DIR] [--out FILE.json]

The device has no internet: carry Captum (pure Python) with the checkout, e.g.
    pip install --target .gpu-pkgs --no-deps captum==0.9.0   # then PYTHONPATH=src:.gpu-pkgs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment


def digits(root: str | None, n: int) -> torch.Tensor:
    if root and (Path(root) / "mnist" / "mnist_test.npz").is_file():
        d = np.load(Path(root) / "mnist" / "mnist_test.npz")
        return torch.from_numpy(d["x"][:n]).float()[:, None] / 255
    return (torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.8).float()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.cpu() - b.cpu()).abs().max() / a.abs().max().clamp_min(1e-12))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None)
    p.add_argument("--out")
    args = p.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    from layerwise.insight.explain import attribute, attribute_tokens, completeness
    from layerwise.insight.runs import open_run
    from layerwise.models import create_model

    res = {"env": environment(), "gpu": torch.cuda.get_device_name(), "mnist": {}}
    x = digits(args.data_root, 64)
    fc, fg = open_run("pretrained:mnist-convnet", "cpu").pixel_model(), open_run("pretrained:mnist-convnet",
                                                                                  "cuda").pixel_model()
    with torch.no_grad():
        pred = fc(x).argmax(1)
    for m in ("ig", "saliency", "gradcam", "occlusion"):
        zc, zg = torch.zeros(1, 1, 28, 28), torch.zeros(1, 1, 28, 28, device="cuda")
        ac = attribute(fc, x, pred, m, zc, steps=32, gradcam="conv")
        ag = attribute(fg, x.cuda(), pred.cuda(), m, zg, steps=32, gradcam="conv")
        res["mnist"][m] = {"max_rel_diff_cpu_gpu": rel(ac.attr, ag.attr)}
        if m == "ig":
            res["mnist"][m]["gpu_worst_relative_gap"] = max(c["relative"] for c in completeness(ag, 1.0))
    torch.manual_seed(0)
    t = create_model("text-transformer", in_shape=(16,), num_classes=2, vocab_size=100, n_layer=2, n_head=2,
                     n_embd=32, dropout=0.0).eval()
    ids = torch.randint(1, 100, (8, 16))
    tc = attribute_tokens(t, ids, torch.zeros(8, dtype=torch.long), "ig", steps=32)
    tg = attribute_tokens(t.cuda(), ids.cuda(), torch.zeros(8, dtype=torch.long, device="cuda"), "ig", steps=32)
    res["text_ig_max_rel_diff_cpu_gpu"] = rel(tc.attr, tg.attr)
    v = create_model("vit", in_shape=(1, 28, 28), num_classes=10, patch_h=4, patch_w=4, n_layer=2, n_head=2,
                     n_embd=32, dropout=0.0).eval()
    vc = attribute(v, x, pred, "gradcam", None, gradcam="tokens")
    vg = attribute(v.cuda(), x.cuda(), pred.cuda(), "gradcam", None, gradcam="tokens")
    res["vit_gradcam_max_rel_diff_cpu_gpu"] = rel(vc.attr, vg.attr)
    big = digits(args.data_root, 256).cuda()
    big_pred = fg(big).argmax(1)
    peaks = {}
    for ibs in (512, None):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            attribute(fg, big, big_pred, "ig", torch.zeros(1, 1, 28, 28, device="cuda"), steps=200,
                      internal_batch_size=ibs or 256 * 200)
            peaks[str(ibs)] = torch.cuda.max_memory_allocated() / 2 ** 20
        except torch.cuda.OutOfMemoryError:
            peaks[str(ibs)] = "out of memory"
    res["ig_peak_MiB_256x200"] = {"internal_batch_size=512": peaks["512"], "one pass": peaks["None"]}
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
