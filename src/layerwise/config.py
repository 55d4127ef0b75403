"""Typed configuration: one small dataclass per section, loaded from YAML, overridden from the CLI.

A recipe is a YAML file with the sections below (every key optional). Command-line overrides
take the form ``--section.key=value`` and are parsed with YAML scalar rules (``--train.epochs=3``,
``--optim.betas=[0.9,0.95]``). Unknown keys and wrong types raise :class:`ConfigError`, whose
message names the key and suggests the closest valid one; the CLI turns it into exit code 2.

The ``model`` section is special: besides ``name`` it accepts the chosen model's own arguments
(``--model.width=128``), validated against the model registry's signature for that name.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from layerwise.choices import closest


class ConfigError(ValueError):
    """A recipe or override that cannot be used; the message says what and how to fix it."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field carrying its help text (shown by ``layerwise train --help``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def default_data_root() -> str:
    """``$LAYERWISE_DATA`` if set, else ``~/.cache/layerwise/data``."""
    return os.environ.get("LAYERWISE_DATA") or str(Path("~/.cache/layerwise/data").expanduser())


@dataclass
class ModelConfig:
    name: str = _f("resnet-digits", "registered model name (see `layerwise models`)")
    args: dict = _f({}, "family arguments, given as model.<arg> (e.g. model.width=128)")
    init_from: str = _f("", "start from trained weights: a run directory or a .safetensors file; the body's "
                        "tensors load by name, the head is new when the classes differ (README: Transfer "
                        "learning; empty = random weights)")


@dataclass
class DataConfig:
    name: str = _f("digits", "dataset: digits, breast-cancer, diabetes (built in), mnist, cifar10, image-folder, csv, "
                   "text, code, text-classes, shakespeare, fsdd, wav-folder, movielens, movielens-loo, molecules, "
                   "burgers (generated; README: Data)")
    root: str = _f("", "directory holding non-built-in datasets; empty = $LAYERWISE_DATA "
                   "or ~/.cache/layerwise/data")
    path: str = _f("", "file or folder read by image-folder, csv, text, code, wav-folder and molecules "
                   "(relative to data.root, or absolute)")
    download: bool = _f(False, "download a missing dataset into data.root (checksummed; mnist, cifar10, shakespeare, movielens)")
    on_error: str = _f("refuse", "an unreadable or corrupt file: refuse (stop before training) or skip (warn, drop it)")
    loader: str = _f("device", "device (whole set on the device, airbench style) or stream "
                     "(DataLoader worker processes, for data that does not fit)")
    workers: int = _f(2, "worker processes of the stream loader")
    batch_size: int = _f(64, "examples per optimizer step (split over train.grad_accum micro-batches)")
    eval_batch_size: int = _f(1024, "examples per evaluation batch")
    train_subset: int = _f(0, "use only the first N training examples (text: tokens) (0 = all); for small-data runs")
    val_fraction: float = _f(0.1, "held-out fraction where a source has no test split (text: the last part)")
    classes: list = _f([], "classification: keep only these classes (names, or label numbers where no class has that "
                       "name), relabelled 0 .. k-1 in this order, in every split; e.g. [bird, cat] (empty = all)")
    labels_per_class: int = _f(0, "classification: train on N examples of every class, a seeded stratified draw from "
                               "the training split (the test split stays whole; 0 = all)")
    subset_seed: int = _f(0, "data.labels_per_class: seed of the draw (not train.seed, so the examples stay the same "
                          "across training seeds; a smaller N keeps a subset of a larger N's examples)")
    # images
    image_size: int = _f(0, "image-folder: resize every image to this square size (0 = keep; sizes must agree)")
    max_image_pixels: int = _f(89_478_485, "image-folder: refuse an image whose header promises more pixels "
                               "(a decompression bomb; Pillow's default limit; 0 = no limit)")
    augment_translate: int = _f(0, "random translation augmentation, max shift in pixels (0 = off)")
    translate_pad: str = _f("zero", "what translation shifts in at the border: zero (the mean; digits) or "
                            "reflect (mirrored pixels; natural images, airbench)")
    augment_flip: bool = _f(False, "random horizontal flips (for natural images, not digits)")
    flip_mode: str = _f("random", "augment_flip: random (each image, each epoch, p=1/2) or alternate (a random "
                        "half in even epochs, the other half in odd ones: airbench's derandomized flip)")
    augment_cutout: int = _f(0, "cutout: zero one random square of this side per image (0 = off)")
    mixup: float = _f(0.0, "mixup Beta(alpha, alpha) per batch (0 = off); targets become soft")
    cutmix: float = _f(0.0, "cutmix Beta(alpha, alpha) per batch (0 = off); targets become soft")
    low_res_size: int = _f(0, "train the first data.low_res_epochs epochs on random size x size crops of "
                           "the (augmented) images: cheaper steps while the network learns coarse features "
                           "(0 = off)")
    low_res_epochs: float = _f(0.0, "epochs trained on data.low_res_size crops")
    # tables and tasks
    task: str = _f("auto", "what to predict: auto (decided from the data, and said), classify, multilabel, regress")
    target: list[str] = _f([], "csv: the target column(s) (default: the last column); several give multi-output "
                           "regression or multilabel; text-classes CSV: the label column")
    label_sep: str = _f("", "split a label cell into several labels at this character (multilabel), e.g. '|'")
    delimiter: str = _f("", "csv: the field delimiter, one of , ; | tab (empty: sniffed from the file)")
    decimal: str = _f(".", "csv: the decimal mark of numbers, . or , (0,5 with data.delimiter=;)")
    thousands: str = _f("", "csv: the thousands separator of numbers, e.g. , for 1,234 (empty: none)")
    missing: str = _f("error", "csv: a missing value is an error (naming column and line) or impute (median plus "
                      "a 0/1 indicator; its own category for text), fitted on the training split")
    text_column: str = _f("", "text-classes CSV: the column holding the text (default: the longest values)")
    log_columns: list[str] = _f([], "csv: numeric columns fed to the model as log(1 + x) (counts, sizes, prices: "
                                "skewed, non-negative); saved with the model so predict does the same")
    folds: int = _f(0, "K-fold cross-validation for sources without a test split: hold out fold data.fold of K "
                    "(stratified for classes, seed 0); 0 = a held-out data.val_fraction")
    fold: int = _f(0, "which fold is the test part, 0 .. data.folds - 1 (layerwise cv runs them all)")
    # molecules (SMILES; needs RDKit: pip install 'layerwise[molecules]')
    smiles_column: str = _f("", "molecules: the column of SMILES strings (default: the one whose name contains "
                            "'smiles')")
    featurize: str = _f("graph", "molecules: graph (atoms and bonds, for model mpnn) or ecfp (Morgan radius-2 "
                        "fingerprints, 2048 bits, for mlp)")
    descriptors: bool = _f(False, "molecules: add RDKit 2D descriptors computed from the SMILES (logP, molecular "
                           "weight, TPSA, ...), standardized on the training split")
    split: str = _f("random", "molecules: random (seeded by data.split_seed) or scaffold (Bemis-Murcko "
                    "scaffold groups, largest to train first; deterministic)")
    split_seed: int = _f(0, "molecules: seed of the random split (MoleculeNet varies it with the run's seed)")
    valid_fraction: float = _f(0.1, "molecules: a validation part held out besides the test part "
                               "(data.val_fraction), not trained on (80/10/10 as MoleculeNet); nothing selects "
                               "on it: a run trains a fixed schedule")
    # generated PDE data (burgers: u0 -> u(t=1) of viscous Burgers' equation, Li et al. 2021)
    resolution: int = _f(256, "burgers: grid points per example, every (grid/resolution)-th point of data.grid (must "
                         "divide it); a model trained at one resolution can be evaluated at another")
    grid: int = _f(1024, "burgers: points of the grid the data is generated on (and cached at)")
    viscosity: float = _f(0.1, "burgers: the viscosity nu of u_t + (u^2/2)_x = nu u_xx (Li et al.'s text: 0.1; their "
                          "released generator: 0.001)")
    grf_gamma: float = _f(2.0, "burgers: gamma of the initial conditions' Gaussian random field N(0, sigma^2 (-Delta + "
                          "tau^2 I)^-gamma) (> 0.5; larger is smoother; Li et al.'s released generator: 2.5)")
    grf_tau: float = _f(5.0, "burgers: tau of that field (>= 0; Li et al.'s released generator: 7)")
    grf_sigma: float = _f(25.0, "burgers: sigma of that field, its scale (> 0; Li et al.'s released generator: 49)")
    solver_modes: int = _f(0, "burgers: Fourier modes of the solver; 0 = chosen from the viscosity and the field's "
                           "amplitude (a setting it cannot resolve is refused)")
    solver_dt: float = _f(0.0, "burgers: time step of the solver; 0 = chosen from its modes and the field's amplitude")
    num_train: int = _f(1000, "burgers: training pairs generated")
    num_test: int = _f(200, "burgers: test pairs generated (from their own seeded stream)")
    seed: int = _f(0, "burgers: seed of the generated initial conditions (not the run's train.seed)")
    # text
    tokenizer: str = _f("byte", "text: byte (256 ids, no training), char (the text's characters), bpe, or word "
                        "(lower-cased words; for text classes)")
    vocab_size: int = _f(1024, "text: vocabulary size of a trained bpe or word tokenizer")
    block_size: int = _f(256, "text: context length in tokens")
    packages: list[str] = _f([], "code: installed Python packages whose .py files are read (e.g. [numpy]), "
                             "found with importlib; besides or instead of data.path")
    # audio
    sample_rate: int = _f(8000, "audio: resample every recording to this rate (Hz)")
    clip_seconds: float = _f(1.0, "audio: pad or crop every recording to this length (longer ones keep their start; "
                             "a warning counts them)")
    channel: str = _f("mean", "audio: how a multi-channel recording becomes mono: mean (average; warns when the "
                      "channels cancel), left (the first) or right (the second)")
    n_mels: int = _f(40, "audio: mel bands of the log-mel spectrogram")
    specaugment_time: int = _f(0, "audio: SpecAugment time-mask width, max frames (0 = off)")
    specaugment_freq: int = _f(0, "audio: SpecAugment frequency-mask width, max mel bands (0 = off)")
    specaugment_masks: int = _f(2, "audio: masks of each kind per example")
    drop_last: bool = _f(False, "drop the last incomplete training batch of each epoch")


@dataclass
class TaskConfig:
    loss: str = _f("auto", "the objective: auto (cross-entropy for classes and tokens, binary cross-entropy for "
                   "labels, mse for numbers), or for regression mse, huber, l1; for fields (burgers) also rel_l2, "
                   "the relative L2 error per example")
    huber_delta: float = _f(1.0, "regression with task.loss=huber: where the loss turns linear, in standard "
                            "deviations of the target")
    threshold: float = _f(0.5, "multilabel: a label is predicted when its probability is at least this")
    target_transform: str = _f("none", "regression: none, or log (learn log y: for positive, skewed targets such as "
                               "prices; predictions and metrics stay in the target's units)")
    clip_predictions: bool = _f(False, "regression: keep predictions within the training targets' range (for capped "
                                "targets, e.g. house values capped at 500,001)")


@dataclass
class OptimConfig:
    name: str = _f("adamw", "optimizer: sgd, adamw, muon")
    lr: float = _f(0.003, "peak learning rate  # per optimizer step, at data.batch_size")
    weight_decay: float = _f(0.01, "weight decay, applied to weights only (never biases, norms, embeddings)")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(True, "Nesterov momentum for SGD")
    betas: list[float] = _f([0.9, 0.999], "AdamW betas")
    eps: float = _f(1e-8, "AdamW epsilon")
    muon_lr: float = _f(0.02, "Muon learning rate for hidden 2-D weights (optim.lr drives the rest)")
    muon_momentum: float = _f(0.95, "Muon momentum")
    muon_rest: str = _f("adamw", "optimizer for what Muon does not take (head, biases, norms): adamw, or sgd "
                        "with optim.lr/momentum/nesterov (airbench94_muon)")
    muon_normalize: bool = _f(False, "rescale each Muon weight to norm sqrt(rows) before its step (for weights "
                              "followed by BatchNorm; airbench94_muon)")
    muon_ns_steps: int = _f(5, "Newton-Schulz iterations per Muon step (airbench94_muon: 3)")
    no_decay_lr_scale: float = _f(1.0, "LR multiplier for biases and norm parameters (airbench's "
                                  "bias_scaler: 64 for BatchNorm biases)")
    body_lr_scale: float = _f(1.0, "fine-tuning from model.init_from: LR multiplier of the body's bottom layer; "
                              "the layers above get geometrically closer to the head's 1 (discriminative rates, "
                              "ULMFiT; fastai's slice(lr/10, lr) is 0.1)")
    schedule: str = _f("onecycle", "LR schedule: constant, cosine, linear, onecycle, triangle")
    warmup_steps: int = _f(0, "linear warmup steps (cosine, linear, constant)")
    warmup_fraction: float = _f(0.0, "warmup as a fraction of all steps (used when warmup_steps is 0)")
    min_lr_ratio: float = _f(0.0, "final LR as a fraction of the peak")
    start_lr_ratio: float = _f(0.0, "triangle schedule: first LR as a fraction of the peak (airbench: 0.2)")
    clip_grad_norm: float = _f(0.0, "clip the global gradient norm to this value (0 = off)")


@dataclass
class TrainConfig:
    epochs: float = _f(10.0, "training length in epochs (fractions allowed)")
    max_steps: int = _f(0, "stop after this many optimizer steps (0 = use epochs)")
    grad_accum: int = _f(1, "micro-batches accumulated per optimizer step")
    precision: str = _f("fp32", "fp32, bf16 (autocast on CPU and CUDA) or fp16 (CUDA, with grad scaling)")
    compile: bool = _f(False, "run the model through torch.compile")
    channels_last: bool = _f(False, "store conv activations channels-last (pays on CUDA with bf16/fp16)")
    device: str = _f("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    seed: int = _f(0, "seed for weights, data order, augmentation and dropout")
    label_smoothing: float = _f(0.0, "label smoothing for the cross-entropy loss")
    ema_decay: float = _f(0.0, "EMA of weights with this decay per step (0 = off); evaluated when on")
    lookahead_every: int = _f(0, "airbench's lookahead: every N steps pull the weights toward a slow copy "
                              "and reset them to it (0 = off; airbench: 5)")
    lookahead_start: float = _f(3.0, "lookahead: epoch at which the slow copy starts")
    lookahead_decay: float = _f(0.95, "lookahead: per-step decay; the slow copy keeps decay^N x (step/total)^3")
    freeze_stem_after: float = _f(0.0, "stop training the model's stem after this many epochs (convnet: "
                                  "airbench trains the whitening bias for 3; 0 = never)")
    freeze_body_epochs: float = _f(0.0, "fine-tuning from model.init_from: train only the head for this many "
                                   "epochs (the body's weights and BatchNorm statistics fixed), then everything")
    unfreeze: str = _f("all", "after train.freeze_body_epochs: all (the whole body at once) or gradual (one "
                       "block more per epoch from the top, ULMFiT)")
    eval_every: float = _f(1.0, "evaluate on the test split every N epochs (0 = only at the end)")
    eval_every_steps: int = _f(0, "evaluate every N optimizer steps instead (0 = use eval_every)")
    eval_tta: str = _f("none", "test-time augmentation for images: none, flip, flip-translate (airbench)")
    log_every: int = _f(20, "log train metrics every N optimizer steps")
    max_bad_steps: int = _f(5, "stop with an error after this many consecutive NaN/Inf steps")
    threads: int = _f(0, "CPU threads for torch (0 = torch's default)")
    adversarial: str = _f("none", "adversarial training (insight/attack.py): none, pgd (Madry et al. 2018) or "
                          "fgsm-rs (Wong et al. 2020's fast FGSM from a random start)")
    adversarial_eps: float = _f(0.0, "adversarial training: L-inf radius in pixel space (images: of [0, 1]; "
                                "MNIST: 0.3)")
    adversarial_steps: int = _f(7, "adversarial training: PGD steps (fgsm-rs takes one)")
    adversarial_alpha: float = _f(0.0, "adversarial training: step size in pixel space (0 = the default: "
                                  "2.5 eps / steps for pgd, 1.25 eps for fgsm-rs)")


@dataclass
class DistConfig:
    strategy: str = _f("auto", "parallelism across processes: auto (ddp when launched on several ranks, "
                       "else none), none, ddp, fsdp, tp, fsdp+tp (README: Scaling out)")
    tp: int = _f(0, "tensor-parallel degree (0 = every rank for tp, 2 for fsdp+tp, 1 otherwise)")
    dp_replicate: int = _f(1, "fsdp: replicate the shards over this many groups (HSDP; 1 = plain FSDP)")
    sequence_parallel: bool = _f(True, "tp: also shard the norms and residual stream over the sequence "
                                 "(when the context divides by tp)")
    activation_checkpointing: bool = _f(False, "recompute each block's activations in the backward pass "
                                        "(less memory, ~1/3 more compute)")
    cpu_offload: bool = _f(False, "fsdp: keep parameters, gradients and optimizer state on the CPU")
    timeout: float = _f(300.0, "seconds a collective may wait for the other ranks before the run stops "
                        "with an error naming the rank that fell behind")


@dataclass
class RunConfig:
    name: str = _f("", "run name (default: the recipe name or the dataset)")
    dir: str = _f("", "run directory (default: <run.root>/<name>-<time>)")
    root: str = _f("runs", "parent folder of run directories")
    checkpoint_every: int = _f(0, "write a resumable checkpoint every N optimizer steps (0 = each epoch)")
    keep_checkpoints: int = _f(3, "keep the last K checkpoints")
    plots: bool = _f(True, "write PNG plots of loss, accuracy and learning rate")
    report: bool = _f(True, "write report.html (one self-contained page: curves, metrics, worst examples, config; "
                      "`layerwise report RUN_DIR` writes it on demand) at the end of the run")
    tensorboard: bool = _f(True, "also log to TensorBoard when it is installed")
    energy: bool = _f(True, "meter the energy of training and evaluation: NVML on NVIDIA GPUs, RAPL on Intel/AMD "
                      "CPUs where readable, else an estimate labelled estimated (README: Energy)")
    cpu_watts_per_core: float = _f(7.5, "the estimate's watts per busy CPU core, where RAPL cannot be read (default: "
                                   "a Xeon Gold 6248's 150 W TDP / 20 cores)")
    gpu_watts: float = _f(300.0, "the estimate's watts per GPU, where NVML cannot be read (default: an A100 "
                          "PCIe's board power)")
    grid_gco2_per_kwh: float = _f(480.0, "carbon intensity of the electricity, grams of CO2 per kWh (default: the "
                                  "world average of 2023, Ember Global Electricity Review 2024)")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return sections_to_dict(self)


def sections_to_dict(cfg: Any) -> dict[str, Any]:
    """A config of sections (Config, layerwise.rl.config.RLConfig) as a plain nested dict, the
    model section flattened back to ``name`` + its args (the form recipes are written in)."""
    d = dataclasses.asdict(cfg)
    model = d.pop("model")
    # init_from only when set: the config.yaml of a run from random weights stays as it was
    init = {"init_from": model["init_from"]} if model.get("init_from") else {}
    return {"model": {"name": model["name"], **init, **model["args"]}, **d}


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "task": TaskConfig, "optim": OptimConfig,
            "train": TrainConfig, "dist": DistConfig, "run": RunConfig}


def sections_of(cls: type) -> dict[str, type]:
    """{section name: its dataclass} of a config class: :class:`Config` (supervised runs) or another
    dataclass of sections built the same way (``layerwise.rl.config.RLConfig``), which the loading,
    override and help machinery below serve alike."""
    if cls is Config:
        return SECTIONS
    hints = _field_types(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _closest(word: str, options: list[str]) -> str:
    match = closest(word, options)
    return f" Did you mean '{match}'?" if match else ""


_YAML_WORDS = ("yes", "no", "on", "off", "true", "false", "y", "n")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    return getattr(hint, "__name__", str(hint))


def _refuse(key: str, value: Any, hint: Any) -> ConfigError:
    want = _type_name(hint)
    if hint is str and not isinstance(value, str):
        # YAML 1.1 reads unquoted off/no/yes/on as booleans, 1e3, 012 or 1.10 as numbers, ~ as nothing
        what = ("an unquoted yes/no/on/off/true/false as a boolean" if isinstance(value, bool) else
                "~, null or an empty value as nothing" if value is None else "an unquoted number as a number")
        return ConfigError(
            f"config key '{key}' expects text (str), got {type(value).__name__} {value!r}: YAML reads {what}. "
            f"Quote it in the recipe ({key.split('.')[-1]}: \"...\"); on the command line --{key}=VALUE is "
            f"always read as text.")
    if hint is int and isinstance(value, (str, float, int)) and not isinstance(value, bool):
        example = "[10, 10]" if "[" in key else "10"
        what = "a whole number (int) that fits in 64 bits" if isinstance(value, int) else "a whole number (int)"
        return ConfigError(f"config key '{key}' expects {what}, got {value!r}. Fix the value in the recipe or on "
                           f"the command line (e.g. --{key.split('[')[0]}={example}).")
    example = {"float": "0.5", "int": "10", "bool": "true"}.get(want, "[1, 2]" if "list" in want else "VALUE")
    if "[" in key:  # an element of a list: show the whole list's form
        example = f"[{example}, {example}]"
    return ConfigError(
        f"config key '{key}' expects {want}, got {type(value).__name__} {value!r}. Fix the value in the "
        f"recipe or on the command line (e.g. --{key.split('[')[0]}={example}).")


def coerce(key: str, value: Any, hint: Any, raw: str | None = None) -> Any:
    """``value`` as the declared type ``hint`` (bool, int, float, str, list[T], tuple[T, ...]; a
    sequence comes back as a list), at every depth, or a ConfigError naming the key, the value and the expected type.

    YAML 1.1 reads ``1e-3`` (no dot) as a string: numbers given as text are parsed; an int accepts
    an integral float (``1e3``). A str key takes a command-line value as it was typed (``raw``), so
    ``--model.mlp=off`` means "off", not False; from a recipe a non-text value is refused with the
    hint to quote it. ``key`` names the place in messages (``optim.betas[0]``)."""
    if hint is Any or hint is None:
        return value
    origin = typing.get_origin(hint)
    if origin in (list, tuple) or hint in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if isinstance(value, str) and args and args[0] is str:
            value = [value] if value else []  # a list of names given as one name
        if not isinstance(value, (list, tuple)):
            raise _refuse(key, value, hint)
        # kept as a list: the config is plain YAML data (the model registry makes tuples)
        return [coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)] if args else list(value)
    if hint is str:
        if raw is not None:  # typed on the command line: the text as typed, unless it was quoted
            quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
            return value if quoted and isinstance(value, str) else raw
        if isinstance(value, str):
            return value
        raise _refuse(key, value, hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _refuse(key, value, hint)
    if hint in (int, float):
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise _refuse(key, value, hint) from None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise _refuse(key, value, hint)
        if hint is float:
            return float(number)
        if isinstance(number, float):
            if not number.is_integer():
                raise _refuse(key, value, hint)
            number = int(number)
        if abs(number) >= 2**62:  # beyond int64: no setting is that large, and torch would overflow
            raise _refuse(key, number, hint)
        return number
    if isinstance(hint, type) and not isinstance(value, hint):
        raise _refuse(key, value, hint)
    return value


def _model_section(raw: dict[str, Any], base: ModelConfig, where: str, raws: dict[str, str]) -> ModelConfig:
    from layerwise.models import list_models, model_arg_types, model_args  # models sit below config's users

    name = raw.get("name", base.name)
    if not isinstance(name, str) or name not in list_models():
        raise ConfigError(
            f"model.name {name!r} ({where}) is not a registered model.{_closest(str(name), list_models())} "
            f"Valid names: {', '.join(list_models())}.")
    valid, hints = model_args(name), model_arg_types(name)
    args = dict(base.args) if name == base.name else {}
    # not a family argument: where the weights come from, kept when another override names the model
    init_from = coerce("model.init_from", raw["init_from"], str, raws.get("init_from")) if "init_from" in raw \
        else base.init_from
    for key, value in raw.items():
        if key in ("name", "init_from"):
            continue
        if key not in valid:
            raise ConfigError(
                f"unknown config key 'model.{key}' for model '{name}' ({where}).{_closest(key, list(valid))} "
                f"Valid model keys: name, init_from, {', '.join(valid)}.")
        args[key] = coerce(f"model.{key}", value, hints.get(key, Any), raws.get(key))
    return ModelConfig(name=name, args=args, init_from=init_from)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """A config section's declared field types (``list[float]``, ``int``, ...)."""
    return typing.get_type_hints(cls)


def merge(cfg: Any, raw: dict[str, Any], where: str, texts: dict[str, dict[str, str]] | None = None) -> Any:
    """Return ``cfg`` (a :class:`Config`, or another config of sections: see :func:`sections_of`)
    updated with the nested dict ``raw``; ``where`` names the source in errors. ``texts`` holds
    command-line values as typed ({section: {key: text}}), which str keys take as they are (see
    :func:`coerce`)."""
    sections = sections_of(type(cfg))
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of sections ({', '.join(sections)}), "
                          f"got {type(raw).__name__}.")
    texts = texts or {}
    out = {name: getattr(cfg, name) for name in sections}
    for section, values in raw.items():
        if section not in sections:
            raise ConfigError(f"unknown config section '{section}' ({where}).{_closest(str(section), list(sections))} "
                              f"Valid sections: {', '.join(sections)}.")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config section '{section}' ({where}) must be a mapping of keys, "
                              f"got {values!r}.")
        if section == "model":
            out["model"] = _model_section(values, cfg.model, where, texts.get("model", {}))
            continue
        cls = sections[section]
        types = _field_types(cls)
        updates = {}
        for key, value in values.items():
            if key not in types:
                raise ConfigError(
                    f"unknown config key '{section}.{key}' ({where}).{_closest(str(key), list(types))} "
                    f"Valid keys in '{section}': {', '.join(f.name for f in dataclasses.fields(cls))}.")
            updates[key] = coerce(f"{section}.{key}", value, types[key], texts.get(section, {}).get(key))
        out[section] = dataclasses.replace(getattr(cfg, section), **updates)
    return type(cfg)(**out)


def parse_override(arg: str) -> tuple[str, str, Any]:
    """``--section.key=value`` -> (section, key, value parsed as a YAML scalar)."""
    section, key, value, _text = _split_override(arg)
    return section, key, value


def _split_override(arg: str) -> tuple[str, str, Any, str]:
    """``--section.key=value`` -> (section, key, value parsed with YAML's rules, value as typed)."""
    body = arg[2:] if arg.startswith("--") else arg
    if "=" not in body or "." not in body.split("=", 1)[0]:
        raise ConfigError(f"cannot read the override '{arg}': write it as --section.key=value "
                          f"(e.g. --train.epochs=5).")
    path, text = body.split("=", 1)
    section, key = path.split(".", 1)
    try:
        value = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        value = text
    return section, key, value, text


def yaml_error(e: yaml.YAMLError) -> str:
    """A YAML parse error on one line: where it is and what the parser expected."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = " ".join(str(getattr(e, "problem", None) or e).split())
    return where + what


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A recipe or a run's config.yaml as a mapping; ConfigError naming the file when it is
    missing, not UTF-8 or not valid YAML."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe file '{path}' does not exist. Give the path of a YAML recipe "
                          f"(see the recipes/ folder) or leave it out to train the built-in default.")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"'{path}' is not UTF-8 text ({e}); save it as UTF-8.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"'{path}' is not valid YAML ({yaml_error(e)}). Fix the syntax and run again.") from None
    return raw or {}


def load_config(recipe: str | Path | None = None, overrides: list[str] = (), cls: type | None = None) -> Any:
    """Defaults, then the recipe file, then ``--section.key=value`` overrides, in that order.
    ``cls`` is the config class (default :class:`Config`; see :func:`sections_of`)."""
    cfg = (cls or Config)()
    if recipe is not None:
        cfg = merge(cfg, load_yaml(recipe), where=f"recipe {Path(recipe).name}")
        if not cfg.run.name:
            cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=Path(recipe).stem))
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Any, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """``cfg`` with ``--section.key=value`` overrides applied in order, then validated (a config
    class other than :class:`Config` brings its own value checks as a ``checks()`` method)."""
    for arg in overrides:
        section, key, value, text = _split_override(arg)
        cfg = merge(cfg, {section: {key: value}}, where=f"override {arg}", texts={section: {key: text}})
    validate(cfg)
    return cfg


def _non_finite(cfg: Any) -> list[str]:
    """Keys holding NaN or an infinity (in lists and model arguments too): no setting means either."""
    bad = []
    for section in sections_of(type(cfg)):
        values = cfg.model.args if section == "model" else dataclasses.asdict(getattr(cfg, section))
        for key, v in values.items():
            items = v if isinstance(v, (list, tuple)) else [v]
            if any(isinstance(x, float) and not math.isfinite(x) for x in items):
                bad.append(f"{section}.{key}={v!r}")
    return bad


def validate(cfg: Any) -> None:
    """Value checks that the types alone cannot express."""
    bad = _non_finite(cfg)
    if bad:
        raise ConfigError(f"{', '.join(bad)}: a setting must be a finite number, not NaN or an infinity. Fix the "
                          f"value in the recipe or on the command line.")
    for ok, msg in (cfg.checks() if hasattr(cfg, "checks") else _checks(cfg)):
        if not ok:
            raise ConfigError(msg + ".")


def optim_checks(o: OptimConfig) -> list[tuple[bool, str]]:
    """The optim section's value checks (shared by every config that has one)."""
    return [
        (o.lr > 0, "optim.lr must be > 0"),
        (o.muon_rest in ("adamw", "sgd"), f"optim.muon_rest must be adamw or sgd, got '{o.muon_rest}'"),
        (o.muon_ns_steps >= 1, "optim.muon_ns_steps must be >= 1"),
        (len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
         f"optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.999]; got {o.betas}"),
        (o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}"),
        (0 <= o.momentum < 1 and 0 <= o.muon_momentum < 1, "optim.momentum and optim.muon_momentum must be in [0, 1)"),
        (o.eps > 0, "optim.eps must be > 0"),
        (o.muon_lr > 0, "optim.muon_lr must be > 0"),
        (o.clip_grad_norm >= 0, "optim.clip_grad_norm must be >= 0 (0 = off)"),
        (o.body_lr_scale > 0, (f"optim.body_lr_scale must be > 0 (1 = the body trains at optim.lr; to keep the "
                               f"body fixed use train.freeze_body_epochs), got {o.body_lr_scale}")),
    ]


def energy_checks(r: RunConfig) -> list[tuple[bool, str]]:
    """(condition, message) pairs of the run section's energy keys (supervised and RL runs)."""
    # Upper bounds: no CPU core draws 1 kW, no accelerator board 10 kW (a GB200 superchip: 2.7 kW), no
    # grid emits 2 kg per kWh (coal: ~1 kg); a larger value is a unit slip (mW, g per MWh), and 1e308
    # made the joules infinite, which summary.json cannot hold as JSON.
    return [(r.cpu_watts_per_core >= 0 and r.gpu_watts >= 0 and r.grid_gco2_per_kwh >= 0,
             ("run.cpu_watts_per_core, run.gpu_watts and run.grid_gco2_per_kwh must be >= 0 (watts; grams of "
              "CO2 per kWh)")),
            (r.cpu_watts_per_core <= 1000, (f"run.cpu_watts_per_core={r.cpu_watts_per_core:g} is more than any CPU "
                                            f"core draws (watts per core, <= 1000; a server core draws 2-15 W)")),
            (r.gpu_watts <= 10000, (f"run.gpu_watts={r.gpu_watts:g} is more than any GPU board draws (watts per GPU, "
                                    f"<= 10000; an A100 draws 300-400 W, an H100 SXM 700 W)")),
            (r.grid_gco2_per_kwh <= 2000, (f"run.grid_gco2_per_kwh={r.grid_gco2_per_kwh:g} is more than any grid "
                                           f"emits (grams of CO2 per kWh, <= 2000; coal ~1000, the world's average "
                                           f"480); is it in g per MWh?"))]


def _checks(cfg: Config) -> list[tuple[bool, str]]:
    """(condition, message) pairs of a supervised config."""
    return optim_checks(cfg.optim) + energy_checks(cfg.run) + [
        (cfg.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (cfg.train.grad_accum >= 1, "train.grad_accum must be >= 1"),
        (cfg.data.batch_size % cfg.train.grad_accum == 0,
         f"data.batch_size ({cfg.data.batch_size}) must be divisible by train.grad_accum "
         f"({cfg.train.grad_accum}) so every micro-batch has the same size"),
        (re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.train.device) is not None,
         f"train.device must be auto, cpu, cuda or cuda:N, got '{cfg.train.device}'"),
        (cfg.train.precision in ("fp32", "bf16", "fp16"),
         f"train.precision must be fp32, bf16 or fp16, got '{cfg.train.precision}'"),
        (cfg.train.epochs > 0 or cfg.train.max_steps > 0, "set train.epochs > 0 or train.max_steps > 0"),
        (0 <= cfg.train.label_smoothing < 1, "train.label_smoothing must be in [0, 1)"),
        (0 <= cfg.train.ema_decay < 1, "train.ema_decay must be in [0, 1)"),
        (cfg.train.lookahead_every >= 0, "train.lookahead_every must be >= 0 (0 = off)"),
        (0 < cfg.train.lookahead_decay < 1, "train.lookahead_decay must be in (0, 1)"),
        (cfg.train.lookahead_start >= 0 and cfg.train.freeze_stem_after >= 0 and cfg.train.freeze_body_epochs >= 0,
         "train.lookahead_start, train.freeze_stem_after and train.freeze_body_epochs are epochs and must be >= 0"),
        (cfg.train.unfreeze in ("all", "gradual"), f"train.unfreeze must be all or gradual, got '{cfg.train.unfreeze}'"),
        (bool(cfg.model.init_from) or (cfg.train.freeze_body_epochs == 0 and cfg.optim.body_lr_scale == 1
                                       and cfg.train.unfreeze == "all"),
         ("train.freeze_body_epochs, train.unfreeze and optim.body_lr_scale fine-tune weights loaded with "
          "model.init_from, and it is empty: a body of random weights has nothing to keep. Set "
          "--model.init_from=RUN_DIR (or use `layerwise finetune RUN_DIR`), or leave them at 0, all and 1")),
        (cfg.run.keep_checkpoints >= 1, "run.keep_checkpoints must be >= 1"),
        (0 < cfg.data.sample_rate <= 768_000,
         f"data.sample_rate must be in 1 .. 768000 Hz, got {cfg.data.sample_rate}"),
        (cfg.train.max_bad_steps >= 1, "train.max_bad_steps must be >= 1"),
        (cfg.train.log_every >= 1, "train.log_every must be >= 1"),
        *_adversarial_checks(cfg),
        (cfg.train.eval_tta in ("none", "flip", "flip-translate"),
         f"train.eval_tta must be none, flip or flip-translate, got '{cfg.train.eval_tta}'"),
        (cfg.data.translate_pad in ("zero", "reflect"),
         f"data.translate_pad must be zero or reflect, got '{cfg.data.translate_pad}'"),
        (cfg.data.flip_mode in ("random", "alternate"),
         f"data.flip_mode must be random or alternate, got '{cfg.data.flip_mode}'"),
        (cfg.data.low_res_size >= 0 and cfg.data.low_res_epochs >= 0,
         "data.low_res_size and data.low_res_epochs must be >= 0"),
        (cfg.data.on_error in ("refuse", "skip"), f"data.on_error must be refuse or skip, got '{cfg.data.on_error}'"),
        (cfg.data.loader in ("device", "stream"), f"data.loader must be device or stream, got '{cfg.data.loader}'"),
        (cfg.data.tokenizer in ("byte", "char", "bpe", "word"),
         f"data.tokenizer must be byte, char, bpe or word, got '{cfg.data.tokenizer}'"),
        (0 < cfg.data.val_fraction < 1, "data.val_fraction must be in (0, 1)"),
        (cfg.data.labels_per_class >= 0, "data.labels_per_class must be >= 0 (0 = every training example)"),
        (cfg.data.subset_seed >= 0, "data.subset_seed must be >= 0"),
        (cfg.data.block_size >= 1, "data.block_size must be >= 1"),
        (cfg.data.channel in ("mean", "left", "right"),
         f"data.channel must be mean, left or right, got '{cfg.data.channel}'"),
        (cfg.data.task in ("auto", "classify", "multilabel", "regress"),
         f"data.task must be auto, classify, multilabel or regress, got '{cfg.data.task}'"),
        (cfg.data.missing in ("error", "impute"), f"data.missing must be error or impute, got '{cfg.data.missing}'"),
        (len(cfg.data.label_sep) <= 1, f"data.label_sep must be one character (e.g. '|'), got {cfg.data.label_sep!r}"),
        (cfg.data.decimal in (".", ","), f"data.decimal must be . or , got {cfg.data.decimal!r}"),
        (cfg.data.thousands in ("", ",", ".", " ", "'", "_") and cfg.data.thousands != cfg.data.decimal,
         f"data.thousands must be empty or one of , . ' _ (space), and not the decimal mark; got {cfg.data.thousands!r}"),
        (cfg.data.folds > 0 or cfg.data.fold == 0, "data.fold picks a fold of data.folds; set data.folds=K (>= 2) too"),
        (cfg.data.delimiter in ("", ",", ";", "\t", "tab", "|"),
         f"data.delimiter must be one of , ; | tab (or empty to sniff it), got {cfg.data.delimiter!r}"),
        (cfg.data.folds == 0 or (cfg.data.folds >= 2 and 0 <= cfg.data.fold < cfg.data.folds),
         f"data.folds must be 0 or >= 2, and data.fold in 0 .. data.folds - 1 (got folds={cfg.data.folds}, "
         f"fold={cfg.data.fold})"),
        (cfg.task.loss in ("auto", "mse", "huber", "l1", "rel_l2", "cross_entropy", "bce"),
         f"task.loss must be auto, mse, huber or l1 (regression), or rel_l2 (fields), got '{cfg.task.loss}'"),
        (0 < cfg.task.threshold < 1, "task.threshold must be in (0, 1)"),
        (cfg.task.huber_delta > 0, "task.huber_delta must be > 0"),
        (cfg.task.target_transform in ("none", "log"),
         f"task.target_transform must be none or log, got '{cfg.task.target_transform}'"),
        (cfg.data.max_image_pixels >= 0, "data.max_image_pixels must be >= 0 (0 = no limit)"),
        (cfg.data.mixup >= 0 and cfg.data.cutmix >= 0, "data.mixup and data.cutmix are Beta alphas and must be >= 0"),
        (cfg.dist.strategy in DIST_STRATEGIES,
         f"dist.strategy must be one of {', '.join(DIST_STRATEGIES)}, got '{cfg.dist.strategy}'"),
        (cfg.dist.tp >= 0 and cfg.dist.dp_replicate >= 1, "dist.tp must be >= 0 and dist.dp_replicate >= 1"),
        (cfg.dist.timeout > 0, "dist.timeout must be > 0 seconds"),
    ]


def _adversarial_checks(cfg: Config) -> list[tuple[bool, str]]:
    """train.adversarial*: a known method and a radius that perturbs."""
    t = cfg.train
    if t.adversarial == "none":
        return []
    return [
        (t.adversarial in ("pgd", "fgsm-rs"), f"train.adversarial must be none, pgd or fgsm-rs, got '{t.adversarial}'"),
        (t.adversarial_eps > 0, (f"train.adversarial={t.adversarial} needs train.adversarial_eps > 0, the L-inf "
                                 f"radius in pixel space (MNIST: 0.3, CIFAR-10: 8/255 = 0.031); got "
                                 f"{t.adversarial_eps}")),
        (t.adversarial_steps >= 1, "train.adversarial_steps must be >= 1"),
        (t.adversarial_alpha >= 0, "train.adversarial_alpha must be >= 0 (0 = the method's default)"),
    ]  # the data's kind (token ids cannot be perturbed) is checked by the Trainer, which knows it


DIST_STRATEGIES = ("auto", "none", "ddp", "fsdp", "tp", "fsdp+tp")


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically (a resumed run rewrites it in place)."""
    from layerwise.train.checkpoint import atomic_write  # train sits below config's users

    atomic_write(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())


# Keys that say where, how fast, how verbosely or how often a run trains, evaluates and saves, but
# not what it learns: a resumed run may change them (and a scaling sweep ignores them when it
# compares a finished run with its spec). Every other key changes the trajectory: the loader's
# place is counted in batches of data.batch_size, the schedule in steps of train.epochs x
# steps per epoch, the weights come from model.* and optim.*.
RESUMABLE_KEYS = ("run.*", "dist.*", "train.device", "train.threads", "train.log_every", "train.eval_every",
                  "train.eval_every_steps", "train.eval_tta", "train.max_bad_steps", "train.compile",
                  "train.channels_last", "data.root", "data.download", "data.workers", "data.loader",
                  "data.eval_batch_size")


# The run's length: a resumed run may change it only where the learning rates of the steps both
# lengths share stay the same (a constant schedule); the Trainer checks that, knowing the steps.
LENGTH_KEYS = ("train.epochs", "train.max_steps")


def is_resumable(key: str) -> bool:
    """Whether config key ``section.key`` may change when a run is resumed (:data:`RESUMABLE_KEYS`)."""
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RESUMABLE_KEYS)


def flat_config(d: dict[str, Any]) -> dict[str, Any]:
    """A config in :meth:`Config.to_dict` form -> {"section.key": value}; the model's arguments
    with their registry defaults filled in, so that naming a default changes nothing."""
    from layerwise.models import list_models, model_args

    out = {}
    for section, values in d.items():
        values = dict(values or {})
        if section == "model" and values.get("name") in list_models():
            values = {"name": values["name"], **model_args(values["name"]), **values}
        out.update({f"{section}.{k}": v for k, v in values.items()})
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{"section.key": (old value, new value)} for every key whose value differs between two
    configs in :meth:`Config.to_dict` form (a key only one has counts as changed)."""
    a, b = flat_config(old), flat_config(new)
    missing = object()
    out = {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys())
           if _plain(a.get(k, missing)) != _plain(b.get(k, missing))}
    if "model.name" in out:  # another model: its arguments are another family's, not changes one by one
        out = {k: v for k, v in out.items() if not k.startswith("model.") or k == "model.name"}
    return out


def with_defaults(saved: dict[str, Any], cls: type | None = None) -> dict[str, Any]:
    """A config saved by an earlier layerwise (a checkpoint's, in :meth:`Config.to_dict` form)
    with the keys added since filled in with their defaults, which reproduce what that version did
    (the rule every new key follows), so that :func:`config_changes` does not count a key the
    earlier version lacked as a change and refuse to resume its runs. ``cls`` is the config class
    (default :class:`Config`). A saved config that no longer resolves (a key since removed) is
    returned as it was, and compared key by key."""
    try:
        return merge((cls or Config)(), saved, where="a checkpoint's config").to_dict()
    except ConfigError:
        return saved


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def refuse_trajectory_changes(changes: dict[str, tuple[Any, Any]], what: str, run_dir: Path | str) -> None:
    """ConfigError listing the changes a resumed run cannot take (``what`` starts the message: where
    they come from); the others are allowed."""
    bad = {k: v for k, v in changes.items() if not is_resumable(k) and k not in LENGTH_KEYS}
    if not bad:
        return
    listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in bad.items())
    raise ConfigError(
        f"{what}: {listed}. These change what the run learns, so the run in '{run_dir}' cannot be resumed "
        f"with them. A resumed run continues exactly the run that was started (its loader position is counted in "
        f"batches of the saved data.batch_size and train.grad_accum, its learning-rate schedule in the saved "
        f"number of steps). Resume without them, or start a new run with the new settings. Settings that "
        f"do not change what the run learns may differ: {', '.join(RESUMABLE_KEYS)}; and the length "
        f"(train.epochs, train.max_steps) under a schedule that does not depend on it (constant).")


def help_text(config_cls: type | None = None) -> str:
    """Every config key with its type, default and meaning (for ``layerwise train --help``; another
    config class's keys with ``config_cls``)."""
    lines = []
    defaults = (config_cls or Config)()
    for section, cls in sections_of(config_cls or Config).items():
        lines.append(f"{section}:")
        section_defaults = getattr(defaults, section)
        for f in dataclasses.fields(cls):
            if section == "model" and f.name == "args":
                lines.append("  model.<arg>              the chosen model's arguments (layerwise models NAME)")
                continue
            default = getattr(section_defaults, f.name)  # the section's default in this config
            lines.append(f"  {section}.{f.name:<20} {f.metadata['help']} [default: {default!r}]")
    return "\n".join(lines)
