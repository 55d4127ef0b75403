"""Data hunger, and what transfer saves: CIFAR-10 animals (6 classes) -> vehicles (4 classes).

The target task is ``recipes/transfer-cifar10-vehicles.yaml`` (airplane, automobile, ship, truck)
with ``data.labels_per_class`` = 10, 30, 100, 300, 1000 training images per class (a seeded
stratified draw, ``data.subset_seed``; a smaller count's images are a subset of a larger one's) and
the whole 4,000-image test split. At every count two runs of the same network, optimizer, step
budget and seed:

- scratch: random weights;
- fine-tuned: ``--model.init_from`` a convnet trained on the six animal classes only
  (``recipes/pretrain-cifar10-animals-convnet.yaml``, shipped as
  ``pretrained:cifar10-animals-convnet``; no vehicle image was seen), a new 4-class head, every
  layer training from the start (what `layerwise finetune` does, measured best on MNIST 0-4 -> 5-9).
  Optionally fastai's ``fine_tune`` recipe: the head alone for the first ``--freeze-fraction`` of
  the steps (``train.freeze_body_epochs``, converted from steps to this count's epochs), then the
  body at ``--body-lr-scale`` times the learning rate (``optim.body_lr_scale``).

Every run trains ``train.max_steps`` steps of ``data.batch_size`` images (a set smaller than a
batch is one step: 40 images at 10 per class), so at every count both arms get the same steps on
the same images. The figure plots test accuracy against labels per class (log x), one line per
arm; the JSON and the printout state the smallest count from which on scratch stays within
``--catch-up`` accuracy points of fine-tuning.

    python benchmarks/transfer.py --data-root DIR [--labels 10 30 100 300 1000] [--seeds 0]
        [--source pretrained:cifar10-animals-convnet | RUN_DIR | FILE.safetensors] [--dir OUT]
        [--arms finetune scratch] [--freeze-fraction 0.1 --body-lr-scale 0.1]
        [--out benchmarks/results/transfer_cifar10_<date>.json] [--figure benchmarks/transfer/cifar10.png]

Runs go to ``--dir`` (default runs/transfer-cifar10); a finished run (summary.json) is read, not
trained again, so the same command continues an interrupted curve.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import statistics
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "transfer-cifar10-vehicles.yaml"
SOURCE = "pretrained:cifar10-animals-convnet"
Q = ["--run.plots=false", "--run.tensorboard=false", "--run.keep_checkpoints=1"]
CLASSES_PER_TASK = 4


def source_path(source: str) -> str:
    """A shipped name (pretrained:NAME) as the file's path; a run directory or file as given."""
    from layerwise.models.pretrained import PREFIX, resolve_pretrained

    return str(resolve_pretrained(source)) if source.startswith(PREFIX) else source


def finetune_overrides(source: str, labels: int, steps: int, batch: int, freeze_fraction: float,
                       body_lr_scale: float) -> list[str]:
    """The fine-tuned arm's overrides: the source, and (when set) the head-only steps as epochs of
    this count and the body's learning-rate multiplier."""
    out = [f"--model.init_from={source_path(source)}"]
    if freeze_fraction:
        steps_per_epoch = math.ceil(CLASSES_PER_TASK * labels / batch)  # drop_last is off in the recipe
        out.append(f"--train.freeze_body_epochs={freeze_fraction * steps / steps_per_epoch:.6g}")
    if body_lr_scale != 1:
        out.append(f"--optim.body_lr_scale={body_lr_scale:g}")
    return out


def run_point(arm: str, labels: int, seed: int, args: argparse.Namespace) -> dict:
    """One run (or its summary, when it finished before)."""
    import layerwise
    from layerwise.config import load_config

    run_dir = Path(args.dir) / f"{arm}-n{labels}-seed{seed}"
    if (run_dir / "summary.json").is_file():
        summary = json.loads((run_dir / "summary.json").read_text())
    else:
        if run_dir.exists():  # cut off: points are small, start it again
            shutil.rmtree(run_dir)
        cfg = load_config(RECIPE, [f"--data.root={args.data_root}"])
        steps, batch = cfg.train.max_steps, cfg.data.batch_size
        extra = finetune_overrides(args.source, labels, steps, batch, args.freeze_fraction,
                                   args.body_lr_scale) if arm == "finetune" else []
        summary = layerwise.fit(RECIPE, f"--data.root={args.data_root}", f"--data.labels_per_class={labels}",
                                f"--train.seed={seed}", *Q, *extra, *args.overrides, run_dir=run_dir,
                                show_progress=False)
    row = {"arm": arm, "labels_per_class": labels, "seed": seed, "test_accuracy": summary["test_accuracy"],
           "train_seconds": summary["train_seconds"], "steps": summary["steps"],
           "examples_seen": summary["examples_seen"]}
    print(json.dumps(row), flush=True)
    return row


def catch_up(curve: dict[str, dict[int, float]], points: float) -> int | None:
    """The smallest labels-per-class count from which on scratch stays within ``points`` accuracy
    points of fine-tuning (None when it never does on the grid)."""
    counts = sorted(curve["scratch"])
    for i, n in enumerate(counts):
        if all(100 * (curve["finetune"][m] - curve["scratch"][m]) <= points for m in counts[i:]):
            return n
    return None


def scratch_equivalent(curve: dict[str, dict[int, float]]) -> dict[int, float | None]:
    """For each count n, the labels per class scratch needs to match fine-tuning's accuracy at n:
    scratch's curve interpolated linearly in log(count); None beyond the grid's largest count."""
    counts = sorted(curve["scratch"])
    acc = [curve["scratch"][n] for n in counts]
    out: dict[int, float | None] = {}
    for n in sorted(curve["finetune"]):
        target, out[n] = curve["finetune"][n], None
        if target <= acc[0]:
            out[n] = float(counts[0])
            continue
        for (n0, a0), (n1, a1) in itertools.pairwise(zip(counts, acc, strict=True)):
            if a0 < target <= a1:
                t = (target - a0) / (a1 - a0)
                out[n] = round(math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0))), 1)
                break
    return out


def plot(curve: dict[str, dict[int, list[float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, label, style in (("finetune", "fine-tuned from the animals convnet", "o-"),
                              ("scratch", "from scratch", "s--")):
        counts = sorted(curve[arm])
        mean = [100 * statistics.fmean(curve[arm][n]) for n in counts]
        lo = [m - 100 * min(curve[arm][n]) for m, n in zip(mean, counts, strict=True)]
        hi = [100 * max(curve[arm][n]) - m for m, n in zip(mean, counts, strict=True)]
        ax.errorbar(counts, mean, yerr=[lo, hi], fmt=style, capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.minorticks_off()
    ax.set_xlabel("labelled training images per class (log scale)")
    ax.set_ylabel("test accuracy, 4 vehicle classes (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--labels", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--source", default=SOURCE, help="pretrained:NAME, a run directory or a .safetensors file")
    ap.add_argument("--arms", nargs="+", default=["finetune", "scratch"], choices=["finetune", "scratch"])
    ap.add_argument("--freeze-fraction", type=float, default=0.0, help="head-only share of the steps (fastai: a "
                    "first epoch)")
    ap.add_argument("--body-lr-scale", type=float, default=1.0, help="the body's LR multiplier (fastai: 0.1)")
    ap.add_argument("--catch-up", type=float, default=1.0, help="accuracy points that count as caught up")
    ap.add_argument("--dir", default="runs/transfer-cifar10")
    ap.add_argument("--out", default="")
    ap.add_argument("--figure", default="")
    args, rest = ap.parse_known_args()
    # --section.key=value for both arms (e.g. --train.max_steps=200)
    args.overrides = [a for a in rest if a.startswith("--") and "." in a.split("=", 1)[0]]
    if len(args.overrides) < len(rest):
        ap.error(f"unrecognized arguments: {' '.join(a for a in rest if a not in args.overrides)}")

    t0 = time.perf_counter()
    rows = [run_point(arm, n, seed, args) for n in args.labels for seed in args.seeds for arm in args.arms]
    if set(args.arms) != {"finetune", "scratch"}:
        return  # one arm: its runs are done (and kept in --dir for the next call)
    curve = {arm: {n: [r["test_accuracy"] for r in rows if r["arm"] == arm and r["labels_per_class"] == n]
                   for n in args.labels} for arm in ("finetune", "scratch")}
    means = {arm: {n: statistics.fmean(v) for n, v in c.items()} for arm, c in curve.items()}
    caught = catch_up(means, args.catch_up)
    print(f"\n{'labels/class':>12}{'fine-tuned':>12}{'scratch':>10}{'gain (points)':>15}")
    for n in args.labels:
        f, s = 100 * means["finetune"][n], 100 * means["scratch"][n]
        print(f"{n:>12}{f:>11.2f}%{s:>9.2f}%{f - s:>15.2f}")
    points = f"{args.catch_up:g} point{'' if args.catch_up == 1 else 's'}"
    verdict = (f"scratch comes within {points} of fine-tuning from {caught} labels per class on"
               if caught is not None else
               f"scratch stays more than {points} behind fine-tuning at every count up to "
               f"{max(args.labels)} labels per class")
    print(verdict)
    equivalent = scratch_equivalent(means)
    print("scratch needs, to match fine-tuning: " + ", ".join(
        f"{n} -> {'more than ' + str(max(args.labels)) if m is None else f'{m:g}'}" for n, m in equivalent.items()))
    res = {"benchmark": "transfer_cifar10", "source": args.source, "recipe": str(RECIPE.relative_to(REPO)),
           "protocol": "CIFAR-10 animals (bird, cat, deer, dog, frog, horse) -> vehicles (airplane, automobile, "
                       "ship, truck); data.labels_per_class training images per class (data.subset_seed 0), the "
                       "whole 4,000-image test split; both arms: the same network, optimizer, train.max_steps "
                       "and seed; fine-tuned: model.init_from the animals convnet (a new head), head only for "
                       f"{args.freeze_fraction:g} of the steps, optim.body_lr_scale={args.body_lr_scale:g}",
           "overrides": args.overrides, "rows": rows,
           "mean_test_accuracy": {arm: {str(n): round(v, 4) for n, v in m.items()} for arm, m in means.items()},
           "catch_up_points": args.catch_up, "catch_up_labels_per_class": caught, "verdict": verdict,
           "scratch_labels_per_class_to_match_finetune": {str(n): m for n, m in equivalent.items()},
           # this call's time (runs finished before are read, not trained) and the runs' own training time
           "wall_seconds": round(time.perf_counter() - t0, 1),
           "train_seconds_total": round(sum(r["train_seconds"] for r in rows), 1),
           # the data root and the runs' folder are this machine's: named, not spelled out
           "command": "python benchmarks/transfer.py " + " ".join(sys.argv[1:]).replace(args.data_root, "DIR")
           .replace(args.dir, "OUT"),
           "env": environment()}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    if args.figure:
        plot(curve, Path(args.figure), textwrap.fill("CIFAR-10 animals -> vehicles: " + verdict, 70))


if __name__ == "__main__":
    main()
