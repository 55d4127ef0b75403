"""Pictures for `layerwise probe`: probe accuracy against depth, first-layer filters, one head's attention.

matplotlib's Figure API without pyplot (no global figure registry, no backend machinery), as
``layerwise.train.metrics.plot_metrics`` draws the training curves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["first_layer_filters", "plot_attention", "plot_filters", "plot_probe"]


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def plot_probe(result: dict[str, Any], path: Path) -> Path:
    """Train and test probe accuracy against depth (depth 0: the raw input), the chance level
    dashed; the x labels name each depth's layer."""
    rows = result["depths"]
    d = [r["depth"] for r in rows]
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.2, top=0.9)
    ax.plot(d, [r["train_accuracy"] for r in rows], "s--", color="0.55", label="probe train")
    ax.plot(d, [r["test_accuracy"] for r in rows], "o-", color="C0", label="probe test")
    ax.axhline(result["chance"], color="C3", ls=":", lw=1, label="chance (majority class)")
    ax.set_xticks(d, [f"{r['depth']}\n{r['name']}" for r in rows], fontsize=8)
    ax.set_xlabel("depth")
    ax.set_ylabel("linear probe accuracy")
    ax.set_title(f"{result.get('model', '')} on {result.get('dataset', '')}: {result['train_n']} train / "
                 f"{result['test_n']} test examples", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=100)
    return path


def first_layer_filters(model: torch.nn.Module) -> torch.Tensor | None:
    """The weight (O, C, kh, kw) of the first convolution (convnet and resnet stems, a ViT's patch
    embedding), or None when the model has no 2-D convolution."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            return m.weight.detach().float().cpu()
    return None


def plot_filters(weight: torch.Tensor, path: Path, title: str = "", max_filters: int = 64) -> Path:
    """A grid of the first ``max_filters`` filters of ``weight`` (O, C, kh, kw): RGB when C = 3,
    else the mean over input channels in a diverging map; each filter scaled by its own largest
    absolute value, so the shapes (not the magnitudes) are compared."""
    w = weight[:max_filters].numpy()
    n = len(w)
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    fig = _figure(1.0 * cols + 0.4, 1.0 * rows + 0.6)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.45 / (rows + 0.6), wspace=0.1, hspace=0.1)
    for i, f in enumerate(w):
        ax = fig.add_subplot(rows, cols, i + 1)
        scale = np.abs(f).max() or 1.0
        if f.shape[0] == 3:
            ax.imshow(np.clip(0.5 + 0.5 * f.transpose(1, 2, 0) / scale, 0, 1), interpolation="nearest")
        else:
            ax.imshow(f.mean(0) / scale, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"first-layer filters ({weight.shape[0]} x {tuple(weight.shape[1:])})", fontsize=9)
    fig.savefig(path, dpi=100)
    return path


def plot_attention(weights: torch.Tensor, path: Path, title: str, labels: list[str] | None = None,
                   image: torch.Tensor | None = None, grid: tuple[int, int] | None = None) -> Path:
    """One head's attention matrix ``weights`` (T, T) (rows: queries, columns: keys), with the
    tokens' ``labels`` on the axes when given; with an ``image`` (C, H, W) in [0, 1] and the patch
    ``grid`` (h, w) (a ViT), also the image and the attention each patch receives (the mean over
    queries), laid on the grid."""
    a = weights.float().cpu().numpy()
    panels = 3 if image is not None and grid is not None else 1
    fig = _figure(4.6 * panels, 4.6)
    room = 0.1 if labels is None else min(0.3, 0.08 + 0.012 * max(map(len, labels), default=0))  # tick labels
    fig.subplots_adjust(left=room / panels * 1.5 if panels > 1 else room, right=0.97, bottom=room, top=0.86,
                        wspace=0.25)
    ax = fig.add_subplot(1, panels, 1)
    ax.imshow(a, cmap="viridis", vmin=0, interpolation="nearest")
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if labels is not None and len(labels) <= 64:
        ticks = list(range(len(labels)))
        ax.set_xticks(ticks, labels, fontsize=6, rotation=90)
        ax.set_yticks(ticks, labels, fontsize=6)
    if panels == 3:
        img = image.float().cpu().numpy()
        ax2 = fig.add_subplot(1, 3, 2)
        ax2.imshow(img.transpose(1, 2, 0) if img.shape[0] == 3 else img.mean(0), cmap=None if img.shape[0] == 3
                   else "gray", interpolation="nearest")
        ax2.set_title("input", fontsize=9)
        ax3 = fig.add_subplot(1, 3, 3)
        received = a[:, -grid[0] * grid[1]:].mean(0).reshape(grid)  # patch keys (a class token dropped)
        ax3.imshow(received, cmap="magma", interpolation="nearest")
        ax3.set_title("attention received per patch (mean over queries)", fontsize=8)
        for axis in (ax2, ax3):
            axis.set_xticks([])
            axis.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100)
    return path
