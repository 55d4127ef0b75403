"""Atomic, checksummed, resumable checkpoints.

Each checkpoint is two files in ``checkpoints/``: ``step_XXXXXXXX.pt`` (``torch.save`` of a dict
of tensors and plain Python values) and ``step_XXXXXXXX.json`` (its step, size and sha256). Both
are written to a temp file, fsynced and renamed, the ``.json`` last, so a process killed at any
instant leaves either a complete, verifiable checkpoint or none. Loading verifies the checksum
and falls back to the previous checkpoint with a warning; it never unpickles arbitrary objects
(``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """No usable checkpoint; the message says what was found and what to do."""


class NewerCheckpointError(CheckpointError):
    """A checkpoint written by a newer layerwise: refused outright, never skipped (falling back to an
    older checkpoint would then overwrite it)."""


# The layout of a checkpoint (the keys of its state and their meaning). A loader reads this version
# and older; one written by a newer layerwise is refused by name instead of misread.
CHECKPOINT_FORMAT_VERSION = 1


def check_format_version(meta: dict[str, Any], name: str) -> None:
    """CheckpointError if ``meta`` (a checkpoint's .json or trainer.json) has a newer format
    version than this layerwise reads; files from before the field are version 1."""
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{name} has an unreadable format_version {version!r} (a damaged .json)")
    if version > CHECKPOINT_FORMAT_VERSION:
        from layerwise import __version__
        raise NewerCheckpointError(f"{name} is in checkpoint format {version!r}, written by layerwise "
                              f"{meta.get('layerwise', 'newer than this one')}; this layerwise ({__version__}) "
                              f"reads format {CHECKPOINT_FORMAT_VERSION} and older. Upgrade layerwise to resume it")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:  # make the rename itself durable
        os.fsync(fd)
    finally:
        os.close(fd)


def _name(step: int) -> str:
    return f"step_{step:08d}"


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write one checkpoint and delete all but the newest ``keep`` complete ones."""
    return _write_checkpoint(directory, step, serialize(state), keep)


def serialize(state: dict[str, Any]) -> bytes:
    """``torch.save`` of ``state`` as bytes: a snapshot of its tensors (later steps may change them)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _write_checkpoint(directory: Path, step: int, data: bytes, keep: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{_name(step)}.pt"
    atomic_write(path, data)
    from layerwise import __version__

    meta = {"step": step, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "format_version": CHECKPOINT_FORMAT_VERSION, "layerwise": __version__}
    atomic_write(path.with_suffix(".json"), json.dumps(meta).encode())
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    for tmp in directory.glob(".*.tmp*"):  # left by a process killed mid-write
        tmp.unlink(missing_ok=True)
    return path


class CheckpointWriter:
    """Checkpoints written beside the training loop (issue 14: the loop does not wait on the disk).

    :meth:`save` serializes the state at once (the snapshot, taken before the next step changes
    a tensor) and hands the bytes to a thread that writes, checksums, fsyncs, renames and prunes,
    exactly as :func:`save_checkpoint` does; one write is in flight at a time (a second ``save``
    waits for the first). The files are as atomic as before: a process killed during a write
    leaves the previous checkpoints complete. :meth:`wait` joins the write and re-raises its
    error (a full disk): the trainer calls it before a run's end, and the thread is not a daemon,
    so the interpreter finishes a write in flight even when the run fails.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, directory: Path, step: int, state: dict[str, Any], keep: int) -> None:
        self.wait()
        data = serialize(state)
        self._thread = threading.Thread(target=self._write, args=(directory, step, data, keep),
                                        name=f"layerwise-checkpoint-{step}")
        self._thread.start()

    def _write(self, directory: Path, step: int, data: bytes, keep: int) -> None:
        try:
            _write_checkpoint(directory, step, data, keep)
        except BaseException as e:  # noqa: BLE001 (re-raised in the training thread by wait())
            self._error = e

    def wait(self, raise_error: bool = True) -> None:
        """Block until the write in flight (if any) is on disk; raise its error unless told not to
        (``raise_error=False`` while another exception is already on its way)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None and raise_error:
            error, self._error = self._error, None
            raise CheckpointError(f"writing a checkpoint failed: {error}. Free disk space or fix the "
                                  f"permissions of the run directory; earlier checkpoints are intact") from error


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, oldest first (complete or not)."""
    return sorted(directory.glob("step_*.pt"))


def _verify(path: Path) -> bytes:
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise CheckpointError(f"{path.name} has no {meta_path.name} (the write did not finish)")
    try:
        meta = json.loads(meta_path.read_text())
        expected = meta["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{meta_path.name} is unreadable ({e})") from None
    check_format_version(meta, path.name)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(f"{path.name} does not match its checksum ({len(data)} bytes, "
                              f"expected {meta.get('bytes')}): truncated or corrupt")
    return data


def read_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """One verified ``.pt`` checkpoint, loaded without unpickling arbitrary objects."""
    data = _verify(path)
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # it would need arbitrary code to load: never
        raise CheckpointError(f"holds objects other than tensors and plain values, refused "
                              f"({str(e).strip().splitlines()[-1][:200]})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(str(e)) from None


def load_newest(directory: Path, candidates: list[Path], load_one: Callable[[Path], Any]) -> tuple[Any, Path]:
    """``load_one`` of the newest candidate that loads; each one skipped is reported with a warning."""
    problems = []
    for path in reversed(candidates):
        try:
            return load_one(path), path
        except NewerCheckpointError as e:
            raise NewerCheckpointError(f"{e}. Nothing was changed in '{directory}'.") from None
        except (CheckpointError, RuntimeError, EOFError, OSError) as e:
            problem = str(e)
        problems.append(f"{path.name}: {problem}")
        warnings.warn(f"skipping checkpoint {path}: {problem}; trying the previous one", stacklevel=3)
    found = "; ".join(problems) if problems else "no checkpoint files"
    raise CheckpointError(
        f"no usable checkpoint in '{directory}' ({found}). The run cannot be resumed from it; "
        f"start a new run, or resume a run directory whose checkpoints/ folder holds a complete checkpoint.")


def load_latest(directory: Path, map_location: torch.device | str = "cpu") -> tuple[dict[str, Any], Path]:
    """The newest ``.pt`` checkpoint that verifies; each one skipped is reported with a warning."""
    return load_newest(directory, list_checkpoints(directory), lambda p: read_checkpoint(p, map_location))
