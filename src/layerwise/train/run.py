"""The run directory: where a run's config, environment, metrics, checkpoints and weights live.

    runs/<name>-<time>/
      config.yaml  env.json  metrics.jsonl  summary.json  model.safetensors
      checkpoints/  plots/
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from layerwise import __version__
from layerwise.train.checkpoint import atomic_write


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; the message says why and what to do."""


def new_run_dir(root: str, name: str, explicit: str = "") -> Path:
    """Create the directory of a new run; refuse to reuse one that holds an earlier run."""
    if explicit:
        path = Path(explicit)
        if path.exists() and any(path.iterdir()):
            raise RunDirError(
                f"run directory '{path}' already holds files of an earlier run, which a new run would "
                f"overwrite. Continue it with `layerwise train --resume {path}`, or choose a new --run.dir.")
    else:
        path = pick_run_dir(root, name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def pick_run_dir(root: str, name: str) -> Path:
    """A new run directory's path, ``<root>/<name>-<time>``, that does not exist yet (not created)."""
    path = Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while path.exists():  # two runs started in the same second
        path = Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
        n += 1
    return path


def git_revision() -> str | None:
    """The git commit of the layerwise source tree, with '+dirty' when it has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, seed: int) -> dict[str, Any]:
    import numpy

    env = {
        "layerwise": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": numpy.__version__, "platform": platform.platform(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device),
        "git_revision": git_revision(), "seed": seed, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return env


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_model(path: Path, model: torch.nn.Module, meta: dict[str, Any],
               state: dict[str, torch.Tensor] | None = None) -> None:
    """Weights as safetensors, with what is needed to rebuild the model in the file's metadata.

    ``meta`` holds ``model`` (the create_model kwargs) and ``data`` (DatasetInfo), stored as JSON
    strings: loading needs no pickle and no code but layerwise's registry. ``state`` replaces
    ``model.state_dict()`` (e.g. the full state gathered from a sharded model).
    """
    if state is None:
        state = model.state_dict()
    # tied weights (a language model's embedding and head) are one parameter under two names;
    # safetensors refuses shared storage, so the file keeps one name and records the other
    first_name: dict[int, str] = {}
    aliases = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first_name:
            aliases[name] = first_name[id(p)]
        else:
            first_name[id(p)] = name
    out = {k: v.detach().contiguous().cpu() for k, v in state.items() if k not in aliases}
    metadata = {k: json.dumps(v) for k, v in meta.items()} | {"format": "layerwise", "version": __version__,
                                                               "aliases": json.dumps(aliases)}
    atomic_write(path, save(out, metadata=metadata))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model` (a file, or a run directory holding one)."""
    from layerwise.models import create_model

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise RunDirError(f"no saved model at '{path}'. Give a run directory whose training finished "
                          f"(it holds model.safetensors) or the path of a .safetensors file.")
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise RunDirError(f"'{path}' is not a readable safetensors file ({e}). It may be truncated; "
                          f"re-export it from its run or copy it again.") from None
    if raw.get("format") != "layerwise" or "model" not in raw:
        raise RunDirError(f"'{path}' was not written by layerwise (no model description in its metadata).")
    meta = {k: json.loads(v) for k, v in raw.items() if k in ("model", "data", "metrics")}
    model_kw = dict(meta["model"])
    model_kw["in_shape"] = tuple(model_kw["in_shape"])
    model = create_model(**model_kw)
    for name, kept in json.loads(raw.get("aliases", "{}")).items():
        state[name] = state[kept]
    model.load_state_dict(state)
    return model.to(device).eval(), meta
