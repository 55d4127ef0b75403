"""Every task through the one Trainer: regression, multi-label, text classes and cross-validation,
with exact gradient accumulation, exact epoch metrics, predict and resume per task."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from layerwise.config import load_config
from layerwise.train.trainer import Trainer

Q = ["--run.plots=false", "--run.tensorboard=false"]


def lw(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerwise", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def _trainer(tmp_path, *args: str) -> Trainer:
    return Trainer(load_config(None, [f"--run.root={tmp_path / 'runs'}", *Q, *args]), show_progress=False)


def _weights(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in t.model.state_dict().items()}


# ------------------------------------------------------------------------------------------ regression
def test_regression_trains_predicts_in_units_and_evaluates_again(tmp_path):
    t = _trainer(tmp_path, "--data.name=diabetes", "--model.name=mlp", "--model.width=64", "--train.epochs=40")
    s = t.fit()
    assert s["task"] == "regress" and s["headline"] == "test_rmse" and list(s)[0] == "test_rmse"
    y = torch.cat([t.train_loader.y, t.test_loader.y]).double()
    assert s["test_rmse"] < 0.85 * float(y.std()) and s["test_r2"] > 0.3  # well beyond predicting the mean
    assert s["test_mae"] < s["test_rmse"]
    from layerwise.train.inference import evaluate_run

    again = evaluate_run(s["run_dir"])
    assert again["test_rmse"] == pytest.approx(s["test_rmse"], rel=1e-6) and list(again)[0] == "test_rmse"
    # predict: rows of the table's columns -> the target in its own units
    import sklearn.datasets as skd
    d = skd.load_diabetes()
    rows = "\n".join([",".join(d.feature_names)] + [",".join(map(str, r)) for r in d.data[:3]])
    (tmp_path / "rows.csv").write_text(rows + "\n")
    out = lw("predict", s["run_dir"], str(tmp_path / "rows.csv"), "--json")
    assert out.returncode == 0, out.stderr
    values = [r["values"]["target"] for r in json.loads(out.stdout)]
    assert len(values) == 3 and all(25 < v < 346 for v in values)  # the target's range, not standardized


def test_gradient_accumulation_is_exact_for_regression(tmp_path):
    args = ("--data.name=diabetes", "--model.name=mlp", "--model.width=32", "--data.batch_size=60", "--train.max_steps=8")
    a = _trainer(tmp_path, *args, "--train.grad_accum=1")
    b = _trainer(tmp_path, *args, "--train.grad_accum=3")
    a.fit(), b.fit()
    wa, wb = _weights(a), _weights(b)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-6


def test_gradient_accumulation_is_exact_for_a_language_model_with_uneven_micro_batches(tmp_path):
    # 2000 characters, 16-token windows: 123 windows a shuffled epoch, so with batches of 8 the last
    # step holds 3 windows; split into micro-batches of 4 it is one micro-batch of 3 windows (48
    # tokens) where the others hold 64: the loss is summed and divided once by the step's tokens
    text = "".join(chr(97 + (i * 7 + i // 13) % 26) for i in range(2000))
    (tmp_path / "t.txt").write_text(text)
    args = ("--data.name=text", f"--data.path={tmp_path / 't.txt'}", "--data.tokenizer=char", "--data.block_size=16",
            "--data.val_fraction=0.05", "--model.name=gpt", "--model.n_layer=1", "--model.n_head=2",
            "--model.n_embd=16", "--data.batch_size=8", "--train.epochs=1", "--optim.name=sgd", "--optim.lr=0.5")
    a = _trainer(tmp_path, *args, "--train.grad_accum=1")
    b = _trainer(tmp_path, *args, "--train.grad_accum=2")
    assert a.train_loader.num_examples % 8 not in (0, 4)  # a short, uneven last step
    a.fit(), b.fit()
    wa, wb = _weights(a), _weights(b)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-6


def test_an_epoch_metric_is_the_example_weighted_mean(tmp_path):
    # no learning to speak of, no batch statistics, no dropout: every example's loss is the same in
    # the training pass and in an evaluation of the training split, so the logged epoch mean must
    # equal the evaluation's, although the epoch ends with a short batch (1437 = 22 x 64 + 29)
    t = _trainer(tmp_path, "--model.name=mlp", "--model.width=16", "--optim.name=sgd", "--optim.lr=1e-12",
                 "--optim.momentum=0", "--optim.nesterov=false", "--train.epochs=1", "--train.log_every=1000", "--data.batch_size=64")
    t.fit()
    logged = [r for r in t.log.records if r["kind"] == "train"][-1]
    whole = t.evaluate(split="train")
    assert logged["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert logged["accuracy"] == pytest.approx(whole["accuracy"], abs=1e-12)
    # the test split at batch sizes that do and do not divide it: the same numbers
    from layerwise.train.evaluation import evaluate_loader
    for bs in (7, 360):
        m = evaluate_loader(t.model, t.test_loader.evaluation_view(bs), t.task, t.device)
        assert m["loss"] == pytest.approx(t.evaluate()["loss"], rel=1e-6)  # float32 sums within a batch


# ------------------------------------------------------------------------------------------ multilabel
def _multilabel_csv(path: Path, n: int = 600) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4))
    lines = ["a,b,c,d,tags"]
    for row in x:
        tags = [name for name, on in (("warm", row[0] > 0), ("big", row[1] + row[2] > 0), ("odd", row[3] > 0.5)) if on]
        lines.append(",".join(f"{v:.4f}" for v in row) + "," + "|".join(tags))
    path.write_text("\n".join(lines) + "\n")


def test_multilabel_trains_and_predicts_labels(tmp_path):
    _multilabel_csv(tmp_path / "m.csv")
    t = _trainer(tmp_path, "--data.name=csv", f"--data.path={tmp_path / 'm.csv'}", "--data.label_sep=|",
                 "--data.on_error=skip", "--model.name=mlp", "--model.width=64", "--train.epochs=30")
    s = t.fit()
    assert s["task"] == "multilabel" and s["headline"] == "test_micro_f1"
    assert s["test_micro_f1"] > 0.9 and s["test_map"] > 0.9 and 0 <= s["test_exact_match"] <= 1
    (tmp_path / "new.csv").write_text("a,b,c,d\n1.5,1.0,1.0,2.0\n-1.0,-1.0,-1.0,0.0\n")
    out = lw("predict", s["run_dir"], str(tmp_path / "new.csv"))
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert all(tag in first for tag in ("warm", "big", "odd")) and "(no label over the threshold" in second


# ---------------------------------------------------------------------------------------- text classes
def _sentences(root: Path, n: int = 200) -> Path:
    """Two classes of short synthetic sentences told apart by their words, one per line per file."""
    rng = np.random.default_rng(0)
    good, bad, filler = ["great", "lovely", "superb", "fine"], ["awful", "dull", "poor", "weak"], ["the", "a", "film", "plot",
                                                                                                 "was", "and", "very"]
    (root / "mr").mkdir()
    for name, words in (("reviews.pos", good), ("reviews.neg", bad)):
        lines = [" ".join(rng.choice(filler, 5).tolist() + [rng.choice(words)] + rng.choice(filler, 3).tolist())
                 for _ in range(n)]
        (root / "mr" / name).write_text("\n".join(lines) + "\n")
    return root / "mr"


@pytest.mark.parametrize("model", ["ngram-bag", "text-transformer"])
def test_text_classes_train_and_predict(tmp_path, model):
    path = _sentences(tmp_path)
    extra = ["--model.n_layer=1", "--model.n_embd=32"] if model == "text-transformer" else []
    t = _trainer(tmp_path, "--data.name=text-classes", f"--data.path={path}", "--data.tokenizer=word",
                 "--data.vocab_size=100", "--data.block_size=32", f"--model.name={model}", *extra, "--train.epochs=8",
                 "--data.batch_size=16", "--optim.lr=0.01")
    s = t.fit()
    assert t.info.classes == ["neg", "pos"] and s["test_accuracy"] >= 0.95
    (tmp_path / "new.txt").write_text("the plot was superb\nthe film was awful and dull\n")
    out = lw("predict", s["run_dir"], str(tmp_path / "new.txt"), "--top-k", "1")
    assert out.returncode == 0, out.stderr
    assert [line.split(": ")[1].split(" ")[0] for line in out.stdout.strip().splitlines()] == ["pos", "neg"]


def test_text_classes_read_every_layout(tmp_path):
    from layerwise.config import DataConfig
    from layerwise.data import load_dataset

    for c, words in (("sports", "ball goal team"), ("news", "vote law court")):
        (tmp_path / "folders" / c).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "folders" / c / f"{i}.txt").write_text(f"{words} number {i}\r\n")
    ds = load_dataset("text-classes", tmp_path, DataConfig(name="text-classes", path="folders", tokenizer="word"))
    assert ds.info.classes == ["news", "sports"] and len(ds.y_train) + len(ds.y_test) == 12
    (tmp_path / "t.csv").write_text("label,text\n" + "".join(f"{'x' if i % 2 else 'y'},\"some words, {i}\"\n"
                                                              for i in range(20)))
    ds = load_dataset("text-classes", tmp_path, DataConfig(name="text-classes", path="t.csv", tokenizer="word",
                                                          target=["label"]))
    assert ds.info.classes == ["x", "y"] and ds.info.extra["text"]["vocab_size"] >= 5
    # ids are the tokenizer's plus one: 0 pads
    assert int(ds.x_train.ids.min()) >= 1


# ---------------------------------------------------------------------------------------- cross-validation
def test_cross_validation_runs_every_fold_and_resumes(tmp_path):
    args = ["cv", "--data.name=breast-cancer", "--model.name=mlp", "--model.width=32", "--train.epochs=8", *Q,
            "--folds", "3", "--dir", str(tmp_path / "cv")]
    out = lw(*args)
    assert out.returncode == 0, out.stderr
    cv = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert cv["folds"] == 3 and cv["headline"] == "cv_accuracy_mean" and len(cv["per_fold"]) == 3
    accs = [f["test_accuracy"] for f in cv["per_fold"]]
    assert cv["cv_accuracy_mean"] == pytest.approx(sum(accs) / 3)
    assert cv["cv_accuracy_std"] == pytest.approx(float(np.std(accs, ddof=1)))
    assert cv["cv_accuracy_mean"] > 0.9
    tests = sum(json.loads((tmp_path / "cv" / f"fold{i}" / "env.json").read_text())["data"]["test"] for i in range(3))
    assert tests == 569  # the folds partition the data
    (tmp_path / "cv" / "fold2" / "summary.json").unlink()  # as if the last fold had been cut off
    again = lw(*args)
    assert again.returncode == 0 and again.stdout.count("done earlier") == 2, again.stdout


# ---------------------------------------------------------------------------------------- resume
def test_sigkill_resume_is_bit_identical_for_regression(tmp_path):
    import os
    import random
    import signal
    import time

    from safetensors.torch import load_file

    args = ["train", "--data.name=diabetes", "--model.name=mlp", "--model.width=64", "--model.dropout=0.1",
            "--data.batch_size=16", "--train.epochs=30", "--train.ema_decay=0.9", "--train.threads=1",
            "--run.checkpoint_every=5", "--run.keep_checkpoints=2", *Q, "--quiet"]
    ref = tmp_path / "ref"
    assert lw(*args, f"--run.dir={ref}").returncode == 0
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "layerwise", *args, f"--run.dir={run}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = random.Random(os.getpid()).randint(20, 300)
    deadline = time.time() + 120

    def newest() -> int:
        steps = [0]
        for p in (run / "checkpoints").glob("step_*.json"):
            try:
                steps.append(json.loads(p.read_text())["step"])
            except (OSError, ValueError):
                pass
        return max(steps)
    while newest() < target and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists()
    out = lw("train", "--resume", str(run), "--quiet")
    assert out.returncode == 0, out.stderr
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert json.loads((run / "summary.json").read_text())["test_rmse"] == \
        json.loads((ref / "summary.json").read_text())["test_rmse"]


# ---------------------------------------------------------------------------------------- bad input
def test_task_settings_that_do_not_fit_are_refused(tmp_path):
    out = lw("train", "--task.loss=huber", "--train.max_steps=1", *Q, f"--run.dir={tmp_path / 'a'}")
    assert out.returncode == 2 and "task.loss=huber does not fit the task 'classify'" in out.stderr
    assert not (tmp_path / "a").exists()
    _multilabel_csv(tmp_path / "m.csv", 30)
    out = lw("train", "--data.name=csv", f"--data.path={tmp_path / 'm.csv'}", "--data.task=regress",
             "--data.on_error=skip", "--train.max_steps=1", *Q, f"--run.dir={tmp_path / 'b'}")
    assert out.returncode == 1 and "'warm|big' is not a number, and data.task=regress" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "b").exists()
    out = lw("train", "--data.name=diabetes", "--data.mixup=0.2", "--train.max_steps=1", *Q, f"--run.dir={tmp_path / 'c'}")
    assert out.returncode == 2 and "Traceback" not in out.stderr and not (tmp_path / "c").exists()
    assert math.isfinite(1.0)


def test_an_ensemble_trains_each_member_and_its_model_file_predicts_their_mean(tmp_path):
    args = ("--data.name=diabetes", "--model.name=mlp", "--model.width=32", "--train.epochs=20")
    t = _trainer(tmp_path, *args, "--model.ensemble=4")
    s = t.fit()
    assert t.model.num_members == 4 and s["params"] == 4 * _trainer(tmp_path, *args).model.num_params()
    y = torch.cat([t.train_loader.y, t.test_loader.y]).double()
    assert s["test_rmse"] < 0.85 * float(y.std())
    members = [m for m in t.model.members]  # no two members alike: each learned from its own loss
    assert not torch.allclose(members[0].fc.weight, members[1].fc.weight)
    from layerwise.train.inference import evaluate_run

    assert evaluate_run(s["run_dir"])["test_rmse"] == pytest.approx(s["test_rmse"], rel=1e-6)
