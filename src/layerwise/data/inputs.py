"""Turn files a user hands to `layerwise predict` into raw-valued tensors shaped like the dataset's.

A speech model's inputs are .wav recordings, turned into log-mel features exactly as in training.
Images (PNG, JPEG, ...) are read as training reads them (:mod:`layerwise.data.imagefile`: upright
by EXIF, 16-bit at full depth, the pixel limit), converted to the dataset's channel count and
size and mapped from [0, 1] to the dataset's raw range (e.g. 0..16 for digits). An image-folder
model resizes with its training filter (bilinear); digits, MNIST and CIFAR-10 models, trained
on fixed-size arrays, shrink with a box filter (how the 8x8 digits were made from 32x32
bitmaps) and enlarge bilinearly. ``.npy`` arrays are taken as already in the raw range: one
example (C,H,W) or (H,W) for one channel, or a batch (N,C,H,W) / (N,H,W).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from layerwise.data import imagefile
from layerwise.data.datasets import DataError, DatasetInfo


LIGHT_ON_DARK = ("digits", "mnist")  # datasets of light strokes on a dark ground


def load_inputs(path: str | Path, info: DatasetInfo, invert: str = "auto",
                max_pixels: int = imagefile.DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """One file -> raw tensor (N, C, H, W). ``invert`` (auto|yes|no) flips dark-on-light images to
    the light-on-dark convention of digits/MNIST; auto does so only for a digits or MNIST model
    and a single-channel image whose mean brightness is above one half (paper-like backgrounds),
    never for other datasets. ``max_pixels`` refuses larger images (0 = no limit). Raises
    DataError naming the file for a missing, unreadable or oversized file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input '{path}' does not exist. Give the path of an input file: an image or a .npy "
                        f"array, a .wav recording, a CSV of rows for a table model, or a text file of one example "
                        f"per line for a text classifier.")
    if "audio" in info.extra:  # a speech model: a .wav recording -> the training log-mel features
        if path.suffix.lower() != ".wav":
            raise DataError(f"'{path}' is not a .wav file; this model classifies recordings. Give a "
                            f"PCM .wav file (any sample rate; it is resampled as in training).")
        from layerwise.data.audio import features_from_wav
        return features_from_wav(path, info.extra["audio"])[None]  # (1, 1, n_mels, frames)
    if "text" in info.extra:  # a text classifier: one example per line of a text file
        from layerwise.data.textclass import encode_texts

        lines = text_lines(path)
        x = encode_texts([t for _, t in lines], info)  # (N, T) token ids
        T = info.extra["text"]["max_length"]
        long = [n for (n, t), row in zip(lines, encode_texts([t for _, t in lines], info, cut=False), strict=True)
                if int((row != 0).sum()) > T]
        if long:
            import warnings
            warnings.warn(f"'{path}': {len(long)} line(s) (first: line {long[0]}) are longer than the {T} tokens the "
                          f"model was trained on; they keep their first {T}", stacklevel=2)
        return x
    if "table" in info.extra:  # a table model: the rows of a CSV file with the training columns
        if path.suffix.lower() not in (".csv", ".tsv", ".txt"):
            raise DataError(f"'{path}' is not a CSV file; this model reads table rows. Give a CSV with the "
                            f"columns {', '.join(info.extra['table']['columns'])}.")
        from layerwise.data.tabular import read_rows
        return torch.from_numpy(read_rows(path, info))  # (N, F)
    if info.extra.get("inputs") == "indices":  # a ratings model recommends for a user, not for a file
        raise DataError(f"this model was trained on the ratings of '{info.name}': it recommends items for a user. "
                        f"Use `layerwise predict RUN_DIR --user ID [--top-k K]` instead of input files.")
    if info.task == "lm" or len(info.in_shape) != 3:
        raise DataError(f"`predict` reads images, .npy arrays, .wav recordings, CSV rows and lines of text; this "
                        f"model was trained on '{info.name}' ({info.task}, inputs {tuple(info.in_shape)}). "
                        f"For a language model use `layerwise generate`.")
    C, H, W = info.in_shape
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"'{path}' is not a readable .npy array ({e}). Save it with numpy.save.") from None
        return array_examples(arr, info, f"'{path}'")
    from PIL import UnidentifiedImageError

    folder_model = info.name == "image-folder"
    try:
        with imagefile.open_image(path, max_pixels) as im:
            w, h = im.size
            if imagefile.orientation(im) in (5, 6, 7, 8):
                w, h = h, w
        shrink = w >= W and h >= H
        # image-folder: the training filter; fixed-size datasets: box when shrinking, bilinear when enlarging
        a = imagefile.decode(path, gray=C == 1, size=(W, H), max_pixels=max_pixels,
                             resample="bilinear" if folder_model or not shrink else "box")
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:  # Pillow's kinds of broken file
        raise DataError(f"'{path}' is not a readable image ({e}). Give a PNG/JPEG file or a .npy array.") from None
    x = imagefile.unit_range(a)  # (C, H, W) in [0, 1]
    if C == 1 and (invert == "yes" or (invert == "auto" and info.name in LIGHT_ON_DARK and x.mean() > 0.5)):
        x = 1.0 - x
    return torch.from_numpy(x * info.scale)[None]


def array_examples(arr: np.ndarray, info: DatasetInfo, where: str) -> torch.Tensor:
    """A numeric array in the dataset's raw range -> float32 tensor (N, C, H, W): one example
    (C, H, W) or (H, W) for one channel, or a batch (N, C, H, W) / (N, H, W), as a ``.npy`` input
    is read (and the prediction server's JSON arrays). ``where`` names the array in messages.
    Raises DataError for a non-numeric dtype, a shape that does not fit ``info.in_shape``, or NaN/Inf."""
    C, H, W = info.in_shape
    if arr.dtype.kind not in "uif":
        raise DataError(f"{where} holds {arr.dtype} values; a numeric array is needed.")
    x = arr.astype(np.float32)
    if x.ndim == 2 and C == 1:
        x = x[None, None]
    elif x.ndim == 3 and x.shape == (C, H, W):
        x = x[None]
    elif x.ndim == 3 and C == 1:
        x = x[:, None]
    if x.ndim != 4 or tuple(x.shape[1:]) != (C, H, W):
        if C > 1 and arr.ndim in (3, 4) and tuple(arr.shape[-3:]) == (H, W, C):  # an image as PIL/numpy hold it
            order = "(2, 0, 1)" if arr.ndim == 3 else "(0, 3, 1, 2)"
            raise DataError(f"{where} has shape {arr.shape}, channels last (height, width, channels); the model "
                            f"takes channels first, ({C}, {H}, {W}) examples (or a batch (N, {C}, {H}, {W})). "
                            f"Transpose the array (numpy: a.transpose{order}); reshaping it would scramble the "
                            f"pixels.")
        raise DataError(f"{where} has shape {arr.shape}; the model takes ({C}, {H}, {W}) examples "
                        f"(or a batch (N, {C}, {H}, {W})). Reshape the array to match.")
    if not np.isfinite(x).all():
        raise DataError(f"{where} holds NaN or Inf values; clean the array first.")
    return torch.from_numpy(x)


def text_lines(path: str | Path) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines of a UTF-8 text file (CR LF and CR made line
    ends; a BOM dropped): the examples `predict` reads for a text classifier."""
    from layerwise.data.text import normalize_newlines

    path = Path(path)
    try:
        text = normalize_newlines(path.read_bytes().decode("utf-8-sig"))[0]
    except UnicodeDecodeError as e:
        raise DataError(f"'{path}' is not UTF-8 text ({e}); save it as UTF-8.") from None
    lines = [(i, ln.strip()) for i, ln in enumerate(text.split("\n"), 1) if ln.strip()]
    if not lines:
        raise DataError(f"'{path}' holds no text; give one example per line.")
    return lines


def prepare_inputs(x: torch.Tensor, info: DatasetInfo, device: torch.device | str = "cpu") -> torch.Tensor:
    """Raw inputs from :func:`load_inputs` -> what the model takes: normalized as the training
    loader normalized them (images, audio features, tables); token ids and molecular graphs
    (a GraphBatch, already featurized as training did) as they are."""
    if not isinstance(x, torch.Tensor):  # a molecular graph batch
        return x.to(device)
    if x.dtype == torch.int64:  # token ids (text classes): no normalization
        return x.to(device)
    from layerwise.data.augment import Normalize

    return Normalize(info, device)(x.to(device))
