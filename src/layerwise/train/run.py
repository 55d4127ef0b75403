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
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from layerwise import __version__
from layerwise.train.checkpoint import atomic_write


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; the message says why and what to do."""


# The layout of model.safetensors (tensor names, metadata keys). A loader reads files of this
# version and older; a file from a newer layerwise is refused by name instead of misread.
MODEL_FORMAT_VERSION = 1
# Prefixes that wrappers put before every tensor name and that mean nothing to the model:
# DataParallel / DistributedDataParallel ("module.") and torch.compile ("_orig_mod.").
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def new_run_dir(root: str, name: str, explicit: str = "") -> Path:
    """Create the directory of a new run; refuse to reuse one that holds an earlier run."""
    if explicit:
        path = Path(explicit)
        if path.exists() and any(path.iterdir()):
            if (path / "summary.json").is_file():  # finished: there is nothing to continue
                fix = "Choose a new --run.dir (that run finished; it is left as it is)."
            else:
                from layerwise.rl.config import is_rl_run  # an RL run resumes with `layerwise rl`

                command = "rl" if is_rl_run(path) else "train"
                fix = f"Continue it with `layerwise {command} --resume {path}`, or choose a new --run.dir."
            raise RunDirError(
                f"run directory '{path}' already holds files of an earlier run, which a new run would "
                f"overwrite. {fix}")
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
    metadata = {k: json.dumps(v) for k, v in meta.items()} | {
        "format": "layerwise", "format_version": str(MODEL_FORMAT_VERSION), "version": __version__,
        "aliases": json.dumps(aliases)}
    atomic_write(path, save(out, metadata=metadata))


def _strip_wrapper_prefixes(names: list[str]) -> dict[str, str]:
    """{name in the file: name without the wrapper prefixes} for the names that carry one
    (``module.blocks.0.weight`` -> ``blocks.0.weight``; ``blocks._orig_mod.0.weight`` too)."""
    out = {}
    for name in names:
        new = name
        changed = True
        while changed:
            changed = False
            for p in WRAPPER_PREFIXES:
                if new.startswith(p):
                    new, changed = new[len(p):], True
        for p in WRAPPER_PREFIXES:
            new = new.replace("." + p, ".")
        if new != name:
            out[name] = new
    return out


def strip_wrapper_names(state: dict[str, torch.Tensor], model: torch.nn.Module, path: Path | str,
                        aliases: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """``state`` with wrapper prefixes (:data:`WRAPPER_PREFIXES`) taken off its tensor names, when
    the names do not fit ``model`` as they are and fit better without them; a warning says so.
    ``aliases`` (tied names the file leaves out) count as present."""
    want = set(model.state_dict()) - set(aliases or {})
    renamed = _strip_wrapper_prefixes(list(state))
    if set(state) == want or not renamed:
        return state
    stripped = {renamed.get(k, k): v for k, v in state.items()}
    if len(stripped) < len(state) or len(set(stripped) & want) <= len(set(state) & want):
        return state  # two names would collide, or stripping does not help: report as they are
    found = [p for p in WRAPPER_PREFIXES if any(k.startswith(p) or "." + p in k for k in renamed)]
    warnings.warn(f"'{path}': {len(renamed)} of its tensor names carry the wrapper prefix "
                  f"{' and '.join(repr(p) for p in found)} (DataParallel/DDP write 'module.', torch.compile "
                  f"'_orig_mod.'); it was stripped to match the model", stacklevel=3)
    return stripped


def check_state_matches(state: dict[str, torch.Tensor], model: torch.nn.Module, path: Path | str) -> None:
    """RunDirError naming the file and the first tensors that are missing, unexpected or of another
    shape, unless ``state`` fits ``model.state_dict()`` exactly (nothing is loaded partially)."""
    want = {k: v.shape for k, v in model.state_dict().items()}
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(want[k])} in the model"
              for k in want if k in state and tuple(state[k].shape) != tuple(want[k])]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} not in the model (first: {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (first: {'; '.join(shapes[:3])})")
        raise RunDirError(
            f"'{path}' does not fit the model its metadata describes: of its tensors, {', and '.join(parts)}. "
            f"The file was changed after layerwise wrote it, or comes from another model; use the "
            f"model.safetensors of the run that trained it.")


def read_weights(path: str | Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, str]]:
    """(the file, its tensors on the CPU, its metadata as stored: JSON strings) of a safetensors file,
    or of a run directory's model.safetensors. Any safetensors file is read (the metadata is then
    often empty); ``pretrained:NAME`` reads a shipped model (layerwise.models.pretrained). RunDirError
    naming the file when there is none or it cannot be read."""
    from layerwise.models.pretrained import PREFIX, resolve_pretrained

    if str(path).startswith(PREFIX):  # predict, generate, info, export and serve take shipped models alike
        path = resolve_pretrained(str(path))
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
        if path.suffix != ".safetensors":  # e.g. the run's config.yaml or a checkpoint: not a model file at all
            raise RunDirError(f"'{path}' is not a model file (a layerwise model is a .safetensors file: {e}). Give "
                              f"the run directory or its model.safetensors.") from None
        raise RunDirError(f"'{path}' is not a readable safetensors file ({e}). It may be truncated; "
                          f"re-export it from its run or copy it again.") from None
    return path, state, raw


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model` (a file, or a run directory holding one).

    Returns (the model in eval mode on ``device``, its metadata: model, data, metrics). Raises
    RunDirError, naming the file, when there is none, it is not a readable safetensors file, it
    was not written by layerwise or by a newer version of its format, or its tensors do not fit
    the model it describes (wrapper prefixes such as ``module.`` are stripped with a warning)."""
    from layerwise.models import create_model

    path, state, raw = read_weights(path)
    if raw.get("format") != "layerwise" or "model" not in raw:
        raise RunDirError(f"'{path}' was not written by layerwise (no model description in its metadata). "
                          f"Give the model.safetensors of a layerwise run.")
    try:
        version = int(raw.get("format_version", "1"))  # files from before the field are version 1
        meta = {k: json.loads(v) for k, v in raw.items() if k in ("model", "data", "metrics", "task")}
        aliases = json.loads(raw.get("aliases", "{}"))
        model_kw = dict(meta["model"])
        model_kw["in_shape"] = tuple(model_kw["in_shape"])
    except (ValueError, TypeError, KeyError) as e:
        raise RunDirError(f"'{path}' has a damaged layerwise metadata block ({type(e).__name__}: {e}). "
                          f"Use the model.safetensors of the run that trained it.") from None
    if version > MODEL_FORMAT_VERSION:
        raise RunDirError(f"'{path}' is in model format {version}, written by layerwise {raw.get('version', '?')}; "
                          f"this layerwise ({__version__}) reads format {MODEL_FORMAT_VERSION} and older. "
                          f"Upgrade layerwise to load it.")
    try:
        model = create_model(**model_kw)
    except (TypeError, ValueError) as e:
        raise RunDirError(f"'{path}' describes a model this layerwise cannot build ({e}). It was written by "
                          f"layerwise {raw.get('version', '?')}; use that version.") from None
    state = strip_wrapper_names(state, model, path, aliases)
    for name, kept in aliases.items():
        if kept in state:
            state[name] = state[kept]
    check_state_matches(state, model, path)
    model.load_state_dict(state)
    return model.to(device).eval(), meta
