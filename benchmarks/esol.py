"""ESOL solubility (Delaney 2004) on MoleculeNet's protocol: ``recipes/esol.yaml`` (D-MPNN on the
molecular graph with RDKit descriptors) beside a layerwise MLP on ECFP4 fingerprints, a
scikit-learn RandomForestRegressor (500 trees) on the same fingerprints and the training mean,
on exactly the same splits, in the same run: random 80/10/10 splits (the seed changes the split
and the weights, as MoleculeNet does) and the Bemis-Murcko scaffold split (deterministic: the
seed changes only the weights and the forest). Test RMSE in log10(mol/L) at the end of a fixed
schedule; the 10% validation part is held out and unused (nothing is selected on it).

    python benchmarks/esol.py --data-root DIR [--seeds 3] [--splits random scaffold]
        [--mpnn --key=value ...] [--out benchmarks/results/esol_<date>.json]
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
from _env import environment  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "esol.yaml"
# the fingerprint MLP: the recipe's data and optimizer, ECFP4 bits only (as the forest sees them)
MLP = ["--model.name=mlp", "--model.depth=2", "--model.width=512", "--model.dropout=0.2", "--data.featurize=ecfp",
       "--data.descriptors=false", "--train.epochs=40", "--optim.weight_decay=0.01"]
Q = ["--run.plots=false", "--run.tensorboard=false", "--run.keep_checkpoints=1"]


def _mlp_config(root: str, split: str, seed: int):
    """The recipe's data section with the MLP's model (a fresh config: the recipe's model keys are mpnn's)."""
    from layerwise.config import load_config, load_yaml

    r = load_yaml(RECIPE)
    data = [f"--data.{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in r["data"].items()]
    optim = [f"--optim.{k}={v}" for k, v in r["optim"].items() if k != "weight_decay"]
    return load_config(None, [*data, *optim, f"--data.root={root}", f"--data.split={split}",
                              f"--data.split_seed={seed}", f"--train.seed={seed}", "--train.eval_every=0", *Q, *MLP])


def forest(root: str, split: str, seed: int) -> dict:
    """RandomForestRegressor(500 trees) and the training mean on the split layerwise reads."""
    from sklearn.ensemble import RandomForestRegressor

    from layerwise.data import load_dataset

    cfg = _mlp_config(root, split, seed)
    ds = load_dataset("molecules", root, cfg.data)
    xtr, ytr = ds.x_train.numpy(), ds.y_train.numpy()[:, 0]
    xte, yte = ds.x_test.numpy(), ds.y_test.numpy()[:, 0]
    t0 = time.perf_counter()
    rf = RandomForestRegressor(n_estimators=500, n_jobs=-1, random_state=seed).fit(xtr, ytr)
    rmse = float(np.sqrt(np.mean((rf.predict(xte) - yte) ** 2)))
    return {"rf_rmse": rmse, "rf_seconds": round(time.perf_counter() - t0, 1),
            "train_mean_rmse": float(np.sqrt(np.mean((ytr.mean() - yte) ** 2))),
            "train": len(ytr), "test": len(yte), "split_how": ds.source["split"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--splits", nargs="+", default=["random", "scaffold"])
    ap.add_argument("--mpnn", nargs="*", default=[], help="overrides for the recipe")
    ap.add_argument("--out", default="")
    ap.add_argument("--summarize", default="", metavar="LOG",
                    help="only summarize the JSON rows a run printed (one per line) into the table and --out")
    args = ap.parse_args()
    import layerwise

    rows, t_all = [], time.perf_counter()
    if args.summarize:
        rows = [json.loads(line) for line in open(args.summarize) if line.startswith("{")]
        for r in rows:  # rows printed before the split's name and its description had separate keys
            how = r.pop("split_how", None) or r["split"]
            r["split"], r["split_how"] = ("scaffold" if "scaffold" in how else "random"), how
        args.splits = [s for s in args.splits if any(r["split"] == s for r in rows)]
        return report(args, rows, sum(r["mpnn_seconds"] + r["mlp_seconds"] + r["rf_seconds"] for r in rows))
    with tempfile.TemporaryDirectory() as tmp:
        for split in args.splits:
            for seed in range(args.seeds):
                common = [f"--data.root={args.data_root}", f"--data.split={split}", f"--data.split_seed={seed}",
                          f"--train.seed={seed}", *Q]
                t0 = time.perf_counter()
                m = layerwise.fit(RECIPE, *common, *args.mpnn, run_dir=Path(tmp) / f"mpnn-{split}-{seed}",
                                  show_progress=False)
                t1 = time.perf_counter()
                f = layerwise.fit(_mlp_config(args.data_root, split, seed), run_dir=Path(tmp) / f"mlp-{split}-{seed}",
                                  show_progress=False)
                t2 = time.perf_counter()
                row = {"split": split, "seed": seed, "mpnn_rmse": m["test_rmse"], "mpnn_r2": m["test_r2"],
                       "mpnn_seconds": round(t1 - t0, 1), "mlp_rmse": f["test_rmse"],
                       "mlp_seconds": round(t2 - t1, 1), **forest(args.data_root, split, seed)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    report(args, rows, time.perf_counter() - t_all)


def report(args: argparse.Namespace, rows: list[dict], wall_seconds: float) -> None:
    """Print the table of means and standard deviations over the seeds; write the JSON."""
    summary = {}
    for split in args.splits:
        for k in ("mpnn_rmse", "mlp_rmse", "rf_rmse", "train_mean_rmse"):
            v = [r[k] for r in rows if r["split"] == split]
            summary[f"{split}/{k}"] = {"mean": round(statistics.fmean(v), 4),
                                       "std": round(statistics.stdev(v), 4) if len(v) > 1 else 0.0}
    print(f"\n{'split':<10}{'model':<28}{'test RMSE (log mol/L)':>24}")
    for key, s in summary.items():
        split, k = key.split("/")
        name = {"mpnn_rmse": "mpnn (recipes/esol.yaml)", "mlp_rmse": "mlp on ECFP4",
                "rf_rmse": "random forest on ECFP4", "train_mean_rmse": "training mean"}[k]
        print(f"{split:<10}{name:<28}{s['mean']:>14.3f} +- {s['std']:.3f}")
    res = {"benchmark": "esol", "protocol": "MoleculeNet: 80/10/10, test RMSE at the end of a fixed schedule, "
           "validation part unused; random: seed = data.split_seed = train.seed; scaffold: deterministic split",
           "mpnn_overrides": args.mpnn, "mlp_overrides": MLP, "rows": rows, "summary": summary,
           "wall_seconds": round(wall_seconds, 1),
           "reference": "MoleculeNet (Wu et al. 2018), random split: MPNN 0.58, GC 0.97, RF 1.07",
           "env": environment()}
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
