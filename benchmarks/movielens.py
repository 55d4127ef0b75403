"""MovieLens 100K: ``recipes/movielens.yaml`` over GroupLens' five official folds beside the
global-mean-plus-biases baseline (r_hat = mu + b_u + b_i, regularized least squares), in the same
run; then implicit feedback (He et al. 2017): the same recipe trained on every rating but each
user's latest rating >= 4, which is ranked among 99 sampled unrated items (HR@10, NDCG@10), beside
a popularity ranking (training rating counts).

    python benchmarks/movielens.py --data-root DIR [--extra --key=value ...] [--out FILE.json]
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
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def biases_baseline(x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, y_te: torch.Tensor,
                    reg_u: float = 15.0, reg_i: float = 10.0, sweeps: int = 10) -> float:
    """Test RMSE of r_hat = mu + b_u + b_i, fitted by alternating regularized least squares
    (Koren 2010, "Factor in the Neighbors", section 2.1; Surprise's BaselineOnly with ALS uses the
    same regularizers), predictions clipped to 1..5."""
    u, i, r = x_tr[:, 0].numpy(), x_tr[:, 1].numpy(), y_tr[:, 0].double().numpy()
    mu = r.mean()
    bu, bi = np.zeros(int(x_tr[:, 0].max()) + 1), np.zeros(int(x_tr[:, 1].max()) + 1)
    cu, ci = np.bincount(u, minlength=len(bu)), np.bincount(i, minlength=len(bi))
    for _ in range(sweeps):
        bi = np.bincount(i, r - mu - bu[u], len(bi)) / (reg_i + ci)
        bu = np.bincount(u, r - mu - bi[i], len(bu)) / (reg_u + cu)
    ut, it = x_te[:, 0].numpy(), x_te[:, 1].numpy()  # index 0 (unknown) has bias 0: no ratings reach it
    pred = np.clip(mu + bu[np.minimum(ut, len(bu) - 1)] + bi[np.minimum(it, len(bi) - 1)], 1, 5)
    return float(np.sqrt(np.mean((pred - y_te[:, 0].double().numpy()) ** 2)))


def implicit(cfg, root: str, out_dir: Path) -> dict:
    """HR@10 / NDCG@10 of the recipe's model and of popularity on the leave-one-out split."""
    from layerwise.config import apply_overrides
    from layerwise.data import load_dataset
    from layerwise.tasks.ranking import hit_ratio_ndcg, sample_negatives
    from layerwise.train.trainer import fit
    from layerwise.train.run import load_model

    c = apply_overrides(cfg, ["--data.name=movielens-loo", f"--run.dir={out_dir / 'implicit'}"])
    t0 = time.perf_counter()
    summary = fit(c, show_progress=False)
    seconds = time.perf_counter() - t0
    ds = load_dataset("movielens-loo", root, c.data)
    model, _ = load_model(out_dir / "implicit", torch.device("cpu"))
    model.eval()
    num_items = ds.info.extra["model_args"]["num_items"]
    rated: dict[int, set[int]] = {}
    for x in (ds.x_train, ds.x_test):
        for u, i in x[:, :2].tolist():
            rated.setdefault(u, set()).add(i)
    users = ds.x_test[:, 0].numpy()
    neg = sample_negatives(users, rated, num_items, 99, seed=0)  # (U, 99) item indices
    items = np.concatenate([ds.x_test[:, 1].numpy()[:, None], neg], 1)  # (U, 100): held-out first
    # each candidate's row: the user's row with the item (and its genres) swapped in
    from layerwise.data.ratings import GENRES
    genres = torch.zeros(num_items, len(GENRES), dtype=torch.int64)
    for x in (ds.x_train, ds.x_test):
        genres[x[:, 1]] = x[:, 5:]
    rows = ds.x_test[:, None, :].repeat(1, items.shape[1], 1)  # (U, 100, C)
    rows[:, :, 1] = torch.from_numpy(items)
    rows[:, :, 5:] = genres[torch.from_numpy(items)]
    with torch.no_grad():
        scores = model(rows.flatten(0, 1))[:, 0].view(len(users), -1)  # (U, 100)
    counts = torch.bincount(ds.x_train[:, 1], minlength=num_items).double()
    pop = counts[torch.from_numpy(items)]  # (U, 100)
    return {"model": hit_ratio_ndcg(scores[:, 0], scores[:, 1:], 10),
            "popularity": hit_ratio_ndcg(pop[:, 0], pop[:, 1:], 10),
            "train_seconds": round(seconds, 1), "train_rmse_split_test_rmse": summary.get("test_rmse"),
            "protocol": "latest rating >= 4 per user held out; 99 unrated items sampled (seed 0); the model "
                        "trained on the remaining ratings as regression (MSE) and ranks by predicted rating"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--extra", nargs="*", default=[], help="overrides for the layerwise recipe")
    ap.add_argument("--recipe", default=str(REPO / "recipes" / "movielens.yaml"))
    ap.add_argument("--out", default="")
    args, rest = ap.parse_known_args()
    args.extra += rest  # --extra --train.epochs=5: argparse hands the --key=value items back here
    from layerwise.config import apply_overrides, load_config
    from layerwise.data import load_dataset
    from layerwise.train.trainer import fit

    torch.set_num_threads(2)
    cfg = load_config(args.recipe, [f"--data.root={args.data_root}", *args.extra])
    rows = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for fold in range(5):
            c = apply_overrides(cfg, ["--data.folds=5", f"--data.fold={fold}", f"--run.dir={Path(tmp) / f'fold{fold}'}"])
            ds = load_dataset("movielens", args.data_root, c.data)
            base = biases_baseline(ds.x_train, ds.y_train, ds.x_test, ds.y_test)
            t0 = time.perf_counter()
            s = fit(c, show_progress=False)
            rows.append({"fold": f"u{fold + 1}", "model_rmse": s["test_rmse"], "baseline_rmse": base,
                         "train_seconds": round(time.perf_counter() - t0, 1)})
            print(f"u{fold + 1}: {cfg.model.name} RMSE {s['test_rmse']:.4f}   mu+b_u+b_i {base:.4f}   "
                  f"({rows[-1]['train_seconds']} s)", flush=True)
        imp = implicit(cfg, args.data_root, Path(tmp))
    mean = statistics.mean(r["model_rmse"] for r in rows)
    base = statistics.mean(r["baseline_rmse"] for r in rows)
    print(f"mean over u1..u5: {cfg.model.name} RMSE {mean:.4f} (std {statistics.stdev(r['model_rmse'] for r in rows):.4f})"
          f"   mu+b_u+b_i {base:.4f}   ratio {mean / base:.3f}")
    print(f"implicit (leave-one-out, 99 negatives): {cfg.model.name} HR@10 {imp['model']['hr']:.4f} NDCG@10 "
          f"{imp['model']['ndcg']:.4f}   popularity HR@10 {imp['popularity']['hr']:.4f} NDCG@10 "
          f"{imp['popularity']['ndcg']:.4f}")
    result = {"benchmark": "movielens", "recipe": str(Path(args.recipe).relative_to(REPO)), "extra": args.extra,
              "model": cfg.model.name, "folds": rows, "mean_rmse": mean, "baseline_mean_rmse": base,
              "implicit": imp, "wall_seconds": round(time.perf_counter() - t_all, 1), "env": environment()}
    out = Path(args.out or REPO / "benchmarks" / "results" / f"movielens_{time.strftime('%Y-%m-%d')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
