"""Using a finished run: evaluate it again, or predict classes for new inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from layerwise.config import DataConfig, default_data_root, load_config
from layerwise.data import BatchTransform, DatasetInfo, Normalize, load_dataset
from layerwise.data.stream import build_loader
from layerwise.data.inputs import load_inputs
from layerwise.data.text import normalize_newlines
from layerwise.train.run import RunDirError, load_model
from layerwise.train.evaluation import evaluate_loader, lm_eval_batch
from layerwise.train.trainer import resolve_device


def _info(meta: dict[str, Any]) -> DatasetInfo:
    d = dict(meta["data"])
    d["in_shape"] = tuple(d["in_shape"])
    return DatasetInfo(**d)


def _run_setting(run_dir: str | Path, key: str, default: Any) -> Any:
    """data.<key> from a run directory's config.yaml, else ``default`` (e.g. predict on a bare
    .safetensors file, or a config that cannot be read: the model file is what matters there)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return default
    try:
        return getattr(load_config(path).data, key)
    except ValueError:
        return default


@torch.no_grad()
def evaluate_run(run_dir: str | Path, device: str = "auto", data_root: str = "") -> dict[str, Any]:
    """Test loss and accuracy of the run's saved model on its dataset's test split."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"'{run_dir}' is not a layerwise run directory (no config.yaml).")
    cfg = load_config(run_dir / "config.yaml")
    dev = resolve_device(device, "--device")
    model, meta = load_model(run_dir, dev)
    info = _info(meta)
    ds = load_dataset(cfg.data.name, data_root or cfg.data.root or default_data_root(), cfg.data)
    if info.task == "lm":
        from layerwise.data.text import TokenLoader
        loader, tta = TokenLoader(ds.x_test.to(dev), lm_eval_batch(cfg.data), cfg.data.block_size), "none"
    else:
        loader = build_loader(cfg.data.loader, ds.x_test, ds.y_test, cfg.data.eval_batch_size,
                              BatchTransform(info, dev), dev, workers=cfg.data.workers)
        tta = cfg.train.eval_tta
    m = evaluate_loader(model, loader, dev, tta=tta)
    return {"test_accuracy": m["accuracy"], "test_loss": m["loss"], "examples": m["examples"],
            "model": cfg.model.name, "dataset": cfg.data.name}


@torch.no_grad()
def predict(run_dir: str | Path, inputs: list[str], top_k: int = 3, invert: str = "auto",
            device: str = "auto", max_image_pixels: int | None = None) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each example of each input file.

    Inputs are read as training read its data (layerwise.data.inputs). ``max_image_pixels``
    refuses larger images (0 = no limit; default: the run's data.max_image_pixels). Raises
    DataError or RunDirError naming the file for a bad input or model file."""
    dev = resolve_device(device, "--device")
    model, meta = load_model(run_dir, dev)
    info = _info(meta)
    if max_image_pixels is None:
        max_image_pixels = _run_setting(run_dir, "max_image_pixels", DataConfig().max_image_pixels)
    norm = Normalize(info, dev)
    k = max(1, min(top_k, info.num_classes))
    results = []
    for path in inputs:
        x = load_inputs(path, info, invert, max_image_pixels)
        probs = F.softmax(model(norm(x.to(dev))).float(), dim=-1)
        p, idx = probs.topk(k, dim=-1)
        for i in range(len(x)):
            name = path if len(x) == 1 else f"{path}[{i}]"
            results.append({"input": name, "top": [{"class": info.classes[c], "index": int(c), "probability": float(q)}
                                                   for q, c in zip(p[i].tolist(), idx[i].tolist())]})
    return results


@torch.no_grad()
def generate(run_dir: str | Path, prompt: str = "", tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = 200, seed: int = 0, device: str = "auto") -> str:
    """Continue ``prompt`` with ``tokens`` sampled tokens from a language-model run; returns the
    prompt plus its continuation. Temperature 0 is greedy decoding; the seed makes it repeatable."""
    from layerwise.data.tokenizers import tokenizer_from_dict

    if tokens < 1:
        raise ValueError(f"--tokens must be >= 1, got {tokens}.")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}.")
    dev = resolve_device(device, "--device")
    model, meta = load_model(run_dir, dev)
    info = _info(meta)
    if info.task != "lm" or not hasattr(model, "generate"):
        raise RunDirError(f"the run in '{run_dir}' trained a {info.task} model ({meta['model']['name']}) "
                          f"on '{info.name}'; `layerwise generate` needs a language model run "
                          f"(e.g. recipes/shakespeare-char.yaml). Use `layerwise predict` for classifiers.")
    saved = info.extra.get("tokenizer")
    if saved is None and Path(run_dir, "tokenizer.json").is_file():  # the run directory keeps a copy
        from layerwise.data.tokenizers import load_tokenizer
        tok = load_tokenizer(Path(run_dir, "tokenizer.json"))
    elif saved is None:
        raise RunDirError(f"the model file in '{run_dir}' holds no tokenizer (its metadata lacks it) and the run "
                          f"directory has no tokenizer.json; use the model.safetensors of the run that trained it.")
    else:
        tok = tokenizer_from_dict(saved)
    if tok.vocab_size != getattr(model, "vocab_size", tok.vocab_size):
        raise RunDirError(f"the model in '{run_dir}' has a vocabulary of {model.vocab_size} tokens, its tokenizer "
                          f"{tok.vocab_size}: the two do not belong together. Use the model.safetensors and "
                          f"tokenizer of one run.")
    prompt, _ = normalize_newlines(prompt)  # the training text's line ends were made \n too
    try:
        ids = tok.encode(prompt or default_prompt(tok, info.extra))
    except ValueError as e:
        raise ValueError(f"the prompt cannot be encoded with this run's tokenizer: {e}") from None
    gen = torch.Generator(device=dev).manual_seed(seed)
    model.eval()
    idx = torch.tensor([ids], dtype=torch.long, device=dev)  # (1, T)
    out = model.generate(idx, tokens, temperature=temperature, top_k=top_k or None, generator=gen)
    return tok.decode(out[0].tolist()) if prompt else tok.decode(out[0, len(ids):].tolist())


def default_prompt(tok, extra: dict[str, Any]) -> str:
    """What generation starts from without a prompt: a new line, as nanoGPT's sample.py, when the
    tokenizer can encode one; else (a char vocabulary of text without line breaks) the training
    text's first character, else the vocabulary's first symbol."""
    for candidate in ("\n", extra.get("text_start") or "", getattr(tok, "chars", [""])[0]):
        if candidate:
            try:
                tok.encode(candidate)
                return candidate
            except ValueError:
                continue
    return ""


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """The run's summary (or, for an unfinished run, how far it got). RunDirError, naming the
    file, for a directory that is not a run or a summary.json that is not readable JSON."""
    from layerwise.distributed.checkpoint import all_checkpoints

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"'{run_dir}' is not a layerwise run directory (no config.yaml).")
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
            if not isinstance(summary, dict):
                raise ValueError(f"it holds a {type(summary).__name__}, not an object")
        except (ValueError, UnicodeDecodeError) as e:
            raise RunDirError(f"'{summary_path}' is not readable JSON ({e}); it was damaged after the run "
                              f"wrote it. `layerwise eval {run_dir}` recomputes the test metrics from "
                              f"model.safetensors.") from None
        return {"status": "finished"} | summary
    # an unfinished run: its newest checkpoint by name (step_XXXXXXXX.pt or .dcp/), complete or not
    ckpts = all_checkpoints(run_dir / "checkpoints")
    last = int(ckpts[-1].name[5:13]) if ckpts else None
    return {"status": "unfinished", "last_checkpoint_step": last,
            "resume_with": f"layerwise train --resume {run_dir}", "run_dir": str(run_dir)}
