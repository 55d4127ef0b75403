"""Source code for language modelling: a folder, glob or installed packages' Python files.

The ``code`` dataset reads source files named by ``data.path`` (a file, a folder searched
recursively for ``*.py``, or a glob such as ``src/**/*.py``) and/or ``data.packages`` (installed
packages, resolved with importlib to their folders, so a recipe names ``[numpy]`` rather than a
path of one machine). Then, in this order:

- identical files (same bytes, by sha256) are kept once, the first in sorted order; empty (or
  whitespace-only) files are left out (``__init__.py`` files are often empty). Both counts go into the run's source record;
- unreadable or non-UTF-8 files follow ``data.on_error`` as for ``text`` (refuse or skip);
- whole files are held out for validation, never lines: files are ordered by the sha256 of their
  relative path (``numpy/linalg/_linalg.py``: the same on every machine) and taken from the front
  of that order until they hold ``data.val_fraction`` of the bytes (numpy 2.4: 48 of 472 files). The split does not depend on
  the seed, the machine or the order files were found in; adding a file moves few others;
- each file's text ends with a newline (one is added when missing) and is followed by the ASCII
  file separator ``\\x1c`` (FILE_SEPARATOR), so the model knows where a file starts; training and
  validation texts are these files concatenated in path order;
- the tokenizer (``data.tokenizer``; recipes use ``bpe``) is trained on the training files only.

:func:`parse_error` checks generated code with Python's own parser (``ast``).
"""

from __future__ import annotations

import ast
import glob
import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from layerwise.data.datasets import DataError, Dataset, register_dataset
from layerwise.data.text import check_text_options, lm_dataset, read_text_files

FILE_SEPARATOR = "\x1c"  # ASCII FS ("file separator"), after every file; no Python file needs it
LANGUAGES = ("python",)  # what parse_error checks


def package_files(name: str) -> tuple[Path, list[Path]]:
    """The folder an installed package is imported from, and its ``*.py`` files (recursive, sorted).

    ``name`` is an importable name (``numpy``, ``scipy.sparse``); it is located with
    ``importlib.util.find_spec`` (a sub-package imports its parents; nothing else runs). A plain
    module gives its one file. The returned folder is the one paths are made relative to: the
    package's parent, so a file reads ``numpy/linalg/_linalg.py`` on every machine.
    Raises DataError when the package is not installed.
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as e:  # a parent package missing, or a malformed name
        spec, why = None, f" ({type(e).__name__}: {e})"
    else:
        why = ""
    if spec is None:
        raise DataError(f"data.packages names '{name}', which is not installed in this Python{why}, so its "
                        f"source files cannot be read. Install it (e.g. `pip install {name.split('.')[0]}`), "
                        f"or remove it from data.packages and give data.path instead.")
    if spec.submodule_search_locations:  # a package: every .py under its folder(s)
        folders = [Path(p) for p in spec.submodule_search_locations]
        files = sorted({f for d in folders for f in d.rglob("*.py") if f.is_file()})
        base = folders[0]
        for _ in range(name.count(".") + 1):  # numpy -> site-packages; scipy.sparse -> site-packages
            base = base.parent
        return base, files
    if spec.origin and spec.origin.endswith(".py"):
        return Path(spec.origin).parent, [Path(spec.origin)]
    raise DataError(f"data.packages names '{name}', which is installed without Python source (it is "
                    f"{spec.origin or 'a namespace with no files'}). Name a package whose .py files are "
                    f"installed, or give data.path.")


def path_files(root: Path, path: str) -> tuple[Path, list[Path]]:
    """data.path -> (the folder paths are made relative to, the files): a file, a folder (all
    ``*.py`` below it, recursively) or a glob pattern (``**`` recursive), sorted."""
    full = Path(path).expanduser()
    full = full if full.is_absolute() else root / full
    if full.is_file():
        return full.parent, [full]
    if full.is_dir():
        files = sorted(p for p in full.rglob("*.py") if p.is_file())
        if not files:
            raise DataError(f"data.path folder '{full}' holds no *.py files (searched recursively). Point "
                            f"data.path at a folder of Python source, or give a glob such as '{path}/**/*.txt'.")
        return full, files
    if any(c in path for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"data.path pattern '{full}' matches no files. Check the pattern and data.root "
                            f"('{root}'); relative patterns are relative to data.root.")
        static = Path(*[part for part in full.parts[:next(i for i, q in enumerate(full.parts)
                                                           if any(c in q for c in "*?["))]])
        return static, files
    raise DataError(f"data.path '{full}' does not exist. Give a Python file, a folder (its *.py files are "
                    f"read recursively) or a glob pattern such as 'src/**/*.py', relative to data.root "
                    f"('{root}') or absolute; or name installed packages with data.packages=[numpy].")


def _relative(f: Path, base: Path) -> str:
    try:
        return f.relative_to(base).as_posix()
    except ValueError:
        return f.as_posix()


def code_files(root: Path, opts: Any) -> list[tuple[Path, str]]:
    """(file, relative path) of every file named by data.path and data.packages, duplicates of a
    path removed, sorted by relative path. DataError when neither is given."""
    packages = list(getattr(opts, "packages", []) or [])
    if not opts.path and not packages:
        raise DataError("dataset 'code' needs source files: data.packages (installed packages, e.g. "
                        "--data.packages=[numpy]) and/or data.path (a .py file, a folder read recursively, or "
                        "a glob such as 'src/**/*.py', relative to data.root or absolute).")
    found: dict[Path, str] = {}
    groups = [package_files(p) for p in packages] + ([path_files(root, opts.path)] if opts.path else [])
    for base, files in groups:
        for f in files:
            found.setdefault(f.resolve(), _relative(f, base))
    return sorted(((f, rel) for f, rel in found.items()), key=lambda t: t[1])


def _split_key(rel: str) -> str:
    return hashlib.sha256(rel.encode("utf-8")).hexdigest()


def split_files(records: list[dict], val_fraction: float) -> tuple[list[int], list[int]]:
    """Indices (train, validation) of ``records`` (each with "path" and "bytes"), each in the input
    order: validation takes files in the order of sha256(path) until it holds ``val_fraction`` of
    the bytes (at least one file, and at least one file is left to train)."""
    if len(records) < 2:
        raise DataError(f"dataset 'code' has {len(records)} usable file(s) after removing duplicates and empty "
                        f"files; holding out whole files needs at least 2. Add source files.")
    total = sum(r["bytes"] for r in records)
    val, held = [], 0
    for i in sorted(range(len(records)), key=lambda i: _split_key(records[i]["path"])):
        if (held >= val_fraction * total and val) or len(val) == len(records) - 1:
            break
        val.append(i)
        held += records[i]["bytes"]
    chosen = set(val)
    return [i for i in range(len(records)) if i not in chosen], sorted(val)


def join_files(texts: list[str]) -> str:
    """The files as one text: each ends with a newline and is followed by FILE_SEPARATOR."""
    return "".join(t + ("" if t.endswith("\n") else "\n") + FILE_SEPARATOR for t in texts)


def code_dataset(root: Path, opts: Any) -> Dataset:
    """The ``code`` dataset (see the module docstring). Options used: path, packages, tokenizer,
    vocab_size, block_size, val_fraction, on_error."""
    check_text_options(opts)
    listed = code_files(root, opts)
    files = [f for f, _ in listed]
    texts, kept, warnings = read_text_files(files, root, opts.on_error, allow_empty=True,
                                            names=[rel for _, rel in listed])
    seen: dict[str, str] = {}
    records, bodies, duplicates, empty = [], [], [], 0
    for text, rec in zip(texts, kept, strict=True):
        if not text.strip():
            empty += 1
            continue
        if rec["sha256"] in seen:
            duplicates.append({"path": rec["path"], "same_as": seen[rec["sha256"]]})
            continue
        seen[rec["sha256"]] = rec["path"]
        records.append(rec)
        bodies.append(text)
    if not records:
        raise DataError(f"dataset 'code': none of the {len(files)} files holds usable source "
                        f"({len(warnings)} unusable, {empty} empty). Check data.path / data.packages.")
    train_idx, val_idx = split_files(records, opts.val_fraction)
    train_text = join_files([bodies[i] for i in train_idx])
    val_text = join_files([bodies[i] for i in val_idx])
    for i in val_idx:
        records[i]["split"] = "validation"
    source = {"files": records, "found": len(files), "duplicates_dropped": len(duplicates),
              "duplicates": duplicates, "empty_dropped": empty,
              "packages": {p: _version(p) for p in getattr(opts, "packages", []) or []},
              "train_files": len(train_idx), "val_files": len(val_idx),
              "train_chars": len(train_text), "val_chars": len(val_text),
              "split": f"whole files: ordered by sha256 of the relative path, held out from the front until "
                       f"{opts.val_fraction} of the bytes",
              "separator": "each file ends with a newline and is followed by \\x1c (ASCII file separator)"}
    return lm_dataset("code", train_text, val_text, opts, source, char_text=train_text + val_text,
                      warnings=warnings)


def _version(package: str) -> str | None:
    """The installed distribution's version of a package (None when unknown)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package.split(".")[0])
    except PackageNotFoundError:
        return None


@register_dataset("code")
def _code(root: Path, opts: Any) -> Dataset:
    """Source files (data.path and/or data.packages), deduplicated, split by whole files."""
    return code_dataset(root, opts)


def parse_error(source: str, language: str = "python") -> str | None:
    """None when ``source`` parses as a whole module of ``language``, else the parser's message
    ("SyntaxError: invalid syntax (line 3)"). Only Python is known: Python's own ``ast.parse``
    (the grammar of the running interpreter); nothing is executed. ValueError for another language."""
    if language not in LANGUAGES:
        raise ValueError(f"syntax check for {language!r} is not available; known: {', '.join(LANGUAGES)}.")
    try:
        ast.parse(source)
    except SyntaxError as e:  # IndentationError and TabError are SyntaxErrors
        return f"{type(e).__name__}: {e.msg} (line {e.lineno})"
    except (ValueError, RecursionError, MemoryError) as e:  # null bytes; absurdly deep nesting
        return f"{type(e).__name__}: {e}"
    return None
