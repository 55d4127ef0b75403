"""Per-depth linear probes: how linearly separable the classes are after each block.

    depth 0   the raw input (pixels in [0, 1], audio features, table columns; text: word counts)
    depth 1   the stem's output, for families that have one (convnet, resnet, vit, text-transformer)
    depth k   the output of block k-1 of ``model.blocks``

At each depth a forward hook collects the output on a seeded sample of the training and test
splits, pools it to a fixed-size vector, standardizes it (statistics of the probe's training
sample) and fits a multinomial logistic regression (scikit-learn) on it; the probe's train and
test accuracy say how much class information a linear read-out finds there. After Alain & Bengio
2016, "Understanding intermediate layers using linear classifier probes" (arXiv:1610.01644).

Pooling. A feature map (B, C, H, W) is adaptive-average-pooled to the largest s x s grid with
C s^2 <= ``max_features`` (2048 by default; kept whole when it already fits; s >= 1, so a map with
more channels than that is globally averaged). Keeping a coarse spatial grid rather than global
average pooling matters at shallow depths: the mean of each raw-pixel channel says almost nothing
about the class, whereas a coarse grid keeps the layout the early layers encode; the same cap at
every depth keeps the probes comparable and each fit a few seconds. A ViT's patch tokens are laid
back on their grid and pooled the same way (its class token is dropped). A text encoder's tokens
(B, T, d) are averaged over the real (non-padding) tokens; its depth 0 is the bag of words:
counts of the ``max_features`` ids most frequent in the probe's training sample (a linear probe
on raw token ids would be meaningless). Flat vectors (B, D) are used as they are.

Families: convnet, resnet, mlp, vit (and audio-transformer), text-transformer. The others are
refused with the reason: gpt (a language model has no labels to probe; its attention patterns
are still drawn), ngram-bag (no blocks), ensembles, fields (fno, cnn1d), graphs (mpnn),
recommenders and agents. Only classification runs are probed.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from layerwise.data import DataError
from layerwise.train.run import RunDirError

__all__ = ["MAX_FEATURES", "ProbePoint", "bag_of_words", "collect_features", "fit_probe", "pool_features",
           "probe_points", "probe_run"]

MAX_FEATURES = 2048  # features per probe after pooling: a fit of 5000 examples takes seconds on a CPU
MAX_ITER = 500  # L-BFGS iterations per probe (fixed: the figure depends on it when a fit stops early)
BATCH = 500  # examples per forward pass while collecting features

PROBED = ("ConvNet", "ResNet", "MLP", "ViT", "TextTransformer")
REFUSED = {
    "GPT": "a language model: its data is one token stream without labels, so there is nothing for a probe "
           "to predict (its attention patterns are still drawn)",
    "NGramBag": "ngram-bag has no blocks (a bag of embeddings is one layer), so there are no depths to compare",
    "Ensemble": "an ensemble's members each have their own blocks, so a depth has no one representation; "
                "probe a run of a single model (model.ensemble=1)",
    "FNO": "a field model (fno) predicts a value at every grid point, not one class per example",
    "CNN1d": "a field model (cnn1d) predicts a value at every grid point, not one class per example",
    "MPNN": "mpnn reads molecular graphs, which have no fixed-size input for the depth-0 probe",
    "MatrixFactorization": "a recommender's inputs are (user, item) ids, not examples with classes",
    "NeuMF": "a recommender's inputs are (user, item) ids, not examples with classes",
    "AutoRec": "a recommender's inputs are rating vectors, not examples with classes",
    "ActorCritic": "a reinforcement-learning agent has no dataset with labels",
}


@dataclass
class ProbePoint:
    """One depth: ``module``'s forward output is what is probed (None for the raw input)."""

    depth: int
    name: str
    module: nn.Module | None


def probe_points(model: nn.Module) -> list[ProbePoint]:
    """Depth 0 (the input), the stem (if the family has one) and every block of ``model.blocks``.

    Raises RunDirError for a family that cannot be probed (see the module docstring), naming why."""
    kind = type(model).__name__
    if kind in REFUSED:
        raise RunDirError(f"cannot probe a {kind} model: {REFUSED[kind]}. Probes work on classification runs of "
                          f"convnet, resnet, mlp, vit and text-transformer models.")
    if kind not in PROBED:
        raise RunDirError(f"cannot probe a {kind} model: layerwise does not know where its blocks' outputs are. "
                          f"Probes work on convnet, resnet, mlp, vit and text-transformer models.")
    stems = {"ConvNet": ("stem", "stem_act"), "ResNet": ("stem", "stem"), "ViT": ("patch embedding", "patch_embed"),
             "TextTransformer": ("token embedding", "wte")}
    points = [ProbePoint(0, "input", None)]
    if kind in stems:
        label, attr = stems[kind]
        points.append(ProbePoint(1, label, getattr(model, attr)))
    for i, block in enumerate(model.blocks):
        points.append(ProbePoint(len(points), f"block {i}", block))
    if len(points) < 2:
        raise RunDirError(f"the {kind} model has no blocks (depth 0 only): there is nothing to compare with the "
                          f"raw-input probe.")
    return points


def pool_features(h: torch.Tensor, max_features: int = MAX_FEATURES, grid: tuple[int, int] | None = None,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """A block's output as one vector per example, (B, F) float32.

    h: (B, C, H, W) maps, adaptive-average-pooled to the largest s x s' grid (s <= H, s' <= W) with
    C s s' <= max_features (whole when they fit); (B, T, d) tokens, laid on ``grid`` (h, w) when given
    (a ViT: the last h w tokens are the patches) and pooled as maps, else averaged over the tokens
    where ``mask`` (B, T) is true (all when None); (B, D) vectors as they are; any other (B, ...)
    flattened. Raises ValueError for max_features < 1."""
    if max_features < 1:
        raise ValueError(f"max_features must be >= 1, got {max_features}")
    h = h.detach().float()
    if h.dim() == 3 and grid is not None:
        gh, gw = grid
        h = h[:, -gh * gw:].transpose(1, 2).reshape(h.shape[0], h.shape[2], gh, gw)  # (B, d, h, w)
    if h.dim() == 4:
        _, C, H, W = h.shape
        if C * H * W <= max_features:
            return h.flatten(1)
        s = max(1, math.isqrt(max_features // C))
        return F.adaptive_avg_pool2d(h, (min(s, H), min(s, W))).flatten(1)  # (B, C s s')
    if h.dim() == 3:
        if mask is None:
            return h.mean(1)
        w = mask.to(h.dtype)[..., None]  # (B, T, 1)
        return (h * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, d)
    return h.flatten(1)


def bag_of_words(ids: torch.Tensor, vocab: torch.Tensor) -> torch.Tensor:
    """Counts of each id of ``vocab`` (V,) in each row of ``ids`` (B, T) -> (B, V) float32 (the
    text encoder's depth-0 features)."""
    eq = ids[:, :, None] == vocab[None, None, :]  # (B, T, V)
    return eq.sum(1).float()


def frequent_ids(ids: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` most frequent non-padding ids (0 is padding) of ``ids`` (N, T) -> (<= k,) int64."""
    counts = torch.bincount(ids.flatten().long().cpu())
    if len(counts):
        counts[0] = 0
    top = torch.argsort(counts, descending=True, stable=True)[:k]
    return top[counts[top] > 0]


@torch.no_grad()
def collect_features(model: nn.Module, forward: Any, x: torch.Tensor, points: list[ProbePoint],
                     max_features: int = MAX_FEATURES, vocab: torch.Tensor | None = None,
                     batch: int = BATCH) -> list[np.ndarray]:
    """Pooled features of every probe point on inputs x (N, ...): a list of (N, F_k) float32 arrays.

    ``forward(x_batch)`` runs the model (e.g. the run's PixelModel); forward hooks on each point's
    module catch its output. Depth 0 is x itself (token ids: :func:`bag_of_words` over ``vocab``).
    Raises DataError when a block's output is not finite (a diverged run)."""
    kind = type(model).__name__
    grid = None
    if kind == "ViT":
        H, W = model.in_shape[1:]
        grid = (H // model.patch[0], W // model.patch[1])
    out: list[list[torch.Tensor]] = [[] for _ in points]
    caught: dict[int, torch.Tensor] = {}
    handles = []
    for p in points:
        if p.module is not None:
            handles.append(p.module.register_forward_hook(
                lambda _m, _i, o, d=p.depth: caught.__setitem__(d, o[0] if isinstance(o, tuple) else o)))
    try:
        for start in range(0, len(x), batch):
            xb = x[start:start + batch]
            caught.clear()
            forward(xb)
            mask = xb != 0 if kind == "TextTransformer" else None
            for p in points:
                if p.module is None:
                    f = bag_of_words(xb, vocab.to(xb.device)) if vocab is not None else pool_features(xb, max_features)
                else:
                    f = pool_features(caught[p.depth], max_features, grid if p.depth > 1 else None, mask)
                out[p.depth].append(f.cpu())
    finally:
        for h in handles:
            h.remove()
    feats = [torch.cat(o).numpy() for o in out]
    for p, f in zip(points, feats, strict=True):
        if not np.isfinite(f).all():
            raise DataError(f"the output of {p.name} (depth {p.depth}) has NaN or infinite values on the probe's "
                            f"examples: the model diverged or its weights are damaged; probe a run that trained "
                            f"normally.")
    return feats


def fit_probe(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray, seed: int = 0,
              max_iter: int = MAX_ITER) -> dict[str, Any]:
    """Standardize (the training sample's mean and std), fit a multinomial logistic regression
    (L2, C = 1, L-BFGS, ``max_iter`` iterations, ``random_state=seed``) and score it.

    f_*: (N, F) features; y_*: (N,) int class labels. Returns {"train_accuracy", "test_accuracy"
    (fractions in [0, 1]), "n_iter", "converged"}. Raises DataError when the training labels hold
    a single class (a sample too small)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_train)) < 2:
        raise DataError(f"the probe's {len(y_train)} training examples all have one class: there is nothing to "
                        f"separate. Use a larger --train-n.")
    scaler = StandardScaler().fit(f_train)
    clf = LogisticRegression(C=1.0, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as "converged": False instead
        clf.fit(scaler.transform(f_train), y_train)
    n_iter = int(np.max(clf.n_iter_))
    return {"train_accuracy": float(clf.score(scaler.transform(f_train), y_train)),
            "test_accuracy": float(clf.score(scaler.transform(f_test), y_test)),
            "n_iter": n_iter, "converged": n_iter < max_iter}


def _check_numbers(seed: Any, **sizes: Any) -> None:
    """ValueError unless every size is a positive integer and ``seed`` an integer in 0 .. 2**32 - 1
    (it draws the examples and seeds scikit-learn's fit, which takes no other): checked before
    any work rather than failing after the features are collected."""
    for key, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{key} must be a positive integer, got {n!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer from 0 to 2**32 - 1 (it draws the examples and seeds the "
                         f"probes' fits), got {seed!r}.")


def probe_run(run: Any, train_n: int = 5000, test_n: int = 2000, seed: int = 0,
              max_features: int = MAX_FEATURES, max_iter: int = MAX_ITER) -> dict[str, Any]:
    """Probe every depth of an opened run (:class:`layerwise.insight.LoadedRun`).

    Returns {"depths": [{"depth", "name", "shape" (a block output's per-example shape), "features",
    "train_accuracy", "test_accuracy", "n_iter", "converged"}, ...], "chance": the test sample's
    majority-class fraction, "train_n", "test_n" (examples used), ...}. Raises RunDirError for a run
    that cannot be probed (a family without blocks, a language model, a regression run), DataError
    for data it cannot use, ValueError for bad sizes or a seed outside 0 .. 2**32 - 1."""
    _check_numbers(seed, train_n=train_n, test_n=test_n, max_features=max_features, max_iter=max_iter)
    model = run.model
    if run.info.task != "classify":
        raise RunDirError(f"'{run.path}' is a {run.info.task} run; a linear probe here is a classifier and needs "
                          f"class labels. Probe a classification run (images, audio, text classes, tables with "
                          f"a class column).")
    points = probe_points(model)
    x_tr, y_tr = run.examples("train", train_n, seed)
    x_te, y_te = run.examples("test", test_n, seed)
    forward = run.pixel_model() if run.has_pixels else model
    vocab = None if run.has_pixels else frequent_ids(x_tr, max_features)
    shapes: dict[int, tuple[int, ...]] = {}
    hooks = [p.module.register_forward_hook(
        lambda _m, _i, o, d=p.depth: shapes.__setitem__(d, tuple((o[0] if isinstance(o, tuple) else o).shape[1:])))
        for p in points if p.module is not None]
    try:
        with torch.no_grad():
            forward(x_tr[:2])
    finally:
        for h in hooks:
            h.remove()
    shapes[0] = tuple(x_tr.shape[1:])
    f_tr = collect_features(model, forward, x_tr, points, max_features, vocab)
    f_te = collect_features(model, forward, x_te, points, max_features, vocab)
    y_tr_np, y_te_np = y_tr.cpu().numpy(), y_te.cpu().numpy()
    rows = []
    for p, a, b in zip(points, f_tr, f_te, strict=True):
        fit = fit_probe(a, y_tr_np, b, y_te_np, seed, max_iter)
        rows.append({"depth": p.depth, "name": p.name, "shape": list(shapes[p.depth]), "features": int(a.shape[1]),
                     **fit})
    counts = np.bincount(y_te_np)
    result = {"model": type(model).__name__, "dataset": run.info.name, "train_n": len(y_tr_np),
              "test_n": len(y_te_np), "seed": seed, "max_features": max_features, "max_iter": max_iter, "C": 1.0,
              "chance": float(counts.max() / counts.sum()), "depths": rows,
              "depth0": "bag of words" if vocab is not None else "raw input"}
    unseen = np.setdiff1d(y_te_np, y_tr_np)
    if len(unseen):  # a probe never predicts a class it was not fit on: the test accuracy is capped
        cap = float(np.isin(y_te_np, y_tr_np).mean())
        result["note"] = (f"{len(unseen)} of the test sample's classes {'are' if len(unseen) > 1 else 'is'} not in the "
                          f"training sample, so no probe can predict {'them' if len(unseen) > 1 else 'it'}: test "
                          f"accuracy is at most {100 * cap:.2f}% here. Use a larger --train-n.")
    return result


def _attention_picture(run: Any, out_dir: Any, layer: int, head: int, seed: int) -> Any:
    """attention.png: head ``head`` of block ``layer`` on one test example (a language model: the
    first tokens of its test text). Returns the path, or None for a model without attention."""
    from layerwise.insight.attention import attention_weights
    from layerwise.insight.probe_plots import plot_attention

    model = run.model
    if not all(hasattr(b, "attn") for b in getattr(model, "blocks", ())) or not len(model.blocks):
        return None
    kind, labels, image, grid = type(model).__name__, None, None, None
    tok = getattr(run.dataset, "tokenizer", None) if not run.has_pixels else None
    if run.info.task == "lm":
        # the test text's first T tokens, in the run's own tokenizer (the one saved with the model:
        # a dataset loaded without the run's config may have built another vocabulary)
        from layerwise.data.tokenizers import tokenizer_from_dict

        T = min(64, getattr(model, "block_size", 64))
        ds = run.dataset
        saved = run.info.extra.get("tokenizer")
        tok = tokenizer_from_dict(saved) if saved else ds.tokenizer
        ids = ds.x_test[: 4 * T].tolist()
        if tok is not ds.tokenizer:
            ids = tok.encode(ds.tokenizer.decode(ids))
        x = torch.tensor(ids[:T], dtype=torch.long, device=run.device)[None]  # (1, T)
        forward = model
    else:
        x, _ = run.examples("test", 1, seed)
        forward = run.pixel_model() if run.has_pixels else model
        if kind == "TextTransformer":
            x = x[:, : max(1, int((x[0] != 0).sum()))]  # the real tokens (padding is at the end)
    w = attention_weights(model, forward, x, layer)[0, head]  # (T, T)
    if tok is not None and hasattr(tok, "decode"):
        offset = int((run.info.extra.get("text") or {}).get("id_offset", 0))  # text classes: ids shifted past PAD
        labels = [tok.decode([int(i) - offset]).replace("\n", "\\n") or "?" for i in x[0].tolist()]
    if kind == "ViT":
        H, W = model.in_shape[1:]
        image, grid = x[0], (H // model.patch[0], W // model.patch[1])
    path = out_dir / "attention.png"
    on = "the first tokens of the test text" if run.info.task == "lm" else "one test example"
    plot_attention(w, path, f"{kind}: attention of head {head} in block {layer}, on {on}", labels, image, grid)
    return path


def _check_attention_args(model: nn.Module, layer: int, head: int) -> None:
    """--layer and --head name a block and a head of a transformer (checked before any work);
    other models draw no attention and ignore them."""
    blocks = getattr(model, "blocks", ())
    if not len(blocks) or not all(hasattr(b, "attn") and hasattr(b.attn, "n_head") for b in blocks):
        return
    if not -len(blocks) <= layer < len(blocks):
        raise ValueError(f"--layer {layer} is out of range: the model has {len(blocks)} blocks (0 .. "
                         f"{len(blocks) - 1}).")
    nh = blocks[0].attn.n_head
    if not -nh <= head < nh:
        raise ValueError(f"--head {head} is out of range: the model's blocks have {nh} heads (0 .. {nh - 1}).")


OUTPUTS = ("probe.json", "probe.png", "filters.png", "attention.png")  # what `layerwise probe` writes


def _check_out(out: Any, source: str) -> None:
    """``out`` may be new, hold none of :data:`OUTPUTS`, or hold an earlier probe of the same run
    ``source`` (its probe.json's "run"), which a new probe replaces; otherwise RunDirError, since
    writing would destroy another run's results (as `layerwise train` refuses a used --run.dir)."""
    import json

    if not out.is_dir():
        return
    found = [n for n in OUTPUTS if (out / n).exists()]
    if not found:
        return
    try:
        earlier = json.loads((out / "probe.json").read_text()).get("run")
    except (OSError, ValueError, AttributeError):  # no probe.json, or not a probe's
        earlier = None
    if earlier != source:
        whose = f"the probe of another run ({earlier})" if earlier else "files of an earlier probe or another command"
        raise RunDirError(f"--out '{out}' already holds {', '.join(found)}: {whose}, which this probe would overwrite. "
                          f"Give another --out (those files are left as they are), or delete them to probe again.")


def format_table(result: dict[str, Any]) -> str:
    """The per-depth table printed by `layerwise probe`."""
    head = f"{'depth':>5}  {'layer':<18} {'output shape':<16} {'features':>8}  {'train acc':>9}  {'test acc':>8}"
    lines = [head, "-" * len(head)]
    for r in result["depths"]:
        shape = "x".join(str(s) for s in r["shape"])
        flag = "" if r["converged"] else "  (not converged)"
        lines.append(f"{r['depth']:>5}  {r['name']:<18} {shape:<16} {r['features']:>8}  "
                     f"{100 * r['train_accuracy']:>8.2f}%  {100 * r['test_accuracy']:>7.2f}%{flag}")
    lines.append(f"chance (majority class of the test sample): {100 * result['chance']:.2f}%; depth 0 = "
                 f"{result['depth0']}; {result['train_n']} train / {result['test_n']} test examples")
    if "note" in result:
        lines.append(f"note: {result['note']}")
    return "\n".join(lines)


def probe(run_dir: Any, train_n: int = 5000, test_n: int = 2000, seed: int = 0, out: Any = None,
          device: str = "auto", data_root: str = "", max_features: int = MAX_FEATURES, max_iter: int = MAX_ITER,
          layer: int = 0, head: int = 0) -> dict[str, Any]:
    """``layerwise probe RUN_DIR``: per-depth linear probes (:func:`probe_run`) of a run directory,
    a model file or ``pretrained:NAME`` (its data from ``data_root``), and their pictures.

    Writes into ``out`` (default RUN_DIR/probe; for pretrained:NAME, ./probe-NAME; an ``out`` holding
    another run's probe or other files of those names is refused): probe.json (the result, with
    "run": whose probe it is), probe.png (accuracy against depth), filters.png (first-layer filters of a model with a
    convolution) and attention.png (head ``head`` of block ``layer`` of a transformer). A language
    model is not probed (no labels) but its attention is drawn; the result then has "refused"
    with the reason and no "depths". Returns the result with "files" (the paths written).
    Raises RunDirError / DataError / ConfigError (pretrained names) / ValueError (sizes, seed) /
    TypeError (a path or --layer/--head of another type) with the problem and its fix; nothing is written before the probes succeed."""
    import json
    from pathlib import Path

    from layerwise.insight.probe_plots import (
        first_layer_filters,
        plot_filters,
        plot_probe,
    )
    from layerwise.insight.runs import open_run
    from layerwise.models.pretrained import PREFIX

    for key, n in (("layer", layer), ("head", head)):
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{key} must be an integer, got {n!r}.")
    for key, v in (("run_dir", run_dir), ("out", out), ("data_root", data_root)):
        if not (isinstance(v, (str, os.PathLike)) or (v is None and key == "out")):
            raise TypeError(f"{key} must be a path (str or pathlib.Path), got {type(v).__name__} {v!r}.")
    # before the model and the data are loaded
    _check_numbers(seed, train_n=train_n, test_n=test_n, max_features=max_features, max_iter=max_iter)
    run = open_run(run_dir, device, data_root)
    if out is None:
        spec = str(run_dir)
        out = Path(f"probe-{spec[len(PREFIX):]}") if spec.startswith(PREFIX) else run.path / "probe"
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out '{out}' is a file; give a directory for the probe's results.")
    source = str(run_dir) if str(run_dir).startswith(PREFIX) else str(run.path.resolve())
    _check_out(out, source)
    _check_attention_args(run.model, layer, head)
    kind = type(run.model).__name__
    if run.info.task == "lm":
        result: dict[str, Any] = {"model": kind, "dataset": run.info.name, "refused": REFUSED["GPT"]}
    else:
        result = probe_run(run, train_n, test_n, seed, max_features, max_iter)
    result["run"] = source  # whose probe this is: a later probe into the same --out checks it
    out.mkdir(parents=True, exist_ok=True)
    files = []
    if "depths" in result:
        files.append(plot_probe(result, out / "probe.png"))
    weight = first_layer_filters(run.model)
    if weight is not None and weight.dim() == 4:
        files.append(plot_filters(weight, out / "filters.png", f"{kind}: first-layer filters "
                                  f"({weight.shape[0]} x {weight.shape[1]} x {weight.shape[2]} x {weight.shape[3]})"))
    attention = _attention_picture(run, out, layer, head, seed)
    if attention is not None:
        files.append(attention)
    result["files"] = [str(p) for p in files] + [str(out / "probe.json")]
    tmp = out / "probe.json.tmp"
    tmp.write_text(json.dumps({k: v for k, v in result.items() if k != "files"}, indent=2) + "\n")
    tmp.replace(out / "probe.json")
    return result
