"""One image file, read the same way for training (``image-folder``) and for `layerwise predict`.

The policy, so that no decoder changes the data silently:

- **Orientation.** A JPEG (or PNG, WebP) whose EXIF Orientation tag says the camera was turned is
  turned upright first (``PIL.ImageOps.exif_transpose``), as every viewer shows it; sizes are
  the upright ones (a 40x20 file with Orientation 6 is a 20x40 image).
- **Bit depth.** A 16-bit greyscale PNG (Pillow mode ``I;16``, or ``I`` in older Pillow) is read at
  full depth and scaled by 1/65535, never clipped to 8 bits. Pillow reads 16-bit colour PNGs and
  16-bit greyscale-with-alpha PNGs as 8 bits per channel, keeping the top byte (scaled, not
  clipped: 65535 -> 255); a dataset holding such files says so in a warning. A dataset with any
  16-bit greyscale image is stored as float32 in [0, 1] (``DatasetInfo.scale`` 1.0); an 8-bit one
  as uint8 (scale 255).
- **Channels.** Greyscale stays one channel when every image of a dataset is greyscale (greyscale
  PNGs with alpha, and palette images whose colours are all greys, count as greyscale);
  otherwise every image becomes RGB (a greyscale one is repeated over the three channels, alpha
  dropped, palettes expanded, CMYK converted by Pillow).
- **Size limit.** An image whose header promises more than ``max_pixels`` pixels (default
  Pillow's own limit, 89,478,485: about 9459 x 9459) is refused before it is decoded, naming the
  file, its size and the setting (``data.max_image_pixels``, ``predict --max-image-pixels``; 0
  lifts the limit). A header can claim any size: the limit protects memory from a hostile or
  broken file ("decompression bomb").
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from layerwise.data.datasets import DataError

DEFAULT_MAX_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS's default (0.25 GiB of 24-bit RGB)
DEEP_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})  # 16-bit greyscale, as Pillow opens it
GRAY_MODES = frozenset({"1", "L", "LA", "P;L"}) | DEEP_MODES
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_ORIENTATION = 0x0112


@contextlib.contextmanager
def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator:
    """A Pillow image of ``path`` with only its header read, after the pixel limit was checked.

    Pillow's own limit (a warning, then DecompressionBombError at twice its MAX_IMAGE_PIXELS) is
    replaced by ``max_pixels`` (0 = none), refused as a DataError that names the file. Other
    failures propagate as Pillow raises them (callers turn them into their own messages)."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our limit replaces Pillow's; restored as soon as the header is read
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = old
    with im:
        w, h = im.size
        if max_pixels and w * h > max_pixels:
            raise DataError(
                f"image '{path}' is {w}x{h} = {w * h:,} pixels by its header, more than the limit of "
                f"{max_pixels:,} (data.max_image_pixels; `predict --max-image-pixels`). Such a file can "
                f"exhaust memory when decoded (a 'decompression bomb'). If the image is genuine, raise the "
                f"limit (0 = no limit); else delete the file.")
        yield im


def orientation(im) -> int:
    """The EXIF Orientation tag (1..8; 1 when absent or unreadable)."""
    try:
        value = im.getexif().get(_ORIENTATION, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a damaged EXIF block: treat the image as upright, as viewers do
        return 1


class Header(NamedTuple):
    """What an image's header says: Pillow's mode, the size as shown upright, whether it is
    greyscale, whether it is 16-bit greyscale (read at full depth), and whether Pillow reads it
    at fewer bits than it holds (16-bit colour or greyscale with alpha: 8 bits per channel)."""

    mode: str
    size: tuple[int, int]
    gray: bool
    deep: bool
    reduced: bool


def _png_ihdr(path: str | Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file's IHDR chunk, or None for another format."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _gray_palette(im) -> bool:
    """A palette image whose colours are all greys (r = g = b)."""
    try:
        pal = im.getpalette() or []
    except Exception:  # a damaged palette: not known to be grey
        return False
    return bool(pal) and all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def header(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, check: bool = False) -> Header:
    """The image's :class:`Header`. ``check`` also verifies a PNG's chunks (CRCs) and fully decodes a
    JPEG that lacks its end-of-image marker (truncated)."""
    import io

    ihdr = _png_ihdr(path)
    with open_image(path, max_pixels) as im:
        mode, (w, h), fmt = im.mode, im.size, im.format
        if orientation(im) in _ROTATED:
            w, h = h, w
        gray = mode in GRAY_MODES or (mode in ("P", "PA") and _gray_palette(im))
    png_gray = ihdr is not None and ihdr[1] in (0, 4)  # greyscale, greyscale + alpha
    gray = gray or png_gray
    reduced = ihdr is not None and ihdr[0] == 16 and mode not in DEEP_MODES
    if check:
        with open_image(path, max_pixels) as im:
            im.verify()  # Pillow wants it right after open
    if check and fmt == "JPEG":
        with open(path, "rb") as f:
            f.seek(-2, io.SEEK_END)
            if f.read(2) != b"\xff\xd9":
                with open_image(path, max_pixels) as im:
                    im.load()
    return Header(mode, (w, h), gray, mode in DEEP_MODES, reduced)


def is_deep(mode: str) -> bool:
    """Whether Pillow's ``mode`` holds more than 8 bits per pixel (16-bit greyscale)."""
    return mode in DEEP_MODES


def decode(path: str | Path, gray: bool, size: tuple[int, int] | None = None, *, resample: str = "bilinear",
           max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """One image -> (C, H, W): uint8 for an 8-bit file, float32 in [0, 1] for a 16-bit one.

    Upright (EXIF), at full depth, one channel when ``gray`` else three. ``size`` (width, height)
    resizes with Pillow's ``resample`` filter ("bilinear": antialiased when shrinking, as Pillow's
    resize widens its support; "box": the mean of each source box). Pillow errors (a truncated
    or unreadable file) propagate; the limit is a DataError (see :func:`open_image`)."""
    from PIL import Image, ImageOps

    filters = {"bilinear": Image.BILINEAR, "box": Image.BOX, "nearest": Image.NEAREST}
    with open_image(path, max_pixels) as im:
        im = ImageOps.exif_transpose(im)  # also forces the full decode: truncation raises here
        deep = is_deep(im.mode)
        if deep:
            im = im.convert("F")  # 32-bit float, values 0..65535 kept exactly
        else:
            im = im.convert("L" if gray else "RGB")
    if size is not None and im.size != tuple(size):
        im = im.resize(tuple(size), filters[resample])
    a = np.asarray(im)  # read-only view of the image's buffer: copies below (torch wants writable)
    if deep:
        a = np.clip(a / 65535.0, 0.0, 1.0).astype(np.float32)  # mode "I" may hold values outside 16 bits
        return a[None].copy() if gray else np.repeat(a[None], 3, axis=0)
    return a[None].copy() if gray else np.ascontiguousarray(a.transpose(2, 0, 1))


def unit_range(a: np.ndarray) -> np.ndarray:
    """A decoded image in [0, 1] float32, whatever its depth (uint8 / 255, float as it is)."""
    return a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32, copy=False)
