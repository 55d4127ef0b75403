"""Transfer learning on MNIST: pretrain on digits 0-4, then learn 5-9 from 50 labelled images per
class, fine-tuned from the pretrained weights or from scratch, in the same run. For each training
budget (epochs on the 250 images) and seed: test accuracy on 1000 test images of 5-9 of

  - scratch:        the same model from random weights;
  - finetune:       `layerwise finetune PRETRAINED` (every layer trains from the start);
  - fastai:         + --train.freeze_body_epochs=1 --optim.body_lr_scale=0.1 (fastai's fine_tune);
  - frozen 1 epoch: + --train.freeze_body_epochs=1 only;
  - body 0.1:       + --optim.body_lr_scale=0.1 only.

The images are MNIST's, written as class folders of PNGs (image-folder), chosen with a fixed seed
(:func:`mnist_split_folders`, which tests/integration/test_finetune_runs.py uses too).

    python benchmarks/transfer_mnist.py --data-root DIR [--seeds 0 1 2] [--epochs 2 5 20]
        [--out benchmarks/results/transfer_mnist_<date>.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment

MODEL = ["--model.name=convnet", "--model.widths=[16,32,32]", "--data.batch_size=32"]
Q = ["--run.plots=false", "--run.tensorboard=false", "--train.eval_every=0", "--train.threads=1"]
VARIANTS = {"finetune": [], "fastai": ["--train.freeze_body_epochs=1", "--optim.body_lr_scale=0.1"],
            "frozen 1 epoch": ["--train.freeze_body_epochs=1"], "body 0.1": ["--optim.body_lr_scale=0.1"]}


def mnist_split_folders(data_root: Path, out: Path, pretrain: int = 300, labels: int = 50, test: int = 200,
                        seed: int = 0) -> None:
    """MNIST as image-folder datasets under ``out``: ``pre/{train,test}/<0..4>/`` (``pretrain``
    training and 100 test images per digit) and ``ft/{train,test}/<5..9>/`` (``labels`` training and
    ``test`` test images per digit), PNGs drawn without replacement by ``numpy.random.default_rng(seed)``
    from ``mnist/mnist_{train,test}.npz`` under ``data_root``."""
    from PIL import Image

    tr, te = (np.load(data_root / f"mnist/mnist_{s}.npz") for s in ("train", "test"))
    rng = np.random.default_rng(seed)
    for part, digits, split, (x, y), n in (("pre", range(5), "train", (tr["x"], tr["y"]), pretrain),
                                           ("pre", range(5), "test", (te["x"], te["y"]), 100),
                                           ("ft", range(5, 10), "train", (tr["x"], tr["y"]), labels),
                                           ("ft", range(5, 10), "test", (te["x"], te["y"]), test)):
        for c in digits:
            folder = out / part / split / str(c)
            folder.mkdir(parents=True)
            for i in rng.choice(np.flatnonzero(y == c), n, replace=False):
                Image.fromarray(x[i]).save(folder / f"{i}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding mnist/mnist_{train,test}.npz")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=float, nargs="+", default=[2, 5, 20])
    p.add_argument("--out", default=f"benchmarks/results/transfer_mnist_{time.strftime('%Y-%m-%d')}.json")
    args = p.parse_args()
    import layerwise

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mnist_split_folders(Path(args.data_root), tmp / "mnist")
        common = [*MODEL, *Q, "--data.name=image-folder", f"--run.root={tmp / 'runs'}"]
        for seed in args.seeds:
            pre = layerwise.fit(None, *common, f"--data.path={tmp / 'mnist/pre'}", "--train.epochs=3",
                                f"--train.seed={seed}", show_progress=False)
            print(f"seed {seed}: pretrained on 0-4, test accuracy {pre['test_accuracy']:.4f}", flush=True)
            for epochs in args.epochs:
                target = [*common, f"--data.path={tmp / 'mnist/ft'}", f"--train.epochs={epochs:g}", f"--train.seed={seed}"]
                row = {"seed": seed, "epochs": epochs, "pretrained_0_4": pre["test_accuracy"],
                       "scratch": layerwise.fit(None, *target, show_progress=False)["test_accuracy"]}
                for name, extra in VARIANTS.items():
                    row[name] = layerwise.finetune(pre["run_dir"], None, *target, *extra,
                                                   show_progress=False)["test_accuracy"]
                print("  " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                      flush=True)
                rows.append(row)
    table = ["| epochs on the 250 images | scratch | " + " | ".join(VARIANTS) + " |",
             "| --- | --- | " + " | ".join("---" for _ in VARIANTS) + " |"]
    for epochs in args.epochs:
        mine = [r for r in rows if r["epochs"] == epochs]
        cells = [f"{statistics.mean(r[k] for r in mine):.3f}" for k in ("scratch", *VARIANTS)]
        table.append(f"| {epochs:g} ({round(epochs * 8)} steps) | " + " | ".join(cells) + " |")
    print(f"\ntest accuracy on digits 5-9, mean of seeds {args.seeds}:\n" + "\n".join(table))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the command as run, the data root left out (a path of this machine)
    command = " ".join(["python", *["<data>" if a == args.data_root else a for a in sys.argv]])
    out.write_text(json.dumps({"environment": environment(), "command": command, "model": MODEL,
                               "rows": rows, "table": table}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
