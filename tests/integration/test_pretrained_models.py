"""The shipped pretrained models reach, on the real data, the figures their registry entries state."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import require_data

from layerwise.config import load_config, save_config
from layerwise.models.pretrained import PRETRAINED, resolve_pretrained
from layerwise.train.inference import evaluate_run

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name, files", [
    ("mnist-convnet", ("mnist/mnist_train.npz", "mnist/mnist_test.npz")),
    ("shakespeare-gpt", ("tinyshakespeare/input.txt",)),
])
def test_shipped_model_reaches_its_recorded_figure(name, files, tmp_path):
    root = require_data(*files)
    entry = PRETRAINED[name]
    run = tmp_path / name  # a run directory around the shipped file: its recipe's config and the weights
    run.mkdir()
    save_config(load_config(REPO / entry.recipe, [f"--data.root={root}"]), run / "config.yaml")
    shutil.copy(resolve_pretrained(name), run / "model.safetensors")
    got = evaluate_run(run, device="cpu")
    assert got[entry.metric] == pytest.approx(entry.value, abs=5e-5)
