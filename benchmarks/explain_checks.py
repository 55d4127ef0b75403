"""Do `layerwise explain`'s attributions mean something? Three checks, each beside its chance level
measured in the same run:

1. localisation: convnets trained on a synthetic task where only a 6 x 6 region of a 16 x 16
   image decides the label (layerwise.insight.faithfulness.region_task); the share of |attribution|
   inside the region per method, against the region's share of the image (chance);
2. model randomisation (Adebayo et al. 2018): Spearman rho between saliency maps of a trained
   model and of the same model re-initialised, against rho between two trainings from different
   seeds (what "the same explanation" measures on this task);
3. deletion (Petsiuk et al. 2018): the shipped MNIST convnet (pretrained:mnist-convnet) on seeded
   MNIST test digits; AUC of the predicted class's probability as pixels are set to black in the
   attribution's order, against a random order (lower is better).

    python benchmarks/explain_checks.py --data-root DIR [--seeds 3] [--digits 128] [--out FILE.json]

CPU seconds (time.process_time) are reported per method; one thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment

METHODS = ("ig", "saliency", "gradcam", "occlusion")


def localisation(seeds: int) -> dict:
    from layerwise.insight.explain import attribute
    from layerwise.insight.faithfulness import (
        mass_in_region,
        randomized_copy,
        rank_correlation,
        region_task,
        train_region_model,
    )

    mass = {m: [] for m in METHODS}
    rho_random, rho_random_ig, rho_seeds, acc = [], [], [], []
    models = [train_region_model(seed=s) for s in range(seeds)]
    x, y, mask = region_task(64, torch.Generator().manual_seed(1))
    zero = torch.zeros(1, 1, 16, 16)
    for k, m in enumerate(models):
        with torch.no_grad():
            pred = m(x).argmax(1)
        acc.append((pred == y).float().mean().item())
        for meth in METHODS:
            a = attribute(m, x, pred, meth, zero, steps=32, gradcam="conv").attr
            mass[meth].append(mass_in_region(a, mask).mean().item())
        s = attribute(m, x, pred, "saliency", None).attr
        r = randomized_copy(m, seed=100 + k)
        rho_random.append(rank_correlation(s, attribute(r, x, pred, "saliency", None).attr).mean().item())
        ig = attribute(m, x, pred, "ig", zero, steps=32).attr
        rho_random_ig.append(rank_correlation(ig, attribute(r, x, pred, "ig", zero, steps=32).attr).mean().item())
        if k > 0:
            rho_seeds.append(rank_correlation(attribute(models[0], x, pred, "saliency", None).attr, s).mean().item())

    def ms(v: list[float]) -> dict:
        return {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "runs": v}

    return {"chance": mask.float().mean().item(), "test_accuracy": acc,
            "mass_in_region": {m: ms(v) for m, v in mass.items()},
            "spearman_saliency_trained_vs_randomised": ms(rho_random),
            "spearman_ig_trained_vs_randomised": ms(rho_random_ig),
            "spearman_saliency_seed0_vs_other_seeds": ms(rho_seeds) if rho_seeds else None}


def deletion(root: str, n: int) -> dict:
    from layerwise.insight.explain import attribute
    from layerwise.insight.faithfulness import deletion_auc, deletion_curve, order_by
    from layerwise.insight.runs import open_run
    from layerwise.models.pretrained import resolve_pretrained

    d = np.load(Path(root) / "mnist" / "mnist_test.npz")
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(d["y"]), generator=g)[:n].numpy()
    x = torch.from_numpy(d["x"][idx]).float()[:, None] / 255
    f = open_run(resolve_pretrained("pretrained:mnist-convnet"), "cpu").pixel_model()
    with torch.no_grad():
        pred = f(x).argmax(1)
    out = {"digits": n, "accuracy": float((pred.numpy() == d["y"][idx]).mean()), "auc": {}, "cpu_s_per_digit": {}}
    for meth in (*METHODS, "random"):
        t = time.process_time()
        if meth == "random":
            order = torch.stack([torch.randperm(784, generator=g) for _ in range(n)])
        else:
            a = attribute(f, x, pred, meth, torch.zeros(1, 1, 28, 28), steps=32, internal_batch_size=256,
                          gradcam="conv").attr
            out["cpu_s_per_digit"][meth] = (time.process_time() - t) / n
            order = order_by(a)
        with torch.no_grad():
            auc = deletion_auc(deletion_curve(f, x, order, pred, 0.0, steps=20))
        out["auc"][meth] = {"mean": auc.mean().item(), "sem": (auc.std() / n ** 0.5).item()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding mnist/mnist_test.npz")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--digits", type=int, default=128)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    t = time.process_time()
    res = {"env": environment(), "localisation": localisation(args.seeds), "deletion": deletion(args.data_root,
                                                                                                args.digits)}
    res["cpu_s"] = time.process_time() - t
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
