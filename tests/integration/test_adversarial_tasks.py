"""Tasks as a new user breaks them (found by trying): a model that cannot take the data, a
multi-label threshold that predict must keep, cross-validation where it cannot apply or a --dir
that holds another run, data changed under a resumed run, predict on a text file, and a log
target transform with test targets <= 0. Each is a clear error before any file is written, or a
right value."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from layerwise.config import ConfigError, load_config
from layerwise.train.trainer import Trainer, resume

Q = ["--run.plots=false", "--run.tensorboard=false"]


def lw(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerwise", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def _cfg(tmp_path, *args: str):
    return load_config(None, [f"--run.root={tmp_path / 'runs'}", *Q, *args])


def _lines(path: Path, n: int = 60) -> Path:
    """Two classes of sentences, one file per class, one example per line."""
    path.mkdir()
    for c, w in (("pos", "good"), ("neg", "bad")):
        (path / f"r.{c}").write_text("\n".join(f"the film {i} was {w}" for i in range(n)) + "\n")
    return path


def test_a_model_that_cannot_take_the_data_is_refused_before_a_run_dir_exists(tmp_path):
    data = _lines(tmp_path / "mr")
    out = lw("train", "--data.name=text-classes", f"--data.path={data}", "--data.tokenizer=word", "--model.name=mlp",
             f"--run.root={tmp_path / 'runs'}", *Q)
    assert out.returncode == 2, out.stderr
    assert "model 'mlp' cannot take the inputs of dataset 'text-classes' (token ids" in out.stderr
    assert "ngram-bag" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()
    # a model whose data initialization fails on this data (autorec reads a ratings matrix): the same error
    with pytest.raises(ConfigError, match="model 'autorec' cannot take the inputs of dataset 'diabetes'"):
        Trainer(_cfg(tmp_path, "--data.name=diabetes", "--model.name=autorec"), show_progress=False)
    assert not (tmp_path / "runs").exists()


def test_predict_keeps_the_multilabel_threshold_of_training(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    rows = ["a,b,c,tags"] + [f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f}," + "|".join(
        t for t, on in (("warm", r[0] > 0), ("big", r[1] > 0)) if on) for r in x]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    cfg = _cfg(tmp_path, "--data.name=csv", f"--data.path={tmp_path / 'm.csv'}", "--data.label_sep=|",
               "--model.name=mlp", "--model.width=32", "--train.epochs=10", "--task.threshold=0.9")
    s = Trainer(cfg, show_progress=False).fit()
    (tmp_path / "new.csv").write_text("a,b,c\n" + "\n".join(f"{0.05 * i:.2f},0,0" for i in range(-20, 21)) + "\n")
    out = lw("predict", s["run_dir"], str(tmp_path / "new.csv"), "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert len(results) == 41
    for r in results:  # a label is given exactly when its probability reaches 0.9, not 0.5
        assert sorted(r["labels"]) == sorted(k for k, p in r["probabilities"].items() if p >= 0.9), r
    assert any(0.5 <= p < 0.9 for r in results for p in r["probabilities"].values())  # the case that differs


def test_cross_validation_where_it_cannot_apply_leaves_nothing_behind(tmp_path):
    from layerwise.train.crossval import cross_validate

    out = tmp_path / "cv"
    with pytest.raises(ConfigError, match="'digits' has its own test split"):
        cross_validate(None, "--data.name=digits", "--model.name=mlp", *Q, folds=3, out=out)
    assert not out.exists()
    r = lw("cv", "--data.name=digits", "--model.name=mlp", "--folds", "3", "--dir", str(out), *Q)
    assert r.returncode == 2 and "own test split" in r.stderr and not out.exists()


def test_cross_validation_names_what_differs_in_a_dir_of_another_run_and_quiet_prints_the_table(tmp_path):
    base = ["--data.name=breast-cancer", "--model.name=mlp", "--model.width=16", "--train.epochs=1", *Q]
    out = tmp_path / "cv"
    r = lw("cv", *base, "--folds", "2", "--dir", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "fold 0" not in r.stdout and "2-fold cross-validation" in r.stdout and "cv_accuracy_mean" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["cv_summary.json", "fold0", "fold1"]
    r = lw("cv", *base, "--optim.lr=0.123", "--folds", "2", "--dir", str(out))
    assert r.returncode == 2 and "holds a finished run with another config" in r.stderr
    assert "optim.lr:" in r.stderr and "-> 0.123" in r.stderr
    assert (out / "fold0" / "summary.json").is_file()  # the earlier results are kept


def test_resume_refuses_data_that_changed_since_the_checkpoint(tmp_path):
    data = _lines(tmp_path / "mr")
    cfg = _cfg(tmp_path, "--data.name=text-classes", f"--data.path={data}", "--data.tokenizer=word",
               "--model.name=ngram-bag", "--train.max_steps=4", "--run.checkpoint_every=2")
    run = Path(Trainer(cfg, show_progress=False).fit()["run_dir"])
    (run / "summary.json").unlink()  # as if killed after its last checkpoint
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept
    (data / "r.pos").write_text("\n".join(f"the movie {i} was great" for i in range(60)) + "\n")
    with pytest.raises(ConfigError, match="the data changed since checkpoint"):
        resume(run, show_progress=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == kept  # nothing destroyed


def test_predict_on_a_text_file_names_lines_and_warns_of_cut_lines(tmp_path):
    data = _lines(tmp_path / "mr")
    cfg = _cfg(tmp_path, "--data.name=text-classes", f"--data.path={data}", "--data.tokenizer=word",
               "--data.block_size=8", "--model.name=ngram-bag", "--train.epochs=3")
    s = Trainer(cfg, show_progress=False).fit()
    (tmp_path / "new.txt").write_text("the film was good\n\n" + "the film was bad " * 5 + "\n")
    r = lw("predict", s["run_dir"], str(tmp_path / "new.txt"), "--json")
    assert r.returncode == 0, r.stderr
    names = [x["input"] for x in json.loads(r.stdout)]
    assert names == [f"{tmp_path / 'new.txt'}:1", f"{tmp_path / 'new.txt'}:3"]  # the blank line 2 is no example
    assert "1 line(s) (first: line 3) are longer than the 8 tokens" in r.stderr
    r = lw("predict", s["run_dir"], str(tmp_path / "new.txt"), "--top-k", "0")
    assert r.returncode == 2 and "--top-k must be >= 1, got 0" in r.stderr  # not silently the default
    r = lw("predict", s["run_dir"], str(tmp_path / "missing.txt"))
    assert r.returncode != 0 and "does not exist" in r.stderr and "text file of one example per line" in r.stderr


def test_a_log_target_transform_warns_of_test_targets_without_a_log(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 2, size=200)
    y = np.exp(x)
    y[-30:] = 0.0  # in test.csv: targets with no log
    (tmp_path / "t").mkdir()
    rows = [f"{a:.4f},{b:.4f}" for a, b in zip(x, y, strict=True)]
    (tmp_path / "t" / "train.csv").write_text("x,y\n" + "\n".join(rows[:150]) + "\n")
    (tmp_path / "t" / "test.csv").write_text("x,y\n" + "\n".join(rows[150:]) + "\n")
    cfg = _cfg(tmp_path, "--data.name=csv", f"--data.path={tmp_path / 't'}", "--data.task=regress",
               "--task.target_transform=log", "--model.name=mlp", "--train.max_steps=2")
    with pytest.warns(UserWarning, match="target_transform=log: 30 of 50 evaluated examples have a target <= 0"):
        Trainer(cfg, show_progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none without the transform
        Trainer(_cfg(tmp_path, "--data.name=csv", f"--data.path={tmp_path / 't'}", "--data.task=regress",
                     "--model.name=mlp", "--train.max_steps=2"), show_progress=False)
