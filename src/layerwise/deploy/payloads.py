"""Requests to the prediction server -> raw-valued example tensors, read as `layerwise predict` reads files.

Two ways to send examples to ``POST /predict``:

- **JSON** (``application/json``), one object with exactly one of
  ``"inputs"`` (image and audio models: a numeric array in the dataset's raw range, shaped like a
  ``.npy`` input: one example (C, H, W) or (H, W), or a batch (N, C, H, W) / (N, H, W)),
  ``"texts"`` (a text classifier: a string or a list of strings, one example each) or
  ``"rows"`` (a table model: an object {column: value} or a list of them, a CSV row each),
  and optionally ``"top_k"``. Only JSON numbers are numbers: ``NaN`` and ``Infinity`` are refused.
- **multipart/form-data**: one or more files (images, ``.npy``, ``.wav``, a CSV of rows, a text
  file of one example per line), decoded by :func:`layerwise.data.inputs.load_inputs` exactly as
  `predict` decodes them (EXIF orientation, 16-bit PNGs, the pixel limit, log-mel features), and
  optionally the fields ``top_k`` and ``invert``. Each upload is written to a private temporary
  folder that is removed at once; JSON arrays never touch the disk.

Every mistake is a :class:`PayloadError` carrying the HTTP status (400 unreadable body or file,
413 too large, 415 wrong content type, 422 well-formed but wrong values) and a message that names
the problem and the fix. Nothing here runs the model: bad input is refused before it is batched.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerwise.data.datasets import DataError, DatasetInfo

JSON_FIELDS = {"array": "inputs", "audio": "inputs", "text": "texts", "table": "rows"}
FORM_FIELDS = ("top_k", "invert")  # the multipart form's text fields; every other part is a file


class PayloadError(Exception):
    """A request the server cannot answer: ``status`` is the HTTP status (4xx), the message says
    what was wrong and how to send it right."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Examples:
    """One request's examples, validated and ready to batch.

    x: (n, *in_shape) float32 raw values (images, audio features, table features) or (n, T)
    int64 token ids (text, padded with 0 within the request); names: n labels for the response
    (``inputs[i]``, ``texts[i]``, ``rows[i]``, ``FILE``, ``FILE[i]``, ``FILE:LINE``); top_k: classes
    shown per example."""

    x: torch.Tensor
    names: list[str]
    top_k: int


def input_kind(info: DatasetInfo) -> str:
    """What a model takes: ``array`` (images, or any (C, H, W) input), ``audio`` (log-mel features of
    .wav recordings), ``text`` (token ids of sentences) or ``table`` (encoded CSV rows). Raises
    DataError for models the server does not answer (language models, recommenders, molecules,
    fields), naming the command that does."""
    x = info.extra
    if info.task == "lm":
        raise DataError(f"this model is a language model trained on '{info.name}'; the server answers classifiers "
                        f"and regressors. Sample from it with `layerwise generate`.")
    if x.get("inputs") == "indices":
        raise DataError(f"this model recommends items from the ratings of '{info.name}'; the server does not answer "
                        f"recommenders. Use `layerwise predict RUN_DIR --user ID`.")
    if "molecules" in x or "field" in x:
        raise DataError(f"the server does not answer {'molecule' if 'molecules' in x else 'field'} models "
                        f"('{info.name}') yet; use `layerwise predict RUN_DIR INPUT...`.")
    if "audio" in x:
        return "audio"
    if "text" in x:
        return "text"
    if "table" in x:
        return "table"
    if len(info.in_shape) == 3:
        return "array"
    raise DataError(f"the server reads images, .npy arrays, .wav recordings, CSV rows and lines of text; this model "
                    f"takes inputs shaped {tuple(info.in_shape)} ('{info.name}'). Use `layerwise predict`.")


def _refuse_constant(name: str) -> float:
    raise PayloadError(422, f"the JSON body holds {name}, which is not a JSON number; send finite numbers only "
                            f"(replace NaN and Infinity before sending).")


def top_k_value(value: Any, where: str = "top_k") -> int:
    """``top_k`` as sent (a JSON integer, or a form field's text) -> int >= 1; else PayloadError 422."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PayloadError(422, f"{where} must be an integer >= 1 (the classes shown per example), got {value!r}.")
    return value


def decode_json(body: bytes, info: DatasetInfo, max_examples: int, default_top_k: int = 3) -> Examples:
    """A JSON request body -> :class:`Examples`. Raises PayloadError: 400 for a body that is not JSON,
    422 for NaN/Infinity, unknown or missing fields, the wrong field for this model, a wrong shape or
    a non-numeric value, 413 for more than ``max_examples`` examples."""
    kind = input_kind(info)
    field = JSON_FIELDS[kind]
    try:
        obj = json.loads(body, parse_constant=_refuse_constant)
    except UnicodeDecodeError as e:  # latin-1, cp1252...: JSON is UTF-8 (RFC 8259), whatever charset is declared
        raise PayloadError(400, f"the JSON body is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at "
                                f"position {e.start}); JSON must be sent as UTF-8 (RFC 8259): encode it as UTF-8, "
                                f"e.g. json.dumps(obj).encode('utf-8'), whatever charset the header names.") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise PayloadError(400, f"the request body is not valid JSON ({str(e)[:200]}); send an object such as "
                                f'{{"{field}": ..., "top_k": 3}} with Content-Type: application/json.') from None
    if not isinstance(obj, dict):
        raise PayloadError(422, f'the JSON body must be an object such as {{"{field}": ...}}, not a '
                                f"{type(obj).__name__}.")
    accepted = (field, "top_k")
    unknown = sorted(k for k in obj if k not in accepted)
    if unknown:
        other = [k for k in unknown if k in JSON_FIELDS.values()]
        why = (f" ('{other[0]}' is for another kind of model; this one takes {kind} inputs in '{field}')"
               if other else "")
        raise PayloadError(422, f"unknown field(s) {', '.join(repr(k) for k in unknown)} in the JSON body{why}; "
                                f"the accepted fields are {', '.join(repr(k) for k in accepted)}.")
    if field not in obj:
        raise PayloadError(422, f"the JSON body lacks '{field}', the examples for this {kind} model "
                                f"({_field_help(kind, info)}).")
    top_k = top_k_value(obj["top_k"]) if "top_k" in obj else default_top_k
    value = obj[field]
    if kind in ("array", "audio"):
        x = _json_array(value, info)
    elif kind == "text":
        x = _json_texts(value, info, max_examples)
    else:
        x = _json_rows(value, info, max_examples)
    _check_count(len(x), max_examples)
    return Examples(x, [f"{field}[{i}]" for i in range(len(x))], top_k)


def _field_help(kind: str, info: DatasetInfo) -> str:
    if kind == "text":
        return "a string or a list of strings"
    if kind == "table":
        return f"an object or a list of objects with the columns {', '.join(info.extra['table']['columns'])}"
    C, H, W = info.in_shape
    return f"an array shaped ({C}, {H}, {W}) or a batch (N, {C}, {H}, {W}) in the raw range 0..{info.scale:g}"


def _check_count(n: int, max_examples: int) -> None:
    if n > max_examples:
        raise PayloadError(413, f"the request holds {n} examples, more than the server's limit of {max_examples} "
                                f"per request (--max-examples); split it into several requests.")
    if n == 0:
        raise PayloadError(422, "the request holds no examples; send at least one.")


def _json_array(value: Any, info: DatasetInfo) -> torch.Tensor:
    from layerwise.data.inputs import array_examples

    if not isinstance(value, list):
        raise PayloadError(422, f"'inputs' must be a (nested) list of numbers ({_field_help('array', info)}), not "
                                f"a {type(value).__name__}.")
    try:
        arr = np.asarray(value)
    except (ValueError, OverflowError) as e:  # ragged nesting, integers beyond 64 bits
        raise PayloadError(422, f"'inputs' is not a rectangular array of numbers ({str(e)[:160]}); every example "
                                f"must have the same shape ({_field_help('array', info)}).") from None
    try:
        return array_examples(arr, info, "'inputs'")
    except DataError as e:
        raise PayloadError(422, str(e)) from None


def _json_texts(value: Any, info: DatasetInfo, max_examples: int) -> torch.Tensor:
    from layerwise.data.textclass import encode_texts

    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise PayloadError(422, "'texts' must be a string or a list of strings (one example each).")
    _check_count(len(texts), max_examples)
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise PayloadError(422, f"'texts[{blank[0]}]' is blank; every example needs some text.")
    return encode_texts([t.strip() for t in texts], info)  # (n, T), stripped as `predict` strips lines


def _json_rows(value: Any, info: DatasetInfo, max_examples: int) -> torch.Tensor:
    from layerwise.data.tabular import encode_rows

    rows = [value] if isinstance(value, dict) else value
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise PayloadError(422, f"'rows' must be an object {{column: value}} or a list of them, with the columns "
                                f"{', '.join(info.extra['table']['columns'])}.")
    _check_count(len(rows), max_examples)
    for i, row in enumerate(rows):
        for c, v in row.items():
            if not (v is None or isinstance(v, str) or (isinstance(v, (int, float)) and not isinstance(v, bool))):
                raise PayloadError(422, f"rows[{i}]['{c}'] is a {type(v).__name__}; a cell is a number, a string "
                                        f"or null.")
            if isinstance(v, float) and not math.isfinite(v):
                raise PayloadError(422, f"rows[{i}]['{c}'] is not finite; send finite numbers (or null for a "
                                        f"missing value).")
    try:
        return torch.from_numpy(encode_rows(rows, info.extra, where="rows"))  # (n, F)
    except DataError as e:
        raise PayloadError(422, str(e)) from None


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]")


def upload_name(filename: str | None, i: int) -> str:
    """The name an upload is shown under: the client's file name without folders (characters other
    than letters, digits, '._ -' replaced by '_'), or ``file<i>`` when it has none."""
    base = Path((filename or "").replace("\\", "/")).name
    return _SAFE_NAME.sub("_", base)[:120] or f"file{i}"


def decode_file(data: bytes, filename: str, info: DatasetInfo, invert: str, max_pixels: int) -> tuple[torch.Tensor, list[str]]:
    """One upload's bytes -> (x (n, ...) raw tensor, n names), read by ``load_inputs`` as `predict`
    reads a file of that name (the suffix chooses the reader). The bytes go to a file in a private
    temporary folder, removed before returning. Raises PayloadError 400 naming ``filename`` when the
    file cannot be read as this model's input."""
    from layerwise.data.inputs import load_inputs, text_lines

    suffix = Path(filename).suffix.lower()
    with tempfile.TemporaryDirectory(prefix="layerwise-serve-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            x = load_inputs(path, info, invert, max_pixels)
            lines = [n for n, _ in text_lines(path)] if "text" in info.extra else None
        except DataError as e:
            raise PayloadError(400, str(e).replace(str(path), filename)) from None
        except Exception as e:  # noqa: BLE001  a decoder's own error on a hostile file (wave, numpy, Pillow)
            raise PayloadError(400, f"'{filename}' could not be read as this model's input ({type(e).__name__}: "
                                    f"{str(e).replace(str(path), filename)[:200]}).") from None
    names = ([f"{filename}:{n}" for n in lines] if lines is not None else
             [filename] if len(x) == 1 else [f"{filename}[{i}]" for i in range(len(x))])
    return x, names


def decode_files(files: list[tuple[str, bytes]], fields: dict[str, str], info: DatasetInfo, max_pixels: int,
                 max_examples: int, default_top_k: int = 3) -> Examples:
    """The files and text fields of a multipart request -> :class:`Examples` (the files' examples in
    order). ``files``: (name as shown, bytes); ``fields``: the form's text fields (``top_k``,
    ``invert``). Raises PayloadError: 422 for no file, an unknown field or a bad value, 400 for a
    file that cannot be read, 413 for more than ``max_examples`` examples in all."""
    input_kind(info)
    unknown = sorted(k for k in fields if k not in FORM_FIELDS)
    if unknown:
        raise PayloadError(422, f"unknown form field(s) {', '.join(repr(k) for k in unknown)}; the accepted text "
                                f"fields are {', '.join(repr(k) for k in FORM_FIELDS)}, and files under any field name. "
                                f"A part sent without a filename is read as a text field: send a file with its name "
                                f"(curl -F file=@digit.png, not -F 'file=<digit.png'; in Python "
                                f"files={{'file': ('digit.png', data)}}).")
    if not files:
        raise PayloadError(422, "the multipart request holds no file; attach one or more input files (images, .npy, "
                                ".wav, a CSV of rows, a text file of one example per line).")
    top_k = top_k_value(fields["top_k"]) if "top_k" in fields else default_top_k
    invert = fields.get("invert", "auto")
    if invert not in ("auto", "yes", "no"):
        raise PayloadError(422, f"invert must be auto, yes or no (as `layerwise predict --invert`), got {invert!r}.")
    xs, names = [], []
    for name, data in files:
        x, n = decode_file(data, name, info, invert, max_pixels)
        xs.append(x)
        names += n
        _check_count(len(names), max_examples)
    if xs[0].dtype == torch.int64:  # token ids of several text files: padded to the longest
        from layerwise.data.textclass import pad_batch

        x = pad_batch([row for x in xs for row in x])
    else:
        x = torch.cat(xs)
    return Examples(x, names, top_k)
