"""Pictures and pages of attributions: PNG overlays for images and spectrograms, a bar chart and a
table for table rows, coloured tokens (ANSI in a terminal, HTML on disk) for text.

Signed maps (ig, occlusion) are drawn on a diverging scale centred at 0 (red: for the explained
output, blue: against); magnitude maps (saliency, gradcam) on a sequential one. Plots use
matplotlib's Figure API without pyplot (about 2x faster; see layerwise.train.metrics).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

SIGNED = ("ig", "occlusion")


def headline(r: dict[str, Any]) -> str:
    """One line on what was predicted and what is explained: the class and its probability; a
    multilabel model's labels over the threshold and the explained label's probability; a
    regressor's explained output and its value."""
    if "labels" in r:
        return (f"labels {', '.join(r['labels']) or '(none over the threshold)'}; explaining {r['target_name']} "
                f"(p = {r['probability']:.3f})")
    if r.get("predicted") is not None:
        head = f"predicted {r['predicted']} (p = {r['probability']:.3f})"
    else:
        head = f"{r['target_name']} = {r['value']:.4g}"
    if r.get("target_name") not in (None, r.get("predicted")) and r.get("predicted") is not None:
        head += f"; explaining {r['target_name']}"
    return head


def _map2d(attr: np.ndarray, signed: bool) -> np.ndarray:
    """(C, H, W) attributions -> (H, W): summed over channels (signed) or of absolute values."""
    return attr.sum(0) if signed else np.abs(attr).sum(0)


def overlay_png(r: dict[str, Any], path: Path, spectrogram: bool = False) -> Path:
    """The input beside its attribution map laid over it, titled with the predicted class and its
    probability (or a regressor's value) and the method. r: one result of
    :func:`layerwise.insight.explain.explain` for an image (C, H, W) in [0, 1] or a log-mel
    spectrogram (1, n_mels, frames) (``spectrogram``: low bands at the bottom, axes labelled)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = r["x"].float().numpy()
    signed = r["method"] in SIGNED
    m = _map2d(r["attribution"].float().numpy(), signed)
    img = x.transpose(1, 2, 0) if x.shape[0] == 3 else x[0]
    gray = x.mean(0)
    H, W = gray.shape
    wide = spectrogram and W > 1.5 * H
    fig = Figure(figsize=(7.6, 2.8) if wide else (6.4, 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    opts = {"origin": "lower", "aspect": "auto"} if spectrogram else {}
    axes[0].imshow(img, cmap="magma" if spectrogram else "gray", **opts)
    axes[0].set_title("input" if not spectrogram else "log-mel input", fontsize=9)
    lim = float(np.abs(m).max()) or 1.0
    axes[1].imshow(gray, cmap="gray", alpha=0.45, **opts)
    im = axes[1].imshow(m, cmap="bwr" if signed else "inferno", vmin=-lim if signed else 0, vmax=lim,
                        alpha=0.75, **opts)
    axes[1].set_title(r["method"], fontsize=9)
    for ax in axes:
        if spectrogram:
            ax.set_xlabel("frame", fontsize=8)
            ax.set_ylabel("mel band", fontsize=8)
            ax.tick_params(labelsize=7)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.subplots_adjust(top=0.82, bottom=0.2 if spectrogram else 0.04, left=0.08 if spectrogram else 0.04,
                        right=0.94, wspace=0.3)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
    fig.suptitle(f"{r['input']}: {headline(r)}", fontsize=9)
    fig.savefig(path, dpi=90)
    return path


def table_png(r: dict[str, Any], names: list[str], path: Path, top: int = 20) -> Path:
    """A horizontal bar chart of a table row's per-feature attributions (the ``top`` largest in
    absolute value), titled like :func:`overlay_png`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    a = r["attribution"].float().numpy()
    order = np.argsort(-np.abs(a))[:top][::-1]
    fig = Figure(figsize=(6.4, 0.9 + 0.28 * len(order)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.33, right=0.97, top=1 - 0.55 / (0.9 + 0.28 * len(order)))
    ax.barh(range(len(order)), a[order], color=["tab:red" if v > 0 else "tab:blue" for v in a[order]])
    ax.set_yticks(range(len(order)), [names[i] for i in order], fontsize=8)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel(f"{r['method']} attribution", fontsize=8)
    ax.set_title(f"{r['input']}: {headline(r)}", fontsize=9)
    fig.savefig(path, dpi=90)
    return path


def table_rows(r: dict[str, Any], names: list[str]) -> list[tuple[str, float, float]]:
    """(feature, value in pixel space, attribution) sorted by |attribution|, largest first."""
    a, x = r["attribution"].float().tolist(), r["x"].float().tolist()
    return sorted(zip(names, x, a, strict=True), key=lambda t: -abs(t[2]))


def _scale(scores: list[float]) -> float:
    return max((abs(s) for s in scores), default=0.0) or 1.0


def ansi_tokens(tokens: list[str], scores: list[float]) -> str:
    """The tokens coloured by score on a 24-bit terminal: red backgrounds for, blue against the
    explained output, stronger with |score| (scaled by the largest); padding ("") left out."""
    lim, out = _scale(scores), []
    for t, s in zip(tokens, scores, strict=True):
        if t == "":
            continue
        v = min(1.0, abs(s) / lim)
        fade = int(255 * (1 - 0.8 * v))
        rgb = (255, fade, fade) if s > 0 else (fade, fade, 255)
        out.append(f"\x1b[48;2;{rgb[0]};{rgb[1]};{rgb[2]}m\x1b[38;2;0;0;0m{t}\x1b[0m")
    return " ".join(out)


def tokens_html(results: list[dict[str, Any]], path: Path) -> Path:
    """One HTML page: each text example's tokens with backgrounds coloured by attribution (as
    :func:`ansi_tokens`), its prediction, and each token's score in a tooltip."""
    rows = []
    for r in results:
        scores = r["attribution"].float().tolist()
        lim = _scale(scores)
        spans = []
        for t, s in zip(r["tokens"], scores, strict=True):
            if t == "":
                continue
            v = min(1.0, abs(s) / lim)
            color = f"rgba(220,40,40,{v:.2f})" if s > 0 else f"rgba(40,80,220,{v:.2f})"
            spans.append(f'<span title="{s:+.4f}" style="background:{color}">{html.escape(t)}</span>')
        gap = r.get("completeness")
        note = f" &middot; IG completeness gap {gap['gap']:+.2e} ({gap['relative']:.2%})" if gap else ""
        rows.append(f"<p><b>{html.escape(r['input'])}</b>: {html.escape(headline(r))} &middot; "
                    f"{html.escape(r['method'])}{note}<br>{' '.join(spans)}</p>")
    page = ("<!doctype html><meta charset='utf-8'><title>layerwise explain</title>"
            "<style>body{font-family:sans-serif;max-width:60em}span{padding:1px 2px;border-radius:3px;"
            "line-height:1.9}</style>\n<h3>Token attributions (red: for the explained class, blue: "
            "against)</h3>\n" + "\n".join(rows) + "\n")
    path.write_text(page, encoding="utf-8")
    return path
