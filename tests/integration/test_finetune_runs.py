"""Transfer learning end to end: a frozen epoch keeps the body bit for bit, a fine-tuned run resumes
exactly after SIGKILL, `layerwise finetune`, and the MNIST digits 0-4 -> 5-9 figure."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_data
from safetensors.torch import load_file
from test_resume import _assert_identical, kill_after_checkpoint

import layerwise
from layerwise.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the figure's data, as there
from transfer_mnist import mnist_split_folders

QUIET = ["--run.plots=false", "--run.tensorboard=false", "--train.threads=1"]
# a small residual net with BatchNorm in every layer, on the built-in digits
MODEL = ["--model.name=resnet-digits", "--model.widths=[16,32]"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A finished digits run: the weights to fine-tune."""
    root = tmp_path_factory.mktemp("source")
    s = layerwise.fit(None, *MODEL, *QUIET, "--train.epochs=2", "--optim.lr=0.02", f"--run.dir={root / 'run'}",
                      show_progress=False)
    assert s["test_accuracy"] > 0.9  # 0.95
    return root / "run"


@pytest.mark.parametrize(("extra", "fixed"), [
    (["--train.epochs=1", "--train.freeze_body_epochs=1"], ("stem.", "blocks.0.", "blocks.1.")),
    (["--train.epochs=2", "--train.freeze_body_epochs=1", "--train.unfreeze=gradual"], ("stem.", "blocks.0.")),
    (["--train.epochs=2", "--train.freeze_body_epochs=1"], ()),
], ids=["frozen", "gradual", "unfrozen"])
def test_frozen_layers_and_their_batchnorm_statistics_stay_bit_identical(source, tmp_path, extra, fixed):
    # evaluations every 10 steps (23 per epoch) put the model back in training mode mid-phase
    s = layerwise.fit(None, *MODEL, *QUIET, f"--model.init_from={source}", f"--run.dir={tmp_path / 'ft'}",
                      "--train.eval_every_steps=10", *extra, show_progress=False)
    before, after = load_file(str(source / "model.safetensors")), load_file(str(tmp_path / "ft/model.safetensors"))
    assert before.keys() == after.keys()
    same = {k for k in before if before[k].equal(after[k])}
    body = {k for k in before if not k.startswith("fc.")}
    # the frozen layers: weights, running means and variances, and num_batches_tracked (eval mode)
    assert {k for k in body if k.startswith(fixed)} == ({k for k in body & same if k.startswith(fixed)} if fixed
                                                        else set())
    assert any("running_var" in k for k in body if k.startswith(fixed)) or not fixed
    # what trained did change: the head (the same digits: the source's head was kept and trained on)
    # and every weight of the layers that were unfrozen
    assert "fc.weight" not in same
    assert not {k for k in body - same if k.startswith(fixed)} and all(
        k not in same for k in body if not k.startswith(fixed) and k.endswith("conv.weight"))
    record = json.loads((tmp_path / "ft" / "init_from.json").read_text())
    assert record["sha256"] == hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest()
    assert record["head"] == "loaded" and record["run_id"] == "run"
    assert s["init_from"] == str(source) and s["init_from_sha256"] == record["sha256"]
    assert s["init_loaded_tensors"] == len(before)


# ------------------------------------------------------------------ resume
ARGS = [*MODEL, "--data.batch_size=32", "--data.augment_translate=1", "--train.epochs=2",
        "--train.ema_decay=0.9", "--train.freeze_body_epochs=1", "--train.unfreeze=gradual",
        "--optim.body_lr_scale=0.3", "--train.eval_every=1", "--run.checkpoint_every=7", "--run.keep_checkpoints=2",
        *QUIET]


def _cmd(source: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "layerwise", "train", *ARGS, f"--model.init_from={source}", "--quiet", *extra]


def test_a_fine_tuned_run_killed_at_a_random_step_resumes_bit_identical(source, tmp_path):
    """Freezing (the head alone for an epoch, then the top layer too), discriminative
    rates, EMA and augmentation all resume exactly; the resumed run reads its checkpoint, not the
    source (moved away for the resume)."""
    # the uninterrupted run, in this process (the same code and one thread: the same numbers)
    layerwise.fit(None, *ARGS, f"--model.init_from={source}", f"--run.dir={tmp_path / 'ref'}", show_progress=False)
    reference = load_file(str(tmp_path / "ref" / "model.safetensors"))
    run_dir = tmp_path / "run"
    total = 2 * 45  # 1437 examples / 32 per step = 45 steps per epoch
    target = random.Random(os.getpid()).randint(10, total // 2)
    kill_after_checkpoint(_cmd(source, f"--run.dir={run_dir}"), run_dir, target)
    assert not (run_dir / "summary.json").exists()

    weights = source / "model.safetensors"
    weights.rename(source / "moved.safetensors")
    try:
        out = subprocess.run([sys.executable, "-m", "layerwise", "train", "--resume", str(run_dir), "--quiet"],
                             check=False, capture_output=True, text=True, timeout=300)
    finally:
        (source / "moved.safetensors").rename(weights)
    assert out.returncode == 0, out.stderr
    _assert_identical(reference, load_file(str(run_dir / "model.safetensors")))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["init_from"] == str(source) and summary["init_loaded_tensors"] > 0


# ------------------------------------------------------------------ the command line
def test_finetune_command_takes_the_sources_model_and_records_the_source(source, tmp_path, capsys):
    root = tmp_path / "runs"
    assert main(["finetune", str(source), "--train.epochs=1", f"--run.root={root}", *QUIET, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"layerwise finetune: model resnet-digits (widths=[16,32]), as in {source}" in out
    assert "fastai's fine_tune: --train.freeze_body_epochs=1 --optim.body_lr_scale=0.1" in out
    (run,) = root.iterdir()
    config = (run / "config.yaml").read_text()
    assert f"name: resnet-digits\n  init_from: {source}\n" in config
    assert json.loads((run / "init_from.json").read_text())["source_model"] == "resnet-digits"

    # a model the source does not fit: exit 2, the tensors named, no run directory
    assert main(["finetune", str(source), "--model.name=mlp", f"--run.root={root}", *QUIET, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not fit model 'mlp'" in err and "4 missing from the source (blocks.0.linear.weight;" in err
    assert "36 in the source but not in the model (blocks.0.residual.fn.0.conv.weight;" in err
    assert "Build the same one with --model.name=resnet-digits --model.widths=[16,32]" in err
    assert len(list(root.iterdir())) == 1


# ------------------------------------------------------------------ the figure
def test_mnist_0_4_to_5_9_with_50_labels_per_class_fine_tuned_beats_scratch_by_10_points(data_root, tmp_path):
    """Pretrain a convnet on digits 0-4, fine-tune it on 250 labelled images of 5-9, and train the
    same model from scratch on those 250, both for the same 2 epochs (16 steps). Measured here
    (seed 0): scratch 0.709, fine-tuned 0.906. The gap is what transfer saves at a small budget; it
    narrows with training (benchmarks/transfer_mnist.py; benchmarks/RESULTS.md)."""
    mnist_split_folders(data_root, tmp_path / "mnist")
    common = ["--data.name=image-folder", "--model.name=convnet", "--model.widths=[16,32,32]",
              "--data.batch_size=32", "--train.eval_every=0", *QUIET, f"--run.root={tmp_path / 'runs'}"]
    pre = layerwise.fit(None, *common, f"--data.path={tmp_path / 'mnist/pre'}", "--train.epochs=3",
                        show_progress=False)
    assert pre["test_accuracy"] > 0.97  # 0.984: digits 0-4
    target = [*common, f"--data.path={tmp_path / 'mnist/ft'}", "--train.epochs=2"]
    scratch = layerwise.fit(None, *target, show_progress=False)
    tuned = layerwise.finetune(pre["run_dir"], None, *target, show_progress=False)
    assert tuned["init_new_head"] == "fc.weight"  # classes 5-9, not 0-4: a new head
    assert tuned["test_accuracy"] >= scratch["test_accuracy"] + 0.10, (scratch["test_accuracy"],
                                                                         tuned["test_accuracy"])


def test_init_from_a_shipped_pretrained_model_by_name(tmp_path):
    """`--model.init_from=pretrained:NAME` starts from a model shipped with layerwise: the record
    names it and the file's sha256; an unknown name is a ConfigError listing the shipped ones."""
    import layerwise
    from layerwise.config import ConfigError
    from layerwise.models.pretrained import resolve_pretrained

    root = require_data("mnist/mnist_train.npz")
    path = resolve_pretrained("pretrained:mnist-convnet")
    common = [f"--data.root={root}", "--data.name=mnist", "--data.train_subset=512", "--train.max_steps=2",
              "--train.threads=1", "--run.plots=false", "--run.tensorboard=false", f"--run.root={tmp_path}"]
    s = layerwise.finetune("pretrained:mnist-convnet", None, *common, f"--run.dir={tmp_path / 'run'}",
                           show_progress=False)  # the model is the source's
    record = json.loads((tmp_path / "run" / "init_from.json").read_text())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "pretrained:mnist-convnet" in json.dumps(record) and s["test_accuracy"] > 0.9
    with pytest.raises(ConfigError, match="mnist-convnet"):
        layerwise.finetune("pretrained:mnist-convnett", None, *common, show_progress=False)
