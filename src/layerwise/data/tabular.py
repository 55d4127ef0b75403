"""Tables: CSV files as users' files really are (dataset ``csv``), read with pandas, and the
built-in tables of scikit-learn (``breast-cancer``, ``diabetes``).

``data.path`` (relative to ``data.root``, or absolute) is one CSV file with a header row, from which
a test part is held out (``data.val_fraction``, or fold ``data.fold`` of ``data.folds``; stratified
for classes, seed 0, the same every run), or a folder holding ``train.csv`` and ``test.csv`` with
the same columns (in any order). The rules:

- **Reading.** UTF-8 (a byte-order mark is dropped); the delimiter is sniffed among ``,`` ``;``
  tab and ``|`` from the first 64 KiB, or set with ``data.delimiter``; blank lines are skipped;
  a row with more fields than the header is an error naming its line (``data.on_error=skip``
  drops such rows with a warning). Lines are counted as in the file, header = line 1.
- **The target.** ``data.target`` names one or more columns (default: the last column). A class
  label is read as text, so a class named ``NA``, ``None`` or ``null`` stays a class; an empty
  target cell is an error naming its line (or the row is dropped under ``data.on_error=skip``).
  ``data.task`` = ``auto`` decides, and prints what it chose and why: ``multilabel`` when
  ``data.label_sep`` splits the label cells (``"a|b"``) or several target columns hold only 0/1;
  ``regress`` when every target cell is a number and they are not a few integer codes (more than
  20 distinct values, or a fraction among them); else ``classify``.
- **Inputs.** Every other column. It is numeric when at least half of its non-missing training
  values are numbers; a text cell in a numeric column is an error naming the column and the line.
  Numeric features are standardized by the model's input normalization (the training split's
  mean and std); other columns are one-hot encoded with the categories of the training split (a
  category the training split lacks encodes as zeros, with a warning).
- **Transforms.** ``data.log_columns`` feeds the named numeric columns as log(1 + x) (skewed
  counts and sizes), before the medians and statistics are taken.
- **Missing values** (an empty cell, or NA, N/A, NaN, null, None in a numeric column):
  ``data.missing=error`` (default) names the column, the line and the fix; ``impute`` replaces a
  number with the training split's median and adds a 0/1 ``<column>_missing`` feature (for the
  columns with missing values in the training split, scikit-learn's SimpleImputer with
  add_indicator), and makes an empty text cell a category of its own. Medians, categories and
  indicators come from the training split only and are saved with the model, so `predict` on
  new rows encodes them the same way (:func:`encode_rows`).

``DatasetInfo.extra["table"]`` holds that encoding; ``DatasetInfo.classes`` the class names (or
the label names, or the target columns for regression).
"""

from __future__ import annotations

import csv
import re
import warnings as _warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerwise.choices import unknown_choice_error
from layerwise.data.datasets import DataError, Dataset, DatasetInfo, holdout_split, register_dataset, user_path

__all__ = ["NA_TOKENS", "class_order", "encode_rows", "read_table", "read_text_table", "targets_from_labels"]

# pandas' default missing-value words (a subset): in a numeric column they mean "missing"; in a
# label or text column they are text like any other
NA_TOKENS = ["", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "#N/A", "-NaN", "-nan", "<NA>"]
_F32_MAX = float(np.finfo(np.float32).max)
_DELIMITERS = {",": ",", ";": ";", "\t": "\t", "tab": "\t", "|": "|"}
TASK_CHOICES = ("auto", "classify", "multilabel", "regress")
MISSING_CATEGORY = "<missing>"


# ---------------------------------------------------------------------------------------- reading
def _delimiter(path: Path, opts: Any) -> str:
    asked = getattr(opts, "delimiter", "") or ""
    if asked:
        if asked not in _DELIMITERS:
            raise DataError(f"data.delimiter={asked!r}; use one of , ; | or tab.")
        return _DELIMITERS[asked]
    with open(path, "rb") as f:
        sample = f.read(1 << 16).decode("utf-8-sig", errors="replace")
    if path.suffix.lower() == ".tsv":
        return "\t"
    try:
        return csv.Sniffer().sniff(sample.split("\n", 50)[0] if sample.count("\n") < 2 else sample,
                                   delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _header(path: Path, sep: str) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            row = next(csv.reader(f, delimiter=sep), [])
    except UnicodeDecodeError as e:
        raise DataError(f"'{path}' is not UTF-8 text ({e}). Save it as UTF-8 CSV.") from None
    header = [h.strip() for h in row]
    if not header:
        raise DataError(f"'{path}' has no header row. A CSV dataset needs a header row naming the columns, "
                        f"then one example per row.")
    dup = sorted({h for h in header if header.count(h) > 1})
    if "" in header or dup:
        raise DataError(f"'{path}' has {'an unnamed column' if '' in header else 'repeated column names'} in "
                        f"its header{': ' + ', '.join(dup) if dup else ''}. Give every column a unique name.")
    return header


def _scan(path: Path, sep: str, width: int) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray]:
    """(the line each record after the header starts on, [(line, fields)] of the records whose
    field count is not the header's, which records are blank). A file without quotes is counted
    with numpy over its bytes (a record is a line); otherwise by the csv module, which counts
    lines as a person does, quoted line breaks included."""
    data = path.read_bytes()
    if b'"' not in data and sep != " ":
        data.decode("utf-8-sig")  # UnicodeDecodeError for a file that is not UTF-8, as the csv module
        buf = np.frombuffer(data, np.uint8)
        ends = np.flatnonzero(buf == ord("\n"))
        if not len(ends) or ends[-1] != len(buf) - 1:
            ends = np.append(ends, len(buf))  # a last line without a line break
        starts = np.concatenate([[0], ends[:-1] + 1])
        seps = np.flatnonzero(buf == ord(sep))  # the delimiters' positions: fields per line by searchsorted
        count = np.searchsorted(seps, ends) - np.searchsorted(seps, starts)
        blank = np.zeros(len(ends), bool)
        for i in np.flatnonzero(count == 0):  # a line without a delimiter: blank if only spaces
            blank[i] = not data[starts[i]:ends[i]].strip()
        fields = count + 1
        lines = np.arange(1, len(ends) + 1)
        rec = slice(1, None)  # after the header
        bad_rows = np.flatnonzero(~blank[rec] & (fields[rec] != width))
        bad = [(int(lines[rec][i]), int(fields[rec][i])) for i in bad_rows]
        return lines[rec].astype(np.int64), bad, blank[rec]
    lines, bad, blank = [], [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=sep, skipinitialspace=True)
        next(reader, None)
        start = reader.line_num + 1
        for row in reader:
            empty = not any(v.strip() for v in row)
            if not empty and len(row) != width:
                bad.append((start, len(row)))
            lines.append(start)
            blank.append(empty)
            start = reader.line_num + 1
    return np.array(lines, np.int64), bad, np.array(blank, bool)


@dataclass
class Table:
    """A CSV file read: its rows (``df``, a pandas DataFrame), the line each row starts on in the
    file (header = line 1), and warnings about rows dropped under data.on_error=skip."""

    df: Any
    lines: np.ndarray
    warnings: list[str]
    path: Path


def read_table(path: Path, opts: Any, text_columns: Sequence[str] = ()) -> Table:
    """A CSV file as a :class:`Table`.

    Columns named in ``text_columns`` (targets, text) are read as text exactly as written; others
    are parsed by pandas with only the empty cell as missing (a missing-value word such as NA is
    missing in a numeric column, :func:`_numbers`, and a category in a text column). A row
    with more or fewer fields than the header is an error naming its line (dropped with a warning
    under data.on_error=skip, in ``df.attrs["warnings"]``). Raises DataError naming the file (and
    line) for what cannot be read."""
    import pandas as pd

    sep = _delimiter(path, opts)
    header = _header(path, sep)
    text = set(text_columns) & set(header)
    skip = getattr(opts, "on_error", "refuse") == "skip"
    try:
        lines, bad, blank = _scan(path, sep, len(header))
    except UnicodeDecodeError as e:
        raise DataError(f"'{path}' is not UTF-8 text ({e}). Save it as UTF-8 CSV.") from None
    except csv.Error as e:
        raise DataError(f"'{path}' is not a well-formed CSV file ({e}). Fix the quoting there.") from None
    notes = []
    if bad and not skip:
        line, n = bad[0]
        skip_hint = ", or set data.on_error=skip to drop such rows with a warning" if getattr(opts, "skip_hint", True) \
            else ""
        raise DataError(f"'{path}' line {line} has {n} fields where the header has {len(header)} "
                        f"({len(bad)} such row(s)). Fix that row (a field with the delimiter inside needs "
                        f"quotes){skip_hint}.")
    if bad:
        notes.append(f"skipped {len(bad)} rows of '{path}' whose field count is not the header's "
                     f"(first: line {bad[0][0]}, {bad[0][1]} fields)")
    try:
        df = pd.read_csv(path, sep=sep, encoding="utf-8-sig", skip_blank_lines=False, keep_default_na=False,
                         na_values={c: [""] for c in header if c not in text},
                         dtype={c: str for c in text}, skipinitialspace=True,
                         decimal=getattr(opts, "decimal", ".") or ".", thousands=getattr(opts, "thousands", "") or None,
                         skiprows=[line - 1 for line, _ in bad] or None)
    except (pd.errors.ParserError, ValueError) as e:
        msg = " ".join(str(e).split())
        raise DataError(f"'{path}' is not a well-formed CSV file ({msg}). Fix that row, or set "
                        f"data.on_error=skip to drop such rows.") from None
    df.columns = [str(c).strip() for c in df.columns]
    bad_lines = {line for line, _ in bad}
    keep = np.array([ln not in bad_lines for ln in lines], bool)
    lines, blank = lines[keep], blank[keep]
    if len(lines) != len(df):  # pandas and the csv module disagree on the records: trust pandas' order
        lines = np.arange(2, len(df) + 2)
        blank = df.isna().all(axis=1).to_numpy()
    df = df[~blank].reset_index(drop=True)
    if not len(df):
        raise DataError(f"'{path}' has no data rows. A CSV dataset needs a header row naming the columns, then "
                        f"one example per row.")
    return Table(df, lines[~blank], notes, Path(path))


def class_order(values: set[str]) -> list[str]:
    """Class names sorted: numerically when every one is a number (labels 2, 10 keep that order)."""
    def num(v: str) -> float | None:
        try:
            return float(v)
        except ValueError:
            return None
    nums = {v: num(v) for v in values}
    if all(x is not None for x in nums.values()):
        return sorted(values, key=lambda v: (nums[v], v))
    return sorted(values)


def targets_from_labels(train: Sequence[str], test: Sequence[str], opts: Any, what: str, strict: bool = False
                        ) -> tuple[tuple[torch.Tensor, torch.Tensor], list[str], str]:
    """Class labels as text -> ((y_train, y_test), class names, task). ``data.label_sep`` splits
    each cell into several labels (multilabel: y (N, L) float 0/1), else one class per example
    (y (N,) int64). ``strict``: a label the training part lacks is an error naming it (given
    train/test files); otherwise the classes of both parts are known."""
    sep = getattr(opts, "label_sep", "") or ""
    task = getattr(opts, "task", "auto")
    if task == "regress":
        raise DataError(f"data.task=regress needs numeric targets; {what} are text. Use data.task=classify, or "
                        f"point data.target at a numeric column.")
    if sep or task == "multilabel":
        if not sep:
            raise DataError(f"data.task=multilabel on {what} needs data.label_sep (the character that separates "
                            f"an example's labels, e.g. '|'), or several 0/1 target columns.")
        split = [[lab.strip() for lab in str(v).split(sep) if lab.strip()] for v in (*train, *test)]
        seen = {lab for labs in split[:len(train)] for lab in labs}
        names = class_order(seen if strict else {lab for labs in split for lab in labs})
        unknown = sorted({lab for labs in split[len(train):] for lab in labs} - set(names))
        if unknown:
            raise DataError(f"{what}: the label(s) {', '.join(map(repr, unknown[:5]))} occur only in the test part, so "
                            f"the model could never learn them. Add training examples with them, or remove them.")
        index = {n: j for j, n in enumerate(names)}
        y = torch.zeros(len(split), len(names))
        for i, labs in enumerate(split):
            for lab in labs:
                y[i, index[lab]] = 1.0
        return (y[:len(train)], y[len(train):]), names, "multilabel"
    classes = class_order(set(train) if strict else set(train) | set(test))
    unknown = sorted(set(test) - set(classes))
    if unknown:
        raise DataError(f"{what}: the label(s) {', '.join(map(repr, unknown[:5]))} occur only in the test part, so the "
                        f"model could never predict them. Add training examples with them, or remove those rows.")
    index = {c: j for j, c in enumerate(classes)}
    ytr = torch.tensor([index[v] for v in train], dtype=torch.int64)
    yte = torch.tensor([index[v] for v in test], dtype=torch.int64)
    return (ytr, yte), classes, "classify"


def read_text_table(path: Path, opts: Any, warnings: list[str] | None = None
                    ) -> tuple[list[str], list[str], str]:
    """A CSV of texts with labels -> (texts, labels, which columns were read) for
    ``text-classes``: the text column is ``data.text_column`` or the one with the longest values;
    the label column ``data.target`` (one column) or the last other column, as for csv files. An
    empty text, or an empty label (unless data.label_sep makes it an example with no label), is
    an error naming its line, or the row is dropped with a warning under data.on_error=skip."""
    sep = _delimiter(path, opts)
    header = _header(path, sep)
    table = read_table(path, opts, text_columns=header)
    df = table.df
    col = getattr(opts, "text_column", "") or max(header, key=lambda c: df[c].astype(str).str.len().mean())
    targets = list(getattr(opts, "target", []) or [])
    if len(targets) > 1:
        raise DataError(f"text-classes reads one label column; data.target names {len(targets)} "
                        f"({', '.join(targets)}). Name one (a cell may hold several labels with data.label_sep).")
    label = targets[0] if targets else next((c for c in reversed(header) if c != col), None)
    for name, key in ((col, "data.text_column"), (label, "data.target")):
        if name not in header:
            raise DataError(f"{unknown_choice_error(f'{key} column', name, header)} in '{path}'.")
    if label == col:
        raise DataError(f"'{path}': the text and the label are the same column '{col}'. Set data.text_column and "
                        f"data.target to two different columns.")
    texts, labels = _text_cells(df[col]), _text_cells(df[label])
    label_sets = bool(getattr(opts, "label_sep", ""))
    bad = (texts == "") | ((labels == "") & (not label_sets))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = f"column '{col}' (the text)" if texts[i] == "" else f"column '{label}' (the label)"
        if getattr(opts, "on_error", "refuse") != "skip":
            raise DataError(f"'{path}' line {table.lines[i]}: {what} is empty. Give every example a text and a "
                            f"label, or set data.on_error=skip to drop such rows with a warning.")
        if warnings is not None:
            warnings.append(f"skipped {int(bad.sum())} rows of '{path}' with an empty text or label (first: line "
                            f"{table.lines[i]})")
    keep = ~bad
    return texts[keep].tolist(), labels[keep].tolist(), f"text from column '{col}', labels from column '{label}'"


# ---------------------------------------------------------------------------------------- columns
def _text_cells(s: Any) -> np.ndarray:
    """A column as stripped text, object array, "" for an empty cell; stripped once per distinct
    value (pandas.factorize), not per row."""
    import pandas as pd

    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    table = np.array([str(u).strip() for u in uniques] + [""], dtype=object)
    return table[codes]  # code -1 (missing) picks the trailing ""


def _is_number(values: Any) -> np.ndarray:
    """(N,) bool: which values parse as numbers."""
    import pandas as pd

    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").notna().to_numpy()


# numbers as people write them that a plain parser reads as text: 1,234  1.234,5  0,5  8%  0x1f
_WRITTEN_NUMBER = re.compile(r"^[+-]?(\d{1,3}([,.' _]\d{3})+([.,]\d+)?|\d+,\d+|\d+(\.\d+)?%|0x[0-9a-fA-F]+)$")


def _numeric_columns(df: Any, columns: list[str], warnings: list[str], path: str) -> list[str]:
    """The columns that are numeric: a parsed numeric dtype, or text whose non-missing values are
    at least half numbers (its text cells are then errors, reported by the caller). A text column
    whose values look like numbers written with separators, percent signs or in hex is named in
    a warning (with data.decimal / data.thousands as the fix), since one-hot encoding them loses
    their order."""
    import pandas as pd

    numeric = []
    for c in columns:
        s = df[c]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            numeric.append(c)
            continue
        counts = pd.Series(_text_cells(s)).value_counts()  # distinct values and how often
        counts = counts[~counts.index.isin(NA_TOKENS)]
        vals = counts.index
        n_num = int(counts[_is_number(vals)].sum()) if len(vals) else 0
        n_all = int(counts.sum())
        n_written = int(counts[np.array([bool(_WRITTEN_NUMBER.match(str(v))) for v in vals], bool)].sum()) \
            if len(vals) else 0
        if n_all and 2 * n_num >= n_all:
            numeric.append(c)
        elif n_all and 2 * (n_num + n_written) >= n_all:
            example = next(str(v) for v in vals if _WRITTEN_NUMBER.match(str(v)))
            warnings.append(f"'{path}': column '{c}' holds numbers written with separators, a percent sign or in hex "
                            f"(e.g. {example!r}), which are read as text, one category per value. Set "
                            f"data.decimal=, and/or data.thousands=, (or .) to read them as numbers, or clean the "
                            f"column")
        elif n_num:
            warnings.append(f"'{path}': column '{c}' is read as categories (one-hot), though {n_num} of its "
                            f"{n_all} values are numbers; a column counts as numeric when at least half of "
                            f"its values are. Clean the column if it holds numbers")
    return numeric


def _numbers(df: Any, c: str, at: Callable[[int], str], skip: bool, bad: np.ndarray,
             fix: str = "Fix the value, or set data.on_error=skip to drop such rows with a warning.") -> np.ndarray:
    """Column ``c`` as float64 (NaN = missing); a text cell, an infinity or a value beyond float32
    is an error naming the place (``at(row)``: the file and line) or, under skip, marks the row in
    ``bad``."""
    import pandas as pd

    s = df[c]
    raw = s.astype(str).str.strip() if not pd.api.types.is_numeric_dtype(s) else None
    x = pd.to_numeric(s if raw is None else raw.where(~raw.isin(NA_TOKENS)), errors="coerce").to_numpy(np.float64)
    problem = np.zeros(len(x), bool)
    if raw is not None:
        problem |= np.isnan(x) & ~(s.isna().to_numpy() | raw.isin(NA_TOKENS).to_numpy())
    problem |= np.isinf(x) | (np.abs(np.nan_to_num(x)) > _F32_MAX)
    if problem.any():
        if not skip:
            i = int(np.flatnonzero(problem)[0])
            cell = s.iloc[i]
            why = ("an infinite value" if np.isinf(x[i]) else "a value beyond float32 range"
                   if np.isfinite(x[i]) else "a text cell")
            raise DataError(f"{at(i)}, column '{c}': {why} {str(cell)!r} in a numeric column. {fix}")
        bad |= problem
    return x


# ---------------------------------------------------------------------------------------- encoding
def _check_missing(values: Mapping[str, np.ndarray], numeric: list[str], at: Callable[[int], str]) -> None:
    """data.missing=error: the first missing value of any row, named by its file, line and column."""
    for c, v in values.items():
        gap = np.isnan(v) if c in numeric else v == ""
        if gap.any():
            i = int(np.flatnonzero(gap)[0])
            fix = (f"the training median plus a 0/1 '{c}_missing' feature" if c in numeric
                   else "an empty cell becomes a category of its own")
            raise DataError(f"{at(i)}, column '{c}': missing value ({int(gap.sum())} in this column). Fill it in, "
                            f"set data.missing=impute ({fix}), or data.on_error=skip to drop such rows.")


def _fit_encoding(tr: dict[str, np.ndarray], columns: list[str], numeric: list[str], missing: str) -> dict[str, Any]:
    """The encoding of the input columns, fitted on the training split only: medians and 0/1
    indicators for the numeric columns with missing values, categories for the others."""
    medians, indicators, categories = {}, [], {}
    for c in columns:
        v = tr[c]
        if c in numeric:
            gap = np.isnan(v)
            if gap.any():
                indicators.append(c)
            medians[c] = float(np.nanmedian(v)) if (~gap).any() else 0.0
        else:
            categories[c] = sorted({MISSING_CATEGORY if x == "" else x for x in v.tolist()})
    features = []
    for c in columns:
        features += [f"{c}={v}" for v in categories[c]] if c in categories else [c]
    features += [f"{c}_missing" for c in indicators]
    return {"columns": columns, "numeric": numeric, "medians": medians, "indicators": indicators,
            "categories": categories, "features": features, "missing": missing}


def _encode(table: Mapping[str, np.ndarray], enc: Mapping[str, Any], where: str, warn) -> np.ndarray:
    """Column arrays (numbers as float64 with NaN, text as str) -> (N, F) float32 raw features."""
    parts, n = [], len(next(iter(table.values())))
    for c in enc["columns"]:
        v = table[c]
        if c in enc["numeric"]:
            gap = np.isnan(v)
            if gap.any() and enc["missing"] != "impute":
                raise DataError(f"{where}: column '{c}' has a missing value (row {int(np.flatnonzero(gap)[0]) + 1}); "
                                f"the model was trained with data.missing=error. Fill it in.")
            parts.append(np.where(gap, enc["medians"][c], v).astype(np.float32)[:, None])
        else:
            import pandas as pd

            cats = enc["categories"][c]
            v = np.where(v == "", MISSING_CATEGORY, v)
            codes = pd.Index(cats).get_indexer(v).astype(np.int64)  # -1: not a training category
            unseen = codes < 0
            if unseen.any():
                warn(f"{where}: column '{c}' has {int(unseen.sum())} value(s) never seen in training (e.g. "
                     f"{v[np.flatnonzero(unseen)[0]]!r}); they encode as all zeros, i.e. as no known category")
            onehot = np.zeros((n, len(cats)), np.float32)
            onehot[np.flatnonzero(~unseen), codes[~unseen]] = 1.0
            parts.append(onehot)
    for c in enc["indicators"]:
        parts.append(np.isnan(table[c]).astype(np.float32)[:, None])
    return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0), np.float32)


def encode_rows(rows: Any, extra: Mapping[str, Any], where: str = "the rows to encode",
                lines: Sequence[int] | None = None) -> np.ndarray:
    """Encode new rows with a trained table's ``DatasetInfo.extra`` -> (N, F) float32 raw features,
    exactly as training did (normalization is the model's job). ``rows`` is a DataFrame or a list
    of {column: value} mappings; ``where`` names them in messages (a file), ``lines`` their lines
    there. A missing column is a DataError naming it; a category the training split never had
    encodes as zeros, with a warning."""
    import pandas as pd

    enc = extra.get("table", extra)
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame([dict(r) for r in rows])
    missing = [c for c in enc["columns"] if c not in df.columns]
    if missing:
        raise DataError(f"{where} lack(s) the column(s) {', '.join(missing)}; the model needs the columns "
                        f"{', '.join(enc['columns'])}.")
    table, bad = {}, np.zeros(len(df), bool)

    def at(i: int) -> str:
        return f"{where}, line {lines[i]}" if lines is not None else f"{where}, row {i + 1}"
    for c in enc["columns"]:
        if c in enc["numeric"]:
            table[c] = _numbers(df, c, at, False, bad, fix="Fix the value.")
            if c in enc.get("log", []):
                if (table[c] <= -1).any():
                    raise DataError(f"{where}: column '{c}' holds a value <= -1, which has no log(1 + x) "
                                    f"(the model was trained on log(1 + {c})). Fix the value.")
                table[c] = np.log1p(table[c])
        else:
            table[c] = _text_cells(df[c])
    return _encode(table, enc, where, lambda m: _warnings.warn(m, stacklevel=3))


# ---------------------------------------------------------------------------------------- the dataset
def _choose_task(df: Any, targets: list[str], opts: Any, path: str) -> tuple[str, str]:
    """(task, why) for the target columns; data.task other than auto is taken as it is."""
    asked = getattr(opts, "task", "auto")
    if asked not in TASK_CHOICES:
        raise DataError(f"data.task={asked!r}; use one of {', '.join(TASK_CHOICES)}.")
    dup = sorted({t for t in targets if targets.count(t) > 1})
    if dup:
        from layerwise.config import ConfigError
        raise ConfigError(f"data.target names the column(s) {', '.join(dup)} twice; name each target column once.")
    import pandas as pd

    sep = getattr(opts, "label_sep", "") or ""
    if sep:
        if asked not in ("auto", "multilabel"):
            return asked, "data.task"
        cells = pd.Series(_text_cells(df[targets[0]]))
        if not cells.str.contains(sep, regex=False).any():
            raise DataError(f"data.label_sep={sep!r} occurs in no cell of the target column '{targets[0]}' of "
                            f"'{path}', so every example would have one label. Check the separator, or leave "
                            f"data.label_sep empty for one class per example.")
        return "multilabel", f"data.label_sep={sep!r} splits the labels"
    cells = {c: pd.Series(_text_cells(df[c])) for c in targets}
    uniq = {c: pd.unique(cells[c][cells[c] != ""]) for c in targets}  # decide on the distinct values
    all_numeric = all(_is_number(uniq[c]).all() for c in targets)
    if asked == "multilabel" and not all(set(uniq[c]) <= {"0", "1", "0.0", "1.0"} for c in targets):
        raise DataError(f"data.task=multilabel reads target columns of 0 and 1 (one per label), or one label column "
                        f"split by data.label_sep; the target column(s) {', '.join(targets)} of '{path}' hold other "
                        f"values. Set data.label_sep, or another data.task.")
    if asked != "auto":
        return asked, "data.task"
    if len(targets) > 1:
        binary = all(set(uniq[c]) <= {"0", "1", "0.0", "1.0"} for c in targets)
        if binary:
            return "multilabel", f"the {len(targets)} target columns hold only 0 and 1"
        if all_numeric:
            return "regress", f"the {len(targets)} target columns are numbers"
        raise DataError(f"'{path}': several target columns ({', '.join(targets)}) are used together for 0/1 labels "
                        f"(multilabel) or numbers (regression); these hold text. Name one column in data.target.")
    c = targets[0]
    if not all_numeric:
        return "classify", f"target '{c}' holds text"
    values = np.array([float(v) for v in uniq[c]])
    distinct = len(uniq[c])  # distinct as written: 2**60 + i are 40 values, not one float
    if (values != np.round(values)).any():
        return "regress", f"target '{c}' holds fractional numbers"
    if distinct > 20:
        return "regress", f"target '{c}' holds {distinct} distinct integers (more than 20)"
    return "classify", f"target '{c}' holds {distinct} distinct integer codes (20 or fewer: classes)"


@register_dataset("csv")
def _csv(root: Path, opts: Any) -> Dataset:
    """A CSV file (or train.csv + test.csv); see the module docstring for the rules."""
    path = user_path(root, opts, "csv", "a CSV file with a header row, or a folder with train.csv and test.csv")
    skip, warnings = getattr(opts, "on_error", "refuse") == "skip", []
    missing = getattr(opts, "missing", "error")
    if missing not in ("error", "impute"):
        raise DataError(f"data.missing={missing!r}; use error or impute.")
    files = [path / "train.csv", path / "test.csv"] if path.is_dir() else [path]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise DataError(f"csv: folder '{path}' lacks {' and '.join(absent)}. Put train.csv and test.csv there, or "
                        f"point data.path at a single CSV file to split it.")
    header = _header(files[0], _delimiter(files[0], opts))
    targets = list(getattr(opts, "target", []) or []) or [header[-1]]
    for t in targets:
        if t not in header:
            raise DataError(f"{unknown_choice_error('target column', t, header)} in '{files[0]}'. Set data.target to "
                            f"one of the columns (default: the last one).")
    tables = [read_table(f, opts, text_columns=targets) for f in files]
    frames = [t.df for t in tables]
    for t in tables:
        warnings += t.warnings
    if len(frames) == 2 and set(frames[1].columns) != set(frames[0].columns):
        a, b = set(frames[0].columns), set(frames[1].columns)
        raise DataError(f"'{files[1]}' and '{files[0]}' have different columns (only in test: {sorted(b - a)}, only in "
                        f"train: {sorted(a - b)}). Give both files the same columns.")
    import pandas as pd

    df = pd.concat(frames, ignore_index=True) if len(frames) == 2 else frames[0]
    lines = np.concatenate([t.lines for t in tables])
    part = np.concatenate([np.full(len(f), k) for k, f in enumerate(frames)])  # 0 train file, 1 test file
    def at(i: int) -> str:  # row i's place in the files, for messages
        return f"'{files[part[i]]}' line {lines[i]}"

    columns = [c for c in header if c not in targets]
    if not columns:
        raise DataError(f"'{files[0]}' has only the target column(s) {', '.join(targets)}; add input columns.")
    task, why = _choose_task(df, targets, opts, str(files[0]))
    if task == "classify" and len(targets) > 1:
        raise DataError(f"data.task=classify reads one label column; data.target names {len(targets)} "
                        f"({', '.join(targets)}). Name one, or use data.task=multilabel (0/1 columns) or regress.")

    # rows: a bad numeric cell or a missing target is an error, or drops the row under skip
    bad = np.zeros(len(df), bool)
    numeric = _numeric_columns(df.iloc[np.flatnonzero(part == 0)], columns, warnings, str(files[0]))
    values = {c: _numbers(df, c, at, skip, bad) if c in numeric else
              _text_cells(df[c]) for c in columns}
    cells = {t: _text_cells(df[t]) for t in targets}
    label_sets = task == "multilabel" and bool(getattr(opts, "label_sep", ""))
    for t in [] if label_sets else targets:  # an empty label set is an example with no label, not a gap
        empty = cells[t] == ""
        if empty.any() and not skip:
            i = int(np.flatnonzero(empty)[0])
            raise DataError(f"{at(i)}, column '{t}' (the target): missing value. Fill it in, "
                            f"or set data.on_error=skip to drop rows without a target.")
        bad |= empty
    if task == "regress":
        for t in targets:
            distinct = pd.unique(cells[t])
            good = set(distinct[_is_number(distinct) | (distinct == "")])
            num = pd.Series(cells[t]).isin(good).to_numpy()
            if not num.all():
                i = int(np.flatnonzero(~num)[0])
                raise DataError(f"{at(i)}, column '{t}' (the target): {cells[t][i]!r} is not "
                                f"a number, and data.task=regress. Fix the value or use data.task=classify.")
            y = np.where(cells[t] == "", "nan", cells[t]).astype(np.float64)
            wild = ~np.isnan(y) & ~(np.abs(y) <= _F32_MAX)  # an infinity, or beyond float32
            if wild.any() and not skip:
                i = int(np.flatnonzero(wild)[0])
                raise DataError(f"{at(i)}, column '{t}' (the target): {cells[t][i]!r} is not a finite float32 number. "
                                f"Fix the value, or set data.on_error=skip to drop such rows with a warning.")
            bad |= wild
    if missing == "error":  # missing inputs: an error naming the first, or rows dropped under skip
        for c, v in values.items():
            gap = np.isnan(v) if c in numeric else v == ""
            bad |= gap if skip else False
        if not skip:
            _check_missing(values, numeric, at)
    if bad.any():
        warnings.append(f"skipped {int(bad.sum())} rows of '{path}' with a missing value, a missing target or a "
                        f"bad number (first: {at(int(np.flatnonzero(bad)[0]))})")
        keep = ~bad
        values = {c: v[keep] for c, v in values.items()}
        cells = {t: v[keep] for t, v in cells.items()}
        lines, part = lines[keep], part[keep]

    # the split: the given files, or a held-out part of the one file
    if len(files) == 2:
        tr, te, how = np.flatnonzero(part == 0), np.flatnonzero(part == 1), "train.csv / test.csv"
    else:
        strata = None
        if task == "classify":
            strata = pd.factorize(cells[targets[0]], sort=True)[0]
        if len(lines) < 2:
            raise DataError(f"'{path}' has {len(lines)} usable rows; splitting off a test set needs at least two.")
        tr, te, how = holdout_split(strata, opts, len(lines))
    if not len(tr) or not len(te):
        if len(files) == 1 and task == "classify":  # the stratified split keeps a class of one example in train
            n_cls = len(set(cells[targets[0]].tolist()))
            raise DataError(f"'{path}': the target column '{targets[0]}' holds {n_cls} classes in {len(lines)} rows, "
                            f"too few examples per class to hold any out for testing. If it holds numbers (a "
                            f"price, a measurement), use data.task=regress (and data.decimal / data.thousands for "
                            f"numbers written like 0,5 or 1,234); else give each class more examples.")
        raise DataError(f"csv: no usable rows left in the {'train' if not len(tr) else 'test'} part of '{path}' "
                        f"(rows dropped: see the warnings above). Fix those rows.")

    # targets
    if task == "regress":
        y = np.stack([cells[t].astype(np.float64) for t in targets], 1).astype(np.float32)
        ytr, yte = torch.from_numpy(y[tr]), torch.from_numpy(y[te])
        classes = list(targets)
    elif task == "multilabel" and not getattr(opts, "label_sep", ""):
        y = np.stack([cells[t].astype(np.float64) for t in targets], 1).astype(np.float32)
        ytr, yte = torch.from_numpy(y[tr]), torch.from_numpy(y[te])
        classes = list(targets)
    else:
        if len(targets) > 1:
            raise DataError(f"data.task={task} reads one label column; data.target names {len(targets)}.")
        labels = cells[targets[0]]
        (ytr, yte), classes, task = targets_from_labels(labels[tr].tolist(), labels[te].tolist(), opts,
                                                        f"the target column '{targets[0]}' of '{path}'",
                                                        strict=len(files) == 2)
        if len(classes) < 2:
            raise DataError(f"'{path}': the target column '{targets[0]}' holds one class ({classes[0]!r}) in every "
                            f"row: there is nothing to tell apart. Check data.target.")

    logs = list(getattr(opts, "log_columns", []) or [])
    for c in logs:
        if c not in numeric:
            raise DataError(f"data.log_columns names '{c}', which is not a numeric input column of '{path}' "
                            f"(numeric: {', '.join(numeric) or 'none'}).")
        v = values[c]
        neg = v <= -1
        if neg.any():
            i = int(np.flatnonzero(neg)[0])
            raise DataError(f"{at(i)}, column '{c}': {v[i]:g} has no log(1 + x); data.log_columns is for values "
                            f"> -1 (counts, sizes, prices). Remove '{c}' from data.log_columns.")
        values[c] = np.log1p(v)
    enc = _fit_encoding({c: v[tr] for c, v in values.items()}, columns, numeric, missing)
    enc |= {"decimal": getattr(opts, "decimal", "."), "thousands": getattr(opts, "thousands", "")}
    for c in columns:  # a column with no value in the training part carries nothing
        v = values[c][tr]
        if (np.isnan(v).all() if c in numeric else (v == "").all()):
            warnings.append(f"'{path}': column '{c}' is empty in every training row; it carries no information "
                            f"(imputed as {enc['medians'].get(c, MISSING_CATEGORY)!r}). Remove the column")
    enc["log"] = logs
    warn = warnings.append
    xtr = _encode({c: v[tr] for c, v in values.items()}, enc, f"the training part of '{path}'", warn)
    xte = _encode({c: v[te] for c, v in values.items()}, enc, f"the test part of '{path}'", warn)
    is_num = np.array([f in enc["numeric"] for f in enc["features"]])
    mean = np.where(is_num, xtr.astype(np.float64).mean(0), 0.0)
    std = xtr.astype(np.float64).std(0)
    std = np.where(is_num & (std > 0), std, 1.0)
    info = DatasetInfo("csv", (xtr.shape[1],), len(classes), classes, 1.0, mean.tolist(), std.tolist(), task=task,
                       extra={"table": enc, "targets": targets, "task_reason": why,
                              # earlier layerwise read these three keys; kept for its models' sake
                              "columns": columns, "categories": enc["categories"], "target": targets[0]})
    source = {"files": [str(f) for f in files], "split": how, "train": len(tr), "test": len(te), "task": task,
              "task_reason": why, "missing": missing, "imputed_columns": enc["indicators"]}
    return Dataset(info, torch.from_numpy(xtr), ytr, torch.from_numpy(xte), yte, source, warnings=warnings)


# ---------------------------------------------------------------------------------------- built-in tables
def _sklearn_table(name: str, loader: str, task: str, opts: Any, reference: str) -> Dataset:
    """A table bundled with scikit-learn (no download), split by holdout_split."""
    import sklearn.datasets as skd

    from layerwise.config import ConfigError

    asked = [f"data.{k}={getattr(opts, k)!r}" for k, default in (("target", []), ("label_sep", ""))
             if getattr(opts, k, default) not in (default, None)]
    if getattr(opts, "task", "auto") not in ("auto", task):
        asked.append(f"data.task={opts.task}")
    if asked:
        raise ConfigError(f"{', '.join(asked)}: dataset '{name}' has a fixed target ({task}); these apply to csv files. "
                          f"Remove them, or export the table to a CSV.")
    d = getattr(skd, loader)()
    x = d.data.astype(np.float64)
    columns = [str(c) for c in d.feature_names]
    if task == "classify":
        classes = [str(c) for c in d.target_names]
        tr, te, how = holdout_split(d.target, opts)
        ytr, yte = torch.from_numpy(d.target[tr]).long(), torch.from_numpy(d.target[te]).long()
    else:
        classes = ["target"]
        tr, te, how = holdout_split(None, opts, len(x))
        y = d.target.astype(np.float32)[:, None]
        ytr, yte = torch.from_numpy(y[tr]), torch.from_numpy(y[te])
    mean, std = x[tr].mean(0), x[tr].std(0)
    std = np.where(std > 0, std, 1.0)
    medians = {c: float(np.median(x[tr, j])) for j, c in enumerate(columns)}
    enc = {"columns": columns, "numeric": columns, "medians": medians, "indicators": [], "categories": {},
           "features": columns, "missing": "error"}
    info = DatasetInfo(name, (x.shape[1],), len(classes), classes, 1.0, mean.tolist(), std.tolist(), task=task,
                       extra={"table": enc, "targets": classes if task == "regress" else ["target"]})
    source = {"source": f"sklearn.datasets.{loader}", "split": how, "train": len(tr), "test": len(te),
              "reference": reference}
    return Dataset(info, torch.from_numpy(x[tr].astype(np.float32)), ytr, torch.from_numpy(x[te].astype(np.float32)),
                   yte, source)


@register_dataset("breast-cancer")
def _breast_cancer(root: Path, opts: Any) -> Dataset:
    """Wisconsin diagnostic breast cancer (569 tumours, 30 features of cell nuclei; malignant or
    benign), bundled with scikit-learn: a medical-diagnosis task. Use data.folds=10."""
    return _sklearn_table("breast-cancer", "load_breast_cancer", "classify", opts,
                          "UCI: 97.5% accuracy under 10-fold cross-validation")


@register_dataset("diabetes")
def _diabetes(root: Path, opts: Any) -> Dataset:
    """Diabetes progression one year after baseline (442 patients, 10 standardized features),
    bundled with scikit-learn (Efron et al. 2004): regression."""
    return _sklearn_table("diabetes", "load_diabetes", "regress", opts, "Efron et al. 2004 (LARS)")


def read_rows(path: Path, info: DatasetInfo) -> np.ndarray:
    """A CSV of new rows (the training columns; a target column may be there and is ignored) ->
    (N, F) float32 raw features, encoded as training did."""
    class _Opts:
        delimiter, on_error, skip_hint, decimal, thousands = "", "refuse", False, ".", ""
    enc = info.extra.get("table")
    if enc is None:
        raise DataError(f"this model was trained on '{info.name}' without a table encoding; it cannot read '{path}'.")
    _Opts.decimal, _Opts.thousands = enc.get("decimal", "."), enc.get("thousands", "")
    table = read_table(path, _Opts(), text_columns=[c for c in enc["columns"] if c not in enc["numeric"]])
    return encode_rows(table.df, info.extra, where=f"'{path}'", lines=table.lines)

