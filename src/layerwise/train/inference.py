"""Using a finished run: evaluate it again, or predict classes for new inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from layerwise.config import default_data_root, load_config
from layerwise.data import BatchTransform, DatasetInfo, Normalize, load_dataset
from layerwise.data.stream import build_loader
from layerwise.data.inputs import load_inputs
from layerwise.train.run import RunDirError, load_model
from layerwise.train.evaluation import evaluate_loader, lm_eval_batch
from layerwise.train.trainer import resolve_device


def _info(meta: dict[str, Any]) -> DatasetInfo:
    d = dict(meta["data"])
    d["in_shape"] = tuple(d["in_shape"])
    return DatasetInfo(**d)


@torch.no_grad()
def evaluate_run(run_dir: str | Path, device: str = "auto", data_root: str = "") -> dict[str, Any]:
    """Test loss and accuracy of the run's saved model on its dataset's test split."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"'{run_dir}' is not a layerwise run directory (no config.yaml).")
    cfg = load_config(run_dir / "config.yaml")
    dev = resolve_device(device)
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
            device: str = "auto") -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each example of each input file."""
    dev = resolve_device(device)
    model, meta = load_model(run_dir, dev)
    info = _info(meta)
    norm = Normalize(info, dev)
    k = max(1, min(top_k, info.num_classes))
    results = []
    for path in inputs:
        x = load_inputs(path, info, invert)
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
    if temperature < 0:
        raise ValueError(f"--temperature must be >= 0 (0 = greedy), got {temperature}.")
    dev = resolve_device(device)
    model, meta = load_model(run_dir, dev)
    info = _info(meta)
    if info.task != "lm" or not hasattr(model, "generate"):
        raise RunDirError(f"the run in '{run_dir}' trained a {info.task} model ({meta['model']['name']}) "
                          f"on '{info.name}'; `layerwise generate` needs a language model run "
                          f"(e.g. recipes/shakespeare-char.yaml). Use `layerwise predict` for classifiers.")
    tok = tokenizer_from_dict(info.extra["tokenizer"])
    try:
        ids = tok.encode(prompt or "\n")  # an empty prompt starts a new line, as nanoGPT's sample.py
    except ValueError as e:
        raise ValueError(f"the prompt cannot be encoded with this run's tokenizer: {e}") from None
    gen = torch.Generator(device=dev).manual_seed(seed)
    model.eval()
    idx = torch.tensor([ids], dtype=torch.long, device=dev)  # (1, T)
    out = model.generate(idx, tokens, temperature=temperature, top_k=top_k or None, generator=gen)
    return tok.decode(out[0].tolist()) if prompt else tok.decode(out[0, len(ids):].tolist())


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """The run's summary (or, for an unfinished run, how far it got)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"'{run_dir}' is not a layerwise run directory (no config.yaml).")
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        return {"status": "finished"} | json.loads(summary_path.read_text())
    ckpts = sorted((run_dir / "checkpoints").glob("step_*.json"))
    last = json.loads(ckpts[-1].read_text())["step"] if ckpts else None
    return {"status": "unfinished", "last_checkpoint_step": last,
            "resume_with": f"layerwise train --resume {run_dir}", "run_dir": str(run_dir)}
