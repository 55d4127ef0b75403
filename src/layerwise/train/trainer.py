"""The Trainer: one explicit mini-batch loop that serves every task.

Read :meth:`Trainer.fit` top to bottom: take a step's micro-batches, forward, loss, backward,
clip, optimizer step, schedule, metrics, evaluation, checkpoint. Everything else is a small named
method.

The loop reads no device value per step on a GPU. Whether a step is taken (its loss and gradient
norm are finite) is decided on the device: torch's fused optimizers and Muon skip the update when
given a ``found_inf`` flag (as torch.amp.GradScaler uses them), and the EMA, lookahead and metric
sums select their update with the same flag. The host reads the flags, and with them the skip
counters and the divergence guard, only where it reads anyway: at log intervals, evaluations,
checkpoints and the end (:meth:`Trainer._read_guard`). On the CPU, where a read costs nothing,
and with an optimizer that cannot skip on the device, the flag is read each step
(:meth:`Trainer._optimizer_step`), as before. ``LAYERWISE_SYNC_FREE`` (``auto``, the default; ``1``
on any device, with fused kernels on the CPU, for tests; ``0`` never) switches between them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import random
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from layerwise.config import Config, default_data_root, save_config
from layerwise.data import load_dataset
from layerwise.data.datasets import fingerprint
from layerwise.data.loader import gather
from layerwise.data.loaders import build_loaders
from layerwise.distributed.parallel import DistributedError, Parallel, is_collective_failure
from layerwise.models import create_model, model_args
from layerwise.train import checkpoint as ckpt
from layerwise.train.cpu import keep_freed_memory
from layerwise.train.ema import EMA, Lookahead
from layerwise.tasks import create_task
from layerwise.train.evaluation import evaluate_loader, is_image
from layerwise.train.metrics import Accumulator, Deferred, MetricsLog, plot_metrics, write_confusion
from layerwise.train.optim import build_optimizer
from layerwise.train.precision import autocast, grad_scaler
from layerwise.train.preflight import check_training_batches
from layerwise.train.progress import ProgressDisplay
from layerwise.train.run import RunDirError, check_state_matches, environment, new_run_dir, save_model, write_json
from layerwise.train.schedule import EarlyEpochs, apply_lr, lr_multiplier


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a NaN/Inf loss or gradient."""


SYNC_FREE_MODES = {"auto": "auto", "1": "on", "on": "on", "0": "off", "off": "off"}
# the sync-free step reads its flags at least this often, whatever train.log_every says: each
# pending step holds two 0-d device tensors until then
MAX_PENDING_STEPS = 1000
DEFER_BYTES = 1 << 20  # a micro-batch's outputs held for its deferred metric sums: at most this many bytes
SMALL_GRAD = 1 << 15  # elements: below it finiteness_probe takes a tensor's norm in one foreach call


def sync_free_mode() -> str:
    """``LAYERWISE_SYNC_FREE``: "auto" (the device-side skip on CUDA when the optimizer supports it),
    "on" (on any device: the CPU gets fused SGD/AdamW kernels; for tests) or "off" (a host read
    of the finiteness flag every step); ConfigError for anything else."""
    value = os.environ.get("LAYERWISE_SYNC_FREE", "auto").strip().lower()
    if value not in SYNC_FREE_MODES:
        from layerwise.config import ConfigError
        raise ConfigError(f"LAYERWISE_SYNC_FREE={value!r} is not a setting; use auto (the default), 1 or 0.")
    return SYNC_FREE_MODES[value]


def resolve_device(name: str, option: str = "--train.device") -> torch.device:
    """``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``;
    ConfigError naming ``option`` for anything else or a device this machine lacks."""
    from layerwise.config import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{option}={name!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{option}={name!r}: layerwise trains on cpu or cuda (cuda:N), not {device.type}. "
                          f"Use {option}=auto.")
    if device.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"{option}={name} asks for a CUDA GPU, but torch sees none "
                              f"(torch {torch.__version__}). Use {option}=cpu or auto.")
        if device.index is not None and device.index >= n:
            raise ConfigError(f"{option}={name}: this machine has {n} CUDA device(s), cuda:0 .. cuda:{n - 1}.")
    return device


def build_model(name: str, in_shape: tuple[int, ...], num_classes: int, args: dict[str, Any],
                device: torch.device) -> torch.nn.Module:
    """``create_model`` on ``device``; a model too large for memory is a ConfigError naming the
    arguments (the allocator's failure would otherwise reach the user as a C++ traceback)."""
    from layerwise.config import ConfigError

    try:
        return create_model(name, in_shape=in_shape, num_classes=num_classes, **args).to(device)
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
        if isinstance(e, RuntimeError) and "alloc" not in str(e).lower():
            raise
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    settings = ", ".join(f"model.{k}={v!r}" for k, v in args.items()) or "its default arguments"
    raise ConfigError(f"model '{name}' with {settings} does not fit in memory on {device} ({detail}). Choose "
                      f"smaller widths or depths.")


def finiteness_probe(grads: list[torch.Tensor]) -> torch.Tensor:
    """A 0-d tensor that is finite exactly when every element of ``grads`` is: the sum of the
    large tensors' element sums and the small tensors' L2 norms. An Inf or NaN anywhere makes its
    tensor's sum (or norm) and so the total Inf or NaN; finite gradients give a finite total unless
    the sum overflows float32 (|total| > 3.4e38), which the squares of a norm do sooner (at
    elements of 1.8e19). On the CPU a sum reads each element once and adds it: 31 against 51 us
    for the MNIST MLP's 784x512 weight gradient (one thread), and the MLP's whole check 107
    against 166 us on one thread, 79 against 170 on two (issue 14); below SMALL_GRAD elements
    ``torch._foreach_norm``'s one call beats a Python loop of sums (a ResNet's 29 tensors: 78
    against 88 us).

    ``grads``: tensors on one device with one dtype (at least one). Returns float32 or the grads'
    floating dtype. Not a norm: use it only to test ``math.isfinite``."""
    large = [g.sum() for g in grads if g.numel() >= SMALL_GRAD]
    small = [g for g in grads if g.numel() < SMALL_GRAD]
    parts = large + list(torch._foreach_norm(small)) if small else large
    return parts[0] if len(parts) == 1 else torch.stack(parts).sum()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Builds data, model and optimizer from a :class:`Config` and trains them.

    ``run_dir`` given with ``resume=True`` continues a run from its newest valid checkpoint.
    """

    def __init__(self, cfg: Config, run_dir: Path | None = None, resume: bool = False,
                 show_progress: bool = True):
        t = cfg.train
        if not cfg.run.name:
            cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=cfg.data.name))
        self.cfg = cfg
        if resume:  # only settings that do not change what the run learns may differ (config.RESUMABLE_KEYS)
            self._resume_changes = check_resume(run_dir, cfg)
        if t.threads:
            torch.set_num_threads(t.threads)
        # the ranks and the mesh (a single process is the trivial case); a bad mesh fails here
        self.par = Parallel.setup(cfg.dist, resolve_device(t.device))
        self.device = self.par.device
        if self.device.type == "cpu":
            keep_freed_memory()  # ~10% faster conv steps on the CPU (train/cpu.py)
        self._check_parallel()
        self.scaler = grad_scaler(self.device.type, t.precision)  # refuses fp16 off CUDA, early
        self._sync_free_mode = sync_free_mode()
        seed_everything(t.seed)  # the same on every rank: identical initial weights
        self.tokenizer = None  # a language model's, set by _build_data; saved into the run directory
        source = self._build_data()
        # the objective: loss, target preparation (fitted on the training split), metrics
        self.task = create_task(self.info, cfg)
        self.task.fit(self._y_train)
        for w in self.task.check_eval(self._y_test):  # e.g. a log target transform with test targets <= 0
            warnings.warn(w, stacklevel=2)
        if t.eval_tta != "none" and not is_image(self.info):
            from layerwise.config import ConfigError
            raise ConfigError(f"train.eval_tta={t.eval_tta} flips and shifts images, but dataset "
                              f"'{self.info.name}' is not images. Set --train.eval_tta=none.")
        self._build_model(resume)
        check_training_batches(self.train_loader, self.model, cfg, self.par.dp_size)  # before any file exists
        self._check_model_takes_data()
        self.adversary = None  # train.adversarial: each batch replaced by its adversarial version (insight/attack.py)
        if t.adversarial != "none":
            from layerwise.insight.attack import AdversarialTraining
            self.adversary = AdversarialTraining(t, self.info, self.task.member_loss if self.members > 1
                                                 else self.task.loss, self.device, self.par.dp_rank)

        self.steps_per_epoch = math.ceil(len(self.train_loader) / t.grad_accum)
        self.total_steps = t.max_steps or math.ceil(t.epochs * self.steps_per_epoch)
        o = cfg.optim
        warm = o.warmup_steps or int(o.warmup_fraction * self.total_steps)
        self.schedule = dict(total_steps=self.total_steps, schedule=o.schedule, warmup_steps=warm,
                             min_ratio=o.min_lr_ratio, start_ratio=o.start_lr_ratio)
        lr_multiplier(0, **self.schedule)  # validate the schedule before any file is written
        self.lookahead = (Lookahead(self.model, every=t.lookahead_every, decay=t.lookahead_decay,
                                    start_step=round(t.lookahead_start * self.steps_per_epoch),
                                    total_steps=self.total_steps) if t.lookahead_every else None)
        self.early = EarlyEpochs(cfg, self.model, self.info.in_shape, is_image(self.info), self.steps_per_epoch)
        if resume:
            from layerwise.config import load_config
            self._check_resumed_length(load_config(Path(run_dir) / "config.yaml").to_dict()["train"], "config.yaml")

        # loop state (all of it goes into checkpoints)
        self.step = 0
        self.bad_steps = 0  # consecutive
        self.first_bad_step = 0  # the first of the bad_steps (0-based), for the divergence message
        self.skipped_steps = 0  # total, of both kinds
        self.overflow_steps = 0  # of which fp16 loss-scale overflows
        self.examples_seen = 0
        self.train_seconds = 0.0
        from layerwise.insight.energy import TrainingEnergy
        self.energy = TrainingEnergy(cfg.run, self.device, self.par)  # joules of training and evaluation
        self.acc = Accumulator(self.task.stats_size, self.device, reduce=self.par.sum if self.par.enabled else None,
                               stats=self.task.stats)
        # the sync-free step (module docstring): (step, loss, gradient norm) of the steps whose
        # flags the host has not read yet; used once the optimizer's state exists (torch's fused
        # SGD would keep uninitialized momentum buffers after a skipped first step)
        self._device_guard = self._sync_free_mode == "on" or (
            self._sync_free_mode == "auto" and self.device.type == "cuda")
        self._device_guard &= (bool(getattr(self.optimizer, "_step_supports_amp_scaling", False))
                               and not self.par.dims.uses_fsdp and self.par.dims.tp == 1)  # DTensors: synced
        # the training metric sums computed once per log interval for many steps at once (Deferred):
        # a task whose sums are whole counts, outputs small enough to hold, on the host-read step
        # (the sync-free step selects each step's sums on the device) and outside torch.compile,
        # which fuses the sums into the objective instead. The MNIST MLP's step on a CPU thread
        # spent 140-160 us in them, 3% of it (issue 14).
        self._defer_stats = self.task.defer_stats and not self._device_guard and not t.compile
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self._state_ready = False
        self._params: list[torch.Tensor] | None = None  # the model's parameters, listed at the first step
        self._ckpt_writer = ckpt.CheckpointWriter()  # single-process checkpoints, written off the loop
        self._lr_factor: float | None = None  # the schedule's factor last written into the optimizer

        # the run directory comes last: bad input above fails before anything is written.
        # Only rank 0 writes it; the other ranks learn its path from rank 0.
        if resume:
            self.run_dir = Path(run_dir)
        elif self.par.is_rank0:
            self.run_dir = new_run_dir(cfg.run.root, cfg.run.name, str(run_dir) if run_dir else cfg.run.dir)
            save_config(cfg, self.run_dir / "config.yaml")
            write_json(self.run_dir / "env.json", environment(self.device, t.seed) | {"data": source}
                       | self._parallel_info())
            if self.tokenizer is not None:
                self.tokenizer.save(self.run_dir / "tokenizer.json")
            if self.init_record is not None:  # where the weights came from (train/finetune.py)
                from layerwise.train.finetune import INIT_RECORD
                write_json(self.run_dir / INIT_RECORD, self.init_record)
        self.run_dir = Path(self.par.broadcast_object(str(self.run_dir) if self.par.is_rank0 else None))
        self.par.run_dir = self.run_dir
        if self.par.enabled and self.par.is_rank0:
            from layerwise.distributed.launch import remember_run_dir
            remember_run_dir(cfg.run.root, self.run_dir)  # for torchrun --max-restarts
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", cfg.run.tensorboard, enabled=self.par.is_rank0)
        if resume:
            self._load_checkpoint()
        self.display = ProgressDisplay(self.total_steps, self.step, enabled=show_progress and self.par.is_rank0)
        if resume:
            self._record_resume()
        elif source.get("task_reason"):  # data.task=auto: say what was chosen, and why
            self.display.message(f"task: {self.info.task} ({source['task_reason']})")

    def _check_parallel(self) -> None:
        """Refuse what the chosen strategy cannot train, before data or model are built."""
        from layerwise.config import ConfigError

        d, t = self.cfg.data, self.cfg.train
        from layerwise.distributed.parallelize import check_supported
        check_supported(self.par, self.cfg.dist, self.cfg)
        dp = self.par.dp_size
        if d.batch_size % (t.grad_accum * dp):
            raise ConfigError(
                f"data.batch_size={d.batch_size} is the batch of one optimizer step over all ranks; it must "
                f"divide evenly into train.grad_accum={t.grad_accum} micro-batches on each of the {dp} "
                f"data-parallel ranks. Choose a multiple of {t.grad_accum * dp} (e.g. "
                f"--data.batch_size={max(1, round(d.batch_size / (t.grad_accum * dp))) * t.grad_accum * dp}).")

    def _micro_batch(self) -> int:
        """Examples per micro-batch on this rank: data.batch_size is the global batch of one step."""
        return self.cfg.data.batch_size // (self.cfg.train.grad_accum * self.par.dp_size)

    def _parallel_info(self) -> dict:
        dims = self.par.dims
        return {"parallel": {"strategy": dims.strategy, "world_size": dims.world_size,
                             "dp_replicate": dims.dp_replicate, "dp_shard": dims.dp_shard, "tp": dims.tp}}

    def _build_data(self) -> dict:
        """Train and test loaders (layerwise.data.loaders): tensors normalized and augmented on the
        device, token windows for a language model, padded sequences for text classes."""
        d, t = self.cfg.data, self.cfg.train
        ds = load_dataset(d.name, d.root or default_data_root(), d)
        for w in ds.warnings:  # e.g. files skipped under data.on_error=skip
            warnings.warn(w, stacklevel=2)
        self.info, self.tokenizer = ds.info, ds.tokenizer
        self.data_sha256 = fingerprint(ds)  # a resumed run must continue on the same data
        loaders = build_loaders(ds, d, self.device, self._micro_batch(), seed=t.seed, rank=self.par.dp_rank,
                                world_size=self.par.dp_size)
        self.train_loader, self.test_loader = loaders.train, loaders.test
        # for models that initialize from data, and for the task's target preparation
        self._x_train, self._y_train, self._transform = loaders.x_train, loaders.y_train, loaders.transform
        self._y_test = ds.y_test
        # the end-of-run report reads (a bounded part of) the test split: kept, not loaded again
        self._test_split = SimpleNamespace(x_test=ds.x_test, y_test=ds.y_test) if self.cfg.run.report else None
        return ds.source | ({"warnings": ds.warnings} if ds.warnings else {})

    def _build_model(self, resume: bool = False) -> None:
        t, o = self.cfg.train, self.cfg.optim
        args = dict(self.cfg.model.args)
        text = self.info.extra.get("text")
        if text and "vocab_size" in model_args(self.cfg.model.name) and not args.get("vocab_size"):
            args["vocab_size"] = text["vocab_size"]  # the data's vocabulary (plus padding) sizes the embedding
        accepted = model_args(self.cfg.model.name)
        for key, value in self.info.extra.get("model_args", {}).items():
            # what the data sizes (a ratings source's num_users, num_items, feature_sizes): passed to
            # any model that takes the argument, unless the config sets it
            if key in accepted and not args.get(key):
                args[key] = tuple(value) if isinstance(accepted[key], tuple) else value
        self.model = build_model(self.cfg.model.name, self.info.in_shape, self.task.num_outputs, args, self.device)
        self.members = getattr(self.model, "num_members", 1)  # an ensemble returns (B, M, K) in training
        if self.members > 1 and self.info.task == "lm":
            from layerwise.config import ConfigError
            raise ConfigError(f"model.ensemble={self.members}: an ensemble of language models cannot generate text "
                              f"(sampling needs one model's next-token distribution). Set model.ensemble=1.")
        if hasattr(self.model, "init_from_data") and self._x_train is not None and not resume:
            # e.g. convnet's patch-whitening layer (airbench), ngram-bag's naive-Bayes weights; a
            # resumed run loads them instead
            x, y = self._data_sample()
            try:
                if "targets" in inspect.signature(self.model.init_from_data).parameters:
                    self.model.init_from_data(x, targets=y)
                else:
                    self.model.init_from_data(x)
            except (RuntimeError, ValueError, TypeError, IndexError, AttributeError) as e:
                raise self._cannot_take(e, x) from None  # e.g. autorec's ratings matrix from a table
        self.init_record = None if resume else self._init_from_weights()  # a resumed run loads its checkpoint
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # parallelism is applied from outside the model (distributed.parallelize): tensor parallel,
        # activation checkpointing, then FSDP (in place) or DDP (a wrapper, called in training)
        forward = self.model
        if self.par.enabled or self.cfg.dist.activation_checkpointing:
            from layerwise.distributed.parallelize import parallelize
            seq_len = getattr(self.model, "block_size", None) or getattr(self.model, "seq_len", None)
            forward = parallelize(self.model, self.par, self.cfg.dist, t.precision, self.cfg.model.name,
                                  seq_len=seq_len)
        if self.par.dp_rank:  # dropout masks differ per data-parallel rank, agree within a tp group
            torch.manual_seed(t.seed + 1_000_003 * self.par.dp_rank)
        self.optimizer = build_optimizer(
            self.model, o.name, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum,
            nesterov=o.nesterov, betas=tuple(o.betas), eps=o.eps, muon_lr=o.muon_lr,
            muon_momentum=o.muon_momentum, muon_rest=o.muon_rest, muon_normalize=o.muon_normalize,
            muon_ns_steps=o.muon_ns_steps, no_decay_lr_scale=o.no_decay_lr_scale, body_lr_scale=o.body_lr_scale,
            device_type=self.device.type, per_param=self.par.dims.tp > 1,
            fused=True if self._sync_free_mode == "on" else None)
        self.ema = EMA(self.model, t.ema_decay) if t.ema_decay > 0 else None
        # torch.compile wraps the module; state is always read from and written to self.model
        self.forward = torch.compile(forward) if t.compile else forward
        # and the objective, apart: the loss's float32 upcast, log-softmax and the metric sums'
        # argmax fuse into a pass or two over the outputs, and backward keeps the half-precision
        # outputs instead of float32 log-probabilities (a language model's (B, T, V): the largest
        # tensors of its step)
        self.objective = torch.compile(self._objective) if t.compile else self._objective

    def _init_from_weights(self) -> dict[str, Any] | None:
        """model.init_from: the source's body (and its head, when it predicts the same classes)
        loaded into the model just built, before the optimizer exists (train/finetune.py); the
        record for init_from.json, or None when the run starts from random weights."""
        if not self.cfg.model.init_from:
            return None
        from layerwise.train.finetune import load_weights, read_source

        return load_weights(self.model, read_source(self.cfg.model.init_from), self.info.classes, self.task.name,
                            (self.info.extra or {}).get("tokenizer"))

    def _check_model_takes_data(self) -> None:
        """One forward pass of two training examples, before any file is written: a model that
        cannot take the data (an MLP on token ids, a ViT on a table) is a ConfigError naming both,
        not a traceback in the first step. Skipped under several processes (the pass would be a
        collective); the same config fails here in one."""
        if self.par.enabled:
            return

        if self._x_train is None:  # a token stream
            x = self.train_loader.tokens[:self.train_loader.block_size][None]
        elif self._transform is None:  # variable-size examples (token sequences, molecular graphs): the loader's batch
            x = self.train_loader.collate(torch.arange(min(2, len(self._x_train))))
        else:
            x = self._x_train[:2] if isinstance(self._x_train, torch.Tensor) else gather(self._x_train, [0, 1])
            x = self._transform(x.to(self.device), None)[0]
        was = self.model.training
        try:
            self.model.eval()
            with torch.no_grad(), autocast(self.device.type, self.cfg.train.precision):
                self.model(x)
        except (RuntimeError, ValueError, TypeError, IndexError, AttributeError) as e:
            raise self._cannot_take(e, x) from None
        finally:
            self.model.train(was)

    def _cannot_take(self, e: Exception, x: Any) -> Exception:
        """The ConfigError for a model whose forward pass (or data initialization) failed on
        this dataset's inputs ``x``: names both and the models that fit each kind of data."""
        from layerwise.config import ConfigError

        kind = ("user and item indices" if self.info.extra.get("inputs") == "indices" else
                "molecular graphs" if not isinstance(x, torch.Tensor) else
                "token ids" if not x.is_floating_point() else "values")
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return ConfigError(
            f"model '{self.cfg.model.name}' cannot take the inputs of dataset '{self.info.name}' ({kind}, "
            f"shaped {tuple(self.info.in_shape)} per example): {detail}. Choose a model for this data (token ids: "
            f"gpt, text-transformer, ngram-bag; images: convnet, resnet, vit, mlp; tables and molecular fingerprints "
            f"(data.featurize=ecfp): mlp; molecular graphs (data.featurize=graph): mpnn; ratings: mf, neumf, autorec; "
            f"see `layerwise models`).")

    def _data_sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training inputs as the model takes them, with their targets, for models that set
        weights from the data: up to 5000 tensors spread evenly over the split (every class), or
        every training sequence of a text dataset (padded)."""
        x, y = self._x_train, self._y_train
        if self.info.extra.get("inputs") == "indices" and isinstance(x, torch.Tensor):
            # rows of indices (a ratings source): every row, e.g. autorec's rating vector of each item
            return x.to(self.device), y.to(self.device)
        if self._transform is None:  # variable-size examples: every one, as the loader batches them
            return self.train_loader.collate(torch.arange(len(x))), y.to(self.device)
        idx = torch.linspace(0, len(x) - 1, min(len(x), 5000)).long()  # spread over every class
        sample = x[idx] if isinstance(x, torch.Tensor) else gather(x, idx.tolist())
        return self._transform(sample.to(self.device), None)[0], y[idx].to(self.device)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps``, evaluate, save the model; returns the summary."""
        from layerwise.deploy.status import running_marker  # RUN_DIR/running.json: `layerwise runs` says running

        try:
            with running_marker(self.run_dir, "train", enabled=self.par.is_rank0):
                summary = self._fit()
        except (DistributedError, KeyboardInterrupt):
            raise
        except RuntimeError as e:
            if self.par.enabled and is_collective_failure(e):
                raise self.par.failure(e) from None
            raise
        self.par.close()
        return summary

    def _fit(self) -> dict[str, Any]:
        t, o = self.cfg.train, self.cfg.optim
        self.model.train()
        batches = iter(self.train_loader)
        last_log_time, last_log_examples = time.perf_counter(), self.examples_seen
        start = time.perf_counter() - self.train_seconds
        self.energy.start()
        try:
            while self.step < self.total_steps:
                micro, batches = self._next_micro_batches(batches)
                micro = self.early.before_step(self.step, micro)  # low-res crops, stem freezing
                counts = [self.task.count(y) for _, y in micro]
                n = sum(counts)  # examples (tokens for an LM) in this step
                lr = self._apply_lr()
                step_loss = None  # (), float32: the step's summed loss
                for i, (x, y) in enumerate(micro):
                    if self.adversary is not None:
                        with autocast(self.device.type, t.precision):
                            x = self.adversary.perturb(self.model, x, y, self.step, i)
                    with self._grad_sync(last=i == len(micro) - 1):
                        with autocast(self.device.type, t.precision):
                            out = self.forward(x)
                        # the task's loss summed over the micro-batch's targets, divided by all of the
                        # step's: exact gradient accumulation for any split (and equal splits per rank);
                        # the metric sums (counted once the step is taken) before backward, so that the
                        # outputs (a language model's (B, T, V) logits) are not kept alive through it
                        loss_sum, stats = self.objective(out, y)
                        del out
                        self.acc.stage(stats, counts[i])
                        loss = loss_sum / n
                        (self.scaler.scale(loss) if self.scaler else loss).backward()
                    part = loss_sum.detach().float()
                    step_loss = part if step_loss is None else step_loss + part
                grad_norm = self._clip(o.clip_grad_norm)
                if self._device_guard and self._state_ready:
                    self._device_step(step_loss, grad_norm)
                else:
                    self._optimizer_step(step_loss, grad_norm)
                self.step += 1
                self.examples_seen += n * self.par.dp_size  # every data-parallel rank took as many
                self.display.tick(self.step)

                if self.step % t.log_every == 0 or self.step == self.total_steps:
                    self._read_guard()  # the skip counters (and the divergence guard) are logged too
                    now = time.perf_counter()
                    rate = (self.examples_seen - last_log_examples) / max(now - last_log_time, 1e-9)
                    self._log_train(lr, rate)
                    last_log_time, last_log_examples = now, self.examples_seen
                epoch_end = self.step % self.steps_per_epoch == 0
                if self.lookahead is not None and (epoch_end or self.step == self.total_steps):
                    self.lookahead.sync()  # airbench: the live weights end each epoch at the slow ones
                if self._eval_due(epoch_end):
                    self._read_guard()
                    self.train_seconds = self._elapsed(start)
                    self._log_test()
                if self._checkpoint_due(epoch_end):
                    self._read_guard()  # never a checkpoint after the guard would have stopped the run
                    self.train_seconds = self._elapsed(start)
                    self._save_checkpoint()
            self._read_guard()
        except BaseException:
            self._ckpt_writer.wait(raise_error=False)  # the error on its way says more than a disk's
            raise
        finally:
            self.display.close()
        self.train_seconds = self._elapsed(start)
        try:
            summary = self._finish()
        except BaseException:
            self._ckpt_writer.wait(raise_error=False)
            raise
        self._ckpt_writer.wait()  # the last checkpoint was written while the final evaluation ran
        return summary

    def _objective(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | Deferred]:
        """(the task's loss summed over the batch's targets, () float32; its metric sums,
        (stats_size,) float64, or the :class:`Deferred` micro-batch the accumulator computes them
        from later) of one micro-batch's outputs. An ensemble (B, M, ...) trains each member on its
        own loss and reports the metrics of their mean."""
        if self.members > 1:
            loss_sum, out = self.task.member_loss(out, y), out.mean(1)
        else:
            loss_sum = self.task.loss(out, y)
        if self._defer_stats and out.numel() * out.element_size() <= DEFER_BYTES:
            return loss_sum, Deferred(out.detach(), y, loss_sum.detach())
        return loss_sum, self.task.stats(out.detach(), y, loss_sum)

    def _apply_lr(self) -> float:
        """The schedule's learning rate for this step, written into the optimizer's groups only
        when it changed (a constant schedule writes once). Returns the first group's lr."""
        factor = lr_multiplier(self.step, **self.schedule)
        if factor != self._lr_factor:
            self._lr = apply_lr(self.optimizer, factor)
            self._lr_factor = factor
        return self._lr

    def _elapsed(self, start: float) -> float:
        """Seconds since ``start`` (perf_counter) once the device has run what was queued: CUDA
        kernels run asynchronously, so without the sync the last step's optimizer update (queued
        after the step's one host sync) would fall outside train_seconds."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def _next_micro_batches(self, batches):
        """The grad_accum micro-batches of one optimizer step; fewer at the end of an epoch."""
        micro = []
        for _ in range(self.cfg.train.grad_accum):
            try:
                micro.append(next(batches))
            except StopIteration:
                if micro:  # the epoch ended mid-step: take a short step
                    break
                batches = iter(self.train_loader)  # next epoch
                micro.append(next(batches))
            if self.train_loader.position == len(self.train_loader):
                break  # never let one optimizer step span two epochs
        return micro, batches

    def _grad_sync(self, last: bool):
        """Data-parallel gradient reduction only after the last micro-batch of a step (DDP's
        no_sync, FSDP2's set_requires_gradient_sync); the result is the same, with fewer collectives."""
        if self.cfg.train.grad_accum == 1 or not self.par.enabled:
            return contextlib.nullcontext()
        if hasattr(self.forward, "no_sync"):  # DDP
            return contextlib.nullcontext() if last else self.forward.no_sync()
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2
            self.model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def _clip(self, max_norm: float) -> torch.Tensor:
        """Clip the gradients at total norm ``max_norm`` when it is > 0 and return the norm; with
        clipping off return a 0-d value that is finite exactly when every gradient is (the non-finite
        guard's read): the total norm, or on the CPU the cheaper :func:`finiteness_probe`."""
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self._params is None:  # walking the modules every step cost ~1.5% of a small MLP's step
            self._params = list(self.model.parameters())
            self._one_kind = len({(p.device, p.dtype) for p in self._params}) == 1  # one device and dtype
        params = [p for p in self._params if p.grad is not None]
        if self.par.dims.tp > 1:  # plain tensors and DTensors on several meshes
            from layerwise.distributed.parallelize import clip_grad_norm_
            return clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
        if max_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        elif not params or self.par.enabled or not self._one_kind:
            # the norm only (for the finiteness check): clipping at inf would multiply every gradient by 1
            norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        elif self.device.type == "cpu":  # no kernel launches to save: a pass that only adds is cheaper
            norm = finiteness_probe([p.grad for p in params])
        else:  # one device and dtype: get_total_norm's own two kernels, without its per-step grouping
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params])))
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: a replicated DTensor

    def _optimizer_step(self, step_loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Take the step, or skip it when its loss or gradient is not finite, deciding on the host.

        One host sync: the decision is read before the update (the path on the CPU, and for an
        optimizer that cannot skip on the device; :meth:`_device_step` is the GPU's). A skipped
        step leaves the weights, the weight averages (EMA, lookahead) and the metric averages
        alone and is counted in ``skipped_steps``. Two kinds: with fp16 an overflowing *gradient*
        under a finite loss is the loss scaler's business (it lowers the scale and the next step
        usually fits), so it is counted but never stops the run; a non-finite *loss*, or a
        non-finite gradient without a scaler, is a bad step, and ``train.max_bad_steps`` of them
        in a row stop it (:meth:`_count_step`). The learning-rate schedule and lookahead follow
        the attempted steps (``self.step``), the EMA's warm-up its taken updates; both are saved,
        so a resumed run agrees."""
        # one host read of both values (as _read_guard does), tested on the host: fewer tensor ops
        # than an on-device test, and a single sync on a GPU
        loss, norm = torch.stack((step_loss.float(), grad_norm.float())).tolist()
        loss_ok = math.isfinite(loss)
        taken = loss_ok and math.isfinite(norm)
        if taken:
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update()
            if self.lookahead is not None:
                self.lookahead.after_step(self.step + 1)  # self.step counts the steps before this one
            self.acc.commit()
            self.optimizer.zero_grad(set_to_none=True)
            self._state_ready = True  # the optimizer's state exists: the device-side skip may take over
            self._count_step(self.step, True, True, 0.0)
            return
        self.acc.drop()
        if self.scaler:  # an fp16 overflow: update() halves the scale (unscale_ saw the inf)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._count_step(self.step, False, loss_ok, loss)

    def _device_step(self, step_loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """:meth:`_optimizer_step` without a host sync: the same decision, made on the device.

        ``taken`` (a 0-d bool tensor) reaches the optimizer as ``found_inf`` (torch's fused
        Adam/AdamW/SGD and Muon then leave weights and state exactly as they were, step counters
        included), the EMA, lookahead and metric sums as a selection (each bit-identical to the
        host path when taken). The gradients were unscaled by ``_clip`` under fp16, so the scaler
        only updates its scale from what ``unscale_`` found, as ``scaler.step`` + ``update`` do.
        The step's loss and gradient norm wait on the device; :meth:`_read_guard` counts them at
        the next log interval, evaluation, checkpoint or the end (or after MAX_PENDING_STEPS)."""
        taken = torch.isfinite(step_loss) & torch.isfinite(grad_norm)
        self.optimizer.found_inf = (~taken).float()  # what fused kernels and GradScaler use: 1.0 = skip
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf
        if self.scaler:
            self.scaler.update()
        if self.ema is not None:
            self.ema.update(taken)
        if self.lookahead is not None:
            self.lookahead.after_step(self.step + 1, taken)
        self.acc.settle(taken)
        self.optimizer.zero_grad(set_to_none=True)
        self._pending.append((self.step, step_loss, grad_norm))
        if len(self._pending) >= MAX_PENDING_STEPS:
            self._read_guard()

    def _read_guard(self) -> None:
        """Read the flags of the steps :meth:`_device_step` decided since the last read (one host
        sync) and count them in order, as :meth:`_optimizer_step` would have: skip counters,
        messages and the divergence guard, which may stop the run here, up to ``train.log_every``
        steps after the step that tripped it."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        values = torch.stack([torch.stack([loss for _, loss, _ in pending]),
                              torch.stack([norm for _, _, norm in pending]).to(torch.float32)]).tolist()
        for (step, _, _), loss, norm in zip(pending, *values):
            loss_ok = math.isfinite(loss)
            taken = loss_ok and math.isfinite(norm)
            if not taken:
                self.acc.count_skipped()
            self._count_step(step, taken, loss_ok, loss)

    def _count_step(self, step: int, taken: bool, loss_ok: bool, loss: float) -> None:
        """The host's account of step ``step`` (0-based), once its flags are known: the counters,
        a message for a skipped step, and TrainingDiverged after ``train.max_bad_steps`` bad steps
        in a row, naming the first of them."""
        if taken:
            self.bad_steps = 0
            return
        self.skipped_steps += 1
        if self.scaler and loss_ok:  # an fp16 overflow: counted, never a bad step
            self.overflow_steps += 1
            self.display.message(f"step {step}: fp16 gradient overflow, step skipped and loss scale lowered "
                                 f"(now {self.scaler.get_scale():g}; {self.skipped_steps} skipped in all)")
            return
        if self.bad_steps == 0:
            self.first_bad_step = step
        self.bad_steps += 1
        self.display.message(f"warning: step {step} has a non-finite loss or gradient "
                             f"(loss {loss:.4g}); skipped ({self.bad_steps} in a row)")
        if self.bad_steps >= self.cfg.train.max_bad_steps:
            late = (f" The run went on to step {self.step} before this was read: on a GPU the check is "
                    f"read at log intervals (train.log_every), evaluations and checkpoints, never per step, "
                    f"and no checkpoint was written after step {step}." if self.step > step + 1 else "")
            raise TrainingDiverged(
                f"training stopped at step {step}: {self.bad_steps} consecutive steps had a NaN or Inf loss "
                f"or gradient (steps {self.first_bad_step} to {step}; {self.skipped_steps} skipped in all). "
                f"Lower optim.lr, set optim.clip_grad_norm, check the data for NaN values, or use precision "
                f"fp32. The last good checkpoint is in {self.ckpt_dir} (resume with --resume {self.run_dir})."
                + late)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str = "test", use_ema: bool = True) -> dict[str, Any]:
        """The task's metrics on the test split, or on the (un-augmented) training split, in eval
        mode and with the EMA weights when EMA is on."""
        if split == "test":
            loader = self.test_loader
        else:  # the same training examples in a fixed order, without augmentation
            loader = self.train_loader.evaluation_view(self.cfg.data.eval_batch_size)
        was_training = self.model.training
        self.model.eval()
        ctx = self.ema.swapped_in(self.model) if (use_ema and self.ema) else contextlib.nullcontext()
        with ctx, self.energy.phase("eval"):
            test = split == "test"  # sharded over the data-parallel ranks; the training view is whole
            m = evaluate_loader(self.forward, loader, self.task, self.device, self.cfg.train.precision,
                                self.cfg.train.eval_tta if test else "none", reduce=self.acc.reduce if test else None)
        self.model.train(was_training)
        return m

    def _eval_due(self, epoch_end: bool) -> bool:
        every = self.cfg.train.eval_every
        if self.step == self.total_steps:
            return False  # the final evaluation happens in _finish
        if self.cfg.train.eval_every_steps:
            return self.step % self.cfg.train.eval_every_steps == 0
        if not epoch_end or every <= 0:
            return False
        epoch = self.step // self.steps_per_epoch
        return epoch % max(1, round(every)) == 0

    # ------------------------------------------------------------------ logging
    @property
    def epoch(self) -> float:
        return self.step / self.steps_per_epoch

    def _log_train(self, lr: float, rate: float) -> None:
        sums, count, skipped = self.acc.read()
        # the task's metrics over the steps taken in this interval ("skipped" were left out)
        m = self.task.scalars(self.task.metrics(sums, count))
        rec = {"kind": "train", "step": self.step, "epoch": round(self.epoch, 4), **m, "lr": lr,
               "examples_per_sec": rate, "skipped": skipped, "skipped_steps": self.skipped_steps,
               **self.energy.log_fields()}
        self.log.write(rec)
        self.display.update(self.step, self.epoch, rec, self.task.headline)

    def _log_test(self) -> dict[str, Any]:
        m = self.evaluate()
        self.log.write({"kind": "test", "step": self.step, "epoch": round(self.epoch, 4), **self.task.scalars(m),
                        **self.energy.log_fields()})
        split = "val" if self.info.task == "lm" else "test"
        h = self.task.headline
        extra = f" {h} {m[h]:.4f}" if h != "loss" and m.get(h) is not None else ""
        self.display.message(f"step {self.step} (epoch {self.epoch:.2f}): {split} loss {m['loss']:.4f}{extra}")
        return m

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_due(self, epoch_end: bool) -> bool:
        every = self.cfg.run.checkpoint_every
        if self.step == self.total_steps:
            return False  # the finished run saves model.safetensors instead
        return self.step % every == 0 if every else epoch_end

    def _trainer_state(self) -> dict[str, Any]:
        """The loop's plain values (JSON-able): the same on every rank, metric sums over all ranks."""
        self._read_guard()  # the counters as of this step (and no state saved past a divergence)
        sums, count = self.acc.totals()
        return {
            "step": self.step, "bad_steps": self.bad_steps, "first_bad_step": self.first_bad_step,
            "skipped_steps": self.skipped_steps,
            "overflow_steps": self.overflow_steps,
            "examples_seen": self.examples_seen, "train_seconds": self.train_seconds,
            "energy": self.energy.state_dict(),  # joules so far, all ranks (a resumed run adds to them)
            "loader": self.train_loader.state_dict(),
            "metrics": {"sums": sums.tolist(), "count": count, "skipped": self.acc.skipped},
            "task": self.task.name,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "config": self.cfg.to_dict(),  # what the run was trained with up to here (checked on resume)
            "data_sha256": self.data_sha256,  # and on which data
        }

    def _rng_state(self) -> dict[str, Any]:
        # torch's RNG drives dropout; data order and augmentation are seeded per epoch/batch
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def _param_names(self) -> list[str]:
        """Parameter names in the optimizer's order (to reload its state by name on other ranks)."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return [names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:
        """A single-process checkpoint (``.pt``)."""
        state = self._trainer_state()
        state["metrics"] = self.acc.state_dict()
        return state | {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "param_names": self._param_names(), "ema": self.ema.state_dict() if self.ema else None,
            "lookahead": self.lookahead.state_dict() if self.lookahead else None, "rng": self._rng_state(),
        }

    def _ema_tensors(self) -> dict[str, Any]:
        """The weight averages' tensors, for Distributed Checkpoint (filled in place on load)."""
        out: dict[str, Any] = {}
        if self.ema is not None:
            out["ema"] = {"shadow": self.ema.shadow, "updates": torch.tensor(self.ema.updates)}
        if self.lookahead is not None:
            out["lookahead"] = {"slow": self.lookahead.slow, "started": torch.tensor(int(self.lookahead.started))}
        return out

    def _save_checkpoint(self) -> None:
        if self.par.enabled:  # every rank writes its shards (Distributed Checkpoint)
            from layerwise.distributed import checkpoint as dcp_ckpt
            dcp_ckpt.save(self.ckpt_dir, self.step, self.par, self.model, self.optimizer, self._trainer_state(),
                          self._rng_state(), self.cfg.run.keep_checkpoints, self._ema_tensors())
        else:
            self._ckpt_writer.save(self.ckpt_dir, self.step, self.state_dict(), self.cfg.run.keep_checkpoints)
            if any(self.ckpt_dir.glob("step_*.dcp")):  # a run resumed on fewer ranks: older shards go too
                from layerwise.distributed import checkpoint as dcp_ckpt
                dcp_ckpt.prune(self.ckpt_dir, self.cfg.run.keep_checkpoints)

    def _load_checkpoint(self) -> None:
        """The newest usable checkpoint, whichever world size wrote it: a ``.pt`` from one process or
        a ``.dcp`` folder of shards (resharded to this run's ranks and strategy)."""
        from layerwise.distributed import checkpoint as dcp_ckpt

        def check_config(saved: dict[str, Any] | None, path: Path, data_sha256: str | None = None) -> None:
            """Before any weight is loaded: a config.yaml edited since this checkpoint was written
            must not change what the run learns, nor may the data (an error, not a damaged checkpoint)."""
            if data_sha256 and data_sha256 != self.data_sha256:
                from layerwise.config import ConfigError
                raise ConfigError(f"the data changed since checkpoint {path.name} was written (its files differ, or "
                                  f"data.root points elsewhere): the run in '{self.run_dir}' cannot continue on other "
                                  f"data. Restore the data it was trained on, or start a new run.")
            if saved:
                from layerwise.config import config_changes, refuse_trajectory_changes, with_defaults
                refuse_trajectory_changes(config_changes(with_defaults(saved), self.cfg.to_dict()),
                                          f"config.yaml differs from the config checkpoint {path.name} was "
                                          f"trained with{config_gaps(self.run_dir / 'config.yaml')}", self.run_dir)
                self._check_resumed_length(saved.get("train", {}), f"checkpoint {path.name}")

        def load_one(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
            if path.suffix == dcp_ckpt.SUFFIX:
                extra = dcp_ckpt.read_trainer_state(path)
                check_config(extra.get("config"), path, extra.get("data_sha256"))
                ema = self._ema_tensors()
                extra, rng = dcp_ckpt.load(path, self.model, self.optimizer, self.par.rank, ema)
                if "ema" in ema:
                    self.ema.updates = int(ema["ema"]["updates"])
                if "lookahead" in ema:
                    self.lookahead.started = bool(ema["lookahead"]["started"])
                return extra, rng
            state = ckpt.read_checkpoint(path, map_location=self.device)
            check_config(state.get("config"), path, state.get("data_sha256"))
            if self.par.enabled:
                if "param_names" not in state:
                    raise ckpt.CheckpointError(f"{path.name} was written by an earlier layerwise without parameter "
                                               f"names; resume it in one process (without --nproc)")
                dcp_ckpt.load_full(self.model, self.optimizer, state["model"], state["optimizer"],
                                   state["param_names"])
            else:
                try:
                    check_state_matches(state["model"], self.model, path.name)
                except RunDirError as e:  # a checkpoint of another model: one paragraph, not torch's list
                    raise ckpt.CheckpointError(str(e)) from None
                self.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
            if self.ema is not None and state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            if self.lookahead is not None and state.get("lookahead") is not None:
                self.lookahead.load_state_dict(state["lookahead"])
            sums, count = state["metrics"]["sums"], state["metrics"]["count"]
            state["metrics"] = {"sums": torch.as_tensor(sums).tolist(), "count": count,
                                "skipped": state["metrics"].get("skipped", 0)}
            return state, state["rng"] if not self.par.enabled else None

        (state, rng), path = ckpt.load_newest(self.ckpt_dir, dcp_ckpt.all_checkpoints(self.ckpt_dir), load_one)
        self._checkpoint_config = state.get("config")
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.train_loader.load_state_dict(state["loader"])
        if self.par.is_rank0:  # the metric sums were saved over all ranks: rank 0 carries them on
            self.acc.load_state_dict(state["metrics"])
        for k in ("step", "bad_steps", "skipped_steps", "examples_seen"):
            setattr(self, k, int(state[k]))
        self.overflow_steps = int(state.get("overflow_steps", 0))
        self.first_bad_step = int(state.get("first_bad_step", self.step - self.bad_steps))
        self._state_ready = bool(self.optimizer.state)  # a run whose steps were all skipped has none
        self.train_seconds = float(state["train_seconds"])
        self.energy.load_state_dict(state.get("energy"), self.examples_seen)
        if rng is not None:
            torch.set_rng_state(rng["torch"].cpu())
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        else:  # another world size wrote it: dropout streams restart, seeded by step and rank
            torch.manual_seed(self.cfg.train.seed + 7919 * self.step + 1_000_003 * self.par.dp_rank)
        self.log.truncate_after(self.step)
        self.resumed_from = path

    def _check_resumed_length(self, saved: dict[str, Any], where: str) -> None:
        """A resumed run may end at another step only if every step both lengths share keeps its
        learning rate (and lookahead, whose strength grows with step / total, is off). ``saved``:
        the train section the run was started with (from ``where``)."""
        from layerwise.config import ConfigError

        t, o = self.cfg.train, self.cfg.optim
        old_total = int(saved.get("max_steps") or 0) or math.ceil(float(saved.get("epochs", t.epochs))
                                                                     * self.steps_per_epoch)
        if old_total == self.total_steps:
            return
        warm = o.warmup_steps or int(o.warmup_fraction * old_total)
        old = dict(self.schedule, total_steps=old_total, warmup_steps=warm)
        shared = min(old_total, self.total_steps)
        same = self.lookahead is None and all(
            lr_multiplier(s, **old) == lr_multiplier(s, **self.schedule) for s in range(shared))
        if not same:
            raise ConfigError(
                f"the settings given on resume (or an edit of the run's files) change the run's length "
                f"({where}) from {old_total} to {self.total_steps} "
                f"steps, and its learning-rate schedule ({o.schedule}"
                f"{', with lookahead' if self.lookahead is not None else ''}) depends on the length, so the "
                f"steps it still has to take would get other learning rates than the run was started with. "
                f"Resume with the saved length, or start a new run; with optim.schedule=constant (and no "
                f"lookahead) a resumed run may be made longer or shorter.")

    def _record_resume(self) -> None:
        """The resumed run's config.yaml takes the allowed changes, and metrics.jsonl says where
        the run resumed and what changed."""
        changes = self._resume_changes
        if getattr(self, "_checkpoint_config", None):  # the truth: what the checkpoint was trained with
            from layerwise.config import config_changes, with_defaults
            changes = config_changes(with_defaults(self._checkpoint_config), self.cfg.to_dict())
        if self.par.is_rank0:
            if changes:
                save_config(self.cfg, self.run_dir / "config.yaml")
            self.log.write({"kind": "resume", "step": self.step, "from": self.resumed_from.name,
                            "changed": {k: [old, new] for k, (old, new) in changes.items()}})
        self.display.message(f"resumed from {self.resumed_from} at step {self.step}/{self.total_steps}"
                             + (f"; changed: {', '.join(f'{k} {o!r} -> {n!r}' for k, (o, n) in changes.items())}"
                                if changes else ""))

    # ------------------------------------------------------------------ the end of a run
    def _finish(self) -> dict[str, Any]:
        final = self.evaluate()
        scalars = self.task.scalars(final)
        self.log.write({"kind": "test", "step": self.step, "epoch": round(self.epoch, 4), **scalars,
                        **self.energy.log_fields()})
        # the headline first, then test_loss and the task's other metrics, as test_<name>
        h = self.task.headline
        tests = {f"test_{h}": scalars.get(h), "test_loss": scalars.get("loss")} | {
            f"test_{k}": v for k, v in scalars.items() if k not in (h, "loss", "examples")}
        model = self.model
        meta = {"model": model.config, "data": self.info.to_dict(), "metrics": tests,
                "task": {"name": self.task.name, **self.task.state()}}
        # one model.safetensors of whole tensors, written by rank 0 (sharded weights are gathered)
        sharded = self.par.dims.uses_fsdp or self.par.dims.tp > 1
        with self.ema.swapped_in(model) if self.ema is not None else contextlib.nullcontext():
            if sharded:
                from layerwise.distributed.checkpoint import full_model_state
                state = full_model_state(model)  # collective; the tensors land on rank 0
            else:
                state = None
            if self.par.is_rank0:
                save_model(self.run_dir / "model.safetensors", model, meta, state)
        summary = {
            **tests, "headline": f"test_{h}", "task": self.task.name,
            "train_seconds": round(self.train_seconds, 3), "params": model.num_params(),
            "flops_per_example": model.flops_per_example(), "examples_seen": self.examples_seen,
            "steps": self.step, "epochs": round(self.epoch, 4), "skipped_steps": self.skipped_steps,
            **({"overflow_steps": self.overflow_steps} if self.scaler else {}),
            "model": self.cfg.model.name, "dataset": self.cfg.data.name, "device": str(self.device),
            "precision": self.cfg.train.precision, "run_dir": str(self.run_dir),
            **self.energy.summary_fields(self.examples_seen),
        }
        if self.cfg.model.init_from:  # the weights' origin, from init_from.json (a resumed run's too)
            from layerwise.train.finetune import read_record, summary_fields
            summary |= summary_fields(read_record(self.run_dir))
        if self.par.enabled:
            d = self.par.dims
            summary["parallel"] = (f"{d.strategy} on {d.world_size} ranks (dp_replicate {d.dp_replicate} x "
                                   f"dp_shard {d.dp_shard} x tp {d.tp})")
            # what sharding saves: parameter elements rank 0 holds (FSDP and TP split them)
            summary["params_on_rank0"] = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel()
                                             for p in model.parameters())
        if self.par.is_rank0:
            write_json(self.run_dir / "summary.json", summary)
            if self.par.enabled:
                from layerwise.distributed.launch import forget_run_dir
                forget_run_dir(self.cfg.run.root)
            if "confusion" in final:
                write_confusion(self.run_dir / "confusion.csv", final["confusion"], self.info.classes)
            if self.cfg.run.plots:
                plot_metrics(self.log.records or _read_records(self.log.path), self.run_dir / "plots", h)
        self.log.close()
        self.par.barrier()  # no rank leaves (and tears the group down) before the files exist
        if self.par.is_rank0 and self.cfg.run.report:  # after the barrier: the other ranks need not wait
            from layerwise.deploy.report import write_report_after_run
            write_report_after_run(self.run_dir, self.device, self._test_split)
        return summary


def check_resume(run_dir: str | Path, cfg: Config) -> dict[str, tuple[Any, Any]]:
    """How ``cfg`` differs from the config saved in ``run_dir`` ({"section.key": (saved, new)});
    ConfigError if it differs in a setting that changes what the run learns."""
    from layerwise.config import config_changes, load_config, refuse_trajectory_changes

    path = Path(run_dir) / "config.yaml"
    # the saved file resolved (a key it lacks takes its default: files of earlier versions lack the
    # newer keys), compared with the new config; the checkpoint's own config is checked on load
    saved = load_config(path).to_dict()
    changes = config_changes(saved, cfg.to_dict())
    refuse_trajectory_changes(changes, f"the settings given on resume differ from the run's{config_gaps(path)}",
                              run_dir)
    return changes


def config_gaps(path: Path) -> str:
    """A note for messages when a run's config.yaml lacks many settings (it was cut short or
    edited; a file of an earlier layerwise lacks only the few keys added since), else ""."""
    from layerwise.config import Config, flat_config, load_yaml

    have = set(flat_config(load_yaml(path)))
    lacks = sorted(k for k in set(flat_config(Config().to_dict())) - have if not k.startswith("model."))
    if len(lacks) <= 10:
        return ""
    return (f" ('{path}' lacks {len(lacks)} settings, e.g. {', '.join(lacks[:3])}, which take their defaults: was it "
            f"cut short or edited? The run's checkpoints hold the config they were trained with.)")


def _read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def fit(cfg: Config, run_dir: str | Path | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Train ``cfg`` in a new run directory; returns the summary (see summary.json)."""
    return Trainer(cfg, Path(run_dir) if run_dir else None, show_progress=show_progress).fit()


def resume(run_dir: str | Path, show_progress: bool = True, overrides: list[str] = ()) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its newest valid checkpoint."""
    from layerwise.config import load_config
    from layerwise.train.run import RunDirError

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"'{run_dir}' is not a layerwise run directory (no config.yaml). "
                          f"Give the directory a `layerwise train` run wrote.")
    if (run_dir / "summary.json").is_file():
        raise RunDirError(f"the run in '{run_dir}' already finished (it has summary.json); "
                          f"there is nothing to resume. Start a new run instead.")
    cfg = load_config(run_dir / "config.yaml", overrides)
    return Trainer(cfg, run_dir, resume=True, show_progress=show_progress).fit()
