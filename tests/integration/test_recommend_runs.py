"""mf and autorec (the recipe's model) trained for seconds on synthetic low-rank ratings in
GroupLens' layout: the loss falls, the RMSE beats the global-mean-plus-biases baseline, and
`predict --user` lists titles (CLI)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from layerwise.config import load_config
from layerwise.train.trainer import fit

REPO = Path(__file__).resolve().parents[2]


def _write(root: Path, n_users=60, n_items=50, seed=0):
    d = root / "movielens" / "ml-100k"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(size=(n_users, 3)), rng.normal(size=(n_items, 3))
    bu, bi = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_items)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, 30, replace=False):
            r = np.clip(np.rint(3 + bu[u] + bi[i] + 0.6 * P[u] @ Q[i]), 1, 5)
            rows.append(f"{u + 1}\t{i + 1}\t{int(r)}\t{int(rng.integers(8e8, 9e8))}\n")
    rng.shuffle(rows)
    (d / "u.data").write_text("".join(rows))
    n = len(rows)
    for f in range(5):
        lo, hi = f * n // 5, (f + 1) * n // 5
        (d / f"u{f + 1}.test").write_text("".join(rows[lo:hi]))
        (d / f"u{f + 1}.base").write_text("".join(rows[:lo] + rows[hi:]))
    flags = "|".join(["0"] * 19)
    (d / "u.item").write_bytes("".join(f"{i}|Film n\xb0{i} (1990)|||x|{flags}\n" for i in range(1, n_items + 1))
                              .encode("latin-1"))
    (d / "u.user").write_text("".join(f"{u}|30|F|artist|1\n" for u in range(1, n_users + 1)))


def _baseline(ds):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from movielens import biases_baseline
    return biases_baseline(ds.x_train, ds.y_train, ds.x_test, ds.y_test)


def test_mf_learns_and_predicts(tmp_path):
    from layerwise.data import load_dataset

    _write(tmp_path / "data")
    cfg = load_config(REPO / "recipes" / "movielens.yaml",
                      [f"--data.root={tmp_path / 'data'}", f"--run.dir={tmp_path / 'run'}", "--data.batch_size=128",
                       "--model.name=mf", "--model.dim=8", "--model.l2=0.05", "--optim.lr=0.02", "--train.epochs=30"])
    s = fit(cfg, show_progress=False)
    ds = load_dataset("movielens", tmp_path / "data", cfg.data)
    base = _baseline(ds)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if x.get("kind") == "train"]
    assert losses[-1] < 0.7 * losses[0]
    assert s["test_rmse"] < 0.97 * base, (s["test_rmse"], base)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, "-m", "layerwise", "predict", str(tmp_path / "run"), "--user", "7", "--top-k", "3", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    items = json.loads(out.stdout)["items"]
    assert [x["rank"] for x in items] == [1, 2, 3] and items[0]["title"].startswith("Film n\xb0")
    assert items[0]["rating"] >= items[1]["rating"] >= items[2]["rating"]
    rated = {int(i) for u, i, *_ in (ln.split("\t") for ln in
             (tmp_path / "data/movielens/ml-100k/u1.base").read_text().splitlines()) if u == "7"}
    assert not rated & {x["item"] for x in items}  # only items the user did not rate in training
    bad = subprocess.run(cmd[:6] + ["9999"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and "user '9999' is not one of the 60 users" in bad.stderr
    assert "Traceback" not in bad.stderr
    zero = subprocess.run(cmd[:8] + ["0"], capture_output=True, text=True, env=env, timeout=120)
    assert zero.returncode == 2 and "--top-k must be >= 1, got 0" in zero.stderr  # not silently 10
    (tmp_path / "rows.csv").write_text("user,item\n7,1\n")
    files = subprocess.run(cmd[:5] + [str(tmp_path / "rows.csv")], capture_output=True, text=True, env=env,
                           timeout=120)
    assert files.returncode == 1 and "--user ID" in files.stderr and "Traceback" not in files.stderr


def test_autorec_recipe_learns_and_predicts_from_its_saved_ratings(tmp_path):
    """The recipe's model as it stands (autorec), shortened: it beats the baseline, and `predict`
    rebuilds it from model.safetensors, rating vectors included."""
    from layerwise.data import load_dataset

    _write(tmp_path / "data")
    cfg = load_config(REPO / "recipes" / "movielens.yaml",
                      [f"--data.root={tmp_path / 'data'}", f"--run.dir={tmp_path / 'run'}", "--data.batch_size=64",
                       "--model.hidden=32", "--model.l2=1.0", "--optim.lr=0.01", "--train.epochs=20"])
    assert cfg.model.name == "autorec"
    s = fit(cfg, show_progress=False)
    base = _baseline(load_dataset("movielens", tmp_path / "data", cfg.data))
    assert s["test_rmse"] < 0.97 * base, (s["test_rmse"], base)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, "-m", "layerwise", "predict", str(tmp_path / "run"), "--user", "7", "--top-k", "3", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["items"]) == 3
