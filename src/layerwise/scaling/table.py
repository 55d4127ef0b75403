"""The results table of a scaling sweep: one row per trained model, read from and written to CSV/JSONL.

A row holds at least

    params   N, the model's parameter count
    data     D, the number of training examples/tokens it saw
    compute  C, its training FLOPs (about 6 N D for a dense network, Kaplan et al. 2020, sec. 2.1)
    loss     L, its final evaluation loss

and may carry more columns (model name, learning rate, seed, ...), kept as numbers where every value
is one, else as strings. Every law in `layerwise.scaling.fit` works on log N, log D and log L, so the
four required columns must be positive and finite; a diverged run (loss nan/inf) is refused here
rather than silently bending a fit.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REQUIRED = ("params", "data", "compute", "loss")

_WHAT = ("params (parameter count N), data (training examples or tokens D), compute (training FLOPs C) "
         "and loss (final evaluation loss L)")


class ScalingError(ValueError):
    """A results table or fit request that cannot be used; the message names the problem and the fix."""


def _to_float(value: Any) -> float | None:
    """``value`` as a float, or None when it is not a number (bools and empty cells are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _cell(value: Any) -> Any:
    """An extra-column cell as a JSON-ready scalar (numpy scalars unwrapped, containers as JSON text)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value)
    return value


def columns_from_rows(rows: Sequence[Mapping[str, Any]], source: str,
                      labels: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Check ``rows`` and turn them into columns: the required ones as float64 arrays, the others as
    float64 (when every present value is a number; missing cells become nan) or str arrays.

    ``source`` names the table in messages (a path, or "rows given to write_table") and ``labels[i]``
    names row i (e.g. "row 3 (line 4)"); raises `ScalingError` on the first problem found.
    """
    labels = list(labels) if labels is not None else [f"row {i + 1}" for i in range(len(rows))]
    if not rows:
        raise ScalingError(
            f"results table {source} holds no rows. A scaling fit needs one row per trained model with "
            f"{_WHAT}; run the sweep first or point at the table it wrote.")
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    missing = [c for c in REQUIRED if c not in keys]
    if missing:
        raise ScalingError(
            f"results table {source} lacks the column(s) {', '.join(repr(c) for c in missing)}; it has "
            f"{', '.join(repr(k) for k in keys) or 'none'}. A results table needs {_WHAT}; add the "
            f"missing column(s) (compute can be estimated as 6 * params * data).")
    out: dict[str, np.ndarray] = {}
    for col in REQUIRED:
        values = np.empty(len(rows))
        for i, row in enumerate(rows):
            raw = row.get(col)
            v = _to_float(raw)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                raise ScalingError(
                    f"results table {source}, {labels[i]}, column {col!r} is empty. Every row needs "
                    f"{', '.join(REQUIRED)}; fill in the value or remove the row (an unfinished run).")
            if v is None:
                raise ScalingError(
                    f"results table {source}, {labels[i]}, column {col!r}: {raw!r} is not a number. Every "
                    f"value of {', '.join(REQUIRED)} must be a number such as 1.5e6; fix or remove that row.")
            if not (math.isfinite(v) and v > 0):
                raise ScalingError(
                    f"results table {source}, {labels[i]}, column {col!r} is {v!r}; {', '.join(REQUIRED)} "
                    f"must be positive and finite, because a scaling law is fitted to their logarithms. A "
                    f"diverged run (loss nan or inf) or an unfilled cell does not belong in a fit: remove "
                    f"the row or rerun that model.")
            values[i] = v
        out[col] = values
    for col in keys:
        if col in REQUIRED:
            continue
        cells = [_cell(row.get(col)) for row in rows]
        nums = [_to_float(c) for c in cells]
        if all(n is not None or c is None or c == "" for n, c in zip(nums, cells)):
            out[col] = np.array([math.nan if n is None else n for n in nums])
        else:
            out[col] = np.array(["" if c is None else str(c) for c in cells])
    return out


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """Read a results table (``.csv`` with a header line, or ``.jsonl`` with one JSON object a line).

    Returns ``{column: array}`` with ``params``, ``data``, ``compute``, ``loss`` as float64 arrays
    (checked positive and finite) and any other column as float64 or str. Raises `ScalingError`
    for a missing file, an unknown suffix, a missing column or a bad value (naming row and column).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ScalingError(
            f"results table '{path}' has the suffix {suffix or '(none)'!r}; read_table reads .csv (a header "
            f"line, then one row per model) and .jsonl (one JSON object per line). Rename or convert it.")
    if not path.is_file():
        raise ScalingError(
            f"results table '{path}' does not exist. Give the path of a table written by the scaling sweep "
            f"(or by write_table): a .csv or .jsonl file with one row per trained model and the columns "
            f"{', '.join(REQUIRED)}.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ScalingError(f"results table '{path}' is not UTF-8 text ({e.reason} at byte {e.start}); it is not a "
                           f"table the sweep wrote. Give the results.csv or results.jsonl of a sweep.") from None
    rows: list[dict[str, Any]] = []
    labels: list[str] = []
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        for row in reader:
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue  # blank line
            if None in row:  # more cells than header names
                raise ScalingError(
                    f"results table '{path}', line {reader.line_num} has more cells than the header has "
                    f"names ({', '.join(reader.fieldnames or [])}); remove the extra cells or name them.")
            rows.append(dict(row))
            labels.append(f"row {len(rows)} (line {reader.line_num})")
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ScalingError(
                    f"results table '{path}', line {n} is not valid JSON ({e.msg} at column {e.colno}); a "
                    f".jsonl table holds one JSON object per line. Fix or remove that line.") from None
            if not isinstance(obj, dict):
                raise ScalingError(
                    f"results table '{path}', line {n} holds a JSON {type(obj).__name__}, not an object; "
                    f"write each row as {{\"params\": ..., \"data\": ..., \"compute\": ..., \"loss\": ...}}.")
            rows.append(obj)
            labels.append(f"row {len(rows)} (line {n})")
    return columns_from_rows(rows, f"'{path}'", labels)


def _atomic_write_text(path: Path, text: str) -> None:
    """Readers see the old file or the whole new one, never a part (temp file + rename)."""
    # train.checkpoint.atomic_write does the same with fsync, but importing train (and torch) from
    # this pure-NumPy module would break the layering in DESIGN.md; a shared util would serve both.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    return str(value)


def write_table(rows: Sequence[Mapping[str, Any]], csv_path: str | Path, jsonl_path: str | Path) -> None:
    """Write ``rows`` (one dict per model) as CSV and as JSONL, after the checks `read_table` makes.

    Columns are the required ones first, then the others in first-seen order; floats are written with
    their shortest exact text, so ``read_table`` gives back the same numbers.
    """
    columns_from_rows(rows, "(rows given to write_table)")
    keys = list(REQUIRED)
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    clean = [{k: _cell(row[k]) for k in keys if k in row} for row in rows]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(keys)
    for row in clean:
        writer.writerow([_csv_text(row.get(k)) for k in keys])
    _atomic_write_text(Path(csv_path), buf.getvalue())
    _atomic_write_text(Path(jsonl_path), "".join(json.dumps(row) + "\n" for row in clean))
