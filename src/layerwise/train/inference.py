"""Using a finished run: evaluate it again, predict for new inputs, or generate text."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from layerwise.config import DataConfig, default_data_root, load_config
from layerwise.data import DataError, DatasetInfo, load_dataset
from layerwise.data.inputs import load_inputs, prepare_inputs, text_lines
from layerwise.data.loaders import build_eval_loader
from layerwise.data.text import normalize_newlines
from layerwise.tasks import create_task
from layerwise.train.evaluation import evaluate_loader, is_image
from layerwise.train.run import RunDirError, load_model
from layerwise.train.trainer import resolve_device


def _info(meta: dict[str, Any]) -> DatasetInfo:
    if "data" not in meta:  # a model trained without a dataset: a reinforcement-learning agent
        if (meta.get("task") or {}).get("name") == "rl":
            raise RunDirError("this model is a reinforcement-learning agent (a `layerwise rl` run), which has no "
                              "dataset to evaluate or predict on; let it play with `layerwise play RUN_DIR`.")
        raise RunDirError("this model file has no description of the data it was trained on; use the "
                          "model.safetensors of a `layerwise train` run.")
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


def need_run_dir(run_dir: str | Path, command: str) -> Path:
    """``run_dir`` as a Path when it is a run directory (it holds config.yaml), else RunDirError:
    a shipped model (pretrained:NAME) is a model file without a run, which the message says."""
    from layerwise.models.pretrained import PREFIX

    if str(run_dir).startswith(PREFIX):
        raise RunDirError(f"'{run_dir}' is a shipped model file, not a run directory, so `layerwise {command}` has no "
                          f"run to read; `layerwise models --pretrained` shows its data and test figures, and "
                          f"predict, generate, explain, probe, attack, export and serve take it as it is.")
    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise RunDirError(f"'{path}' is not a layerwise run directory (no config.yaml).")
    return path


def model_task(meta: dict[str, Any], info: DatasetInfo, cfg: Any = None):
    """The task a saved model was trained for, with its target preparation (saved in the file's
    metadata; files from before tasks existed hold classifiers or language models)."""
    state = dict(meta.get("task") or {})
    state.pop("name", None)
    return create_task(info, cfg, state=state or None)


# the run-section keys `layerwise eval` takes: they meter the evaluation and change no result
EVAL_RUN_KEYS = ("run.energy", "run.cpu_watts_per_core", "run.gpu_watts", "run.grid_gco2_per_kwh")


@torch.no_grad()
def evaluate_run(run_dir: str | Path, device: str = "auto", data_root: str = "",
                 overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The task's test metrics (test_<name>, the headline first) of the run's saved model on its
    dataset's test split, recomputed from the data.

    ``overrides`` (``--data.key=value``) evaluate the same weights on other data settings: a
    resolution-independent model (fno) trained on burgers at 256 points answers at
    ``--data.resolution=1024``. The result then lists the changed settings under ``data_changed``.
    The energy keys of the run section (:data:`EVAL_RUN_KEYS`: ``--run.energy=false``, this
    machine's ``--run.cpu_watts_per_core``, ``--run.gpu_watts``, ``--run.grid_gco2_per_kwh``) meter
    this evaluation. ConfigError for any other override; DataError when the model cannot take the
    changed data (naming both shapes)."""
    from layerwise.config import ConfigError, apply_overrides

    run_dir = need_run_dir(run_dir, "eval")
    bad = [o for o in overrides if not o.lstrip("-").startswith("data.")
           and o.lstrip("-").split("=", 1)[0] not in EVAL_RUN_KEYS]
    if bad:
        raise ConfigError(f"`layerwise eval` takes only data overrides (--data.key=value: other data settings for the "
                          f"same weights, e.g. --data.resolution=1024) and the energy keys "
                          f"{', '.join('--' + k for k in EVAL_RUN_KEYS)}; got {' '.join(bad)}. Model, optimizer "
                          f"and training settings belong to `layerwise train`.")
    cfg = load_config(run_dir / "config.yaml")
    saved = cfg.data
    cfg = apply_overrides(cfg, list(overrides))
    changed = {k: v for k, v in vars(cfg.data).items() if getattr(saved, k) != v}
    if "name" in changed:
        raise ConfigError(f"`layerwise eval` evaluates the same weights on other settings of the data they were "
                          f"trained on ({saved.name}); --data.name={cfg.data.name} is another dataset, whose "
                          f"inputs and targets mean something else. Train a model on {cfg.data.name} instead.")
    dev = resolve_device(device, "--device")
    model, meta = load_model(run_dir, dev)
    info = _info(meta)
    task = model_task(meta, info, cfg)
    ds = load_dataset(cfg.data.name, data_root or cfg.data.root or default_data_root(), cfg.data)
    loader = build_eval_loader(ds, cfg.data, info, dev)
    tta = cfg.train.eval_tta if is_image(info) else "none"
    from layerwise.insight.energy import metered
    try:
        with metered(dev, cfg.run) as energy:  # energy_j/_kwh/_gco2 and its method (README: Energy)
            m = task.scalars(evaluate_loader(model, loader, task, dev, tta=tta))
    except (RuntimeError, ValueError) as e:
        if tuple(ds.info.in_shape) == tuple(info.in_shape):
            raise
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"the model of '{run_dir}' was trained on inputs shaped {tuple(info.in_shape)} and cannot "
                        f"take the changed data's {tuple(ds.info.in_shape)} ({', '.join(f'data.{k}={v}' for k, v in changed.items())}): "
                        f"{detail}. Evaluate without those overrides"
                        f"{'' if cfg.model.name == 'fno' else ', or train a resolution-independent model (fno)'}."
                        ) from None
    h = task.headline
    return ({f"test_{h}": m.get(h), "test_loss": m.get("loss")}
            | {f"test_{k}": v for k, v in m.items() if k not in (h, "loss", "examples")}
            | {"examples": m["examples"], "model": cfg.model.name, "dataset": cfg.data.name} | energy
            | ({"data_changed": ", ".join(f"data.{k}={v}" for k, v in changed.items())} if changed else {}))


@torch.no_grad()
def predict(run_dir: str | Path, inputs: list[str], top_k: int = 3, invert: str = "auto",
            device: str = "auto", max_image_pixels: int | None = None) -> list[dict[str, Any]]:
    """The model's prediction for each example of each input file, as the task presents it:
    classify {"top": [{"class", "index", "probability"}, ...]} (the top-k classes), multilabel
    {"labels": [...], "probabilities": {...}} (labels over the threshold), regress {"values":
    {column: value}} (in the target's units). Each result also holds "input" (the file, with
    [i] for the i-th example of a file that holds several).

    Inputs are read as training read its data (layerwise.data.inputs): images, .npy arrays,
    .wav recordings, CSV rows for a table model, lines of text for a text classifier; for a
    molecules model, SMILES strings (or .csv / .txt / .smi files of them; each result is named
    by its SMILES, or file:line); for a field model (burgers), .npy files of u0 at any resolution
    R, (R,) or (N, R), each giving {"quantity", "field": R values of u(t=1), "points"}.
    ``max_image_pixels`` refuses larger images (0 = no limit; default: the run's
    data.max_image_pixels). Raises DataError or RunDirError naming the file for a bad input or
    model file."""
    dev = resolve_device(device, "--device")
    model, meta = load_model(run_dir, dev)
    info = _info(meta)
    if info.task == "lm":
        raise RunDirError(f"the run in '{run_dir}' trained a language model on '{info.name}'; use "
                          f"`layerwise generate {run_dir}` to sample text from it.")
    task = model_task(meta, info)
    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}.")
    if max_image_pixels is None:
        max_image_pixels = _run_setting(run_dir, "max_image_pixels", DataConfig().max_image_pixels)
    results = []
    if "field" in info.extra:  # .npy files of initial conditions, at any resolution: one field per example
        from layerwise.data.pde import read_field_inputs

        for path in inputs:
            x = read_field_inputs(path)
            try:
                out = model(prepare_inputs(x, info, dev))
            except (RuntimeError, ValueError) as e:
                detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise DataError(f"'{path}': the model (trained at {info.in_shape[-1]} points) cannot take "
                                f"{x.shape[-1]} points: {detail}.") from None
            names = [path] if len(x) == 1 else [f"{path}[{i}]" for i in range(len(x))]
            results += [{"input": n, **r} for n, r in zip(names, task.present(out, top_k), strict=True)]
        return results
    if "molecules" in info.extra:  # SMILES strings (or files of them), each result named by its SMILES
        from layerwise.data.molecules import encode_smiles

        names, x = encode_smiles(inputs, info)
        out = model(prepare_inputs(x, info, dev))
        return [{"input": name, **r} for name, r in zip(names, task.present(out, top_k), strict=True)]
    for path in inputs:
        x = load_inputs(path, info, invert, max_image_pixels).to(dev)
        out = model(prepare_inputs(x, info, dev))
        # several examples in a file: a text file's by line number, a table's and an array's by index
        names = ([f"{path}:{n}" for n, _ in text_lines(path)] if "text" in info.extra else
                 [path] if len(x) == 1 else [f"{path}[{i}]" for i in range(len(x))])
        for name, r in zip(names, task.present(out, top_k), strict=True):
            results.append({"input": name, **r})
    return results


@torch.no_grad()
def recommend(run_dir: str | Path, user: str | int, top_k: int = 10, device: str = "auto",
              data_root: str = "") -> list[dict[str, Any]]:
    """The ``top_k`` items a ratings model (e.g. ``mf`` on movielens) predicts the user ``user``
    (the id as written in the ratings files) rates highest, among the items the user did not rate
    in the run's training split; each ``{"rank", "item", "title", "rating"}`` (predicted stars,
    after the run's clipping), best first. The training ratings are read from the run's data
    (``data_root`` overrides its data.root). Raises DataError for a user id the training split does
    not hold (naming the valid range) and RunDirError for a run that is not a ratings model."""
    run_dir = Path(run_dir)
    dev = resolve_device(device, "--device")
    model, meta = load_model(run_dir, dev)
    info = _info(meta)
    r = info.extra.get("ratings")
    if r is None:
        raise RunDirError(f"the run in '{run_dir}' trained a {info.task} model on '{info.name}', not a recommender; "
                          f"--user needs a ratings run (e.g. recipes/movielens.yaml). Give input files instead.")
    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}.")
    try:
        uid = int(str(user).strip())
    except ValueError:
        uid = None
    users = r["user_ids"]
    if uid is None or uid not in set(users):
        raise DataError(f"user {user!r} is not one of the {len(users)} users of the run's training split (ids "
                        f"{users[0]} .. {users[-1]}, as written in the ratings files). Give one of those ids.")
    u = users.index(uid) + 1
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"'{run_dir}' has no config.yaml; --user reads the run's training ratings to leave out "
                          f"what the user already rated. Give the run directory, not only its model file.")
    cfg = load_config(run_dir / "config.yaml")
    ds = load_dataset(cfg.data.name, data_root or cfg.data.root or default_data_root(), cfg.data)
    mine = ds.x_train[ds.x_train[:, 0] == u]  # (R, C) the user's training rows
    n_items = len(r["item_ids"]) + 1
    genres = torch.zeros(n_items, ds.x_train.shape[1] - 5, dtype=torch.int64)
    genres[ds.x_train[:, 1]] = ds.x_train[:, 5:]  # each item's genre flags
    cand = torch.ones(n_items, dtype=torch.bool)
    cand[0] = False
    cand[mine[:, 1]] = False
    items = cand.nonzero()[:, 0]  # (M,) unrated item indices
    rows = mine[:1].repeat(len(items), 1)  # (M, C): the user's own columns
    rows[:, 1], rows[:, 5:] = items, genres[items]
    task = model_task(meta, info)
    model.eval()
    pred = task.to_units(model(rows.to(dev)))[:, 0].cpu()  # (M,) stars
    k = min(top_k, len(items))
    best = torch.topk(pred, k)
    return [{"rank": n + 1, "item": r["item_ids"][int(items[j]) - 1], "title": r["titles"][int(items[j]) - 1],
             "rating": round(float(pred[j]), 4)} for n, j in enumerate(best.indices.tolist())]


def load_language_model(run_dir: str | Path, device: str = "auto") -> tuple[Any, Any, DatasetInfo, torch.device]:
    """(model, tokenizer, dataset info, device) of a language-model run, ready to sample from.
    RunDirError when the run is not a language model or its tokenizer is missing or does not fit."""
    from layerwise.data.tokenizers import tokenizer_from_dict

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
    model.eval()
    return model, tok, info, dev


def cut_at_stop(text: str, stop: Sequence[str] = (), top_level: bool = False, start: int = 0) -> tuple[str, bool]:
    """``text`` cut before the first of the ``stop`` strings found at or after ``start`` (the end of
    the prompt), and whether a stop was found.

    ``top_level``: also cut before the first line that starts in column 0 with something other
    than white space and begins after ``start``: the end of a Python ``def`` or ``class`` body
    (the next top-level statement, decorator or comment). Blank lines before it are kept."""
    cut = len(text)
    for s in stop:
        i = text.find(s, start) if s else -1
        if 0 <= i < cut:
            cut = i
    if top_level:
        i = text.find("\n", start)
        while 0 <= i < cut:
            if i + 1 < len(text) and not text[i + 1].isspace():
                cut = i + 1
                break
            i = text.find("\n", i + 1)
    return text[:cut], cut < len(text)


@torch.no_grad()
def generate_samples(run_dir: str | Path, prompt: str = "", samples: int = 1, tokens: int = 200,
                     temperature: float = 0.8, top_k: int | None = 200, seed: int = 0, device: str = "auto",
                     stop: Sequence[str] = (), top_level: bool = False, batch_size: int = 100) -> list[str]:
    """``samples`` independent continuations of ``prompt`` from a language-model run, each the
    prompt plus up to ``tokens`` sampled tokens (without a prompt, only the continuation), cut
    before the first ``stop`` string after the prompt (the stop is not included; ``top_level``:
    see :func:`cut_at_stop`). A batch of ``batch_size`` samples is drawn together and ends once
    every one has stopped. Temperature 0 is greedy decoding (every sample is then the same); the
    seed makes the samples repeatable (for a given ``batch_size``).

    With a BPE tokenizer the prompt's last token is backed up and the first sampled token must
    extend it (token healing, as in Microsoft's `guidance`): "def " encodes as "def" + " ", but
    training text has " name" as one token, so a literal " " would start unlike anything seen.
    Raises ValueError for bad settings, RunDirError for a run that is not a language model."""
    if tokens < 1:
        raise ValueError(f"--tokens must be >= 1, got {tokens}.")
    if samples < 1 or batch_size < 1:
        raise ValueError(f"--samples must be >= 1, got {samples} (batch size {batch_size}).")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}.")
    if top_k is not None and top_k < 0:
        raise ValueError(f"--top-k must be >= 0 (0 = all tokens), got {top_k}.")
    model, tok, info, dev = load_language_model(run_dir, device)
    prompt, _ = normalize_newlines(prompt)  # the training text's line ends were made \n too
    try:
        ids = tok.encode(prompt or default_prompt(tok, info.extra))
    except ValueError as e:
        raise ValueError(f"the prompt cannot be encoded with this run's tokenizer: {e}") from None
    allowed = None
    if hasattr(tok, "extensions") and len(ids) >= 2:  # token healing (bpe)
        allowed = torch.zeros(tok.vocab_size, dtype=torch.bool)
        allowed[tok.extensions(ids[-1])] = True
        ids = ids[:-1]
    head = tok.decode(ids)  # the prompt as the model sees it (after healing: without its last token)
    stop = [s for s in stop if s]
    gen = torch.Generator(device=dev).manual_seed(seed)

    def cut(row: list[int]) -> tuple[str, bool]:
        text = tok.decode(row)  # whole, so a character split across the prompt's end decodes right
        return cut_at_stop(text, stop, top_level, start=len(prompt) if prompt else len(head))

    done: list[bool] = []

    def finished(idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B,) rows that reached a stop
        for i, row in enumerate(idx.tolist()):  # a stopped row stays stopped: decode the others only
            done[i] = done[i] or cut(row)[1]
        return torch.tensor(done)

    out: list[str] = []
    while len(out) < samples:
        n = min(batch_size, samples - len(out))
        done[:] = [False] * n
        idx = torch.tensor([ids] * n, dtype=torch.long, device=dev)  # (n, T)
        rows = model.generate(idx, tokens, temperature=temperature, top_k=top_k or None, generator=gen,
                              finished=finished if stop or top_level else None, first_allowed=allowed).tolist()
        out += [cut(row)[0] if prompt else cut(row)[0][len(head):] for row in rows]
    return out


@torch.no_grad()
def generate(run_dir: str | Path, prompt: str = "", tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = 200, seed: int = 0, device: str = "auto", stop: Sequence[str] = (),
             top_level: bool = False) -> str:
    """Continue ``prompt`` with up to ``tokens`` sampled tokens from a language-model run; returns the
    prompt plus its continuation, cut before the first ``stop`` string (see :func:`generate_samples`).
    Temperature 0 is greedy decoding; the seed makes it repeatable."""
    return generate_samples(run_dir, prompt, 1, tokens, temperature, top_k, seed, device, stop, top_level)[0]


def syntax_report(texts: Sequence[str], language: str = "python") -> dict[str, Any]:
    """Which of ``texts`` parse as ``language`` source (Python: the ``ast`` module; nothing runs).
    Returns {"samples": n, "parsed": k, "fraction": k / n, "errors": [None or the parser's message,
    one per text]}. ValueError for a language without a checker."""
    from layerwise.data.code import parse_error

    errors = [parse_error(t, language) for t in texts]
    parsed = sum(e is None for e in errors)
    return {"samples": len(texts), "parsed": parsed, "fraction": parsed / len(texts) if texts else None,
            "errors": errors}


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

    run_dir = need_run_dir(run_dir, "info")
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
