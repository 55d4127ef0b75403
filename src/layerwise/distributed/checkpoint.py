"""Sharded checkpoints with Distributed Checkpoint (DCP), resumable at any world size.

A distributed run writes ``checkpoints/step_XXXXXXXX.dcp/``: every rank writes its own shards
of the model and optimizer (``dcp.save``, keyed by parameter name, so the layout does not depend
on the strategy or the number of ranks), rank 0 adds ``trainer.json`` (step, loader position,
metric sums, ...) and each rank its RNG state under ``rng/``. The folder is written as
``*.dcp.tmp`` and renamed when complete, so a killed job never leaves a half checkpoint under
the final name. Loading reshards: a checkpoint saved by 2 ranks resumes on 1 or 4, and a
single-process ``.pt`` checkpoint (``layerwise.train.checkpoint``) resumes on several ranks.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerwise.train.checkpoint import (CHECKPOINT_FORMAT_VERSION, CheckpointError, atomic_write,
                                       check_format_version, list_checkpoints)

SUFFIX = ".dcp"


def _dcp_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob(f"step_*{SUFFIX}") if p.is_dir())


def all_checkpoints(directory: Path) -> list[Path]:
    """Every checkpoint of a run, ``.pt`` files and ``.dcp`` folders, oldest first."""
    items = list_checkpoints(directory) + _dcp_dirs(directory)
    return sorted(items, key=lambda p: p.name.split(".")[0])


def _torch_optimizers(optimizer: Any) -> Any:
    """What DCP's state-dict helpers take: one torch optimizer, or the several that a
    CombinedOptimizer (Muon + AdamW/SGD) steps as one."""
    return optimizer.optimizers if hasattr(optimizer, "optimizers") else optimizer


def _template(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, _torch_optimizers(optimizer))
    return {"model": msd, "optim": osd}


def save(directory: Path, step: int, par: Any, model: nn.Module, optimizer: torch.optim.Optimizer,
         extra: dict[str, Any], rng: dict[str, Any], keep: int, tensors: dict[str, Any] | None = None) -> Path:
    """Collective: every rank calls it. ``extra`` (JSON, rank 0's) and ``rng`` (this rank's) are
    saved beside the shards; ``tensors`` adds more replicated or sharded state (e.g. EMA)."""
    import torch.distributed.checkpoint as dcp

    final = directory / f"step_{step:08d}{SUFFIX}"
    tmp = final.with_name(final.name + ".tmp")
    if par.is_rank0:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    par.barrier()
    state = _template(model, optimizer) | (tensors or {})
    dcp.save(state, checkpoint_id=str(tmp))
    (tmp / "rng").mkdir(exist_ok=True)
    torch.save(rng, tmp / "rng" / f"rank{par.rank}.pt")
    par.barrier()
    if par.is_rank0:
        from layerwise import __version__
        extra = extra | {"world_size": par.world_size, "strategy": par.dims.strategy,
                         "format_version": CHECKPOINT_FORMAT_VERSION, "layerwise": __version__}
        atomic_write(tmp / "trainer.json", json.dumps(extra).encode())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        prune(directory, keep)
    par.barrier()
    return final


def prune(directory: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints of either format."""
    for old in all_checkpoints(directory)[:-keep]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)


def read_trainer_state(path: Path) -> dict[str, Any]:
    """A ``.dcp`` checkpoint's trainer.json (step, loader, config, ...), checked for its format."""
    if not (path / ".metadata").is_file() or not (path / "trainer.json").is_file():
        raise CheckpointError(f"{path.name} is incomplete (no .metadata or trainer.json)")
    try:
        extra = json.loads((path / "trainer.json").read_text())
    except ValueError as e:
        raise CheckpointError(f"{path.name}/trainer.json is unreadable ({e})") from None
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path.name}/trainer.json is not a JSON object")
    check_format_version(extra, path.name)
    return extra


def load(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, rank: int,
         tensors: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Load a ``.dcp`` checkpoint into ``model`` and ``optimizer`` (sharded or not, any world size;
    without a process group it loads in this one process). Returns (trainer.json, this rank's RNG
    state or None when the checkpoint was written by fewer ranks)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    extra = read_trainer_state(path)
    state = _template(model, optimizer) | (tensors or {})
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
        warnings.filterwarnings("ignore", message=".*single process.*")
        try:
            dcp.load(state, checkpoint_id=str(path))
        except Exception as e:  # DCP raises CheckpointException and friends for bad files
            raise CheckpointError(f"{path.name} could not be read ({str(e).strip().splitlines()[0][:200]})") from None
    set_state_dict(model, _torch_optimizers(optimizer), model_state_dict=state["model"],
                   optim_state_dict=state["optim"])
    rng_path = path / "rng" / f"rank{rank}.pt"
    try:
        rng = torch.load(rng_path, weights_only=True) if rng_path.is_file() else None
    except Exception as e:  # a truncated or foreign file: pickle, zip and runtime errors alike
        raise CheckpointError(f"{path.name}/rng/{rng_path.name} could not be read ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})") from None
    return extra, rng


def load_full(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, torch.Tensor],
              optim_state: dict[str, Any], param_names: list[str]) -> None:
    """Load a single-process checkpoint (whole tensors, optimizer keyed by position) into a
    sharded or wrapped model: every rank keeps its own part."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    # A CombinedOptimizer saved {child name: child state}, each child numbering its parameters
    # from 0; param_names follows the children's groups in order.
    parts = ([(optim_state[n], o) for n, o in zip(optimizer.names, optimizer.optimizers)]
             if hasattr(optimizer, "optimizers") else [(optim_state, optimizer)])
    by_name: dict[str, Any] = {"state": {}, "param_groups": []}
    offset = 0
    for part, opt in parts:
        names = param_names[offset:offset + sum(len(g["params"]) for g in opt.param_groups)]
        offset += len(names)
        by_name["state"].update({names[i]: s for i, s in part["state"].items()})
        by_name["param_groups"] += [g | {"params": [names[i] for i in g["params"]]} for g in part["param_groups"]]
    set_state_dict(model, _torch_optimizers(optimizer), model_state_dict=model_state, optim_state_dict=by_name,
                   options=StateDictOptions(full_state_dict=True))


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Collective: the whole (unsharded) model state on the CPU, for the final safetensors export."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
