"""A resumable batch loader over tensors that already live on the training device.

Loaders are plain iterables with ``__len__`` and ``state_dict()`` / ``load_state_dict()`` (STYLE
habit 5): an epoch's order is a permutation drawn from a generator seeded by (seed, epoch), so the
state is just two integers and a resumed run sees exactly the batches it would have seen.
:class:`EpochOrder` holds that logic (and the split across ranks) for both :class:`BatchLoader`
and ``layerwise.data.stream.StreamLoader``; :class:`~layerwise.data.augment.BatchTransform`
normalizes and augments each batch on the device for both.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from layerwise.data.augment import BatchTransform, Normalize
from layerwise.data.datasets import DataError, ExampleSource

__all__ = ["BatchLoader", "BatchTransform", "EpochOrder", "Normalize", "gather", "head", "materialize"]

# Salt of the augmentation streams' last key (which is _AUG_KEY + rank): it keeps them apart from
# the order's (seed, epoch) stream, and rank 0 draws what single-process runs drew before sharding.
_AUG_KEY = 7
_FLIP_KEY = 11  # salt of the per-example flip bits of data.flip_mode=alternate
# The device loader normalizes its whole split once when the float32 copy fits in this many bytes
# (MNIST's training split: 188 MB; CIFAR-10's: 614 MB), instead of three elementwise passes per
# batch (issue 14: 9% of the MNIST MLP's step on a CPU). The values are the same: normalization is
# elementwise, so a batch of the normalized split equals the normalized batch, bit for bit.
PRENORMALIZE_BYTES = 1 << 30
_PRENORMALIZE_ROWS = 8192  # rows normalized at a time (bounds the temporaries to a few MB)


def _gen(*keys: int) -> torch.Generator:
    g = torch.Generator()
    seed = 0
    for k in keys:  # simple mixing; different (seed, epoch, batch) give unrelated streams
        seed = (seed * 1_000_003 + int(k) + 1) % (2**63 - 1)
    g.manual_seed(seed)
    return g


# ---------------------------------------------------------------------------------------- sources
def gather(x: torch.Tensor | ExampleSource, idx: Sequence[int]) -> torch.Tensor:
    """Examples ``idx`` of a tensor or an :class:`ExampleSource`, as one (len(idx), *shape) tensor
    of the examples' dtype (raw uint8 stays uint8). A source's examples must agree in shape and dtype."""
    if isinstance(x, torch.Tensor):
        return x[torch.as_tensor(idx, dtype=torch.long)]
    if len(idx) == 0:
        raise DataError("gather needs at least one example index.")
    first = x[idx[0]]
    out = torch.empty((len(idx), *first.shape), dtype=first.dtype)  # (B, *shape)
    out[0] = first
    for j, i in enumerate(idx[1:], 1):
        xi = x[i]
        if xi.shape != first.shape or xi.dtype != first.dtype:
            raise DataError(f"example {i} of the data source is {tuple(xi.shape)} {xi.dtype}, while example "
                            f"{idx[0]} is {tuple(first.shape)} {first.dtype}; all examples of a split must "
                            f"agree in shape and dtype. Resize or convert them (e.g. data.image_size).")
        out[j] = xi
    return out


def materialize(x: torch.Tensor | ExampleSource) -> torch.Tensor:
    """The whole split as one (N, *shape) CPU tensor (a tensor is returned as it is): the device
    loader needs it, the stream loader decodes per batch instead."""
    return x if isinstance(x, torch.Tensor) else gather(x, range(len(x)))


class _Head:
    """The first n examples of a source (data.train_subset on a lazily decoded split)."""

    def __init__(self, source: ExampleSource, n: int):
        self.source, self.n = source, min(n, len(source))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.n:
            raise IndexError(f"example {i} is outside the first {self.n}")
        return self.source[i]


def head(x: torch.Tensor | ExampleSource, n: int) -> torch.Tensor | ExampleSource:
    """The first ``n`` examples of a tensor (a view) or of a source (decoded lazily)."""
    return x[:n] if isinstance(x, torch.Tensor) else _Head(x, n)


class _Take:
    """Examples ``idx`` of a source, in that order (data.classes, data.labels_per_class on a lazily
    decoded split). Picklable when the source is."""

    def __init__(self, source: ExampleSource, idx: torch.Tensor):
        self.source, self.idx = source, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.source[int(self.idx[i])]


def take(x: Any, idx: torch.Tensor) -> Any:
    """Examples ``idx`` ((K,) int64 positions) of a split: a tensor's rows (a copy), a sequence or
    graph set's ``subset``, or a source's examples decoded lazily."""
    if isinstance(x, torch.Tensor):
        return x[idx]
    if hasattr(x, "subset"):  # SequenceSet, GraphSet
        return x.subset(idx.tolist())
    return _Take(x, idx)


# ---------------------------------------------------------------------------------------- order
class EpochOrder:
    """The seeded, sharded order of each epoch and the loader's resumable place in it.

    Epoch e's order is ``randperm(N)`` from a generator seeded by (seed, e) (``arange(N)`` without
    shuffle). With ``world_size`` W > 1 it is split across ranks the way torch's
    DistributedSampler does: padded to ceil(N/W)*W by wrapping around to its start, then rank r
    takes positions r, r+W, r+2W, ... So every example is seen once per epoch across the ranks
    (the first ceil(N/W)*W - N of the order twice) and every rank has the same number of batches.
    ``position`` counts the batches already yielded in the current epoch.
    """

    def __init__(self, x: torch.Tensor | ExampleSource, y: torch.Tensor, batch_size: int,
                 transform: BatchTransform, *, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, augment: bool = False):
        if len(x) != len(y) or len(y) == 0:
            raise ValueError(f"a loader needs as many inputs as labels, and some: got {len(x)} and {len(y)}")
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size; got batch_size={batch_size}, "
                             f"rank={rank}, world_size={world_size}")
        self.x, self.y = x, y
        self.batch_size, self.transform = batch_size, transform
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size, self.augment = rank, world_size, augment
        self.epoch, self.position = 0, 0
        self._flip_bits: torch.Tensor | None = None  # data.flip_mode=alternate, made on first use

    @property
    def num_examples(self) -> int:
        """Examples in the split (all ranks together)."""
        return len(self.y)

    @property
    def examples_per_rank(self) -> int:
        """Examples this rank sees per epoch (padding included, before drop_last)."""
        return -(-self.num_examples // self.world_size)

    def __len__(self) -> int:
        n = self.examples_per_rank
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    @property
    def normalize(self) -> Normalize:
        """Raw values -> model inputs, without augmentation (e.g. to run a model over ``loader.x``)."""
        return self.transform.normalize

    def rank_order(self) -> torch.Tensor:
        """This rank's example indices for the current epoch, (examples_per_rank,) int64 on the CPU."""
        n, w = self.num_examples, self.world_size
        order = torch.randperm(n, generator=_gen(self.seed, self.epoch)) if self.shuffle else torch.arange(n)
        if w == 1:
            return order
        total = self.examples_per_rank * w
        order = order.repeat(-(-total // n))[:total]  # wrap around to the start, as DistributedSampler
        return order[self.rank::w]

    def batch_slice(self, i: int) -> slice:
        """Batch i's positions in :meth:`rank_order` (the last one may be short)."""
        return slice(i * self.batch_size, (i + 1) * self.batch_size)

    def augment_generator(self, i: int) -> torch.Generator | None:
        """Batch i's augmentation generator, seeded by (seed, epoch, i, rank); None when the loader
        does not augment (evaluation) or the transform has nothing to draw."""
        if not (self.augment and self.transform.augments):
            return None
        return _gen(self.seed, self.epoch, i, _AUG_KEY + self.rank)

    def flips(self, idx: torch.Tensor) -> torch.Tensor | None:
        """(B,) bool on the CPU: which of examples ``idx`` (CPU indices) to mirror this epoch under data.flip_mode=alternate
        (airbench's derandomized flip): a fixed random half of the training set (one bit per
        example, seeded by the run's seed) in even epochs, the other half in odd ones, so every
        image is seen both ways in any two consecutive epochs. None when the transform flips at
        random or not at all. A function of (seed, epoch, example): resume and ranks agree."""
        if not (self.augment and self.transform.alternates_flips):
            return None
        if self._flip_bits is None:
            self._flip_bits = torch.rand(self.num_examples, generator=_gen(self.seed, _FLIP_KEY)) < 0.5
        return self._flip_bits[idx] ^ bool(self.epoch % 2)

    def next_epoch(self) -> None:
        self.epoch, self.position = self.epoch + 1, 0

    def evaluation_view(self, batch_size: int):
        """A loader of the same kind over the same examples, for evaluation: in a fixed order, on
        every rank whole (padding would count examples twice), not augmented, at epoch 0."""
        view = copy.copy(self)
        view.batch_size, view.shuffle, view.drop_last, view.augment = batch_size, False, False, False
        view.rank, view.world_size, view.epoch, view.position = 0, 1, 0, 0
        return view


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` (rows ``idx`` of ``x``, (B, *x.shape[1:])) through index_select, which copies whole
    rows: ~15x faster on a CPU than advanced indexing for a batch of MNIST images. The batch gets
    the strides advanced indexing gives it (the source's, for a dense source with rows outermost)."""
    if x.shape[0] and x.is_contiguous():  # dense, rows outermost (size-1 dims may carry any stride)
        out = torch.empty_strided((len(idx), *x.shape[1:]), x.stride(), dtype=x.dtype, device=x.device)
        return torch.index_select(x, 0, idx, out=out)
    return x[idx]


class BatchLoader(EpochOrder):
    """Yields (x, y) batches of normalized, optionally augmented examples from on-device tensors.

    x: (N, *in_shape) raw values and y: (N,) int64 labels, both on the training device. Each batch
    is one index into them, then ``transform(x, y, gen)``; ``gen`` is the batch's generator when
    ``augment`` is on (the training loader), else None. shuffle=False gives the fixed order used for
    evaluation. After the last batch of an epoch the loader moves to the next epoch.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, transform: BatchTransform, *,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False, rank: int = 0,
                 world_size: int = 1, augment: bool = False):
        if not isinstance(x, torch.Tensor):
            raise TypeError("BatchLoader indexes a tensor on the device; decode a data source with "
                            "materialize(source) first, or stream it with StreamLoader (data.loader=stream)")
        super().__init__(x, y, batch_size, transform, shuffle=shuffle, seed=seed, drop_last=drop_last,
                         rank=rank, world_size=world_size, augment=augment)
        self._x_normalized: torch.Tensor | None = None  # the split normalized once (_inputs)
        self._inputs()  # at set-up, not inside the first epoch's timing

    def _inputs(self) -> tuple[torch.Tensor, bool]:
        """(the tensor batches are gathered from, whether it is normalized already): the whole split
        normalized once, made when the loader is and shared with :meth:`evaluation_view`'s copies, when
        its float32 copy takes at most PRENORMALIZE_BYTES; else the raw values."""
        norm = self.transform.normalize
        if self._x_normalized is None and not norm.indices and self.x.numel() * 4 <= PRENORMALIZE_BYTES:
            # the source's strides (a size-1 channel's stride decides oneDNN's convolution path on a
            # CPU, so a batch keeps the layout it had: the same results, bit for bit)
            out = torch.empty_strided(self.x.shape, self.x.stride(), dtype=torch.float32, device=self.x.device)
            for start in range(0, len(self.x), _PRENORMALIZE_ROWS):
                out[start:start + _PRENORMALIZE_ROWS] = norm(self.x[start:start + _PRENORMALIZE_ROWS])
            self._x_normalized = out
        return (self.x, False) if self._x_normalized is None else (self._x_normalized, True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over the rest of the current epoch (all of it unless resumed mid-epoch)."""
        host_order = self.rank_order()  # flips are looked up on the host: no device sync per batch
        order = host_order.to(self.x.device)
        xs, normalized = self._inputs()
        alternate = self.augment and self.transform.alternates_flips
        while self.position < len(self):
            i = self.position
            idx = order[self.batch_slice(i)]  # (B,)
            flips = self.flips(host_order[self.batch_slice(i)]) if alternate else None
            x, y = self.transform(_take(xs, idx), self.y.index_select(0, idx), self.augment_generator(i),
                                  flips, normalized=normalized)
            self.position += 1
            yield x, y
        self.next_epoch()
