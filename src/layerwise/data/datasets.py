"""Dataset registry: a name gives train/test tensors plus what a model and `predict` need to know.

Small datasets are loaded whole into memory as tensors (uint8 where the source is 8-bit) and
normalized per batch on the device; that is what makes a CPU epoch take milliseconds instead of
seconds of worker-process overhead (airbench's habit). Datasets that are not built in are read
from ``data.root``, laid out as ``<root>/<name>/<file>`` (e.g. ``mnist/mnist_train.npz``).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from layerwise.choices import unknown_choice_error


class DataError(ValueError):
    """Missing, corrupt or unusable data; the message names the file and the fix."""


@dataclass
class DatasetInfo:
    """What a model needs to consume the data, and what `predict` needs to prepare an input."""

    name: str
    in_shape: tuple[int, ...]  # (C, H, W) for images
    num_classes: int
    classes: list[str]
    scale: float  # raw value that maps to 1.0 (16 for digits, 255 for 8-bit images)
    mean: list[float]  # per channel (images, audio) or per feature (tabular), after dividing by scale
    std: list[float]
    # "classify": one label per example; "lm": a token sequence, the next token at every position
    # is the target (in_shape = (block_size,), num_classes = vocabulary size)
    task: str = "classify"
    # what inference needs to prepare an input the way training did: {"tokenizer": ...},
    # {"audio": {"sample_rate": ..., "n_mels": ...}}, {"columns": ...}; JSON-serializable
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "in_shape": list(self.in_shape), "num_classes": self.num_classes,
                "classes": self.classes, "scale": self.scale, "mean": self.mean, "std": self.std,
                "task": self.task, "extra": self.extra}


class ExampleSource(Protocol):
    """A per-example source for data that is not decoded up front (the stream loader's input):
    ``source[i]`` is example i's raw tensor, e.g. (C, H, W) uint8, decoded on demand."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> torch.Tensor: ...


@dataclass
class Dataset:
    """Train and test splits plus their description.

    classify: x is (N, *in_shape) raw values (uint8 or float) or an :class:`ExampleSource` (the
    stream loader decodes it per batch); y is (N,) int64.
    lm: x is a 1-D int64 tensor of token ids (the whole split, in order); y is None.
    """

    info: DatasetInfo
    x_train: Any
    y_train: torch.Tensor | None
    x_test: Any
    y_test: torch.Tensor | None
    source: dict = field(default_factory=dict)  # provenance, written to env.json
    tokenizer: Any = None  # lm: the tokenizer (data/tokenizers.py); saved into the run directory
    warnings: list[str] = field(default_factory=list)  # e.g. files skipped under on_error=skip


# A loader gets the data root and the data config section (layerwise.config.DataConfig)
Loader = Callable[[Path, Any], Dataset]
_REGISTRY: dict[str, Loader] = {}


def register_dataset(name: str):
    def deco(fn: Loader):
        _REGISTRY[name] = fn
        return fn
    return deco


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def load_dataset(name: str, root: str | Path, opts: Any = None) -> Dataset:
    """Load a registered dataset. ``root`` is only read by datasets that are not built in;
    ``opts`` is the data config section (defaults when None). With ``opts.download`` the dataset's
    known files (layerwise.data.download.KNOWN) are fetched into ``root`` first if missing.
    ``opts.classes`` and ``opts.labels_per_class`` then keep some classes and a few labelled
    training examples of each (layerwise.data.subsets)."""
    if opts is None:
        from layerwise.config import DataConfig
        opts = DataConfig(name=name)
    if name not in _REGISTRY:
        raise DataError(str(unknown_choice_error("dataset", name, list_datasets())))
    root = Path(root).expanduser()
    if getattr(opts, "download", False):
        from layerwise.data.download import ensure_dataset  # imports this module: import late
        ensure_dataset(name, root)
    ds = _REGISTRY[name](root, opts)
    if getattr(opts, "classes", None) or getattr(opts, "labels_per_class", 0):
        # layerwise.data.subsets imports this module: import late
        from layerwise.data.subsets import apply_subsets

        ds = apply_subsets(ds, opts)
    if getattr(opts, "folds", 0) and not str(ds.source.get("split", "")).startswith("fold"):
        from layerwise.config import ConfigError
        raise ConfigError(f"data.folds={opts.folds} splits a source without a test split into folds, but dataset "
                          f"'{name}' has its own test split ({ds.source.get('split', 'fixed')}), so every fold "
                          f"would be the same run. Set data.folds=0, or use the data without its test part.")
    _check(ds)
    return ds


def _check(ds: Dataset) -> None:
    if ds.info.task == "lm":
        for split, x in (("train", ds.x_train), ("validation", ds.x_test)):
            if x.dim() != 1 or len(x) <= ds.info.in_shape[0]:
                raise DataError(f"dataset '{ds.info.name}' {split} split has {len(x)} tokens, fewer than one "
                                f"context of data.block_size={ds.info.in_shape[0]} plus one. Use more text "
                                f"or a smaller data.block_size.")
            if int(x.min()) < 0 or int(x.max()) >= ds.info.num_classes:
                raise DataError(f"dataset '{ds.info.name}' {split} split has token ids outside the "
                                f"vocabulary [0, {ds.info.num_classes - 1}]. Rebuild the tokenizer.")
        return
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if not isinstance(x, torch.Tensor):  # a lazy source: checked as it is decoded
            continue
        if len(x) != len(y) or len(x) == 0:
            raise DataError(f"dataset '{ds.info.name}' {split} split has {len(x)} inputs and {len(y)} "
                            f"labels; both must be equal and non-zero. Re-create the data files.")
        if x.is_floating_point() and not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
            raise DataError(f"dataset '{ds.info.name}' {split} split holds NaN or Inf values in {bad} "
                            f"examples. Clean or drop those examples before training.")
        if ds.info.task == "regress":
            if not y.is_floating_point() or y.dim() != 2 or not torch.isfinite(y).all():
                raise DataError(f"dataset '{ds.info.name}' {split} split: regression targets must be finite "
                                f"numbers, one column per target (got {y.dtype} {tuple(y.shape)}). Fix the targets.")
        elif ds.info.task == "multilabel":
            if y.dim() != 2 or y.shape[1] != ds.info.num_classes or not bool(((y == 0) | (y == 1)).all()):
                raise DataError(f"dataset '{ds.info.name}' {split} split: multilabel targets must be 0/1, one "
                                f"column per label ({ds.info.num_classes}). Fix the labels.")
        elif int(y.min()) < 0 or int(y.max()) >= ds.info.num_classes:
            raise DataError(f"dataset '{ds.info.name}' {split} split has labels outside "
                            f"[0, {ds.info.num_classes - 1}]. Fix the labels.")


def fingerprint(ds: Dataset) -> str:
    """sha256 of a dataset's splits (targets, and inputs; a source that lists its files in
    ``source["files_sha256"]`` by that, so the device and stream loaders agree): a resumed run
    checks that it continues on the data it started with."""
    import hashlib

    h = hashlib.sha256()

    def add(x: Any) -> None:
        if x is None:
            h.update(b"none")
        elif isinstance(x, torch.Tensor):
            h.update(str((tuple(x.shape), str(x.dtype))).encode())
            h.update(x.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif hasattr(x, "ids") and hasattr(x, "offsets"):  # token sequences
            add(x.ids)
            add(x.offsets)
        else:
            h.update(repr(type(x)).encode() + str(len(x)).encode())
    files = ds.source.get("files_sha256")
    for part in ((ds.y_train, ds.y_test) if files else (ds.x_train, ds.y_train, ds.x_test, ds.y_test)):
        add(part)
    if files:
        h.update(files.encode())
    return h.hexdigest()


def user_path(root: Path, opts: Any, dataset: str, what: str) -> Path:
    """``opts.path`` resolved against the data root (absolute paths are kept); it must exist.
    ``what`` describes what the path should hold, for the error message."""
    if not getattr(opts, "path", ""):
        raise DataError(f"dataset '{dataset}' reads {what}, and data.path is not set. Pass "
                        f"--data.path=PATH (relative to data.root '{root}', or absolute).")
    path = root / Path(opts.path).expanduser()  # an absolute opts.path replaces root
    if not path.exists():
        raise DataError(f"dataset '{dataset}': data.path '{opts.path}' does not exist (looked for "
                        f"'{path}'). It should be {what}; fix data.path or data.root.")
    return path


SPLIT_SEED = 0  # the held-out split of a source without a test split is the same on every run


def stratified_split(y: np.ndarray, val_fraction: float, seed: int = SPLIT_SEED
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val), each sorted, holding out ``round(n_c * val_fraction)`` examples of
    every class c, drawn with a generator seeded by ``seed`` (classes visited in sorted order).
    A class with 2+ examples gives at least one to each side; a class of one stays in train."""
    if not 0 < val_fraction < 1:
        raise DataError(f"data.val_fraction must be in (0, 1) to split off a validation set, got "
                        f"{val_fraction}.")
    rng = np.random.default_rng(seed)
    train, val = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = min(max(math.floor(len(idx) * val_fraction + 0.5), 1), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def holdout_split(y: np.ndarray | None, opts: Any, n: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(train indices, test indices, how they were drawn) for a source without a test split.

    With ``data.folds`` = K > 0: fold ``data.fold`` of K-fold cross-validation (scikit-learn's
    StratifiedKFold over the labels ``y`` when every class has at least K examples, else KFold;
    shuffled with seed SPLIT_SEED, so the folds are the same on every run and partition the data).
    Otherwise a held-out ``data.val_fraction`` (:func:`stratified_split` over ``y``, or a seeded
    random split when ``y`` is None, e.g. regression targets). ``n`` is the number of examples
    when ``y`` is None."""
    n = len(y) if y is not None else int(n)
    folds, fold = int(getattr(opts, "folds", 0) or 0), int(getattr(opts, "fold", 0) or 0)
    if folds:
        from sklearn.model_selection import KFold, StratifiedKFold

        if not 2 <= folds <= n:
            raise DataError(f"data.folds={folds} splits {n} examples into folds; use 2 <= data.folds <= {n} "
                            f"(or 0 for a single held-out part of data.val_fraction).")
        if not 0 <= fold < folds:
            raise DataError(f"data.fold={fold} is not one of the {folds} folds; use 0 .. {folds - 1}.")
        stratify = y is not None and np.unique(y, return_counts=True)[1].min() >= folds
        splitter = (StratifiedKFold if stratify else KFold)(folds, shuffle=True, random_state=SPLIT_SEED)
        tr, te = list(splitter.split(np.zeros(n), y if stratify else None))[fold]
        how = f"fold {fold} of {folds}-fold cross-validation ({'stratified, ' if stratify else ''}seed {SPLIT_SEED})"
        return np.sort(tr), np.sort(te), how
    if y is not None:
        tr, te = stratified_split(y, opts.val_fraction)
        return tr, te, f"stratified split val_fraction={opts.val_fraction} seed={SPLIT_SEED}"
    if not 0 < opts.val_fraction < 1:
        raise DataError(f"data.val_fraction must be in (0, 1) to split off a test set, got {opts.val_fraction}.")
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_te = min(max(int(round(n * opts.val_fraction)), 1), n - 1)
    how = f"random split val_fraction={opts.val_fraction} seed={SPLIT_SEED}"
    return np.sort(perm[n_te:]), np.sort(perm[:n_te]), how


def _npz(root: Path, rel: str, dataset: str) -> dict[str, np.ndarray]:
    """Read an .npz without pickle; missing or corrupt files raise a DataError that says why."""
    path = root / rel
    if not path.is_file():
        raise DataError(
            f"dataset '{dataset}' needs the file {rel} under the data root '{root}', and it is not there. "
            f"Set data.root (--data.root=DIR) or the environment variable LAYERWISE_DATA to the folder "
            f"that holds {rel}.")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"dataset file '{path}' is corrupt or not an .npz archive ({e}). "
                        f"Replace it with a good copy.") from None


@register_dataset("digits")
def _digits(root: Path, opts: Any) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16); fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32)[:, None]  # (N, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)
    info = DatasetInfo("digits", (1, 8, 8), 10, [str(i) for i in range(10)], 16.0,
                       mean=[0.3054], std=[0.3761])  # measured on the training split
    return Dataset(info, torch.from_numpy(xtr), torch.from_numpy(ytr).long(),
                   torch.from_numpy(xte), torch.from_numpy(yte).long(),
                   {"source": "sklearn.datasets.load_digits", "split": "train_test_split(0.2, random_state=0)"})
