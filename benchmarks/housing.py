"""California housing (Pace & Barry 1997, Geron's copy with missing values and a text column):
``recipes/housing.yaml`` beside scikit-learn's HistGradientBoostingRegressor (default settings)
and the training mean, on exactly the same 80/20 split, in the same run. Tabular data is where
gradient-boosted trees usually beat neural networks; the gap is printed as a ratio.

    python benchmarks/housing.py --data-root DIR [--extra=--key=value ...] [--seeds 1] [--out FILE.json]
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


def baselines(root: str, cfg) -> dict:
    """HistGradientBoostingRegressor and the training mean on layerwise's split of the same rows."""
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingRegressor

    from layerwise.data.datasets import holdout_split
    from layerwise.data.tabular import read_table

    target = cfg.data.target[0]
    table = read_table(Path(root) / cfg.data.path, cfg.data, text_columns=[target])
    df = table.df
    y = pd.to_numeric(df.pop(target)).to_numpy(np.float64)
    tr, te, how = holdout_split(None, cfg.data, len(df))
    x = pd.get_dummies(df, columns=[c for c in df.columns if df[c].dtype == object or str(df[c].dtype) == "str"
                                    or pd.api.types.is_string_dtype(df[c])]).astype(float)
    t0 = time.perf_counter()
    hgb = HistGradientBoostingRegressor(random_state=0).fit(x.iloc[tr], y[tr])  # NaN handled natively
    rmse = float(np.sqrt(np.mean((hgb.predict(x.iloc[te]) - y[te]) ** 2)))
    mean_rmse = float(np.sqrt(np.mean((y[tr].mean() - y[te]) ** 2)))
    return {"split": how, "train": len(tr), "test": len(te), "hgb_rmse": rmse,
            "hgb_seconds": round(time.perf_counter() - t0, 2), "train_mean_rmse": mean_rmse}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--extra", nargs="*", action="extend", default=[],
                    help="overrides for the layerwise recipe, one per --extra=--section.key=value (repeatable)")
    ap.add_argument("--seeds", type=int, default=1, help="train the recipe with seeds 0..K-1")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    import layerwise
    from layerwise.config import load_config

    recipe = REPO / "recipes" / "housing.yaml"
    cfg = load_config(recipe, [f"--data.root={args.data_root}", *args.extra])
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            s = layerwise.fit(recipe, f"--data.root={args.data_root}", "--run.plots=false", "--run.tensorboard=false",
                              f"--train.seed={seed}", *args.extra, run_dir=Path(tmp) / f"s{seed}", show_progress=False)
            runs.append({"seed": seed, "test_rmse": s["test_rmse"], "test_mae": s["test_mae"], "test_r2": s["test_r2"],
                         "train_seconds": s["train_seconds"], "wall_seconds": round(time.perf_counter() - t0, 1)})
    base = baselines(args.data_root, cfg)
    ours = statistics.fmean(r["test_rmse"] for r in runs)
    res = {"benchmark": "housing", "recipe_overrides": args.extra, "layerwise": runs, "layerwise_rmse_mean": ours,
           **base, "ratio_to_hgb": round(ours / base["hgb_rmse"], 4),
           "targets": "test RMSE <= 50,000 USD and within 5% of HistGradientBoostingRegressor (ratio <= 1.05)",
           "env": environment()}
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
