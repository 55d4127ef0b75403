"""Checksummed, resumable downloads of the public datasets, for users with internet access
(``data.download=true``; nothing here runs otherwise). Only urllib is used. Archives are tar
(cifar10) or zip (MovieLens' ml-100k.zip, which has no published checksum: its u.data is checked).

A file is written to ``<name>.part`` and renamed into place only after its checksum matches, so
the final path never holds a partial or corrupt file. An interrupted download keeps its ``.part``
and the next try asks the server for the remaining bytes (an HTTP Range request); a server that
ignores Range answers 200 with the whole file, which then replaces the part. Archives are kept in
the cache (:func:`cache_dir`) and unpacked under ``data.root`` after every member was checked:
absolute paths, ``..`` and links are refused (a "tar slip" would write outside the folder).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from layerwise.data.datasets import DataError

_CHUNK = 1 << 20  # bytes per read
_TIMEOUT_S = 60  # per socket operation, not for the whole download


def cache_dir() -> Path:
    """Where downloads are kept: ``$LAYERWISE_CACHE`` if set, else ``~/.cache/layerwise``."""
    return Path(os.environ.get("LAYERWISE_CACHE") or "~/.cache/layerwise").expanduser()


@dataclass(frozen=True)
class Remote:
    """One downloadable file: its address, its checksum and where it goes."""

    url: str
    md5: str | None = None
    sha256: str | None = None
    dest: str = ""  # path under data.root; empty for an archive, which is kept in the cache
    unpack: str = ""  # archive: the folder under data.root that receives its members
    provides: tuple[str, ...] = ()  # archive: files (under data.root) it gives; all there = no download
    # archive without a published checksum: sha256 of members (path inside the archive -> hex),
    # checked before anything is moved into data.root
    verify: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Known:
    """The downloadable files of one dataset."""

    files: tuple[Remote, ...]
    ready: tuple[str, ...] = ()  # files under data.root of another form that make a download unnecessary


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_MNIST_MD5 = {  # torchvision's checksums
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_CIFAR_BATCHES = tuple(f"cifar10/cifar-10-batches-bin/{n}" for n in
                       [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"])

_ML100K = Known((Remote("https://files.grouplens.org/datasets/movielens/ml-100k.zip", unpack="movielens",
                        provides=tuple(f"movielens/ml-100k/{n}" for n in
                                       ["u.data", "u.item", "u.user"] + [f"u{i}.{s}" for i in range(1, 6)
                                                                         for s in ("base", "test")]),
                        # GroupLens publishes no checksum of the zip: its ratings file is checked instead
                        verify=(("ml-100k/u.data", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),)),))

KNOWN: dict[str, Known] = {
    "movielens": _ML100K,
    "movielens-loo": _ML100K,
    "mnist": Known(tuple(Remote(_MNIST_URL + n, md5=m, dest=f"mnist/{n}") for n, m in _MNIST_MD5.items()),
                   ready=("mnist/mnist_train.npz", "mnist/mnist_test.npz")),
    "cifar10": Known((Remote("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                             md5="c32a1d4ab5d03f1284b67883e8d87530", unpack="cifar10",
                             provides=_CIFAR_BATCHES),),
                     ready=("cifar10/cifar10_train_jpeg.npz", "cifar10/cifar10_test_jpeg.npz")),
    "shakespeare": Known((Remote("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                                 "tinyshakespeare/input.txt", md5="6fb458f1232090904fb40fe944165e91",
                                 dest="tinyshakespeare/input.txt"),)),
}


def _mismatch(path: Path, sha256: str | None, md5: str | None) -> str | None:
    """None if ``path`` matches the given checksums, else what did not match."""
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want:
            h = hashlib.new(algo, usedforsecurity=False)
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
            if h.hexdigest() != want.lower():
                return f"{algo} checksum did not match (expected {want.lower()}, got {h.hexdigest()})"
    return None


def _download(url: str, part: Path, final: Path, retry: bool = True) -> None:
    """Fill ``part`` with the bytes at ``url``, resuming from what it holds."""
    by_hand = f"Check the internet connection (and https_proxy), or download the file by hand and save it as '{final}'."
    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "layerwise"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have and retry:  # the part is as long as the file, or longer: start over
            part.unlink()
            return _download(url, part, final, retry=False)
        raise DataError(f"cannot download {url}: HTTP {e.code} {e.reason}. {by_hand}") from None
    except (OSError, http.client.HTTPException) as e:  # URLError, refused, timeout, DNS
        raise DataError(f"cannot download {url} ({getattr(e, 'reason', e)}). {by_hand}") from None
    with resp:
        resume = have and resp.status == 206
        if resume and not resp.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            resp.close()  # some other range came back: the part cannot be trusted
            part.unlink()
            return _download(url, part, final, retry=False)
        length = resp.headers.get("Content-Length")
        got = 0
        try:
            # a server that ignores Range answers 200 with the whole file: start the part afresh
            with open(part, "ab" if resume else "wb") as f:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    got += len(chunk)
        except (OSError, http.client.HTTPException) as e:
            raise DataError(f"download of {url} was interrupted ({e}); the partial file '{part}' is kept "
                            f"and the next try resumes it. {by_hand}") from None
    if length is not None and got != int(length):
        raise DataError(f"download of {url} was interrupted after {got} of {length} bytes; the partial file "
                        f"'{part}' is kept and the next try resumes it. {by_hand}")


def fetch(url: str, sha256: str | None = None, md5: str | None = None, dest: str | Path | None = None) -> Path:
    """Download ``url`` to ``dest`` (a file path; default: the cache folder, named as in the URL)
    and return that path. A file already there is kept when it matches the checksum; a bad one is
    replaced. A checksum mismatch after downloading deletes the download and raises DataError."""
    final = Path(dest).expanduser() if dest else cache_dir() / Path(urllib.parse.urlsplit(url).path).name
    if final.is_file():
        if _mismatch(final, sha256, md5) is None:
            return final
        final.unlink()  # damaged or outdated: download again
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    _download(url, part, final)
    bad = _mismatch(part, sha256, md5)
    if bad:
        part.unlink()
        raise DataError(f"download of {url}: the {bad}. The download was deleted; run again to download it "
                        f"afresh. If that fails again, the file at that address has changed or the "
                        f"connection corrupts data: download it by hand, check its checksum and save it as "
                        f"'{final}'.")
    os.replace(part, final)
    return final


def _unsafe(m: tarfile.TarInfo) -> str | None:
    parts = PurePosixPath(m.name.replace("\\", "/")).parts
    if m.name.startswith(("/", "\\")) or (parts and parts[0].endswith(":")):
        return "an absolute path"
    if ".." in parts:
        return "a '..' component"
    if not (m.isfile() or m.isdir()):
        return "a link or special file"
    return None


def extract_tar(archive: Path, into: Path) -> list[Path]:
    """Unpack a (compressed) tar under ``into`` and return the files written. Every member is
    checked before anything is written; files are unpacked into a temporary folder beside their
    destination and moved into place, so a failure leaves no half-written file."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                why = _unsafe(m)
                if why:
                    raise DataError(f"archive '{archive}' holds the member '{m.name}' with {why}; nothing was "
                                    f"unpacked. Delete the archive and download it again from the official "
                                    f"address.")
            into.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=into))
            try:
                files = [m for m in members if m.isfile()]
                for m in files:
                    out = tmp / m.name
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(m) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                done = []
                for m in files:
                    (into / m.name).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp / m.name, into / m.name)
                    done.append(into / m.name)
                return done
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DataError(f"archive '{archive}' cannot be unpacked ({e}). Delete it and run again to download "
                        f"it afresh.") from None


def _unsafe_zip(m: zipfile.ZipInfo) -> str | None:
    parts = PurePosixPath(m.filename.replace("\\", "/")).parts
    if m.filename.startswith(("/", "\\")) or (parts and parts[0].endswith(":")):
        return "an absolute path"
    if ".." in parts:
        return "a '..' component"
    kind = (m.external_attr >> 16) & 0o170000  # unix mode bits, when the archive was made on unix
    if kind and kind not in (0o100000, 0o040000):  # not a regular file or folder: a link or device
        return "a link or special file"
    return None


def extract_zip(archive: Path, into: Path, verify: tuple[tuple[str, str], ...] = ()) -> list[Path]:
    """Unpack a zip under ``into`` with :func:`extract_tar`'s safety (every member checked first:
    no absolute paths, no ``..``, no links; files written to a temporary folder and moved into
    place only when all are there) and return the files written. ``verify`` pairs member paths
    with their sha256: a member that is missing or differs is refused, and nothing is left under
    ``into``. Raises DataError naming the archive and the member."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for m in members:
                why = _unsafe_zip(m)
                if why:
                    raise DataError(f"archive '{archive}' holds the member '{m.filename}' with {why}; nothing was "
                                    f"unpacked. Delete the archive and download it again from the official address.")
            files = [m for m in members if not m.is_dir()]
            into.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=into))
            try:
                for m in files:
                    out = tmp / m.filename
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(m) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                for name, want in verify:
                    if not (tmp / name).is_file():
                        raise DataError(f"archive '{archive}' does not hold '{name}'; nothing was unpacked. Delete "
                                        f"it and download it again from the official address.")
                    bad = _mismatch(tmp / name, want, None)
                    if bad:
                        raise DataError(f"archive '{archive}': '{name}' is not the published file: its {bad}. "
                                        f"Nothing was unpacked and the archive was deleted; run again to download "
                                        f"it afresh, or check the address.")
                done = []
                for m in files:
                    (into / m.filename).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp / m.filename, into / m.filename)
                    done.append(into / m.filename)
                return done
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as e:
        raise DataError(f"archive '{archive}' cannot be unpacked ({e}). Delete it and run again to download "
                        f"it afresh.") from None


def ensure_dataset(name: str, root: str | Path) -> list[Path]:
    """Make the known files of dataset ``name`` present under ``root``, downloading what is missing,
    and return their paths. Names without downloads, and datasets already present in another
    form (e.g. the repacked npz files), need nothing and return the files that are there."""
    spec = KNOWN.get(name)
    if spec is None:
        return []
    root = Path(root).expanduser()
    if spec.ready and all((root / f).is_file() for f in spec.ready):
        return [root / f for f in spec.ready]
    out = []
    for r in spec.files:
        if r.unpack:
            wanted = [root / f for f in r.provides]
            if not all(p.is_file() for p in wanted):
                try:
                    archive = fetch(r.url, r.sha256, r.md5)
                except DataError as e:
                    raise DataError(f"{e} (Or unpack the archive yourself under '{root / r.unpack}'.)") from None
                if archive.suffix == ".zip":
                    try:
                        extract_zip(archive, root / r.unpack, r.verify)
                    except DataError:
                        archive.unlink(missing_ok=True)  # a bad download: the next try fetches it afresh
                        raise
                else:
                    extract_tar(archive, root / r.unpack)
                missing = [str(p.relative_to(root)) for p in wanted if not p.is_file()]
                if missing:
                    raise DataError(f"archive '{archive}' from {r.url} did not hold {', '.join(missing)}. "
                                    f"Delete it and run again to download it afresh.")
            out += wanted
            continue
        target = root / r.dest
        unzipped = target.with_suffix("") if target.suffix == ".gz" else None
        if unzipped is not None and unzipped.is_file():  # the user unpacked it already
            out.append(unzipped)
        else:
            out.append(fetch(r.url, r.sha256, r.md5, dest=target))
    return out
