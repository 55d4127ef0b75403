"""Tabular classification from CSV files (dataset ``csv``), with the stdlib csv module.

``data.path`` (relative to ``data.root``, or absolute) is one CSV file with a header row, split
stratified by ``data.val_fraction`` (seed ``SPLIT_SEED`` = 0, the same every run), or a folder
holding ``train.csv`` and ``test.csv`` with the same columns (in any order). The target is
``data.target`` or else the last column; its distinct values (stripped) are the classes, sorted
(numerically when all of them are numbers, so labels 0..10 keep their order).

Every other column is an input. A column is numeric when at least half of its non-empty values
(in the train file; the whole file when there is one) parse as numbers; then an empty value, a
non-number, NaN, an infinity or a value beyond float32 range in it is an error naming the column
and the line (1-based, counting the header), or, with ``data.on_error=skip``, drops the row with a
warning that counts the dropped rows. Other columns are categorical: one-hot encoded with the
sorted categories seen in the train split (an empty value is a category of its own); a
category seen only in the test split, or at inference, encodes as all zeros.

Features, in column order: a numeric column gives one float32 feature, a categorical column one
per category. ``DatasetInfo.extra`` = {"columns", "categories", "target", "features"} is what
:func:`encode_rows` needs to encode a new row the same way. Normalization is per feature:
numeric features use the train split's mean and std (std 1 for a constant column), one-hot
features mean 0 and std 1 so that they pass unchanged.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerwise.choices import unknown_choice_error
from layerwise.data.datasets import (SPLIT_SEED, DataError, Dataset, DatasetInfo, register_dataset,
                                     stratified_split, user_path)

_F32_MAX = float(np.finfo(np.float32).max)
Rows = list[tuple[int, list[str]]]  # (1-based line number in the file, fields)


def _read(path: Path) -> tuple[list[str], Rows]:
    """Header and non-blank rows of a CSV file, each row with the line it starts on."""
    rows: Rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: drop a BOM (Excel writes one)
            reader = csv.reader(f)
            header = next(reader, None)
            start = reader.line_num + 1
            for row in reader:
                if any(v.strip() for v in row):
                    rows.append((start, row))
                start = reader.line_num + 1
    except UnicodeDecodeError as e:
        raise DataError(f"'{path}' is not UTF-8 text ({e}). Save it as UTF-8 CSV.") from None
    except csv.Error as e:
        raise DataError(f"'{path}' line {reader.line_num} is not valid CSV ({e}). Fix the quoting there.") from None
    header = [h.strip() for h in header or []]
    if not header or not rows:
        raise DataError(f"'{path}' has no {'header row' if not header else 'data rows'}. A CSV dataset needs "
                        f"a header row naming the columns, then one example per row.")
    dup = sorted({h for h in header if header.count(h) > 1})
    if "" in header or dup:
        raise DataError(f"'{path}' has {'an unnamed column' if '' in header else 'repeated column names'} in "
                        f"its header{': ' + ', '.join(dup) if dup else ''}. Give every column a unique name.")
    return header, rows


def _number(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def _problem(v: str) -> str | None:
    """Why ``v`` cannot be a numeric feature, or None if it can."""
    if not v:
        return "missing value"
    x = _number(v)
    if x is None:
        return "not a number"
    if not math.isfinite(x):
        return "NaN or infinite value"
    if abs(x) > _F32_MAX:
        return "beyond float32 range"
    return None


def _clean(path: Path, header: list[str], rows: Rows, numeric: set[str], target: str, skip: bool,
           warnings: list[str]) -> Rows:
    """Rows whose numeric fields and target are usable; a bad row raises, or is dropped under skip."""
    ti = header.index(target)
    num_i = [i for i, h in enumerate(header) if h in numeric]
    good, bad = [], []
    for line, row in rows:
        row = [v.strip() for v in row]
        if len(row) != len(header):
            why = f"has {len(row)} fields where the header has {len(header)}"
        elif not row[ti]:
            why = f"column '{target}' (the target): missing value"
        else:
            why = next((f"column '{header[i]}': {p} '{row[i]}' in a numeric column"
                        for i in num_i if (p := _problem(row[i])) is not None), None)
        if why is None:
            good.append((line, row))
        elif not skip:
            raise DataError(f"'{path}' line {line}, {why}. Fix the value, or set data.on_error=skip to drop "
                            f"such rows with a warning.")
        else:
            bad.append(f"line {line}, {why}")
    if bad:
        warnings.append(f"skipped {len(bad)} rows of '{path}' with missing, non-numeric or non-finite values "
                        f"(first: {bad[0]})")
    return good


def _encode(table: dict[str, list[str]], columns: list[str], categories: Mapping[str, Sequence[str]]
            ) -> np.ndarray:
    """Column-wise string values (already checked) -> (N, F) float32 features."""
    parts = []
    for c in columns:
        if c in categories:
            index = {v: j for j, v in enumerate(categories[c])}
            onehot = np.zeros((len(table[c]), len(index)), np.float32)
            for r, v in enumerate(table[c]):
                if v in index:  # unseen category: all zeros
                    onehot[r, index[v]] = 1.0
            parts.append(onehot)
        else:
            parts.append(np.array([float(v) for v in table[c]], np.float32)[:, None])
    return np.concatenate(parts, axis=1)


def _unseen(table: dict[str, list[str]], categories: Mapping[str, Sequence[str]], where: str) -> list[str]:
    """Warnings for categorical values that the training split never had (they encode as zeros)."""
    out = []
    for c, known in categories.items():
        known = set(known)
        new = [v for v in table.get(c, []) if v not in known]
        if new:
            out.append(f"{where}: column '{c}' has {len(new)} value(s) never seen in training (e.g. "
                       f"{new[0]!r}); they encode as all zeros, i.e. as no known category")
    return out


def encode_rows(rows: Sequence[Mapping[str, str]], extra: Mapping[str, Any]) -> np.ndarray:
    """Encode new rows ({column: value as text}) with a trained csv dataset's ``DatasetInfo.extra``
    -> (N, F) float32 raw features, exactly as training did (normalization is the model's job).
    A categorical value the training split never had encodes as zeros, with a warning."""
    import warnings as _warnings

    columns, categories = list(extra["columns"]), extra["categories"]
    table: dict[str, list[str]] = {c: [] for c in columns}
    for n, row in enumerate(rows, 1):
        for c in columns:
            if c not in row:
                raise DataError(f"row {n} has no column '{c}'; the model needs the columns "
                                f"{', '.join(columns)}.")
            v = str(row[c]).strip()
            if c not in categories and (p := _problem(v)) is not None:
                raise DataError(f"row {n}, column '{c}': {p} '{v}' in a numeric column. Give a number.")
            table[c].append(v)
    for w in _unseen(table, categories, "the rows to encode"):
        _warnings.warn(w, stacklevel=2)
    return _encode(table, columns, categories)


def _class_order(values: set[str]) -> list[str]:
    nums = {v: _number(v) for v in values}
    if all(x is not None for x in nums.values()):
        return sorted(values, key=lambda v: (nums[v], v))
    return sorted(values)


@register_dataset("csv")
def _csv(root: Path, opts: Any) -> Dataset:
    """A CSV file (or train.csv + test.csv); see the module docstring for types and encoding."""
    path = user_path(root, opts, "csv", "a CSV file with a header row, or a folder with train.csv and test.csv")
    skip, warnings = opts.on_error == "skip", []
    if path.is_dir():
        files = [path / "train.csv", path / "test.csv"]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataError(f"csv: folder '{path}' lacks {' and '.join(missing)}. Put train.csv and test.csv "
                            f"there, or point data.path at a single CSV file to split it.")
        (header, tr_rows), (te_header, te_rows) = _read(files[0]), _read(files[1])
        if set(te_header) != set(header):
            raise DataError(f"'{files[1]}' and '{files[0]}' have different columns (only in test: "
                            f"{sorted(set(te_header) - set(header))}, only in train: "
                            f"{sorted(set(header) - set(te_header))}). Give both files the same columns.")
        order = [te_header.index(h) for h in header]
        te_rows = [(ln, [r[i] for i in order] if len(r) == len(header) else r) for ln, r in te_rows]
    else:
        files = [path]
        header, tr_rows = _read(path)
        te_rows = []
    target = opts.target or header[-1]
    if target not in header:
        raise DataError(f"{unknown_choice_error('target column', target, header)} in '{files[0]}'. "
                        f"Set data.target to one of the columns (default: the last one).")
    columns = [h for h in header if h != target]
    if not columns:
        raise DataError(f"'{files[0]}' has only the target column '{target}'; add input columns.")

    # a column is numeric when at least half of its non-empty train values are numbers
    numeric = set()
    for i, c in enumerate(header):
        vals = [r[i].strip() for _, r in tr_rows if len(r) == len(header) and r[i].strip()]
        n_num = sum(_number(v) is not None for v in vals)
        if c != target and 2 * n_num >= len(vals):
            numeric.add(c)
        elif c != target and n_num:  # mostly text: one-hot, and its numbers become categories too
            warnings.append(f"'{files[0]}': column '{c}' is read as categories (one-hot), though {n_num} of its "
                            f"{len(vals)} values are numbers; a column counts as numeric when at least half "
                            f"of its values are. Clean the column if it holds numbers")
    tr_rows = _clean(files[0], header, tr_rows, numeric, target, skip, warnings)
    te_rows = _clean(files[-1], header, te_rows, numeric, target, skip, warnings)
    if len(files) == 1:  # hold out a stratified part of the one file
        y_all = [r[header.index(target)] for _, r in tr_rows]
        ids = {v: j for j, v in enumerate(sorted(set(y_all)))}
        if len(tr_rows) < 2:
            raise DataError(f"'{path}' has {len(tr_rows)} usable rows; splitting off a test set needs at "
                            f"least two.")
        tri, tei = stratified_split(np.array([ids[v] for v in y_all]), opts.val_fraction)
        tr_rows, te_rows = [tr_rows[i] for i in tri], [tr_rows[i] for i in tei]
    if not tr_rows or not te_rows:
        raise DataError(f"csv: no usable rows left in the {'train' if not tr_rows else 'test'} split of "
                        f"'{files[-1] if tr_rows else files[0]}'. Fix the rows reported above.")

    tables = [{c: [r[header.index(c)] for _, r in rows] for c in header} for rows in (tr_rows, te_rows)]
    categories = {c: sorted(set(tables[0][c])) for c in columns if c not in numeric}
    classes = _class_order(set(tables[0][target]) | set(tables[1][target]))
    label = {v: j for j, v in enumerate(classes)}
    warnings += _unseen(tables[1], categories, f"the test split of '{files[-1]}'")
    xtr, xte = (_encode(t, columns, categories) for t in tables)
    ytr, yte = (torch.tensor([label[v] for v in t[target]], dtype=torch.int64) for t in tables)

    features: list[str] = []
    for c in columns:
        features += [f"{c}={v}" for v in categories[c]] if c in categories else [c]
    is_num = np.array([c in numeric for c in columns for _ in (categories.get(c) or [None])])
    mean = np.where(is_num, xtr.astype(np.float64).mean(0), 0.0)
    std = xtr.astype(np.float64).std(0)
    std = np.where(is_num & (std > 0), std, 1.0)
    info = DatasetInfo("csv", (xtr.shape[1],), len(classes), classes, 1.0, mean.tolist(), std.tolist(),
                       extra={"columns": columns, "categories": categories, "target": target,
                              "features": features})
    split = "train.csv / test.csv" if len(files) == 2 else \
        f"stratified split val_fraction={opts.val_fraction} seed={SPLIT_SEED}"
    source = {"files": [str(f) for f in files], "split": split, "train": len(ytr), "test": len(yte)}
    return Dataset(info, torch.from_numpy(xtr), ytr, torch.from_numpy(xte), yte, source, warnings=warnings)
