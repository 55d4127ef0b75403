"""Attributions: which parts of an input a trained model's prediction rests on (Captum).

    layerwise explain RUN_DIR INPUT... [--method ig|saliency|gradcam|occlusion] [--target CLASS]

Methods (Captum 0.9, https://captum.ai):
    ig         Integrated Gradients (Sundararajan et al. 2017): the path integral of the gradient
               from a baseline to the input, n_steps Riemann points (Gauss-Legendre), evaluated
               ``internal_batch_size`` rows at a time so that a batch x steps never sits in memory
               at once. Its completeness axiom, sum(attr) = F(x) - F(baseline), is checked per input.
    saliency   the absolute input gradient (Simonyan et al. 2014).
    gradcam    Grad-CAM (Selvaraju et al. 2017) on the last conv stage of a convnet or resnet, on
               the last block's patch tokens of a vit (laid back on the patch grid), upsampled to the
               input.
    occlusion  the drop of the target's output when a window is set to the baseline (Zeiler &
               Fergus 2014); one feature at a time for tables, one token at a time for text.

Inputs live in pixel space (layerwise.insight.runs): images in [0, 1], audio log-mel features and
table rows as raw / scale. Baselines: ``zero`` is the black image (the default for images);
``mean`` is the dataset's mean, i.e. 0 after the run's normalization (the default for audio and
tables, whose zero is not "no signal"). Text models see token ids: attributions are taken on the
token embeddings (Captum's layer methods), with the padding embedding (the zero vector) as the
baseline; ngram-bag, whose bag is a parameter indexed by n-gram rows, gets a weight per n-gram
row (1 = present, 0 = absent), and a bigram's share is split between its two words.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from layerwise.config import ConfigError
from layerwise.insight.explain_checks import (  # noqa: F401  (MAX_STEPS, METHODS: part of this module's face)
    MAX_STEPS,
    METHODS,
    check_arguments,
    check_inputs,
    check_outputs,
    resolve_target,
)
from layerwise.insight.runs import LoadedRun
from layerwise.train.run import RunDirError

BASELINES = ("auto", "zero", "mean")


def modality(run: LoadedRun) -> str:
    """``image``, ``audio``, ``table`` or ``text`` for a run explain can take; RunDirError naming
    the kind of run otherwise (language models, ratings, molecules, fields)."""
    x, info = run.info.extra, run.info
    if info.task == "lm":
        raise RunDirError(f"the run in '{run.path}' is a language model ({info.name}); explain works on "
                          f"classifiers and regressors of images, audio, tables and text. Sample it with "
                          f"`layerwise generate {run.path}`.")
    if "molecules" in x or x.get("inputs") == "indices" or "field" in x:
        kind = "molecules" if "molecules" in x else "ratings" if x.get("inputs") == "indices" else "fields"
        raise RunDirError(f"the run in '{run.path}' was trained on {kind} ({info.name}); explain takes runs on "
                          f"images, audio, tables and text. Use `layerwise predict {run.path} ...` for it.")
    if "text" in x:
        return "text"
    if "audio" in x:
        return "audio"
    if len(info.in_shape) == 1:
        return "table"
    if len(info.in_shape) == 3:
        return "image"
    raise RunDirError(f"the run in '{run.path}' takes inputs of shape {tuple(info.in_shape)} ({info.name}); "
                      f"explain takes images (C, H, W), audio features, table rows and text.")


def supported_methods(run: LoadedRun) -> tuple[str, ...]:
    """The methods this run's modality and model family allow."""
    kind = modality(run)
    if kind in ("text", "table"):
        return ("ig", "saliency", "occlusion")
    return METHODS if gradcam_layer_kind(run.model) else ("ig", "saliency", "occlusion")


def gradcam_layer_kind(model: nn.Module) -> str:
    """``conv`` (convnet, resnet: the last stage's output), ``tokens`` (vit: the last block's
    tokens) or "" when the family has no layer Grad-CAM is defined on."""
    from layerwise.models.convnet import ConvNet
    from layerwise.models.resnet import ResNet
    from layerwise.models.transformer import ViT

    return "conv" if isinstance(model, (ConvNet, ResNet)) else "tokens" if isinstance(model, ViT) else ""


class TokenGrid(nn.Module):
    """A vit whose last block's patch tokens (B, N, d) pass through ``self.grid`` as a feature map
    (B, d, h, w) on the patch grid (the [CLS] token, if any, is left aside), so that Grad-CAM's
    channel weights are per embedding dimension and its map is per patch (Chefer et al. 2021 use
    the same last-block tokens). ``forward(x)`` equals ``model(x)``."""

    def __init__(self, model: nn.Module, vit: nn.Module):
        super().__init__()
        self.model, self.vit = model, vit
        self.grid = nn.Identity()  # Grad-CAM's layer: its output is (B, d, h, w)
        _, H, W = vit.in_shape
        self.hw = (H // vit.patch[0], W // vit.patch[1])

    def _through_grid(self, _m: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
        cls = out.shape[1] - self.hw[0] * self.hw[1]
        B, _, d = out.shape
        g = out[:, cls:].transpose(1, 2).reshape(B, d, *self.hw)  # (B, d, h, w)
        tokens = self.grid(g).reshape(B, d, -1).transpose(1, 2)  # back to (B, N, d)
        return torch.cat([out[:, :cls], tokens], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        handle = self.vit.blocks[-1].register_forward_hook(self._through_grid)
        try:
            return self.model(x)
        finally:
            handle.remove()


class BagPresence(nn.Module):
    """ngram-bag's forward with a weight per n-gram row: ``forward(w, ids)`` with w (B, R) float,
    ids (B, R) = model.ngram_ids(x); w = 1 everywhere gives model(x) exactly (tested), w = 0 the
    empty bag. Written against NGramBag.forward_features (layerwise.models.text)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, w: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        m = self.model
        vec = m.bag[ids] * (m.nb_ratio[ids] * w)[..., None]  # (B, R, d)
        mask = (ids != 0).to(vec.dtype)[..., None]
        h = (vec * mask).sum(1)  # (B, d)
        h = h / mask.sum(1).clamp_min(1.0) if m.pool == "mean" else h
        return m.forward_head(h)


def bag_rows_to_tokens(model: nn.Module, x: torch.Tensor, ids: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per-row attributions a (B, R) of an ngram-bag over its rows ids (B, R) -> per-token (B, T):
    a word's row is shared among the positions holding that word, a bigram's row half to each of
    the two words of every position pair hashing to it. The tokens' sum equals the rows' sum.
    Rows are renumbered to the ones present (the bag may have a million bucket rows)."""
    B, T = x.shape
    if getattr(model, "ngrams", 1) == 2 and T > 1:
        pairs = torch.stack([x[:, :-1], x[:, 1:]], -1).reshape(-1, 2)  # every adjacent pair (B (T-1), 2)
        h = model.ngram_ids(pairs)[:, -1].reshape(B, T - 1)  # its bigram row, the largest id of the pair's
        h = torch.where(h >= model.vocab_size, h, 0)  # (binary sorts them); a word id: no bigram (padding)
    else:
        h = x[:, :0]
    uniq, inv = torch.unique(torch.cat([ids.flatten(), x.flatten(), h.flatten()]), return_inverse=True)
    n_ids, n_x = ids.numel(), x.numel()
    cid, cx, ch = inv[:n_ids].view_as(ids), inv[n_ids:n_ids + n_x].view_as(x), inv[n_ids + n_x:].view_as(h)
    S = torch.zeros(B, len(uniq), dtype=a.dtype, device=a.device).scatter_add_(1, cid, a)  # row -> total
    S[:, uniq == 0] = 0  # padding
    ones = torch.ones_like(x, dtype=a.dtype)
    cnt = torch.zeros_like(S).scatter_add_(1, cx, ones)
    out = (S.gather(1, cx) / cnt.gather(1, cx)) * (x != 0)
    if h.shape[1]:
        cnt = torch.zeros_like(S).scatter_add_(1, ch, ones[:, :-1])
        share = 0.5 * S.gather(1, ch) / cnt.gather(1, ch).clamp_min(1.0) * (h != 0)  # (B, T-1)
        out[:, :-1] += share
        out[:, 1:] += share
    return out


@dataclass
class Attribution:
    """Attributions for a batch: ``attr`` (B, *in_shape) in pixel space, or (B, T) per token;
    ``gap`` (B,) the IG completeness gap sum(attr) - (F(x) - F(baseline)) and ``delta_f`` (B,)
    F(x) - F(baseline) (both None for other methods)."""

    attr: torch.Tensor
    gap: torch.Tensor | None = None
    delta_f: torch.Tensor | None = None


def _occlusion_window(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sliding window and strides for an input (C, H, W): all channels, ~1/7 of each side (at
    least 1), stride half the window; a window of one feature for other shapes."""
    if len(shape) != 3:
        return (1,) * len(shape), (1,) * len(shape)
    C, H, W = shape
    k = [max(1, s // 7) for s in (H, W)]
    return (C, k[0], k[1]), (C, max(1, k[0] // 2), max(1, k[1] // 2))


def attribute(f: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, baseline: torch.Tensor, *,
              steps: int = 50, internal_batch_size: int = 64, gradcam: str = "") -> Attribution:
    """Attributions of ``f``'s output ``target`` (B,) for inputs x (B, *in_shape) float, in the
    space of x (pixel space when f is a PixelModel). ``baseline`` broadcasts to x (ig, occlusion).
    ``gradcam``: ``conv`` or ``tokens`` (see :func:`gradcam_layer_kind`); the map is upsampled
    bilinearly to (H, W) and returned as (B, 1, H, W). Raises ConfigError for an unknown method."""
    from captum.attr import (
        IntegratedGradients,
        LayerAttribution,
        LayerGradCam,
        Occlusion,
        Saliency,
    )

    x = x.detach().clone().requires_grad_(method in ("saliency", "gradcam"))  # (Captum warns otherwise)
    if method == "ig":
        b = baseline.expand_as(x).contiguous()
        attr, gap = IntegratedGradients(f).attribute(x, baselines=b, target=target, n_steps=steps,
                                                     internal_batch_size=internal_batch_size,
                                                     return_convergence_delta=True)
        with torch.no_grad():
            idx = target[:, None]
            delta_f = f(x).gather(1, idx)[:, 0] - f(b).gather(1, idx)[:, 0]
        return Attribution(attr.detach(), gap.detach(), delta_f)
    if method == "saliency":
        return Attribution(Saliency(f).attribute(x, target=target, abs=True).detach())
    if method == "occlusion":
        win, stride = _occlusion_window(tuple(x.shape[1:]))
        a = Occlusion(f).attribute(x, sliding_window_shapes=win, strides=stride,
                                   baselines=baseline.expand_as(x[:1])[0], target=target,
                                   perturbations_per_eval=max(1, internal_batch_size // len(x)))
        return Attribution(a.detach())
    if method == "gradcam":
        model = f.model if hasattr(f, "model") else f
        if gradcam == "tokens":
            wrapped = TokenGrid(f, model)
            g = LayerGradCam(wrapped, wrapped.grid)
        elif gradcam == "conv":
            wrapped, g = f, LayerGradCam(f, model.blocks[-1])
        else:
            raise ConfigError("gradcam needs a convnet, resnet or vit; use --method ig, saliency or occlusion.")
        cam = g.attribute(x, target=target, relu_attributions=True)  # (B, 1, h, w)
        return Attribution(LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear").detach())
    raise ConfigError(f"unknown --method '{method}'; choose one of {', '.join(METHODS)}.")


def attribute_tokens(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, *, steps: int = 50,
                     internal_batch_size: int = 64) -> Attribution:
    """Per-token attributions (B, T) of a text classifier's output ``target`` (B,) for padded
    token ids x (B, T) (0 = padding; padding positions get 0). ig: LayerIntegratedGradients on the
    token embedding (text-transformer: ``wte``; summed over its n_embd dimensions) from the padding
    embedding, or IG over the ngram-bag's per-row weights from the empty bag; saliency: the L2
    norm of the gradient at each token's embedding (Li et al. 2016), or |dF/dw| per bag row;
    occlusion: the drop of the output when a token is replaced by padding (Captum's
    FeatureAblation). Raises ConfigError for another family or method."""
    from captum.attr import (
        FeatureAblation,
        IntegratedGradients,
        LayerGradientXActivation,
        LayerIntegratedGradients,
        Saliency,
    )

    from layerwise.models.text import NGramBag, TextTransformer

    pad = x != 0
    if method == "occlusion":
        a = FeatureAblation(model).attribute(x, baselines=0, target=target,
                                             perturbations_per_eval=max(1, internal_batch_size // len(x)))
        return Attribution(a.detach().float() * pad)
    if method not in ("ig", "saliency"):
        raise ConfigError(f"--method {method} is not defined for text models; choose ig, saliency or occlusion.")
    if isinstance(model, TextTransformer):
        if method == "ig":
            a = LayerIntegratedGradients(model, model.wte).attribute(
                x, baselines=torch.zeros_like(x), target=target, n_steps=steps,
                internal_batch_size=internal_batch_size)
            # The path ends at the padding embedding (zero) under the input's own attention mask;
            # Captum's own delta would run the all-padding sequence instead, so F(baseline) is taken here.
            with torch.no_grad():
                idx = target[:, None]
                f_x = model(x).gather(1, idx)[:, 0]
                handle = model.wte.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out))
                try:
                    f_b = model(x).gather(1, idx)[:, 0]
                finally:
                    handle.remove()
            a = a.sum(-1).detach() * pad
            gap = a.sum(1) - (f_x - f_b)
            return Attribution(a, gap, f_x - f_b)
        # gradient x activation with the activation divided out is the gradient; its norm per token
        g = LayerGradientXActivation(model, model.wte, multiply_by_inputs=False).attribute(x, target=target)
        return Attribution(g.detach().norm(dim=-1) * pad)
    if isinstance(model, NGramBag):
        ids = model.ngram_ids(x)
        f = BagPresence(model)
        ones = torch.ones(ids.shape, dtype=torch.float32, device=x.device)
        if method == "ig":
            a, gap = IntegratedGradients(f).attribute(ones, baselines=torch.zeros_like(ones), target=target,
                                                      additional_forward_args=(ids,), n_steps=steps,
                                                      internal_batch_size=internal_batch_size,
                                                      return_convergence_delta=True)
            with torch.no_grad():
                idx = target[:, None]
                delta_f = f(ones, ids).gather(1, idx)[:, 0] - f(torch.zeros_like(ones), ids).gather(1, idx)[:, 0]
            return Attribution(bag_rows_to_tokens(model, x, ids, a.detach()), gap.detach(), delta_f)
        a = Saliency(f).attribute(ones, target=target, abs=True, additional_forward_args=(ids,))
        return Attribution(bag_rows_to_tokens(model, x, ids, a.detach()))
    raise ConfigError(f"explain does not know how a {type(model).__name__} embeds its tokens; text runs of "
                      f"text-transformer and ngram-bag are supported.")


def completeness(a: Attribution, tolerance: float) -> list[dict[str, float] | None]:
    """Per input: {"gap": sum(attr) - (F(x) - F(b)), "delta_f": F(x) - F(b), "relative": |gap| /
    max(|delta_f|, sum |attr|)}, with a warning when relative exceeds ``tolerance`` (Sundararajan
    et al. 2017, section 3: completeness; more steps shrink the gap). The total attribution mass
    sum |attr| joins the denominator so that an input close to its baseline (delta_f near 0, e.g.
    a table row near the mean) does not turn a tiny gap into a large ratio."""
    if a.gap is None:
        return [None] * len(a.attr)
    mass = a.attr.reshape(len(a.attr), -1).abs().sum(1).tolist()
    out = []
    for g, d, s in zip(a.gap.tolist(), a.delta_f.tolist(), mass, strict=True):
        rel = abs(g) / max(abs(d), s, 1e-6)
        out.append({"gap": g, "delta_f": d, "relative": rel})
    bad = [i for i, c in enumerate(out) if c["relative"] > tolerance or not math.isfinite(c["relative"])]
    if bad:
        worst = max(out[i]["relative"] for i in bad)
        warnings.warn(f"Integrated Gradients' completeness gap exceeds {tolerance:.0%} (relative) for "
                      f"{len(bad)} of {len(out)} inputs (worst {worst:.1%}); raise --steps for a finer path "
                      f"integral.", stacklevel=2)
    return out


def baseline_for(run: LoadedRun, kind: str, choice: str) -> torch.Tensor:
    """The baseline in pixel space, shaped (1, *in_shape): ``zero`` (black) or ``mean`` (the
    dataset's per-channel / per-feature mean); ``auto`` is zero for images, mean otherwise."""
    if choice not in BASELINES:
        raise ConfigError(f"unknown --baseline '{choice}'; choose one of {', '.join(BASELINES)}.")
    if choice == "auto":
        choice = "zero" if kind == "image" else "mean"
    shape = (1,) + tuple(run.info.in_shape)
    if choice == "zero":
        return torch.zeros(shape, device=run.device)
    K = run.info.in_shape[0]
    m = torch.tensor(run.info.mean, dtype=torch.float32, device=run.device).view((1, K) + (1,) * (len(shape) - 2))
    return m.expand(shape).contiguous()


def feature_names(run: LoadedRun) -> list[str]:
    """Names of a table model's input features (after encoding: indicator columns included)."""
    enc = run.info.extra.get("table", {})
    names = list(enc.get("features") or enc.get("columns") or [])
    F = run.info.in_shape[0]
    return names if len(names) == F else [f"x{i}" for i in range(F)]


def _read(run: LoadedRun, kind: str, inputs: list[str], invert: str) -> tuple[list[str], torch.Tensor]:
    """Input files -> names and a batch (pixel space, or token ids for text)."""
    from layerwise.config import DataConfig
    from layerwise.data.inputs import load_inputs, text_lines

    limit = getattr(run.cfg.data, "max_image_pixels", None) if run.cfg is not None else None
    limit = DataConfig().max_image_pixels if limit is None else limit
    names, xs = [], []
    for path in inputs:
        x = load_inputs(path, run.info, invert, limit)
        names += ([f"{path}:{n}" for n, _ in text_lines(path)] if kind == "text" else
                  [path] if len(x) == 1 else [f"{path}[{i}]" for i in range(len(x))])
        xs.append(x)
    if kind == "text":
        T = max(x.shape[1] for x in xs)
        x = torch.cat([torch.nn.functional.pad(x, (0, T - x.shape[1])) for x in xs])
    else:
        x = torch.cat([x.float() for x in xs]) / run.info.scale
    return names, x.to(run.device)


def explain(run_dir: str | Any, inputs: list[str] | tuple[str, ...] = (), *, method: str = "ig", split: str | None = None,
            n: int = 8, seed: int = 0, target: str | int | None = None, steps: int = 50,
            internal_batch_size: int = 64, baseline: str = "auto", tolerance: float = 0.05, device: str = "auto",
            data_root: str = "", invert: str = "auto") -> list[dict[str, Any]]:
    """Attributions for each example of ``inputs`` (files read as `layerwise predict` reads them)
    or of ``n`` examples of a ``split`` (test or train), for the predicted class or ``target``.

    Returns one dict per example: "input" (its name), "predicted" (class name, or None for a
    regressor or multilabel model), "probability" (of the predicted class; multilabel: the
    explained label's sigmoid, with "labels", those over the threshold; the attributions are of
    its logit) or "value" (a regressor's output in its units; the attributions are of the model's
    standardized output), "target" / "target_name" (the explained output), "x" (the input: pixel
    space (*in_shape) or token ids (T,), on the CPU), "attribution" (same shape as x; per token
    for text), "tokens" (text: the strings of x's ids, "" for padding), "features" (tables: the
    feature names), "baseline" (the one ig and occlusion used: zero, mean or padding; None for
    the others) and "completeness" (ig: {"gap", "delta_f", "relative"}, else None; a warning
    when relative > ``tolerance``). ``steps``: IG's Riemann points; ``internal_batch_size``: rows
    per forward pass (IG's path points, occlusion's windows, the prediction pass) to bound memory.
    Raises ConfigError (unknown method, a method the family lacks, bad --target, an argument of
    the wrong type or range, both/neither of inputs and split, --baseline mean for text),
    DataError (unreadable or NaN input, a non-finite output) or RunDirError (a run explain cannot
    take: language models, ratings, molecules, fields; NaN weights)."""
    from pathlib import Path

    from layerwise.insight.runs import open_run

    if not isinstance(run_dir, (str, Path)):
        what = "a torch module" if isinstance(run_dir, nn.Module) else f"a value of type {type(run_dir).__name__}"
        raise ConfigError(f"explain takes a run directory, a model.safetensors path or 'pretrained:NAME', not {what}. "
                          f"For a model in memory call layerwise.insight.explain.attribute(model, x, target, "
                          f"method, baseline) on a batch x.")
    inputs = check_arguments(inputs, method, split, n, steps, internal_batch_size, tolerance, target, seed)
    run = open_run(run_dir, device, data_root)
    kind = modality(run)
    allowed = supported_methods(run)
    if method not in allowed:
        raise ConfigError(f"--method {method} is not defined for a {type(run.model).__name__} {kind} model "
                          f"(Grad-CAM needs a convnet or resnet's conv stages or a vit's patch tokens); choose "
                          f"{', '.join(allowed)}.")
    if kind == "text" and baseline == "mean":  # token ids have no mean; the path starts at padding
        raise ConfigError("--baseline mean is not defined for text: a text model's baseline is the padding "
                          "embedding (zero), or the empty bag for an ngram-bag. Leave --baseline auto.")
    k = resolve_target(run, target)
    if inputs:
        names, x = _read(run, kind, list(inputs), invert)
    else:
        x, _ = run.examples(split, n, seed)
        names = [f"{split}[{i}]" for i in range(len(x))]
    check_inputs(x, names)
    f = run.model if kind == "text" else run.pixel_model()
    with torch.no_grad():  # in chunks, as the attributions below: a large --n never runs as one batch
        out = torch.cat([f(x[i:i + internal_batch_size]) for i in range(0, len(x), internal_batch_size)])
    check_outputs(run, out, names)
    present = run.task.present(out, 1)
    if run.info.task in ("classify", "multilabel"):  # multilabel: the most probable label (its largest logit)
        pred = out.argmax(1)
    else:  # regress: the first output unless --target names one
        pred = torch.zeros(len(x), dtype=torch.long, device=x.device)
    tgt = pred if k is None else torch.full_like(pred, k)
    base, cam, parts = None if kind == "text" else baseline_for(run, kind, baseline), gradcam_layer_kind(run.model), []
    # the baseline ig and occlusion used, by name, for summary.json ("auto" resolved)
    used = (None if method in ("saliency", "gradcam") else "padding" if kind == "text" else
            baseline if baseline != "auto" else "zero" if kind == "image" else "mean")
    for i in range(0, len(x), internal_batch_size):  # examples in chunks too: --n 10000 stays in memory
        xi, ti = x[i:i + internal_batch_size], tgt[i:i + internal_batch_size]
        parts.append(attribute_tokens(run.model, xi, ti, method, steps=steps, internal_batch_size=internal_batch_size)
                     if kind == "text" else
                     attribute(f, xi, ti, method, base, steps=steps, internal_batch_size=internal_batch_size,
                               gradcam=cam))
    a = Attribution(torch.cat([p.attr for p in parts]),
                    None if parts[0].gap is None else torch.cat([p.gap for p in parts]),
                    None if parts[0].delta_f is None else torch.cat([p.delta_f for p in parts]))
    comp = completeness(a, tolerance)
    tokens = _token_strings(run, x) if kind == "text" else [None] * len(x)
    outputs = list(run.info.classes or []) or list(run.info.extra.get("targets") or [])
    features = feature_names(run) if kind == "table" else None
    results = []
    for i, name in enumerate(names):
        r: dict[str, Any] = {"input": name, "modality": kind, "method": method}
        if run.info.task == "classify":
            top = present[i]["top"][0]
            r |= {"predicted": top["class"], "probability": top["probability"]}
        elif run.info.task == "multilabel":  # the labels over the threshold, as predict shows them
            r |= {"predicted": None, "labels": present[i]["labels"],
                  "probability": float(torch.sigmoid(out[i, int(tgt[i])].float()))}
        else:
            vals = list(present[i].get("values", {}).values())  # a regressor's outputs in the target's units
            t = int(tgt[i])
            r |= {"predicted": None, "value": float(vals[t]) if t < len(vals) else float(out[i, t])}
        t = int(tgt[i])
        r |= {"target": t, "target_name": outputs[t] if t < len(outputs) else str(t), "x": x[i].detach().cpu(),
              "attribution": a.attr[i].detach().cpu(), "tokens": tokens[i], "features": features,
              "completeness": comp[i], "baseline": used}
        results.append(r)
    return results


def _token_strings(run: LoadedRun, x: torch.Tensor) -> list[list[str]]:
    """The text of each token id of x (B, T) ("" for padding), by the run's tokenizer. A character
    that a byte-level tokenizer (byte, bpe) splits over several tokens is shown whole on its first
    token and as "·" on the others (each alone decodes to U+FFFD), so the tokens read as the text."""
    from layerwise.data.tokenizers import tokenizer_from_dict

    tok = tokenizer_from_dict(run.info.extra["tokenizer"])
    off = run.info.extra["text"].get("id_offset", 1)
    rows = []
    for row in x.tolist():
        strings, j = [], 0
        while j < len(row):
            if row[j] == 0:
                strings.append("")
                j += 1
                continue
            text, k = tok.decode([row[j] - off]), 1
            for m in range(2, 5) if "\ufffd" in text else ():  # UTF-8: at most 4 bytes a character
                ids = row[j:j + m]
                if len(ids) < m or 0 in ids:
                    break
                whole = tok.decode([i - off for i in ids])
                if "\ufffd" not in whole:
                    text, k = whole, m
                    break
            strings += [text] + ["·"] * (k - 1)
            j += k
        rows.append(strings)
    return rows
