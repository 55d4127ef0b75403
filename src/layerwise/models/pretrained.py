"""Pretrained starting points shipped with layerwise: small trained models to fine-tune from.

Each is the ``model.safetensors`` of a `layerwise train` run of a committed recipe
(``recipes/pretrain-*.yaml``), copied unchanged into the package (``layerwise/pretrained/``; under
2 MB each, float32): weights plus the model, data and task description in its metadata, so
``layerwise.train.run.load_model``, ``layerwise predict`` and fine-tuning read it like a run's.
The registry records, for each: the model and its arguments, the data, the recipe and the exact
command that produced the file, its measured test figure (the same number is in the file's
metadata), and the file's sha256, checked every time a name is resolved.

    layerwise models --pretrained                       # the list below, as a table
    path = resolve_pretrained("pretrained:mnist-convnet")   # the shipped file's Path

Data licences (the files hold weights, not images or text; see the data sets' own terms):
MNIST (LeCun, Cortes and Burges) is commonly listed under CC BY-SA 3.0, which asks for
attribution and that adaptations keep the licence; whether trained weights are an adaptation is
unsettled, so the MNIST model is offered with that attribution and under the same terms. CIFAR-10
(Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images") has no formal licence
and is used citing that report. Tiny Shakespeare (from karpathy/char-rnn, MIT) is Shakespeare's
public-domain text. Cite the data sets when you publish results built on these models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "PREFIX",
    "PRETRAINED",
    "Pretrained",
    "PretrainedError",
    "list_pretrained",
    "pretrained_table",
    "resolve_pretrained",
]

PREFIX = "pretrained:"  # how a shipped model is named where a file or run directory is expected
MAX_BYTES = 2_000_000  # a shipped file's size limit (the package stays small)


class PretrainedError(ValueError):
    """A shipped model file that is missing or damaged (the installation is broken)."""


@dataclass(frozen=True)
class Pretrained:
    """One shipped model: what it is, how it was made, what it reaches."""

    name: str  # the registry name (pretrained:<name>)
    file: str  # file name under layerwise/pretrained/
    model: str  # registered model name
    args: dict[str, Any]  # its arguments, as in the recipe (everything else at the preset's defaults)
    dataset: str  # data.name
    classes: tuple[str, ...]  # the output classes in order (a language model: its vocabulary size)
    recipe: str  # the recipe that trained it, relative to the repository root
    command: str  # the exact command that produced the file
    metric: str  # the headline test metric (as in summary.json)
    value: float  # its measured value (equal to the file's metadata)
    sha256: str  # of the file
    trained: str  # when, on what, how long
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # other measured figures

    @property
    def path(self) -> Path:
        """The file's location in the installed package (not checked; see :func:`resolve_pretrained`)."""
        return Path(str(resources.files("layerwise") / "pretrained" / self.file))


PRETRAINED: dict[str, Pretrained] = {p.name: p for p in [
]}


def list_pretrained() -> list[Pretrained]:
    """The shipped models, in registry order."""
    return list(PRETRAINED.values())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_pretrained(name: str) -> Path:
    """The path of shipped model ``name`` (``"pretrained:mnist-convnet"`` or ``"mnist-convnet"``),
    after checking that the file is there and its sha256 is the registry's.

    Returns a :class:`~pathlib.Path` to a layerwise ``model.safetensors`` file (read it with
    ``layerwise.train.run.load_model``). Raises ConfigError naming the valid names when ``name``
    is not one (the CLI's exit code 2); PretrainedError when the file is missing or its content
    differs from what was shipped (a broken installation: reinstall layerwise)."""
    key = name.removeprefix(PREFIX)
    if key not in PRETRAINED:
        from layerwise.choices import closest
        from layerwise.config import (
            ConfigError,  # config sits above models: import late
        )

        hint = closest(key, list(PRETRAINED))
        raise ConfigError(
            f"'{name}' is not a shipped pretrained model{f' (did you mean {PREFIX}{hint}?)' if hint else ''}. "
            f"Shipped: {', '.join(PREFIX + k for k in PRETRAINED) or 'none'} (`layerwise models --pretrained` "
            f"lists them with their data and figures).")
    entry = PRETRAINED[key]
    path = entry.path
    if not path.is_file():
        raise PretrainedError(f"the shipped model file of {PREFIX}{key} is missing ('{path}'); the layerwise "
                              f"installation is incomplete. Reinstall layerwise (pip install --force-reinstall).")
    digest = _sha256(path)
    if digest != entry.sha256:
        raise PretrainedError(f"the shipped model file of {PREFIX}{key} ('{path}') has sha256 {digest[:16]}..., not "
                              f"the {entry.sha256[:16]}... it was shipped with: it was changed or damaged. "
                              f"Reinstall layerwise, or train it again with `{entry.command}`.")
    return path


def pretrained_table() -> str:
    """The shipped models as a text table (``layerwise models --pretrained``)."""
    rows = [("name", "model", "data", "test figure", "size", "recipe")]
    for p in list_pretrained():
        size = p.path.stat().st_size / 1e6 if p.path.is_file() else float("nan")
        data = p.dataset + (f" ({', '.join(p.classes)})" if p.extra.get("class_subset") else "")
        rows.append((PREFIX + p.name, p.model, data, f"{p.metric} {p.value:.4g}", f"{size:.2f} MB", p.recipe))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append(f"\nFine-tune one: --model.init_from={PREFIX}NAME (a name resolves to the shipped "
                 f"model.safetensors; each recipe header gives the command that trained it).")
    return "\n".join(lines)
