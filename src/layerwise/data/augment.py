"""What happens to a batch on the device: normalization and batched augmentation.

Every op works on the whole batch at once (no per-image Python loop). Random numbers come from a
CPU ``torch.Generator`` that the loader seeds by (seed, epoch, batch index, rank), so a resumed run
draws exactly the augmentation it would have drawn (no RNG state to save), and the result does not
depend on the device. :class:`BatchTransform` composes the pieces; both loaders (``BatchLoader``
and ``StreamLoader``) call the same one, which is what makes their batches identical.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from layerwise.data.datasets import DatasetInfo


class Normalize:
    """Raw values (uint8 or float) -> float32, scaled and standardized, on the device.

    ``info.mean`` / ``info.std`` hold one value per entry of the first input dimension:
    per channel for x (N, C, ...) (images (N, C, H, W), audio (N, 1, F, T)), broadcast over the
    trailing dimensions; per feature for tabular x (N, F).

    Integer index inputs (``info.extra["inputs"] == "indices"``: a ratings source's (user, item,
    ...) columns) pass through unchanged as int64: an index is a name, not a quantity, and
    normalizing it would scramble it.
    """

    def __init__(self, info: DatasetInfo, device: torch.device | str = "cpu"):
        K = info.in_shape[0] if info.in_shape else 0
        self.indices = info.extra.get("inputs") == "indices"
        if self.indices:
            return
        if not info.mean or not info.std:
            raise ValueError(f"dataset '{info.name}' (task {info.task}) has no mean/std to normalize with; "
                             f"token ids are not normalized and do not go through this loader.")
        if len(info.mean) != K or len(info.std) != K:
            raise ValueError(f"dataset '{info.name}': mean and std need one value per channel (or feature) "
                             f"of in_shape {tuple(info.in_shape)}, i.e. {K}; got {len(info.mean)} and "
                             f"{len(info.std)}.")
        shape = (1, K) + (1,) * (len(info.in_shape) - 1)  # (1, C, 1, 1) images, (1, F) tabular
        self.scale = info.scale
        self.mean = torch.tensor(info.mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.tensor(info.std, dtype=torch.float32, device=device).view(shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.indices:
            if x.is_floating_point():
                raise TypeError(f"integer index inputs were expected, got {x.dtype}")
            return x.long()
        return (x.float() / self.scale - self.mean) / self.std


# ---------------------------------------------------------------------------------------- images
def random_translate(x: torch.Tensor, max_shift: int, gen: torch.Generator, pad: str = "zero") -> torch.Tensor:
    """Shift each image by an independent (dy, dx) in [-max_shift, max_shift].

    x: (B, C, H, W). One gather over a padded copy: out[b, c, i, j] = padded[b, c, i+s+dy_b, j+s+dx_b].
    ``pad``: what comes in at the border, ``zero`` (the mean of normalized data) or ``reflect``
    (the mirrored image, airbench's choice for natural images; needs max_shift < H, W).
    """
    if max_shift <= 0:
        return x
    B, C, H, W = x.shape
    s = max_shift
    d = torch.randint(-s, s + 1, (B, 2), generator=gen).to(x.device, non_blocking=True)  # (B, 2)
    padded = F.pad(x, (s, s, s, s), mode="reflect" if pad == "reflect" else "constant")  # (B, C, H+2s, W+2s)
    iy = torch.arange(H, device=x.device)[None, :] + s + d[:, :1]  # (B, H)
    ix = torch.arange(W, device=x.device)[None, :] + s + d[:, 1:]  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None, None]
    c = torch.arange(C, device=x.device)[None, :, None, None]
    return padded[b, c, iy[:, None, :, None], ix[:, None, None, :]]


def random_crop(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """One size x size window of the whole batch at a place drawn from ``gen`` (a view).
    x: (B, C, H, W) -> (B, C, size, size); objects keep their scale."""
    H, W = x.shape[-2:]
    oy, ox = (int(torch.randint(0, n - size + 1, (1,), generator=gen)) for n in (H, W))
    return x[..., oy:oy + size, ox:ox + size]


def random_flip(x: torch.Tensor, gen: torch.Generator | None, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2, or where ``flip`` (B,) bool is true
    (the loader's alternating flips). x: (B, C, H, W)."""
    if flip is None:
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
    flip = flip.to(x.device, non_blocking=True)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _box_mask(H: int, W: int, y0: torch.Tensor, x0: torch.Tensor, h: int, w: int,
              device: torch.device) -> torch.Tensor:
    """(B, H, W) bool: rows [y0, y0+h) and columns [x0, x0+w) of each image, clipped at the borders."""
    rows = torch.arange(H, device=device)[None, :]  # (1, H)
    cols = torch.arange(W, device=device)[None, :]  # (1, W)
    in_y = (rows >= y0[:, None]) & (rows < y0[:, None] + h)  # (B, H)
    in_x = (cols >= x0[:, None]) & (cols < x0[:, None] + w)  # (B, W)
    return in_y[:, :, None] & in_x[:, None, :]


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero one size x size square per image (DeVries & Taylor 2017, arXiv:1708.04552).

    x: (B, C, H, W), normalized, so zero is the mean. Each square's centre is uniform over the
    image and the square is clipped at the borders (the paper's choice: a centre near the edge
    removes less, which keeps some examples almost whole). Rows [cy - size//2, cy - size//2 + size).
    """
    if size <= 0:
        return x
    B, _, H, W = x.shape
    cy = torch.randint(0, H, (B,), generator=gen).to(x.device, non_blocking=True)  # (B,)
    cx = torch.randint(0, W, (B,), generator=gen).to(x.device, non_blocking=True)  # (B,)
    mask = _box_mask(H, W, cy - size // 2, cx - size // 2, size, size, x.device)  # (B, H, W)
    return x.masked_fill(mask[:, None], 0)


# ---------------------------------------------------------------------------------------- targets
def one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids (B,) int64 -> (B, num_classes) float32 probability targets."""
    return F.one_hot(y, num_classes).float()


def _beta(alpha: float, gen: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw, determined by ``gen``: torch has no generator-driven Beta
    sampler, so one 63-bit integer from ``gen`` seeds numpy's Generator, which draws it."""
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=gen))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(x: torch.Tensor, y_soft: torch.Tensor, alpha: float, gen: torch.Generator
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018, arXiv:1710.09412): x*lam + partner*(1-lam), the same for targets.

    x: (B, ...) float; y_soft: (B, K) probabilities. The partner of example b is example perm[b] of
    the same batch (perm a random permutation); lam ~ Beta(alpha, alpha), one per batch. Draws:
    lam, then perm.
    """
    lam = _beta(alpha, gen)
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device, non_blocking=True)  # (B,)
    return x * lam + x[perm] * (1 - lam), y_soft * lam + y_soft[perm] * (1 - lam)


def cutmix(x: torch.Tensor, y_soft: torch.Tensor, alpha: float, gen: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix (Yun et al. 2019, arXiv:1905.04899): paste a box of the partner image into each image.

    x: (B, C, H, W); y_soft: (B, K). lam ~ Beta(alpha, alpha) per batch; one box per batch of
    int(H*sqrt(1-lam)) x int(W*sqrt(1-lam)) at a uniform centre, clipped at the borders, so its
    area is about (1 - lam) of the image; lam is then set to the exact share of pixels kept, as in
    the paper's code. Partners as in :func:`mixup`. Draws: lam, perm, centre row, centre column.
    """
    B, _, H, W = x.shape
    lam = _beta(alpha, gen)
    perm = torch.randperm(B, generator=gen).to(x.device, non_blocking=True)  # (B,)
    cut = (1.0 - lam) ** 0.5
    h, w = int(H * cut), int(W * cut)
    cy, cx = (int(torch.randint(0, n, (1,), generator=gen)) for n in (H, W))
    y0, y1 = max(cy - h // 2, 0), min(cy - h // 2 + h, H)
    x0, x1 = max(cx - w // 2, 0), min(cx - w // 2 + w, W)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (H * W)  # the exact area after clipping
    return out, y_soft * lam + y_soft[perm] * (1 - lam)


# ---------------------------------------------------------------------------------------- all of it
_IMAGE_KEYS = ("augment_translate", "augment_flip", "augment_cutout", "mixup", "cutmix")
_AUDIO_KEYS = ("specaugment_time", "specaugment_freq")
_KIND_WORDS = {"image": "images", "audio": "audio spectrograms", "other": "inputs that are neither images nor audio"}


class BatchTransform:
    """Normalization plus every batched augmentation the data config asks for, on ``device``.

    ``transform(x_raw, y, gen) -> (x, y)``: x_raw (B, *in_shape) raw values on the device, y (B,)
    class ids. With ``gen`` None (evaluation) it only normalizes. With a generator it augments:
    images (B, C, H, W): translate, flip, cutout, then mixup or cutmix (one of the two with
    probability 1/2 when both are on, timm's habit), which turn y into (B, num_classes) float32
    probabilities (F.cross_entropy takes them, label smoothing included); audio (B, 1, F, T):
    SpecAugment masks. Options that do not fit the data's kind are refused, not ignored.
    """

    def __init__(self, info: DatasetInfo, device: torch.device | str = "cpu", *, translate: int = 0,
                 translate_pad: str = "zero", flip: bool = False, flip_mode: str = "random", cutout: int = 0,
                 mixup: float = 0.0, cutmix: float = 0.0, specaugment_time: int = 0,
                 specaugment_freq: int = 0, specaugment_masks: int = 2):
        self.info, self.device = info, torch.device(device)
        self.normalize = Normalize(info, self.device)
        self.translate, self.flip, self.cutout = int(translate), bool(flip), int(cutout)
        self.translate_pad, self.flip_mode = translate_pad, flip_mode
        self.mixup, self.cutmix = float(mixup), float(cutmix)
        self.spec_time, self.spec_freq = int(specaugment_time), int(specaugment_freq)
        self.spec_masks = int(specaugment_masks)
        self.kind = ("audio" if "audio" in info.extra else
                     "image" if len(info.in_shape) == 3 else "other")
        self._check({"augment_translate": self.translate, "augment_flip": self.flip,
                     "augment_cutout": self.cutout, "mixup": self.mixup, "cutmix": self.cutmix,
                     "specaugment_time": self.spec_time, "specaugment_freq": self.spec_freq,
                     "specaugment_masks": self.spec_masks})

    @classmethod
    def from_config(cls, opts: Any, info: DatasetInfo, device: torch.device | str) -> BatchTransform:
        """Built from the data config section (layerwise.config.DataConfig)."""
        return cls(info, device, translate=opts.augment_translate, translate_pad=opts.translate_pad,
                   flip=opts.augment_flip, flip_mode=opts.flip_mode, cutout=opts.augment_cutout, mixup=opts.mixup, cutmix=opts.cutmix,
                   specaugment_time=opts.specaugment_time, specaugment_freq=opts.specaugment_freq,
                   specaugment_masks=opts.specaugment_masks)

    def _check(self, asked: dict[str, Any]) -> None:
        """Refuse negative values and options that do not fit the data's kind (never ignore them)."""
        from layerwise.config import ConfigError  # config sits above data; import late

        for key, value in asked.items():
            if value < 0:
                raise ConfigError(f"data.{key} must be >= 0, got {value!r}.")
            needs = "image" if key in _IMAGE_KEYS else "audio" if key in _AUDIO_KEYS else None
            if needs and value and self.kind != needs:
                what = "images (N, C, H, W)" if needs == "image" else "audio spectrograms (N, 1, F, T)"
                raise ConfigError(
                    f"data.{key}={value!r} applies to {what}; dataset '{self.info.name}' holds "
                    f"{_KIND_WORDS[self.kind]} of shape (N, {', '.join(map(str, self.info.in_shape))}). "
                    f"Set data.{key} to 0 (false) for this dataset.")

    @property
    def augments(self) -> bool:
        """Whether a generator changes anything (loaders skip seeding one otherwise)."""
        image = self.translate or self.flip or self.cutout or self.mixup or self.cutmix
        audio = (self.spec_time or self.spec_freq) and self.spec_masks > 0
        return bool(image or audio)

    @property
    def alternates_flips(self) -> bool:
        """Whether the loader decides the flips (flip_mode=alternate) and passes them in."""
        return self.flip and self.flip_mode == "alternate" and self.kind == "image"

    def __call__(self, x_raw: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None,
                 flip: torch.Tensor | None = None, normalized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``flip``: (B,) bool, which images to mirror under flip_mode=alternate (from the loader,
        which knows each example's index and the epoch); random flips draw from ``gen``.
        ``normalized``: x_raw went through ``self.normalize`` already (a loader that normalized
        its whole split once)."""
        x = x_raw if normalized else self.normalize(x_raw)  # (B, *in_shape) float32
        if gen is None:
            return x, y
        if self.kind == "audio":
            return self._audio(x, gen), y
        if self.kind == "image":
            return self._image(x, y, gen, flip)
        return x, y

    def _image(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, flip: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        # draw order is fixed (translate, flip, cutout, mix): a run with only translate on draws
        # exactly what it drew before the later options existed
        x = random_translate(x, self.translate, gen, self.translate_pad)
        if self.flip:
            if self.alternates_flips and flip is None:
                raise ValueError("data.flip_mode=alternate: the loader must pass each image's flip")
            x = random_flip(x, gen, flip if self.alternates_flips else None)
        x = cutout(x, self.cutout, gen)
        if self.mixup or self.cutmix:
            use_cutmix = self.cutmix > 0
            if self.mixup and self.cutmix:
                use_cutmix = bool(torch.rand(1, generator=gen) < 0.5)
            y = one_hot(y, self.info.num_classes)  # (B, K)
            x, y = (cutmix(x, y, self.cutmix, gen) if use_cutmix else mixup(x, y, self.mixup, gen))
        return x, y

    def _audio(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if not (self.spec_time or self.spec_freq):
            return x
        # audio features pull in more; load them late
        from layerwise.data.audio import spec_augment

        return spec_augment(x, self.spec_time, self.spec_freq, self.spec_masks, gen)
