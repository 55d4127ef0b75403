"""Adversarial robustness on MNIST: a standard convnet and an adversarially trained one, attacked alike.

Two models, each in its own process of one CPU thread (2 cores):

  - standard:    the shipped pretrained:mnist-convnet (recipes/pretrain-mnist-convnet.yaml: convnet
                 24/48/96, 3 epochs, no adversarial examples), or with ``--standard train``
                 recipes/mnist-cnn.yaml (the same network, 4 epochs) trained here;
  - adversarial: recipes/mnist-adversarial.yaml (the same network trained on PGD examples, Madry
                 et al. 2018: L-inf eps 0.3, a random start and 7 steps of 0.1), trained here;
                 ``--set`` overrides its recipe (e.g. --set=--train.adversarial=fgsm-rs for Wong
                 et al. 2020's fast FGSM with a random start).

Then each is attacked with `layerwise.attack`'s PGD in pixel space: L-inf eps 0.3, 40 steps of
2.5 * eps / 40 = 0.01875, a uniform random start and ``--restarts`` starts (default 2: the start
and one restart, the second run only on the examples the first did not fool), on ``--n`` test
images (default all 10,000); and swept over eps 0 .. 0.4 with FGSM and PGD-20 on ``--sweep-n``
images for the accuracy-vs-eps plot. Madry et al. 2018 report 89.6% under PGD at eps 0.3 (their larger
network, 100k PGD-40 steps of training), Wong et al. 2020 88.8% (FGSM-RS, 10 epochs).

    python benchmarks/adversarial.py --data-root DIR [--n 10000] [--restarts 2] [--epochs 3]
        [--out benchmarks/results/adversarial_<date>.json] [--plot benchmarks/attack/mnist_accuracy_vs_eps.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"standard": "recipes/mnist-cnn.yaml", "adversarial": "recipes/mnist-adversarial.yaml"}
Q = ["--run.plots=false", "--run.tensorboard=false", "--train.threads=1"]
SWEEP = [0.0, 0.1, 0.2, 0.3, 0.4]


def train_and_attack(name: str, data_root: str, runs: str, n: int, restarts: int, sweep_n: int,
                     pretrained: bool, overrides: tuple[str, ...] = ()) -> dict:
    """One model: train its recipe (or take the shipped pretrained model), then PGD-40 at eps 0.3
    and the sweep (in this process, one thread). Returns its figures and CPU seconds."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    import layerwise
    from layerwise.insight import open_run
    from layerwise.insight.attack import accuracy_under_attack

    t0 = time.process_time()
    if pretrained:  # a run directory for the shipped model: its file beside the recipe it came from
        from layerwise.config import load_config, save_config
        from layerwise.models.pretrained import resolve_pretrained

        run_dir = Path(runs) / "pretrained-mnist-convnet"
        run_dir.mkdir(parents=True)
        shutil.copy(resolve_pretrained("pretrained:mnist-convnet"), run_dir / "model.safetensors")
        save_config(load_config(REPO / "recipes/pretrain-mnist-convnet.yaml"), run_dir / "config.yaml")
        summary = {"run_dir": str(run_dir), "test_accuracy": None, "train_seconds": 0.0}
        recipe = "pretrained:mnist-convnet (recipes/pretrain-mnist-convnet.yaml)"
    else:
        summary = layerwise.fit(str(REPO / RECIPES[name]), f"--data.root={data_root}", f"--run.root={runs}", *Q,
                                *overrides, show_progress=False)
        recipe = " ".join([RECIPES[name], *overrides])
    train_cpu = time.process_time() - t0
    run = open_run(summary["run_dir"], device="cpu", data_root=data_root)
    model = run.pixel_model()
    t0 = time.process_time()
    x, y = run.examples("test", n=n, seed=0)
    pgd40 = accuracy_under_attack(model, x, y, [0.0, 0.3], method="pgd", steps=40, restarts=restarts, seed=0)
    attack_cpu = time.process_time() - t0
    xs, ys = run.examples("test", n=sweep_n, seed=1)
    sweep = {m: accuracy_under_attack(model, xs, ys, SWEEP, method=m, steps=20, seed=0) for m in ("fgsm", "pgd")}
    return {"model": name, "recipe": recipe, "test_accuracy_at_training_end": summary["test_accuracy"],
            "clean_accuracy": pgd40[0]["accuracy"], "pgd40_eps0.3_accuracy": pgd40[1]["accuracy"],
            "pgd40": pgd40, "sweep": sweep, "train_cpu_seconds": round(train_cpu, 1),
            "train_wall_seconds": round(summary["train_seconds"], 1), "attack_cpu_seconds": round(attack_cpu, 1)}


def plot(results: list[dict], path: Path) -> None:
    from layerwise.insight.attack_report import accuracy_figure

    curves = {f"{r['model']}, {m.upper()}{'-20' if m == 'pgd' else ''}": r["sweep"][m]
              for r in results for m in ("fgsm", "pgd")}
    accuracy_figure(curves, "MNIST test images, L-inf eps in pixel space", path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding mnist/")
    p.add_argument("--n", type=int, default=10000, help="test images for the PGD-40 figure")
    p.add_argument("--restarts", type=int, default=2, help="PGD starts (the first plus restarts)")
    p.add_argument("--sweep-n", type=int, default=300, help="test images for the accuracy-vs-eps sweep")
    p.add_argument("--epochs", type=float, help="the adversarial model's epochs (default: its recipe's, 3)")
    p.add_argument("--set", action="append", default=[], metavar="--section.key=value",
                   help="an override for the adversarial model's recipe (repeatable), e.g. --set=--train.adversarial=pgd")
    p.add_argument("--standard", choices=("pretrained", "train"), default="pretrained",
                   help="the standard model: the shipped pretrained:mnist-convnet, or recipes/mnist-cnn.yaml trained here")
    p.add_argument("--out", default=f"benchmarks/results/adversarial_{time.strftime('%Y-%m-%d')}.json")
    p.add_argument("--plot", default="benchmarks/attack/mnist_accuracy_vs_eps.png")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(2) as pool:
        jobs = [pool.submit(train_and_attack, name, args.data_root, str(Path(tmp) / name), args.n, args.restarts,
                            args.sweep_n, name == "standard" and args.standard == "pretrained",
                            ((f"--train.epochs={args.epochs:g}",) if args.epochs else ()) + tuple(args.set)
                            if name == "adversarial" else ())
                for name in RECIPES]
        results = []
        for name, j in zip(RECIPES, jobs):
            try:
                results.append(j.result())
            except Exception as e:  # noqa: BLE001 (any failure: the other model's figures are still worth keeping)
                print(f"{name}: failed: {e!r}", flush=True)
            else:
                print(json.dumps({k: v for k, v in results[-1].items() if k != "sweep"}), flush=True)
    table = ["| model | clean accuracy | PGD-40 eps 0.3 accuracy | training CPU s | attack CPU s |",
             "| --- | --- | --- | --- | --- |"]
    for r in results:
        table.append(f"| {r['model']} ({r['recipe']}) | {r['clean_accuracy']:.4f} | {r['pgd40_eps0.3_accuracy']:.4f} "
                     f"| {r['train_cpu_seconds']:.0f} | {r['attack_cpu_seconds']:.0f} |")
    print("\n".join(table))
    plot(results, Path(args.plot))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python", *["<data>" if a == args.data_root else a for a in sys.argv]])
    out.write_text(json.dumps({"environment": environment(), "command": command, "n": args.n,
                               "restarts": args.restarts, "results": results, "table": table}, indent=2) + "\n")
    print(f"wrote {out} and {args.plot}")


if __name__ == "__main__":
    main()
