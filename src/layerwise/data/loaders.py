"""The loaders a run trains and evaluates with, built from a dataset and the data config.

One function for the Trainer (:func:`build_loaders`) and one for re-evaluating a saved model
(:func:`build_eval_loader`), so both read a split the same way:

- tensors (images, audio features, tables): ``data.loader=device`` (the split on the device,
  batches gathered there) or ``stream`` (worker processes), normalized and augmented by one
  :class:`~layerwise.data.augment.BatchTransform`;
- a token stream (language modelling): random windows of ``data.block_size`` tokens
  (:class:`~layerwise.data.text.TokenLoader`);
- token sequences of different lengths (text classification): padded batches of similar
  lengths (:class:`~layerwise.data.textclass.SequenceLoader`);
- molecular graphs (molecules, data.featurize=graph): batches of concatenated graphs
  (:class:`~layerwise.data.molecules.GraphLoader`, the same order and resume as sequences).

Every loader has the same face: ``len``, ``state_dict()`` for exact resume, ``examples_per_rank``,
``batch_size``, ``drop_last``, sharding by rank, and ``evaluation_view``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from layerwise.data.augment import BatchTransform
from layerwise.data.datasets import DataError, Dataset, DatasetInfo
from layerwise.data.loader import head
from layerwise.data.stream import build_loader

__all__ = ["Loaders", "build_eval_loader", "build_loaders", "lm_eval_batch"]


def lm_eval_batch(d: Any) -> int:
    """data.eval_batch_size counts examples; a text evaluation batch is kept at <= 64k tokens."""
    return max(1, min(d.eval_batch_size, 65536 // d.block_size))


@dataclass
class Loaders:
    """What a run reads: the training loader (shuffled, augmented, sharded), the test loader, the
    batch transform (None for token inputs), and the training split's inputs and targets (for
    models that initialize from data and tasks that prepare targets; None for a token stream)."""

    train: Any
    test: Any
    transform: BatchTransform | None
    x_train: Any
    y_train: torch.Tensor | None


def _sequences(ds: Dataset) -> bool:
    """Variable-size examples with their own loader: token sequences or molecular graphs."""
    from layerwise.data.molecules import GraphSet
    from layerwise.data.textclass import SequenceSet

    return isinstance(ds.x_train, (SequenceSet, GraphSet))


def _sequence_loader(ds: Dataset) -> type:
    from layerwise.data.molecules import GraphLoader, GraphSet
    from layerwise.data.textclass import SequenceLoader

    return GraphLoader if isinstance(ds.x_train, GraphSet) else SequenceLoader


def build_loaders(ds: Dataset, d: Any, device: torch.device, micro: int, *, seed: int = 0, rank: int = 0,
                  world_size: int = 1) -> Loaders:
    """The training loader (micro-batches of ``micro`` examples on this rank) and the test loader
    (``data.eval_batch_size``) of ``ds``; ``d`` is the data config section. ``data.train_subset``
    keeps the first N training examples (tokens for a language model)."""
    if ds.info.task == "lm":
        from layerwise.data.text import TokenLoader

        tokens = ds.x_train[:d.train_subset] if d.train_subset else ds.x_train
        if len(tokens) <= d.block_size:
            raise DataError(f"data.train_subset={d.train_subset} leaves {len(tokens)} training tokens, fewer "
                            f"than one context of data.block_size={d.block_size} plus one. Raise it.")
        train = TokenLoader(tokens.to(device), micro, d.block_size, shuffle=True, seed=seed,
                            drop_last=d.drop_last, rank=rank, world_size=world_size)
        test = TokenLoader(ds.x_test.to(device), lm_eval_batch(d), d.block_size, rank=rank, world_size=world_size)
        return Loaders(train, test, None, None, None)
    x_train, y_train = ds.x_train, ds.y_train
    if d.train_subset:
        x_train = x_train.head(d.train_subset) if _sequences(ds) else head(x_train, d.train_subset)
        y_train = y_train[:d.train_subset]
    if _sequences(ds):
        loader = _sequence_loader(ds)
        train = loader(x_train, y_train, micro, device, shuffle=True, seed=seed, drop_last=d.drop_last,
                       rank=rank, world_size=world_size)
        test = loader(ds.x_test, ds.y_test, d.eval_batch_size, device, rank=rank, world_size=world_size)
        return Loaders(train, test, None, x_train, y_train)
    # one transform normalizes both splits on the device; only the train loader augments
    transform = BatchTransform.from_config(d, ds.info, device)
    # data.loader=device: the whole split moves to the device once; stream: worker processes.
    # Each data-parallel rank reads its own share of every epoch (DistributedSampler's split).
    train = build_loader(d.loader, x_train, y_train, micro, transform, device, workers=d.workers, shuffle=True,
                         seed=seed, drop_last=d.drop_last, augment=True, rank=rank, world_size=world_size)
    test = build_loader(d.loader, ds.x_test, ds.y_test, d.eval_batch_size, transform, device, workers=d.workers,
                        rank=rank, world_size=world_size)
    return Loaders(train, test, transform, x_train, y_train)


def build_eval_loader(ds: Dataset, d: Any, info: DatasetInfo, device: torch.device) -> Any:
    """The test loader of ``ds`` in one process, normalized with ``info`` (a saved model's)."""
    if info.task == "lm":
        from layerwise.data.text import TokenLoader
        return TokenLoader(ds.x_test.to(device), lm_eval_batch(d), d.block_size)
    if _sequences(ds):
        return _sequence_loader(ds)(ds.x_test, ds.y_test, d.eval_batch_size, device)
    return build_loader(d.loader, ds.x_test, ds.y_test, d.eval_batch_size, BatchTransform(info, device), device,
                        workers=d.workers)
