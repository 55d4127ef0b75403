"""Shared test fixtures: the real datasets folder when present, fast thread settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Under pytest-xdist (`make test` runs two workers) each worker takes its share of the cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
_THREADS = max(1, min(2, os.cpu_count() or 1) // _WORKERS)
torch.set_num_threads(_THREADS)
if _WORKERS > 1:  # and the `python -m layerwise` processes the tests start
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))

REPO = Path(__file__).resolve().parents[1]
# The workplace keeps real datasets in a shared folder beside the repository checkout;
# LAYERWISE_TEST_DATA points elsewhere.
_CANDIDATES = [os.environ.get("LAYERWISE_TEST_DATA", ""), str(REPO.parent / "shared" / "data")]


def _data_root() -> Path | None:
    for c in _CANDIDATES:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def require_data(*files: str) -> Path:
    """The real-data root holding ``files`` (relative paths); skips the test with the reason if not."""
    root = _data_root()
    missing = [f for f in files if root is None or not (root / f).is_file()]
    if missing:
        pytest.skip(f"real dataset files not found ({', '.join(missing)}): set LAYERWISE_TEST_DATA to a "
                    f"folder laid out like the workplace's shared/data")
    return root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the real datasets, with MNIST (the data most tests use)."""
    return require_data("mnist/mnist_train.npz", "mnist/mnist_test.npz")


@pytest.fixture
def overrides_for(tmp_path):
    """Common overrides that keep a test run small and inside tmp_path."""
    def make(*extra: str) -> list[str]:
        return [f"--run.root={tmp_path / 'runs'}", "--run.plots=false", "--run.tensorboard=false", *extra]
    return make
