"""A finished run, opened for inspection: its model, task, data and the input space people speak in.

Every insight command (explain, probe, attack) starts here, so that they agree on what a run's
inputs are. Images are handled in *pixel space*: values in [0, 1] (the raw value divided by the
dataset's ``scale``), the space in which papers state an attack's eps and in which an attribution
map is drawn; :class:`PixelModel` puts the run's normalization in front of the model, so that
gradients flow to pixels. Audio (log-mel features) and tables use the same convention on their
own raw values divided by ``scale``; token ids (text) have no such space and are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from layerwise.config import default_data_root, load_config
from layerwise.data import DataError, DatasetInfo, load_dataset
from layerwise.data.datasets import Dataset
from layerwise.data.loader import gather
from layerwise.models.pretrained import PREFIX, resolve_pretrained
from layerwise.train.inference import _info, model_task
from layerwise.train.run import RunDirError, load_model
from layerwise.train.trainer import resolve_device


class PixelModel(torch.nn.Module):
    """``model((x - mean) / std)``: a model that takes pixel-space inputs (raw / scale).

    x: (B, *in_shape) float in the data's pixel space (images: [0, 1]); returns the model's
    output (logits (B, num_classes) for a classifier). mean and std are the run's per-channel
    (or per-feature) statistics from its DatasetInfo, as :class:`layerwise.data.augment.Normalize`
    applies them; gradients with respect to x are therefore gradients in pixel space."""

    def __init__(self, model: torch.nn.Module, info: DatasetInfo):
        super().__init__()
        self.model = model
        K = info.in_shape[0]
        shape = (1, K) + (1,) * (len(info.in_shape) - 1)
        dev = next(model.parameters()).device
        self.register_buffer("mean", torch.tensor(info.mean, dtype=torch.float32, device=dev).view(shape))
        self.register_buffer("std", torch.tensor(info.std, dtype=torch.float32, device=dev).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


@dataclass
class LoadedRun:
    """A run directory (or model file) opened for inspection. ``model`` is in eval mode on
    ``device``; ``dataset`` is loaded on first use of :meth:`examples` (from ``data_root``, else
    the run's data.root, else the default data root)."""

    path: Path
    model: torch.nn.Module
    meta: dict[str, Any]
    info: DatasetInfo
    task: Any
    cfg: Any
    device: torch.device
    data_root: str = ""
    source: str = ""  # what the user gave (a run, a file, pretrained:NAME), for messages
    _dataset: Dataset | None = field(default=None, repr=False)

    @property
    def has_pixels(self) -> bool:
        """True when inputs are real-valued (images, audio features, tables), i.e. they have a
        pixel space; False for token ids, rating indices and molecular graphs."""
        x = self.info.extra
        return not ("text" in x or "molecules" in x or x.get("inputs") == "indices" or self.info.task == "lm"
                    or "tokenizer" in x)

    def pixel_model(self) -> PixelModel:
        """The model behind its normalization (see :class:`PixelModel`). Raises ValueError for
        runs whose inputs are not real-valued (:attr:`has_pixels` False)."""
        if not self.has_pixels:
            raise ValueError(f"the run in '{self.path}' takes token ids or indices ({self.info.name}); it has no "
                             f"pixel space to normalize.")
        return PixelModel(self.model, self.info).eval()

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            try:
                if self.cfg is None:
                    self._dataset = self._dataset_from_meta()
                else:
                    root = self.data_root or self.cfg.data.root or default_data_root()
                    self._dataset = load_dataset(self.cfg.data.name, root, self.cfg.data)
            except DataError as e:  # the data modules name `layerwise train`'s flag; insight commands take --data-root
                raise DataError(str(e).replace("(--data.root=DIR)", "(--data-root DIR)")) from None
        return self._dataset

    def _dataset_from_meta(self) -> Dataset:
        """A model file without its run directory (e.g. ``pretrained:NAME``): the dataset its
        metadata names, from ``data_root``, with the classes it was trained on (a class subset is
        taken again by name). Raises RunDirError when no data_root was given."""
        from layerwise.config import DataConfig

        if not self.data_root:
            given = self.source or self.path
            raise RunDirError(f"'{given}' is a model file without its run directory (no config.yaml), so where "
                              f"its data ({self.info.name}) lives is unknown; give the run directory, or the data "
                              f"root (--data-root DIR holding {self.info.name}).")
        ds = load_dataset(self.info.name, self.data_root, DataConfig(name=self.info.name))
        if self.info.task == "classify" and self.info.classes and list(ds.info.classes) != list(self.info.classes):
            ds = load_dataset(self.info.name, self.data_root,
                              DataConfig(name=self.info.name, classes=list(self.info.classes)))
        return ds

    def examples(self, split: str = "test", n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` examples of a split (``test`` or ``train``), chosen by a seeded permutation (the
        same ``seed`` gives the same examples), as (x, y) on :attr:`device`.

        x: (n, *in_shape) float32 in pixel space (raw / scale) for real-valued inputs, the raw
        int64 ids otherwise; y: (n,) labels (or targets) as the dataset stores them, or None.
        ``n`` larger than the split gives the whole split. Raises DataError for an unknown
        split or a language-model run (a token stream, not examples)."""
        if split not in ("test", "train"):
            raise DataError(f"split must be 'test' or 'train', got '{split}'.")
        if self.info.task == "lm":
            raise DataError(f"the run in '{self.path}' is a language model: its data is one token stream, not "
                            f"examples with labels.")
        try:
            ds = self.dataset
        except DataError as e:  # a message that names only data.path / data.root, keys of `layerwise train`
            if "--data-root" in str(e) or self.cfg is None:
                raise
            root = self.data_root or self.cfg.data.root or default_data_root()
            raise DataError(f"{e} This command reads the run's data from '{root}'; give the folder that holds it "
                            f"with --data-root DIR (Python: data_root=...).") from None
        x_all, y_all = (ds.x_test, ds.y_test) if split == "test" else (ds.x_train, ds.y_train)
        N = len(x_all)
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(N, generator=g)[:min(n, N)].sort().values
        if "text" in self.info.extra and not isinstance(x_all, torch.Tensor):
            # sentences of token ids of different lengths: padded to the longest, as the loader does
            from layerwise.data.textclass import pad_batch

            x = pad_batch([x_all[i] for i in idx.tolist()])
        else:
            x = gather(x_all, idx.tolist()) if isinstance(x_all, torch.Tensor) or hasattr(x_all, "__getitem__") \
                else None
        if x is None or not isinstance(x, torch.Tensor):
            raise DataError(f"the '{split}' split of '{self.info.name}' is not a tensor of examples "
                            f"({type(x_all).__name__}); this command does not take such data yet.")
        if self.has_pixels:
            x = x.float() / self.info.scale
        y = y_all[idx] if isinstance(y_all, torch.Tensor) else None
        return x.to(self.device), (y.to(self.device) if y is not None else None)


def _refuse_non_model(path: Path) -> None:
    """RunDirError for the paths people give instead of a run (a training checkpoint, a folder of
    runs, a run that never finished), naming what to give instead."""
    if path.is_file() and path.suffix == ".pt":
        run = path.parent.parent
        done = (run / "model.safetensors").is_file()
        raise RunDirError(f"'{path}' is a training checkpoint (resumable state), not a model file; give the run "
                          f"directory '{run}'" + (" (it holds model.safetensors)." if done else
                                                  f", once `layerwise train --resume {run}` has finished it."))
    if not path.is_dir() or (path / "model.safetensors").exists():
        return
    if (path / "checkpoints").is_dir() and (path / "config.yaml").is_file():
        raise RunDirError(f"the run in '{path}' has not finished (checkpoints, no model.safetensors); finish it with "
                          f"`layerwise train --resume {path}`, then run this command again.")
    runs = sorted(p.name for p in path.iterdir() if (p / "model.safetensors").is_file())
    if runs:
        raise RunDirError(f"'{path}' is a folder of runs, not a run; give one of them: "
                          f"{', '.join(str(path / r) for r in runs[:5])}{', ...' if len(runs) > 5 else '.'}")


def open_run(run_dir: str | Path, device: str = "auto", data_root: str = "") -> LoadedRun:
    """Open a run directory (or a layerwise model.safetensors file, or a shipped model named
    ``pretrained:NAME``, whose data is then read from ``data_root``) for inspection.

    Returns a :class:`LoadedRun` with the model in eval mode on ``device`` (``auto``: a GPU when
    there is one). Raises RunDirError naming the path when it holds no readable layerwise model
    (the message says what to give instead)."""
    source = str(run_dir)
    if source.startswith(PREFIX):  # a shipped model (its data comes from data_root)
        run_dir = resolve_pretrained(str(run_dir))
    path = Path(run_dir)
    if not path.exists():
        raise RunDirError(f"'{path}' does not exist; give a run directory (runs/<name>-<time>) or its "
                          f"model.safetensors.")
    _refuse_non_model(path)
    dev = resolve_device(device, "--device")
    model, meta = load_model(path, dev)
    info = _info(meta)
    run = path if path.is_dir() else path.parent
    cfg = load_config(run / "config.yaml") if (run / "config.yaml").is_file() else None
    return LoadedRun(path=run, model=model, meta=meta, info=info, task=model_task(meta, info, cfg), cfg=cfg,
                     device=dev, data_root=data_root, source=source)
