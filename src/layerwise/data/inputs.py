"""Turn files a user hands to `layerwise predict` into raw-valued tensors shaped like the dataset's.

A speech model's inputs are .wav recordings, turned into log-mel features exactly as in training.
Images (PNG, JPEG, ...) are converted to the dataset's channel count and size and mapped from
0..255 to the dataset's raw range (e.g. 0..16 for digits). ``.npy`` arrays are taken as already
in the raw range: one example (C,H,W) or (H,W) for one channel, or a batch (N,C,H,W) / (N,H,W).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from layerwise.data.datasets import DataError, DatasetInfo


def load_inputs(path: str | Path, info: DatasetInfo, invert: str = "auto") -> torch.Tensor:
    """One file -> raw tensor (N, C, H, W). ``invert`` (auto|yes|no) flips dark-on-light images to
    the light-on-dark convention of digits/MNIST; auto inverts single-channel images whose mean
    brightness is above one half (paper-like backgrounds)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input '{path}' does not exist. Give the path of an image file or a .npy array.")
    if "audio" in info.extra:  # a speech model: a .wav recording -> the training log-mel features
        if path.suffix.lower() != ".wav":
            raise DataError(f"'{path}' is not a .wav file; this model classifies recordings. Give a "
                            f"PCM .wav file (any sample rate; it is resampled as in training).")
        from layerwise.data.audio import features_from_wav
        return features_from_wav(path, info.extra["audio"])[None]  # (1, 1, n_mels, frames)
    if info.task != "classify" or len(info.in_shape) != 3:
        raise DataError(f"`predict` reads images, .npy arrays and .wav recordings; this model was trained "
                        f"on '{info.name}' ({info.task}, inputs {tuple(info.in_shape)}). "
                        f"For a language model use `layerwise generate`.")
    C, H, W = info.in_shape
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"'{path}' is not a readable .npy array ({e}). Save it with numpy.save.") from None
        if arr.dtype.kind not in "uif":
            raise DataError(f"'{path}' holds {arr.dtype} values; a numeric array is needed.")
        x = arr.astype(np.float32)
        if x.ndim == 2 and C == 1:
            x = x[None, None]
        elif x.ndim == 3 and x.shape == (C, H, W):
            x = x[None]
        elif x.ndim == 3 and C == 1:
            x = x[:, None]
        if x.ndim != 4 or tuple(x.shape[1:]) != (C, H, W):
            raise DataError(f"'{path}' has shape {arr.shape}; the model takes ({C}, {H}, {W}) examples "
                            f"(or a batch (N, {C}, {H}, {W})). Reshape the array to match.")
        if not np.isfinite(x).all():
            raise DataError(f"'{path}' holds NaN or Inf values; clean the array first.")
        return torch.from_numpy(x)
    from PIL import Image, UnidentifiedImageError
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"'{path}' is not a readable image ({e}). Give a PNG/JPEG file or a .npy array.") from None
    img = img.convert("L" if C == 1 else "RGB")
    # Downscaling averages over boxes, which is how the 8x8 digits were made from 32x32 bitmaps
    # (counts of ink pixels in 4x4 blocks); upscaling interpolates.
    shrink = img.width >= W and img.height >= H
    img = img.resize((W, H), Image.BOX if shrink else Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3) in [0, 1]
    x = x[None] if C == 1 else x.transpose(2, 0, 1)
    if C == 1 and (invert == "yes" or (invert == "auto" and x.mean() > 0.5)):
        x = 1.0 - x
    return torch.from_numpy(x * info.scale)[None]
