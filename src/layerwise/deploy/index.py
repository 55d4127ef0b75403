"""The runs index: every run under a root as one row, kept in SQLite beside the runs.

    layerwise runs [ROOT] [--sort KEY] [--where K=V ...] [--limit N] [--json | --csv]
    layerwise.runs("runs", sort="-test_accuracy", where=["dataset=mnist"])

The run directories stay the truth; ``ROOT/.layerwise-runs.sqlite`` is a cache of what reading them
gives. Each listing walks the root with ``os.scandir`` (runs are found at any depth up to
``max_depth``: a cross-validation folder's ``fold<i>`` runs and a sweep's ``runs/<point>`` runs
are listed as runs of their own, their ``group`` being the top folder under the root that holds
them), computes each run's signature (mtime and size of config.yaml, env.json, summary.json,
metrics.jsonl, running.json and the checkpoints/ folder: a few stat calls, no file read), and
reads again only the runs whose signature changed since the index last saw them; rows of runs no
longer on disk leave the index. Each refresh is one SQLite transaction, so several listings and
the training runs writing beside them never see or leave half an index. An index that cannot be
opened, read or written (corrupt, locked for longer than a timeout, a read-only root) is
rebuilt, or bypassed for that listing with a warning; the listing itself never fails for it.

A run's status (finished, running, unknown, resumable, crashed) is in :mod:`layerwise.deploy.status`;
"running" is checked at every listing (a process may have died since), the rest comes from files.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import warnings
from collections import deque
from pathlib import Path
from typing import Any

from layerwise.deploy.status import MARKER, has_checkpoint, task_from_records

INDEX_NAME = ".layerwise-runs.sqlite"
# How rows are built from run directories; an index written under another version is rebuilt.
ROW_VERSION = 2  # 2: task_hint
# Files whose presence makes a directory a run (a crashed run may lack config.yaml or summary.json).
RUN_FILES = ("config.yaml", "summary.json", "metrics.jsonl", "env.json")
SIGNATURE_FILES = RUN_FILES + (MARKER, "checkpoints")
# Folders that never hold runs (a run directory's own folders are not entered anyway).
NOT_RUNS = {"checkpoints", "plots", "tensorboard", "__pycache__", "node_modules"}
LOCK_TIMEOUT_S = 2.0  # how long a listing waits for another process's refresh before going on without the index


class RunsError(ValueError):
    """A root that cannot be listed (it does not exist, or is not a folder); the message says what to do."""


# ----------------------------------------------------------------------------- reading one run
def _read_json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


_SECTION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):")
_KEY = re.compile(r"  ([A-Za-z_][A-Za-z0-9_]*):(?: (\S.*))?")
_SCALARS: dict[str, Any] = {}  # a value's YAML text -> its value (runs share most values: the defaults)


def _scalar(text: str) -> Any:
    if text not in _SCALARS:
        import yaml

        if text[:2] in ("- ", "? ") or text[:1] in "&*!|>":  # a block entry, anchor, alias, tag or block scalar
            raise ValueError(text)
        value = yaml.safe_load(text)
        if isinstance(value, dict):
            raise ValueError(text)  # a mapping, an anchor, a tag or a block scalar: not a one-line value
        if len(_SCALARS) > 100_000:
            _SCALARS.clear()
        _SCALARS[text] = value
    value = _SCALARS[text]
    return list(value) if isinstance(value, list) else value  # rows never share a list


def _flat_sections(text: str) -> dict[str, Any] | None:
    """A config.yaml as ``yaml.safe_dump`` writes the resolved config (``section:`` lines, then
    ``  key: value`` lines, or ``  key:`` and its list as ``  - item`` lines), flattened to
    {"section.key": value}, each value parsed by PyYAML on its own and remembered; None for any
    other shape (nested mappings or lists, wrapped strings, comments), which the caller hands to
    the full YAML loader. Reading 5,000 configs this way takes a tenth of loading each whole (the
    loader builds every node in Python: ~1.5 ms a config even with libyaml)."""
    out: dict[str, Any] = {}
    section = listed = None  # listed: the key whose block list the next "  - item" lines extend
    for line in text.splitlines():
        try:
            if listed is not None and line.startswith("  - "):
                out[listed] = (out[listed] or []) + [_scalar(line[4:])]
                continue
            listed = None
            m = _KEY.fullmatch(line)
            if m is not None and section is not None:
                key = f"{section}.{m[1]}"
                if m[2] is None:  # a null, or a block list below
                    out[key], listed = None, key
                else:
                    out[key] = _scalar(m[2])
                continue
        except Exception:  # noqa: BLE001 (any YAML error: let the full loader judge the file)
            return None
        m = _SECTION.fullmatch(line)
        if m is None:
            return None
        section = m[1]
    return out


def _read_config(path: str) -> dict[str, Any]:
    """config.yaml flattened to {"section.key": value}; {} when missing or unreadable."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except (OSError, UnicodeDecodeError):
        return {}
    fast = _flat_sections(text)
    if fast is not None:
        return fast
    import yaml

    try:  # libyaml's loader where PyYAML has it
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    out = {}
    for section, values in raw.items():
        if isinstance(values, dict):
            out.update({f"{section}.{k}": v for k, v in values.items()})
    return out


def _metrics_tail(path: str, size: int) -> dict[str, Any]:
    """The last step logged in metrics.jsonl, and the task its metrics show (task_hint: for a run of
    data.task=auto without a summary), reading only its last 16 KiB; a line cut off by a crash
    mid-write (no newline, not JSON) is skipped."""
    if size <= 0:
        return {}
    try:
        with open(path, "rb") as f:
            f.seek(max(0, size - 16384))
            lines = f.read().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            return {"last_step": rec["step"], "last_kind": rec.get("kind"), "task_hint": task_from_records([rec])}
    return {}


def _signature(entries: dict[str, os.DirEntry]) -> str:
    parts = []
    for name in SIGNATURE_FILES:
        e = entries.get(name)
        if e is not None:
            try:
                st = e.stat()
            except OSError:
                continue
            parts.append(f"{name}:{st.st_mtime_ns}:{st.st_size}")
    return "|".join(parts)


def read_run(path: str, entries: dict[str, os.DirEntry]) -> dict[str, Any]:
    """What a run directory holds, as the index stores it: the summary (when it is a JSON
    object), the flattened config, the start time, the last logged step, whether a complete
    checkpoint exists, the marker, and notes on damaged files. Never raises for a damaged run."""
    j = os.path.join
    notes = []
    summary = None
    if "summary.json" in entries:
        summary = _read_json(j(path, "summary.json"))
        if not isinstance(summary, dict):
            summary = None
            notes.append("summary.json unreadable")
    config = _read_config(j(path, "config.yaml")) if "config.yaml" in entries else {}
    if "config.yaml" not in entries:
        notes.append("no config.yaml")
    elif not config:
        notes.append("config.yaml unreadable")
    env = _read_json(j(path, "env.json")) if "env.json" in entries else None
    tail = {}
    if "metrics.jsonl" in entries:
        try:
            tail = _metrics_tail(j(path, "metrics.jsonl"), entries["metrics.jsonl"].stat().st_size)
        except OSError:
            pass
    marker = _read_json(j(path, MARKER)) if MARKER in entries else None
    return {"summary": summary, "config": config,
            "started": env.get("started") if isinstance(env, dict) else None,
            "resumable": summary is None and "checkpoints" in entries and has_checkpoint(j(path, "checkpoints")),
            "marker": marker if isinstance(marker, dict) else ({} if MARKER in entries else None),
            "note": "; ".join(notes), **tail}


# ----------------------------------------------------------------------------- finding runs
def find_runs(root: Path, max_depth: int = 4) -> dict[str, tuple[str, str]]:
    """{name: (absolute path, signature)} of every run directory under ``root`` (``root`` itself
    when it is one), found by walking at most ``max_depth`` folders down; hidden folders and the
    folders inside a run are not entered. A run's name is its path relative to ``root`` (POSIX
    separators; the root's own name when the root is the run). A folder reached twice (a symbolic
    link to a run under the root, a link back up to the root) is listed once, under its path
    without links when it has one: folders are walked shallowest first, links after the rest."""
    out: dict[str, tuple[str, str]] = {}
    queue, links = deque([(str(root), "", 0)]), deque()
    seen: set[tuple[int, int]] = set()
    while queue or links:
        path, rel, depth = queue.popleft() if queue else links.popleft()
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(path) as it:
                entries = {e.name: e for e in it}
        except OSError:  # unreadable, or deleted while we walk: not listed
            continue
        if any(name in entries for name in RUN_FILES):
            out[rel or Path(path).name] = (path, _signature(entries))
            continue
        if depth >= max_depth:
            continue
        for name, e in sorted(entries.items()):
            if name.startswith(".") or name in NOT_RUNS:
                continue
            try:
                if e.is_dir():
                    (links if e.is_symlink() else queue).append((e.path, f"{rel}/{name}" if rel else name, depth + 1))
            except OSError:
                continue
    return out


# ----------------------------------------------------------------------------- the SQLite cache
def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=LOCK_TIMEOUT_S, isolation_level=None)
    con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    con.execute("CREATE TABLE IF NOT EXISTS runs (name TEXT PRIMARY KEY, sig TEXT NOT NULL, row TEXT NOT NULL)")
    version = con.execute("SELECT value FROM meta WHERE key = 'row_version'").fetchone()
    if version is None or version[0] != str(ROW_VERSION):
        con.execute("BEGIN IMMEDIATE")
        con.execute("DELETE FROM runs")
        con.execute("INSERT OR REPLACE INTO meta VALUES ('row_version', ?)", (str(ROW_VERSION),))
        con.execute("COMMIT")
    return con


def _open_index(path: Path) -> sqlite3.Connection | None:
    """A connection to the index, rebuilding a corrupt file; None (with a warning) when it cannot
    be used: the listing then reads every run directory."""
    for attempt in (0, 1):
        try:
            return _connect(path)
        except sqlite3.DatabaseError as e:
            reason = str(e)
            if attempt == 0 and "locked" not in reason and "readonly" not in reason and "unable to open" not in reason:
                try:  # not a database (a half-copied or overwritten file): start again from the runs
                    path.unlink()
                    warnings.warn(f"the runs index '{path}' was unreadable ({reason}); rebuilt from the run "
                                  f"directories", stacklevel=3)
                    continue
                except OSError:
                    pass
            if path.exists() or "readonly" in reason or "locked" in reason:
                warnings.warn(f"the runs index '{path}' cannot be used ({reason}); listed from the run "
                              f"directories without it", stacklevel=3)
            return None
    return None


def _cached(con: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    return {name: (sig, row) for name, sig, row in con.execute("SELECT name, sig, row FROM runs")}


def _save(con: sqlite3.Connection, changed: dict[str, tuple[str, dict]], gone: list[str]) -> None:
    """One transaction: the changed rows in, the vanished runs out."""
    con.execute("BEGIN IMMEDIATE")
    try:
        con.executemany("INSERT OR REPLACE INTO runs VALUES (?, ?, ?)",
                        [(name, sig, json.dumps(row)) for name, (sig, row) in changed.items()])
        con.executemany("DELETE FROM runs WHERE name = ?", [(name,) for name in gone])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def refresh(root: str | Path, max_depth: int = 4,
            use_index: bool = True) -> tuple[dict[str, tuple[str, dict]], dict[str, Any]]:
    """({name: (path, stored row)} of every run under ``root``, stats): the rows from the index where a
    run's signature is unchanged, read from the run directory otherwise, and the index brought up
    to date in one transaction. ``stats``: runs, read (directories read this time), index (its
    path, or None when bypassed). RunsError when ``root`` is not a folder."""
    root = Path(root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise RunsError(f"runs root '{root}' {what}. Give the folder that holds your run directories "
                        f"(`layerwise runs runs/`; run.root in a recipe, default 'runs').")
    on_disk = find_runs(root, max_depth)
    root_is_run = list(on_disk) == [root.name] and on_disk[root.name][0] == str(root)
    index = root / INDEX_NAME
    con = _open_index(index) if use_index and not root_is_run else None
    cached: dict[str, tuple[str, str]] = {}
    if con is not None:
        try:
            cached = _cached(con)
        except sqlite3.DatabaseError as e:
            warnings.warn(f"the runs index '{index}' cannot be read ({e}); listed from the run directories",
                          stacklevel=2)
            con.close()
            con = None
    # a signature is taken before its run's files are read: a file that changes in between leaves a
    # row newer than its signature, which the next listing reads again (never a stale row kept)
    rows, changed = {}, {}
    for name, (path, sig) in on_disk.items():
        hit = cached.get(name)
        if hit is not None and hit[0] == sig:
            try:
                rows[name] = json.loads(hit[1])
                continue
            except ValueError:
                pass
        try:
            with os.scandir(path) as it:
                entries = {e.name: e for e in it}
        except OSError:  # deleted since the walk
            continue
        rows[name] = read_run(path, entries)
        changed[name] = (sig, rows[name])
    gone = [name for name in cached if name not in on_disk]
    if con is not None:
        if changed or gone:
            try:
                _save(con, changed, gone)
            except sqlite3.DatabaseError as e:  # locked by a long writer, read-only: this listing goes on
                warnings.warn(f"the runs index '{index}' was not updated ({e}); this listing read the run "
                              f"directories", stacklevel=2)
        con.close()
    return ({name: (on_disk[name][0], row) for name, row in rows.items()},
            {"runs": len(rows), "read": len(changed), "index": str(index) if con is not None else None})
