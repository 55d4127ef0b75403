"""Export a run's model for use outside layerwise: ONNX (any ONNX runtime, any language) or a
torch.export program (``.pt2``, loadable with PyTorch alone).

ONNX goes through PyTorch's current exporter, ``torch.onnx.export(..., dynamo=True)``: the model
is captured with :func:`torch.export.export` in eval mode and translated to ONNX operators by
onnxscript. The batch dimension is dynamic; so is the sequence length of a language model (up to
its block size) and of a text classifier (up to its max_length), and every size of a molecular
graph batch. The file carries what a user outside layerwise needs to feed the model correctly in
its ``metadata_props`` (each value a JSON string, see :func:`export_metadata`): the inputs and
outputs with their shapes, the preprocessing (normalization and the raw range of the inputs, the
tokenizer, audio feature settings, table columns and their encoding), the class names and the
task's post-processing (e.g. a regression target's standardization).

The metadata is built in :mod:`layerwise.deploy.export_metadata`.

Every export is written to a temporary file next to the target, checked with onnxruntime against
PyTorch on a sample batch, and only then renamed into place: a failed export or check never
leaves a half-written file, and never replaces an earlier one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import threading
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from layerwise.deploy.export_metadata import export_metadata
from layerwise.train.run import RunDirError

__all__ = ["ATOL", "FORMATS", "RTOL", "ExportError", "ExportResult", "check_export", "export_metadata", "export_run",
           "input_spec", "run_onnx"]

FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}
_SHOWN = {"onnx": "ONNX", "pt2": "a torch.export program (.pt2)"}
RTOL, ATOL = 1e-3, 1e-5  # the check's tolerance: |onnx - torch| <= ATOL + RTOL * |torch|, elementwise
# the batch the model is traced with, and the one the file is checked on: they differ, so that a batch
# dimension the tracer froze (a Python int taken from a shape) fails the check instead of passing it
EXAMPLE_BATCH, CHECK_BATCH = 3, 2
PT2_METADATA = "layerwise.json"  # the .pt2 archive's extra file holding the same metadata as the ONNX props

# families whose forward cannot be expressed in ONNX at all, and why (refused before trying)
NOT_EXPORTABLE = {
    "fno": "its spectral convolutions compute in complex numbers (torch.fft.rfft, complex weights, irfft) and "
           "ONNX has no complex tensor type, so PyTorch's exporter has no translation for them",
}


class ExportError(RunDirError):
    """A model that cannot be exported (the message names the model and the reason), or an export
    whose output does not match PyTorch's."""


@dataclass
class InputSpec:
    """How to call a model for export: its inputs' names, dtypes, shapes and dynamic dimensions,
    its outputs, and a way to draw sample inputs of any batch size.

    ``module`` is what is exported: the model itself, or a wrapper taking plain tensors (a
    molecular graph's arrays). ``sample(batch, generator)`` returns a tuple of tensors; for token
    ids, ``sample(batch, generator, True)`` gives sequences of the longest length the file takes."""

    kind: str  # float | token_ids | text_ids | indices | molecular_graph
    module: torch.nn.Module
    names: list[str]
    shapes: list[list[Any]]  # per input: ints and dimension names ("batch", "sequence", ...)
    dtypes: list[str]
    dynamic: tuple[dict[int, Any], ...]
    sample: Callable[..., tuple[torch.Tensor, ...]]
    outputs: list[dict[str, Any]]
    lengths: tuple[int, int] | None = None  # token ids: the shortest and longest sequence the file takes


class _GraphModel(torch.nn.Module):
    """An mpnn behind plain tensors: (atom_x, bond_x, edge_index, rev_index, graph_index, features)
    -> the model's output for the GraphBatch they make (B = features.shape[0] molecules)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, atom_x, bond_x, edge_index, rev_index, graph_index, features):
        from layerwise.data.molecules import GraphBatch

        return self.model(GraphBatch(atom_x, bond_x, edge_index, rev_index, graph_index, features,
                                     features.shape[0]))


def _family(config: dict[str, Any]) -> str:
    return str(config.get("name", "?"))


def _output_spec(meta: dict[str, Any], config: dict[str, Any], info: Any) -> list[dict[str, Any]]:
    task = (meta.get("task") or {}).get("name") or (info.task if info is not None else "classify")
    K = int(config.get("num_classes", 0))
    if task == "rl":
        gaussian = config.get("policy") == "gaussian"
        return [{"name": "action_mean" if gaussian else "logits", "shape": ["batch", K],
                 "meaning": "the mean of the Gaussian policy's action (log_std in postprocessing)" if gaussian
                 else "the policy's logits over the actions"}]
    if task == "lm":
        return [{"name": "logits", "shape": ["batch", "sequence", K],
                 "meaning": "next-token logits at every position"}]
    if info is not None and "field" in info.extra:  # an operator (fno, cnn1d): a field in, a field out
        return [{"name": "prediction", "shape": ["batch", K, config["in_shape"][-1]],
                 "meaning": "the predicted field (standardized; see postprocessing)"}]
    if task == "regress":
        return [{"name": "prediction", "shape": ["batch", K],
                 "meaning": "standardized targets; see postprocessing for the units"}]
    return [{"name": "logits", "shape": ["batch", K],
             "meaning": "independent per-label logits (sigmoid)" if task == "multilabel"
             else "class logits (softmax gives probabilities)"}]


def input_spec(model: torch.nn.Module, meta: dict[str, Any], info: Any) -> InputSpec:
    """The :class:`InputSpec` of a loaded layerwise model: what it takes, decided by its data
    (``info``, a DatasetInfo, None for a reinforcement-learning agent) and family.

    float inputs (B, *in_shape) for images, audio features, tables, fields and observations;
    token ids (B, T) int64 for language models (1 <= T <= block size) and text classifiers
    (1 <= T <= max_length, 0 = padding); index rows (B, columns) int64 for recommenders; and
    six tensors for a molecular graph batch (see :class:`_GraphModel`)."""
    config = dict(meta["model"])
    name, in_shape = _family(config), tuple(config["in_shape"])
    outputs = _output_spec(meta, config, info)
    extra = info.extra if info is not None else {}
    B = torch.export.Dim("batch", min=1)
    if info is not None and (info.task == "lm" or "text" in extra):
        vocab = int(config.get("vocab_size") or info.num_classes)
        max_t = int(in_shape[0])
        lm = info.task == "lm"
        # ngram-bag pairs neighbouring words (a branch on T > 1): its sequences are at least 2 long
        min_t = 2 if name == "ngram-bag" else 1
        T = torch.export.Dim("sequence", min=min_t, max=max_t)

        def tokens(b: int, g: torch.Generator, longest: bool = False) -> tuple[torch.Tensor, ...]:
            # traced at about half the longest length, checked at the longest: a frozen length fails the check
            t = max_t if longest else max(min_t, max_t // 2)
            x = torch.randint(0 if lm else 1, vocab, (b, t), generator=g)
            if not lm and t > 2:  # padded sentences: a random number of trailing 0s, at least one real token
                keep = torch.randint(1, t + 1, (b, 1), generator=g)
                x = x.masked_fill(torch.arange(t)[None] >= keep, 0)
            return (x,)

        return InputSpec("token_ids" if lm else "text_ids", model, ["input_ids"], [["batch", "sequence"]], ["int64"],
                         ({0: B, 1: T},), tokens, outputs, (min_t, max_t))
    if extra.get("inputs") == "indices":
        sizes = [int(config.get("num_users", 2)), int(config.get("num_items", 2))]
        sizes += [int(s) for s in config.get("feature_sizes", ())]
        cols = int(in_shape[0])
        sizes = (sizes + [2] * cols)[:cols]  # columns the model does not read: any valid index

        def indices(b: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
            return (torch.stack([torch.randint(0, max(s, 1), (b,), generator=g) for s in sizes], 1),)

        return InputSpec("indices", model, ["indices"], [["batch", cols]], ["int64"], ({0: B},), indices, outputs)
    # a molecular graph batch (featurize=graph, an mpnn); fingerprints (featurize=ecfp) are a plain float vector
    if name == "mpnn" or (extra.get("molecules") or {}).get("featurize") == "graph":
        f_atom, f_bond = int(in_shape[0]), int(in_shape[1]) if len(in_shape) > 1 else 0
        f_mol = int(in_shape[2]) if len(in_shape) > 2 else 0
        atoms, edges = torch.export.Dim("atoms", min=2), torch.export.Dim("edges", min=2)

        def graphs(b: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
            n = torch.randint(2, 6, (b,), generator=g).tolist()  # atoms per molecule: a chain of bonds
            start = torch.tensor([0] + n[:-1]).cumsum(0).tolist()
            pairs = [(s + i, s + i + 1) for s, k in zip(start, n, strict=True) for i in range(k - 1)]
            edge_index = torch.tensor([e for a, c in pairs for e in ((a, c), (c, a))]).T.contiguous()  # (2, E)
            E = edge_index.shape[1]
            graph_index = torch.cat([torch.full((k,), i) for i, k in enumerate(n)])
            return (torch.randn(sum(n), f_atom, generator=g), torch.randn(E, f_bond, generator=g), edge_index,
                    torch.arange(E) ^ 1, graph_index, torch.randn(b, f_mol, generator=g))

        return InputSpec("molecular_graph", _GraphModel(model).eval(),
                         ["atom_x", "bond_x", "edge_index", "rev_index", "graph_index", "features"],
                         [["atoms", f_atom], ["edges", f_bond], [2, "edges"], ["edges"], ["atoms"], ["batch", f_mol]],
                         ["float32", "float32", "int64", "int64", "int64", "float32"],
                         ({0: atoms}, {0: edges}, {1: edges}, {0: edges}, {0: atoms}, {0: B}), graphs, outputs)

    def floats(b: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (torch.randn(b, *in_shape, generator=g),)

    return InputSpec("float", model, ["input"], [["batch", *in_shape]], ["float32"], ({0: B},), floats, outputs)


def _short_reason(e: BaseException) -> str:
    """The informative line of an exporter error (they run to pages of advice)."""
    text = str(e)
    for marker in ("No ONNX function found", "Could not guard on data-dependent", "data-dependent",
                   "Constraints violated", "Unsupported"):
        i = text.find(marker)
        if i >= 0:
            return text[i:].split("\n")[0][:300]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]


@contextlib.contextmanager
def _quiet():
    """The exporter prints its progress to stdout, notes to stderr and warns freely: keep the
    command's output clean (a failure still reaches the user, as an ExportError with its reason)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run_onnx(path: str | Path, inputs: tuple[torch.Tensor, ...] | list[Any]) -> list[Any]:
    """The outputs (numpy arrays) of the ONNX file at ``path`` for ``inputs`` (tensors or arrays,
    in the file's input order) on onnxruntime's CPU provider."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    arrays = [x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x for x in inputs]
    return sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays, strict=True)})


def _run_pt2(path: Path, inputs: tuple[torch.Tensor, ...]) -> list[Any]:
    prog = torch.export.load(str(path))
    out = prog.module()(*inputs)
    return [o.detach().numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]


@torch.no_grad()
def check_export(path: Path, fmt: str, spec: InputSpec, batch: int = CHECK_BATCH, seed: int = 1) -> float:
    """Max |export - PyTorch| over the outputs for a sample batch; ExportError when any element is
    off by more than ATOL + RTOL * |PyTorch|."""
    g = torch.Generator().manual_seed(seed)
    inputs = spec.sample(batch, g, True) if spec.kind in ("token_ids", "text_ids") else spec.sample(batch, g)
    want = spec.module(*inputs)
    want = [w.detach().float().cpu().numpy() for w in (want if isinstance(want, (tuple, list)) else (want,))]
    import numpy as np

    if not all(np.isfinite(w).all() for w in want):  # checked before exporting too (export_run)
        raise ExportError(f"the model's own outputs hold NaN or Inf on a sample batch of {batch}: its weights are "
                          f"broken (a diverged run?), so there is nothing sound to export. Retrain it, or export "
                          f"an earlier run.")
    if fmt == "onnx":
        import onnxruntime as ort

        try:
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime's own kinds (InvalidGraph, Fail, ...)
            raise ExportError(f"onnxruntime rejects the exported graph ({_short_reason(e).replace(str(path), 'the file')}"
                              f"): the exporter wrote operators or types it cannot run, so the file was not kept. "
                              f"--format pt2 may export it.") from None
    try:
        got = run_onnx(path, inputs) if fmt == "onnx" else _run_pt2(path, inputs)
    except Exception as e:  # onnxruntime's InvalidArgument, torch's guard failures: a dimension was frozen
        raise ExportError(f"the exported file does not take a sample batch of {batch} ({_short_reason(e)}); a "
                          f"dimension meant to be dynamic was fixed during export, so the file was not kept.") from None
    worst = 0.0
    for w, o in zip(want, got, strict=True):
        if w.shape != o.shape:
            raise ExportError(f"the exported file gives outputs of shape {o.shape} where PyTorch gives {w.shape} "
                              f"(batch {batch}); the export is wrong and was not kept.")
        worst = max(worst, float(np.abs(o - w).max(initial=0.0)))
        if not np.allclose(o, w, rtol=RTOL, atol=ATOL):
            raise ExportError(f"the exported file's outputs differ from PyTorch's by up to {worst:.3g} on a sample "
                              f"batch of {batch} (tolerance {ATOL:g} + {RTOL:g} x |output|); the export was not "
                              f"kept. Report it with the model's family and torch version.")
    return worst


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _existing_export_of(path: Path) -> str | None:
    """The weights SHA-256 recorded in an earlier layerwise export at ``path``, '' for a file that
    is not one, None when there is no file."""
    if not path.exists():
        return None
    try:
        if zipfile.is_zipfile(path):  # a .pt2 archive, whatever its name (an ONNX file is a protobuf)
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("extra/" + PT2_METADATA)]
                props = json.loads(z.read(names[0])) if names else {}
        else:
            import onnx

            m = onnx.load(str(path), load_external_data=False)
            props = {p.key: p.value for p in m.metadata_props}
        return json.loads(props["layerwise"])["weights_sha256"]
    except Exception:  # not an ONNX / pt2 file, or not ours: any failure means "someone else's file"
        return ""


@dataclass
class ExportResult:
    """What :func:`export_run` wrote: the file, its size in bytes, the format, the largest
    difference from PyTorch on the check batch, and the metadata keys."""

    path: Path
    bytes: int
    format: str
    max_abs_diff: float
    model: str
    metadata: dict[str, str]


def _load(source: str | Path) -> tuple[torch.nn.Module, dict[str, Any], Any, Path]:
    """(model in eval on the CPU, its metadata, its DatasetInfo or None for an RL agent, the
    weights file) of a run directory, a model.safetensors file or pretrained:NAME."""
    from layerwise.insight.runs import _refuse_non_model
    from layerwise.models.pretrained import PREFIX, resolve_pretrained
    from layerwise.train.inference import _info
    from layerwise.train.run import load_model

    given = str(source)
    path = resolve_pretrained(given) if given.startswith(PREFIX) else Path(source)
    if not path.exists():
        raise RunDirError(f"'{path}' does not exist; give a run directory (runs/<name>-<time>), its "
                          f"model.safetensors, or pretrained:NAME (`layerwise models --pretrained` lists them).")
    _refuse_non_model(path)
    model, meta = load_model(path, "cpu")
    info = None if (meta.get("task") or {}).get("name") == "rl" else _info(meta)
    return model.eval(), meta, info, path / "model.safetensors" if path.is_dir() else path


# one export at a time in a process: torch.export's tracer keeps global state, and _quiet swaps the
# process-wide sys.stdout / sys.stderr, so two threads exporting at once both failed with a bogus
# "cannot trace" reason and left sys.stdout pointing at a discarded buffer
_EXPORT_LOCK = threading.Lock()


def export_run(source: str | Path, format: str = "onnx", out: str | Path | None = None,
               force: bool = False) -> ExportResult:
    """Export a run's model (a run directory, its model.safetensors, or pretrained:NAME) to
    ``format`` (onnx, or pt2: a torch.export program saved with torch.export.save) at ``out``
    (default: model.onnx / model.pt2 next to the weights; ./NAME.onnx for pretrained:NAME; a
    folder gets that name inside it). Follows PyTorch's exporters as documented for torch 2.13
    (torch.onnx.export with dynamo=True, torch.export.export / save); the metadata goes into the
    ONNX model's metadata_props (string key/value pairs, ONNX IR spec).

    The file is written atomically and kept only if it reproduces PyTorch on a sample batch of 2
    within rtol 1e-3 / atol 1e-5. An existing file at ``out`` is replaced when it is an export of
    the same weights (or with ``force``); otherwise ConfigError. Raises RunDirError for a path
    that holds no layerwise model, ExportError naming the model and the reason when its forward
    cannot be exported (e.g. a data-dependent shape), its outputs are NaN, or the check fails;
    ConfigError for an unknown format or a missing ``layerwise[export]`` extra; OSError when the
    file cannot be written."""
    from layerwise.config import ConfigError

    if format not in FORMATS:
        raise ConfigError(f"unknown export format '{format}'; choose one of {', '.join(FORMATS)} (--format).")
    if format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"ONNX export needs onnx, onnxscript (PyTorch's exporter) and onnxruntime (the check), "
                              f"and {e.name} is not installed: pip install 'layerwise[export]'.") from None
    with _EXPORT_LOCK:
        return _export_run(source, format, out, force)


def _export_run(source: str | Path, format: str, out: str | Path | None, force: bool) -> ExportResult:
    from layerwise.config import ConfigError

    model, meta, info, weights = _load(source)
    name = _family(meta["model"])
    if name in NOT_EXPORTABLE and format == "onnx":
        raise ExportError(f"the {name} model of '{source}' cannot be exported to ONNX: {NOT_EXPORTABLE[name]}. "
                          f"Export it with --format pt2 (a torch.export program) or serve it with PyTorch.")
    given = str(source)
    from layerwise.models.pretrained import PREFIX

    stem = given[len(PREFIX):] if given.startswith(PREFIX) else None
    default = f"{stem or 'model'}{FORMATS[format]}"
    if out is not None and str(out).endswith(("/", os.sep)) and not Path(out).is_dir():
        # Path drops the slash: 'exports/' would have become a file called exports
        raise ConfigError(f"--out '{out}' names a folder (it ends in '/') that does not exist; create it or give "
                          f"another path.")
    out = Path(out) if out is not None else Path(default) if stem else weights.with_name(default)
    if out.is_dir():  # a folder: the default file name inside it
        out = out / default
    other = {suffix: f for f, suffix in FORMATS.items() if f != format}
    if out.suffix.lower() in other:  # a .pt2 archive named .onnx (or the reverse) fools every reader of it
        raise ConfigError(f"--out '{out}' ends in {out.suffix} but --format {format} writes {_SHOWN[format]}; name "
                          f"it {out.with_suffix(FORMATS[format]).name}, or give --format {other[out.suffix.lower()]}.")
    sha = _sha256(weights)
    earlier = _existing_export_of(out)
    if earlier is not None and (out.resolve() == weights.resolve() or (
            earlier == "" and out.resolve().parent == weights.resolve().parent and out.suffix not in FORMATS.values())):
        # --force replaces someone else's file, never the run's own weights, config or results
        raise ConfigError(f"'{out}' is one of the files of the run being exported ({out.name}), which an export "
                          f"never replaces, --force or not; it was left as it is. Give another --out PATH (e.g. "
                          f"{out.with_suffix(FORMATS[format]).name}).")
    if earlier is not None and earlier != sha and not force:
        what = "an export of other weights" if earlier else "not a layerwise export"
        raise ConfigError(f"'{out}' exists and is {what}; it was left as it is. Give another --out PATH, or "
                          f"--force to replace it.")
    if not out.parent.is_dir():
        raise ConfigError(f"the folder of --out '{out}' does not exist; create it or give another path.")
    # every weight, not only those a sample input reaches: a NaN in one embedding row (a rare word, a
    # user id) passes the sample check and then answers NaN for every input that holds it
    bad = [n for n, p in model.named_parameters() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    if bad:
        raise ExportError(f"the {name} model of '{given}' has NaN or Inf in {len(bad)} weight tensor(s) ({', '.join(bad[:3])}"
                          f"{', ...' if len(bad) > 3 else ''}): its weights are broken (a diverged run?) and there is "
                          f"nothing sound to export. Retrain it, or export an earlier run.")
    spec = input_spec(model, meta, info)
    with torch.no_grad():
        out_1 = spec.module(*spec.sample(1, torch.Generator().manual_seed(0)))
    if not all(bool(torch.isfinite(o).all()) for o in (out_1 if isinstance(out_1, (tuple, list)) else (out_1,))):
        raise ExportError(f"the {name} model of '{given}' gives NaN or Inf on a sample input: its own outputs hold "
                          f"NaN or Inf, so its weights are broken (a diverged run?) and there is nothing sound to "
                          f"export. Retrain it, or export an earlier run.")
    props = export_metadata(meta, info, spec, sha)
    # the format's own suffix whatever out's (torch.export.load refuses a .pt2 archive named otherwise)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}{FORMATS[format]}")
    try:
        _write(spec, format, tmp, props, name, given)
        try:
            diff = check_export(tmp, format, spec)
        except ExportError as e:
            # e.g. a size the tracer froze (a Python int taken from a shape) or a data-dependent shape
            raise ExportError(f"the {name} model of '{given}' cannot be exported to {_SHOWN[format]}: {e} Serve "
                              f"it with PyTorch (`layerwise predict`) instead.") from None
        _place(tmp, out, sha, force, earlier)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out, out.stat().st_size, format, diff, name, props)


def _place(tmp: Path, out: Path, sha: str, force: bool, earlier: str | None) -> None:
    """Rename the checked ``tmp`` to ``out``. The file at ``out`` was judged before the export, which
    takes seconds: another process may have written it since (another export, someone's file). So
    a new file is created only if still absent (a hard link fails on an existing name), and an
    existing one is judged again right before it is replaced."""
    from layerwise.config import ConfigError

    if earlier is None and not force:
        try:
            os.link(tmp, out)
            return
        except FileExistsError:
            pass  # written meanwhile: judge it as any existing file
        except OSError:  # a file system without hard links: the check just below, then a rename
            pass
    now = _existing_export_of(out)
    if now is not None and now != sha and not force:
        what = "an export of other weights" if now else "not a layerwise export"
        raise ConfigError(f"'{out}' was written by something else while this export ran and is {what}; it was "
                          f"left as it is. Give another --out PATH, or --force to replace it.")
    os.replace(tmp, out)


def _write(spec: InputSpec, fmt: str, path: Path, props: dict[str, str], name: str, source: str) -> None:
    """Export ``spec.module`` to ``path``; ExportError naming the model and the exporter's reason."""
    g = torch.Generator().manual_seed(0)
    args = spec.sample(EXAMPLE_BATCH, g)
    try:
        with _quiet(), torch.no_grad():
            if spec.kind in ("token_ids", "text_ids"):
                # one forward at the longest length first: tables a model caches on first use and grows
                # on demand (rotary cos/sin) then already cover every length, so tracing sees no growth
                # step that would freeze the sequence length at the example's
                spec.module(*spec.sample(1, torch.Generator().manual_seed(0), True))
            if fmt == "onnx":
                prog = torch.onnx.export(spec.module, args, dynamic_shapes=spec.dynamic, dynamo=True,
                                         input_names=spec.names, output_names=[o["name"] for o in spec.outputs],
                                         external_data=False, verbose=False)
            else:
                prog = torch.export.export(spec.module, args, dynamic_shapes=spec.dynamic)
    except Exception as e:  # the exporters raise many kinds (UserError, ConversionError, ...)
        reason = _short_reason(e)
        if reason.startswith("No ONNX function found"):  # traced fine: an operator ONNX has no translation for
            why = ("Its forward uses an operator that PyTorch's ONNX exporter has no translation for; export it "
                   "with --format pt2 (a torch.export program) or serve it with PyTorch (`layerwise predict`).")
        else:
            why = ("Its forward has a step the exporter cannot trace with a dynamic batch (typically a shape or a "
                   "branch that depends on the input's values); serve it with PyTorch (`layerwise predict`) "
                   "instead.")
        raise ExportError(f"the {name} model of '{source}' cannot be exported to {_SHOWN[fmt]}: {reason}. "
                          f"{why}") from None
    # a full disk or a read-only folder is an OSError naming the folder, not the model's fault (torch's
    # .pt2 writer reports a failed open as a RuntimeError, which reached the user as a traceback)
    try:
        with _quiet():
            if fmt == "onnx":
                prog.model.metadata_props.update(props)
                prog.save(str(path))
            else:
                torch.export.save(prog, str(path), extra_files={PT2_METADATA: json.dumps(props)})
    except (OSError, RuntimeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else _short_reason(e)
        raise OSError(getattr(e, "errno", None) or errno.EIO, f"the export could not be written there ({reason})",
                      str(path.parent)) from None


def describe(result: ExportResult) -> str:
    """One line for the command: where the file is, how big, and how it compares with PyTorch."""
    size = result.bytes / 1e6
    return (f"wrote {result.path} ({size:.2f} MB, {result.format}, {result.model}); checked against PyTorch on a "
            f"batch of 2: max |difference| {result.max_abs_diff:.2e} (tolerance {ATOL:g} + {RTOL:g} x |output|)")
