"""Fine-tuning: start a run from trained weights, keep the body fixed for a while, train it slower.

    layerwise finetune runs/mnist-0-4-... --data.path=digits-5-9     # the shorthand (cli.py)
    layerwise train RECIPE --model.init_from=runs/<dir> --train.freeze_body_epochs=1 --optim.body_lr_scale=0.1

The rule for what loads (:func:`load_weights`): a model is a *head* (the modules and parameters
its ``head_names()`` declares, ``fc`` for every family) on a *body* (everything else). The
body's tensors load by name and must all be there with the same shapes; anything else is a
ConfigError that lists the tensors that differ in shape, are missing or are not in the model,
never a partial load. The head loads too when it means the same thing: every head tensor there
with the same shape and, when the source says, the same classes and task; otherwise the run keeps
the freshly initialized head it was built with for its own classes (timm's ``reset_classifier``).
The run directory records where its weights came from in ``init_from.json``.

How the body trains (:class:`BodyFreezing`, driven by ``schedule.EarlyEpochs``, and the body's
parameter groups in ``optim.build_optimizer``) follows

  - Yosinski, Clune, Bengio, Lipson 2014, "How transferable are features in deep neural
    networks?" (arXiv:1411.1792): lower layers transfer, the head is task-specific;
  - Howard & Ruder 2018, "Universal Language Model Fine-tuning for Text Classification" (ULMFiT,
    arXiv:1801.06146): discriminative learning rates (``optim.body_lr_scale``) and gradual
    unfreezing from the top (``train.unfreeze=gradual``);
  - fastai's ``Learner.fine_tune``: one epoch with the body frozen (BatchNorm statistics of the
    frozen part kept), then everything with ``slice(lr / k, lr)``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["INIT_RECORD", "BodyFreezing", "Source", "body_groups", "finetune_config",
           "head_keys", "load_weights", "read_record", "read_source", "summary_fields"]

INIT_RECORD = "init_from.json"  # in the run directory: where the weights came from
# `layerwise finetune` keeps the train defaults (every layer trains from the start at optim.lr):
# on the MNIST 0-4 -> 5-9 figure (50 labels per class, convnet) a frozen first epoch and a 0.1 body
# rate each cost accuracy at every budget measured (README: Transfer learning), so neither is a
# default; the note it prints names fastai's fine_tune settings for those who want them.
FASTAI_FINE_TUNE = "--train.freeze_body_epochs=1 --optim.body_lr_scale=0.1"
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)(?:\.|$)")  # the face's trunk: a `blocks` ModuleList
_MEMBER = re.compile(r"^members\.\d+\.")  # an ensemble's member (models/ensemble.py)


def _config_error(msg: str) -> Exception:
    from layerwise.config import ConfigError  # config sits above train: import late

    return ConfigError(msg)


# ------------------------------------------------------------------------------------- the source
@dataclass
class Source:
    """Trained weights to start from: a safetensors file and what its metadata says.

    ``model`` is the layerwise model description (name, in_shape, num_classes, family args) of a
    file layerwise wrote, None for another file; ``classes`` and ``task`` what its head predicts."""

    given: str  # as the user wrote it
    file: Path
    sha256: str
    state: dict[str, torch.Tensor]
    run_dir: Path | None = None
    model: dict[str, Any] | None = None
    classes: list[str] | None = None
    task: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # tied names the file leaves out
    data: dict[str, Any] | None = None  # the DatasetInfo it was trained on (its tokenizer: extra)
    adapter: str | None = None  # the mapping that rewrote it for another family (train/adapters.py)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_source(given: str | Path) -> Source:
    """The weights named by ``model.init_from``: a run directory (its model.safetensors) or a
    .safetensors file, layerwise's or another's. ConfigError naming the path and the fix when it
    is missing, unfinished or unreadable (nothing is pickled: safetensors only)."""
    from layerwise.models import hub
    from layerwise.models.pretrained import PREFIX, resolve_pretrained
    from layerwise.train.run import RunDirError, read_weights

    if str(given).startswith(PREFIX):  # a model shipped with layerwise (layerwise models --pretrained)
        try:
            given_path = resolve_pretrained(str(given))
        except ValueError as e:  # unknown name (ConfigError) or a changed file (PretrainedError)
            raise _config_error(f"model.init_from='{given}': {e}") from None
        return _with_meta(read_source(given_path), str(given))
    if hub.is_hub_spec(str(given)):  # torchvision:NAME / timm:NAME through the library's own weights API
        try:
            name, args, state = hub.fetch_pretrained(str(given))
        except ValueError as e:
            raise _config_error(f"model.init_from='{given}': {e}") from None
        digest = hashlib.sha256(b"".join(state[k].contiguous().view(torch.uint8).numpy().tobytes()
                                         for k in sorted(state))).hexdigest()
        return Source(str(given), Path(str(given)), digest, state, None, model={"name": name, **args})
    path = Path(given).expanduser()
    if path.is_dir() and not (path / "model.safetensors").is_file():
        unfinished = (path / "config.yaml").is_file() and not (path / "summary.json").is_file()
        raise _config_error(
            f"model.init_from='{given}' is a directory without model.safetensors"
            + (" (a run that has not finished: finish it with `layerwise train --resume "
               f"{given}` first)" if unfinished else "")
            + ". Give the directory of a finished layerwise run or the path of a .safetensors file.")
    if path.is_file() and path.suffix != ".safetensors":
        raise _config_error(f"model.init_from='{given}' is not a .safetensors file: weights are read from "
                            f"safetensors only (never pickles). Give a run directory or a .safetensors file.")
    try:
        file, state, raw = read_weights(path)
    except RunDirError as e:
        raise _config_error(f"model.init_from='{given}': {e}") from None
    run_dir = file.parent if (file.parent / "config.yaml").is_file() else None
    src = Source(str(given), file, _sha256(file), state, run_dir)
    if raw.get("format") == "layerwise":
        try:
            meta = {k: json.loads(raw[k]) for k in ("model", "data", "task", "metrics", "aliases") if k in raw}
        except ValueError as e:
            raise _config_error(f"model.init_from='{given}': its layerwise metadata is damaged ({e}). Use the "
                                f"model.safetensors of the run that trained it.") from None
        src.model = meta.get("model")
        src.classes = (meta.get("data") or {}).get("classes") or None
        src.task = (meta.get("task") or {}).get("name") or (meta.get("data") or {}).get("task")
        src.metrics = meta.get("metrics") or {}
        src.aliases = meta.get("aliases") or {}
        src.data = meta.get("data")
    else:  # another library's file (torchvision/timm ResNet or ViT): converted when its names say which
        try:
            name, args, state = hub.convert_state_dict(hub.detect_format(src.state, f"'{given}'"), src.state)
        except ValueError:
            pass  # not one of theirs: its tensors load by name as they are (and a misfit is listed)
        else:
            src.state, src.model, src.adapter = state, {"name": name, **args}, "hub"
    return src


def _with_meta(src: Source, given: str) -> Source:
    """``src`` as the user named it (``pretrained:NAME``), the file and its sha256 kept."""
    src.given = given
    return src


# ------------------------------------------------------------------------------------- head and body
def _under(key: str, names: tuple[str, ...]) -> bool:
    return any(key == n or key.startswith(n + ".") for n in names)


def head_keys(model: nn.Module) -> set[str]:
    """State-dict keys of ``model``'s head (``model.head_names()``; every layerwise model has
    it), less those tied to a body tensor (a language model's output layer that is its embedding
    belongs to the body: loading the embedding loads it)."""
    names = tuple(model.head_names()) if hasattr(model, "head_names") else ()
    state = model.state_dict(keep_vars=True)
    body_ptrs = {v.data_ptr() for k, v in state.items() if not _under(k, names) and v.numel()}
    return {k for k, v in state.items() if _under(k, names) and not (v.numel() and v.data_ptr() in body_ptrs)}


def head_parameter_ids(model: nn.Module) -> set[int]:
    """ids of the head's parameters (see :func:`head_keys`), for the optimizer's body groups."""
    keys = head_keys(model)
    return {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n in keys}


def body_groups(model: nn.Module) -> list[tuple[list[nn.Parameter], list[nn.Module]]]:
    """The body as layers, bottom to top, each (its trainable parameters, its norm modules that
    keep running statistics): what comes before the first of the model's ``blocks``, then each
    block (what follows the last block, e.g. a final norm, joins it). A model without blocks is one
    layer. An ensemble's members are grouped by block index (``members.<m>.blocks.<i>``)."""
    head = head_parameter_ids(model)
    seen: set[str] = set()  # the owners (the model, or an ensemble's member) whose blocks have begun

    def layer(name: str) -> int | None:
        """The block index of ``name``; -1 before its owner's first block, None after the blocks."""
        owner = (_MEMBER.match(name) or [""])[0]
        m = _BLOCK.search(name)
        if m:
            seen.add(owner)
            return int(m.group(1))
        return None if owner in seen else -1

    params: dict[int | None, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if id(p) not in head:
            params.setdefault(layer(name), []).append(p)
    head_names = tuple(model.head_names()) if hasattr(model, "head_names") else ()
    norms: dict[int | None, list[nn.Module]] = {}
    seen.clear()
    for name, m in model.named_modules():
        k = layer(name)
        if getattr(m, "track_running_stats", False) and not _under(name, head_names):
            norms.setdefault(k, []).append(m)
    blocks = sorted(k for k in set(params) | set(norms) if k is not None and k >= 0)
    top = blocks[-1] if blocks else -1
    order = [-1, *blocks]
    merged = {k: (list(params.get(k, [])), list(norms.get(k, []))) for k in order}
    merged[top][0].extend(params.get(None, []))  # after the last block: the top layer
    merged[top][1].extend(norms.get(None, []))
    return [merged[k] for k in order if merged[k][0] or merged[k][1]]


class BodyFreezing:
    """Which layers of the body train at each step, as a pure function of the step (a resumed run
    needs no state): for ``freeze_steps`` steps none (only the head), then all (``gradual`` False)
    or, ULMFiT's gradual unfreezing, the top layer and one more every ``steps_per_epoch`` steps.

    A frozen layer's parameters get no gradient (requires_grad False: the optimizer leaves them and
    their state alone, and backward skips them) and its BatchNorm layers run in eval mode, so their
    running statistics stay as loaded (bit for bit)."""

    def __init__(self, model: nn.Module, freeze_steps: int, steps_per_epoch: int, gradual: bool):
        self.groups = body_groups(model)
        self.freeze_steps, self.steps_per_epoch, self.gradual = freeze_steps, max(1, steps_per_epoch), gradual
        self._applied: int | None = None

    def frozen(self, step: int) -> int:
        """How many layers, counted from the bottom, are frozen at optimizer step ``step`` (0-based)."""
        n = len(self.groups)
        if step < self.freeze_steps:
            return n
        if not self.gradual:
            return 0
        return max(0, n - 1 - (step - self.freeze_steps) // self.steps_per_epoch)

    def apply(self, step: int, keep_off: set[int] = frozenset()) -> None:
        """Set requires_grad and the norms' mode for step ``step``; parameters in ``keep_off``
        (ids: a stem that stopped training) stay off. The frozen norms are put in eval mode on
        every call: an evaluation puts the whole model back in training mode."""
        frozen = self.frozen(step)
        if frozen != self._applied:
            for i, (params, norms) in enumerate(self.groups):
                for p in params:
                    p.requires_grad_(i >= frozen and id(p) not in keep_off)
                for m in norms:
                    m.train(i >= frozen)
            self._applied = frozen
        for params, norms in self.groups[:frozen]:
            for m in norms:
                m.train(False)

    def invalidate(self) -> None:
        """Forget what was applied (another piece changed requires_grad, e.g. the stem)."""
        self._applied = None


# ------------------------------------------------------------------------------------- loading
def _listed(items: list[str], limit: int = 6) -> str:
    more = f", and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def _model_hint(src: Source, model: nn.Module) -> str:
    """What to set so that this run builds the source's model (from the source's metadata)."""
    if not src.model:
        return ""
    have = getattr(model, "config", {}) or {}
    want = _family_args(src.model)
    if src.model.get("name") != have.get("name"):
        settings = " ".join(f"--model.{k}={_yaml(v)}" for k, v in _non_default(src.model).items())
        fix = f"--model.name={src.model.get('name')} {settings}".strip()
    else:
        diff = {k: v for k, v in want.items() if have.get(k) != v and not (
            isinstance(v, list) and tuple(v) == have.get(k))}
        fix = " ".join(f"--model.{k}={_yaml(v)}" for k, v in diff.items())
    shape = (f" It was trained on inputs shaped {tuple(src.model['in_shape'])}, this data's are "
             f"{tuple(have['in_shape'])}." if have.get("in_shape") and src.model.get("in_shape")
             and tuple(src.model["in_shape"]) != tuple(have["in_shape"]) else "")
    return (f" The source is a '{src.model.get('name')}' model.{shape}"
            + (f" Build the same one with {fix} (`layerwise finetune {src.given}` without --model.name takes "
               f"the model from the source)." if fix else ""))


def _family_args(spec: dict[str, Any]) -> dict[str, Any]:
    """The family arguments of a model description (create_model's kwargs less shapes and name)."""
    return {k: v for k, v in spec.items() if k not in ("name", "in_shape", "num_classes")}


def _non_default(spec: dict[str, Any]) -> dict[str, Any]:
    """The family arguments of a model description that differ from the registry's defaults."""
    from layerwise.models import list_models, model_args

    defaults = model_args(spec["name"]) if spec.get("name") in list_models() else {}
    return {k: v for k, v in _family_args(spec).items()
            if k not in defaults or _plain(defaults[k]) != _plain(v)}


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _yaml(v: Any) -> str:
    return json.dumps(list(v) if isinstance(v, tuple) else v).replace(" ", "") if not isinstance(v, str) else v


def load_weights(model: nn.Module, src: Source, classes: list[str] | None = None,
                 task: str | None = None, tokenizer: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load ``src`` into ``model`` by tensor name (see the module docstring for the rule).

    ``classes`` and ``task`` are what this run's head predicts; the source's head is kept only
    when its tensors fit and, where the source records them, these agree. A source laid out for
    another family is first rewritten by its adapter (train/adapters.py: a GPT language model
    into a text-transformer, its embedding rows mapped through ``tokenizer``, the run's data
    tokenizer description). Returns the record
    written to ``init_from.json``: the source (as given, file, sha256, run), the tensors loaded
    and the ones re-initialized, and why. Raises ConfigError listing every body tensor that is of
    another shape, missing from the source, or not in the model (nothing is loaded then)."""
    from layerwise.train.adapters import adapt_source
    from layerwise.train.run import strip_wrapper_names

    source_model = (src.model or {}).get("name")  # as trained, before an adapter rewrites it
    src = adapt_source(src, model, tokenizer)
    state = dict(src.state)
    for name, kept in src.aliases.items():  # tied weights the file stores once
        if kept in state:
            state[name] = state[kept]
    state = strip_wrapper_names(state, model, src.file, src.aliases)
    want = model.state_dict()
    head = head_keys(model)
    head_names = tuple(model.head_names()) if hasattr(model, "head_names") else ()
    body = [k for k in want if k not in head]
    shapes = [f"{k} {tuple(state[k].shape)} in the source, {tuple(want[k].shape)} in the model"
              for k in body if k in state and state[k].shape != want[k].shape]
    missing = [k for k in body if k not in state]
    unexpected = sorted(k for k in state if k not in want and not _under(k, head_names))
    if shapes or missing or unexpected:
        parts = ([f"{len(shapes)} of another shape ({_listed(shapes)})"] if shapes else []) + (
            [f"{len(missing)} missing from the source ({_listed(missing)})"] if missing else []) + (
            [f"{len(unexpected)} in the source but not in the model ({_listed(unexpected)})"] if unexpected else [])
        name = (getattr(model, "config", {}) or {}).get("name", type(model).__name__)
        raise _config_error(
            f"model.init_from='{src.given}' does not fit model '{name}': of the body's tensors, "
            f"{', and '.join(parts)}. The body must match tensor for tensor; only the head "
            f"({', '.join(head_names) or 'none'}) may differ, and is then trained anew.{_model_hint(src, model)}")

    why = _head_differs(state, want, head, src, classes, task)
    keep_head = not why
    loaded = [k for k in want if k in state and (k not in head or keep_head)]
    merged = dict(want)
    merged.update({k: state[k] for k in loaded})
    model.load_state_dict(merged)  # strict: every key, the new head's as it was initialized
    return {
        "init_from": src.given, "file": str(src.file.resolve()), "sha256": src.sha256,
        "run_dir": str(src.run_dir.resolve()) if src.run_dir else None,
        "run_id": src.run_dir.name if src.run_dir else None,
        "source_model": source_model, "source_classes": src.classes, "source_task": src.task,
        "source_metrics": src.metrics, "adapter": src.adapter,
        "head": "loaded" if keep_head else "new", "head_reason": why or "same tensors, classes and task",
        "loaded": loaded, "reinitialized": sorted(head) if not keep_head else [],
    }


def _head_differs(state: dict[str, torch.Tensor], want: dict[str, torch.Tensor], head: set[str], src: Source,
                  classes: list[str] | None, task: str | None) -> str:
    """Why the source's head cannot serve this run ("" when it can)."""
    if not head:
        return ""
    absent = sorted(k for k in head if k not in state)
    if absent:
        return f"the source has no {', '.join(absent)}"
    shapes = [f"{k} {tuple(state[k].shape)} in the source, {tuple(want[k].shape)} here"
              for k in sorted(head) if state[k].shape != want[k].shape]
    if shapes:
        return "other outputs: " + "; ".join(shapes)
    if src.task and task and src.task != task:
        return f"another task: {src.task} in the source, {task} here"
    if src.classes and classes and list(src.classes) != list(classes):
        return f"other classes: {_short(src.classes)} in the source, {_short(classes)} here"
    return ""


def _short(classes: list[str]) -> str:
    return "[" + ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "") + "]"


# ------------------------------------------------------------------------------------- the record
def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``init_from.json`` (None for a run that started from random weights)."""
    path = Path(run_dir) / INIT_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary_fields(record: dict[str, Any] | None) -> dict[str, Any]:
    """The summary's lines about the weights' origin: the source as given, its sha256, the number
    of tensors loaded and the re-initialized ones."""
    if not record:
        return {}
    new = record.get("reinitialized") or []
    return {"init_from": record["init_from"], "init_from_sha256": record["sha256"],
            "init_loaded_tensors": len(record.get("loaded", [])),
            "init_new_head": ", ".join(new) if new else "none (the source's head was kept)"}


# ------------------------------------------------------------------------------------- the shorthand
def _source_model(given: str) -> dict[str, Any] | None:
    """The model description in a source's metadata (None for a file without it), read without
    loading the tensors."""
    from safetensors import SafetensorError, safe_open

    from layerwise.models.pretrained import PREFIX, resolve_pretrained

    try:
        path = resolve_pretrained(given) if str(given).startswith(PREFIX) else Path(given).expanduser()
    except ValueError:  # an unknown name: the Trainer's load says which exist
        return None
    path = path / "model.safetensors" if path.is_dir() else path
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        return json.loads(raw["model"]) if raw.get("format") == "layerwise" and "model" in raw else None
    except (SafetensorError, OSError, ValueError):  # missing or unreadable: the Trainer's load says why
        return None


def finetune_config(source: str, recipe: str | Path | None = None,
                    overrides: list[str] | tuple[str, ...] = ()) -> tuple[Any, list[str]]:
    """The config of ``layerwise finetune SOURCE [RECIPE] [--key=value ...]`` and the notes to
    print: defaults, then the recipe, then the source's model (name and arguments from its
    metadata, unless the recipe or an override names a model), then ``--model.init_from=SOURCE``
    and the overrides. ConfigError as :func:`layerwise.config.load_config` raises them."""
    from layerwise.config import (
        Config,
        apply_overrides,
        load_yaml,
        merge,
        parse_override,
    )

    keys = {".".join(parse_override(o)[:2]) for o in overrides}
    if "model.init_from" in keys:
        raise _config_error(f"`layerwise finetune {source}` sets model.init_from to {source}; leave "
                            f"--model.init_from out, or use `layerwise train --model.init_from=...`.")
    cfg, raw, notes = Config(), {}, []
    if recipe is not None:
        raw = load_yaml(recipe)
        cfg = merge(cfg, raw, where=f"recipe {Path(recipe).name}")
        if not cfg.run.name:
            cfg = merge(cfg, {"run": {"name": Path(recipe).stem}}, where="the recipe's name")
    named = "model.name" in keys or "name" in ((raw or {}).get("model") or {})
    spec = _source_model(source)
    if spec and not named:
        cfg = merge(cfg, {"model": {"name": spec["name"], **_family_args(spec)}}, where=f"the model of {source}")
        shown = ", ".join(f"{k}={_yaml(v)}" for k, v in _non_default(spec).items())
        notes.append(f"model {spec['name']}{f' ({shown})' if shown else ''}, as in {source}")
    cfg = apply_overrides(cfg, [f"--model.init_from={source}", *overrides])
    t, o = cfg.train, cfg.optim
    if t.freeze_body_epochs == 0 and o.body_lr_scale == 1 and t.unfreeze == "all":
        notes.append(f"every layer trains from the start at optim.lr (fastai's fine_tune: {FASTAI_FINE_TUNE})")
    else:
        notes.append(f"train.freeze_body_epochs={t.freeze_body_epochs:g}, train.unfreeze={t.unfreeze}, "
                     f"optim.body_lr_scale={o.body_lr_scale:g}")
    return cfg, notes
