"""A language model's run initializes a sentence classifier's run (train/adapters.py, end to end):
the classifier's body is the LM's, tensor for tensor, with the embedding rows shifted past padding."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import require_data
from safetensors.torch import load_file

import layerwise
from layerwise.config import ConfigError

QUIET = ["--run.plots=false", "--run.tensorboard=false", "--train.threads=1", "--train.eval_every=0"]
TRUNK = ["--model.n_layer=1", "--model.n_head=2", "--model.n_embd=16"]


@pytest.fixture(scope="module")
def sentences(tmp_path_factory):
    """120 Movie Review sentences per class as a text-classes folder, and the same text unlabelled."""
    root = require_data("movie-reviews/rt-polarity.pos", "movie-reviews/rt-polarity.neg")
    out = tmp_path_factory.mktemp("mr")
    (out / "mr").mkdir()
    lines = {}
    for c in ("pos", "neg"):
        lines[c] = (root / f"movie-reviews/rt-polarity.{c}").read_text(encoding="utf-8").splitlines()[:120]
        (out / "mr" / f"{c}.txt").write_text("\n".join(lines[c]) + "\n", encoding="utf-8")
    (out / "unlabelled.txt").write_text("\n".join(lines["pos"] + lines["neg"]) + "\n", encoding="utf-8")
    return out


def test_gpt_run_initializes_text_transformer_run(sentences, tmp_path) -> None:
    lm = layerwise.fit(None, *QUIET, "--model.name=gpt", *TRUNK, "--data.name=text", "--data.tokenizer=byte",
                       f"--data.path={sentences / 'unlabelled.txt'}", "--data.block_size=32", "--data.batch_size=8",
                       "--train.max_steps=5", f"--run.dir={tmp_path / 'lm'}", show_progress=False)
    classify = [*QUIET, "--model.name=text-transformer", *TRUNK, "--data.name=text-classes", "--data.tokenizer=byte",
                f"--data.path={sentences / 'mr'}", "--data.block_size=24", "--data.batch_size=16",
                f"--model.init_from={lm['run_dir']}"]
    # the body frozen for the whole (one-epoch) run: its saved tensors are the ones loaded, bit for bit
    s = layerwise.fit(None, *classify, "--train.epochs=1", "--train.freeze_body_epochs=1",
                      f"--run.dir={tmp_path / 'ft'}", show_progress=False)
    src, got = load_file(tmp_path / "lm" / "model.safetensors"), load_file(tmp_path / "ft" / "model.safetensors")
    body = [k for k in got if k.startswith(("blocks.", "ln_f."))]
    assert len(body) == 14  # one block (12 tensors with biases) and ln_f (2)
    for k in body:
        assert torch.equal(got[k], src[k]), k
    assert got["wte.weight"].shape == (257, 16) and src["wte.weight"].shape == (256, 16)
    assert torch.equal(got["wte.weight"][1:], src["wte.weight"])
    assert torch.count_nonzero(got["wte.weight"][0]) == 0
    assert torch.equal(got["wpe.weight"], src["wpe.weight"][:24])
    record = json.loads((tmp_path / "ft" / "init_from.json").read_text())
    assert record["adapter"] == "gpt-to-text-transformer" and record["head"] == "new"
    assert record["source_model"] == "gpt" and record["source_task"] == "lm"
    assert 0.0 <= s["test_accuracy"] <= 1.0

    # a classifier reading more bytes than the LM has positions for: a clear error, no run
    with pytest.raises(ConfigError, match=r"positions for 32 tokens.*--data.block_size=32"):
        layerwise.fit(None, *[a for a in classify if not a.startswith("--data.block_size")], "--data.block_size=40",
                      "--train.epochs=1", f"--run.dir={tmp_path / 'long'}", show_progress=False)
    assert not (tmp_path / "long" / "model.safetensors").exists()
