"""One Trainer, every modality: text, audio, images, tabular, image folders, each trained briefly on
its (real, where there is one) data to a loss or accuracy bound measured beforehand; plus
`layerwise generate` and exact resume for a language model, through the command line."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import require_data
from safetensors.torch import load_file

import layerwise
from layerwise.config import load_config
from layerwise.train.run import load_model
from layerwise.train.trainer import Trainer

QUIET = ("--run.plots=false", "--run.tensorboard=false")


def _fit(run_dir: Path, *overrides: str) -> dict:
    return layerwise.fit(None, *overrides, *QUIET, run_dir=run_dir, show_progress=False)


def lw(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerwise", *args], check=False, capture_output=True, text=True,
                          timeout=timeout)


def _records(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


# ------------------------------------------------------------------------------------------- text
# nanoGPT's CPU run shape (4 layers, 4 heads, 128 wide, context 64, batch 12), char tokenizer
LM = ["--data.name=shakespeare", "--data.tokenizer=char", "--data.block_size=64", "--data.batch_size=12",
      "--model.name=gpt", "--model.n_layer=4", "--model.n_head=4", "--model.n_embd=128", "--model.bias=false",
      "--optim.lr=0.003", "--optim.betas=[0.9,0.99]", "--optim.schedule=cosine", "--optim.warmup_steps=10",
      "--optim.min_lr_ratio=0.1", "--optim.clip_grad_norm=1.0", "--train.max_steps=100",
      "--train.eval_every=0", "--train.log_every=10"]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> tuple[Path, dict]:
    """A finished ~100-step character-level GPT run on Tiny Shakespeare."""
    root = require_data("tinyshakespeare/input.txt")
    run_dir = tmp_path_factory.mktemp("lm") / "run"
    return run_dir, _fit(run_dir, f"--data.root={root}", *LM)


def test_text_gpt_learns_shakespeare(lm_run):
    run_dir, summary = lm_run
    assert summary["steps"] == 100 and summary["examples_seen"] == 100 * 12 * 64  # tokens
    # an untrained model scores ln(65) = 4.17 per character on the held-out last 10%
    assert summary["test_loss"] < 2.7, summary  # measured 2.526 (seed 0)
    train = _records(run_dir, "train")
    assert train[0]["step"] == 10 and train[0]["loss"] > 3.3, train[0]  # steps 1-10: measured 3.68
    assert train[-1]["loss"] < train[0]["loss"] - 1.0
    tok = json.loads((run_dir / "tokenizer.json").read_text())
    assert tok["kind"] == "char" and len(tok["chars"]) == 65


# --------------------------------------------------------------------------------------- generate
def _generated(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("\n")
    return out.stdout[:-1]  # print's newline


def test_generate_prints_prompt_and_n_new_characters_repeatably(lm_run):
    run_dir, _ = lm_run
    chars = set(json.loads((run_dir / "tokenizer.json").read_text())["chars"])
    args = ("generate", str(run_dir), "--prompt", "ROMEO:", "--tokens", "57", "--device", "cpu")
    first = _generated(lw(*args, "--seed", "1"))
    assert first.startswith("ROMEO:") and len(first) == len("ROMEO:") + 57, repr(first)
    assert set(first) <= chars
    assert _generated(lw(*args, "--seed", "1")) == first  # same seed, same text
    assert _generated(lw(*args, "--seed", "2")) != first


def test_generate_refuses_a_character_outside_the_vocabulary(lm_run):
    run_dir, _ = lm_run
    out = lw("generate", str(run_dir), "--prompt", "To be@", "--tokens", "5", "--device", "cpu")
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "'@'" in out.stderr and "vocabulary" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_generate_on_a_classifier_points_to_predict(tmp_path):
    run_dir = tmp_path / "clf"
    _fit(run_dir, "--model.name=mlp", "--model.width=16", "--train.max_steps=2")
    out = lw("generate", str(run_dir), "--tokens", "5", "--device", "cpu")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "language model" in out.stderr and "layerwise predict" in out.stderr, out.stderr


# ----------------------------------------------------------------------------------------- resume
def _lm_resume_args(root: Path, run_dir: Path) -> list[str]:
    # dropout makes the restored RNG state matter, as the loader position and the optimizer do
    return ["train", "--data.name=shakespeare", f"--data.root={root}", "--data.tokenizer=char",
            "--data.block_size=32", "--data.batch_size=8", "--data.val_fraction=0.02", "--model.name=gpt",
            "--model.n_layer=2", "--model.n_head=2", "--model.n_embd=32", "--model.dropout=0.1",
            "--optim.schedule=cosine", "--optim.warmup_steps=5", "--train.max_steps=40",
            "--run.checkpoint_every=20", "--train.threads=1", "--train.eval_every=0", "--train.log_every=5",
            *QUIET, "--quiet", f"--run.dir={run_dir}"]


# Runs the CLI and SIGKILLs the process from inside right after its step-20 checkpoint is on disk:
# the same state an outside `kill -9` at that instant leaves, without the race of polling for it.
_KILL_AFTER_20 = """
import os, signal, sys
from layerwise.train.trainer import Trainer
save = Trainer._save_checkpoint
def save_then_die(self):
    save(self)
    self._ckpt_writer.wait()  # the checkpoint is written beside the loop: on disk now
    if self.step == 20:
        os.kill(os.getpid(), signal.SIGKILL)
Trainer._save_checkpoint = save_then_die
from layerwise.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_language_model_resumes_bit_identically(tmp_path):
    root = require_data("tinyshakespeare/input.txt")
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    out = lw(*_lm_resume_args(root, ref_dir))
    assert out.returncode == 0, out.stderr

    killed = subprocess.run([sys.executable, "-c", _KILL_AFTER_20, *_lm_resume_args(root, run_dir)],
                            check=False, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == \
        ["step_00000020.json", "step_00000020.pt"]
    assert not (run_dir / "model.safetensors").exists() and not (run_dir / "summary.json").exists()

    out = lw("train", "--resume", str(run_dir), "--quiet")
    assert out.returncode == 0, out.stderr
    ref, got = load_file(str(ref_dir / "model.safetensors")), load_file(str(run_dir / "model.safetensors"))
    assert ref.keys() == got.keys() and len(ref) > 5
    for k in ref:
        assert got[k].equal(ref[k]), f"{k} differs after resume"
    steps = [r["step"] for r in _records(run_dir, "train")]
    assert steps == list(range(5, 41, 5))  # one record per logged step, none repeated
    summaries = [json.loads((d / "summary.json").read_text()) for d in (ref_dir, run_dir)]
    assert summaries[0]["test_loss"] == summaries[1]["test_loss"]


# ------------------------------------------------------------------------------------------ audio
def test_audio_convnet_learns_spoken_digits(tmp_path):
    root = require_data("fsdd/fsdd.npz")
    # 20 mel bands x 0.5 s (51 frames of 10 ms; the median recording lasts 0.42 s) keep it to seconds
    summary = _fit(tmp_path / "run", "--data.name=fsdd", f"--data.root={root}", "--data.n_mels=20",
                   "--data.clip_seconds=0.5", "--model.name=convnet", "--model.widths=[16,32,64]",
                   "--data.batch_size=64", "--optim.lr=0.01", "--train.epochs=2", "--train.eval_every=0")
    assert summary["examples_seen"] == 2 * 2700 and summary["steps"] == 86
    assert summary["test_accuracy"] >= 0.93, summary  # measured 0.990 on the 300 test recordings; chance 0.1


# ----------------------------------------------------------------------------------------- images
def test_mnist_convnet_one_epoch_on_5000_images(tmp_path, data_root):
    summary = _fit(tmp_path / "run", "--data.name=mnist", f"--data.root={data_root}", "--model.name=convnet",
                   "--model.widths=[16,32,64]", "--data.train_subset=5000", "--data.batch_size=64",
                   "--optim.lr=0.01", "--train.epochs=1", "--train.eval_every=0")
    assert summary["examples_seen"] == 5000 and summary["steps"] == 79
    assert summary["test_accuracy"] >= 0.95, summary  # measured 0.9757 on the 10,000 test images


def test_vit_on_digits(tmp_path):
    # 4x4 patches of the 8x8 digits: 4 tokens
    summary = _fit(tmp_path / "run", "--model.name=vit", "--model.patch_h=4", "--model.patch_w=4",
                   "--model.n_layer=2", "--model.n_head=4", "--model.n_embd=64", "--train.epochs=10",
                   "--train.eval_every=0")
    assert summary["steps"] == 230
    assert summary["test_accuracy"] >= 0.93, summary  # measured 0.961 (360 test digits)


def test_mixup_and_cutmix_soft_targets_train(tmp_path, overrides_for):
    mix = ["--model.name=mlp", "--model.width=128", "--data.mixup=0.4", "--data.cutmix=1.0",
           "--train.epochs=10", "--train.eval_every=0", "--train.log_every=5"]
    # the training batches really carry soft targets: (B, 10) probabilities, many of them mixed
    t = Trainer(load_config(None, overrides_for(*mix)), show_progress=False)
    y = torch.cat([y for _, y in itertools.islice(iter(t.train_loader), 10)])  # 10 batches of 64
    assert y.shape == (640, 10) and y.dtype == torch.float32
    torch.testing.assert_close(y.sum(1), torch.ones(640))
    mixed = (y.max(1).values < 0.99).float().mean().item()
    assert mixed > 0.7, mixed  # measured 0.897
    summary = _fit(tmp_path / "run", *mix)
    assert summary["test_accuracy"] >= 0.92, summary  # measured 0.958 (without mixing: 0.972)
    # mixed targets have entropy, so the training loss on them stays well above the clean test loss
    train_loss = np.mean([r["loss"] for r in _records(tmp_path / "run", "train")[-5:]])
    assert train_loss > summary["test_loss"] + 0.4, (train_loss, summary["test_loss"])  # measured 0.91, 0.24

    # the loss the Trainer logs for a step is the cross-entropy against the soft targets: one step
    # from the trained weights, checked against both readings of the batch's targets
    one = Trainer(load_config(None, overrides_for(*mix, "--train.max_steps=1", "--train.log_every=1")),
                  show_progress=False)
    one.model.load_state_dict(load_file(str(tmp_path / "run" / "model.safetensors")))
    x, y = next(iter(one.train_loader))
    one.train_loader.load_state_dict({"epoch": 0, "position": 0})  # the step sees this same batch
    with torch.no_grad():
        soft, hard = (F.cross_entropy(one.model(x), t).item() for t in (y, y.argmax(1)))
    one.fit()
    logged = one.log.records[0]["loss"]
    # measured: logged 1.3261 = soft 1.3261; hard-label reading 0.8609
    assert logged == pytest.approx(soft, rel=1e-5) and abs(logged - hard) > 0.1, (logged, soft, hard)


# ----------------------------------------------------------------------------------------- tabular
def test_csv_with_numeric_and_categorical_columns(tmp_path):
    from sklearn.datasets import load_iris

    iris = load_iris()
    rng = np.random.default_rng(0)
    sites = rng.choice(["north", "south", "east"], len(iris.target))  # made up, uninformative
    lines = ["sepal_length,sepal_width,petal_length,petal_width,site,species"]
    lines += [",".join([*(f"{v:.1f}" for v in row), site, iris.target_names[t]])
              for row, site, t in zip(iris.data, sites, iris.target)]
    (tmp_path / "iris.csv").write_text("\n".join(lines) + "\n")
    summary = _fit(tmp_path / "run", "--data.name=csv", f"--data.path={tmp_path / 'iris.csv'}",
                   "--data.val_fraction=0.3", "--data.batch_size=16", "--model.name=mlp", "--model.depth=1",
                   "--model.width=32", "--optim.lr=0.01", "--train.epochs=30", "--train.eval_every=0")
    # 4 numeric features + 3 one-hot site columns in, 3 species out
    assert summary["params"] == 7 * 32 + 32 + 32 * 3 + 3
    assert summary["test_accuracy"] >= 0.88, summary  # measured 0.933 on the 45 held-out rows; chance 0.33
    assert summary["test_loss"] < 0.3, summary  # measured 0.113; ln 3 = 1.10
    _, meta = load_model(tmp_path / "run")
    assert meta["data"]["classes"] == ["setosa", "versicolor", "virginica"]
    assert meta["data"]["extra"]["table"]["features"][-3:] == ["site=east", "site=north", "site=south"]


# ------------------------------------------------------------------------------------ image-folder
def _stripes(folder: Path, per_class: int = 30, size: int = 16, seed: int = 0) -> None:
    """Grayscale PNGs of horizontal vs vertical stripes (random width and phase) with noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls in ("horizontal", "vertical"):
        (folder / cls).mkdir(parents=True)
        for i in range(per_class):
            period = int(rng.integers(1, 4))  # pixels per stripe
            line = ((np.arange(size) + rng.integers(0, 2 * period)) // period) % 2  # (size,)
            img = np.tile(line[:, None], (1, size)) if cls == "horizontal" else np.tile(line[None, :], (size, 1))
            img = 50 + 150 * img + rng.normal(0, 30, (size, size))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / cls / f"{i:02d}.png")


IMAGE_FOLDER = ["--data.name=image-folder", "--data.val_fraction=0.3", "--data.batch_size=8",
                "--model.name=convnet", "--model.widths=[16,32]", "--train.eval_every=0"]


def test_image_folder_of_stripes(tmp_path):
    _stripes(tmp_path / "stripes")
    summary = _fit(tmp_path / "run", f"--data.path={tmp_path / 'stripes'}", *IMAGE_FOLDER, "--train.epochs=8")
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert (env["data"]["train"], env["data"]["test"]) == (42, 18)
    assert summary["test_accuracy"] > 0.9, summary  # measured 1.0


# regression: grayscale images decoded per item came as read-only numpy arrays, and torch.from_numpy
# warned that writing to such a tensor is undefined behaviour
@pytest.mark.filterwarnings("error:The given NumPy array is not writable")
def test_stream_loader_matches_device_loader(tmp_path):
    _stripes(tmp_path / "stripes")
    common = [f"--data.path={tmp_path / 'stripes'}", *IMAGE_FOLDER, "--train.max_steps=6",
              "--data.augment_translate=1", "--data.augment_flip=true"]
    device = _fit(tmp_path / "device", *common, "--data.loader=device")
    stream = _fit(tmp_path / "stream", *common, "--data.loader=stream", "--data.workers=2")
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("device", "stream"))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].equal(b[k]), (k, (a[k].float() - b[k].float()).abs().max())
    assert stream["test_loss"] == device["test_loss"]
    # and training moved the weights (the comparison is not between two untouched models)
    init = Trainer(load_config(None, [*common, *QUIET, f"--run.root={tmp_path / 'x'}"]), show_progress=False)
    assert not init.model.state_dict()["fc.weight"].equal(a["fc.weight"])
