"""Whether a run is finished, running, resumable or crashed, from its directory alone.

    finished   summary.json holds a JSON object (the Trainer writes it last, atomically)
    running    no summary, and RUN_DIR/running.json names a process that is alive on this host
    unknown    no summary, and running.json names another host: its processes cannot be seen
               from here (a shared file system); the row's ``host`` says which
    resumable  no summary, no live process, and checkpoints/ holds a complete checkpoint
    crashed    no summary, no live process, no complete checkpoint

The marker ``running.json`` is written by rank 0 of ``layerwise train`` / ``layerwise rl`` when the
loop starts and removed when it ends, on success and on an exception (:func:`running_marker`). A
process killed with SIGKILL (or a machine that lost power) leaves it behind, so a marker counts only
while its pid is alive on this host *and* is the same process: the marker records the process's
start time in clock ticks since boot (``/proc/<pid>/stat``, field 22) and the boot id, and a pid
reused by another process after a crash or a reboot has another start time or boot id. Where /proc
is absent (macOS), a live pid is taken as the run's.

The trainer imports this module (a sideways arrow train -> serve) because the marker belongs to the
status it feeds; the module imports nothing but the standard library, so that listing thousands of
runs never imports torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MARKER = "running.json"
STATUSES = ("finished", "running", "unknown", "resumable", "crashed")


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3, the state, first), or None
    where /proc cannot tell (no /proc, or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'
    try:
        return stat[stat.rindex(")") + 2:].split()
    except ValueError:
        return None


def _process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (/proc/<pid>/stat field 22), or
    None where /proc cannot tell (no /proc, or no such process)."""
    fields = _proc_stat(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def marker_record(command: str) -> dict[str, Any]:
    """What running.json holds for this process: host, pid, proc_start, boot_id, started (ISO
    8601, local time) and command ("train" or "rl")."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "proc_start": _process_start(pid), "boot_id": _boot_id(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command}


@contextlib.contextmanager
def running_marker(run_dir: str | Path, command: str, enabled: bool = True) -> Iterator[None]:
    """``with running_marker(run_dir, "train"):`` the loop runs with RUN_DIR/running.json present.

    Written atomically (a temp file renamed) on entry and removed on exit, whatever the exit; only
    removed if it is still this process's (a second process resuming the same directory replaced
    it). ``enabled=False`` (ranks other than 0) does nothing. A marker that cannot be written (a
    read-only directory) is skipped silently: it is a hint for ``layerwise runs``, never a reason
    to stop training."""
    if not enabled:
        yield
        return
    path = Path(run_dir) / MARKER
    record = marker_record(command)
    try:
        tmp = path.with_name(f".{MARKER}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(record) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == record["pid"]:
                path.unlink()


def marker_state(marker: dict[str, Any] | None) -> str:
    """"running", "unknown" (another host's marker) or "dead" for a running.json's contents
    (None or a damaged marker: "dead"). See the module docstring for how a process is matched."""
    if not isinstance(marker, dict) or not isinstance(marker.get("pid"), int) or marker["pid"] <= 0:
        return "dead"
    if marker.get("host") != socket.gethostname():
        return "unknown"
    boot = _boot_id()
    if marker.get("boot_id") and boot and marker["boot_id"] != boot:
        return "dead"  # the machine restarted since: no process of before is alive
    pid = marker["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return "dead"
    fields = _proc_stat(pid)
    if fields and fields[0] in ("Z", "X"):
        return "dead"  # a zombie: killed (-9) or ended, its parent has not reaped it yet; it runs no more
    start = _process_start(pid)
    if marker.get("proc_start") is not None and start is not None and start != marker["proc_start"]:
        return "dead"  # the pid was reused by another process
    return "running"


def clean_summary(summary: Any) -> dict[str, Any] | None:
    """A summary.json object with the keys the pages and the listing name things by made safe: an
    edited or damaged file's ``headline`` that is not a string dropped, a ``task``, ``model``,
    ``dataset`` or ``env`` that is not one written as text; None when it is not an object."""
    if not isinstance(summary, dict):
        return None
    out = dict(summary)
    for key in ("headline", "task", "model", "dataset", "env"):
        if out.get(key) is not None and not isinstance(out[key], str):
            out[key] = None if key == "headline" else json.dumps(out[key])
    return out


# The metric a task logs that no other task does (tasks/*.py), in the order they are tested.
TASK_METRICS = (("episodic_return", "rl"), ("perplexity", "lm"), ("micro_f1", "multilabel"),
                ("accuracy", "classify"), ("rmse", "regress"), ("r2", "regress"))


def task_from_records(records: list[dict[str, Any]]) -> str:
    """The task of a run whose config says data.task=auto and that has no summary.json yet (crashed,
    running), from the metrics its last records log (metrics.jsonl); "" when they say nothing."""
    logged = {k for r in records[-50:] for k in r}
    return next((task for key, task in TASK_METRICS if key in logged), "")


def run_status(finished: bool, marker: dict[str, Any] | None, resumable: bool) -> str:
    """One of :data:`STATUSES`, from what a run directory holds (see the module docstring)."""
    if finished:
        return "finished"
    state = marker_state(marker) if marker is not None else "dead"
    if state != "dead":
        return state
    return "resumable" if resumable else "crashed"


def has_checkpoint(checkpoints: str | Path) -> bool:
    """Whether ``checkpoints/`` holds a complete checkpoint, by the cheap test (no tensor is read):
    a ``step_*.pt`` whose ``.json`` (written after it, train/checkpoint.py) parses and gives the
    ``.pt``'s size in bytes, or a ``step_*.dcp`` folder holding ``.metadata`` and ``trainer.json``
    (distributed/checkpoint.py renames it into place once complete). A checksum mismatch within a
    file of the right size is found only when the run resumes (which then falls back to an older
    checkpoint)."""
    try:
        with os.scandir(checkpoints) as it:
            entries = {e.name: e for e in it}
    except OSError:
        return False
    for name in sorted(entries, reverse=True):
        if not name.startswith("step_"):
            continue
        e = entries[name]
        try:
            if name.endswith(".pt"):
                meta = entries.get(name[:-3] + ".json")
                if meta is None:
                    continue
                info = json.loads(Path(meta.path).read_text())
                if isinstance(info, dict) and info.get("bytes") == e.stat().st_size:
                    return True
            elif (name.endswith(".dcp") and e.is_dir() and os.path.isfile(os.path.join(e.path, ".metadata"))
                  and os.path.isfile(os.path.join(e.path, "trainer.json"))):
                return True
        except (OSError, ValueError):
            continue
    return False


def dir_status(run_dir: str | Path, finished: bool) -> tuple[str, dict[str, Any] | None]:
    """(status, running.json's contents or None) of a run directory, read from its files: finished
    when ``finished`` (it has a summary), else from the marker and the checkpoints (a marker that
    exists but cannot be read counts as a dead process's)."""
    path = Path(run_dir)
    if finished:
        return "finished", None
    exists = (path / MARKER).exists()
    try:
        marker = json.loads((path / MARKER).read_text()) if exists else None
    except (OSError, ValueError):
        marker = None
    return run_status(False, marker if marker is not None or not exists else {},
                      has_checkpoint(path / "checkpoints")), marker
