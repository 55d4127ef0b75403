"""The run report's task sections: what a run's kind of task is judged by, beyond its curves.

- classification: the confusion matrix (read from confusion.csv, which the run's final evaluation
  wrote) and the worst-classified test examples: the lowest probabilities given to the true class
  over a bounded, seeded part of the test split (:func:`worst_examples`), shown as thumbnails
  (images), spectrograms (audio), decoded text (sentences) or feature values (table rows);
- regression: predicted against true values and the residuals, over the same bounded part;
- language models: a sampled text and the perplexity curve.

Each section that needs the model or the data opens the run once (``layerwise.insight.runs``)
and says why it is missing when it cannot (the data moved, graphs instead of tensors, ...).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from layerwise.deploy.html import Markup, esc, figure_uri, img, new_figure, note, png_uri, section, table

MAX_EXAMPLES = 1000  # test examples the report's own pass reads, at most (a seeded choice)
WORST = 12  # examples shown in the gallery of the worst-classified
MAX_MATRIX = 40  # classes up to which the whole confusion matrix is drawn; beyond, the largest confusions


def read_confusion(path: Path) -> tuple[list[str], list[list[int]]] | None:
    """(class names, counts (K, K): row = true class, column = predicted) from a run's
    confusion.csv (train/metrics.py's write_confusion), or None when there is none. ValueError
    naming the file when it is damaged (truncated, edited: not a header and K rows of K counts)."""
    if not path.is_file():
        return None
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8", errors="replace"))))
    try:
        classes = rows[0][1:]
        m = [[int(v) for v in r[1:]] for r in rows[1:]]
        if not classes or len(m) != len(classes) or any(len(r) != len(classes) or min(r) < 0 for r in m):
            raise ValueError("not a header and one row of counts per class")
    except (IndexError, ValueError) as e:
        raise ValueError(f"'{path}' is damaged ({e}); the run's final evaluation wrote it, and the test "
                         f"metrics are still in summary.json (`layerwise eval {path.parent}` evaluates again)"
                         ) from None
    return classes, m


def confusion_html(classes: list[str], m: list[list[int]]) -> Markup:
    """The confusion matrix as a shaded table (row = true class, each cell shaded by its share of
    the row) with each class's recall; more than :data:`MAX_MATRIX` classes: the 20 largest
    confusions instead."""
    totals = [sum(r) for r in m]
    recall = [m[i][i] / totals[i] if totals[i] else None for i in range(len(m))]
    if len(classes) > MAX_MATRIX:
        pairs = sorted(((m[i][j], classes[i], classes[j]) for i in range(len(m)) for j in range(len(m)) if i != j),
                       reverse=True)[:20]
        return table(("test examples", "true class", "predicted as"), [(n, t, p) for n, t, p in pairs if n])

    def shade(i: int, j: int, v: Any) -> dict[str, str] | None:
        if j == 0 or j > len(classes) or not totals[i]:
            return None
        share = m[i][j - 1] / totals[i]
        if not share:
            return None
        color = "60,150,90" if i == j - 1 else "210,70,60"
        return {"style": f"background:rgba({color},{0.15 + 0.75 * share:.2f})"}

    rows = [(classes[i], *m[i], recall[i]) for i in range(len(m))]
    return table(("true \\ predicted", *classes, "recall"), rows, cls="cm", cell_attrs=shade)


def _forward(model: Any, x: Any, batch: int = 256) -> Any:
    """Model outputs (N, ...) float32 of inputs (N, ...), in batches, without gradients."""
    import torch

    with torch.no_grad():
        outs = [model(x[i:i + batch]).float() for i in range(0, len(x), batch)]
    out = torch.cat(outs)
    return out.mean(1) if out.dim() == 3 and out.shape[1] == getattr(model, "num_members", -1) else out


def _split_positions(run: Any, n: int, seed: int = 0) -> list[int]:
    """The test split's positions of the examples ``run.examples("test", n, seed)`` returns (the
    same seeded permutation, sorted)."""
    import torch

    N = len(run.dataset.y_test) if run.dataset.y_test is not None else len(run.dataset.x_test)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(N, generator=g)[:min(n, N)].sort().values.tolist()


def worst_examples(run: Any, n: int = MAX_EXAMPLES, k: int = WORST, seed: int = 0) -> dict[str, Any]:
    """The ``k`` test examples, of ``n`` drawn by ``seed`` (as ``LoadedRun.examples``), to which a
    classifier gives the lowest probability of the true class (softmax of the logits).

    Returns {"examples": n examples read, "accuracy": of those, "worst": [{"position": in the test
    split, "true", "pred": class indices, "p_true", "p_pred": probabilities, "x": the input
    (pixel space, or token ids)}, ...] lowest p_true first}. Raises DataError when the data
    cannot be read (the run's message names the flag to give)."""
    import torch

    x, y = run.examples("test", n=n, seed=seed)
    model = run.pixel_model() if run.has_pixels else run.model
    p = _forward(model, x).softmax(-1)  # (n, K)
    y = y.long()
    p_true = p.gather(1, y[:, None])[:, 0]
    p_pred, pred = p.max(1)
    order = torch.argsort(p_true, stable=True)[:k].tolist()
    pos = _split_positions(run, n, seed)
    return {"examples": len(x), "accuracy": float((pred == y).float().mean()),
            "worst": [{"position": pos[i], "true": int(y[i]), "pred": int(pred[i]), "p_true": float(p_true[i]),
                       "p_pred": float(p_pred[i]), "x": x[i].cpu()} for i in order]}


def thumbnail(x: Any, spectrogram: bool = False) -> tuple[str, int]:
    """(PNG data URI, display width in px) of one image (C, H, W) in [0, 1], or of a spectrogram
    (1, bands, frames) drawn with low frequencies at the bottom (viridis, scaled to its range)."""
    import numpy as np
    from PIL import Image

    a = x.float().numpy()
    if spectrogram:
        s = a.reshape(-1, a.shape[-1])[::-1]  # (bands, frames), low bands at the bottom
        s = (s - s.min()) / max(float(s.max() - s.min()), 1e-12)
        from matplotlib import colormaps

        rgb = (colormaps["viridis"](s)[..., :3] * 255).astype(np.uint8)
        im = Image.fromarray(rgb)
        return _png(im), max(120, min(2 * im.width, 240))
    a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    im = Image.fromarray(a[0]) if a.shape[0] == 1 else Image.fromarray(np.moveaxis(a[:3], 0, -1))
    return _png(im), max(48, min(4 * im.width, 96))


def _png(im: Any) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return png_uri(buf.getvalue())


def _text_of(run: Any, ids: Any) -> str:
    from layerwise.data.tokenizers import tokenizer_from_dict

    tok = tokenizer_from_dict(run.info.extra["tokenizer"])
    off = run.info.extra.get("text", {}).get("id_offset", 1)
    return tok.decode([i - off for i in ids.tolist() if i > 0])


def worst_html(run: Any, result: dict[str, Any]) -> Markup:
    """The gallery of :func:`worst_examples`: each example's input, true and predicted class and
    both probabilities; ``data-position`` and ``data-p-true`` attributes carry the numbers."""
    classes = run.info.classes
    extra = run.info.extra
    kind = ("text" if "tokenizer" in extra else "audio" if "audio" in extra else
            "image" if len(run.info.in_shape) == 3 else "table")
    names = list((extra.get("table") or {}).get("columns") or extra.get("columns") or [])  # a table's features
    items = []
    for w in result["worst"]:
        name = f"test #{w['position']}"
        if kind in ("image", "audio"):
            uri, width = thumbnail(w["x"], spectrogram=kind == "audio")
            shown = img(uri, name, width)
        elif kind == "text":
            text = _text_of(run, w["x"])
            shown = Markup(f"<q>{esc(text[:300] + ('...' if len(text) > 300 else ''))}</q>")
        else:
            vals = w["x"].flatten().tolist()[:6]
            shown = Markup("<br>".join(esc(f"{names[i] if i < len(names) else f'x{i}'} = {v:.4g}")
                                       for i, v in enumerate(vals)))
        cap = (f"{name}: true <b>{esc(classes[w['true']])}</b> (p {w['p_true']:.3f}), predicted "
               f"<b>{esc(classes[w['pred']])}</b> (p {w['p_pred']:.3f})")
        items.append(f'<div class="ex" data-position="{w["position"]}" data-p-true="{w["p_true"]:.6g}">'
                     f"{shown}<div>{cap}</div></div>")
    head = (f"The {len(result['worst'])} test examples, of {result['examples']} read (accuracy on them "
            f"{100 * result['accuracy']:.2f}%), given the lowest probability of their true class.")
    return Markup(f"<p>{esc(head)}</p><div>{''.join(items)}</div>")


def residuals(run: Any, n: int = MAX_EXAMPLES, seed: int = 0) -> tuple[Any, Any]:
    """(true, predicted) values in the target's units, (n, K) float64 each, of ``n`` test examples
    drawn by ``seed`` (a regression run; the model's outputs through the task's ``to_units``).
    Molecular graphs (a GraphSet, not a tensor of examples) are batched as the run's loader does."""
    import torch

    x_all = run.dataset.x_test
    if not isinstance(x_all, torch.Tensor) and hasattr(x_all, "collate"):
        pos = _split_positions(run, n, seed)
        with torch.no_grad():
            out = torch.cat([run.model(x_all.collate(pos[i:i + 256]).to(run.device)).float()
                             for i in range(0, len(pos), 256)])
        pred = run.task.to_units(out).cpu()
        y = run.dataset.y_test[pos]
        return y.double().reshape(len(y), -1).cpu(), pred
    x, y = run.examples("test", n=n, seed=seed)
    model = run.pixel_model() if run.has_pixels else run.model
    pred = run.task.to_units(_forward(model, x)).cpu()
    return y.double().reshape(len(y), -1).cpu(), pred


def residual_html(run: Any, n: int = MAX_EXAMPLES) -> Markup:
    """Predicted against true (the diagonal is perfect) and residual against predicted, per
    target column (a field's grid points pooled), with the RMSE of the examples drawn."""
    import torch

    true, pred = residuals(run, n)
    n_examples = len(true)
    cols = list(getattr(run.task, "columns", None) or [f"y{j}" for j in range(true.shape[1])])[:4]
    if true.shape[1] > len(getattr(run.task, "columns", None) or [None] * true.shape[1]):
        # a field (a value per grid point): every point of every example, pooled in one panel
        true, pred = true.reshape(-1, 1), pred.reshape(-1, 1)
        cols = [f"{cols[0]} (all grid points)"]
        if len(true) > 20_000:  # a scatter of 20k points says what more would
            keep = torch.linspace(0, len(true) - 1, 20_000).long()
            true, pred = true[keep], pred[keep]
    fig = new_figure(8, 3.2 * len(cols))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.08, top=0.95, hspace=0.4, wspace=0.3)
    rmse = []
    for j, c in enumerate(cols):
        t, p = true[:, j].numpy(), pred[:, j].numpy()
        rmse.append(math.sqrt(float(((p - t) ** 2).mean())))
        a = fig.add_subplot(len(cols), 2, 2 * j + 1)
        a.scatter(t, p, s=6, alpha=0.5)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        a.plot([lo, hi], [lo, hi], "k--", lw=1)
        a.set_xlabel(f"true {c}")
        a.set_ylabel(f"predicted {c}")
        b = fig.add_subplot(len(cols), 2, 2 * j + 2)
        b.scatter(p, p - t, s=6, alpha=0.5)
        b.axhline(0, color="k", lw=1, ls="--")
        b.set_xlabel(f"predicted {c}")
        b.set_ylabel("residual")
    text = "; ".join(f"{c}: RMSE {r:.4g}" for c, r in zip(cols, rmse, strict=True))
    return (Markup(f"<p>{esc(f'{n_examples} test examples ({text}).')}</p>")
            + img(figure_uri(fig), "predicted against true values, and residuals"))


def lm_sample_html(run_dir: Path, device: str, tokens: int = 200) -> Markup:
    """One sampled text (temperature 0.8, top-k 200, seed 0) of a language-model run."""
    from layerwise.train.inference import generate_samples

    text = generate_samples(run_dir, "", samples=1, tokens=tokens, seed=0, device=device)[0]
    return Markup(f"<p>{esc(f'A sample of {tokens} tokens (temperature 0.8, top-k 200, seed 0):')}</p>"
                  f"<pre>{esc(text)}</pre>")


def task_sections(run_dir: Path, task: str, open_run: Any, device: str, max_examples: int = MAX_EXAMPLES
                  ) -> list[Markup]:
    """The sections of a finished run's task (empty for kinds without one). ``open_run()``
    returns the opened run (``LoadedRun``); a part that cannot be computed is replaced by a note
    that says why, and the rest of the report is still written."""
    from layerwise.data import DataError
    from layerwise.train.run import RunDirError

    def attempt(what: str, build: Any) -> Markup:
        try:
            return build()
        except (DataError, RunDirError, ValueError, RuntimeError, KeyError, IndexError, OSError) as e:
            return note(f"{what} not shown: {e}", "warn")

    parts: list[Markup] = []
    if task == "classify":
        if (run_dir / "confusion.csv").is_file():
            parts.append(Markup("<h3>Confusion matrix (test split)</h3>") + attempt(
                "the confusion matrix", lambda: confusion_html(*read_confusion(run_dir / "confusion.csv"))))
        def worst() -> Markup:
            run = open_run()
            return worst_html(run, worst_examples(run, max_examples))

        parts.append(Markup("<h3>Worst-classified test examples</h3>") + attempt("the worst examples", worst))
        return [section("task", "Classification", *parts)]
    if task == "regress":
        return [section("task", "Regression: residuals", attempt(
            "the residual plot", lambda: residual_html(open_run(), max_examples)))]
    if task == "lm":
        return [section("task", "Language model: a sample", attempt(
            "a sample", lambda: lm_sample_html(run_dir, device)))]
    return []
