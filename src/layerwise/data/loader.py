"""A resumable batch loader over tensors that already live on the training device.

It is a plain iterable with ``__len__`` and ``state_dict()`` / ``load_state_dict()`` (STYLE habit
5): the epoch's order is a permutation drawn from a generator seeded by (seed, epoch), so the
state is just two integers and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from typing import Iterator

import torch

from layerwise.data.augment import random_flip, random_translate
from layerwise.data.datasets import DatasetInfo


def _gen(*keys: int) -> torch.Generator:
    g = torch.Generator()
    seed = 0
    for k in keys:  # simple mixing; different (seed, epoch, batch) give unrelated streams
        seed = (seed * 1_000_003 + int(k) + 1) % (2**63 - 1)
    g.manual_seed(seed)
    return g


class Normalize:
    """Raw values (uint8 or float) -> float32, scaled and standardized per channel, on the device."""

    def __init__(self, info: DatasetInfo, device: torch.device):
        C = info.in_shape[0]
        self.scale = info.scale
        self.mean = torch.tensor(info.mean, device=device).view(1, C, 1, 1)
        self.std = torch.tensor(info.std, device=device).view(1, C, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / self.scale - self.mean) / self.std


class BatchLoader:
    """Yields (x, y) batches of normalized, optionally augmented examples.

    shuffle=False gives the fixed order used for evaluation. ``position`` counts batches already
    yielded in the current epoch; after the last batch the loader moves to the next epoch.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, normalize: Normalize, *,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                 translate: int = 0, flip: bool = False):
        self.x, self.y = x, y
        self.batch_size, self.normalize = batch_size, normalize
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.translate, self.flip = translate, flip
        self.epoch, self.position = 0, 0

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.x)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.x), device=self.x.device)
        return torch.randperm(len(self.x), generator=_gen(self.seed, self.epoch)).to(self.x.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over the rest of the current epoch (all of it unless resumed mid-epoch)."""
        order = self._order()
        while self.position < len(self):
            i = self.position
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.normalize(self.x[idx])
            if self.translate or self.flip:
                g = _gen(self.seed, self.epoch, i, 7)
                x = random_translate(x, self.translate, g)
                if self.flip:
                    x = random_flip(x, g)
            self.position += 1
            yield x, self.y[idx]
        self.epoch, self.position = self.epoch + 1, 0
