"""`layerwise probe` on the shipped pretrained models and the real data (skipped without it): the
MNIST convnet's representations grow more linearly separable with depth; a language model is
refused probing but its attention is drawn."""

from __future__ import annotations

import itertools
import json

from conftest import require_data

import layerwise
from layerwise.cli import main


def test_mnist_convnet_probe_rises_with_depth(tmp_path):
    root = require_data("mnist/mnist_train.npz", "mnist/mnist_test.npz")
    r = layerwise.probe("pretrained:mnist-convnet", train_n=2000, test_n=1000, out=tmp_path, device="cpu",
              data_root=str(root))
    acc = [d["test_accuracy"] for d in r["depths"]]
    assert [d["name"] for d in r["depths"]] == ["input", "stem", "block 0", "block 1", "block 2"]
    # measured 2026-12-01: 87.0, 92.7, 97.5, 98.7, 99.3 % (raw pixels ... last block)
    assert 0.80 < acc[0] < 0.93  # a linear classifier on 2000 raw digits
    assert acc[-1] > 0.98 and acc[-1] > acc[0] + 0.08  # the last block beats the raw pixels
    assert all(b > a - 0.01 for a, b in itertools.pairwise(acc))  # rises with depth, dips under a point allowed
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert [d["test_accuracy"] for d in saved["depths"]] == acc


def test_language_model_is_refused_but_its_attention_drawn(tmp_path, capsys):
    root = require_data("tinyshakespeare/input.txt")
    assert main(["probe", "pretrained:shakespeare-gpt", "--data-root", str(root), "--out", str(tmp_path),
                 "--layer", "3", "--head", "2", "--device", "cpu"]) == 0
    assert "not probed: a language model" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attention.png", "probe.json"]
    assert "depths" not in json.loads((tmp_path / "probe.json").read_text())
