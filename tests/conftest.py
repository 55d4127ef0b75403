"""Shared test fixtures: the real datasets folder when present, fast thread settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
# The workplace keeps real datasets in a shared folder beside the repository checkout;
# LAYERWISE_TEST_DATA points elsewhere.
_CANDIDATES = [os.environ.get("LAYERWISE_TEST_DATA", ""), str(REPO.parent / "shared" / "data")]


def _data_root() -> Path | None:
    for c in _CANDIDATES:
        if c and (Path(c) / "mnist" / "mnist_train.npz").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if root is None:
        pytest.skip("real datasets not found: set LAYERWISE_TEST_DATA to a folder holding "
                    "mnist/mnist_train.npz (the workplace's shared/data)")
    return root


@pytest.fixture
def overrides_for(tmp_path):
    """Common overrides that keep a test run small and inside tmp_path."""
    def make(*extra: str) -> list[str]:
        return [f"--run.root={tmp_path / 'runs'}", "--run.plots=false", "--run.tensorboard=false", *extra]
    return make
