"""Sentence polarity (MR, Pang & Lee 2005) by 10-fold cross-validation: ``recipes/movie-reviews.yaml``
through ``layerwise cv`` beside a TF-IDF + logistic-regression baseline (scikit-learn: word
unigrams and bigrams, sublinear tf, C=10) on exactly the same folds, in the same run.

    python benchmarks/movie_reviews.py --data-root DIR [--folds 10] [--extra --model.name=...] [--out FILE.json]

The folds are layerwise's own (``data.folds``: stratified, seed 0), read back through the same
functions the dataset uses, so both contestants see identical train/test parts.
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


def tfidf_baseline(root: str, folds: int) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from layerwise.config import load_config
    from layerwise.data.textclass import read_text_classes, split_text_classes

    cfg = load_config(REPO / "recipes" / "movie-reviews.yaml", [f"--data.root={root}"])
    texts, labels, n_train, _ = read_text_classes(Path(root) / cfg.data.path, cfg.data)
    x, y = np.array(texts, dtype=object), np.array(labels)
    accs, t0 = [], time.perf_counter()
    for i in range(folds):
        opts = load_config(REPO / "recipes" / "movie-reviews.yaml", [f"--data.folds={folds}", f"--data.fold={i}"]).data
        tr, te, _ = split_text_classes(labels, n_train, opts)
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        clf = LogisticRegression(C=10, max_iter=2000).fit(vec.fit_transform(x[tr]), y[tr])
        accs.append(float((clf.predict(vec.transform(x[te])) == y[te]).mean()))
    return {"accuracy_mean": statistics.fmean(accs), "accuracy_std": statistics.stdev(accs), "per_fold": accs,
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--extra", nargs="*", default=[], help="overrides for the layerwise recipe")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    import layerwise

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cv = layerwise.cross_validate(REPO / "recipes" / "movie-reviews.yaml", f"--data.root={args.data_root}",
                                      "--run.plots=false", "--run.tensorboard=false", *args.extra, folds=args.folds,
                                      out=Path(tmp) / "cv")
        wall = time.perf_counter() - t0
    base = tfidf_baseline(args.data_root, args.folds)
    res = {"benchmark": "movie_reviews", "folds": args.folds, "recipe_overrides": args.extra,
           "layerwise": {"accuracy_mean": cv["cv_accuracy_mean"], "accuracy_std": cv["cv_accuracy_std"],
                         "per_fold": [f["test_accuracy"] for f in cv["per_fold"]],
                         "train_seconds": cv["train_seconds_total"], "wall_seconds": round(wall, 1)},
           "tfidf_logreg": base, "difference_points": round(100 * (cv["cv_accuracy_mean"] - base["accuracy_mean"]), 2),
           "published": {"Kim 2014 CNN-rand": 0.761, "Kim 2014 CNN-static (word2vec)": 0.810,
                         "Wang & Manning 2012 NBSVM-bi": 0.794},
           "target": ">= 0.780 mean over 10 folds in <= 900 s on 2 cores", "env": environment()}
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
