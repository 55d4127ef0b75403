"""A BPE GPT on Python source (the `code` source on the standard library's `email` package, 28
files after removing an empty one): it learns (held-out bits per byte below the unigram model of
the same tokens), and `layerwise generate` cuts samples at stop strings and checks their syntax,
from the Python API and the command line. The full recipe is measured by benchmarks/code_lm.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import layerwise
from layerwise.config import load_config
from layerwise.data import load_dataset
from layerwise.data.code import FILE_SEPARATOR
from layerwise.tasks.lm import unigram_bits
from layerwise.train.inference import generate, generate_samples, syntax_report

# 2 layers x 64 wide, BPE 512, context 64, 150 steps of 16 sequences: ~15 s on 2 cores
CODE = ["--data.name=code", "--data.packages=[email]", "--data.tokenizer=bpe", "--data.vocab_size=512",
        "--data.block_size=64", "--data.batch_size=16", "--model.name=gpt", "--model.n_layer=2", "--model.n_head=2",
        "--model.n_embd=64", "--optim.name=adamw", "--optim.lr=0.003", "--train.max_steps=150",
        "--train.eval_every=0", "--train.log_every=50", "--run.plots=false", "--run.tensorboard=false"]


def lw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerwise", *args], check=False, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def code_run(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("code") / "run"
    return run_dir, layerwise.fit(None, *CODE, run_dir=run_dir, show_progress=False)


def test_code_lm_beats_the_unigram_model_on_held_out_files(code_run):
    run_dir, summary = code_run
    env = json.loads((run_dir / "env.json").read_text())["data"]
    assert env["val_files"] >= 1 and env["train_files"] + env["val_files"] == len(env["files"])
    assert summary["steps"] == 150
    cfg = load_config(run_dir / "config.yaml")
    ds = load_dataset("code", "", cfg.data)
    val_bytes = ds.source["val_bytes"]
    unigram = unigram_bits(ds.x_train, ds.x_test, ds.info.num_classes) / val_bytes
    # measured (seed 0): model 3.20 bits per byte, token unigram 3.76, byte unigram 4.78
    assert summary["test_bits_per_byte"] < unigram - 0.3, (summary["test_bits_per_byte"], unigram)
    assert summary["test_bits_per_byte"] == pytest.approx(
        summary["test_bits_per_token"] / ds.info.extra["bytes_per_token"])


def test_generate_api_stops_and_checks_syntax(code_run):
    run_dir, _ = code_run
    free = generate_samples(run_dir, "def ", samples=4, tokens=60, seed=0, device="cpu")
    cut = generate_samples(run_dir, "def ", samples=4, tokens=60, seed=0, device="cpu",
                           stop=[FILE_SEPARATOR], top_level=True)
    assert len(cut) == 4 and all(t.startswith("def") for t in cut + free)
    for full, short in zip(free, cut, strict=True):
        assert full.startswith(short)  # the same tokens (seeded), cut earlier or not at all
        assert FILE_SEPARATOR not in short
        assert not any(line[:1].strip() for line in short.split("\n")[1:])  # no later line in column 0
    text = generate(run_dir, "def ", tokens=60, seed=0, device="cpu", stop=["("])
    assert "(" not in text[4:] and text == generate(run_dir, "def ", tokens=60, seed=0, device="cpu", stop=["("])
    report = syntax_report(cut + ["def ok():\n    return 1\n"])
    assert report["samples"] == 5 and report["errors"][-1] is None
    assert report["fraction"] == pytest.approx(report["parsed"] / 5) and report["parsed"] >= 1


def test_generate_cli_stop_and_check_syntax(code_run):
    run_dir, _ = code_run
    out = lw("generate", str(run_dir), "--prompt", "def ", "--samples", "3", "--tokens", "40", "--stop", r"\n",
             "--check-syntax", "python", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    blocks = out.stdout.split("----- sample ")[1:]
    assert len(blocks) == 3
    for b in blocks:
        lines = b.split("\n")  # "1 of 3", the sample (one line: cut at the first \n), the check
        assert lines[1].startswith("def") and lines[2].startswith("[python syntax: ")
    assert out.stdout.rstrip().endswith("samples parse as python (" + out.stdout.rsplit("(", 1)[1].rstrip())
    assert "0 of 3 samples parse" in out.stdout  # "def x" with no body never parses
    bad = lw("generate", str(run_dir), "--check-syntax", "ruby", "--device", "cpu")
    assert bad.returncode == 2 and "invalid choice: 'ruby'" in bad.stderr

