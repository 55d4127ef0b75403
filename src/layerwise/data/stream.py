"""A resumable loader for data that does not fit on the device: batches decoded in worker processes.

:class:`StreamLoader` has the face and the batches of :class:`~layerwise.data.loader.BatchLoader`
(the same seeded, sharded order from :class:`~layerwise.data.loader.EpochOrder`, the same
``BatchTransform``), so a run can switch ``data.loader`` between ``device`` and ``stream`` and see
the same numbers. Only the path of a batch differs: a torch DataLoader's workers gather it from a
CPU tensor or an :class:`~layerwise.data.datasets.ExampleSource` (raw dtype kept: uint8 images
cross process and PCIe boundaries at a quarter of float32's size), it is pinned and copied with
non_blocking=True, and normalized and augmented on the device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from layerwise.choices import unknown_choice_error
from layerwise.data.augment import BatchTransform
from layerwise.data.datasets import ExampleSource
from layerwise.data.loader import BatchLoader, EpochOrder, gather, materialize

LOADERS = ("device", "stream")  # the values of data.loader


class _Batches(Dataset):
    """Batch-at-a-time access for the DataLoader's workers: ``__getitems__(indices)`` returns the
    collated (x (B, *shape) raw dtype, y (B,)) pair in one gather, not B examples to collate."""

    def __init__(self, x: torch.Tensor | ExampleSource, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return gather(self.x, idx), self.y[torch.as_tensor(idx, dtype=torch.long)]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]


def _collated(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The DataLoader's collate_fn: __getitems__ already collated (module-level so it pickles)."""
    return batch


class _BatchIndices(Sampler[list[int]]):
    """The batch sampler: index lists of batches [start, stop) of one epoch's rank order, made lazily."""

    def __init__(self, order: torch.Tensor, loader: EpochOrder, start: int, stop: int):
        self.order, self.loader, self.start, self.stop = order, loader, start, stop

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.start, self.stop):
            yield self.order[self.loader.batch_slice(i)].tolist()

    def __len__(self) -> int:
        return self.stop - self.start


class StreamLoader(EpochOrder):
    """Yields (x, y) batches like :class:`BatchLoader`, decoding them in ``workers`` processes.

    x: (N, *in_shape) raw values in a CPU tensor, or an ExampleSource (``source[i]`` one raw
    example); y: (N,) int64 on the CPU. ``device`` is where batches go (default: the transform's);
    ``pin_memory`` None pins host batches when that device is CUDA. workers=0 loads in this process.
    Each ``iter()`` starts a DataLoader at ``position``, so a resumed loader continues mid-epoch
    exactly; its workers live for one epoch.
    """

    def __init__(self, x: torch.Tensor | ExampleSource, y: torch.Tensor, batch_size: int,
                 transform: BatchTransform, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, augment: bool = False, workers: int = 2,
                 pin_memory: bool | None = None, device: torch.device | str | None = None):
        super().__init__(x, y, batch_size, transform, shuffle=shuffle, seed=seed, drop_last=drop_last,
                         rank=rank, world_size=world_size, augment=augment)
        if workers < 0:
            raise ValueError(f"data.workers must be >= 0, got {workers}")
        if (isinstance(x, torch.Tensor) and x.device.type != "cpu") or y.device.type != "cpu":
            raise ValueError("StreamLoader reads x and y from CPU memory; data already on the device "
                             "belongs in BatchLoader (data.loader=device)")
        self.device = torch.device(device) if device is not None else transform.device
        self.workers = workers
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else pin_memory

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over the rest of the current epoch (all of it unless resumed mid-epoch)."""
        if self.position < len(self):
            order = self.rank_order()
            sampler = _BatchIndices(order, self, self.position, len(self))
            batches = DataLoader(_Batches(self.x, self.y), batch_sampler=sampler, collate_fn=_collated,
                                 num_workers=self.workers, pin_memory=self.pin_memory)
            for x_raw, y in batches:  # (B, *in_shape) raw dtype, (B,) int64, on the CPU
                i = self.position
                x_raw = x_raw.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                flips = self.flips(order[self.batch_slice(i)])
                x, y = self.transform(x_raw, y, self.augment_generator(i), flips)
                self.position += 1
                yield x, y
        self.next_epoch()


def build_loader(kind: str, x: torch.Tensor | ExampleSource, y: torch.Tensor, batch_size: int,
                 transform: BatchTransform, device: torch.device | str, *, workers: int = 2,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False, augment: bool = False,
                 rank: int = 0, world_size: int = 1) -> BatchLoader | StreamLoader:
    """The loader ``data.loader`` names. ``device``: the whole split is decoded (a source via
    :func:`materialize`) and moved to ``device`` once; ``stream``: batches are decoded by
    ``workers`` processes and moved one at a time."""
    if kind == "device":
        return BatchLoader(materialize(x).to(device), y.to(device), batch_size, transform, shuffle=shuffle,
                           seed=seed, drop_last=drop_last, augment=augment, rank=rank, world_size=world_size)
    if kind == "stream":
        return StreamLoader(x, y.cpu(), batch_size, transform, shuffle=shuffle, seed=seed,
                            drop_last=drop_last, augment=augment, rank=rank, world_size=world_size,
                            workers=workers, device=device)
    raise unknown_choice_error("data.loader", kind, LOADERS)
