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


_CPU = "2-core AMD EPYC VM shared with other jobs, one thread, torch 2.13.0+cpu"

PRETRAINED: dict[str, Pretrained] = {p.name: p for p in [
    Pretrained(
        name="mnist-convnet", file="mnist-convnet.safetensors", model="convnet", args={"widths": (24, 48, 96)},
        dataset="mnist", classes=tuple(str(i) for i in range(10)), recipe="recipes/pretrain-mnist-convnet.yaml",
        command="OMP_NUM_THREADS=1 layerwise train recipes/pretrain-mnist-convnet.yaml --train.threads=1",
        metric="test_accuracy", value=0.9964,
        sha256="d65bad80c92c7995a1a330315a5bc3beff5b77731824a29a9a4b12d80492eab2",
        trained=f"2026-12-01, {_CPU}: 3 epochs, 763 s of training (the machine under a load of about 7)",
        extra={"test_loss": 0.5160}),
    Pretrained(
        name="cifar10-convnet", file="cifar10-convnet.safetensors", model="convnet", args={"widths": (32, 64, 128)},
        dataset="cifar10", classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                    "truck"),
        recipe="recipes/pretrain-cifar10-convnet.yaml",
        command="OMP_NUM_THREADS=1 layerwise train recipes/pretrain-cifar10-convnet.yaml --train.threads=1",
        metric="test_accuracy", value=0.8420,
        sha256="3c7c259c401bf6d8ed8e7eed30159f8930e17b1b4eda6edb34ba32e02582c763",
        trained=f"2026-12-01, {_CPU}: 5 epochs, 1662 s of training (the machine under a load of "
                f"about 8)",
        notes="with flip-translate test-time augmentation, on the JPEG copy of CIFAR-10 (2-3 points below the "
              "original data, see the data README)",
        extra={"test_loss": 1.1903}),
    Pretrained(
        name="cifar10-animals-convnet", file="cifar10-animals-convnet.safetensors", model="convnet",
        args={"widths": (32, 64, 128)}, dataset="cifar10",
        classes=("bird", "cat", "deer", "dog", "frog", "horse"), recipe="recipes/pretrain-cifar10-animals-convnet.yaml",
        command="OMP_NUM_THREADS=1 layerwise train recipes/pretrain-cifar10-animals-convnet.yaml --train.threads=1",
        metric="test_accuracy", value=0.8498,
        sha256="53091c76a264ba9aecacdbc2f08c6ed420714ed2eae27ab40ce5e81f6aae01c8",
        trained=f"2026-12-01, {_CPU}: 8 epochs of the 30,000 animal images, 1904 s of training (the "
                f"machine under a load of about 8)",
        notes="test accuracy over the 6,000 test images of its six classes, with flip-translate test-time "
              "augmentation; the source of the animals -> vehicles transfer experiment (benchmarks/transfer.py)",
        extra={"class_subset": True, "test_loss": 0.9892}),
    Pretrained(
        name="shakespeare-gpt", file="shakespeare-gpt.safetensors", model="gpt",
        args={"n_layer": 4, "n_head": 4, "n_embd": 96, "bias": False, "rotary": True, "mlp": "swiglu",
              "norm": "rmsnorm"},
        dataset="shakespeare", classes=(), recipe="recipes/pretrain-shakespeare-gpt.yaml",
        command="OMP_NUM_THREADS=1 layerwise train recipes/pretrain-shakespeare-gpt.yaml --train.threads=1",
        metric="test_loss", value=1.6128,
        sha256="be081aa48b04b430cbbd05e7802c3898e37b397895f29a88dabb5c924ac67929",
        trained=f"2026-12-01, {_CPU}: 1000 steps of 32 x 128 characters, 1698 s of training (the machine under "
                f"a load of about 8)",
        notes="validation loss in nats per character on the last 10% of the text; 65-character vocabulary",
        extra={"test_bits_per_char": 2.3267, "test_accuracy": 0.5235}),
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
