"""Each shipped recipe reaches the figure it states (on the real data, skipped without it)."""

from pathlib import Path

from layerwise.config import load_config
from layerwise.train.trainer import fit

REPO = Path(__file__).resolve().parents[2]


def test_mnist_mlp_recipe_reaches_98_percent(data_root, overrides_for):
    cfg = load_config(REPO / "recipes" / "mnist-mlp.yaml", overrides_for(f"--data.root={data_root}"))
    summary = fit(cfg, show_progress=False)
    assert summary["test_accuracy"] >= 0.98, summary  # measured 0.9892 (seed 0)
    assert summary["params"] == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert summary["examples_seen"] == 8 * 60000
