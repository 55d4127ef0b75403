"""`layerwise runs`: the runs under a root as a table, JSON or CSV; sorted and filtered.

The rows come from the index (:mod:`layerwise.deploy.index`). Keys a row answers to in ``--sort``
and ``--where``: the columns (name, status, task, model, dataset, headline, metric, steps,
train_seconds, energy_train_j, energy_train_kwh, started, group, host, path, note), any key of the
run's summary.json (test_accuracy, params, ...), and the run's config keys as ``section.key``
(optim.lr, data.batch_size, ...).

    --sort KEY      ascending; -KEY descending (write --sort=-KEY: argparse takes a bare -KEY for a
                    flag; the CLI joins it for you); numbers sort as numbers when every present
                    value is one, else as text; runs without the key come last either way.
    --where K=V     equal (numbers compare as numbers, text may use the wildcards * ? [...]);
                    also K!=V, and K>V, K<V, K>=V, K<=V for numbers. Repeatable: all must hold.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from layerwise.config import ConfigError
from layerwise.deploy.index import RunsError, refresh
from layerwise.deploy.status import clean_summary, run_status

COLUMNS = ("name", "status", "task", "model", "dataset", "headline", "metric", "steps", "train_seconds",
           "energy_train_j", "energy_train_kwh", "started", "group", "host", "path", "note")
_CONDITION = re.compile(r"^\s*([^\s=!<>]+)\s*(==|!=|>=|<=|=|>|<)\s*(.*?)\s*$")


def public_row(name: str, path: str, stored: dict[str, Any]) -> dict[str, Any]:
    """A run's row as ``layerwise.runs`` returns it: :data:`COLUMNS`, then the summary's other
    keys, then ``config`` ({"section.key": value}). The status is decided now (a live process
    may have ended since the run directory last changed)."""
    s = clean_summary(stored.get("summary")) or {}
    c = stored.get("config") or {}
    marker = stored.get("marker")
    rl = s.get("task") == "rl" or "env.id" in c
    data_task = c.get("data.task")
    headline = s.get("headline")
    if "steps" in s:
        steps = s["steps"]
    elif "env_steps" in s:  # an agent's steps are environment steps
        steps = s["env_steps"]
    else:  # a run that did not finish: the last step it logged
        steps = stored.get("last_step")
    row = {
        "name": name,
        "status": run_status(stored.get("summary") is not None, marker, bool(stored.get("resumable"))),
        "task": s.get("task") or ("rl" if rl else data_task if data_task not in (None, "auto") else
                                  stored.get("task_hint") or None),
        "model": s.get("model") or c.get("model.name"),
        "dataset": s.get("dataset") or s.get("env") or c.get("data.name") or c.get("env.id"),
        "headline": headline, "metric": s.get(headline) if headline else None, "steps": steps,
        "train_seconds": s.get("train_seconds"), "energy_train_j": s.get("energy_train_j"),
        "energy_train_kwh": s.get("energy_train_kwh"), "started": stored.get("started"),
        "group": name.split("/", 1)[0] if "/" in name else "",
        "host": marker.get("host") if isinstance(marker, dict) else None,
        "path": path, "note": stored.get("note") or "",
    }
    row.update({k: v for k, v in s.items() if k not in row})
    row["config"] = dict(c)
    return row


def _value(row: dict[str, Any], key: str) -> Any:
    if key in row and key != "config":
        return row[key]
    return row["config"].get(key)


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def known_keys(rows: Sequence[dict[str, Any]]) -> set[str]:
    keys = set(COLUMNS)
    for r in rows:
        keys.update(k for k in r if k != "config")
        keys.update(r["config"])
    return keys


def _check_key(key: str, known: set[str], option: str, root: Path) -> None:
    if key in known:
        return
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=5, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ConfigError(f"{option} key '{key}' is not a column, a summary.json key or a config key (section.key) of "
                      f"any run under '{root}'.{hint} Columns: {', '.join(COLUMNS)}.")


def parse_condition(text: str) -> tuple[str, str, str]:
    """``"test_accuracy>0.9"`` -> ("test_accuracy", ">", "0.9"); ConfigError for anything else."""
    m = _CONDITION.match(text)
    if not m:
        raise ConfigError(f"--where '{text}' is not KEY=VALUE, KEY!=VALUE, KEY>NUMBER, KEY<NUMBER, KEY>=NUMBER or "
                          f"KEY<=NUMBER (e.g. --where dataset=mnist --where 'test_accuracy>0.99'; quote < and > "
                          f"for the shell).")
    key, op, value = m.groups()
    op = "=" if op == "==" else op
    if op in (">", "<", ">=", "<=") and _number(value) is None:
        raise ConfigError(f"--where '{text}': {op} compares numbers, and '{value}' is not one. Use {key}=VALUE to "
                          f"match text.")
    return key, op, value


def _matches(v: Any, op: str, want: str) -> bool:
    if op in ("=", "!="):
        a, b = _number(v), _number(want)
        if v is None:
            same = want == ""
        elif a is not None and b is not None:
            same = a == b or (math.isnan(a) and math.isnan(b))  # --where test_loss=nan finds the diverged runs
        else:
            text = str(v).lower() if isinstance(v, bool) else str(v)
            same = fnmatch.fnmatchcase(text, want) if any(ch in want for ch in "*?[") else text == want
        return same if op == "=" else not same
    a, b = _number(v), float(want)
    if a is None:
        return False  # missing or not a number: never passes a numeric test
    return {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]


def _sort(rows: list[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Stable sort by each key, the last first; missing values last whatever the direction, and
    so are NaN (a diverged run's metric), which orders with nothing and would scramble the rest."""
    for spec in reversed(keys):
        desc, key = spec.startswith("-"), spec.lstrip("-")
        values = [_value(r, key) for r in rows]
        present = [v for v in values if v is not None]
        numeric = all(_number(v) is not None and not isinstance(v, str) for v in present)
        last = [v is None or (numeric and math.isnan(_number(v))) for v in values]
        have = [(v, r) for v, r, end in zip(values, rows, last) if not end]
        have.sort(key=(lambda t: _number(t[0])) if numeric else (lambda t: str(t[0])), reverse=desc)
        rows = ([r for _, r in have] + [r for v, r, end in zip(values, rows, last) if end and v is not None]
                + [r for v, r in zip(values, rows) if v is None])
    return rows


def list_runs(root: str | Path = "runs", sort: str | Sequence[str] | None = None,
              where: str | Iterable[str] = (), limit: int | None = None, max_depth: int = 4,
              use_index: bool = True) -> list[dict[str, Any]]:
    """The runs under ``root``, filtered by every ``where`` condition, sorted by ``sort`` (a key,
    ``-KEY`` for descending, or a list of them), at most ``limit``; each a dict of
    :func:`public_row`. Default order: by name. Raises ConfigError for a malformed condition or a
    key no run has (naming the close matches), RunsError when ``root`` is not a folder. The
    index ``root/.layerwise-runs.sqlite`` is read and refreshed (``use_index=False``: read every
    run directory, leave the index alone)."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"--limit takes a whole number >= 0, got {limit!r}.")
    sort = list(sort) if isinstance(sort, (list, tuple)) else [] if sort is None else [sort]
    where = list(where) if isinstance(where, (list, tuple)) else [where]
    if not all(isinstance(k, str) for k in sort + where):
        raise ConfigError("layerwise.runs(sort=..., where=...) take a string or a list of strings, e.g. "
                          "sort='-test_accuracy', where=['dataset=mnist', 'test_accuracy>0.99'].")
    conditions = [parse_condition(w) for w in where]
    if not isinstance(root, (str, Path)):
        raise RunsError(f"runs root must be a path (str or Path), got {root!r}; give the folder that holds your run "
                        f"directories (default 'runs').")
    root = Path(root)
    stored, _stats = refresh(root, max_depth, use_index)
    rows = [public_row(name, path, r) for name, (path, r) in sorted(stored.items())]
    if rows and (conditions or sort):
        known = known_keys(rows)
        for key, _op, _v in conditions:
            _check_key(key, known, "--where", root)
        for spec in sort:
            _check_key(spec.lstrip("-"), known, "--sort", root)
    rows = [r for r in rows if all(_matches(_value(r, k), op, v) for k, op, v in conditions)]
    rows = _sort(rows, sort)
    return rows[:limit] if limit is not None else rows


# ----------------------------------------------------------------------------- output
def _si(v: float, unit: str) -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")):
        if abs(v) >= factor:
            return f"{v / factor:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}"


def _seconds(v: Any) -> str:
    v = _number(v)
    if v is None:
        return ""
    return f"{v:.2g} s" if v < 1 else f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min" if v < 7200 else f"{v / 3600:.1f} h"


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


_STYLE = {"finished": "green", "running": "cyan", "unknown": "magenta", "resumable": "yellow", "crashed": "red"}


_HEADERS = ("name", "status", "task", "model", "dataset", "headline metric", "steps", "time", "energy", "kWh")
_LEFT = 5  # the first five columns are text, aligned left; the rest are numbers
RICH_ROWS = 500  # above this many rows the table is plain aligned text: rich lays out ~1 ms a row


def _cells(r: dict[str, Any], extra: Sequence[str]) -> list[str]:
    metric = f"{r['headline'].removeprefix('test_')} {_cell(r['metric'])}" if r["headline"] else ""
    joules, kwh = _number(r["energy_train_j"]), _number(r["energy_train_kwh"])
    return [r["name"], r["status"], _cell(r["task"]), _cell(r["model"]), _cell(r["dataset"]), metric,
            _cell(r["steps"]), _seconds(r["train_seconds"]), "" if joules is None else _si(joules, "J"),
            "" if kwh is None else f"{kwh:.3g}", *(_cell(_value(r, k)) for k in extra)]


def table(rows: Sequence[dict[str, Any]], extra: Sequence[str] = (), title: str = "runs"):
    """A rich Table of ``rows``: name, status, task, model, dataset, the headline metric, steps,
    training time, training energy (J, and kWh), then the ``extra`` keys (e.g. the sort key)."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("name", overflow="fold")
    t.add_column("status", no_wrap=True)
    for col in ("task", "model", "dataset"):
        t.add_column(col)
    for col in (*_HEADERS[_LEFT:], *extra):
        t.add_column(col, justify="right", no_wrap=col != "headline metric")
    for r in rows:
        cells = _cells(r, extra)
        cells[1] = f"[{_STYLE.get(r['status'], '')}]{r['status']}[/]"
        t.add_row(*cells)
    return t


def plain_table(rows: Sequence[dict[str, Any]], extra: Sequence[str] = ()) -> str:
    """The same columns as :func:`table`, as aligned plain text (for thousands of rows)."""
    lines = [list(_HEADERS) + list(extra)] + [_cells(r, extra) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) if i < _LEFT else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     .rstrip() for line in lines)


def flat_rows(rows: Sequence[dict[str, Any]], config_keys: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rows for --json / --csv: the columns and summary keys, and of the config only the keys
    named (those used in --sort/--where)."""
    out = []
    for r in rows:
        flat = {k: v for k, v in r.items() if k != "config"}
        flat.update({k: r["config"].get(k) for k in config_keys})
        out.append(flat)
    return out


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities (a diverged run's metrics) as null: JSON has no such numbers,
    and Python's NaN token makes strict readers (jq, JSON.parse) reject the whole listing."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    keys = list(COLUMNS)
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()})
    return buf.getvalue()


def join_sort_value(argv: list[str]) -> list[str]:
    """``--sort -KEY`` -> ``--sort=-KEY`` (argparse would take -KEY for an unknown flag)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--sort" and i + 1 < len(argv) and argv[i + 1].startswith("-") and len(argv[i + 1]) > 1:
            out.append(f"--sort={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def runs_command(args: Any) -> int:
    """`layerwise runs [ROOT]`: print the table (or --json / --csv) of the runs under ROOT."""
    root = Path(args.root)
    rows = list_runs(root, args.sort or [], args.where or [], args.limit, args.max_depth, not args.no_index)
    keys = [k.lstrip("-") for k in (args.sort or [])] + [parse_condition(w)[0] for w in args.where or []]
    config_keys = list(dict.fromkeys(k for k in keys if k not in COLUMNS and any(k in r["config"] for r in rows)))
    if args.json:
        print(json.dumps(json_safe(flat_rows(rows, config_keys)), indent=1, default=str, allow_nan=False))
    elif args.csv:
        sys.stdout.write(to_csv(flat_rows(rows, config_keys)))
    else:
        from rich.console import Console

        shown = {"name", "status", "task", "model", "dataset", "headline", "metric", "steps", "train_seconds",
                 "energy_train_j", "energy_train_kwh"}
        extra = list(dict.fromkeys(k for k in keys if k not in shown))
        if len(rows) > RICH_ROWS:
            print(plain_table(rows, extra))
        else:
            console = Console(file=sys.stdout)
            if not console.is_terminal:  # a file or a pipe: no terminal width to fit, keep rows on one line
                console = Console(file=sys.stdout, width=220)
            console.print(table(rows, extra, title=f"runs under {root}"))
        counts = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        print(f"{len(rows)} run{'' if len(rows) == 1 else 's'}" + (f" ({', '.join(f'{n} {s}' for s, n in counts.items())})" if rows else ""))
    return 0
