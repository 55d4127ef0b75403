"""Image datasets: a folder of class subfolders (``image-folder``), and MNIST / CIFAR-10 in the
repacked npz form or in the original files users download (idx, CIFAR-10 binary version).

``image-folder`` reads ``data.path`` (relative to ``data.root``, or absolute), laid out as either

    <path>/train/<class>/<image>  and  <path>/test/<class>/<image>   (val/ instead of test/ works;
                                                                      with both, val/ is used and
                                                                      test/ stays untouched)
    <path>/<class>/<image>        one pool: data.val_fraction of every class is held out, or
                                  fold data.fold of data.folds (datasets.holdout_split, seed
                                  SPLIT_SEED = 0, same every run)

Class names are the folder names, sorted. Images are files ending in .png .jpg .jpeg .bmp .gif
.webp (any case; hidden files and other suffixes are ignored; a GIF gives its first frame).
Each file is read by :mod:`layerwise.data.imagefile` (upright by its EXIF orientation, 16-bit
greyscale at full depth, a pixel limit), exactly as `layerwise predict` reads one. Every image
becomes RGB (alpha dropped; palette images count as colour) unless every image is grayscale, then
one channel. ``data.image_size`` > 0 resizes every image to that square with Pillow's bilinear
filter, which widens its support when shrinking, i.e. antialiases, unlike plain bilinear
sampling; the aspect ratio is not kept. 0 keeps the sizes, which must then agree. Pixels stay
uint8 (N, C, H, W), scale 255, or, when any image is 16-bit, float32 in [0, 1], scale 1; mean/std
per channel come from the train split.

Broken files: with ``data.loader=device`` every file is fully decoded up front, so a truncated
JPEG is found at load time; ``data.on_error=refuse`` stops with a DataError naming the file, ``skip``
drops it and names it in ``Dataset.warnings``. With ``data.loader=stream`` images are decoded per
item, so the up-front pass is a quick check of every file: the header is parsed, PNGs are
verified (chunk CRCs), and a JPEG that does not end with its end-of-image marker is fully
decoded. Damage that this check cannot see (rare: a corrupt block inside a complete-looking
file) raises a DataError naming the file when the item is read, whatever ``on_error`` says.
"""

from __future__ import annotations

import gzip
import io
import itertools
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerwise.data import imagefile
from layerwise.data.datasets import (DataError, Dataset, DatasetInfo, _npz, register_dataset,
                                     holdout_split, user_path)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
STATS_SAMPLE = 2000  # stream loader: images sampled (evenly spaced, so every class) for mean/std
_LAYOUT_HELP = ("Lay it out as <path>/<class>/<image> or <path>/train/<class>/<image> plus "
                "<path>/test/<class>/<image>.")


# ---------------------------------------------------------------------------------------- files


def _class_files(d: Path) -> dict[str, list[Path]]:
    """{class folder name: its image files, sorted} for the subfolders of ``d``."""
    out = {}
    for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.iterdir() if f.is_file() and not f.name.startswith(".")
                       and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class folder '{sub}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}). "
                            f"Put images in it or remove it.")
        out[sub.name] = files
    if not out:
        raise DataError(f"image folder '{d}' has no class subfolders. {_LAYOUT_HELP}")
    return out


def _find_splits(folder: Path, opts: Any) -> tuple[list[str], dict, str]:
    """(classes, {"train"|"test": (paths, labels)}, layout description)."""
    if not folder.is_dir():
        raise DataError(f"image-folder: data.path '{folder}' is a file; it must be a folder. {_LAYOUT_HELP}")
    held = next((folder / n for n in ("val", "test") if (folder / n).is_dir()), None)
    if (folder / "train").is_dir() and held is not None:
        tr, te = _class_files(folder / "train"), _class_files(held)
        extra = sorted(set(te) - set(tr))
        if extra:
            raise DataError(f"'{held}' has class folders that train/ lacks: {', '.join(extra)}. A class "
                            f"must have training images; add them to train/ or remove those folders.")
        classes = sorted(tr)
        splits = {s: ([f for c in classes for f in d.get(c, [])],
                      [i for i, c in enumerate(classes) for _ in d.get(c, [])])
                  for s, d in (("train", tr), ("test", te))}
        return classes, splits, f"train/ and {held.name}/ folders"
    pool = _class_files(folder)
    classes = sorted(pool)
    paths = [f for c in classes for f in pool[c]]
    y = np.array([i for i, c in enumerate(classes) for _ in pool[c]], np.int64)
    tr, va, how = holdout_split(y, opts)
    splits = {"train": ([paths[i] for i in tr], y[tr].tolist()),
              "test": ([paths[i] for i in va], y[va].tolist())}
    return classes, splits, f"class folders, {how}"


def _decode(path: str, gray: bool, size: int, deep: bool, max_pixels: int) -> np.ndarray:
    """One image of the dataset -> (C, H, W): uint8, or float32 in [0, 1] when the dataset is deep."""
    a = imagefile.decode(path, gray, (size, size) if size else None, max_pixels=max_pixels)
    return imagefile.unit_range(a) if deep else a


class ImageFiles:
    """Image files decoded on demand (the stream loader's :class:`ExampleSource`):
    ``source[i]`` is a (C, H, W) uint8 tensor (float32 in [0, 1] when ``deep``). Picklable for
    DataLoader workers."""

    def __init__(self, base: Path, paths: list[Path], gray: bool, size: int, deep: bool = False,
                 max_pixels: int = imagefile.DEFAULT_MAX_PIXELS):
        self.base, self.gray, self.size, self.deep, self.max_pixels = str(base), gray, size, deep, max_pixels
        # One bytes array, not a list of str: worker processes touching Python objects' refcounts
        # would copy the list's pages (pytorch/pytorch#13246).
        self.rel = np.array([str(p.relative_to(base)).encode() for p in paths], dtype=np.bytes_)

    def __len__(self) -> int:
        return len(self.rel)

    def path(self, i: int) -> str:
        return str(Path(self.base) / self.rel[i].decode())

    def __getitem__(self, i: int) -> torch.Tensor:
        path = self.path(i)
        try:
            return torch.from_numpy(_decode(path, self.gray, self.size, self.deep, self.max_pixels))
        except Exception as e:  # PIL raises several types for broken images
            raise DataError(f"image '{path}' cannot be decoded ({e}). It passed the quick check when the "
                            f"dataset was loaded, so it is damaged past its header. Replace or delete it; "
                            f"data.loader=device decodes every file up front (and data.on_error=skip then "
                            f"drops broken ones).") from None


def _channel_stats(batches, C: int, scale: float = 255.0) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of x / scale over (n, C, H, W) batches; std 0 becomes 1."""
    s, ss, n = torch.zeros(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64), 0
    for x in batches:
        x = x.double()
        s += x.sum((0, 2, 3))
        ss += (x * x).sum((0, 2, 3))
        n += x[:, 0].numel()
    if n == 0:  # no training images: reported by the caller
        return [0.0] * C, [1.0] * C
    mean = s / n / scale
    std = (ss / n / scale**2 - mean**2).clamp_min(0).sqrt()
    return [round(float(m), 6) for m in mean], [round(float(v), 6) if v > 0 else 1.0 for v in std]


@register_dataset("image-folder")
def _image_folder(root: Path, opts: Any) -> Dataset:
    """A folder of class subfolders of images; see the module docstring for layout and options."""
    folder = user_path(root, opts, "image-folder", "a folder of class subfolders of images")
    classes, splits, layout = _find_splits(folder, opts)
    stream, skip, size = opts.loader == "stream", opts.on_error == "skip", int(opts.image_size)
    limit = int(getattr(opts, "max_image_pixels", imagefile.DEFAULT_MAX_PIXELS))
    warnings: list[str] = []

    def broken(path: Path, e: Exception) -> None:
        if isinstance(e, DataError):  # over the pixel limit: the message names the file and the setting
            if not skip:
                raise DataError(f"{e} Or set data.on_error=skip to drop such images with a warning.") from None
            warnings.append(f"skipped {e}")
            return
        if not skip:
            raise DataError(f"image '{path}' cannot be read ({e}). Replace or delete it, or set "
                            f"data.on_error=skip to drop broken images with a warning.") from None
        warnings.append(f"skipped image '{path}': cannot be read ({e})")

    # pass 1, every file: header (mode, size) and, for the stream loader, the quick check
    kept: dict[str, tuple[list[Path], list[int]]] = {}
    gray, deep, sizes, reduced = True, False, {}, []
    for split, (paths, labels) in splits.items():
        kept[split] = ([], [])
        for p, y in zip(paths, labels, strict=True):
            try:
                head = imagefile.header(p, limit, check=stream)  # upright size (EXIF orientation)
            except Exception as e:  # PIL raises several types for broken images
                broken(p, e)
                continue
            wh = head.size
            gray &= head.gray
            deep |= head.deep
            if head.reduced:
                reduced.append(p)
            sizes.setdefault(wh, p)
            kept[split][0].append(p)
            kept[split][1].append(y)
    if not size and len(sizes) > 1:
        (w0, h0), p0 = next(iter(sizes.items()))
        (w1, h1), p1 = list(sizes.items())[1]
        raise DataError(f"images differ in size ('{p0}' is {w0}x{h0}, '{p1}' is {w1}x{h1}) and "
                        f"data.image_size is 0 (keep sizes). Set data.image_size=N to resize every "
                        f"image to NxN.")
    if reduced:
        warnings.append(f"{len(reduced)} image(s) are 16-bit colour or 16-bit greyscale with alpha (e.g. "
                        f"'{reduced[0]}'), which Pillow reads at 8 bits per channel: values are scaled, not "
                        f"clipped, but their lowest 8 bits are lost. Save them as 16-bit greyscale without "
                        f"alpha, or 8-bit, to avoid this notice.")
    C = 1 if gray else 3
    W, H = (size, size) if size else next(iter(sizes), (0, 0))
    scale = 1.0 if deep else 255.0  # 16-bit images: float32 in [0, 1]; else uint8

    if stream:
        x = {s: ImageFiles(folder, kept[s][0], gray, size, deep, limit) for s in kept}
        n = len(x["train"])
        sample = np.unique(np.linspace(0, n - 1, min(n, STATS_SAMPLE)).round().astype(np.int64)) if n else []
        mean, std = _channel_stats((x["train"][int(i)][None] for i in sample), C, scale)
    else:  # pass 2: decode everything; unreadable files are found here
        x = {}
        for split, (paths, labels) in list(kept.items()):
            arr = np.empty((len(paths), C, H, W), np.float32 if deep else np.uint8)
            good = []
            for p in paths:
                try:
                    arr[len(good)] = _decode(str(p), gray, size, deep, limit)
                    good.append(True)
                except Exception as e:  # PIL raises several types for broken images
                    broken(p, e)
                    good.append(False)
            x[split] = torch.from_numpy(arr[:sum(good)])
            kept[split] = ([p for p, g in zip(paths, good, strict=True) if g],
                           [y for y, g in zip(labels, good, strict=True) if g])
        per_chunk = max(1, (1 << 22) // (C * H * W))  # images per float64 chunk of ~32 MiB
        mean, std = _channel_stats(x["train"].split(per_chunk), C, scale)

    y = {s: torch.tensor(kept[s][1], dtype=torch.int64) for s in kept}
    missing = [c for i, c in enumerate(classes) if not (y["train"] == i).any()]
    if missing or not len(y["test"]):
        what = f"class {', '.join(missing)} has" if missing else "the test split has"
        raise DataError(f"image-folder '{folder}': {what} no readable images left after dropping "
                        f"broken files. Add good images there.")
    info = DatasetInfo("image-folder", (C, H, W), len(classes), classes, scale, mean, std,
                       extra={"image_size": size, "resample": "bilinear (antialiased when shrinking)",
                              "bit_depth": 16 if deep else 8, "orientation": "exif"})
    import hashlib

    listing = hashlib.sha256()
    for split in ("train", "test"):  # the files as listed, sized and dated: the same for both loaders
        for p in kept[split][0]:
            st = p.stat()
            listing.update(f"{split}|{p.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    source = {"path": str(folder), "layout": layout, "split": layout.split(", ", 1)[-1],
              "files_sha256": listing.hexdigest(),
              "train": len(y["train"]), "test": len(y["test"]),
              "skipped": len(warnings), "loader": opts.loader}
    return Dataset(info, x["train"], y["train"], x["test"], y["test"], source, warnings=warnings)


# ---------------------------------------------------------------------------------------- MNIST

_MNIST_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte idx file (MNIST's format; ``.gz`` read transparently) -> uint8 array.
    The magic number (0x0000080<ndim>) and the size promised by the header are checked."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"'{path}' cannot be read as gzip ({e}); it is truncated or corrupt. "
                        f"Replace it with a good copy (or delete it and use data.download=true).") from None
    magic = bytes([0, 0, 8, ndim])
    if raw[:4] != magic:
        raise DataError(f"'{path}' is not an idx{ndim}-ubyte file: it starts with {raw[:4].hex() or 'nothing'} "
                        f"where the magic number {magic.hex()} belongs. Replace it with the original "
                        f"MNIST file (or delete it and use data.download=true).")
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"'{path}' ends inside its header; the file is truncated. Replace it with a good copy.")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"'{path}' holds {len(body)} data bytes where its header {dims} promises "
                        f"{int(np.prod(dims))}; the file is truncated or damaged. Replace it with a good copy.")
    return np.frombuffer(body, np.uint8).reshape(dims).copy()  # writable, as torch wants


def _mnist_idx(root: Path) -> tuple[dict, list[str]]:
    found = []
    for name in _MNIST_IDX:
        path = next((root / "mnist" / n for n in (name, name + ".gz") if (root / "mnist" / n).is_file()), None)
        if path is None:
            raise DataError(f"dataset 'mnist' found some original idx files in '{root / 'mnist'}' but not "
                            f"{name} (or {name}.gz). Add it, or use data.download=true.")
        found.append(path)
    xtr, ytr, xte, yte = (read_idx(p, 3 if "images" in p.name else 1) for p in found)
    for x, y, p in ((xtr, ytr, found[0]), (xte, yte, found[2])):
        if x.shape[1:] != (28, 28) or len(x) != len(y) or (len(y) and y.max() > 9):
            raise DataError(f"'{p}' holds {x.shape} images for {len(y)} labels (max label "
                            f"{y.max() if len(y) else '-'}); MNIST needs 28x28 images, one label 0..9 "
                            f"each. Replace the idx files with the original ones.")
    return {"xtr": xtr, "ytr": ytr, "xte": xte, "yte": yte}, [str(p.relative_to(root)) for p in found]


@register_dataset("mnist")
def _mnist(root: Path, opts: Any) -> Dataset:
    """MNIST from ``mnist/mnist_{train,test}.npz`` (the repacked copy) or, when neither is there,
    the original idx files (``train-images-idx3-ubyte`` etc., optionally ``.gz``) in ``mnist/``."""
    npz = ("mnist/mnist_train.npz", "mnist/mnist_test.npz")
    npz_there = any((root / f).is_file() for f in npz)
    idx_there = any((root / "mnist" / n).is_file() for name in _MNIST_IDX for n in (name, name + ".gz"))
    if not npz_there and not idx_there:
        raise DataError(
            f"dataset 'mnist' needs mnist/mnist_train.npz and mnist/mnist_test.npz, or the original "
            f"idx files ({', '.join(_MNIST_IDX)}, optionally .gz) in mnist/, under the data root "
            f"'{root}', and they are not there. Set data.root (--data.root=DIR) or the environment "
            f"variable LAYERWISE_DATA to the folder that holds them, or pass --data.download=true.")
    if npz_there:  # the npz form wins when both are there
        tr, te = (_npz(root, f, "mnist") for f in npz)
        d, files = {"xtr": tr["x"], "ytr": tr["y"], "xte": te["x"], "yte": te["y"]}, list(npz)
    else:
        d, files = _mnist_idx(root)
    info = DatasetInfo("mnist", (1, 28, 28), 10, [str(i) for i in range(10)], 255.0, [0.1307], [0.3081])
    return Dataset(info, torch.from_numpy(d["xtr"])[:, None], torch.from_numpy(d["ytr"]).long(),
                   torch.from_numpy(d["xte"])[:, None], torch.from_numpy(d["yte"]).long(),
                   {"files": files})


# ------------------------------------------------------------------------------------- CIFAR-10

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_CIFAR_BIN = "cifar10/cifar-10-batches-bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte, then 1024 red, 1024 green, 1024 blue (row-major)


def read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 binary batch -> (x uint8 (N, 3, 32, 32), y uint8 (N,)); sizes and labels checked."""
    raw = path.read_bytes()
    if not raw or len(raw) % _CIFAR_RECORD:
        raise DataError(f"'{path}' is {len(raw)} bytes, not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 "
                        f"records (1 label byte + 3072 pixel bytes); it is truncated or not from the binary "
                        f"version. Replace it with a good copy (or delete it and use data.download=true).")
    rec = np.frombuffer(raw, np.uint8).reshape(-1, _CIFAR_RECORD)
    if rec[:, 0].max() > 9:
        raise DataError(f"'{path}' has labels above 9 (e.g. {int(rec[:, 0].max())}); it is not a CIFAR-10 "
                        f"binary batch (CIFAR-100's has two label bytes). Replace it with a good copy.")
    return rec[:, 1:].copy().reshape(-1, 3, 32, 32), rec[:, 0].copy()  # copies: writable, as torch wants


def _cifar10_bin(root: Path) -> tuple[dict, list[str], list[str]]:
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    missing = [n for n in names if not (root / _CIFAR_BIN / n).is_file()]
    if missing:
        raise DataError(f"dataset 'cifar10' found the binary version in '{root / _CIFAR_BIN}' but not "
                        f"{', '.join(missing)}. Unpack the whole cifar-10-binary.tar.gz there, or use "
                        f"data.download=true.")
    parts = [read_cifar_bin(root / _CIFAR_BIN / n) for n in names]
    meta = root / _CIFAR_BIN / "batches.meta.txt"
    classes = [c.strip() for c in meta.read_text().splitlines() if c.strip()] if meta.is_file() else []
    d = {"xtr": np.concatenate([p[0] for p in parts[:5]]), "ytr": np.concatenate([p[1] for p in parts[:5]]),
         "xte": parts[5][0], "yte": parts[5][1]}
    return d, [f"{_CIFAR_BIN}/{n}" for n in names], classes if len(classes) == 10 else CIFAR10_CLASSES


_DECODED: dict[tuple, tuple] = {}  # the last decoded CIFAR-10 JPEG set, keyed by files + mtimes


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat() if path.is_file() else None
    return (st.st_mtime_ns, st.st_size) if st else (0, 0)


def _decode_jpegs(d: dict[str, np.ndarray], path: str) -> torch.Tensor:
    """All images of a repacked JPEG npz, decoded by a few threads (PIL releases the GIL while it
    decodes), into (N, 3, 32, 32) uint8."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    blob, off = d["jpeg"], d["offsets"]
    n = len(off) - 1
    out = np.empty((n, 32, 32, 3), np.uint8)

    def decode(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            try:
                out[i] = np.asarray(Image.open(io.BytesIO(blob[off[i]:off[i + 1]].tobytes())).convert("RGB"))
            except Exception as e:  # PIL raises several types for broken images
                raise DataError(f"image {i} in '{path}' cannot be decoded ({e}). "
                                f"Replace the file with a good copy.") from None

    workers = max(1, min(8, os.cpu_count() or 1))
    bounds = np.linspace(0, n, workers * 4 + 1).astype(int)
    with ThreadPoolExecutor(workers) as pool:
        for job in [pool.submit(decode, int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds)]:
            job.result()  # the first broken image's DataError surfaces here
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)


@register_dataset("cifar10")
def _cifar10(root: Path, opts: Any) -> Dataset:
    """CIFAR-10 from the repacked JPEG npz files (``cifar10/cifar10_{train,test}_jpeg.npz``) or,
    when neither is there, the binary version (``cifar10/cifar-10-batches-bin/*.bin``)."""
    files = ["cifar10/cifar10_train_jpeg.npz", "cifar10/cifar10_test_jpeg.npz"]
    npz_there = any((root / f).is_file() for f in files)
    if not npz_there and not (root / _CIFAR_BIN).is_dir():
        raise DataError(
            f"dataset 'cifar10' needs {files[0]} and {files[1]}, or the binary version unpacked as "
            f"{_CIFAR_BIN}/ (data_batch_1.bin .. data_batch_5.bin, test_batch.bin), under the data "
            f"root '{root}', and they are not there. Set data.root (--data.root=DIR) or the "
            f"environment variable LAYERWISE_DATA to the folder that holds them, or pass "
            f"--data.download=true.")
    if npz_there:  # the npz form wins when both are there
        key = tuple((str((root / f).resolve()), *_stamp(root / f)) for f in files)
        if key not in _DECODED:  # decoding 60k JPEGs takes ~15 s on 2 cores: once per process
            tr, te = (_npz(root, f, "cifar10") for f in files)
            _DECODED.clear()
            _DECODED[key] = ([str(c) for c in tr["classes"]], _decode_jpegs(tr, files[0]),
                             _decode_jpegs(te, files[1]), tr["y"], te["y"])
        classes, xtr, xte, ytr, yte = _DECODED[key]
    else:
        d, files, classes = _cifar10_bin(root)
        xtr, xte = torch.from_numpy(d["xtr"]), torch.from_numpy(d["xte"])
        ytr, yte = d["ytr"], d["yte"]
    info = DatasetInfo("cifar10", (3, 32, 32), 10, classes, 255.0,
                       [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
    return Dataset(info, xtr, torch.from_numpy(ytr).long(), xte, torch.from_numpy(yte).long(), {"files": files})
